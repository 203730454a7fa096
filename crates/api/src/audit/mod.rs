//! The audit trail of the API: one AuditEvent (following IHE Basic Audit Log Patterns) per
//! interaction and patient — who (user, role, facility, client app, address), which
//! patient, which resources, why, and the outcome.
//!
//! A write's events are appended in the write's own transaction (see
//! [`crate::engine::Engine::with_tx`]); every other request's events go through the
//! [`trail::AuditTrail`] before the response leaves, and a request whose events cannot be
//! written fails. The store seals the events in hash chains (`sijill audit verify`).

pub mod access_log;
pub mod journal;
pub mod plain_words;
pub mod trail;

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};
use sijill_store::{AuditEntry, SealedAudit, Stored};

use crate::context::{Actor, RequestContext};

/// Most resource entities one event lists; further ones are counted.
const MAX_ENTITIES: usize = 100;

/// The code system of FHIR RESTful interactions (AuditEvent.subtype).
const INTERACTION_SYSTEM: &str = "http://hl7.org/fhir/restful-interaction";

/// What a request does, for its audit events.
#[derive(Debug, Clone)]
pub struct Interaction {
    /// The RESTful interaction code (`read`, `search-type`, `create`, …, `operation`).
    pub code: &'static str,
    /// The AuditEvent action: C, R, U, D or E.
    pub action: &'static str,
    /// The method and path, as asked (`GET Observation`).
    pub request: String,
    /// The query string, when there was one.
    pub query: Option<String>,
}

impl Interaction {
    /// A bulk load by the operator's tools (`import FILE`, `demo population`).
    pub fn bulk(request: String) -> Interaction {
        Interaction {
            code: "transaction",
            action: "C",
            request,
            query: None,
        }
    }

    /// A chore the server runs by itself (releasing expired holds, generating slots).
    pub fn chore(name: &str) -> Interaction {
        Interaction {
            code: "operation",
            action: "U",
            request: format!("server chore {name}"),
            query: None,
        }
    }
}

/// A grant under which a patient's data was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantUse {
    /// The Consent.
    pub consent: String,
    /// A break-glass (emergency) access.
    pub emergency: bool,
}

/// What a request disclosed or changed, by patient.
#[derive(Debug, Default)]
pub struct Disclosures {
    /// Resource references (`Type/id/_history/v`) by patient ("" for none), and how many
    /// more there were past [`MAX_ENTITIES`].
    by_patient: BTreeMap<String, (Vec<String>, usize)>,
    /// The grant used for each patient, when one was.
    grants: BTreeMap<String, GrantUse>,
}

impl Disclosures {
    /// Notes a resource that left (or was written by) the engine.
    pub fn note(&mut self, stored: &Stored, patients: &[String]) {
        let what = format!("{}/{}/_history/{}", stored.resource_type, stored.id, stored.version);
        if patients.is_empty() {
            self.add("", &what);
        }
        for p in patients {
            self.add(p, &what);
        }
    }

    /// Notes that a patient's data was reached (with no resource yet: a refused read).
    pub fn note_patient(&mut self, patient: &str) {
        self.by_patient.entry(patient.to_string()).or_default();
    }

    /// Notes the grant used for a patient.
    pub fn note_grant(&mut self, patient: &str, grant: GrantUse) {
        self.grants.insert(patient.to_string(), grant);
    }

    fn add(&mut self, patient: &str, what: &str) {
        let (listed, more) = self.by_patient.entry(patient.to_string()).or_default();
        if listed.len() < MAX_ENTITIES {
            if !listed.iter().any(|w| w == what) {
                listed.push(what.to_string());
            }
        } else {
            *more += 1;
        }
    }
}

/// The outcome of an interaction, as AuditEvent.outcome and outcomeDesc.
pub struct Outcome {
    /// `0` success, `4` minor failure (refused, bad request), `8` serious failure.
    pub code: &'static str,
    /// The reason of a failure.
    pub description: Option<String>,
}

impl Outcome {
    /// Success.
    pub fn success() -> Outcome {
        Outcome {
            code: "0",
            description: None,
        }
    }

    /// The outcome of an HTTP status and, for a failure, its message.
    pub fn of_status(status: u16, message: Option<String>) -> Outcome {
        Outcome {
            code: match status {
                0..=399 => "0",
                400..=499 => "4",
                _ => "8",
            },
            description: if status >= 400 { message } else { None },
        }
    }
}

/// The agent column of an actor's rows: their FHIR user, else their client or subject;
/// `operator` for the command-line tools, `anonymous` for a network request without a
/// token (reading the CapabilityStatement).
pub fn agent_of(ctx: &RequestContext) -> String {
    match &ctx.actor {
        Actor::LocalOperator if ctx.remote_addr.is_some() => "anonymous".into(),
        Actor::LocalOperator => "operator".into(),
        Actor::Principal(p) => p.fhir_user.clone().unwrap_or_else(|| format!("client:{}", p.client_id)),
    }
}

/// The events of one interaction: one per patient reached (one without a patient when
/// none was), each listing that patient's resources.
pub fn events(
    ctx: &RequestContext,
    interaction: &Interaction,
    outcome: &Outcome,
    disclosed: &Disclosures,
    flag: Option<&str>,
) -> Vec<AuditEntry> {
    let recorded = sijill_store::now_instant();
    let agent = agent_of(ctx);
    let mut groups: Vec<(&str, &[String], usize)> = disclosed
        .by_patient
        .iter()
        .map(|(p, (listed, more))| (p.as_str(), listed.as_slice(), *more))
        .collect();
    if groups.is_empty() {
        groups.push(("", &[], 0));
    }
    groups
        .into_iter()
        .map(|(patient, listed, more)| {
            let grant = disclosed.grants.get(patient);
            let body = event_json(ctx, interaction, outcome, &recorded, patient, listed, more, grant);
            AuditEntry {
                recorded: recorded.clone(),
                patient: (!patient.is_empty()).then(|| patient.to_string()),
                agent: agent.clone(),
                flag: flag.map(str::to_string),
                body: serde_json::to_vec(&body).unwrap_or_default(),
            }
        })
        .collect()
}

/// The agent column of events about a request that carried no valid credentials.
pub const UNAUTHENTICATED_AGENT: &str = "anonymous";

/// The event of a refused sign-in or token (DICOM "User Authentication", subtype "Login",
/// outcome minor failure): from which address, for which request (method and path, never
/// the query or the credentials), which client it named, and why it was refused;
/// `unrecorded`: refusals since the last recorded one that were only counted.
pub fn authentication_failure(
    remote: Option<std::net::IpAddr>,
    request: &str,
    client: Option<&str>,
    reason: &str,
    unrecorded: u64,
) -> AuditEntry {
    let recorded = sijill_store::now_instant();
    let request = crate::engine::truncate(request);
    let mut reason = crate::engine::truncate(reason);
    if unrecorded > 0 {
        reason.push_str(&format!(
            " (and {unrecorded} more refused requests without valid credentials since the last recorded one, counted only)"
        ));
    }
    let dcm = "http://dicom.nema.org/resources/ontology/DCM";
    let mut agent = json!({
        "type": {"coding": [coding(dcm, "110150", "Application")]},
        "who": {"display": "a client without valid credentials"},
        "requestor": true,
    });
    if let Some(a) = remote {
        agent["network"] = network(a);
    }
    if let Some(c) = client {
        agent["altId"] = json!(crate::engine::truncate(c));
    }
    let body = json!({
        "resourceType": "AuditEvent",
        "type": coding(dcm, "110114", "User Authentication"),
        "subtype": [coding(dcm, "110122", "Login")],
        "action": "E",
        "recorded": recorded,
        "outcome": "4",
        "outcomeDesc": reason,
        "agent": [agent],
        "source": source(),
        "entity": [{
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "24", "Query"),
            "name": request,
        }],
    });
    AuditEntry {
        recorded,
        patient: None,
        agent: UNAUTHENTICATED_AGENT.to_string(),
        flag: None,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// Records a refused sign-in or token off the async runtime, within the trail's budget for
/// them (beyond it they are counted into the next recorded one); a trail that cannot take
/// it is logged (the request is refused either way).
pub async fn record_authentication_failure(
    trail: std::sync::Arc<trail::AuditTrail>,
    remote: Option<std::net::IpAddr>,
    request: &str,
    client: Option<&str>,
    reason: &str,
) {
    let Some(unrecorded) = trail.admit_refusal() else {
        return;
    };
    let entry = authentication_failure(remote, request, client, reason, unrecorded);
    let written = tokio::task::spawn_blocking(move || trail.record(vec![entry])).await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::error!("the audit event of a refused authentication could not be written");
    }
}

/// The event's source: this server.
fn source() -> Value {
    json!({
        "site": "sijill",
        "observer": {"display": "Sijill FHIR server"},
        "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
    })
}

/// An agent's network access point: an IP address (type 2, also for IPv6).
fn network(address: std::net::IpAddr) -> Value {
    json!({"address": address.to_string(), "type": "2"})
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

/// One AuditEvent (BALP: RESTful interaction, with the patient, the resources and the
/// query as entities).
#[allow(clippy::too_many_arguments)]
fn event_json(
    ctx: &RequestContext,
    interaction: &Interaction,
    outcome: &Outcome,
    recorded: &str,
    patient: &str,
    listed: &[String],
    more: usize,
    grant: Option<&GrantUse>,
) -> Value {
    let purpose = match grant {
        Some(g) if g.emergency => "ETREAT",
        _ => ctx.purpose.0.as_str(),
    };
    let mut event = json!({
        "resourceType": "AuditEvent",
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"),
        "subtype": [coding(INTERACTION_SYSTEM, interaction.code, interaction.code)],
        "action": interaction.action,
        "recorded": recorded,
        "outcome": outcome.code,
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}]}],
        "agent": agents(ctx, grant),
        "source": source(),
    });
    if let Some(d) = &outcome.description {
        event["outcomeDesc"] = json!(d);
    }
    let mut entities = Vec::new();
    if !patient.is_empty() {
        entities.push(json!({
            "what": {"reference": format!("Patient/{patient}")},
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
        }));
    }
    for what in listed {
        entities.push(json!({
            "what": {"reference": what},
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "4", "Domain Resource"),
        }));
    }
    if more > 0 {
        entities.push(json!({
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
            "description": format!("and {more} more resources"),
        }));
    }
    let mut request = json!({
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
        "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "24", "Query"),
        "name": interaction.request,
        "detail": [{"type": "X-Request-Id", "valueString": ctx.request_id}],
    });
    if let Some(q) = &interaction.query {
        request["query"] = json!(base64::engine::general_purpose::STANDARD.encode(q));
    }
    entities.push(request);
    event["entity"] = Value::Array(entities);
    event
}

/// The agents: the user (or client acting on its own), the client app, the facility.
fn agents(ctx: &RequestContext, grant: Option<&GrantUse>) -> Value {
    let network = ctx.remote_addr.map(network);
    let mut agents = Vec::new();
    match &ctx.actor {
        Actor::LocalOperator => {
            let mut agent = json!({
                "type": {"coding": [coding("http://dicom.nema.org/resources/ontology/DCM", "110150", "Application")]},
                "who": {"display": if network.is_some() {
                    "a client without a token"
                } else {
                    "the operator's command-line tools on the server"
                }},
                "requestor": true,
            });
            if let Some(n) = &network {
                agent["network"] = n.clone();
            }
            agents.push(agent);
        }
        Actor::Principal(p) => {
            let mut user = json!({
                "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/extra-security-role-type", "humanuser", "human user")]},
                "role": [{"coding": [{"system": sijill_auth::PLATFORM_ROLE_SYSTEM, "code": p.role.name()}]}],
                "who": match &p.fhir_user {
                    Some(r) => json!({"reference": r}),
                    None => json!({"identifier": {"value": p.subject}}),
                },
                "altId": p.subject,
                "requestor": true,
            });
            if let Some(n) = &network {
                user["network"] = n.clone();
            }
            if let Some(g) = grant {
                user["policy"] = json!([format!("Consent/{}", g.consent)]);
            }
            agents.push(user);
            agents.push(json!({
                "type": {"coding": [coding("http://dicom.nema.org/resources/ontology/DCM", "110150", "Application")]},
                "who": {"identifier": {"value": p.client_id}},
                "requestor": false,
            }));
            if let Some(org) = &p.organization {
                agents.push(json!({
                    "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v3-RoleClass", "PROV", "healthcare provider")]},
                    "who": {"reference": format!("Organization/{org}")},
                    "requestor": false,
                }));
            }
        }
    }
    Value::Array(agents)
}

/// An audit row as a FHIR AuditEvent, with its id (the row's seq).
pub fn as_resource(row: &SealedAudit) -> Value {
    let mut v: Value =
        serde_json::from_slice(&row.entry.body).unwrap_or_else(|_| json!({"resourceType": "AuditEvent"}));
    if let Value::Object(m) = &mut v {
        m.shift_insert(1, "id".into(), json!(row.seq.to_string()));
        m.shift_insert(
            2,
            "meta".into(),
            json!({"lastUpdated": row.entry.recorded, "versionId": "1"}),
        );
    }
    v
}
