//! A practitioner's absence: `POST Schedule/{id}/$block` (`start`, `end`, `reason`), by the
//! facility's staff. In one transaction: the Schedule gets the period as `not-available`
//! (so generation leaves it empty from then on), every slot in it becomes
//! `busy-unavailable`, and every appointment on those slots is cancelled — its patient told
//! why, and offered the earliest equivalent slot (same specialty, same province, another
//! schedule), held for them for `--offer-ttl` so that they only need to confirm it.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_store::{Current, SearchQuery, StoreError, StoreTx};

use super::availability::{format_moment, parse_moment, NOT_AVAILABLE_URL};
use super::booking::with_state;
use super::directory::Directory;
use super::{conflict, SLOT_APPOINTMENT_URL};
use crate::access::Guard;
use crate::engine::{Engine, Exec, FhirResponse, RequestBody};
use crate::error::{FhirError, FhirResult};
use crate::interactions::reference_id;
use crate::parameters;
use crate::resource_json::{extension, parsed as parse, push_extension};

/// Alternatives looked up for the patients of an absence.
const ALTERNATIVES: usize = 50;

/// What an absence changed.
#[derive(Debug, Default)]
struct Blocked {
    slots: i64,
    cancelled: i64,
    offered: i64,
}

/// `POST Schedule/{id}/$block`.
pub fn block(engine: &Engine, guard: &Guard<'_>, id: &str, body: &RequestBody) -> FhirResult<FhirResponse> {
    let params = parameters::read(body)?;
    let moment = |name: &str| {
        parameters::text(
            &params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null),
        )
        .and_then(|t| parse_moment(&t))
        .ok_or_else(|| FhirError::bad_request(format!("Parameter '{name}' must be a dateTime with a time zone")))
    };
    let (start, end) = (moment("start")?, moment("end")?);
    if end <= start {
        return Err(FhirError::bad_request("Parameter 'end' must be after 'start'"));
    }
    let reason = parameters::string(&params, "reason").unwrap_or_else(|| "absence".into());
    let directory = engine.directory.get(&engine.store)?;
    let facts = directory
        .schedules
        .get(id)
        .cloned()
        .ok_or_else(|| FhirError::resource_not_found("Schedule", id))?;
    if !super::is_staff_of(guard, facts.organization.as_deref()) {
        return Err(FhirError::forbidden("only the facility's staff block its schedules"));
    }
    let specialty = super::directory::codes(&facts.specialty).into_iter().next();
    let alternatives = super::find::equivalents(engine, &directory, &facts, specialty, ALTERNATIVES)?;
    let period_start = start;
    let earliest_start = format_moment(start - time::Duration::days(1));
    let (start, end) = (format_moment(start), format_moment(end));
    let done = engine.with_tx(guard, Exec::Standalone, |tx| {
        let Current::Found(schedule) = tx.read("Schedule", id)? else {
            return Err(FhirError::resource_not_found("Schedule", id));
        };
        let mut value = parse(&schedule);
        let closure = json!({"url": NOT_AVAILABLE_URL, "extension": [
            {"url": "during", "valuePeriod": {"start": start, "end": end}},
            {"url": "description", "valueString": reason}]});
        push_extension(&mut value, closure);
        tx.update("Schedule", id, value, Some(schedule.version))
            .map_err(|e| match e {
                StoreError::VersionConflict { .. } => {
                    conflict("The schedule was changed at the same moment; try again")
                }
                other => other.into(),
            })?;
        // Slots that overlap the period: starting in it, or before it and ending in it (no
        // slot is longer than a day).
        let query = SearchQuery::parse(
            "Slot",
            &[
                ("schedule".into(), format!("Schedule/{id}")),
                ("start".into(), format!("ge{earliest_start}")),
                ("start".into(), format!("lt{end}")),
            ],
        )?;
        let mut done = Blocked::default();
        let mut offers = Offers {
            engine,
            directory: &directory,
            alternatives: &alternatives,
            used: HashSet::new(),
        };
        for slot_id in tx.search_ids("Slot", &query, 100_000)? {
            let Current::Found(slot) = tx.read("Slot", &slot_id)? else {
                continue;
            };
            let value = parse(&slot);
            let overlaps = value["end"]
                .as_str()
                .and_then(parse_moment)
                .is_none_or(|slot_end| slot_end > period_start);
            if !overlaps {
                continue;
            }
            let appointment = extension(&value, SLOT_APPOINTMENT_URL)
                .and_then(|x| reference_id(&x["valueReference"], "Appointment"))
                .map(str::to_string);
            tx.update(
                "Slot",
                &slot_id,
                with_state(value, "busy-unavailable", None, None),
                Some(slot.version),
            )?;
            done.slots += 1;
            if let Some(a) = appointment {
                if let Some(patient) = cancel_for_absence(engine, tx, &a, &reason)? {
                    done.cancelled += 1;
                    done.offered += i64::from(offers.offer(tx, &patient)?);
                }
            }
        }
        Ok(done)
    })?;
    engine.directory.invalidate();
    Ok(parameters::response(
        StatusCode::OK,
        &[
            ("slots-blocked", json!(done.slots)),
            ("appointments-cancelled", json!(done.cancelled)),
            ("offers-made", json!(done.offered)),
        ],
    ))
}

/// Cancels a booked or held appointment for the absence and tells its patient; returns
/// the patient.
fn cancel_for_absence(engine: &Engine, tx: &mut dyn StoreTx, id: &str, reason: &str) -> FhirResult<Option<String>> {
    let Current::Found(current) = tx.read("Appointment", id)? else {
        return Ok(None);
    };
    let mut a = parse(&current);
    if !matches!(a["status"].as_str(), Some("booked" | "pending")) {
        return Ok(None);
    }
    if super::waitlist::is_from_waitlist(&a) {
        // A slot offered from the waitlist: the patient keeps waiting, at the end of the line.
        tx.update(
            "Appointment",
            id,
            super::waitlist::back_in_line(&a),
            Some(current.version),
        )?;
        return Ok(None);
    }
    let Some(patient) = a["participant"]
        .as_array()
        .and_then(|ps| ps.iter().find_map(|p| reference_id(&p["actor"], "Patient")))
        .map(str::to_string)
    else {
        return Ok(None);
    };
    a["status"] = json!("cancelled");
    a["cancelationReason"] = json!({"text": format!("the practitioner is absent ({reason})")});
    super::notices::cancelled(engine, tx, id, &a, &patient)?;
    tx.update("Appointment", id, a, Some(current.version))?;
    Ok(Some(patient))
}

/// The equivalent slots offered to the patients of an absence, each to one patient.
struct Offers<'a> {
    engine: &'a Engine,
    directory: &'a Directory,
    alternatives: &'a [Value],
    used: HashSet<String>,
}

impl Offers<'_> {
    /// Holds the first equivalent slot still free for the patient and tells them; false
    /// when none is left.
    fn offer(&mut self, tx: &mut dyn StoreTx, patient: &str) -> FhirResult<bool> {
        for candidate in self.alternatives {
            let Some(slot_id) = candidate["id"].as_str() else {
                continue;
            };
            if !self.used.insert(slot_id.to_string()) {
                continue;
            }
            let Current::Found(slot) = tx.read("Slot", slot_id)? else {
                continue;
            };
            let value = parse(&slot);
            if value["status"] != "free" {
                continue;
            }
            let offer = super::waitlist::Offer {
                slot: &slot,
                facts: reference_id(&value["schedule"], "Schedule").and_then(|s| self.directory.schedules.get(s)),
                patient,
                intro: "Instead,",
            };
            let hold = tx.create("Appointment", offer.appointment(self.engine), None)?;
            offer.take(self.engine, tx, &hold)?;
            return Ok(true);
        }
        Ok(false)
    }
}
