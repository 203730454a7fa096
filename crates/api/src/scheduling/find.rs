//! `Appointment/$find` (IHE Scheduling, Find Potential Appointments): free slots that
//! match a citizen's needs, as proposed Appointments, earliest first or nearest first.
//!
//! Parameters (query string or a Parameters body): `start`, `end` (default: now and the
//! booking horizon), `specialty` (code or system|code), `province`, `region`,
//! `organization`, `practitioner` (Practitioner or PractitionerRole reference),
//! `language`, `gender`, `mode` (`in-person` or `virtual`), `sort` (`earliest`, default,
//! or `nearest` with `near=latitude|longitude`), `patient` (put on the proposals),
//! `_count` (default 10, at most 100).

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;

use sijill_store::agenda::{AgendaQuery, FreeSlot};
use sijill_store::Current;
use time::{Duration, OffsetDateTime};

use super::availability::{format_moment, parse_moment, Mode};
use super::directory::{Directory, ScheduleFacts};
use super::VISIT_MODE_SYSTEM;
use crate::access::Guard;
use crate::engine::{truncate, Engine, FhirResponse, Payload, RequestBody};
use crate::error::{FhirError, FhirResult};
use crate::interactions::reference_id;
use crate::parameters;

/// Most proposals in one answer.
const MAX_COUNT: usize = 100;

/// Schedules tried, nearest first, for `sort=nearest`.
const NEAREST_PROBES: usize = 200;

/// The criteria of one `$find`.
#[derive(Debug, Default)]
struct Criteria {
    start: String,
    end: String,
    specialty: Option<String>,
    province: Option<String>,
    region: Option<String>,
    organization: Option<String>,
    practitioner: Option<String>,
    language: Option<String>,
    gender: Option<String>,
    mode: Option<Mode>,
    near: Option<(f64, f64)>,
    nearest: bool,
    patient: Option<String>,
    count: usize,
}

impl Criteria {
    /// Whether a schedule (by its directory facts) can offer what the request asks.
    fn admits(&self, f: &ScheduleFacts) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        f.active
            && same(&self.province, &f.province)
            && same(&self.region, &f.region)
            && same(&self.organization, &f.organization)
            && same(&self.gender, &f.gender)
            && self
                .practitioner
                .as_ref()
                .is_none_or(|p| f.practitioner.as_ref() == Some(p) || f.role.as_ref() == Some(p))
            && self
                .language
                .as_ref()
                .is_none_or(|l| f.languages.iter().any(|x| x.eq_ignore_ascii_case(l)))
            && self
                .specialty
                .as_ref()
                .is_none_or(|s| super::directory::has_code(&f.specialty, s))
    }
}

fn moment_param(value: &str, name: &str) -> FhirResult<String> {
    if let Some(m) = parse_moment(value) {
        return Ok(format_moment(m));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(value, &format)
        .map(|d| format!("{d}T00:00:00Z"))
        .map_err(|_| {
            FhirError::bad_request(format!(
                "Parameter '{name}' = '{}' is neither a date (YYYY-MM-DD) nor a dateTime with a time zone",
                truncate(value)
            ))
        })
}

fn criteria(
    engine: &Engine,
    guard: &Guard<'_>,
    query: &[(String, String)],
    body: &RequestBody,
) -> FhirResult<Criteria> {
    let mut pairs: Vec<(String, String)> = query.to_vec();
    for (name, value) in parameters::read(body)? {
        let text = parameters::text(&value).unwrap_or_default();
        pairs.push((name, text));
    }
    let now = OffsetDateTime::now_utc().to_offset(engine.scheduling.offset);
    let mut c = Criteria {
        start: format_moment(now),
        end: format_moment(now + Duration::days(engine.scheduling.horizon_days)),
        count: 10,
        ..Criteria::default()
    };
    for (name, value) in pairs {
        let v = value.trim().to_string();
        match name.as_str() {
            "start" => c.start = moment_param(&v, "start")?,
            "end" => c.end = moment_param(&v, "end")?,
            "specialty" => c.specialty = Some(v),
            "province" => c.province = Some(v),
            "region" => c.region = Some(v),
            "organization" => c.organization = Some(v.trim_start_matches("Organization/").to_string()),
            "practitioner" => {
                c.practitioner = Some(
                    v.trim_start_matches("PractitionerRole/")
                        .trim_start_matches("Practitioner/")
                        .to_string(),
                )
            }
            "language" => c.language = Some(v),
            "gender" => c.gender = Some(v),
            "mode" => {
                c.mode = Some(Mode::parse(&v).ok_or_else(|| {
                    FhirError::bad_request(format!(
                        "Parameter 'mode' must be in-person or virtual, not '{}'",
                        truncate(&v)
                    ))
                })?)
            }
            "sort" => {
                c.nearest = match v.as_str() {
                    "earliest" => false,
                    "nearest" => true,
                    other => {
                        return Err(FhirError::bad_request(format!(
                            "Parameter 'sort' must be earliest or nearest, not '{}'",
                            truncate(other)
                        )))
                    }
                }
            }
            "near" => {
                let parsed = v
                    .split_once('|')
                    .and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)))
                    .filter(|(lat, lon)| lat.abs() <= 90.0 && lon.abs() <= 180.0);
                c.near =
                    Some(parsed.ok_or_else(|| FhirError::bad_request("Parameter 'near' must be latitude|longitude"))?);
            }
            "patient" => c.patient = Some(v.trim_start_matches("Patient/").to_string()),
            "_count" => {
                c.count = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        FhirError::bad_request(format!("_count must be a whole number from 1 to {MAX_COUNT}"))
                    })?
            }
            _ => {
                return Err(FhirError::bad_request(format!(
                    "$find has no parameter '{}'",
                    truncate(&name)
                )))
            }
        }
    }
    if c.nearest && c.near.is_none() {
        return Err(FhirError::bad_request("sort=nearest needs near=latitude|longitude"));
    }
    if c.end <= c.start {
        return Err(FhirError::bad_request("Parameter 'end' must be after 'start'"));
    }
    if let Some(p) = &c.patient {
        let staff = guard.is_platform_admin() || super::staff_facility(guard).is_some();
        if !guard.is_the_patient(p) && !staff {
            return Err(FhirError::forbidden(
                "proposals for a patient are made for the patient themself or by staff",
            ));
        }
    }
    Ok(c)
}

/// Agenda rows read per page when scanning every schedule's slots in start order.
const AGENDA_PAGE: usize = 256;

/// Agenda rows scanned in start order before a sparse request turns to its schedules one
/// by one (a few schedules among many: reading each one's first slots is then cheaper).
const MAX_SCANNED: usize = 8 * 1024;

/// Candidate schedules at most for which a request reads each schedule's first slots
/// rather than scanning the agenda in start order.
const FEW_SCHEDULES: usize = 16;

impl Criteria {
    /// Whether a free slot (read from the store) suits the request beyond its schedule:
    /// still free, of the asked mode and specialty.
    fn suits(&self, slot: &Value) -> bool {
        slot["status"] == "free"
            && self.mode.is_none_or(|m| {
                super::directory::has_code(&slot["serviceType"], &format!("{VISIT_MODE_SYSTEM}|{}", m.code()))
            })
            && self
                .specialty
                .as_ref()
                .is_none_or(|s| slot["specialty"].is_null() || super::directory::has_code(&slot["specialty"], s))
    }

    /// The agenda window of the request (stored instant format).
    fn window(&self) -> FhirResult<(String, String)> {
        let stored = |m: &str| {
            sijill_store::parse_instant(m)
                .ok_or_else(|| FhirError::bad_request(format!("'{}' is not an instant", truncate(m))))
        };
        Ok((stored(&self.start)?, stored(&self.end)?))
    }
}

/// Collects the suitable free slots of agenda rows, one per schedule and time, up to `count`.
struct Picked<'c> {
    criteria: &'c Criteria,
    seen: HashSet<(String, String)>,
    slots: Vec<Value>,
}

impl<'c> Picked<'c> {
    fn new(criteria: &'c Criteria) -> Self {
        Picked {
            criteria,
            seen: HashSet::new(),
            slots: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.slots.len() >= self.criteria.count
    }

    /// Takes a row when its schedule and time are not taken yet and its slot suits.
    fn offer(&mut self, engine: &Engine, row: &FreeSlot) -> FhirResult<()> {
        let key = (row.schedule.clone(), row.start.clone());
        if self.seen.contains(&key) {
            return Ok(());
        }
        if let Current::Found(s) = engine.store.read("Slot", &row.id)? {
            let slot: Value = crate::resource_json::parsed(&s);
            if self.criteria.suits(&slot) {
                self.seen.insert(key);
                self.slots.push(slot);
            }
        }
        Ok(())
    }
}

/// The first suitable free slots of one schedule, in start order, at most `count`.
fn first_of_schedule(engine: &Engine, c: &Criteria, schedule: &str, count: usize) -> FhirResult<Vec<Value>> {
    let (from, until) = c.window()?;
    let mut picked = Picked::new(c);
    let mut query = AgendaQuery {
        schedule: Some(schedule.to_string()),
        from,
        until,
        after: None,
        limit: count.max(4),
    };
    loop {
        let rows = engine.store.free_slots(&query)?;
        for row in &rows {
            picked.offer(engine, row)?;
            if picked.slots.len() >= count {
                return Ok(picked.slots);
            }
        }
        match rows.last() {
            Some(last) if rows.len() == query.limit => query.after = Some((last.start.clone(), last.rid)),
            _ => return Ok(picked.slots),
        }
    }
}

/// Free slots of the candidate schedules in start order, one per schedule and time, from
/// the agenda of free slots: read in start order and filtered by schedule when many
/// schedules qualify, or each schedule's first slots merged when few do (or when the scan
/// finds theirs too sparse).
fn earliest(engine: &Engine, c: &Criteria, candidates: &[&ScheduleFacts]) -> FhirResult<Vec<Value>> {
    let wanted: HashSet<&str> = candidates.iter().map(|f| f.id.as_str()).collect();
    if wanted.len() <= FEW_SCHEDULES {
        return each_schedule(engine, c, wanted);
    }
    let (from, until) = c.window()?;
    let mut picked = Picked::new(c);
    // The first page is as long as the schedules' share of the agenda suggests it needs
    // (each row read costs a lookup of its slot's id); the next ones twice as long, up
    // to AGENDA_PAGE.
    let all = engine.directory.get(&engine.store)?.schedules.len();
    let share = (wanted.len() as f64 / all.max(1) as f64).clamp(1e-3, 1.0);
    let first_page = ((c.count as f64 * 2.0 / share) as usize).clamp(c.count.max(16), AGENDA_PAGE);
    let mut query = AgendaQuery {
        schedule: None,
        from,
        until,
        after: None,
        limit: first_page,
    };
    let mut scanned = 0;
    loop {
        let rows = engine.store.free_slots(&query)?;
        scanned += rows.len();
        for row in &rows {
            if wanted.contains(row.schedule.as_str()) {
                picked.offer(engine, row)?;
                if picked.full() {
                    return Ok(picked.slots);
                }
            }
        }
        match rows.last() {
            Some(last) if rows.len() == query.limit => {
                query.after = Some((last.start.clone(), last.rid));
                query.limit = (query.limit * 2).min(AGENDA_PAGE);
            }
            _ => return Ok(picked.slots),
        }
        if scanned >= MAX_SCANNED {
            return each_schedule(engine, c, wanted);
        }
    }
}

/// The first slots of each schedule, merged in start order.
fn each_schedule(engine: &Engine, c: &Criteria, schedules: HashSet<&str>) -> FhirResult<Vec<Value>> {
    let mut slots = Vec::new();
    for schedule in schedules {
        slots.extend(first_of_schedule(engine, c, schedule, c.count)?);
    }
    slots.sort_by(|a, b| {
        start_of(a)
            .cmp(&start_of(b))
            .then(a["id"].as_str().cmp(&b["id"].as_str()))
    });
    slots.truncate(c.count);
    Ok(slots)
}

/// When the third free appointment time of these schedules starts (from now, within the
/// booking horizon), if there are three.
pub fn third_next_available(engine: &Engine, schedules: &[&ScheduleFacts]) -> FhirResult<Option<OffsetDateTime>> {
    let now = OffsetDateTime::now_utc();
    let c = Criteria {
        start: format_moment(now),
        end: format_moment(now + Duration::days(engine.scheduling.horizon_days)),
        count: 3,
        ..Criteria::default()
    };
    let slots = earliest(engine, &c, schedules)?;
    Ok(slots.get(2).and_then(start_of))
}

/// The earliest free slots equivalent to a schedule's: the same specialty in the same
/// province, at another schedule (for patients whose appointment the schedule cannot keep).
pub fn equivalents(
    engine: &Engine,
    directory: &Directory,
    instead_of: &ScheduleFacts,
    specialty: Option<String>,
    count: usize,
) -> FhirResult<Vec<Value>> {
    let now = OffsetDateTime::now_utc();
    let c = Criteria {
        start: format_moment(now),
        end: format_moment(now + Duration::days(engine.scheduling.horizon_days)),
        specialty,
        province: instead_of.province.clone(),
        count,
        ..Criteria::default()
    };
    let candidates: Vec<&ScheduleFacts> = directory
        .offering(c.specialty.as_deref())
        .into_iter()
        .filter(|f| f.id != instead_of.id && c.admits(f))
        .collect();
    earliest(engine, &c, &candidates)
}

/// Free slots of the nearest schedules first (each schedule's earliest).
fn nearest(engine: &Engine, c: &Criteria, mut candidates: Vec<&ScheduleFacts>) -> FhirResult<Vec<Value>> {
    let (lat, lon) = c.near.unwrap_or_default();
    let distance = |f: &ScheduleFacts| f.position.map_or(f64::MAX, |(a, b)| km(lat, lon, a, b));
    candidates.sort_by(|a, b| distance(a).total_cmp(&distance(b)).then(a.id.cmp(&b.id)));
    let mut out = Vec::new();
    for f in candidates.into_iter().take(NEAREST_PROBES) {
        out.extend(first_of_schedule(engine, c, &f.id, 1)?);
        if out.len() >= c.count {
            break;
        }
    }
    Ok(out)
}

/// Great-circle distance in kilometres.
fn km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    6371.0 * 2.0 * a.sqrt().atan2((1.0 - a).sqrt())
}

fn start_of(slot: &Value) -> Option<OffsetDateTime> {
    slot["start"].as_str().and_then(parse_moment)
}

/// A proposed Appointment for a free slot.
fn proposal(slot: &Value, facts: Option<&ScheduleFacts>, patient: Option<&str>) -> Value {
    let id = slot["id"].as_str().unwrap_or("");
    super::appointment_on(slot, id, facts, patient.map(|p| (p, "needs-action")), "proposed")
}

/// `Appointment/$find`.
pub fn find(
    engine: &Engine,
    guard: &Guard<'_>,
    query: &[(String, String)],
    body: &RequestBody,
) -> FhirResult<FhirResponse> {
    let c = criteria(engine, guard, query, body)?;
    let directory: Arc<Directory> = engine.directory.get(&engine.store)?;
    let candidates: Vec<&ScheduleFacts> = directory
        .offering(c.specialty.as_deref())
        .into_iter()
        .filter(|f| c.admits(f))
        .collect();
    let slots = if c.nearest {
        nearest(engine, &c, candidates)?
    } else {
        earliest(engine, &c, &candidates)?
    };
    let entries: Vec<Value> = slots
        .iter()
        .map(|slot| {
            let facts = reference_id(&slot["schedule"], "Schedule").and_then(|id| directory.schedules.get(id));
            json!({
                "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                "resource": proposal(slot, facts, c.patient.as_deref()),
                "search": {"mode": "match"},
            })
        })
        .collect();
    if let Some(p) = &c.patient {
        guard.disclose_patient(p);
    }
    Ok(FhirResponse::new(
        StatusCode::OK,
        Payload::Json(json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": entries.len(),
            "entry": entries,
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::km;

    #[test]
    fn distance_between_two_cities_is_about_right() {
        // Rabat to Casablanca: about 87 km.
        let d = km(34.0209, -6.8416, 33.5731, -7.5898);
        assert!((80.0..95.0).contains(&d), "{d}");
        assert!(km(1.0, 1.0, 1.0, 1.0) < 1e-9);
    }
}
