//! Appointments: slots generated from each Schedule's weekly availability, and the
//! citizen's flow of the IHE Scheduling profile on them.
//!
//! - `POST Schedule/{id}/$generate-slots` (and `Schedule/$generate-slots` for all) — the
//!   Slots of the coming weeks; the server also runs it every hour ([`generate`]).
//! - `GET|POST Appointment/$find` — free slots as proposed Appointments ([`find`]).
//! - `POST Appointment/$hold`, `$book`, `Appointment/{id}/$cancel`, `/$reschedule`
//!   ([`booking`]).
//!
//! Never two people in one slot: a booking changes the Slot with `If-Match` on the version
//! it found free, in the transaction that writes the Appointment, so of two bookings of the
//! same slot one commits and the other finds the slot changed (409).

pub mod absence;
pub mod availability;
pub mod booking;
pub mod directory;
pub mod figures;
pub mod find;
pub mod generate;
pub mod notices;
pub mod rules;
pub mod staff;
pub mod turns;
pub mod waitlist;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_auth::Role;
use time::UtcOffset;

use crate::access::Guard;
use crate::context::Actor;
use crate::error::{FhirError, FhirResult};
use crate::interactions::reference_id;
use availability::Holidays;

/// The code system of the visit mode on slots and appointments (`serviceType`).
pub const VISIT_MODE_SYSTEM: &str = "https://sijill.health/fhir/CodeSystem/visit-mode";

/// The extension on a busy or held Slot: the Appointment that has it. The Slot never
/// names the patient: slots are directory data, readable by everyone.
pub const SLOT_APPOINTMENT_URL: &str = "https://sijill.health/fhir/StructureDefinition/slot-appointment";

/// The extension on a held Slot and its pending Appointment: when the hold expires.
pub const HOLD_EXPIRES_URL: &str = "https://sijill.health/fhir/StructureDefinition/hold-expires";

/// The extension on a teleconsultation Appointment: the link to its meeting room (R4 has
/// no `virtualService`; R5's is the model).
pub const MEETING_URL: &str = "https://sijill.health/fhir/StructureDefinition/meeting-url";

/// How scheduling behaves on this server.
#[derive(Debug, Clone)]
pub struct SchedulingSettings {
    /// Local time of the country (availability times are local).
    pub offset: UtcOffset,
    /// National public holidays: no slots.
    pub holidays: Holidays,
    /// How many days ahead slots are generated (and may be booked).
    pub horizon_days: i64,
    /// How long a hold keeps a slot, in seconds.
    pub hold_seconds: i64,
    /// How long a slot offered to the first on a waitlist is kept for them, in seconds.
    pub offer_seconds: i64,
    /// The country's booking rules.
    pub rules: rules::BookingRules,
    /// The video service a teleconsultation's meeting link is made on (a unique room per
    /// appointment under this URL); None: no links.
    pub video_base_url: Option<String>,
}

impl Default for SchedulingSettings {
    fn default() -> Self {
        SchedulingSettings {
            offset: UtcOffset::UTC,
            holidays: Holidays::default(),
            horizon_days: 56,
            hold_seconds: 600,
            offer_seconds: 7200,
            rules: rules::BookingRules::default(),
            video_base_url: None,
        }
    }
}

/// The scheduling rules a resource must meet to be stored: a Schedule's availability must
/// be readable (422 says what is wrong with it).
pub fn check_resource(resource_type: &str, resource: &Value) -> FhirResult<()> {
    if resource_type == "Schedule" {
        availability::Availability::of_schedule(resource)
            .map_err(|why| FhirError::new(StatusCode::UNPROCESSABLE_ENTITY, "processing", why))?;
    }
    Ok(())
}

/// The server's scheduling chores, forever: expired holds released, reminders that come
/// near written and due notices delivered `every` (half a minute by default), slots
/// generated for every schedule at start and every hour.
pub async fn background(engine: crate::Engine, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    let mut last_generation: Option<std::time::Instant> = None;
    loop {
        ticks.tick().await;
        let generate_now = last_generation.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(3600));
        if generate_now {
            last_generation = Some(std::time::Instant::now());
        }
        let engine = engine.clone();
        let chores = tokio::task::spawn_blocking(move || {
            let ctx = crate::context::RequestContext::local_operator(None);
            if let Some(n) = run_chore(&engine, &ctx, "release-holds", booking::release_expired_holds) {
                if n > 0 {
                    tracing::info!(released = n, "expired holds released");
                }
            }
            let remind = |e: &crate::Engine, g: &Guard<'_>| notices::remind_due(e, g, time::OffsetDateTime::now_utc());
            if let Some(n) = run_chore(&engine, &ctx, "write-reminders", remind) {
                if n > 0 {
                    tracing::info!(reminders = n, "reminders written");
                }
            }
            if let Some(d) = run_chore(&engine, &ctx, "deliver-notices", crate::outbox::deliver_due) {
                if d != crate::outbox::Delivered::default() {
                    tracing::info!(
                        sent = d.sent,
                        retried = d.retried,
                        given_up = d.given_up,
                        "notices delivered"
                    );
                }
            }
            if generate_now {
                if let Some(g) = run_chore(&engine, &ctx, "generate-slots", generate::generate_all) {
                    tracing::info!(
                        schedules = g.schedules,
                        created = g.created,
                        removed = g.removed,
                        kept = g.kept,
                        "slots generated"
                    );
                }
            }
        });
        if let Err(e) = chores.await {
            tracing::error!(error = %e, "a scheduling chore panicked");
        }
    }
}

/// Runs one chore, audited under its name; a failure is logged, and the next round tries
/// again.
fn run_chore<T>(
    engine: &crate::Engine,
    ctx: &crate::context::RequestContext,
    name: &str,
    work: impl FnOnce(&crate::Engine, &Guard<'_>) -> FhirResult<T>,
) -> Option<T> {
    let guard = Guard::new(engine, ctx, crate::audit::Interaction::chore(name));
    match work(engine, &guard) {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::warn!(chore = name, error = ?e.issues.first().map(|i| &i.diagnostics), "a scheduling chore failed");
            None
        }
    }
}

/// A conflict with the slot's or appointment's current state (409).
pub fn conflict(why: impl Into<String>) -> FhirError {
    FhirError::new(StatusCode::CONFLICT, "conflict", why)
}

/// The facility the actor works for as its administrator or a practitioner (the
/// reception desk books for patients), if any.
pub fn staff_facility<'g>(guard: &'g Guard<'_>) -> Option<&'g str> {
    match &guard.context().actor {
        Actor::Principal(p) if matches!(p.role, Role::FacilityAdmin | Role::Practitioner) => p.organization.as_deref(),
        _ => None,
    }
}

/// Whether the actor manages this facility's schedules: its staff, or the platform's
/// administrator.
pub fn is_staff_of(guard: &Guard<'_>, organization: Option<&str>) -> bool {
    guard.is_platform_admin() || staff_facility(guard).is_some_and(|mine| Some(mine) == organization)
}

/// Refuses unless the actor may book, move or cancel this patient's appointments at this
/// facility: the patient themself, or the facility's staff.
pub fn check_books_for(guard: &Guard<'_>, patient: &str, organization: Option<&str>) -> FhirResult<()> {
    if guard.is_the_patient(patient) || is_staff_of(guard, organization) {
        Ok(())
    } else {
        Err(FhirError::forbidden(
            "only the patient, or the staff of the facility, may book, move or cancel this appointment",
        ))
    }
}

/// The visit mode as a `serviceType` CodeableConcept.
pub fn mode_concept(mode: availability::Mode) -> Value {
    let display = match mode {
        availability::Mode::InPerson => "In person",
        availability::Mode::Virtual => "Teleconsultation",
    };
    json!({"coding": [{"system": VISIT_MODE_SYSTEM, "code": mode.code(), "display": display}]})
}

/// An Appointment on a slot: its times, specialty and mode, the schedule's practitioner
/// role and location, and the patient with their participation status, when known.
pub fn appointment_on(
    slot: &Value,
    slot_id: &str,
    facts: Option<&directory::ScheduleFacts>,
    patient: Option<(&str, &str)>,
    status: &str,
) -> Value {
    let actor = |reference: String, status: &str| json!({"actor": {"reference": reference}, "required": "required", "status": status});
    let mut participants = Vec::new();
    if let Some((p, participation)) = patient {
        participants.push(actor(format!("Patient/{p}"), participation));
    }
    if let Some(f) = facts {
        if let Some(r) = &f.role {
            participants.push(actor(format!("PractitionerRole/{r}"), "accepted"));
        }
        if let Some(l) = &f.location {
            participants.push(actor(format!("Location/{l}"), "accepted"));
        }
    }
    let mut a = json!({
        "resourceType": "Appointment",
        "status": status,
        "start": slot["start"],
        "end": slot["end"],
        "slot": [{"reference": format!("Slot/{slot_id}")}],
        "participant": participants,
    });
    for field in ["serviceType", "specialty"] {
        if slot[field].is_array() {
            a[field] = slot[field].clone();
        }
    }
    a
}

/// The id of the patient a `patient` parameter names (`Patient/{id}`), or for a citizen
/// without one, their own.
pub fn patient_param(guard: &Guard<'_>, params: &[(String, Value)]) -> FhirResult<String> {
    let named = params
        .iter()
        .find(|(n, _)| n == "patient")
        .map(|(_, v)| {
            reference_id(v, "Patient")
                .map(str::to_string)
                .ok_or_else(|| FhirError::bad_request("Parameter 'patient' must be a reference Patient/{id}"))
        })
        .transpose()?;
    match (named, &guard.context().actor) {
        (Some(p), _) => Ok(p),
        (None, Actor::Principal(p)) if p.role == Role::Citizen => p
            .patient
            .clone()
            .ok_or_else(|| FhirError::bad_request("Parameter 'patient' is missing")),
        _ => Err(FhirError::bad_request("Parameter 'patient' is missing")),
    }
}

/// Gives a teleconsultation appointment its own meeting room, an unguessable name under
/// the configured video service, unless it has one already.
pub fn with_meeting_link(appointment: &mut Value, settings: &SchedulingSettings) {
    let Some(base) = &settings.video_base_url else {
        return;
    };
    let virtual_visit = directory::has_code(
        &appointment["serviceType"],
        &format!("{VISIT_MODE_SYSTEM}|{}", availability::Mode::Virtual.code()),
    );
    let has_link = crate::resource_json::extension(appointment, MEETING_URL).is_some();
    if !virtual_visit || has_link {
        return;
    }
    let room = format!("{}/{}", base.trim_end_matches('/'), uuid::Uuid::new_v4().simple());
    let link = json!({"url": MEETING_URL, "valueUrl": room});
    crate::resource_json::push_extension(appointment, link);
}
