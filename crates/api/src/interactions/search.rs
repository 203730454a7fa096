//! search on a resource type (GET `Type?…` and POST `Type/_search`). This version answers
//! the parameters the index supports (see `sijill_store::index`); the rest are refused
//! with an OperationOutcome that names them.

use axum::http::StatusCode;
use serde_json::json;
use sijill_store::{Current, SearchQuery};

use super::history::parse_count;
use crate::bundle_writer::{BundleWriter, EntryResource};
use crate::engine::{truncate, Engine, Exec, FhirResponse, Payload};
use crate::error::{FhirError, FhirResult};

/// Result and special parameters of the specification that this version does not
/// implement yet; they are refused by name rather than ignored.
const RESULT_PARAMS: &[&str] = &[
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_contained",
    "_containedType",
    "_has",
    "_list",
    "_text",
    "_content",
    "_query",
    "_filter",
];

/// Most parameters one search may carry.
const MAX_PARAMS: usize = 50;

/// Searches `resource_type`.
pub fn search(
    engine: &Engine,
    exec: Exec<'_>,
    resource_type: &str,
    params: &[(String, String)],
) -> FhirResult<FhirResponse> {
    if params.len() > MAX_PARAMS {
        return Err(FhirError::bad_request(format!(
            "A search may have at most {MAX_PARAMS} parameters"
        )));
    }
    let mut count = engine.limits.default_count;
    let mut cursor: Option<String> = None;
    let mut criteria = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "_count" => count = parse_count(value, engine.limits.max_count)?,
            "_cursor" => cursor = Some(value.clone()),
            "_format" | "_total" => {}
            n if RESULT_PARAMS.contains(&n.split(':').next().unwrap_or(n)) => {
                return Err(FhirError::bad_request(format!(
                    "Search parameter '{}' is not supported by this server yet",
                    truncate(n)
                )))
            }
            _ => criteria.push((name.clone(), value.clone())),
        }
    }
    let query = SearchQuery::parse(resource_type, &criteria)?;
    let (found, total) = match exec {
        Exec::Standalone => engine.store.search(resource_type, &query, cursor.as_deref(), count)?,
        Exec::InTx(tx) => {
            let ids = tx.search_ids(resource_type, &query, count)?;
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Current::Found(s) = tx.read(resource_type, id)? {
                    found.push(s);
                }
            }
            let total = found.len() as u64;
            (found, total)
        }
    };
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(criteria.iter())
        .finish();
    let self_url = format!(
        "{}/{resource_type}?{encoded}{}_count={count}",
        engine.base_url,
        if encoded.is_empty() { "" } else { "&" }
    );
    let mut links = vec![("self", self_url.clone())];
    if found.len() == count && count > 0 {
        if let Some(last) = found.last() {
            links.push(("next", format!("{self_url}&_cursor={}", last.id)));
        }
    }
    let mut writer = BundleWriter::new("searchset", Some(total), &links);
    for s in &found {
        writer.entry(
            Some(&format!("{}/{}/{}", engine.base_url, s.resource_type, s.id)),
            EntryResource::Raw(&s.body),
            &[("search", json!({"mode": "match"}))],
        );
    }
    Ok(FhirResponse::new(StatusCode::OK, Payload::Bytes(writer.finish())))
}
