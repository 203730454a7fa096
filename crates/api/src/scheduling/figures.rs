//! `GET Appointment/$wait-times`: the figures the governance dashboards read, per
//! specialty and province —
//!
//! - **third next available**: the start of the third free appointment time from now (the
//!   usual measure of access, less noisy than the first, which a cancellation can make
//!   look good), and how many days away it is;
//! - **utilisation**: of the slots in the period, the share taken (`busy`);
//! - **no-show rate**: of the appointments in the period that were due (booked, arrived,
//!   fulfilled or no-show, and begun), the share recorded as no-shows.
//!
//! Parameters: `specialty` and `province` narrow the groups; `start` and `end` bound the
//! period (default: the 30 days before now). Aggregates only: planners, facility
//! administrators and the platform's administrator may read them.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_auth::Role;
use sijill_store::SearchQuery;
use time::{Duration, OffsetDateTime};

use super::availability::{format_moment, parse_moment};
use super::directory::{Directory, ScheduleFacts};
use crate::access::Guard;
use crate::context::Actor;
use crate::engine::{truncate, Engine, FhirResponse, Payload};
use crate::error::{FhirError, FhirResult};
use crate::interactions::reference_id;

/// The figures of one specialty in one province.
#[derive(Debug, Default)]
struct Group {
    display: Option<String>,
    third_next: Option<OffsetDateTime>,
    slots: u64,
    taken: u64,
    due: u64,
    no_shows: u64,
}

/// (specialty code, province).
type Key = (String, String);

/// The specialty codings of a list of CodeableConcepts: (code, display).
fn codings(concepts: &Value) -> Vec<(String, Option<String>)> {
    concepts
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .filter_map(|c| {
            Some((
                c["code"].as_str()?.to_string(),
                c["display"].as_str().map(str::to_string),
            ))
        })
        .collect()
}

/// The request's filters and period.
struct Request {
    specialty: Option<String>,
    province: Option<String>,
    start: String,
    end: String,
}

fn request(query: &[(String, String)]) -> FhirResult<Request> {
    let now = OffsetDateTime::now_utc();
    let mut r = Request {
        specialty: None,
        province: None,
        start: format_moment(now - Duration::days(30)),
        end: format_moment(now),
    };
    for (name, value) in query {
        let moment = || {
            parse_moment(value).map(format_moment).ok_or_else(|| {
                FhirError::bad_request(format!("Parameter '{name}' must be a dateTime with a time zone"))
            })
        };
        match name.as_str() {
            "specialty" => r.specialty = Some(value.clone()),
            "province" => r.province = Some(value.to_lowercase()),
            "start" => r.start = moment()?,
            "end" => r.end = moment()?,
            other => {
                return Err(FhirError::bad_request(format!(
                    "$wait-times has no parameter '{}'",
                    truncate(other)
                )))
            }
        }
    }
    if r.end <= r.start {
        return Err(FhirError::bad_request("Parameter 'end' must be after 'start'"));
    }
    Ok(r)
}

impl Request {
    fn wants(&self, key: &Key) -> bool {
        self.specialty.as_ref().is_none_or(|s| s == &key.0) && self.province.as_ref().is_none_or(|p| p == &key.1)
    }
}

/// The groups a schedule counts in: one per specialty, in its province.
fn keys_of(f: &ScheduleFacts) -> Vec<(Key, Option<String>)> {
    let province = f.province.clone().unwrap_or_else(|| "unknown".into());
    codings(&f.specialty)
        .into_iter()
        .map(|(code, display)| ((code, province.clone()), display))
        .collect()
}

/// The schedule a role or location of an appointment belongs to (its first, by id).
fn schedule_of_appointment<'d>(directory: &'d Directory, a: &Value) -> Option<&'d ScheduleFacts> {
    let actors: Vec<(&str, &str)> = a["participant"]
        .as_array()?
        .iter()
        .filter_map(|p| {
            let r = p["actor"]["reference"].as_str()?;
            r.split_once('/')
        })
        .collect();
    let mut matching: Vec<&ScheduleFacts> = directory
        .schedules
        .values()
        .filter(|f| {
            actors.iter().any(|(t, id)| match *t {
                "PractitionerRole" => f.role.as_deref() == Some(id),
                "Location" => f.location.as_deref() == Some(id),
                _ => false,
            })
        })
        .collect();
    matching.sort_by(|x, y| x.id.cmp(&y.id));
    matching.first().copied()
}

/// `GET Appointment/$wait-times`.
pub fn wait_times(engine: &Engine, guard: &Guard<'_>, query: &[(String, String)]) -> FhirResult<FhirResponse> {
    let allowed = match &guard.context().actor {
        Actor::LocalOperator => true,
        Actor::Principal(p) => matches!(p.role, Role::Planner | Role::FacilityAdmin | Role::Admin),
    };
    if !allowed {
        return Err(FhirError::forbidden(
            "wait-time figures are for planners and administrators",
        ));
    }
    let r = request(query)?;
    let directory = engine.directory.get(&engine.store)?;
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    let mut members: BTreeMap<Key, Vec<&ScheduleFacts>> = BTreeMap::new();
    for f in directory.schedules.values().filter(|f| f.active) {
        for (key, display) in keys_of(f) {
            if r.wants(&key) {
                groups.entry(key.clone()).or_default().display = display;
                members.entry(key).or_default().push(f);
            }
        }
    }
    for (key, schedules) in &members {
        if let Some(g) = groups.get_mut(key) {
            g.third_next = super::find::third_next_available(engine, schedules)?;
        }
    }
    let period = |param: &str| -> FhirResult<SearchQuery> {
        Ok(SearchQuery::parse(
            if param == "start" { "Slot" } else { "Appointment" },
            &[
                (param.to_string(), format!("ge{}", r.start)),
                (param.to_string(), format!("lt{}", r.end)),
            ],
        )?)
    };
    engine.store.search_each("Slot", &period("start")?, &mut |s| {
        let slot: Value = crate::resource_json::parsed(s);
        let facts = reference_id(&slot["schedule"], "Schedule").and_then(|id| directory.schedules.get(id));
        for (key, _) in facts.map(keys_of).unwrap_or_default() {
            if let Some(g) = groups.get_mut(&key) {
                g.slots += 1;
                g.taken += u64::from(slot["status"] == "busy");
            }
        }
        Ok(())
    })?;
    let now = OffsetDateTime::now_utc();
    engine.store.search_each("Appointment", &period("date")?, &mut |s| {
        let a: Value = crate::resource_json::parsed(s);
        let begun = a["start"].as_str().and_then(parse_moment).is_some_and(|t| t <= now);
        let status = a["status"].as_str().unwrap_or("");
        if !begun || !matches!(status, "booked" | "arrived" | "fulfilled" | "noshow") {
            return Ok(());
        }
        let province = schedule_of_appointment(&directory, &a)
            .and_then(|f| f.province.clone())
            .unwrap_or_else(|| "unknown".into());
        for (code, _) in codings(&a["specialty"]) {
            if let Some(g) = groups.get_mut(&(code, province.clone())) {
                g.due += 1;
                g.no_shows += u64::from(status == "noshow");
            }
        }
        Ok(())
    })?;
    let ratio = |part: u64, whole: u64| {
        if whole == 0 {
            Value::Null
        } else {
            json!(((part as f64 / whole as f64) * 1000.0).round() / 1000.0)
        }
    };
    let mut parameter = vec![json!({"name": "period", "valuePeriod": {"start": r.start, "end": r.end}})];
    for ((code, province), g) in groups {
        let mut coding = json!({"system": "http://snomed.info/sct", "code": code});
        if let Some(d) = g.display {
            coding["display"] = json!(d);
        }
        let mut part = vec![
            json!({"name": "specialty", "valueCoding": coding}),
            json!({"name": "province", "valueString": province}),
            json!({"name": "slots", "valueInteger": g.slots}),
            json!({"name": "slots-taken", "valueInteger": g.taken}),
            json!({"name": "appointments-due", "valueInteger": g.due}),
            json!({"name": "no-shows", "valueInteger": g.no_shows}),
        ];
        if let Some(t) = g.third_next {
            part.push(json!({"name": "third-next-available", "valueDateTime": format_moment(t)}));
            let days = ((t - now).as_seconds_f64() / 86_400.0 * 10.0).round() / 10.0;
            part.push(json!({"name": "third-next-available-days", "valueDecimal": days}));
        }
        for (name, value) in [
            ("utilisation", ratio(g.taken, g.slots)),
            ("no-show-rate", ratio(g.no_shows, g.due)),
        ] {
            if !value.is_null() {
                part.push(json!({"name": name, "valueDecimal": value}));
            }
        }
        parameter.push(json!({"name": "group", "part": part}));
    }
    Ok(FhirResponse::new(
        StatusCode::OK,
        Payload::Json(json!({"resourceType": "Parameters", "parameter": parameter})),
    ))
}
