//! patch (PATCH `Type/id` or `Type?criteria`) with JSON Patch (RFC 6902).
//! The patched resource is validated like any update and written as a new version.

use axum::http::StatusCode;
use serde_json::Value;
use sijill_store::Current;

use super::{checked_resource, criteria_unless_id, parse_version, resolve_target, resource_response};
use crate::access::Guard;
use crate::engine::{truncate, Engine, Exec, FhirRequest, FhirResponse, RequestBody};
use crate::error::{FhirError, FhirResult};
use sijill_auth::Action;

/// Most operations one JSON Patch may carry.
const MAX_OPERATIONS: usize = 1000;

/// Applies the operations one by one to a throwaway copy (a failure leaves the stored
/// resource as it was), refusing a document that `copy` grows beyond `max_bytes`.
fn apply_bounded(resource: &mut Value, operations: &json_patch::Patch, max_bytes: usize) -> FhirResult<()> {
    for (i, op) in operations.0.iter().enumerate() {
        json_patch::patch_unsafe(resource, std::slice::from_ref(op)).map_err(|e| {
            FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "processing",
                format!("The patch cannot be applied (operation {i}): {e}"),
            )
        })?;
        if matches!(op, json_patch::PatchOperation::Copy(_))
            && serde_json::to_vec(resource).map(|b| b.len()).unwrap_or(usize::MAX) > max_bytes
        {
            return Err(FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too-costly",
                format!("The patched resource would be larger than {max_bytes} bytes"),
            ));
        }
    }
    Ok(())
}

/// PATCH a resource with a JSON Patch document.
pub fn patch(
    engine: &Engine,
    guard: &Guard<'_>,
    exec: Exec<'_>,
    resource_type: &str,
    id: Option<&str>,
    req: FhirRequest,
) -> FhirResult<FhirResponse> {
    let RequestBody::JsonPatch(document) = req.body else {
        return Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "PATCH needs a JSON Patch document (Content-Type: application/json-patch+json)",
        ));
    };
    let operations: json_patch::Patch = serde_json::from_value(document)
        .map_err(|e| FhirError::bad_request(format!("The JSON Patch document is not valid: {e}")))?;
    if operations.0.len() > MAX_OPERATIONS {
        return Err(FhirError::bad_request(format!(
            "A JSON Patch may have at most {MAX_OPERATIONS} operations"
        )));
    }
    let max_bytes = engine.limits.max_body_bytes;
    let if_match = req.conditions.if_match.as_deref().map(parse_version).transpose()?;
    let criteria = criteria_unless_id(resource_type, id, &req.query)?;
    engine.with_tx(guard, exec, |tx| {
        let target = resolve_target(tx, resource_type, id, criteria.as_ref())?
            .ok_or_else(|| FhirError::not_found(format!("No {resource_type} matches the criteria")))?;
        let current = match tx.read(resource_type, &target)? {
            Current::Found(stored) => stored,
            Current::Deleted(_) => {
                return Err(FhirError::new(
                    StatusCode::GONE,
                    "deleted",
                    format!("{resource_type}/{} was deleted", truncate(&target)),
                ))
            }
            Current::NotFound => return Err(FhirError::resource_not_found(resource_type, &target)),
        };
        guard.check_write_existing(Action::Update, &current)?;
        if let Some(expected) = if_match {
            if expected != current.version {
                return Err(FhirError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "conflict",
                    format!(
                        "version conflict: expected version {expected}, current version is {}",
                        current.version
                    ),
                ));
            }
        }
        let mut resource: Value = serde_json::from_slice(&current.body)
            .map_err(|e| FhirError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", e.to_string()))?;
        apply_bounded(&mut resource, &operations, max_bytes)?;
        let resource = checked_resource(RequestBody::Resource(resource), resource_type, Some(&target))?;
        guard.check_write(Action::Update, resource_type, &resource)?;
        let (stored, _) = tx.update(resource_type, &target, resource, Some(current.version))?;
        guard.disclose(&stored);
        Ok(resource_response(engine, StatusCode::OK, &stored))
    })
}
