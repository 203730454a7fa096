//! The facility's side of appointments: an arrival checked in (`Appointment/{id}/$check-in`:
//! the Appointment becomes `arrived` and an Encounter is opened for the visit), and a
//! patient who did not come recorded (`Appointment/{id}/$no-show`). Only the staff of the
//! appointment's facility (or the platform's administrator) do either.

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_store::{Current, StoreTx};

use super::availability::Mode;
use super::booking::{own_appointment, Owned};
use super::{conflict, VISIT_MODE_SYSTEM};
use crate::access::Guard;
use crate::engine::{Engine, Exec, FhirResponse, Payload};
use crate::error::{FhirError, FhirResult};
use crate::interactions::reference_id;

/// The appointment, when the actor is its facility's staff.
fn staff_appointment(engine: &Engine, guard: &Guard<'_>, id: &str, what: &str) -> FhirResult<Owned> {
    let owned = own_appointment(engine, guard, id)?;
    if !owned.by_staff {
        return Err(FhirError::forbidden(format!("only the facility's staff {what}")));
    }
    Ok(owned)
}

/// A booked appointment read in the transaction (its version and body), or 409 saying
/// what `act` cannot be done to it.
fn booked_in(tx: &mut dyn StoreTx, id: &str, act: &str) -> FhirResult<(u64, Value)> {
    let Current::Found(current) = tx.read("Appointment", id)? else {
        return Err(FhirError::resource_not_found("Appointment", id));
    };
    let a: Value = crate::resource_json::parsed(&current);
    if a["status"] != "booked" {
        return Err(conflict(format!(
            "Only a booked appointment can {act}; this one is {}",
            a["status"].as_str().unwrap_or("unknown")
        )));
    }
    Ok((current.version, a))
}

/// The references of an appointment's participants of one type.
fn participants<'a>(appointment: &'a Value, resource_type: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    appointment["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |p| reference_id(&p["actor"], resource_type))
}

/// The Encounter of a visit that has begun, from its appointment.
fn encounter_for(appointment_id: &str, a: &Value, patient: &str, organization: Option<&str>) -> Value {
    let virtual_visit = super::directory::has_code(
        &a["serviceType"],
        &format!("{VISIT_MODE_SYSTEM}|{}", Mode::Virtual.code()),
    );
    let (code, display) = if virtual_visit {
        ("VR", "virtual")
    } else {
        ("AMB", "ambulatory")
    };
    let mut e = json!({
        "resourceType": "Encounter",
        "status": "arrived",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code, "display": display},
        "subject": {"reference": format!("Patient/{patient}")},
        "appointment": [{"reference": format!("Appointment/{appointment_id}")}],
        "period": {"start": sijill_store::now_instant()},
    });
    let roles: Vec<Value> = participants(a, "PractitionerRole")
        .map(|r| json!({"individual": {"reference": format!("PractitionerRole/{r}")}}))
        .collect();
    if !roles.is_empty() {
        e["participant"] = json!(roles);
    }
    let places: Vec<Value> = participants(a, "Location")
        .map(|l| json!({"location": {"reference": format!("Location/{l}")}}))
        .collect();
    if !places.is_empty() {
        e["location"] = json!(places);
    }
    if let Some(org) = organization {
        e["serviceProvider"] = json!({"reference": format!("Organization/{org}")});
    }
    if a["basedOn"].is_array() {
        e["basedOn"] = a["basedOn"].clone();
    }
    e
}

/// `POST Appointment/{id}/$check-in`: the patient has arrived. Answers Parameters with the
/// `appointment` (now arrived) and the `encounter` opened for the visit.
pub fn check_in(engine: &Engine, guard: &Guard<'_>, id: &str) -> FhirResult<FhirResponse> {
    let owned = staff_appointment(engine, guard, id, "check patients in")?;
    let (appointment, encounter) = engine.with_tx(guard, Exec::Standalone, |tx| {
        let (version, mut a) = booked_in(tx, id, "be checked in")?;
        a["status"] = json!("arrived");
        let encounter = tx.create(
            "Encounter",
            encounter_for(id, &a, &owned.patient, owned.organization.as_deref()),
            None,
        )?;
        let (appointment, _) = tx
            .update("Appointment", id, a, Some(version))
            .map_err(|_| conflict("The appointment was changed at the same moment; look again"))?;
        guard.disclose(&appointment);
        guard.disclose(&encounter);
        Ok((appointment, encounter))
    })?;
    Ok(FhirResponse::new(
        StatusCode::OK,
        Payload::Json(json!({"resourceType": "Parameters", "parameter": [
            {"name": "appointment", "resource": crate::resource_json::parsed(&appointment)},
            {"name": "encounter", "resource": crate::resource_json::parsed(&encounter)},
        ]})),
    ))
}

/// `POST Appointment/{id}/$no-show`: a booked patient did not come (once the appointment
/// has started). The no-show counts in the wait-time figures.
pub fn no_show(engine: &Engine, guard: &Guard<'_>, id: &str) -> FhirResult<FhirResponse> {
    staff_appointment(engine, guard, id, "record a no-show")?;
    let stored = engine.with_tx(guard, Exec::Standalone, |tx| {
        let (version, mut a) = booked_in(tx, id, "be a no-show")?;
        let started = a["start"]
            .as_str()
            .and_then(super::availability::parse_moment)
            .is_some_and(|s| s <= time::OffsetDateTime::now_utc());
        if !started {
            return Err(conflict("The appointment has not started yet: it cannot be a no-show"));
        }
        a["status"] = json!("noshow");
        let (stored, _) = tx
            .update("Appointment", id, a, Some(version))
            .map_err(|_| conflict("The appointment was changed at the same moment; look again"))?;
        guard.disclose(&stored);
        Ok(stored)
    })?;
    Ok(crate::interactions::resource_response(engine, StatusCode::OK, &stored))
}
