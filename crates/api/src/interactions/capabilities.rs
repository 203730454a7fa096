//! GET `metadata`: the CapabilityStatement, generated from what the engine and the index
//! actually support, so it cannot drift from the code.

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_fhir::definitions::{self, SearchParamType};
use sijill_store::index;

use crate::engine::{Engine, FhirResponse, Payload};

/// The interactions every resource type supports.
const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

fn type_code(kind: SearchParamType) -> &'static str {
    match kind {
        SearchParamType::Number => "number",
        SearchParamType::Date => "date",
        SearchParamType::String => "string",
        SearchParamType::Token => "token",
        SearchParamType::Reference => "reference",
        SearchParamType::Composite => "composite",
        SearchParamType::Quantity => "quantity",
        SearchParamType::Uri => "uri",
        SearchParamType::Special => "special",
    }
}

/// The operations by resource type: (type, name, definition).
const OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "Patient",
        "everything",
        "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    ),
    (
        "Patient",
        "access-code",
        "https://sijill.health/fhir/OperationDefinition/access-code",
    ),
    (
        "Patient",
        "grant-access",
        "https://sijill.health/fhir/OperationDefinition/grant-access",
    ),
    (
        "Patient",
        "break-glass",
        "https://sijill.health/fhir/OperationDefinition/break-glass",
    ),
    (
        "Patient",
        "access-log",
        "https://sijill.health/fhir/OperationDefinition/access-log",
    ),
    (
        "Patient",
        "dependents",
        "https://sijill.health/fhir/OperationDefinition/dependents",
    ),
    (
        "Consent",
        "revoke",
        "https://sijill.health/fhir/OperationDefinition/revoke",
    ),
    (
        "AuditEvent",
        "review-queue",
        "https://sijill.health/fhir/OperationDefinition/review-queue",
    ),
    (
        "AuditEvent",
        "review",
        "https://sijill.health/fhir/OperationDefinition/review",
    ),
    (
        "Appointment",
        "find",
        "https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/appointment-find",
    ),
    (
        "Appointment",
        "hold",
        "https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/appointment-hold",
    ),
    (
        "Appointment",
        "book",
        "https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/appointment-book",
    ),
    (
        "Appointment",
        "cancel",
        "https://sijill.health/fhir/OperationDefinition/appointment-cancel",
    ),
    (
        "Appointment",
        "reschedule",
        "https://sijill.health/fhir/OperationDefinition/appointment-reschedule",
    ),
    (
        "Appointment",
        "check-in",
        "https://sijill.health/fhir/OperationDefinition/appointment-check-in",
    ),
    (
        "Appointment",
        "no-show",
        "https://sijill.health/fhir/OperationDefinition/appointment-no-show",
    ),
    (
        "Appointment",
        "join-waitlist",
        "https://sijill.health/fhir/OperationDefinition/appointment-join-waitlist",
    ),
    (
        "Appointment",
        "wait-times",
        "https://sijill.health/fhir/OperationDefinition/appointment-wait-times",
    ),
    (
        "Schedule",
        "block",
        "https://sijill.health/fhir/OperationDefinition/schedule-block",
    ),
    (
        "Schedule",
        "generate-slots",
        "https://sijill.health/fhir/OperationDefinition/generate-slots",
    ),
];

/// Builds the CapabilityStatement.
pub fn capability_statement(engine: &Engine) -> FhirResponse {
    let resources: Vec<Value> = definitions::resource_types()
        .map(|rt| {
            let mut params = vec![json!({"name": "_id", "type": "token"})];
            if let Some(indexed) = index::params_for(rt) {
                params.extend(
                    indexed
                        .values()
                        .map(|p| json!({"name": p.code, "type": type_code(p.kind)})),
                );
            }
            let mut resource = json!({
                "type": rt,
                "interaction": TYPE_INTERACTIONS.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": params,
            });
            let operations: Vec<Value> = OPERATIONS
                .iter()
                .filter(|(t, _, _)| *t == rt)
                .map(|(_, name, definition)| json!({"name": name, "definition": definition}))
                .collect();
            if !operations.is_empty() {
                resource["operation"] = Value::Array(operations);
            }
            resource
        })
        .collect();
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "Sijill",
        "kind": "instance",
        "software": {"name": "Sijill", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Sijill national digital health platform", "url": engine.base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
        }],
    });
    FhirResponse::new(StatusCode::OK, Payload::Json(statement))
}
