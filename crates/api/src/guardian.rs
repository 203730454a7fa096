//! Guardians: a citizen recorded as the guardian of another patient (a minor, or an adult
//! under guardianship) acts for them on consent — makes their access codes, reads their
//! access log and revokes their grants — signed in as themself.
//!
//! The record that says so is a RelatedPerson of the dependent (`patient`) whose
//! `relationship` holds v3-RoleCode `GUARD`, that is not `active: false`, whose `period`
//! (when given) holds now, and that carries one of the guardian's own identifiers (their
//! national identifier): the shape the demo population writes and a civil registry feed
//! would. Citizens cannot write RelatedPerson records, so nobody names themself guardian.

use serde_json::Value;
use sijill_store::{Current, SearchQuery};

use crate::access::Guard;
use crate::engine::Engine;
use crate::error::FhirResult;
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
pub fn is_guardian(engine: &Engine, guardian: &str, dependent: &str) -> FhirResult<bool> {
    let Current::Found(own) = engine.store.read("Patient", guardian)? else {
        return Ok(false);
    };
    let own = parsed(&own);
    let identifiers: Vec<String> = own["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| Some(format!("{}|{}", i["system"].as_str()?, i["value"].as_str()?)))
        .take(MAX_IDENTIFIERS)
        .collect();
    let now = sijill_store::now_instant();
    for identifier in identifiers {
        let query = SearchQuery::parse(
            "RelatedPerson",
            &[
                ("patient".to_string(), format!("Patient/{dependent}")),
                ("identifier".to_string(), identifier),
                ("relationship".to_string(), format!("{ROLE_CODE_SYSTEM}|GUARD")),
            ],
        )?;
        let records = engine.store.search_page("RelatedPerson", &query, None, 16)?;
        if records.iter().any(|r| in_force(&parsed(r), &now)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a RelatedPerson record is in force at `now` (a FHIR instant): not inactive, and
/// its period, compared at its own precision, holds.
fn in_force(record: &Value, now: &str) -> bool {
    let at = |bound: &str| &now[..bound.len().min(now.len())];
    let started = record["period"]["start"].as_str().is_none_or(|s| at(s) >= s);
    let not_ended = record["period"]["end"].as_str().is_none_or(|e| at(e) <= e);
    record["active"] != Value::Bool(false) && started && not_ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_is_in_force_only_while_active_and_within_its_period() {
        let now = "2026-11-24T10:00:00.000Z";
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
    }
}
