//! `Patient/{id}/$everything` and `Patient/$everything`: a patient (or every patient, in id
//! order) and every resource of their compartments, paged (`_count`, `next` links), with
//! `_since` (changed at or after) and `_type` (only these types). Pages walk the member
//! types in order, each by id, so they stay stable; a cursor names where the page ended.

use axum::http::StatusCode;
use serde_json::json;
use sijill_fhir::definitions;
use sijill_store::{Current, SearchQuery, Stored};

use super::history::parse_count;
use crate::access::Guard;
use crate::bundle_writer::{BundleWriter, EntryResource};
use crate::engine::{truncate, Engine, FhirResponse, Payload};
use crate::error::{FhirError, FhirResult};

/// Patients read per step of `Patient/$everything`.
const PATIENT_BATCH: usize = 100;

/// The parameters of `$everything`.
struct Options {
    count: usize,
    since: Option<String>,
    types: Option<Vec<String>>,
    /// Where the previous page ended: (patient, member type, id); the patient is empty for
    /// the instance operation.
    cursor: Option<(String, String, String)>,
    /// The member types of the Patient compartment asked for, in order.
    members: Vec<&'static str>,
    /// Search criteria every member query carries (`_since`).
    criteria: Vec<(String, String)>,
}

impl Options {
    fn parse(engine: &Engine, params: &[(String, String)], type_level: bool) -> FhirResult<Options> {
        let mut options = Options {
            count: engine.limits.default_count,
            since: None,
            types: None,
            cursor: None,
            members: Vec::new(),
            criteria: Vec::new(),
        };
        for (name, value) in params {
            match name.as_str() {
                "_count" => options.count = parse_count(value, engine.limits.max_count)?.max(1),
                "_since" => {
                    sijill_store::parse_instant(value).ok_or_else(|| {
                        FhirError::bad_request(format!("_since '{}' is not an instant", truncate(value)))
                    })?;
                    options.since = Some(value.clone());
                }
                "_type" => {
                    let list: Vec<String> = value.split(',').map(str::to_string).collect();
                    if let Some(bad) = list.iter().find(|t| !definitions::is_resource_type(t)) {
                        return Err(FhirError::bad_request(format!(
                            "_type: '{}' is not a resource type",
                            truncate(bad)
                        )));
                    }
                    options.types = Some(list);
                }
                "_cursor" => {
                    let bad = || FhirError::bad_request("_cursor is not a cursor this server issued");
                    let (patient, rest) = if type_level {
                        value.split_once(':').ok_or_else(bad)?
                    } else {
                        ("", value.as_str())
                    };
                    let (t, id) = rest.split_once(':').ok_or_else(bad)?;
                    options.cursor = Some((patient.to_string(), t.to_string(), id.to_string()));
                }
                "_format" => {}
                other => {
                    return Err(FhirError::bad_request(format!(
                        "$everything parameter '{}' is not supported",
                        truncate(other)
                    )))
                }
            }
        }
        let compartment = definitions::compartment("Patient")
            .ok_or_else(|| FhirError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "no Patient compartment"))?;
        let mut members: Vec<&'static str> = compartment.members.iter().map(|(t, _)| *t).collect();
        members.sort_unstable();
        members.retain(|t| options.types.as_ref().is_none_or(|list| list.iter().any(|x| x == t)));
        options.members = members;
        options.criteria = options
            .since
            .iter()
            .map(|s| ("_lastUpdated".to_string(), format!("ge{s}")))
            .collect();
        Ok(options)
    }

    /// The query string that reproduces these options (without the cursor).
    fn query_string(&self) -> String {
        let mut q = format!("_count={}", self.count);
        if let Some(s) = &self.since {
            q.push_str(&format!("&_since={s}"));
        }
        if let Some(t) = &self.types {
            q.push_str(&format!("&_type={}", t.join(",")));
        }
        q
    }
}

/// What one patient's compartment contributes to a page.
struct Collected {
    /// Resources on the page (at most the room there was).
    found: Vec<Stored>,
    /// All resources of the compartment (only counted when asked).
    total: u64,
    /// Whether more resources follow those found.
    more: bool,
}

/// Up to `room` resources of a patient's compartment after `after` (member type, id).
fn collect(
    engine: &Engine,
    patient_id: &str,
    options: &Options,
    after: Option<(&str, &str)>,
    room: usize,
    count_all: bool,
) -> FhirResult<Collected> {
    let mut out = Collected {
        found: Vec::new(),
        total: 0,
        more: false,
    };
    // Most member types have nothing for a given patient: one lookup finds those that do.
    let present = engine
        .store
        .compartment_types("Patient", patient_id, &options.members)?;
    for &member in options.members.iter().filter(|m| present.iter().any(|p| p == *m)) {
        let query = SearchQuery::parse(member, &options.criteria)?
            .in_compartment("Patient", patient_id, member)
            .ok_or_else(|| FhirError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "not a member"))?;
        // Types before the cursor's were on earlier pages.
        let passed = matches!(after, Some((t, _)) if t > member);
        let after_id = match after {
            Some((t, id)) if t == member => Some(id),
            _ => None,
        };
        let left = room - out.found.len();
        if count_all {
            let (found, n) = engine
                .store
                .search(member, &query, after_id, if passed { 0 } else { left + 1 })?;
            out.total += n;
            if !passed {
                take(&mut out, found, left);
            }
        } else if !passed {
            let found = engine.store.search_page(member, &query, after_id, left + 1)?;
            take(&mut out, found, left);
            if out.more {
                break;
            }
        }
    }
    Ok(out)
}

/// Adds up to `left` of `found` to the page, noting when some did not fit.
fn take(out: &mut Collected, mut found: Vec<Stored>, left: usize) {
    if found.len() > left {
        found.truncate(left);
        out.more = true;
    }
    out.found.extend(found);
}

fn searchset(engine: &Engine, page: &[Stored], total: Option<u64>, links: &[(&str, String)]) -> FhirResponse {
    let mut writer = BundleWriter::new("searchset", total, links);
    for s in page {
        writer.entry(
            Some(&format!("{}/{}/{}", engine.base_url, s.resource_type, s.id)),
            EntryResource::Raw(&s.body),
            &[("search", json!({"mode": "match"}))],
        );
    }
    FhirResponse::new(StatusCode::OK, Payload::Bytes(writer.finish()))
}

/// GET or POST `Patient/{id}/$everything`.
pub fn everything(
    engine: &Engine,
    guard: &Guard<'_>,
    patient_id: &str,
    params: &[(String, String)],
) -> FhirResult<FhirResponse> {
    let options = Options::parse(engine, params, false)?;
    match engine.store.read("Patient", patient_id)? {
        Current::Found(patient) => guard.check_visible(&patient)?,
        Current::Deleted(patient) => {
            guard.check_visible_deleted(&patient)?;
            return Err(FhirError::new(StatusCode::GONE, "deleted", "The patient was deleted"));
        }
        Current::NotFound => return Err(FhirError::resource_not_found("Patient", patient_id)),
    }
    let after = options.cursor.as_ref().map(|(_, t, id)| (t.as_str(), id.as_str()));
    let mut collected = collect(engine, patient_id, &options, after, options.count, true)?;
    collected.found.retain(|s| guard.visible(s));
    collected.found.iter().for_each(|s| guard.disclose(s));
    let base = format!(
        "{}/Patient/{patient_id}/$everything?{}",
        engine.base_url,
        options.query_string()
    );
    let mut links = vec![("self", base.clone())];
    if let (true, Some(last)) = (collected.more, collected.found.last()) {
        links.push(("next", format!("{base}&_cursor={}:{}", last.resource_type, last.id)));
    }
    Ok(searchset(engine, &collected.found, Some(collected.total), &links))
}

/// GET or POST `Patient/$everything`: every patient in id order, each followed by their
/// compartment. No total is given (counting the whole record base per page would cost more
/// than the page).
pub fn everything_for_all(engine: &Engine, guard: &Guard<'_>, params: &[(String, String)]) -> FhirResult<FhirResponse> {
    guard.check_everything_for_all()?;
    let options = Options::parse(engine, params, true)?;
    let all_patients = SearchQuery::parse("Patient", &[])?;
    let mut page: Vec<(String, Stored)> = Vec::new();
    let mut next: Option<(String, String, String)> = None;
    let mut after_patient: Option<String> = None;
    // The patient the previous page ended in comes first, from where it ended.
    if let Some((patient, t, id)) = &options.cursor {
        let c = collect(engine, patient, &options, Some((t, id)), options.count, false)?;
        page.extend(c.found.into_iter().map(|s| (patient.clone(), s)));
        if c.more {
            next = page
                .last()
                .map(|(p, s)| (p.clone(), s.resource_type.clone(), s.id.clone()));
        }
        after_patient = Some(patient.clone());
    }
    'patients: while next.is_none() {
        let patients = engine
            .store
            .search_page("Patient", &all_patients, after_patient.as_deref(), PATIENT_BATCH)?;
        for patient in &patients {
            let room = options.count - page.len();
            let c = collect(engine, &patient.id, &options, None, room, false)?;
            page.extend(c.found.into_iter().map(|s| (patient.id.clone(), s)));
            if c.more {
                next = page
                    .last()
                    .map(|(p, s)| (p.clone(), s.resource_type.clone(), s.id.clone()));
                break 'patients;
            }
        }
        match patients.last() {
            Some(last) if patients.len() == PATIENT_BATCH => after_patient = Some(last.id.clone()),
            _ => break,
        }
    }
    let base = format!("{}/Patient/$everything?{}", engine.base_url, options.query_string());
    let mut links = vec![("self", base.clone())];
    if let Some((p, t, id)) = &next {
        links.push(("next", format!("{base}&_cursor={p}:{t}:{id}")));
    }
    let resources: Vec<Stored> = page.into_iter().map(|(_, s)| s).collect();
    resources.iter().for_each(|s| guard.disclose(s));
    Ok(searchset(engine, &resources, None, &links))
}
