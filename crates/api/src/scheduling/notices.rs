//! The notices an appointment's life sends its patient, written into the outbox in the
//! same transaction as the change: a confirmation and reminders when it is booked (or
//! moved), a cancellation notice when it is cancelled — and the reminders still waiting
//! are stopped when it is cancelled or moved.

use serde_json::Value;
use sijill_store::StoreTx;
use time::Duration;

use super::availability::parse_moment;
use super::MEETING_URL;
use crate::engine::Engine;
use crate::error::FhirResult;
use crate::outbox::{enqueue, stop_pending, Notice, Topic};

/// "Cardiology on 2026-12-01 at 09:30" (local time), and the meeting link of a
/// teleconsultation.
pub fn describe(engine: &Engine, a: &Value) -> String {
    let what = a["specialty"][0]["coding"][0]["display"]
        .as_str()
        .or(a["specialty"][0]["coding"][0]["code"].as_str())
        .unwrap_or("consultation");
    let when = a["start"]
        .as_str()
        .and_then(parse_moment)
        .map(|t| {
            let local = t.to_offset(engine.scheduling.offset);
            format!("{} at {:02}:{:02}", local.date(), local.hour(), local.minute())
        })
        .unwrap_or_default();
    let link = crate::resource_json::extension(a, MEETING_URL)
        .and_then(|e| e["valueUrl"].as_str())
        .map(|l| format!(" Join online: {l}"))
        .unwrap_or_default();
    format!("{what} on {when}.{link}")
}

/// The confirmation of a booked appointment, and its reminders (those still ahead).
pub fn booked(engine: &Engine, tx: &mut dyn StoreTx, id: &str, a: &Value, patient: &str) -> FhirResult<()> {
    let about = format!("Appointment/{id}");
    let text = describe(engine, a);
    enqueue(
        tx,
        Notice {
            patient,
            topic: Topic::Confirmation,
            about: &about,
            text: format!("Appointment confirmed: {text}"),
            deliver_after: None,
        },
    )?;
    let Some(start) = a["start"].as_str().and_then(parse_moment) else {
        return Ok(());
    };
    let now = time::OffsetDateTime::now_utc();
    for hours in &engine.outbox.reminder_hours {
        let at = start - Duration::hours(*hours);
        if at > now {
            enqueue(
                tx,
                Notice {
                    patient,
                    topic: Topic::Reminder,
                    about: &about,
                    text: format!("Reminder: {text}"),
                    deliver_after: Some(super::availability::format_moment(at)),
                },
            )?;
        }
    }
    Ok(())
}

/// A cancelled appointment: its waiting reminders stopped, and the patient told.
pub fn cancelled(engine: &Engine, tx: &mut dyn StoreTx, id: &str, a: &Value, patient: &str) -> FhirResult<()> {
    let about = format!("Appointment/{id}");
    stop_pending(tx, &about, Topic::Reminder)?;
    let why = a["cancelationReason"]["text"].as_str().unwrap_or("cancelled");
    enqueue(
        tx,
        Notice {
            patient,
            topic: Topic::Cancellation,
            about: &about,
            text: format!("Appointment cancelled ({why}): {}", describe(engine, a)),
            deliver_after: None,
        },
    )?;
    Ok(())
}

/// A moved appointment: the old reminders stopped, the new time confirmed and reminded.
pub fn moved(engine: &Engine, tx: &mut dyn StoreTx, id: &str, a: &Value, patient: &str) -> FhirResult<()> {
    stop_pending(tx, &format!("Appointment/{id}"), Topic::Reminder)?;
    booked(engine, tx, id, a, patient)
}
