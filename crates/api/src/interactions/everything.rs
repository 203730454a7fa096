//! `Patient/{id}/$everything`: the patient and every resource of its compartment, paged
//! (`_count`, `next` links), with `_since` (changed at or after) and `_type` (only these
//! types). Pages walk the member types in order, each by id, so they stay stable.

use axum::http::StatusCode;
use serde_json::json;
use sijill_fhir::definitions;
use sijill_store::{Current, SearchQuery};

use super::history::parse_count;
use crate::bundle_writer::{BundleWriter, EntryResource};
use crate::engine::{truncate, Engine, FhirResponse, Payload};
use crate::error::{FhirError, FhirResult};

/// GET or POST `Patient/{id}/$everything`.
pub fn everything(engine: &Engine, patient_id: &str, params: &[(String, String)]) -> FhirResult<FhirResponse> {
    let mut count = engine.limits.default_count;
    let mut since: Option<String> = None;
    let mut types: Option<Vec<String>> = None;
    let mut cursor: Option<(String, String)> = None;
    for (name, value) in params {
        match name.as_str() {
            "_count" => count = parse_count(value, engine.limits.max_count)?.max(1),
            "_since" => {
                sijill_store::parse_instant(value)
                    .ok_or_else(|| FhirError::bad_request(format!("_since '{}' is not an instant", truncate(value))))?;
                since = Some(value.clone());
            }
            "_type" => {
                let list: Vec<String> = value.split(',').map(str::to_string).collect();
                if let Some(bad) = list.iter().find(|t| !definitions::is_resource_type(t)) {
                    return Err(FhirError::bad_request(format!(
                        "_type: '{}' is not a resource type",
                        truncate(bad)
                    )));
                }
                types = Some(list);
            }
            "_cursor" => {
                let (t, id) = value
                    .split_once(':')
                    .ok_or_else(|| FhirError::bad_request("_cursor is not a cursor this server issued"))?;
                cursor = Some((t.to_string(), id.to_string()));
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
    match engine.store.read("Patient", patient_id)? {
        Current::Found(_) => {}
        Current::Deleted(_) => return Err(FhirError::new(StatusCode::GONE, "deleted", "The patient was deleted")),
        Current::NotFound => {
            return Err(FhirError::not_found(format!(
                "Patient/{} does not exist",
                truncate(patient_id)
            )))
        }
    }
    let compartment = definitions::compartment("Patient")
        .ok_or_else(|| FhirError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "no Patient compartment"))?;
    let mut members: Vec<&str> = compartment.members.iter().map(|(t, _)| *t).collect();
    members.sort_unstable();
    members.retain(|t| types.as_ref().is_none_or(|list| list.iter().any(|x| x == t)));
    let criteria: Vec<(String, String)> = since
        .iter()
        .map(|s| ("_lastUpdated".to_string(), format!("ge{s}")))
        .collect();
    let mut total = 0u64;
    let mut page = Vec::new();
    let mut next: Option<(String, String)> = None;
    for member in &members {
        let query = SearchQuery::parse(member, &criteria)?
            .in_compartment("Patient", patient_id, member)
            .ok_or_else(|| FhirError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "not a member"))?;
        // Types before the cursor's were returned by earlier pages: count them only.
        let passed = matches!(&cursor, Some((t, _)) if t.as_str() > *member);
        let after = match &cursor {
            Some((t, id)) if t == member => Some(id.as_str()),
            _ => None,
        };
        let room = count - page.len();
        let limit = if passed { 0 } else { room + 1 };
        let (mut found, n) = engine.store.search(member, &query, after, limit)?;
        total += n;
        if passed || found.is_empty() {
            continue;
        }
        if found.len() > room {
            found.truncate(room);
            page.extend(found);
            if next.is_none() {
                next = page.last().map(|s| (s.resource_type.clone(), s.id.clone()));
            }
            continue;
        }
        page.extend(found);
    }
    let mut query_string = format!("_count={count}");
    if let Some(s) = &since {
        query_string.push_str(&format!("&_since={s}"));
    }
    if let Some(t) = &types {
        query_string.push_str(&format!("&_type={}", t.join(",")));
    }
    let base = format!("{}/Patient/{patient_id}/$everything?{query_string}", engine.base_url);
    let mut links = vec![("self", base.clone())];
    if let Some((t, id)) = &next {
        links.push(("next", format!("{base}&_cursor={t}:{id}")));
    }
    let mut writer = BundleWriter::new("searchset", Some(total), &links);
    for s in &page {
        writer.entry(
            Some(&format!("{}/{}/{}", engine.base_url, s.resource_type, s.id)),
            EntryResource::Raw(&s.body),
            &[("search", json!({"mode": "match"}))],
        );
    }
    Ok(FhirResponse::new(StatusCode::OK, Payload::Bytes(writer.finish())))
}
