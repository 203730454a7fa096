//! The durable outbox of notices to patients: appointment confirmations, reminders,
//! cancellations and offers.
//!
//! A notice is a FHIR `Communication`, written in the same transaction as the change it
//! tells of (a booking and its confirmation commit together, or neither does), with
//! status `preparation` until it is delivered. Because it is an ordinary resource, it is
//! versioned and audited like any other, and the patient sees their notices in their record.
//!
//! A chore ([`deliver_due`]) sends the notices that are due through the configured
//! [`sink::Sink`] — a directory (the default), an HTTP webhook for an SMS gateway, or an
//! SMTP server. Each delivery first claims its notice (`in-progress`, with If-Match, so that two
//! servers never both take it), then records the outcome: `completed`, or back to
//! `preparation` with a later next attempt (exponential backoff), or `not-done` after the
//! last attempt (at once when it can never go: no e-mail address). Nothing is lost in a restart: an unfinished notice is still in the store,
//! and a claim left by a stopped server lapses. A notice whose delivery was cut short
//! between sending and recording can be sent again: every delivery carries the notice's id
//! as its idempotency key, and the directory sink writes one file per id.

pub mod sink;

use serde_json::{json, Value};
use sijill_store::{Current, SearchQuery, StoreTx, Stored};
use time::OffsetDateTime;

use crate::access::Guard;
use crate::engine::{Engine, Exec};
use crate::error::FhirResult;
use crate::interactions::reference_id;
use crate::resource_json::{extension, parsed, set_extension};

/// The code system of a notice's topic (`Communication.category`).
pub const TOPIC_SYSTEM: &str = "https://sijill.health/fhir/CodeSystem/notice-topic";
/// Extension: the notice is not to be sent before this instant.
pub const DELIVER_AFTER: &str = "https://sijill.health/fhir/StructureDefinition/deliver-after";
/// Extension: delivery attempts made so far.
pub const ATTEMPTS: &str = "https://sijill.health/fhir/StructureDefinition/delivery-attempts";
/// Extension: a claimed notice belongs to its claimer until this instant.
pub const CLAIMED_UNTIL: &str = "https://sijill.health/fhir/StructureDefinition/claimed-until";
/// Extension: why the last attempt failed.
pub const LAST_ERROR: &str = "https://sijill.health/fhir/StructureDefinition/delivery-error";

/// How long a claim lasts: a server stopped mid-delivery leaves its notice to others after it.
const CLAIM_SECONDS: i64 = 300;

/// Notices looked at per round.
const ROUND: usize = 200;

/// How notices are delivered.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Where notices go.
    pub sink: sink::Sink,
    /// Attempts before a notice is given up (`not-done`).
    pub max_attempts: i64,
    /// The wait after the first failure, in seconds; doubled after each further one (at
    /// most an hour).
    pub backoff_seconds: i64,
    /// Reminders before an appointment, in seconds (e.g. 48 and 2 hours).
    pub reminder_seconds: Vec<i64>,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            sink: sink::Sink::None,
            max_attempts: 8,
            backoff_seconds: 30,
            reminder_seconds: vec![48 * 3600, 2 * 3600],
        }
    }
}

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// An appointment was booked (or moved).
    Confirmation,
    /// An appointment is coming.
    Reminder,
    /// An appointment was cancelled.
    Cancellation,
    /// A slot is offered (waitlist, or after an absence).
    Offer,
}

impl Topic {
    /// The topic's code.
    pub fn code(self) -> &'static str {
        match self {
            Topic::Confirmation => "confirmation",
            Topic::Reminder => "reminder",
            Topic::Cancellation => "cancellation",
            Topic::Offer => "offer",
        }
    }
}

/// A notice to write.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// The patient it is for.
    pub patient: &'a str,
    /// What it is about.
    pub topic: Topic,
    /// The resource it is about (`Appointment/{id}`).
    pub about: &'a str,
    /// Its text.
    pub text: String,
    /// Not before this instant (None: at once).
    pub deliver_after: Option<String>,
}

/// Writes a notice into the outbox, in the caller's transaction.
pub fn enqueue(tx: &mut dyn StoreTx, notice: Notice<'_>) -> FhirResult<Stored> {
    let mut extension = vec![json!({"url": ATTEMPTS, "valueInteger": 0})];
    if let Some(after) = &notice.deliver_after {
        extension.push(json!({"url": DELIVER_AFTER, "valueDateTime": after}));
    }
    let communication = json!({
        "resourceType": "Communication",
        "status": "preparation",
        "category": [{"coding": [{"system": TOPIC_SYSTEM, "code": notice.topic.code()}]}],
        "subject": {"reference": format!("Patient/{}", notice.patient)},
        "recipient": [{"reference": format!("Patient/{}", notice.patient)}],
        "basedOn": [{"reference": notice.about}],
        "payload": [{"contentString": notice.text}],
        "extension": extension,
    });
    Ok(tx.create("Communication", communication, None)?)
}

/// Stops the notices about a resource that are still waiting (a cancelled appointment's
/// reminders), in the caller's transaction; returns how many.
pub fn stop_pending(tx: &mut dyn StoreTx, about: &str, topic: Topic) -> FhirResult<usize> {
    let query = SearchQuery::parse(
        "Communication",
        &[
            ("based-on".into(), about.to_string()),
            ("status".into(), "preparation,in-progress".into()),
            ("category".into(), format!("{TOPIC_SYSTEM}|{}", topic.code())),
        ],
    )?;
    let mut stopped = 0;
    for id in tx.search_ids("Communication", &query, 100)? {
        let Current::Found(current) = tx.read("Communication", &id)? else {
            continue;
        };
        let mut c = parsed(&current);
        c["status"] = json!("stopped");
        c["statusReason"] = json!({"text": "no longer relevant"});
        tx.update("Communication", &id, c, Some(current.version))?;
        stopped += 1;
    }
    Ok(stopped)
}

fn instant_ext(c: &Value, url: &str) -> Option<OffsetDateTime> {
    let e = extension(c, url)?;
    let text = e["valueDateTime"].as_str().or(e["valueInstant"].as_str())?;
    crate::scheduling::availability::parse_moment(text)
}

fn attempts(c: &Value) -> i64 {
    extension(c, ATTEMPTS)
        .and_then(|e| e["valueInteger"].as_i64())
        .unwrap_or(0)
        .clamp(0, i64::from(u16::MAX))
}

/// The wait before the next attempt after `tries` failed ones: `base`, doubled each time,
/// at most an hour.
fn backoff(base: i64, tries: i64) -> i64 {
    let doublings = (tries - 1).clamp(0, 20) as u32;
    base.max(1).saturating_mul(1 << doublings).min(3600)
}

/// Whether a notice is due now: waiting and its time has come, or claimed by a server
/// that did not finish.
fn is_due(c: &Value, now: OffsetDateTime) -> bool {
    let passed = |url| instant_ext(c, url).is_none_or(|t| t <= now);
    match c["status"].as_str() {
        Some("preparation") => passed(DELIVER_AFTER),
        Some("in-progress") => passed(CLAIMED_UNTIL),
        _ => false,
    }
}

/// What a round of deliveries did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Notices delivered.
    pub sent: usize,
    /// Notices whose attempt failed and that will be tried again.
    pub retried: usize,
    /// Notices given up after their last attempt.
    pub given_up: usize,
}

/// Delivers the notices that are due, one at a time: claimed, sent, recorded.
pub fn deliver_due(engine: &Engine, guard: &Guard<'_>) -> FhirResult<Delivered> {
    let settings = &engine.outbox;
    let mut done = Delivered::default();
    if matches!(settings.sink, sink::Sink::None) {
        return Ok(done);
    }
    let query = SearchQuery::parse("Communication", &[("status".into(), "preparation,in-progress".into())])?;
    let now = OffsetDateTime::now_utc();
    // Every waiting notice is looked at (a reminder written ahead, or a retry waiting out
    // its backoff, must not hide the due ones behind it); reminders are written only
    // minutes before they are due (scheduling::notices), so few wait. At most ROUND due
    // ones are sent per round.
    let mut due = Vec::new();
    engine.store.search_each("Communication", &query, &mut |s| {
        if due.len() < ROUND && is_due(&parsed(s), now) {
            due.push(s.clone());
        }
        Ok(())
    })?;
    for notice in &due {
        // One notice's trouble does not hold up the others.
        if let Err(e) = deliver_one(engine, guard, notice, &mut done) {
            tracing::warn!(notice = %notice.id, error = ?e.issues.first().map(|i| &i.diagnostics), "a notice could not be delivered");
        }
    }
    Ok(done)
}

/// Claims, sends and records one due notice.
fn deliver_one(engine: &Engine, guard: &Guard<'_>, notice: &Stored, done: &mut Delivered) -> FhirResult<()> {
    let Some(claimed) = claim(engine, guard, notice)? else {
        return Ok(());
    };
    let message = message(engine, &claimed)?;
    let outcome = engine.outbox.sink.send(&claimed.id, &message);
    record(engine, guard, &claimed, outcome, done)
}

/// Whether a write failed because the notice changed meanwhile (stopped, or claimed by
/// another server).
fn changed_meanwhile(e: &crate::error::FhirError) -> bool {
    e.status == axum::http::StatusCode::CONFLICT || e.status == axum::http::StatusCode::PRECONDITION_FAILED
}

/// Claims a notice for this delivery (None: another server took it first).
fn claim(engine: &Engine, guard: &Guard<'_>, seen: &Stored) -> FhirResult<Option<Stored>> {
    let mut c = parsed(seen);
    c["status"] = json!("in-progress");
    set_extension(
        &mut c,
        CLAIMED_UNTIL,
        Some(json!({"url": CLAIMED_UNTIL, "valueDateTime": sijill_store::instant_in(CLAIM_SECONDS)})),
    );
    let result = engine.with_tx(guard, Exec::Standalone, |tx| {
        Ok(tx.update("Communication", &seen.id, c.clone(), Some(seen.version))?.0)
    });
    match result {
        Ok(stored) => Ok(Some(stored)),
        Err(e) if changed_meanwhile(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The message a sink delivers: the notice and how to reach its patient.
fn message(engine: &Engine, claimed: &Stored) -> FhirResult<Value> {
    let c = parsed(claimed);
    let patient_id = reference_id(&c["subject"], "Patient").unwrap_or("").to_string();
    let telecom = match engine.store.read("Patient", &patient_id)? {
        Current::Found(p) => parsed(&p)["telecom"].clone(),
        _ => Value::Null,
    };
    let contact = |system: &str| {
        telecom
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["system"] == system)
            .and_then(|t| t["value"].as_str())
            .map(str::to_string)
    };
    Ok(json!({
        "id": claimed.id,
        "topic": c["category"][0]["coding"][0]["code"],
        "about": c["basedOn"][0]["reference"],
        "patient": format!("Patient/{patient_id}"),
        "phone": contact("phone"),
        "email": contact("email"),
        "text": c["payload"][0]["contentString"],
    }))
}

/// Records a delivery's outcome on the claimed notice.
fn record(
    engine: &Engine,
    guard: &Guard<'_>,
    claimed: &Stored,
    outcome: Result<(), sink::Undelivered>,
    done: &mut Delivered,
) -> FhirResult<()> {
    let settings = &engine.outbox;
    let mut c = parsed(claimed);
    set_extension(&mut c, CLAIMED_UNTIL, None);
    let tries = attempts(&c) + 1;
    set_extension(&mut c, ATTEMPTS, Some(json!({"url": ATTEMPTS, "valueInteger": tries})));
    match outcome {
        Ok(()) => {
            c["status"] = json!("completed");
            c["sent"] = json!(sijill_store::now_instant());
            set_extension(&mut c, LAST_ERROR, None);
            done.sent += 1;
        }
        Err(undelivered) => {
            let why = undelivered.reason().to_string();
            set_extension(&mut c, LAST_ERROR, Some(json!({"url": LAST_ERROR, "valueString": why})));
            let never = matches!(undelivered, sink::Undelivered::Never(_));
            if never || tries >= settings.max_attempts {
                c["status"] = json!("not-done");
                c["statusReason"] =
                    json!({"text": if never { why } else { format!("not delivered after {tries} attempts") }});
                done.given_up += 1;
            } else {
                c["status"] = json!("preparation");
                let wait = backoff(settings.backoff_seconds, tries);
                set_extension(
                    &mut c,
                    DELIVER_AFTER,
                    Some(json!({"url": DELIVER_AFTER, "valueDateTime": sijill_store::instant_in(wait)})),
                );
                done.retried += 1;
            }
        }
    }
    let written = engine.with_tx(guard, Exec::Standalone, |tx| {
        tx.update("Communication", &claimed.id, c.clone(), Some(claimed.version))?;
        Ok(())
    });
    match written {
        // Stopped while it was being sent (its appointment was cancelled): it stays stopped.
        Err(e) if changed_meanwhile(&e) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_an_hour_whatever_it_is_given() {
        assert_eq!(backoff(30, 1), 30);
        assert_eq!(backoff(30, 3), 120);
        assert_eq!(backoff(30, 50), 3600);
        assert_eq!(backoff(i64::MAX, 9), 3600);
        assert_eq!(backoff(0, 0), 1);
        assert_eq!(
            attempts(&json!({"extension": [{"url": ATTEMPTS, "valueInteger": -5}]})),
            0
        );
    }

    #[test]
    fn a_notice_is_due_when_its_time_came_or_its_claim_lapsed() {
        let now = OffsetDateTime::now_utc();
        let at = |url: &str, t: OffsetDateTime| json!([{"url": url, "valueDateTime": crate::scheduling::availability::format_moment(t)}]);
        let hour = time::Duration::hours(1);
        let waiting = |ext| json!({"status": "preparation", "extension": ext});
        assert!(is_due(&json!({"status": "preparation"}), now));
        assert!(is_due(&waiting(at(DELIVER_AFTER, now - hour)), now));
        assert!(!is_due(&waiting(at(DELIVER_AFTER, now + hour)), now));
        let claimed = |ext| json!({"status": "in-progress", "extension": ext});
        assert!(!is_due(&claimed(at(CLAIMED_UNTIL, now + hour)), now));
        assert!(is_due(&claimed(at(CLAIMED_UNTIL, now - hour)), now));
        assert!(!is_due(&json!({"status": "completed"}), now));
    }
}
