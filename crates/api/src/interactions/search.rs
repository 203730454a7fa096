//! search on a resource type (GET `Type?…` and POST `Type/_search`).
//!
//! Criteria are the parameters the index supports (see `sijill_store::index`); the result
//! parameters `_count`, `_total`, `_summary` (count, data, false), `_elements`,
//! `_include` and `_revinclude` (with `:iterate`) shape the Bundle. Anything else is
//! refused with an OperationOutcome that names it.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sijill_fhir::definitions::{self, SearchParamType};
use sijill_store::{index, Current, SearchQuery, SortKey, Stored};

use super::history::parse_count;
use crate::access::Guard;
use crate::bundle_writer::{BundleWriter, EntryResource};
use crate::engine::{truncate, Engine, Exec, FhirResponse, Payload};
use crate::error::{FhirError, FhirResult};

/// Result and special parameters of the specification that this version does not
/// implement yet; they are refused by name rather than ignored.
const NOT_YET: &[&str] = &[
    "_contained",
    "_containedType",
    "_list",
    "_text",
    "_content",
    "_query",
    "_filter",
];

/// Most resources a sorted search may match (they are ordered and kept as a snapshot).
const MAX_SORTED: usize = 10_000;

/// Most parameters one search may carry.
const MAX_PARAMS: usize = 50;
/// Most resources `_include`/`_revinclude` add to one page.
const MAX_INCLUDED: usize = 1000;
/// Most rounds of `:iterate`.
const MAX_ITERATIONS: usize = 3;

/// One `_include` or `_revinclude`: `Source:param[:Target]`, or `*`.
#[derive(Debug, Clone)]
struct Include {
    source: String,
    param: Option<String>,
    target: Option<String>,
    iterate: bool,
}

/// What the client asked for beyond the criteria.
#[derive(Debug, Default)]
struct Shape {
    count: Option<usize>,
    cursor: Option<String>,
    summary_count: bool,
    summary_data: bool,
    summary_true: bool,
    summary_text: bool,
    total: bool,
    elements: Option<Vec<String>>,
    includes: Vec<Include>,
    revincludes: Vec<Include>,
    sort: Option<String>,
    page: Option<(String, usize)>,
    /// The result parameters as given, to repeat them in paging links.
    echo: Vec<(String, String)>,
}

fn parse_include(name: &str, value: &str) -> FhirResult<Include> {
    let iterate = name.ends_with(":iterate") || name.ends_with(":recurse");
    if value == "*" {
        return Ok(Include {
            source: "*".into(),
            param: None,
            target: None,
            iterate,
        });
    }
    let parts: Vec<&str> = value.split(':').collect();
    let bad = || FhirError::bad_request(format!("{name} '{}' is not Source:parameter[:Target]", truncate(value)));
    let (source, param, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(*t)),
        _ => return Err(bad()),
    };
    let is_reference = index::param(source, param).is_some_and(|p| p.kind == SearchParamType::Reference);
    if !definitions::is_resource_type(source) || !is_reference {
        return Err(bad());
    }
    if target.is_some_and(|t| !definitions::is_resource_type(t)) {
        return Err(bad());
    }
    Ok(Include {
        source: source.into(),
        param: Some(param.into()),
        target: target.map(str::to_string),
        iterate,
    })
}

fn parse_shape(
    params: &[(String, String)],
    max_count: usize,
    lenient: bool,
) -> FhirResult<(Shape, Vec<(String, String)>)> {
    let mut shape = Shape {
        total: true,
        ..Shape::default()
    };
    let mut criteria = Vec::new();
    for (name, value) in params {
        let base = name.split(':').next().unwrap_or(name);
        let mut echo = true;
        match base {
            "_count" => shape.count = Some(parse_count(value, max_count)?),
            "_cursor" => {
                shape.cursor = Some(value.clone());
                echo = false;
            }
            "_format" => {}
            "_total" => match value.as_str() {
                "none" => shape.total = false,
                "estimate" | "accurate" => shape.total = true,
                _ => return Err(FhirError::bad_request("_total must be none, estimate or accurate")),
            },
            "_summary" => match value.as_str() {
                "count" => shape.summary_count = true,
                "data" => shape.summary_data = true,
                "true" => shape.summary_true = true,
                "text" => shape.summary_text = true,
                "false" => {}
                _ => {
                    return Err(FhirError::bad_request(format!(
                        "_summary must be true, text, data, count or false, not '{}'",
                        truncate(value)
                    )))
                }
            },
            "_elements" => {
                shape.elements = Some(
                    value
                        .split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect(),
                )
            }
            "_include" => shape.includes.push(parse_include(name, value)?),
            "_sort" => shape.sort = Some(value.clone()),
            "_page" => {
                let (key, offset) = value
                    .split_once(':')
                    .and_then(|(k, o)| Some((k.to_string(), o.parse::<usize>().ok()?)))
                    .ok_or_else(|| FhirError::bad_request("_page is not a page this server issued"))?;
                shape.page = Some((key, offset));
                echo = false;
            }
            "_revinclude" => shape.revincludes.push(parse_include(name, value)?),
            n if NOT_YET.contains(&n) && lenient => echo = false,
            n if NOT_YET.contains(&n) => {
                return Err(FhirError::bad_request(format!(
                    "Search parameter '{}' is not supported by this server yet",
                    truncate(name)
                )))
            }
            _ => {
                criteria.push((name.clone(), value.clone()));
                echo = false;
            }
        }
        if echo {
            shape.echo.push((name.clone(), value.clone()));
        }
    }
    Ok((shape, criteria))
}

/// Searches `resource_type`, within the compartment `(owner type, owner id)` when given.
pub fn search(
    engine: &Engine,
    guard: &Guard<'_>,
    exec: Exec<'_>,
    resource_type: &str,
    compartment: Option<(&str, &str)>,
    params: &[(String, String)],
    lenient: bool,
) -> FhirResult<FhirResponse> {
    if params.len() > MAX_PARAMS {
        return Err(FhirError::bad_request(format!(
            "A search may have at most {MAX_PARAMS} parameters"
        )));
    }
    let (shape, mut criteria) = parse_shape(params, engine.limits.max_count, lenient)?;
    // References given as absolute URLs of this server are local references.
    let own_base = format!("{}/", engine.base_url);
    for (name, value) in criteria.iter_mut() {
        let code = name.split([':', '.']).next().unwrap_or(name);
        if index::param(resource_type, code).is_some_and(|p| p.kind == SearchParamType::Reference) {
            *value = value.replace(&own_base, "");
        }
    }
    if lenient {
        // Leave out what this server cannot apply; the self link then shows what was used.
        criteria.retain(|pair| SearchQuery::parse(resource_type, std::slice::from_ref(pair)).is_ok());
    }
    let count = if shape.summary_count {
        0
    } else {
        shape.count.unwrap_or(engine.limits.default_count)
    };
    let mut query = SearchQuery::parse(resource_type, &criteria)?;
    if let Some((owner, id)) = compartment {
        query = query
            .in_compartment(owner, id, resource_type)
            .ok_or_else(|| FhirError::not_found(format!("{resource_type} is not part of the {owner} compartment")))?;
    }
    let scope = guard.search_scope(resource_type, &query, shape.summary_count)?;
    let query = guard.restrict(resource_type, query, &scope)?;
    let mut snapshot_next: Option<String> = None;
    let (found, total) = match exec {
        Exec::Standalone if shape.sort.is_some() || shape.page.is_some() => {
            // A snapshot only serves pages of the search that made it.
            // The restricted query is part of the scope: one actor's snapshot is not another's.
            let snapshot_scope = format!("{resource_type}|{query:?}|{:?}", shape.sort);
            let (key, ids, offset) = match &shape.page {
                Some((key, offset)) => {
                    let ids = engine.snapshots.get(key, &snapshot_scope).ok_or_else(|| {
                        FhirError::new(
                            StatusCode::GONE,
                            "expired",
                            "This page of results has expired; search again",
                        )
                    })?;
                    (key.clone(), ids, *offset)
                }
                None => {
                    let sort = SortKey::parse_list(resource_type, shape.sort.as_deref().unwrap_or(""))?;
                    let ids = engine
                        .store
                        .search_sorted_ids(resource_type, &query, &sort, MAX_SORTED + 1)?;
                    if ids.len() > MAX_SORTED {
                        return Err(FhirError::new(
                            StatusCode::BAD_REQUEST,
                            "too-costly",
                            format!("More than {MAX_SORTED} resources match: narrow the search to sort it"),
                        ));
                    }
                    let ids = std::sync::Arc::new(ids);
                    (
                        engine.snapshots.insert(snapshot_scope.clone(), ids.as_ref().clone()),
                        ids,
                        0,
                    )
                }
            };
            let mut found = Vec::new();
            for id in ids.iter().skip(offset).take(count) {
                if let Current::Found(s) = engine.store.read(resource_type, id)? {
                    found.push(s);
                }
            }
            let next_offset = offset.saturating_add(count);
            if next_offset < ids.len() && count > 0 {
                snapshot_next = Some(format!("{key}:{next_offset}"));
            }
            (found, ids.len() as u64)
        }
        Exec::Standalone if !shape.total => (
            engine
                .store
                .search_page(resource_type, &query, shape.cursor.as_deref(), count)?,
            0,
        ),
        Exec::Standalone => engine
            .store
            .search(resource_type, &query, shape.cursor.as_deref(), count)?,
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
    let included = included_resources(engine, guard, &shape, &found)?;
    let mut all_params = criteria.clone();
    all_params.extend(shape.echo.iter().filter(|(n, _)| n != "_count").cloned());
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(all_params.iter())
        .finish();
    let path = match compartment {
        Some((owner, id)) => format!("{owner}/{id}/{resource_type}"),
        None => resource_type.to_string(),
    };
    let self_url = format!(
        "{}/{path}?{encoded}{}_count={count}",
        engine.base_url,
        if encoded.is_empty() { "" } else { "&" }
    );
    let mut links = vec![("self", self_url.clone())];
    if let Some(page) = snapshot_next {
        links.push(("next", format!("{self_url}&_page={page}")));
    } else if shape.sort.is_none() && shape.page.is_none() && found.len() == count && count > 0 {
        if let Some(last) = found.last() {
            links.push(("next", format!("{self_url}&_cursor={}", last.id)));
        }
    }
    let mut writer = BundleWriter::new("searchset", shape.total.then_some(total), &links);
    found.iter().chain(included.iter()).for_each(|s| guard.disclose(s));
    for (s, mode) in found
        .iter()
        .map(|s| (s, "match"))
        .chain(included.iter().map(|s| (s, "include")))
    {
        let url = format!("{}/{}/{}", engine.base_url, s.resource_type, s.id);
        let search = [("search", json!({"mode": mode}))];
        match shaped(&shape, s)? {
            Some(v) => writer.entry(Some(&url), EntryResource::Json(&v), &search),
            None => writer.entry(Some(&url), EntryResource::Raw(&s.body), &search),
        }
    }
    Ok(FhirResponse::new(StatusCode::OK, Payload::Bytes(writer.finish())))
}

/// The resource as `_summary=data` / `_elements` want it, or None to serve it as stored.
fn shaped(shape: &Shape, s: &Stored) -> FhirResult<Option<Value>> {
    if !shape.summary_data && !shape.summary_true && !shape.summary_text && shape.elements.is_none() {
        return Ok(None);
    }
    let mut v: Value = serde_json::from_slice(&s.body)
        .map_err(|e| FhirError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", e.to_string()))?;
    let Value::Object(map) = &mut v else { return Ok(None) };
    if shape.summary_data {
        map.remove("text");
    }
    // The definition of a top-level property (`_x` primitive extensions follow `x`).
    let element =
        |key: &str| definitions::child(&s.resource_type, key.strip_prefix('_').unwrap_or(key)).map(|(e, _)| e);
    let always = |k: &str| matches!(k, "resourceType" | "id" | "meta");
    if shape.summary_true {
        keep_summary(&s.resource_type, map, true);
    }
    if shape.summary_text {
        map.retain(|k, _| always(k) || k == "text" || element(k).is_some_and(|e| e.min > 0));
    }
    if let Some(keep) = &shape.elements {
        map.retain(|k, _| matches!(k.as_str(), "resourceType" | "id" | "meta") || keep.iter().any(|e| e == k));
    }
    let meta = map.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(tags) = tags {
            tags.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED"
            }));
        }
    }
    Ok(Some(v))
}

/// Keeps only the elements marked summary in their definition, at every depth: inside
/// backbone elements, datatypes (a HumanName keeps its family, not its extensions) and
/// nested resources. `parent` is the element path or type that defines the object's keys.
fn keep_summary(parent: &str, map: &mut serde_json::Map<String, Value>, is_resource: bool) {
    map.retain(|key, value| {
        if is_resource && matches!(key.as_str(), "resourceType" | "id" | "meta") {
            return true;
        }
        // A primitive's `_x` (its id and extensions) follows `x`.
        let name = key.strip_prefix('_').unwrap_or(key);
        let Some((element, concrete)) = definitions::child(parent, name) else {
            return false;
        };
        if !element.is_summary {
            return false;
        }
        if key.starts_with('_') {
            return true;
        }
        let inner = if element.has_inline_children() {
            element.path
        } else if let Some(target) = element.content_reference {
            target.trim_start_matches('#')
        } else {
            concrete
        };
        let objects: Vec<&mut serde_json::Map<String, Value>> = match value {
            Value::Object(m) => vec![m],
            Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
            _ => Vec::new(),
        };
        for object in objects {
            if inner == "Resource" {
                let own = object
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                keep_summary(&own, object, true);
            } else {
                keep_summary(inner, object, false);
            }
        }
        true
    });
}

/// The resources `_include` and `_revinclude` add, without duplicates or matches.
/// Resources the actor may not see are left out (and not followed further).
fn included_resources(engine: &Engine, guard: &Guard<'_>, shape: &Shape, found: &[Stored]) -> FhirResult<Vec<Stored>> {
    let mut seen: HashSet<(String, String)> = found.iter().map(|s| (s.resource_type.clone(), s.id.clone())).collect();
    let mut out: Vec<Stored> = Vec::new();
    let mut frontier: Vec<Stored> = found.to_vec();
    for round in 0..=MAX_ITERATIONS {
        let mut next = Vec::new();
        let active = |i: &&Include| round == 0 || i.iterate;
        for inc in shape.includes.iter().filter(active) {
            for s in &frontier {
                for (ty, id) in references_of(s, inc) {
                    if out.len() + next.len() >= MAX_INCLUDED || !seen.insert((ty.clone(), id.clone())) {
                        continue;
                    }
                    if let Current::Found(r) = engine.store.read(&ty, &id)? {
                        if guard.visible(&r) {
                            next.push(r);
                        }
                    }
                }
            }
        }
        for inc in shape.revincludes.iter().filter(active) {
            let (Some(param), false) = (&inc.param, frontier.is_empty()) else {
                continue;
            };
            for chunk in frontier.chunks(50) {
                let targets: Vec<String> = chunk
                    .iter()
                    .filter(|s| inc.target.as_ref().is_none_or(|t| *t == s.resource_type))
                    .map(|s| format!("{}/{}", s.resource_type, s.id))
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                let query = SearchQuery::parse(&inc.source, &[(param.clone(), targets.join(","))])?;
                let referring = engine.store.search_page(&inc.source, &query, None, MAX_INCLUDED)?;
                for r in referring {
                    if out.len() + next.len() < MAX_INCLUDED
                        && guard.visible(&r)
                        && seen.insert((r.resource_type.clone(), r.id.clone()))
                    {
                        next.push(r);
                    }
                }
            }
        }
        if next.is_empty() {
            break;
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    Ok(out)
}

/// The (type, id) targets of a resource's references that an `_include` names.
fn references_of(s: &Stored, inc: &Include) -> Vec<(String, String)> {
    if inc.source != "*" && inc.source != s.resource_type {
        return Vec::new();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&s.body) else {
        return Vec::new();
    };
    index::extract(&s.resource_type, &body)
        .into_iter()
        .filter(|row| index::param(&s.resource_type, row.param).is_some_and(|p| p.kind == SearchParamType::Reference))
        .filter(|row| inc.param.as_deref().is_none_or(|p| p == row.param))
        .filter_map(|row| Some((row.system?, row.value)))
        .filter(|(ty, _)| inc.target.as_ref().is_none_or(|t| t == ty))
        .collect()
}
