//! Reading the audit trail: AuditEvent read and search (auditors), the review queue of
//! emergency accesses, and the citizen's own access log in plain language.

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_auth::{decide, Action, Request};
use sijill_fhir::outcome::{operation_outcome, Issue};
use sijill_store::audit::{FLAG_BREAK_GLASS, FLAG_REVIEW_OF};
use sijill_store::{AuditEntry, AuditQuery, SealedAudit};

use super::plain_words::{narrative, Language, Names};
use super::{as_resource, Outcome};
use crate::access::Guard;
use crate::bundle_writer::{BundleWriter, EntryResource};
use crate::context::Actor;
use crate::engine::{truncate, Engine, FhirResponse, Payload, RequestBody};
use crate::error::{FhirError, FhirResult};
use crate::interactions::history::parse_count;

/// Refuses anyone but an auditor or administrator (or the local operator).
fn check_auditor(guard: &Guard<'_>, action: Action) -> FhirResult<()> {
    if reads_the_trail(guard, action) {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the audit trail is for auditors; a citizen reads their own access log at Patient/{id}/$access-log",
        ))
    }
}

/// Whether the actor may `action` the audit trail (an auditor, an administrator, the
/// local operator).
fn reads_the_trail(guard: &Guard<'_>, action: Action) -> bool {
    match &guard.context().actor {
        Actor::LocalOperator => true,
        Actor::Principal(p) => decide(p, &Request::whole_type(action, "AuditEvent", false)).allowed(),
    }
}

/// The refusal of any change to the audit trail.
pub fn append_only() -> FhirError {
    FhirError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "The audit trail is append-only: AuditEvents are written by the server and never changed",
    )
}

/// A page of audit rows as a searchset; `text` gives each row its narrative (an XHTML div).
fn searchset(
    engine: &Engine,
    path: &str,
    rows: &[SealedAudit],
    count: usize,
    text: Option<&dyn Fn(&SealedAudit) -> String>,
) -> FhirResponse {
    let self_url = format!("{}/{path}", engine.base_url);
    let mut links = vec![("self", self_url.clone())];
    if rows.len() > count {
        if let Some(last) = rows.get(count - 1) {
            let sep = if self_url.contains('?') { '&' } else { '?' };
            links.push(("next", format!("{self_url}{sep}_before={}", last.seq)));
        }
    }
    let mut writer = BundleWriter::new("searchset", None, &links);
    for row in rows.iter().take(count) {
        let mut v = as_resource(row);
        if let Some(text) = text {
            v["text"] = json!({"status": "generated", "div": text(row)});
        }
        let url = format!("{}/AuditEvent/{}", engine.base_url, row.seq);
        writer.entry(
            Some(&url),
            EntryResource::Json(&v),
            &[("search", json!({"mode": "match"}))],
        );
    }
    FhirResponse::new(StatusCode::OK, Payload::Bytes(writer.finish()))
}

/// The paging and date parameters every audit listing takes.
fn listing_query(engine: &Engine, params: &[(String, String)], query: &mut AuditQuery) -> FhirResult<usize> {
    let mut count = engine.limits.default_count;
    for (name, value) in params {
        match name.as_str() {
            "_count" => count = parse_count(value, engine.limits.max_count)?.max(1),
            "_before" => {
                query.before_seq = Some(
                    value
                        .parse()
                        .map_err(|_| FhirError::bad_request("_before must be an AuditEvent id"))?,
                )
            }
            "date" => {
                let (prefix, date) = value.split_at_checked(2).unwrap_or(("", value));
                let instant = |d: &str| {
                    sijill_store::parse_instant(d)
                        .ok_or_else(|| FhirError::bad_request(format!("date '{}' is not a date", truncate(value))))
                };
                match prefix {
                    "ge" | "gt" => query.since = Some(instant(date)?),
                    "le" | "lt" => query.until = Some(instant(date)?),
                    _ => {
                        return Err(FhirError::bad_request(
                            "date takes ge or le (e.g. date=ge2026-11-01&date=le2026-12-01)",
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    query.limit = count + 1;
    Ok(count)
}

/// `GET AuditEvent?patient=&agent=&date=ge…&date=le…&_count=&_before=`, newest first.
pub fn search(engine: &Engine, guard: &Guard<'_>, params: &[(String, String)]) -> FhirResult<FhirResponse> {
    check_auditor(guard, Action::Search)?;
    let mut query = AuditQuery::default();
    for (name, value) in params {
        match name.as_str() {
            "patient" => query.patient = Some(value.trim_start_matches("Patient/").to_string()),
            "agent" => query.agent = Some(value.clone()),
            "_count" | "_before" | "date" => {}
            other => {
                return Err(FhirError::bad_request(format!(
                    "AuditEvent search takes patient, agent, date, _count and _before; not '{}'",
                    truncate(other)
                )))
            }
        }
    }
    let count = listing_query(engine, params, &mut query)?;
    let rows = engine.store.audit_search(&query)?;
    let echo = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().filter(|(n, _)| n != "_before"))
        .finish();
    Ok(searchset(engine, &format!("AuditEvent?{echo}"), &rows, count, None))
}

/// `GET AuditEvent/{id}`.
pub fn read(engine: &Engine, guard: &Guard<'_>, id: &str) -> FhirResult<FhirResponse> {
    check_auditor(guard, Action::Read)?;
    let row = id
        .parse::<i64>()
        .ok()
        .map(|seq| engine.store.audit_get(seq))
        .transpose()?
        .flatten()
        .ok_or_else(|| FhirError::resource_not_found("AuditEvent", id))?;
    Ok(FhirResponse::new(StatusCode::OK, Payload::Json(as_resource(&row))))
}

/// `GET AuditEvent/$review-queue`: emergency accesses no auditor has reviewed yet.
pub fn review_queue(engine: &Engine, guard: &Guard<'_>, params: &[(String, String)]) -> FhirResult<FhirResponse> {
    check_auditor(guard, Action::Search)?;
    let mut query = AuditQuery {
        flag: Some(FLAG_BREAK_GLASS.into()),
        unreviewed: true,
        ..AuditQuery::default()
    };
    let count = listing_query(engine, params, &mut query)?;
    let rows = engine.store.audit_search(&query)?;
    Ok(searchset(engine, "AuditEvent/$review-queue", &rows, count, None))
}

/// `POST AuditEvent/{id}/$review` (Parameters `note`): an auditor records that an emergency
/// access was reviewed; it leaves the queue. The review is itself an audit event.
pub fn review(engine: &Engine, guard: &Guard<'_>, id: &str, body: &RequestBody) -> FhirResult<FhirResponse> {
    check_auditor(guard, Action::Search)?;
    let seq: i64 = id
        .parse()
        .map_err(|_| FhirError::resource_not_found("AuditEvent", id))?;
    let row = engine
        .store
        .audit_get(seq)?
        .ok_or_else(|| FhirError::resource_not_found("AuditEvent", id))?;
    if row.entry.flag.as_deref() != Some(FLAG_BREAK_GLASS) {
        return Err(FhirError::bad_request(
            "Only emergency (break-glass) accesses are reviewed",
        ));
    }
    let note = crate::parameters::string(&crate::parameters::read(body)?, "note")
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| FhirError::bad_request("Parameter 'note' (what the review found) is missing"))?;
    let mut event: Value = serde_json::from_slice(&guard.audit_events(&Outcome::success())[0].body)
        .unwrap_or_else(|_| json!({"resourceType": "AuditEvent"}));
    event["outcomeDesc"] = json!(note);
    event["entity"] = json!([{
        "what": {"reference": format!("AuditEvent/{seq}")},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        "description": "the emergency access reviewed",
    }]);
    let entry = AuditEntry {
        recorded: sijill_store::now_instant(),
        patient: row.entry.patient.clone(),
        agent: super::agent_of(guard.context()),
        flag: Some(format!("{FLAG_REVIEW_OF}{seq}")),
        body: serde_json::to_vec(&event).unwrap_or_default(),
    };
    engine.store.append_audit(&[entry])?;
    let reviewed = Issue::information(format!("AuditEvent/{seq} is reviewed"));
    Ok(FhirResponse::new(
        StatusCode::OK,
        Payload::Json(operation_outcome(&[reviewed])),
    ))
}

/// `GET Patient/{id}/$access-log`: for the patient, who reached their record, when, from
/// which facility, why and under which grant — other people's accesses only, each with a
/// sentence in plain language.
pub fn access_log(
    engine: &Engine,
    guard: &Guard<'_>,
    patient: &str,
    params: &[(String, String)],
) -> FhirResult<FhirResponse> {
    if !reads_the_trail(guard, Action::Search) && !crate::guardian::speaks_for(engine, guard, patient)? {
        return Err(FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the patient (their guardian, or an auditor) reads a patient's access log",
        ));
    }
    let language = match params.iter().find(|(n, _)| n == "language") {
        None => Language::En,
        Some((_, code)) => Language::parse(code)
            .ok_or_else(|| FhirError::bad_request(format!("language takes en, fr or ar; not '{}'", truncate(code))))?,
    };
    let own_user = format!("Patient/{patient}");
    let mut query = AuditQuery {
        patient: Some(patient.to_string()),
        ..AuditQuery::default()
    };
    let count = listing_query(engine, params, &mut query)?;
    // Skip the patient's own requests and the server's own work, a page at a time.
    let mut rows = Vec::new();
    loop {
        let page = engine.store.audit_search(&query)?;
        let full = page.len() == query.limit;
        query.before_seq = page.last().map(|r| r.seq);
        rows.extend(
            page.into_iter()
                .filter(|r| r.entry.agent != own_user && r.entry.agent != "operator"),
        );
        if rows.len() > count || !full {
            break;
        }
    }
    let names = std::cell::RefCell::new(Names::new(engine));
    let text = |row: &SealedAudit| narrative(row, language, &mut names.borrow_mut());
    Ok(searchset(
        engine,
        &format!("Patient/{patient}/$access-log?language={}", language.code()),
        &rows,
        count,
        Some(&text),
    ))
}
