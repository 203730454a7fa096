//! batch and transaction Bundles (POST to the server base).
//!
//! A transaction is all or nothing: every entry runs inside one store transaction, in the
//! order the specification gives (DELETE, POST, PUT/PATCH, GET). `urn:uuid:`/`urn:oid:`
//! fullUrls get their ids before anything is written, and every reference to them —
//! at any depth, extensions included — is rewritten; conditional references
//! (`Patient?identifier=…`) are resolved to the one resource they match. A batch runs each
//! entry on its own and reports each outcome.

use std::collections::HashMap;

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::{json, Value};
use sijill_fhir::outcome::operation_outcome;
use sijill_fhir::references::rewrite_references;
use sijill_store::{SearchQuery, StoreTx};

use super::{
    checked_resource, conditional_query, if_none_exist_query, multiple_matches, parse_query_string, resource_response,
};
use crate::access::Guard;
use crate::bundle_writer::{BundleWriter, EntryResource};
use crate::context::RequestContext;
use crate::engine::{truncate, Conditions, Engine, Exec, FhirRequest, FhirResponse, Method, Payload, RequestBody};
use crate::error::{FhirError, FhirResult};

/// Most GET entries in one Bundle (each may return a page of resources).
const MAX_GET_ENTRIES: usize = 200;

/// One parsed Bundle entry.
struct Entry {
    index: usize,
    full_url: Option<String>,
    method: Method,
    resource_type: Option<String>,
    request: FhirRequest,
}

/// Processes a batch or transaction Bundle.
pub fn process(engine: &Engine, guard: &Guard<'_>, req: FhirRequest) -> FhirResult<FhirResponse> {
    let ctx = guard.context();
    let RequestBody::Resource(mut bundle) = req.body else {
        return Err(FhirError::bad_request(
            "POST to the server base needs a batch or transaction Bundle",
        ));
    };
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::bad_request(
            "POST to the server base needs a Bundle resource",
        ));
    }
    let kind = bundle.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    // Taken out, not copied: a Bundle of a patient's history is megabytes of JSON.
    let entries = match bundle.get_mut("entry").map(Value::take) {
        None => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(FhirError::bad_request("Bundle.entry must be an array")),
    };
    if entries.len() > engine.limits.max_bundle_entries {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            format!("A Bundle may have at most {} entries", engine.limits.max_bundle_entries),
        ));
    }
    let gets = entries
        .iter()
        .filter(|e| e.pointer("/request/method").and_then(Value::as_str) == Some("GET"))
        .count();
    if gets > MAX_GET_ENTRIES {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            format!("A Bundle may have at most {MAX_GET_ENTRIES} GET entries"),
        ));
    }
    match kind.as_str() {
        "transaction" => transaction(engine, guard, entries),
        "batch" => Ok(batch(engine, ctx, entries)),
        other => Err(FhirError::bad_request(format!(
            "Bundle.type must be 'transaction' or 'batch' to be processed, not '{}'",
            truncate(other)
        ))),
    }
}

/// Adds the entry's position to an error.
fn at_entry(index: usize, mut e: FhirError) -> FhirError {
    for issue in &mut e.issues {
        issue.diagnostics = format!("Bundle.entry[{index}]: {}", issue.diagnostics);
        if issue.expression.is_empty() {
            issue.expression = format!("Bundle.entry[{index}]");
        } else if let Some(rest) = issue.expression.split_once('.').map(|(_, r)| r.to_string()) {
            issue.expression = format!("Bundle.entry[{index}].resource.{rest}");
        }
    }
    e
}

fn parse_entry(engine: &Engine, index: usize, entry: Value) -> FhirResult<Entry> {
    let Value::Object(mut entry) = entry else {
        return Err(FhirError::bad_request("a Bundle entry must be an object"));
    };
    let request = match entry.remove("request") {
        Some(Value::Object(r)) => r,
        _ => return Err(FhirError::bad_request("entry.request (method and url) is required")),
    };
    let text = |name: &str| request.get(name).and_then(Value::as_str).map(str::to_string);
    let method = text("method")
        .as_deref()
        .and_then(Method::parse)
        .ok_or_else(|| FhirError::bad_request("entry.request.method must be GET, HEAD, POST, PUT, PATCH or DELETE"))?;
    let url = text("url").ok_or_else(|| FhirError::bad_request("entry.request.url is required"))?;
    let url = relative_url(&engine.base_url, &url);
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query_string(q)),
        None => (url.clone(), Vec::new()),
    };
    let resource_type = path.split('/').next().filter(|s| !s.is_empty()).map(str::to_string);
    let body = match (method, entry.remove("resource")) {
        (Method::Patch, Some(binary)) => RequestBody::JsonPatch(patch_from_binary(&binary)?),
        (_, Some(resource)) => RequestBody::Resource(resource),
        (_, None) => RequestBody::None,
    };
    let full_url = entry.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    Ok(Entry {
        index,
        full_url,
        method,
        resource_type,
        request: FhirRequest {
            method,
            path,
            query,
            conditions: Conditions {
                if_match: text("ifMatch"),
                if_none_match: text("ifNoneMatch"),
                if_modified_since: text("ifModifiedSince"),
                if_none_exist: text("ifNoneExist"),
            },
            body,
            lenient: false,
        },
    })
}

/// The entry URL relative to the server base. An absolute URL of another server (as in
/// Bundles prepared elsewhere) is taken from its first resource-type segment on.
fn relative_url(base: &str, url: &str) -> String {
    if let Some(rest) = url.strip_prefix(base) {
        return rest.trim_start_matches('/').to_string();
    }
    if url.contains("://") {
        let (path, query) = url.split_once('?').map_or((url, None), |(p, q)| (p, Some(q)));
        let segments: Vec<&str> = path.split('/').collect();
        if let Some(i) = segments
            .iter()
            .position(|s| sijill_fhir::definitions::is_resource_type(s))
        {
            let mut out = segments[i..].join("/");
            if let Some(q) = query {
                out.push('?');
                out.push_str(q);
            }
            return out;
        }
    }
    url.trim_start_matches('/').to_string()
}

/// `Type/id` at the end of a RESTful URL (`http://host/fhir/Patient/1` → `Patient/1`).
fn restful_tail(url: &str) -> Option<String> {
    if url.starts_with("urn:") {
        return None;
    }
    let mut parts = url.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    sijill_fhir::definitions::is_resource_type(ty).then(|| format!("{ty}/{id}"))
}

/// A PATCH entry carries its JSON Patch as a Binary resource (base64 data).
fn patch_from_binary(binary: &Value) -> FhirResult<Value> {
    let data = binary
        .get("data")
        .and_then(Value::as_str)
        .filter(|_| binary.get("resourceType").and_then(Value::as_str) == Some("Binary"))
        .ok_or_else(|| FhirError::bad_request("a PATCH entry needs a Binary resource holding a JSON Patch"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| FhirError::bad_request("the Binary of a PATCH entry is not base64"))?;
    serde_json::from_slice(&bytes).map_err(|e| FhirError::bad_request(format!("the JSON Patch is not JSON: {e}")))
}

/// Processing order of the specification: DELETE, POST, PUT/PATCH, GET.
fn order(method: Method) -> u8 {
    match method {
        Method::Delete => 0,
        Method::Post => 1,
        Method::Put | Method::Patch => 2,
        Method::Get => 3,
    }
}

/// Finds the ids matching a query (at most `limit`): through the running transaction, or
/// through the store before the transaction starts.
type Finder<'a> = dyn FnMut(&str, &SearchQuery, usize) -> FhirResult<Vec<String>> + 'a;

/// Resolves one reference: a fullUrl of this Bundle, or a conditional reference.
fn resolve_reference(
    find: &mut Finder<'_>,
    ids: &HashMap<String, String>,
    cache: &mut HashMap<String, String>,
    reference: &str,
) -> FhirResult<Option<String>> {
    if let Some(local) = ids.get(reference) {
        return Ok(Some(local.clone()));
    }
    let Some((ty, q)) = reference.split_once('?') else {
        if reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:") {
            return Err(FhirError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("reference '{}' names no entry of this Bundle", truncate(reference)),
            ));
        }
        return Ok(None);
    };
    if let Some(found) = cache.get(reference) {
        return Ok(Some(found.clone()));
    }
    let query: SearchQuery = conditional_query(ty, &parse_query_string(q))?;
    let found = match find(ty, &query, 2)?.as_slice() {
        [id] => format!("{ty}/{id}"),
        [] => {
            return Err(FhirError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("conditional reference '{}' matches no resource", truncate(reference)),
            ))
        }
        _ => return Err(multiple_matches(ty)),
    };
    cache.insert(reference.to_string(), found.clone());
    Ok(Some(found))
}

/// Rewrites every reference of a request body; the first failure is returned.
fn rewrite_body(
    find: &mut Finder<'_>,
    ids: &HashMap<String, String>,
    cache: &mut HashMap<String, String>,
    body: &mut RequestBody,
) -> FhirResult<()> {
    let RequestBody::Resource(resource) = body else {
        return Ok(());
    };
    let mut failure = None;
    rewrite_references(resource, &mut |r| {
        if failure.is_some() {
            return None;
        }
        match resolve_reference(find, ids, cache, r) {
            Ok(found) => found,
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    });
    failure.map_or(Ok(()), Err)
}

/// A finder that searches inside the running transaction.
fn tx_finder(tx: &mut dyn StoreTx) -> impl FnMut(&str, &SearchQuery, usize) -> FhirResult<Vec<String>> + '_ {
    move |ty, q, limit| Ok(tx.search_ids(ty, q, limit)?)
}

/// The 409 of a transaction whose conditional parts changed between preparation and write.
fn changed_meanwhile(index: Option<usize>) -> FhirError {
    let e = FhirError::new(
        StatusCode::CONFLICT,
        "conflict",
        "the resources matched by a conditional reference, conditional update or ifNoneExist changed while the \
         transaction was prepared; send it again",
    );
    match index {
        Some(i) => at_entry(i, e),
        None => e,
    }
}

/// Refuses a transaction in which two entries change the same resource.
fn refuse_overlaps(entries: &[Entry]) -> FhirResult<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in entries
        .iter()
        .filter(|e| e.method != Method::Get && e.method != Method::Post)
    {
        if e.request.path.split('/').count() != 2 || !e.request.query.is_empty() {
            continue;
        }
        if let Some(first) = seen.insert(e.request.path.as_str(), e.index) {
            return Err(at_entry(
                e.index,
                FhirError::bad_request(format!(
                    "Bundle.entry[{first}] already changes {}; a transaction may change a resource only once",
                    truncate(&e.request.path)
                )),
            ));
        }
    }
    Ok(())
}

fn response_members(status: StatusCode, r: &FhirResponse, outcome: Option<Value>) -> Vec<(&'static str, Value)> {
    let mut response = json!({"status": status_line(status)});
    if let Some(location) = &r.location {
        response["location"] = json!(location);
    }
    if let Some(v) = r.version {
        response["etag"] = json!(format!("W/\"{v}\""));
    }
    if let Some(lm) = &r.last_modified {
        response["lastModified"] = json!(lm);
    }
    if let Some(oo) = outcome {
        response["outcome"] = oo;
    }
    vec![("response", response)]
}

/// Adds the entry of a response Bundle for one entry's outcome (with the resource when
/// `with_resource`).
fn write_response_entry(writer: &mut BundleWriter, r: &FhirResponse, with_resource: bool) {
    let resource = match (&r.payload, with_resource) {
        (Payload::Stored(b), true) => EntryResource::Raw(b),
        (Payload::Bytes(b), true) => EntryResource::Raw(b),
        _ => EntryResource::None,
    };
    let full_url = r.location.as_deref().and_then(|l| l.split("/_history/").next());
    writer.entry(full_url, resource, &response_members(r.status, r, None));
}

fn status_line(status: StatusCode) -> String {
    format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))
}

fn transaction(engine: &Engine, guard: &Guard<'_>, raw: Vec<Value>) -> FhirResult<FhirResponse> {
    let ctx = guard.context();
    let mut entries = Vec::with_capacity(raw.len());
    for (i, e) in raw.into_iter().enumerate() {
        let mut entry = parse_entry(engine, i, e).map_err(|e| at_entry(i, e))?;
        // POSTs are validated here, outside the write lock; other methods validate when run.
        if entry.method == Method::Post {
            let rt = entry.resource_type.clone().unwrap_or_default();
            let body = std::mem::replace(&mut entry.request.body, RequestBody::None);
            let resource = checked_resource(body, &rt, None).map_err(|e| at_entry(i, e))?;
            entry.request.body = RequestBody::Resource(resource);
        }
        entries.push(entry);
    }
    // Ids for new resources, so references to them can be rewritten before any write.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut new_ids: HashMap<usize, String> = HashMap::new();
    for e in &entries {
        let Some(rt) = &e.resource_type else { continue };
        match e.method {
            Method::Post => {
                let id = uuid::Uuid::new_v4().to_string();
                if let Some(full_url) = &e.full_url {
                    ids.insert(full_url.clone(), format!("{rt}/{id}"));
                    // A RESTful fullUrl is also referred to in its relative form `Type/id`.
                    if let Some(relative) = restful_tail(full_url) {
                        ids.insert(relative, format!("{rt}/{id}"));
                    }
                }
                new_ids.insert(e.index, id);
            }
            Method::Put => {
                if let (Some(full_url), Some(id)) = (&e.full_url, e.request.path.split('/').nth(1)) {
                    ids.insert(full_url.clone(), format!("{rt}/{id}"));
                }
            }
            _ => {}
        }
    }
    // Outside the write lock: resolve conditional creates and references with a reader,
    // rewrite the references of new resources and prepare their stored form. Inside the
    // lock only the checks that these answers still hold and the inserts remain.
    let mut store_finder = |ty: &str, q: &SearchQuery, limit: usize| -> FhirResult<Vec<String>> {
        Ok(engine.store.search_ids(ty, q, limit)?)
    };
    let mut conditions: Vec<(usize, String, SearchQuery, Vec<String>)> = Vec::new();
    // Conditional updates become updates of the one resource they match (or creates with
    // a new id), so that references to their fullUrl can be rewritten too.
    for e in entries
        .iter_mut()
        .filter(|e| e.method == Method::Put && !e.request.query.is_empty())
    {
        let Some(rt) = e.resource_type.clone() else { continue };
        if e.request.path.contains('/') {
            continue;
        }
        let query = conditional_query(&rt, &e.request.query).map_err(|x| at_entry(e.index, x))?;
        let found = store_finder(&rt, &query, 2)?;
        let body_id = match &e.request.body {
            RequestBody::Resource(r) => r.get("id").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let id = match (found.as_slice(), body_id) {
            ([], Some(body_id)) => body_id,
            ([], None) => uuid::Uuid::new_v4().to_string(),
            ([one], Some(body_id)) if *one != body_id => {
                return Err(at_entry(
                    e.index,
                    FhirError::bad_request(format!(
                        "The criteria match {rt}/{one} but the body has id '{}'",
                        truncate(&body_id)
                    )),
                ))
            }
            ([one], _) => one.clone(),
            _ => return Err(at_entry(e.index, multiple_matches(&rt))),
        };
        if let RequestBody::Resource(Value::Object(r)) = &mut e.request.body {
            r.insert("id".into(), Value::String(id.clone()));
        }
        e.request.path = format!("{rt}/{id}");
        e.request.query.clear();
        if let Some(full_url) = &e.full_url {
            ids.insert(full_url.clone(), format!("{rt}/{id}"));
        }
        conditions.push((e.index, rt, query, found));
    }
    refuse_overlaps(&entries)?;
    let mut existing: HashMap<usize, String> = HashMap::new();
    for e in entries.iter().filter(|e| e.method == Method::Post) {
        let (Some(q), Some(rt)) = (&e.request.conditions.if_none_exist, &e.resource_type) else {
            continue;
        };
        let query = conditional_query(rt, &if_none_exist_query(q)).map_err(|x| at_entry(e.index, x))?;
        let found = store_finder(rt, &query, 2)?;
        match found.as_slice() {
            [] => {}
            [id] => {
                if let Some(full_url) = &e.full_url {
                    ids.insert(full_url.clone(), format!("{rt}/{id}"));
                }
                existing.insert(e.index, id.clone());
            }
            _ => return Err(at_entry(e.index, multiple_matches(rt))),
        }
        conditions.push((e.index, rt.clone(), query, found));
    }
    let last_updated = sijill_store::now_instant();
    let mut cache = HashMap::new();
    let mut prepared: HashMap<usize, sijill_store::PreparedResource> = HashMap::new();
    for e in entries
        .iter_mut()
        .filter(|e| e.method == Method::Post && !existing.contains_key(&e.index))
    {
        let i = e.index;
        rewrite_body(&mut store_finder, &ids, &mut cache, &mut e.request.body).map_err(|x| at_entry(i, x))?;
        let RequestBody::Resource(resource) = std::mem::replace(&mut e.request.body, RequestBody::None) else {
            return Err(at_entry(i, FhirError::bad_request("POST entry without resource")));
        };
        let rt = e.resource_type.clone().unwrap_or_default();
        // The same rules as a create on its own, on the body with its references resolved.
        guard
            .check_write(sijill_auth::Action::Create, &rt, &resource)
            .map_err(|x| at_entry(i, x))?;
        let id = new_ids.get(&i).cloned().unwrap_or_default();
        prepared.insert(i, sijill_store::prepare_new(&rt, &id, resource, &last_updated)?);
    }
    let resolved_before: Vec<(String, String)> = cache.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut by_order: Vec<usize> = (0..entries.len()).collect();
    by_order.sort_by_key(|&i| order(entries[i].method));
    let mut results: Vec<Option<FhirResponse>> = vec![None; entries.len()];
    engine.with_tx(guard, Exec::Standalone, |tx| {
        let locks: Vec<(&str, &SearchQuery)> = conditions.iter().map(|(_, rt, q, _)| (rt.as_str(), q)).collect();
        tx.lock_conditions(&locks)?;
        for (index, rt, query, found) in &conditions {
            if tx.search_ids(rt, query, 2)? != *found {
                return Err(changed_meanwhile(Some(*index)));
            }
        }
        for (reference, target) in &resolved_before {
            let mut check = HashMap::new();
            let now = resolve_reference(&mut tx_finder(tx), &HashMap::new(), &mut check, reference)
                .ok()
                .flatten();
            if now.as_ref() != Some(target) {
                return Err(changed_meanwhile(None));
            }
        }
        for &i in &by_order {
            let e = &mut entries[i];
            let response = if let Some(ready) = prepared.remove(&i) {
                let stored = tx.insert_prepared(ready)?;
                guard.disclose(&stored);
                resource_response(engine, StatusCode::CREATED, &stored)
            } else if let Some(id) = existing.get(&i) {
                let rt = e.resource_type.clone().unwrap_or_default();
                match tx.read(&rt, id)? {
                    sijill_store::Current::Found(s) => {
                        // A conditional create that matched answers with the match: only if
                        // the actor may see it.
                        guard.check_visible(&s).map_err(|x| at_entry(i, x))?;
                        guard.disclose(&s);
                        resource_response(engine, StatusCode::OK, &s)
                    }
                    _ => return Err(changed_meanwhile(Some(i))),
                }
            } else {
                rewrite_body(&mut tx_finder(tx), &ids, &mut cache, &mut e.request.body).map_err(|x| at_entry(i, x))?;
                let request = std::mem::replace(&mut e.request.body, RequestBody::None);
                let request = FhirRequest {
                    body: request,
                    ..e.request.clone()
                };
                engine.execute_in(ctx, tx, request).map_err(|x| at_entry(i, x))?
            };
            results[i] = Some(response);
        }
        Ok(())
    })?;
    let mut writer = BundleWriter::new("transaction-response", None, &[]);
    for (e, r) in entries.iter().zip(results) {
        let Some(r) = r else { continue };
        write_response_entry(&mut writer, &r, e.method == Method::Get);
    }
    Ok(FhirResponse::new(StatusCode::OK, Payload::Bytes(writer.finish())))
}

fn batch(engine: &Engine, ctx: &RequestContext, raw: Vec<Value>) -> FhirResponse {
    let mut writer = BundleWriter::new("batch-response", None, &[]);
    let no_ids = HashMap::new();
    for (i, e) in raw.into_iter().enumerate() {
        let result = parse_entry(engine, i, e).and_then(|mut entry| {
            if entry.method == Method::Get {
                return engine.execute(ctx, entry.request);
            }
            // The entry's own interaction records its audit events in this transaction.
            engine.in_transaction(Exec::Standalone, |tx| {
                let mut cache = HashMap::new();
                rewrite_body(&mut tx_finder(tx), &no_ids, &mut cache, &mut entry.request.body)?;
                engine.execute_in(ctx, tx, entry.request)
            })
        });
        match result {
            Ok(r) => write_response_entry(&mut writer, &r, true),
            Err(e) => {
                let e = at_entry(i, e);
                let outcome = operation_outcome(&e.issues);
                let members = response_members(e.status, &FhirResponse::new(e.status, Payload::None), Some(outcome));
                writer.entry(None, EntryResource::None, &members);
            }
        }
    }
    FhirResponse::new(StatusCode::OK, Payload::Bytes(writer.finish()))
}
