//! The waitlist: a citizen waits for a specialty in a province or region
//! (`POST Appointment/$join-waitlist`), as an Appointment with status `waitlist`. When a
//! matching slot frees (a cancellation, a move, an expired hold), it is offered at once to
//! the first in line, in the same transaction that frees it: their waitlist Appointment
//! becomes a hold on the slot (`pending`, for `--offer-ttl`), and a notice tells them to
//! book it (`$book` with `appointment-reference`). An offer not taken in time goes back to
//! the end of the line, and the slot to the next one waiting.

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_store::{Current, SearchQuery, StoreTx, Stored};

use super::availability::parse_moment;
use super::booking::HOLD_TAG_SYSTEM;
use super::directory::ScheduleFacts;
use super::{conflict, patient_param, HOLD_EXPIRES_URL};
use crate::access::Guard;
use crate::engine::{truncate, Engine, Exec, FhirResponse, RequestBody};
use crate::error::{FhirError, FhirResult};
use crate::interactions::{reference_id, resource_response};
use crate::outbox::{enqueue, Notice, Topic};
use crate::parameters;
use crate::resource_json::{extension, parsed as parse};

/// Extension on a waitlist Appointment: the place wanted (`province`, `region`).
pub const WAITLIST_PLACE: &str = "https://sijill.health/fhir/StructureDefinition/waitlist-place";

/// The tag code of an appointment that came from the waitlist.
pub const WAITLIST_TAG: &str = "waitlist";

/// Whether an appointment came from the waitlist.
pub fn is_from_waitlist(a: &Value) -> bool {
    a["meta"]["tag"].as_array().is_some_and(|t| {
        t.iter()
            .any(|x| x["system"] == HOLD_TAG_SYSTEM && x["code"] == WAITLIST_TAG)
    })
}

/// One part (`specialty`, `province`, `region`) of what a waitlist entry asked for.
fn asked<'v>(a: &'v Value, part: &str) -> Option<&'v Value> {
    extension(a, WAITLIST_PLACE)?["extension"]
        .as_array()?
        .iter()
        .find(|p| p["url"] == part)
}

/// The place a waitlist entry wants: (province, region), lower case.
fn place(a: &Value) -> (Option<String>, Option<String>) {
    let part = |name: &str| asked(a, name)?["valueString"].as_str().map(str::to_lowercase);
    (part("province"), part("region"))
}

/// `POST Appointment/$join-waitlist` (`specialty`, `province` or `region`, `patient`).
pub fn join(engine: &Engine, guard: &Guard<'_>, body: &RequestBody) -> FhirResult<FhirResponse> {
    let params = parameters::read(body)?;
    let patient = patient_param(guard, &params)?;
    let specialty = params
        .iter()
        .find(|(n, _)| n == "specialty")
        .and_then(|(_, v)| parameters::text(v))
        .ok_or_else(|| FhirError::bad_request("Parameter 'specialty' (a code or system|code) is missing"))?;
    let (system, code) = match specialty.split_once('|') {
        Some((s, c)) => (s.to_string(), c.to_string()),
        None => ("http://snomed.info/sct".to_string(), specialty.clone()),
    };
    if code.is_empty() || code.len() > 64 {
        return Err(FhirError::bad_request(format!(
            "'{}' is not a specialty code",
            truncate(&specialty)
        )));
    }
    // The specialty asked for is kept with the place: an offer replaces the entry's
    // specialty with the slot's, and an offer not taken goes back in line with this one.
    let mut place = vec![json!({"url": "specialty", "valueCoding": {"system": system, "code": code}})];
    for name in ["province", "region"] {
        if let Some(v) = parameters::string(&params, name) {
            place.push(json!({"url": name, "valueString": v}));
        }
    }
    // Citizens put themselves on the list; the staff of any facility their patients.
    let staff = super::staff_facility(guard).is_some() || guard.is_platform_admin();
    if !guard.is_the_patient(&patient) && !staff {
        return Err(FhirError::forbidden(
            "only the patient, or a facility's staff, may put a patient on a waitlist",
        ));
    }
    if !matches!(engine.store.read("Patient", &patient)?, Current::Found(_)) {
        return Err(FhirError::resource_not_found("Patient", &patient));
    }
    guard.disclose_patient(&patient);
    let stored = engine.with_tx(guard, Exec::Standalone, |tx| {
        let waiting = SearchQuery::parse(
            "Appointment",
            &[
                ("patient".into(), format!("Patient/{patient}")),
                ("status".into(), "waitlist".into()),
            ],
        )?;
        tx.lock_conditions(&[("Appointment", &waiting)])?;
        for id in tx.search_ids("Appointment", &waiting, 100)? {
            if let Current::Found(a) = tx.read("Appointment", &id)? {
                if super::directory::has_code(&parse(&a)["specialty"], &code) {
                    return Err(conflict(format!(
                        "The patient already waits for this specialty (Appointment/{id})"
                    )));
                }
            }
        }
        let mut entry = json!({
            "resourceType": "Appointment",
            "status": "waitlist",
            "meta": {"tag": [{"system": HOLD_TAG_SYSTEM, "code": WAITLIST_TAG}]},
            "specialty": [{"coding": [{"system": system, "code": code}]}],
            "created": sijill_store::now_instant(),
            "participant": [{"actor": {"reference": format!("Patient/{patient}")}, "status": "needs-action"}],
        });
        entry["extension"] = json!([{"url": WAITLIST_PLACE, "extension": place}]);
        let created = tx.create("Appointment", entry, None)?;
        guard.disclose(&created);
        Ok(created)
    })?;
    Ok(resource_response(engine, StatusCode::CREATED, &stored))
}

/// Whether a waitlist entry wants a slot of this schedule.
fn wants(entry: &Value, slot: &Value, facts: &ScheduleFacts) -> bool {
    let same_specialty = entry["specialty"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .filter_map(|c| c["code"].as_str())
        .any(|code| super::directory::has_code(&slot["specialty"], code));
    let (province, region) = place(entry);
    let here = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
    same_specialty && here(&province, &facts.province) && here(&region, &facts.region)
}

/// Offers a slot that has just been freed (its current version `slot`) to the first
/// citizen waiting for it, in the caller's transaction. Returns the offered appointment.
pub fn offer_freed(engine: &Engine, tx: &mut dyn StoreTx, slot: &Stored) -> FhirResult<Option<String>> {
    let value = parse(slot);
    if value["start"]
        .as_str()
        .and_then(parse_moment)
        .is_none_or(|t| t <= time::OffsetDateTime::now_utc())
    {
        return Ok(None);
    }
    let Some(schedule) = reference_id(&value["schedule"], "Schedule") else {
        return Ok(None);
    };
    let directory = engine.directory.get(&engine.store)?;
    let Some(facts) = directory.schedules.get(schedule).filter(|f| f.active) else {
        return Ok(None);
    };
    // Only entries made by $join-waitlist are in line (an Appointment written by hand
    // with status waitlist and no patient or time of joining is not).
    // Only the entries for one of the slot's specialties are read: this runs in the
    // transaction of every cancellation.
    let specialties = super::directory::codes(&value["specialty"]);
    if specialties.is_empty() {
        return Ok(None);
    }
    let query = SearchQuery::parse(
        "Appointment",
        &[
            ("status".into(), "waitlist".into()),
            ("_tag".into(), format!("{HOLD_TAG_SYSTEM}|{WAITLIST_TAG}")),
            ("specialty".into(), specialties.join(",")),
        ],
    )?;
    let mut line: Vec<(String, String, String, Stored)> = Vec::new();
    for id in tx.search_ids("Appointment", &query, 100_000)? {
        let Current::Found(a) = tx.read("Appointment", &id)? else {
            continue;
        };
        let entry = parse(&a);
        let patient = entry["participant"][0]["actor"]["reference"]
            .as_str()
            .and_then(|r| r.strip_prefix("Patient/"))
            .map(str::to_string);
        let joined = entry["created"].as_str().map(str::to_string);
        if let (Some(patient), Some(joined)) = (patient, joined) {
            if wants(&entry, &value, facts) {
                line.push((joined, id, patient, a));
            }
        }
    }
    line.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let Some((_, id, patient, first)) = line.into_iter().next() else {
        return Ok(None);
    };
    let entry = parse(&first);
    let offer = Offer {
        slot,
        facts: Some(facts),
        patient: &patient,
        intro: "A place you waited for is free:",
    };
    let mut hold = offer.appointment(engine);
    hold["created"] = entry["created"].clone();
    if let Some(tags) = hold["meta"]["tag"].as_array_mut() {
        tags.push(json!({"system": HOLD_TAG_SYSTEM, "code": WAITLIST_TAG}));
    }
    let place = entry["extension"].as_array().cloned().unwrap_or_default();
    if let Some(ext) = hold["extension"].as_array_mut() {
        ext.extend(place);
    }
    let (stored, _) = tx.update("Appointment", &id, hold, Some(first.version))?;
    offer.take(engine, tx, &stored)?;
    Ok(Some(id))
}

/// A free slot held for a patient (from the waitlist, or instead of an appointment an
/// absence cancelled), for `--offer-ttl`.
pub struct Offer<'a> {
    /// The slot, as read in the transaction.
    pub slot: &'a Stored,
    /// Its schedule's facts.
    pub facts: Option<&'a ScheduleFacts>,
    /// The patient it is for.
    pub patient: &'a str,
    /// How the notice begins.
    pub intro: &'a str,
}

impl Offer<'_> {
    /// The pending Appointment that holds the slot (to be created, or written over an entry).
    pub fn appointment(&self, engine: &Engine) -> Value {
        let value = parse(self.slot);
        let expires = sijill_store::instant_in(engine.scheduling.offer_seconds);
        let mut hold = super::appointment_on(
            &value,
            &self.slot.id,
            self.facts,
            Some((self.patient, "needs-action")),
            "pending",
        );
        hold["created"] = json!(sijill_store::now_instant());
        hold["meta"] = json!({"tag": [{"system": HOLD_TAG_SYSTEM, "code": "hold"}]});
        hold["extension"] = json!([{"url": HOLD_EXPIRES_URL, "valueInstant": expires}]);
        super::with_meeting_link(&mut hold, &engine.scheduling);
        hold
    }

    /// Gives the slot to the written hold until it expires, and tells the patient.
    pub fn take(&self, engine: &Engine, tx: &mut dyn StoreTx, hold: &Stored) -> FhirResult<()> {
        let appointment = parse(hold);
        let expires = super::booking::hold_expires(&appointment).unwrap_or("").to_string();
        let held = super::booking::with_state(parse(self.slot), "busy-tentative", Some(&hold.id), Some(&expires));
        tx.update("Slot", &self.slot.id, held, Some(self.slot.version))?;
        enqueue(
            tx,
            Notice {
                patient: self.patient,
                topic: Topic::Offer,
                about: &format!("Appointment/{}", hold.id),
                text: format!(
                    "{} {} It is kept for you until {expires}: book it to confirm, or choose another time.",
                    self.intro,
                    super::notices::describe(engine, &appointment)
                ),
                deliver_after: None,
            },
        )?;
        Ok(())
    }
}

/// An offer not taken in time, back at the end of the waitlist.
pub fn back_in_line(offer: &Value) -> Value {
    let patient = offer["participant"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| reference_id(&p["actor"], "Patient").is_some()))
        .cloned()
        .unwrap_or(Value::Null);
    let specialty = asked(offer, "specialty").map(|p| json!([{"coding": [p["valueCoding"].clone()]}]));
    let mut entry = json!({
        "resourceType": "Appointment",
        "status": "waitlist",
        "meta": {"tag": [{"system": HOLD_TAG_SYSTEM, "code": WAITLIST_TAG}]},
        "specialty": specialty.unwrap_or_else(|| offer["specialty"].clone()),
        "created": sijill_store::now_instant(),
        "participant": [patient],
    });
    let place: Vec<Value> = offer["extension"]
        .as_array()
        .map(|e| e.iter().filter(|x| x["url"] == WAITLIST_PLACE).cloned().collect())
        .unwrap_or_default();
    if !place.is_empty() {
        entry["extension"] = Value::Array(place);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_not_taken_goes_back_in_line_for_the_specialty_asked_not_the_slots() {
        let offer = json!({
            "resourceType": "Appointment", "status": "pending",
            "specialty": [{"coding": [{"code": "slot-specialty"}, {"code": "asked"}]}],
            "participant": [{"actor": {"reference": "Practitioner/x"}}, {"actor": {"reference": "Patient/p"}}],
            "extension": [
                {"url": HOLD_EXPIRES_URL, "valueInstant": "2026-01-01T00:00:00Z"},
                {"url": WAITLIST_PLACE, "extension": [
                    {"url": "specialty", "valueCoding": {"system": "http://snomed.info/sct", "code": "asked"}},
                    {"url": "province", "valueString": "Rabat"}]}]
        });
        let entry = back_in_line(&offer);
        assert_eq!(entry["status"], "waitlist");
        assert_eq!(
            entry["specialty"],
            json!([{"coding": [{"system": "http://snomed.info/sct", "code": "asked"}]}])
        );
        assert_eq!(entry["participant"][0]["actor"]["reference"], "Patient/p");
        assert_eq!(place(&entry), (Some("rabat".into()), None));
        assert!(is_from_waitlist(&entry));
        assert!(!entry.to_string().contains(HOLD_EXPIRES_URL), "no longer a hold");
    }
}
