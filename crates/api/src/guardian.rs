//! Guardians: a citizen recorded as the guardian of another patient (a minor, or an adult
//! under guardianship) acts for them on consent — makes their access codes, reads their
//! access log and revokes their grants — signed in as themself.
//!
//! The record that says so is a RelatedPerson of the dependent (`patient`) whose
//! `relationship` holds v3-RoleCode `GUARD`, that is not `active: false`, whose `period`
//! (when given) holds now, and that carries the guardian's national identifier: the shape
//! the demo population writes and a civil registry feed would. Only a platform
//! administrator (the registry's feed, the operator's tools) may write or remove such a
//! record ([`check_write`]), and the identifier must be carried by the guardian's Patient
//! record alone — so nobody names themself guardian, not even a practitioner who may write
//! the dependent's record or their own.

use serde_json::Value;
use sijill_store::query::escape_value;
use sijill_store::Current;

use crate::access::Guard;
use crate::engine::{Engine, FhirResponse};
use crate::error::{FhirError, FhirResult};
use crate::resource_json::parsed;

/// The code system of the guardian relationship.
pub const ROLE_CODE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";

/// At most this many of the guardian's identifiers are looked for.
const MAX_IDENTIFIERS: usize = 4;

/// Whether the actor may act for `patient` on consent: the patient themself, or a citizen
/// recorded as their guardian.
pub fn speaks_for(engine: &Engine, guard: &Guard<'_>, patient: &str) -> FhirResult<bool> {
    if guard.is_the_patient(patient) {
        return Ok(true);
    }
    match guard.citizen_patient() {
        Some(me) if me != patient => is_guardian(engine, me, patient),
        _ => Ok(false),
    }
}

/// Whether the patient `guardian` is now the recorded guardian of the patient `dependent`.
fn is_guardian(engine: &Engine, guardian: &str, dependent: &str) -> FhirResult<bool> {
    if !sijill_fhir::primitives::is_valid_id(dependent) {
        return Ok(false);
    }
    Ok(guardianships(engine, guardian, Some(dependent), 16)?.contains(&dependent.to_string()))
}

/// The dependents (patient ids) of whom the patient `guardian` is now the recorded
/// guardian — of `only` that one when given — at most `limit` records read per identifier.
fn guardianships(engine: &Engine, guardian: &str, only: Option<&str>, limit: usize) -> FhirResult<Vec<String>> {
    let Current::Found(own) = engine.store.read("Patient", guardian)? else {
        return Ok(Vec::new());
    };
    let own = parsed(&own);
    let national = engine.consent.national_id_system.as_deref();
    let identifiers: Vec<String> = own["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| Some((i["system"].as_str()?, i["value"].as_str()?)))
        .filter(|(system, _)| national.is_none_or(|n| n == *system))
        .map(|(system, value)| format!("{}|{}", escape_value(system), escape_value(value)))
        .take(MAX_IDENTIFIERS)
        .collect();
    let now = sijill_store::now_instant();
    let mut dependents = Vec::new();
    for identifier in identifiers {
        // The identifier proves who the guardian is only if no other record carries it.
        let holders = engine
            .store
            .lookup("Patient", &[("identifier", identifier.clone())], 2)?;
        if holders.len() != 1 || holders[0].id != guardian {
            continue;
        }
        let mut pairs = vec![
            ("identifier", identifier),
            ("relationship", format!("{ROLE_CODE_SYSTEM}|GUARD")),
        ];
        if let Some(d) = only {
            pairs.push(("patient", format!("Patient/{d}")));
        }
        for record in engine.store.lookup("RelatedPerson", &pairs, limit)? {
            let record = parsed(&record);
            let dependent = record["patient"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
                .filter(|d| *d != guardian);
            if let Some(d) = dependent.filter(|_| in_force(&record, &now)) {
                if !dependents.iter().any(|x| x == d) {
                    dependents.push(d.to_string());
                }
            }
        }
    }
    Ok(dependents)
}

/// Most dependents listed.
const MAX_DEPENDENTS: usize = 50;

/// `GET Patient/{id}/$dependents`: for the citizen themself, the people they are now the
/// recorded guardian of — each as a reference with the name — so that an app (the portal)
/// can act for them. Nothing else of their records is disclosed.
pub fn dependents(engine: &Engine, guard: &Guard<'_>, patient: &str) -> FhirResult<FhirResponse> {
    if !guard.is_the_patient(patient) {
        return Err(FhirError::forbidden("only the citizen themself lists their dependents"));
    }
    let mut parameter = Vec::new();
    for dependent in guardianships(engine, patient, None, MAX_DEPENDENTS)? {
        let Current::Found(record) = engine.store.read("Patient", &dependent)? else {
            continue;
        };
        guard.disclose_patient(&dependent);
        let name = crate::audit::plain_words::name_of(&parsed(&record)).unwrap_or_else(|| "(no name recorded)".into());
        parameter.push(serde_json::json!({"name": "dependent", "valueReference":
            {"reference": format!("Patient/{dependent}"), "display": name}}));
    }
    Ok(FhirResponse::new(
        axum::http::StatusCode::OK,
        crate::engine::Payload::Json(serde_json::json!({"resourceType": "Parameters", "parameter": parameter})),
    ))
}

/// Whether a RelatedPerson names a guardian.
fn names_guardian(resource: &Value) -> bool {
    resource["relationship"].as_array().into_iter().flatten().any(|r| {
        r["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["system"] == ROLE_CODE_SYSTEM && c["code"] == "GUARD")
    })
}

/// Refuses a write (or removal) of a guardianship record by anyone but a platform
/// administrator.
pub fn check_write(guard: &Guard<'_>, resource_type: &str, resource: &Value) -> FhirResult<()> {
    if resource_type == "RelatedPerson" && names_guardian(resource) && !guard.is_platform_admin() {
        return Err(FhirError::forbidden(
            "only the civil registry (a platform administrator) records or changes a guardianship",
        ));
    }
    Ok(())
}

/// Whether a RelatedPerson record is in force at `now` (a FHIR instant): not inactive, and
/// its period holds (a bound given as a date covers that whole day).
fn in_force(record: &Value, now: &str) -> bool {
    let started = record["period"]["start"]
        .as_str()
        .is_none_or(|s| sijill_store::parse_instant(s).is_some_and(|s| s.as_str() <= now));
    let not_ended = record["period"]["end"].as_str().is_none_or(|e| {
        if e.len() <= 10 {
            &now[..e.len().min(now.len())] <= e
        } else {
            sijill_store::parse_instant(e).is_some_and(|e| now <= e.as_str())
        }
    });
    record["active"] != Value::Bool(false) && started && not_ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_is_in_force_only_while_active_and_within_its_period() {
        let now = sijill_store::parse_instant("2026-11-24T10:00:00Z").unwrap();
        let now = now.as_str();
        assert!(in_force(&json!({}), now));
        assert!(in_force(
            &json!({"active": true, "period": {"start": "2020-01-01"}}),
            now
        ));
        assert!(
            in_force(&json!({"period": {"end": "2026-11-24"}}), now),
            "the whole last day"
        );
        assert!(!in_force(&json!({"active": false}), now));
        assert!(!in_force(&json!({"period": {"end": "2026-11-23"}}), now));
        assert!(!in_force(&json!({"period": {"start": "2026-11-25"}}), now));
        assert!(!in_force(&json!({"period": {"end": "2026-11-24T09:59:59Z"}}), now));
        assert!(
            in_force(&json!({"period": {"end": "2026-11-24T11:30:00+01:00"}}), now),
            "offsets count"
        );
        assert!(!in_force(&json!({"period": {"end": "2026-11-24T10:30:00+01:00"}}), now));
    }
}
