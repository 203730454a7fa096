//! Slot generation: the Slots of a Schedule's availability over the coming weeks, made
//! idempotently (a slot's id is its schedule, local start and seat) and kept so as time
//! moves on.
//!
//! Running it again creates the slots that came into the horizon, recreates none that
//! exist, and removes (as a delete version) the free future slots the availability no
//! longer yields — a closure added, a pattern changed. Booked or held slots are never
//! removed: they are counted as `kept` for the facility to resolve. A schedule without an
//! availability pattern is left alone: its slots are kept by hand.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_store::{Current, SearchQuery};
use time::{Duration, OffsetDateTime};

use super::availability::{format_moment, parse_moment, Availability, MAX_SCHEDULE_ID};
use super::directory::{facts_of, ScheduleFacts};
use super::{is_staff_of, mode_concept};
use crate::access::Guard;
use crate::engine::{Engine, Exec, FhirResponse};
use crate::error::{FhirError, FhirResult};
use crate::parameters;

/// What one generation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generated {
    /// Schedules looked at.
    pub schedules: usize,
    /// Slots created.
    pub created: usize,
    /// Free slots removed because the availability no longer yields them.
    pub removed: usize,
    /// Booked or held slots the availability no longer yields (left as they are).
    pub kept: usize,
}

impl Generated {
    fn add(&mut self, other: Generated) {
        self.schedules += other.schedules;
        self.created += other.created;
        self.removed += other.removed;
        self.kept += other.kept;
    }

    fn response(self) -> FhirResponse {
        parameters::response(
            StatusCode::OK,
            &[
                ("schedules", json!(self.schedules)),
                ("created", json!(self.created)),
                ("removed", json!(self.removed)),
                ("kept", json!(self.kept)),
            ],
        )
    }
}

/// `POST Schedule/{id}/$generate-slots`.
pub fn generate_one(engine: &Engine, guard: &Guard<'_>, id: &str) -> FhirResult<FhirResponse> {
    Ok(generate_schedule(engine, guard, id)?.response())
}

/// `POST Schedule/$generate-slots`: every schedule (the platform administrator or
/// the local operator; the server runs it every hour).
pub fn generate_all_operation(engine: &Engine, guard: &Guard<'_>) -> FhirResult<FhirResponse> {
    if !guard.is_platform_admin() {
        return Err(FhirError::forbidden(
            "only the platform administrator generates the slots of every schedule",
        ));
    }
    Ok(generate_all(engine, guard)?.response())
}

/// Generates the slots of every schedule; a schedule that fails is logged and skipped.
pub fn generate_all(engine: &Engine, guard: &Guard<'_>) -> FhirResult<Generated> {
    let directory = engine.directory.get(&engine.store)?;
    let mut all: Vec<&ScheduleFacts> = directory.schedules.values().collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut total = Generated::default();
    for facts in all {
        let id = &facts.id;
        match read_schedule(engine, id).and_then(|schedule| generate_with(engine, guard, id, &schedule, facts)) {
            Ok(g) => total.add(g),
            Err(e) => {
                tracing::warn!(schedule = %id, error = ?e.issues.first().map(|i| &i.diagnostics), "slot generation skipped a schedule")
            }
        }
    }
    Ok(total)
}

/// The facts of a schedule, reading what it points to from the store.
fn facts_from_store(engine: &Engine, id: &str, schedule: &Value) -> FhirResult<ScheduleFacts> {
    let lookup = |resource_type: &str, id: &str| -> FhirResult<Option<Cow<'_, Value>>> {
        Ok(match engine.store.read(resource_type, id)? {
            Current::Found(s) => serde_json::from_slice(&s.body).ok().map(Cow::Owned),
            _ => None,
        })
    };
    facts_of(id, schedule, &lookup)
}

/// The existing slots of a schedule starting at or after `from`: id → status.
fn existing_slots(engine: &Engine, schedule: &str, from: &str) -> FhirResult<HashMap<String, String>> {
    let query = SearchQuery::parse(
        "Slot",
        &[
            ("schedule".into(), format!("Schedule/{schedule}")),
            ("start".into(), format!("ge{from}")),
        ],
    )?;
    let mut out = HashMap::new();
    engine.store.search_each("Slot", &query, &mut |s| {
        let v: Value = crate::resource_json::parsed(s);
        out.insert(s.id.clone(), v["status"].as_str().unwrap_or("").to_string());
        Ok(())
    })?;
    Ok(out)
}

fn read_schedule(engine: &Engine, id: &str) -> FhirResult<Value> {
    match engine.store.read("Schedule", id)? {
        Current::Found(s) => Ok(crate::resource_json::parsed(&s)),
        _ => Err(FhirError::resource_not_found("Schedule", id)),
    }
}

/// Generates one schedule's slots from now to the horizon.
pub fn generate_schedule(engine: &Engine, guard: &Guard<'_>, id: &str) -> FhirResult<Generated> {
    let schedule = read_schedule(engine, id)?;
    generate_with(engine, guard, id, &schedule, &facts_from_store(engine, id, &schedule)?)
}

/// Generates the slots of a schedule with its facts (from the directory, or read now).
fn generate_with(
    engine: &Engine,
    guard: &Guard<'_>,
    id: &str,
    schedule: &Value,
    facts: &ScheduleFacts,
) -> FhirResult<Generated> {
    if !is_staff_of(guard, facts.organization.as_deref()) {
        return Err(FhirError::forbidden(
            "only the facility's staff generate the slots of its schedules",
        ));
    }
    if id.len() > MAX_SCHEDULE_ID {
        return Err(FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "processing",
            format!("slots are made for schedules with ids of at most {MAX_SCHEDULE_ID} characters"),
        ));
    }
    let availability = Availability::of_schedule(schedule)
        .map_err(|why| FhirError::new(StatusCode::UNPROCESSABLE_ENTITY, "processing", why))?;
    if availability.patterns.is_empty() {
        // Without a weekly pattern the facility keeps the schedule's slots by hand.
        return Ok(Generated::default());
    }
    let settings = &engine.scheduling;
    let now = OffsetDateTime::now_utc().to_offset(settings.offset);
    let mut until = now + Duration::days(settings.horizon_days);
    if let Some(end) = schedule["planningHorizon"]["end"].as_str().and_then(parse_moment) {
        until = until.min(end);
    }
    let planned = if schedule["active"] == Value::Bool(false) {
        Vec::new()
    } else {
        availability.slots(
            now.date(),
            until.date().next_day().unwrap_or(until.date()),
            settings.offset,
            &settings.holidays,
        )
    };
    let planned: Vec<_> = planned
        .into_iter()
        .filter(|p| p.start > now && p.start < until)
        .collect();
    let existing = existing_slots(engine, id, &format_moment(now))?;
    let mut done = Generated {
        schedules: 1,
        ..Generated::default()
    };
    let mut new_slots = Vec::new();
    let mut planned_ids = std::collections::HashSet::new();
    for p in &planned {
        let slot_id = p.id(id);
        if !existing.contains_key(&slot_id) {
            let mut slot = json!({
                "resourceType": "Slot",
                "serviceType": [mode_concept(p.mode)],
                "schedule": {"reference": format!("Schedule/{id}")},
                "status": "free",
                "start": format_moment(p.start),
                "end": format_moment(p.end),
            });
            if !facts.specialty.is_null() {
                slot["specialty"] = facts.specialty.clone();
            }
            new_slots.push((slot_id.clone(), slot));
        }
        planned_ids.insert(slot_id);
    }
    let mut stale = Vec::new();
    for (slot_id, status) in &existing {
        if !planned_ids.contains(slot_id) {
            if status == "free" {
                stale.push(slot_id.clone());
            } else {
                done.kept += 1;
            }
        }
    }
    if new_slots.is_empty() && stale.is_empty() {
        return Ok(done);
    }
    // What was read above is re-checked in the transaction, each write with If-Match on the
    // version seen there: a booking that came in between is never overwritten or removed.
    let (created, removed) = engine.with_tx(guard, Exec::Standalone, |tx| {
        let (mut created, mut removed) = (0, 0);
        // One look for all of them (on PostgreSQL a read per slot was a round trip each).
        let ids: Vec<String> = new_slots.iter().map(|(id, _)| id.clone()).collect();
        let known = tx.versions_of("Slot", &ids)?;
        for (slot_id, slot) in new_slots {
            match known.get(&slot_id) {
                // Never written: created (another generator creating it meanwhile makes
                // this transaction fail, and the next round finds it).
                None => {
                    tx.create("Slot", slot, Some(&slot_id))?;
                }
                Some((version, true)) => {
                    tx.update("Slot", &slot_id, slot, Some(*version))?;
                }
                Some((_, false)) => continue,
            }
            created += 1;
        }
        for slot_id in &stale {
            if let Current::Found(s) = tx.read("Slot", slot_id)? {
                let status: Value = crate::resource_json::parsed(&s);
                if status["status"] == "free" {
                    tx.delete("Slot", slot_id, Some(s.version))?;
                    removed += 1;
                }
            }
        }
        Ok((created, removed))
    })?;
    done.created = created;
    done.removed = removed;
    Ok(done)
}
