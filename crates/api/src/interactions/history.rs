//! history at instance, type and system level: newest first, paged, with `_since` and
//! `_count`. Pages are pinned to the newest change at the first page, so later pages stay
//! correct while writes continue.

use axum::http::StatusCode;
use serde_json::json;
use sijill_store::{parse_instant, HistoryQuery, HistoryScope};

use crate::access::Guard;
use crate::bundle_writer::{BundleWriter, EntryResource};
use crate::engine::{truncate, Engine, FhirResponse, Payload};
use crate::error::{FhirError, FhirResult};

/// GET `[Type/[id/]]_history`.
pub fn history(
    engine: &Engine,
    guard: &Guard<'_>,
    scope: HistoryScope,
    params: &[(String, String)],
) -> FhirResult<FhirResponse> {
    match &scope {
        HistoryScope::System => guard.check_history(None)?,
        HistoryScope::Type(t) => guard.check_history(Some(t))?,
        HistoryScope::Instance(..) => {}
    }
    let mut query = HistoryQuery {
        scope,
        since: None,
        count: engine.limits.default_count,
        before_seq: None,
        at_or_before_seq: None,
    };
    for (name, value) in params {
        match name.as_str() {
            "_count" => query.count = parse_count(value, engine.limits.max_count)?,
            "_since" => {
                query.since = Some(parse_instant(value).ok_or_else(|| {
                    FhirError::bad_request(format!("_since '{}' is not a valid instant", truncate(value)))
                })?)
            }
            "_cursor" => {
                let (before, at) = value
                    .split_once('.')
                    .and_then(|(b, a)| Some((b.parse::<i64>().ok()?, a.parse::<i64>().ok()?)))
                    .ok_or_else(|| FhirError::bad_request("_cursor is not a cursor this server issued"))?;
                query.before_seq = Some(before);
                query.at_or_before_seq = Some(at);
            }
            "_format" => {}
            other => {
                return Err(FhirError::bad_request(format!(
                    "History parameter '{}' is not supported",
                    truncate(other)
                )))
            }
        }
    }
    let page = engine.store.history(&query)?;
    if let HistoryScope::Instance(t, id) = &query.scope {
        // An instance whose versions the actor may not all see is, to them, absent.
        if page.entries.iter().any(|s| !guard.visible(s)) {
            return Err(FhirError::resource_not_found(t, id));
        }
    }
    page.entries.iter().for_each(|s| guard.disclose(s));
    let path = match &query.scope {
        HistoryScope::System => "_history".to_string(),
        HistoryScope::Type(t) => format!("{t}/_history"),
        HistoryScope::Instance(t, id) => format!("{t}/{id}/_history"),
    };
    let mut base_params = format!("_count={}", query.count);
    if let Some(since) = &query.since {
        base_params.push_str(&format!("&_since={since}"));
    }
    let mut links = vec![("self", format!("{}/{path}?{base_params}", engine.base_url))];
    if let Some(next) = page.next_before_seq {
        links.push((
            "next",
            format!(
                "{}/{path}?{base_params}&_cursor={next}.{}",
                engine.base_url, page.snapshot_seq
            ),
        ));
    }
    let newest = page
        .entries
        .first()
        .map(|s| s.last_updated.clone())
        .unwrap_or_else(sijill_store::now_instant);
    let mut writer = BundleWriter::as_of("history", Some(page.total), &links, &newest);
    for s in &page.entries {
        let (method, url, status) = if s.deleted {
            ("DELETE", format!("{}/{}", s.resource_type, s.id), "204")
        } else if s.version == 1 {
            ("POST", s.resource_type.clone(), "201")
        } else {
            ("PUT", format!("{}/{}", s.resource_type, s.id), "200")
        };
        let resource = if s.deleted {
            EntryResource::None
        } else {
            EntryResource::Raw(&s.body)
        };
        writer.entry(
            Some(&format!("{}/{}/{}", engine.base_url, s.resource_type, s.id)),
            resource,
            &[
                ("request", json!({"method": method, "url": url})),
                (
                    "response",
                    json!({"status": status, "etag": format!("W/\"{}\"", s.version), "lastModified": s.last_updated}),
                ),
            ],
        );
    }
    Ok(FhirResponse::new(StatusCode::OK, Payload::Bytes(writer.finish())))
}

/// Parses `_count`: 0 … `max`.
pub fn parse_count(value: &str, max: usize) -> FhirResult<usize> {
    let n: usize = value
        .parse()
        .map_err(|_| FhirError::bad_request(format!("_count '{}' is not a number", truncate(value))))?;
    Ok(n.min(max))
}
