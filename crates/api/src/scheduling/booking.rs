//! Holding, booking, cancelling and moving appointments (IHE Scheduling `$hold` and
//! `$book`, and Sijill's `$cancel` and `$reschedule`).
//!
//! Every operation is one transaction that changes the Slot with `If-Match` on the version
//! it read there: a slot is never given twice, and an operation that fails half-way leaves
//! nothing changed — a reschedule either moves the appointment or leaves it where it was.
//!
//! - `POST Appointment/$hold` (`slot` or `appointment-resource`, `patient`): a pending
//!   Appointment and the Slot `busy-tentative` until the hold expires.
//! - `POST Appointment/$book` (`appointment-reference` to a held one, or `slot` /
//!   `appointment-resource` and `patient`): a booked Appointment and the Slot `busy`. A
//!   client's `X-Request-Id` makes it idempotent: the same id books once and answers the
//!   same appointment again.
//! - `POST Appointment/{id}/$cancel` (`reason`): cancelled, the slot free again.
//! - `POST Appointment/{id}/$reschedule` (`slot`): the same appointment on another slot.

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_store::{Current, SearchQuery, StoreError, StoreTx, Stored};

use super::availability::parse_moment;
use super::directory::ScheduleFacts;
use super::turns::Turn;
use super::{check_books_for, conflict, patient_param, HOLD_EXPIRES_URL, SLOT_APPOINTMENT_URL};
use crate::access::Guard;
use crate::engine::{Engine, Exec, FhirResponse, RequestBody};
use crate::error::{FhirError, FhirResult};
use crate::interactions::reference_id;
use crate::interactions::resource_response;
use crate::parameters;
use crate::resource_json::{extension, parsed as parse, push_extension, set_extension};

/// The tag on an Appointment made by `$hold`, so that expired holds can be found.
pub const HOLD_TAG_SYSTEM: &str = "https://sijill.health/fhir/CodeSystem/booking";

/// Whether an instant (any offset) lies before now; an unreadable one has.
fn has_passed(instant: &str) -> bool {
    parse_moment(instant).is_none_or(|t| t <= time::OffsetDateTime::now_utc())
}

/// The appointment that has a slot.
fn taken_by(slot: &Value) -> Option<&str> {
    reference_id(&extension(slot, SLOT_APPOINTMENT_URL)?["valueReference"], "Appointment")
}

/// When a hold (on a slot or a pending appointment) expires.
pub(super) fn hold_expires(resource: &Value) -> Option<&str> {
    extension(resource, HOLD_EXPIRES_URL)?["valueInstant"].as_str()
}

/// Why a slot cannot be taken now, if it cannot: booked, held by someone else, or past.
/// `holder` is the appointment asking, when it holds the slot.
fn unavailable(slot: &Value, holder: Option<&str>) -> Option<String> {
    if slot["start"].as_str().is_none_or(has_passed) {
        return Some("This slot has already started".into());
    }
    match slot["status"].as_str() {
        Some("free") => None,
        Some("busy-tentative") if holder.is_some() && taken_by(slot) == holder => None,
        Some("busy-tentative") if hold_expires(slot).is_none_or(has_passed) => None,
        Some("busy-tentative") => Some(HELD_FOR_SOMEONE.into()),
        _ => Some(BOOKED_BY_SOMEONE.into()),
    }
}

/// Why a slot held by another citizen cannot be taken.
const HELD_FOR_SOMEONE: &str =
    "This slot is held for someone else for a few minutes; choose another or try again later";

/// Why a slot booked by another citizen cannot be taken.
const BOOKED_BY_SOMEONE: &str = "This slot was just booked by someone else; choose another";

/// Refuses a booking whose slot another booking took while this one waited for its turn
/// (see [`super::turns`]), without reading the slot: after the same check of the actor's
/// right to book there as a read slot would get.
fn refuse_taken_meanwhile(guard: &Guard<'_>, turn: &Turn<'_>, patient: &str) -> FhirResult<()> {
    match turn.taken_meanwhile() {
        Some(taken) => {
            check_books_for(guard, patient, taken.organization.as_deref())?;
            Err(conflict(taken.why))
        }
        None => Ok(()),
    }
}

/// Refuses a slot already seen taken, before opening a write transaction for it: of many
/// citizens racing for one slot, the late ones are answered without taking the writer's
/// turn. The transaction checks again whatever this let through.
fn refuse_early(seen: &Value) -> FhirResult<()> {
    match unavailable(seen, None) {
        Some(why) => Err(conflict(why)),
        None => Ok(()),
    }
}

/// The slot with a status, given to `appointment` (until `expires` for a hold), or to
/// nobody.
pub(super) fn with_state(mut slot: Value, status: &str, appointment: Option<&str>, expires: Option<&str>) -> Value {
    slot["status"] = json!(status);
    let taker = appointment
        .map(|a| json!({"url": SLOT_APPOINTMENT_URL, "valueReference": {"reference": format!("Appointment/{a}")}}));
    set_extension(&mut slot, SLOT_APPOINTMENT_URL, taker);
    let expiry = expires.map(|e| json!({"url": HOLD_EXPIRES_URL, "valueInstant": e}));
    set_extension(&mut slot, HOLD_EXPIRES_URL, expiry);
    slot
}

/// A store conflict on the slot or appointment (someone changed it first) as a 409.
fn raced(e: StoreError) -> FhirError {
    match e {
        StoreError::VersionConflict { .. } => {
            conflict("This slot or appointment was changed by someone else at the same moment; look again and retry")
        }
        other => other.into(),
    }
}

/// The slot a request names: `slot` (Reference) or `appointment-resource` (its first slot).
fn slot_param(params: &[(String, Value)]) -> FhirResult<String> {
    let named = params.iter().find_map(|(n, v)| match n.as_str() {
        "slot" => reference_id(v, "Slot").map(str::to_string),
        "appointment-resource" => reference_id(&v["slot"][0], "Slot").map(str::to_string),
        _ => None,
    });
    named.ok_or_else(|| {
        FhirError::bad_request(
            "Name the slot: parameter 'slot' (Reference Slot/{id}) or 'appointment-resource' with a slot",
        )
    })
}

/// The directory's facts of the schedule a slot belongs to (its facility, role and
/// place), looked up before a transaction so that none waits for the directory.
fn schedule_facts(engine: &Engine, slot: &Value) -> FhirResult<Option<ScheduleFacts>> {
    let Some(schedule) = reference_id(&slot["schedule"], "Schedule") else {
        return Ok(None);
    };
    let directory = engine.directory.get(&engine.store)?;
    Ok(directory.schedules.get(schedule).cloned())
}

/// The facility of a schedule's facts.
fn facility(facts: &Option<ScheduleFacts>) -> Option<&str> {
    facts.as_ref().and_then(|f| f.organization.as_deref())
}

/// The current version of a resource the unit of work will change, locked until it ends:
/// of two bookings of one slot, the second waits here and then sees the slot taken, before
/// any work of its own.
fn read_in(tx: &mut dyn StoreTx, resource_type: &str, id: &str) -> FhirResult<Stored> {
    match tx.read_for_update(resource_type, id)? {
        Current::Found(s) => Ok(s),
        _ => Err(FhirError::resource_not_found(resource_type, id)),
    }
}

fn read_current(engine: &Engine, resource_type: &str, id: &str) -> FhirResult<Stored> {
    match engine.store.read(resource_type, id)? {
        Current::Found(s) => Ok(s),
        _ => Err(FhirError::resource_not_found(resource_type, id)),
    }
}

/// The Appointment for a patient on a slot: based on the referral it needed, if any, and
/// with a meeting link of its own when it is a teleconsultation.
fn appointment_for(
    engine: &Engine,
    slot: &Value,
    slot_id: &str,
    patient: &str,
    status: &str,
    facts: &Option<ScheduleFacts>,
    referral: Option<String>,
) -> Value {
    let mut a = super::appointment_on(slot, slot_id, facts.as_ref(), Some((patient, "accepted")), status);
    a["created"] = json!(sijill_store::now_instant());
    if let Some(r) = referral {
        a["basedOn"] = json!([{"reference": format!("ServiceRequest/{r}")}]);
    }
    super::with_meeting_link(&mut a, &engine.scheduling);
    if status == "booked" {
        super::notices::hand_reminders_over(&mut a);
    }
    a
}

/// The patient an Appointment is for.
pub(super) fn patient_of(appointment: &Value) -> Option<String> {
    appointment["participant"]
        .as_array()?
        .iter()
        .find_map(|p| reference_id(&p["actor"], "Patient"))
        .map(str::to_string)
}

fn slot_of(appointment: &Value) -> Option<String> {
    reference_id(&appointment["slot"][0], "Slot").map(str::to_string)
}

fn patient_exists(engine: &Engine, patient: &str) -> FhirResult<()> {
    read_current(engine, "Patient", patient).map(|_| ())
}

/// The slot a citizen asks for, read before any transaction, and the verdict on the
/// patient (as [`patient_exists`] gives it): both in one round trip. The slot's absence is
/// answered at once; the patient's verdict is the caller's to answer, after its rights
/// check, where it always was.
fn slot_and_patient(engine: &Engine, slot_id: &str, patient: &str) -> FhirResult<(Stored, FhirResult<()>)> {
    let mut read = engine
        .store
        .read_each(&[("Slot", slot_id), ("Patient", patient)])?
        .into_iter();
    let Some(Current::Found(slot)) = read.next() else {
        return Err(FhirError::resource_not_found("Slot", slot_id));
    };
    let verdict = match read.next() {
        Some(Current::Found(_)) => Ok(()),
        _ => Err(FhirError::resource_not_found("Patient", patient)),
    };
    Ok((slot, verdict))
}

/// `POST Appointment/$hold`.
pub fn hold(engine: &Engine, guard: &Guard<'_>, body: &RequestBody) -> FhirResult<FhirResponse> {
    let params = parameters::read(body)?;
    let slot_id = slot_param(&params)?;
    let patient = patient_param(guard, &params)?;
    let mut turn = engine.slot_turns.take(&slot_id);
    refuse_taken_meanwhile(guard, &turn, &patient)?;
    let (slot, patient_verdict) = slot_and_patient(engine, &slot_id, &patient)?;
    let seen = parse(&slot);
    let facts = schedule_facts(engine, &seen)?;
    check_books_for(guard, &patient, facility(&facts))?;
    refuse_early(&seen)?;
    patient_verdict?;
    guard.disclose_patient(&patient);
    let expires = sijill_store::instant_in(engine.scheduling.hold_seconds);
    let stored = engine.with_tx(guard, Exec::Standalone, |tx| {
        let slot = read_in(tx, "Slot", &slot_id)?;
        let value = parse(&slot);
        if let Some(why) = unavailable(&value, None) {
            return Err(conflict(why));
        }
        let referral = engine.scheduling.rules.check_booking(tx, &patient, &value, None)?;
        let mut appointment = appointment_for(engine, &value, &slot_id, &patient, "pending", &facts, referral);
        appointment["meta"] = json!({"tag": [{"system": HOLD_TAG_SYSTEM, "code": "hold"}]});
        push_extension(
            &mut appointment,
            json!({"url": HOLD_EXPIRES_URL, "valueInstant": expires}),
        );
        let created = tx.create("Appointment", appointment, None)?;
        let held = with_state(value, "busy-tentative", Some(&created.id), Some(&expires));
        tx.update("Slot", &slot_id, held, Some(slot.version)).map_err(raced)?;
        guard.disclose(&created);
        Ok(created)
    })?;
    turn.leave_taken(HELD_FOR_SOMEONE, facility(&facts).map(str::to_string));
    Ok(resource_response(engine, StatusCode::CREATED, &stored))
}

/// The idempotency key of a booking: the actor and the client's request id.
fn request_key(guard: &Guard<'_>) -> Option<String> {
    let id = guard.context().client_request_id.as_deref()?;
    let who = match &guard.context().actor {
        crate::context::Actor::LocalOperator => "operator".to_string(),
        crate::context::Actor::Principal(p) => format!("{}|{}", p.client_id, p.subject),
    };
    Some(format!("{who}|{id}"))
}

/// `POST Appointment/$book`.
pub fn book(engine: &Engine, guard: &Guard<'_>, body: &RequestBody) -> FhirResult<FhirResponse> {
    let params = parameters::read(body)?;
    let held = params
        .iter()
        .find(|(n, _)| n == "appointment-reference")
        .map(|(_, v)| {
            reference_id(v, "Appointment")
                .map(str::to_string)
                .ok_or_else(|| FhirError::bad_request("Parameter 'appointment-reference' must be Appointment/{id}"))
        })
        .transpose()?;
    let mut turn = None;
    let (slot_id, patient, facts, patient_verdict) = match &held {
        // A hold the actor may not book is answered as absent, like any hidden record.
        Some(id) => {
            let o = own_appointment(engine, guard, id)?;
            if o.slot.is_empty() {
                return Err(conflict(
                    "This appointment has no slot yet: it is waiting on the waitlist",
                ));
            }
            (o.slot, o.patient, None, None)
        }
        None => {
            let (slot_id, patient) = (slot_param(&params)?, patient_param(guard, &params)?);
            let taken_turn = engine.slot_turns.take(&slot_id);
            // A retry with the same request id must reach its earlier booking, not 409.
            let may_refuse_early = request_key(guard).is_none();
            if may_refuse_early {
                refuse_taken_meanwhile(guard, &taken_turn, &patient)?;
            }
            turn = Some(taken_turn);
            let (slot, verdict) = slot_and_patient(engine, &slot_id, &patient)?;
            let seen = parse(&slot);
            let facts = schedule_facts(engine, &seen)?;
            check_books_for(guard, &patient, facility(&facts))?;
            if may_refuse_early {
                refuse_early(&seen)?;
            }
            guard.disclose_patient(&patient);
            (slot_id, patient, facts, Some(verdict))
        }
    };
    patient_verdict.unwrap_or_else(|| patient_exists(engine, &patient))?;
    let key = request_key(guard);
    let (stored, created) = engine.with_tx(guard, Exec::Standalone, |tx| {
        if let Some(key) = &key {
            if let Some(done) = tx.state_get("booking-request", key)? {
                if let Current::Found(a) = tx.read("Appointment", &done)? {
                    guard.disclose(&a);
                    return Ok((a, false));
                }
            }
        }
        // A held appointment is locked before its slot, in the order a cancel locks them.
        let held_current = match &held {
            Some(id) => Some(read_in(tx, "Appointment", id)?),
            None => None,
        };
        let slot = read_in(tx, "Slot", &slot_id)?;
        let value = parse(&slot);
        let booked = match held.as_deref().zip(held_current) {
            Some((id, current)) => {
                let mut a = parse(&current);
                if a["status"] != "pending" {
                    return Err(conflict(format!(
                        "Only a held (pending) appointment can be booked; this one is {}",
                        a["status"].as_str().unwrap_or("unknown")
                    )));
                }
                if let Some(why) = unavailable(&value, Some(id)) {
                    return Err(conflict(format!("The hold expired and the slot is gone: {why}")));
                }
                a["status"] = json!("booked");
                set_extension(&mut a, HOLD_EXPIRES_URL, None);
                super::notices::hand_reminders_over(&mut a);
                let (stored, _) = tx.update("Appointment", id, a, Some(current.version)).map_err(raced)?;
                stored
            }
            None => {
                if let Some(why) = unavailable(&value, None) {
                    return Err(conflict(why));
                }
                let referral = engine.scheduling.rules.check_booking(tx, &patient, &value, None)?;
                let appointment = appointment_for(engine, &value, &slot_id, &patient, "booked", &facts, referral);
                tx.create("Appointment", appointment, None)?
            }
        };
        let busy = with_state(value, "busy", Some(&booked.id), None);
        tx.update("Slot", &slot_id, busy, Some(slot.version)).map_err(raced)?;
        if let Some(key) = &key {
            tx.state_put("booking-request", key, &booked.id)?;
        }
        super::notices::booked(engine, tx, &booked.id, &parse(&booked), &patient)?;
        guard.disclose(&booked);
        Ok((booked, held.is_none()))
    })?;
    if let Some(turn) = turn.as_mut().filter(|_| created) {
        turn.leave_taken(BOOKED_BY_SOMEONE, facility(&facts).map(str::to_string));
    }
    drop(turn);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(resource_response(engine, status, &stored))
}

/// An appointment the actor may change.
pub struct Owned {
    /// The appointment as read.
    pub appointment: Value,
    /// Its patient's id.
    pub patient: String,
    /// Its slot's id (empty for a waitlist entry, which has none yet).
    pub slot: String,
    /// Whether the actor is the facility's staff (rather than the patient).
    pub by_staff: bool,
    /// The facility of its schedule.
    pub organization: Option<String>,
}

/// Reads an appointment and checks that the actor may change it.
pub fn own_appointment(engine: &Engine, guard: &Guard<'_>, id: &str) -> FhirResult<Owned> {
    let current = read_current(engine, "Appointment", id)?;
    let a = parse(&current);
    let patient = patient_of(&a).ok_or_else(|| FhirError::bad_request("The appointment names no patient"))?;
    // A waitlist entry has no slot yet: only its patient (or staff) may change it.
    let slot_id = slot_of(&a).unwrap_or_default();
    let facts = match slot_of(&a) {
        Some(slot) => schedule_facts(engine, &parse(&read_current(engine, "Slot", &slot)?))?,
        None => None,
    };
    if let Err(e) = check_books_for(guard, &patient, facility(&facts)) {
        guard.check_visible(&current)?;
        return Err(e);
    }
    guard.disclose_patient(&patient);
    Ok(Owned {
        appointment: a,
        patient,
        by_staff: super::is_staff_of(guard, facility(&facts)),
        organization: facility(&facts).map(str::to_string),
        slot: slot_id,
    })
}

/// Frees a slot if it is still given to this appointment, and offers it to the first
/// citizen on the waitlist for it.
fn free_slot(engine: &Engine, tx: &mut dyn StoreTx, slot_id: &str, appointment: &str) -> FhirResult<()> {
    if let Current::Found(slot) = tx.read_for_update("Slot", slot_id)? {
        let value = parse(&slot);
        // A slot booked by hand (no appointment noted on it) is freed by its appointment.
        let ours = match (value["status"].as_str(), taken_by(&value)) {
            (Some("busy" | "busy-tentative"), Some(a)) => a == appointment,
            (Some("busy"), None) => true,
            _ => false,
        };
        if ours {
            let free = with_state(value, "free", None, None);
            let (freed, _) = tx.update("Slot", slot_id, free, Some(slot.version)).map_err(raced)?;
            super::waitlist::offer_freed(engine, tx, &freed)?;
        }
    }
    Ok(())
}

/// `POST Appointment/{id}/$cancel`.
pub fn cancel(engine: &Engine, guard: &Guard<'_>, id: &str, body: &RequestBody) -> FhirResult<FhirResponse> {
    let reason = parameters::string(&parameters::read(body)?, "reason");
    let owned = own_appointment(engine, guard, id)?;
    let stored = engine.with_tx(guard, Exec::Standalone, |tx| {
        let current = read_in(tx, "Appointment", id)?;
        let mut a = parse(&current);
        engine.scheduling.rules.check_cancellation(&a, owned.by_staff)?;
        if !matches!(a["status"].as_str(), Some("booked" | "pending" | "waitlist")) {
            return Err(conflict(format!(
                "Only a booked, held or waiting appointment can be cancelled; this one is {}",
                a["status"].as_str().unwrap_or("unknown")
            )));
        }
        let was_booked = a["status"] == "booked";
        a["status"] = json!("cancelled");
        a["cancelationReason"] = json!({"text": reason.clone().unwrap_or_else(|| "cancelled".into())});
        if let Some(slot_id) = slot_of(&a) {
            free_slot(engine, tx, &slot_id, id)?;
        }
        if was_booked {
            super::notices::cancelled(engine, tx, id, &a, &owned.patient)?;
        }
        let (stored, _) = tx.update("Appointment", id, a, Some(current.version)).map_err(raced)?;
        guard.disclose(&stored);
        Ok(stored)
    })?;
    Ok(resource_response(engine, StatusCode::OK, &stored))
}

/// `POST Appointment/{id}/$reschedule`.
pub fn reschedule(engine: &Engine, guard: &Guard<'_>, id: &str, body: &RequestBody) -> FhirResult<FhirResponse> {
    let params = parameters::read(body)?;
    let new_slot_id = slot_param(&params)?;
    let owned = own_appointment(engine, guard, id)?;
    let patient = owned.patient;
    let facts = schedule_facts(engine, &parse(&read_current(engine, "Slot", &new_slot_id)?))?;
    check_books_for(guard, &patient, facility(&facts))?;
    let stored = engine.with_tx(guard, Exec::Standalone, |tx| {
        let current = read_in(tx, "Appointment", id)?;
        let a = parse(&current);
        if a["status"] != "booked" {
            return Err(conflict("Only a booked appointment can be moved"));
        }
        let old_slot = slot_of(&a).unwrap_or_default();
        if old_slot == new_slot_id {
            return Err(conflict("The appointment is already on this slot"));
        }
        engine.scheduling.rules.check_cancellation(&a, owned.by_staff)?;
        // Take the new slot first, then give back the old one, then move the appointment:
        // a failure at any step rolls back the steps before it.
        let slot = read_in(tx, "Slot", &new_slot_id)?;
        let value = parse(&slot);
        if let Some(why) = unavailable(&value, None) {
            return Err(conflict(why));
        }
        let referral = engine.scheduling.rules.check_booking(tx, &patient, &value, Some(id))?;
        let busy = with_state(value.clone(), "busy", Some(id), None);
        tx.update("Slot", &new_slot_id, busy, Some(slot.version))
            .map_err(raced)?;
        free_slot(engine, tx, &old_slot, id)?;
        let mut moved = appointment_for(engine, &value, &new_slot_id, &patient, "booked", &facts, referral);
        moved["created"] = a["created"].clone();
        let (stored, _) = tx
            .update("Appointment", id, moved, Some(current.version))
            .map_err(raced)?;
        super::notices::moved(engine, tx, id, &parse(&stored), &patient)?;
        guard.disclose(&stored);
        Ok(stored)
    })?;
    Ok(resource_response(engine, StatusCode::OK, &stored))
}

/// Cancels held appointments whose hold expired and frees their slots; returns how many.
/// The server runs it every half minute; an expired hold is already free for others
/// before that.
pub fn release_expired_holds(engine: &Engine, guard: &Guard<'_>) -> FhirResult<usize> {
    let query = SearchQuery::parse(
        "Appointment",
        &[
            ("status".into(), "pending".into()),
            ("_tag".into(), format!("{HOLD_TAG_SYSTEM}|hold")),
        ],
    )?;
    let pending = engine.store.search_page("Appointment", &query, None, 500)?;
    let expired: Vec<Stored> = pending
        .into_iter()
        .filter(|s| hold_expires(&parse(s)).is_some_and(has_passed))
        .collect();
    if expired.is_empty() {
        return Ok(0);
    }
    engine.with_tx(guard, Exec::Standalone, |tx| {
        let mut released = 0;
        for s in &expired {
            let Current::Found(current) = tx.read("Appointment", &s.id)? else {
                continue;
            };
            let mut a = parse(&current);
            if a["status"] != "pending" {
                continue;
            }
            if let Some(slot_id) = slot_of(&a) {
                free_slot(engine, tx, &slot_id, &s.id)?;
            }
            if super::waitlist::is_from_waitlist(&a) {
                // An offer not taken: back to the end of the line.
                a = super::waitlist::back_in_line(&a);
            } else {
                a["status"] = json!("cancelled");
                a["cancelationReason"] = json!({"text": "the hold expired before the booking"});
            }
            let (stored, _) = tx
                .update("Appointment", &s.id, a, Some(current.version))
                .map_err(raced)?;
            guard.disclose(&stored);
            released += 1;
        }
        Ok(released)
    })
}
