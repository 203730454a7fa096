//! The notices an appointment's life sends its patient, written into the outbox in the
//! same transaction as the change: a confirmation when it is booked (or moved), a
//! cancellation notice when it is cancelled — and the reminders already waiting are
//! stopped when it is cancelled or moved.
//!
//! Reminders (e.g. 48 h and 2 h before) are written when they come near, not at booking:
//! a booking writes one notice instead of three, and the outbox holds only what is due
//! soon instead of every reminder of the coming weeks (which its delivery round would have
//! to read through). A booked or moved appointment carries [`REMINDERS_FROM_URL`], an
//! instant [`NEAR`] after the change: the change itself writes the reminders due before
//! that instant, and [`remind_due`] — a chore — writes those due after it, [`AHEAD`] before
//! they are due, recording in the store how far it has come. The two ranges do not meet,
//! so no reminder is written twice; and as long as a booking's transaction lasts less than
//! `NEAR - AHEAD`, the chore cannot have passed a reminder before the booking is seen.

use serde_json::{json, Value};
use sijill_store::{Current, SearchQuery, StoreTx};
use time::{Duration, OffsetDateTime};

use super::availability::{format_moment, parse_moment};
use super::MEETING_URL;
use crate::access::Guard;
use crate::engine::{Engine, Exec};
use crate::error::FhirResult;
use crate::outbox::{enqueue, stop_pending, Notice, Topic};
use crate::resource_json::{extension, parsed, set_extension};

/// The extension on a booked Appointment: reminders due after this instant are written by
/// [`remind_due`], those due before it by the booking (or move) itself.
pub const REMINDERS_FROM_URL: &str = "https://sijill.health/fhir/StructureDefinition/reminders-from";

/// How far past a booking its own reminders reach.
pub const NEAR: Duration = Duration::minutes(15);

/// How long before it is due [`remind_due`] writes a reminder.
pub const AHEAD: Duration = Duration::minutes(10);

/// The most reminder time one transaction of [`remind_due`] covers.
const WINDOW: Duration = Duration::minutes(10);

/// The most appointments one transaction of [`remind_due`] reminds for one lead; a window
/// holding more is halved (down to a second).
const MOST_PER_WINDOW: usize = if cfg!(test) { 20 } else { 5000 };

/// The store state that records how far [`remind_due`] has come (an instant: every
/// reminder due up to it is written).
const THROUGH: (&str, &str) = ("reminders", "written-through");

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

/// Marks an appointment about to be booked (or moved) now: reminders due after
/// [`NEAR`] from now are [`remind_due`]'s to write.
pub fn hand_reminders_over(a: &mut Value) {
    mark_reminders_from(a, OffsetDateTime::now_utc() + NEAR);
}

/// Marks an appointment: its reminders due after `from` are [`remind_due`]'s to write.
fn mark_reminders_from(a: &mut Value, from: OffsetDateTime) {
    set_extension(
        a,
        REMINDERS_FROM_URL,
        Some(json!({"url": REMINDERS_FROM_URL, "valueInstant": format_moment(from)})),
    );
}

/// When an appointment's reminders pass to [`remind_due`] (None: not marked — its
/// reminders are nobody's, as for an appointment written as a plain resource).
fn reminders_from(a: &Value) -> Option<OffsetDateTime> {
    extension(a, REMINDERS_FROM_URL)?["valueInstant"]
        .as_str()
        .and_then(parse_moment)
}

/// A reminder notice about `about` (`Appointment/{id}`, described by `text`), due at `at`.
fn remind(tx: &mut dyn StoreTx, about: &str, text: &str, patient: &str, at: OffsetDateTime) -> FhirResult<()> {
    enqueue(
        tx,
        Notice {
            patient,
            topic: Topic::Reminder,
            about,
            text: format!("Reminder: {text}"),
            deliver_after: Some(format_moment(at)),
        },
    )?;
    Ok(())
}

/// The confirmation of a booked appointment (marked with [`hand_reminders_over`]), and
/// the reminders still ahead that are due before the mark.
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
    let now = OffsetDateTime::now_utc();
    let handed_over = reminders_from(a).unwrap_or(now + NEAR);
    for lead in &engine.outbox.reminder_seconds {
        let at = start - Duration::seconds(*lead);
        if at > now && at <= handed_over {
            remind(tx, &about, &text, patient, at)?;
        }
    }
    Ok(())
}

/// Writes the reminders that come due within [`AHEAD`] of `now` and were not written yet
/// (all those after the last recorded point, for a server that was stopped: late rather
/// than lost, unless the appointment has begun). One transaction per [`WINDOW`] of
/// reminder time, each recording how far it came; servers sharing a store take turns on
/// that record. Returns how many reminders were written.
pub fn remind_due(engine: &Engine, guard: &Guard<'_>, now: OffsetDateTime) -> FhirResult<usize> {
    let leads: Vec<Duration> = engine
        .outbox
        .reminder_seconds
        .iter()
        .map(|s| Duration::seconds(*s))
        .collect();
    let target = now + AHEAD;
    let mut written = 0;
    loop {
        let round = engine.with_tx(guard, Exec::Standalone, |tx| {
            let through = match tx.state_get(THROUGH.0, THROUGH.1)? {
                Some(t) => parse_moment(&t).unwrap_or(now),
                // The first round: the appointments marked so far have been booked moments ago.
                None => now - NEAR,
            };
            if through >= target {
                return Ok(None);
            }
            let (until, due) = next_window(tx, &leads, through, std::cmp::min(target, through + WINDOW), now)?;
            for (id, a, patient, at) in &due {
                remind(tx, &format!("Appointment/{id}"), &describe(engine, a), patient, *at)?;
            }
            tx.state_put(THROUGH.0, THROUGH.1, &format_moment(until))?;
            Ok(Some((due.len(), until >= target)))
        })?;
        match round {
            Some((n, false)) => written += n,
            Some((n, true)) => return Ok(written + n),
            None => return Ok(written),
        }
    }
}

/// The window of reminder time after `through`, up to `until` or halved until it holds
/// at most [`MOST_PER_WINDOW`] appointments per lead (a window of a second or less is
/// taken whole, however full: slots start on the hour, so many reminders share their
/// second); returns its end and its reminders.
fn next_window(
    tx: &mut dyn StoreTx,
    leads: &[Duration],
    through: OffsetDateTime,
    mut until: OffsetDateTime,
    now: OffsetDateTime,
) -> FhirResult<(OffsetDateTime, Vec<DueReminder>)> {
    loop {
        let limit = (until - through > Duration::SECOND).then_some(MOST_PER_WINDOW);
        match due_between(tx, leads, through, until, now, limit)? {
            Some(due) => return Ok((until, due)),
            None => until = through + (until - through) / 2,
        }
    }
}

/// An instant as a search value, to the second.
fn to_the_second(t: OffsetDateTime) -> String {
    format_moment(t.replace_nanosecond(0).unwrap_or(t))
}

/// A reminder to write: the appointment's id, the appointment, its patient, when it is due.
type DueReminder = (String, Value, String, OffsetDateTime);

/// The reminders of booked appointments due in `(through, until]` that are
/// [`remind_due`]'s (past their appointment's mark), for appointments not begun by `now`;
/// None when the window holds more than `limit` appointments for one lead.
fn due_between(
    tx: &mut dyn StoreTx,
    leads: &[Duration],
    through: OffsetDateTime,
    until: OffsetDateTime,
    now: OffsetDateTime,
    limit: Option<usize>,
) -> FhirResult<Option<Vec<DueReminder>>> {
    let mut due = Vec::new();
    for lead in leads {
        // A second of slack each side: the search compares at the stored precision, the
        // window is then applied exactly.
        let query = SearchQuery::parse(
            "Appointment",
            &[
                ("status".into(), "booked".into()),
                (
                    "date".into(),
                    format!("ge{}", to_the_second(through + *lead - Duration::SECOND)),
                ),
                (
                    "date".into(),
                    format!("le{}", to_the_second(until + *lead + Duration::SECOND)),
                ),
            ],
        )?;
        let ids = tx.search_ids("Appointment", &query, limit.map_or(i32::MAX as usize, |l| l + 1))?;
        if limit.is_some_and(|l| ids.len() > l) {
            return Ok(None);
        }
        for id in ids {
            let Current::Found(stored) = tx.read("Appointment", &id)? else {
                continue;
            };
            let a = parsed(&stored);
            let (Some(start), Some(from)) = (a["start"].as_str().and_then(parse_moment), reminders_from(&a)) else {
                continue;
            };
            let at = start - *lead;
            if let Some(patient) =
                super::booking::patient_of(&a).filter(|_| at > through && at <= until && at > from && start > now)
            {
                due.push((id, a, patient, at));
            }
        }
    }
    Ok(Some(due))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::Interaction;
    use crate::context::RequestContext;

    const HOUR: Duration = Duration::hours(1);

    fn engine(dir: &std::path::Path) -> Engine {
        let store: Arc<dyn sijill_store::Store> = Arc::new(sijill_store::sqlite::SqliteStore::open(dir).unwrap());
        let mut engine = Engine::new(store, "http://localhost/fhir", Default::default());
        engine.outbox.reminder_seconds = vec![48 * 3600, 2 * 3600];
        engine
    }

    /// Writes an appointment for `patient` starting at `start`, marked (or not) with the
    /// instant its reminders pass to the chore; returns its id.
    fn appointment(
        engine: &Engine,
        patient: &str,
        start: OffsetDateTime,
        from: Option<OffsetDateTime>,
        status: &str,
    ) -> String {
        let mut a = json!({"resourceType": "Appointment", "status": status,
            "start": format_moment(start), "end": format_moment(start + Duration::minutes(30)),
            "participant": [{"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"}]});
        if let Some(from) = from {
            mark_reminders_from(&mut a, from);
        }
        let mut id = String::new();
        engine
            .store
            .write(&mut |tx| {
                id = tx.create("Appointment", a.clone(), None)?.id;
                Ok(())
            })
            .unwrap();
        id
    }

    /// The reminders in the outbox: (appointment reference, due instant).
    fn reminders(engine: &Engine) -> Vec<(String, OffsetDateTime)> {
        let query = SearchQuery::parse(
            "Communication",
            &[("category".into(), format!("{}|reminder", crate::outbox::TOPIC_SYSTEM))],
        )
        .unwrap();
        let mut found = Vec::new();
        engine
            .store
            .search_each("Communication", &query, &mut |s| {
                let c = parsed(s);
                let at = extension(&c, crate::outbox::DELIVER_AFTER)
                    .and_then(|e| e["valueDateTime"].as_str())
                    .and_then(parse_moment)
                    .unwrap();
                found.push((c["basedOn"][0]["reference"].as_str().unwrap().to_string(), at));
                Ok(())
            })
            .unwrap();
        found.sort_by_key(|(_, at)| *at);
        found
    }

    fn sweep(engine: &Engine, now: OffsetDateTime) -> usize {
        let ctx = RequestContext::local_operator(None);
        let guard = Guard::new(engine, &ctx, Interaction::chore("write-reminders"));
        remind_due(engine, &guard, now).unwrap()
    }

    #[test]
    fn each_reminder_is_written_once_when_it_comes_near_and_only_the_chore_s_share() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        // Booked at t0 (marked t0 + NEAR) for t0 + 50 h: both reminders are the chore's.
        let later = appointment(&engine, "p1", t0 + 50 * HOUR, Some(t0 + NEAR), "booked");
        // Booked at t0 for t0 + 2 h 5 min: its 2-hour reminder (t0 + 5 min) was the booking's.
        let soon = appointment(
            &engine,
            "p2",
            t0 + 2 * HOUR + Duration::minutes(5),
            Some(t0 + NEAR),
            "booked",
        );
        // Not marked (written as a plain resource), cancelled: nobody reminds them.
        appointment(&engine, "p3", t0 + 50 * HOUR, None, "booked");
        appointment(&engine, "p4", t0 + 50 * HOUR, Some(t0 + NEAR), "cancelled");

        assert_eq!(sweep(&engine, t0), 0, "nothing is due within the next minutes");
        // The 48-hour reminder of `later` is due at t0 + 2 h: written AHEAD before it.
        assert_eq!(sweep(&engine, t0 + 2 * HOUR - AHEAD + Duration::minutes(1)), 1);
        assert_eq!(
            reminders(&engine),
            vec![(format!("Appointment/{later}"), t0 + 2 * HOUR)]
        );
        // Asked again at the same moment, and a moment later: nothing written twice.
        assert_eq!(sweep(&engine, t0 + 2 * HOUR - AHEAD + Duration::minutes(1)), 0);
        assert_eq!(sweep(&engine, t0 + 2 * HOUR), 0);
        // A server stopped for two days catches up: the 2-hour reminder of `later` (due at
        // t0 + 48 h, its appointment not begun) is written late; `soon` has begun and is
        // not reminded; nothing of the first day is written again.
        let back = t0 + 48 * HOUR + Duration::minutes(30);
        assert_eq!(sweep(&engine, back), 1);
        let all = reminders(&engine);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], (format!("Appointment/{later}"), t0 + 48 * HOUR));
        assert!(all.iter().all(|(about, _)| *about != format!("Appointment/{soon}")));
    }

    #[test]
    fn how_far_the_chore_came_outlives_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        {
            let engine = engine(dir.path());
            appointment(&engine, "p1", t0 + 3 * HOUR, Some(t0 + NEAR), "booked");
            assert_eq!(sweep(&engine, t0 + HOUR), 1, "the 2-hour reminder, due at t0 + 1 h");
        }
        let engine = engine(dir.path());
        assert_eq!(
            sweep(&engine, t0 + HOUR),
            0,
            "a restarted server does not write it again"
        );
        assert_eq!(reminders(&engine).len(), 1);
    }

    #[test]
    fn a_busy_window_is_taken_in_halves() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = engine(dir.path());
        engine.outbox.reminder_seconds = vec![3600];
        let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        // More appointments in one window than one transaction takes, a second apart,
        // and as many again all at one instant.
        let start = t0 + 2 * HOUR;
        let count = 2 * MOST_PER_WINDOW + 10;
        engine
            .store
            .write(&mut |tx| {
                for i in 0..count {
                    let offset = if i < count / 2 {
                        Duration::seconds(i as i64)
                    } else {
                        Duration::minutes(5)
                    };
                    let mut a = json!({"resourceType": "Appointment", "status": "booked",
                        "start": format_moment(start + offset),
                        "participant": [{"actor": {"reference": "Patient/p"}, "status": "accepted"}]});
                    mark_reminders_from(&mut a, t0 + NEAR);
                    tx.create("Appointment", a, None)?;
                }
                Ok(())
            })
            .unwrap();
        // The reminders are due from t0 + 1 h; the first round starts NEAR before now.
        let now = t0 + HOUR + NEAR - Duration::minutes(1);
        assert_eq!(sweep(&engine, now), count);
        assert_eq!(reminders(&engine).len(), count);
        assert_eq!(sweep(&engine, now), 0);
    }
}
