//! One module per FHIR interaction, plus the helpers they share.

pub mod bundle;
pub mod capabilities;
pub mod create;
pub mod delete;
pub mod everything;
pub mod history;
pub mod patch;
pub mod read;
pub mod search;
pub mod update;

use axum::http::StatusCode;
use serde_json::Value;
use sijill_fhir::validate::validate_resource;
use sijill_store::{SearchQuery, StoreTx, Stored};

use crate::engine::{truncate, Engine, FhirResponse, Payload, RequestBody};
use crate::error::{FhirError, FhirResult};

/// The id in a local Reference `{"reference": "Type/id"}` to a resource of `resource_type`.
pub fn reference_id<'v>(reference: &'v Value, resource_type: &str) -> Option<&'v str> {
    reference["reference"]
        .as_str()?
        .strip_prefix(resource_type)?
        .strip_prefix('/')
}

/// The response for a stored version: Location, ETag, Last-Modified and the body.
pub fn resource_response(engine: &Engine, status: StatusCode, stored: &Stored) -> FhirResponse {
    FhirResponse {
        status,
        location: Some(engine.version_url(&stored.resource_type, &stored.id, stored.version)),
        version: Some(stored.version),
        last_modified: Some(stored.last_updated.clone()),
        payload: if stored.deleted {
            Payload::None
        } else {
            Payload::Stored(stored.body.clone())
        },
    }
}

/// Takes the resource out of a request body and checks it: a resource of `resource_type`
/// (with `id` equal to `expected_id` when given) that passes validation.
pub fn checked_resource(body: RequestBody, resource_type: &str, expected_id: Option<&str>) -> FhirResult<Value> {
    let resource = match body {
        RequestBody::Resource(v) => v,
        RequestBody::None => return Err(FhirError::bad_request("The request needs a resource in its body")),
        RequestBody::JsonPatch(_) => {
            return Err(FhirError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-supported",
                "A JSON Patch body is only accepted by PATCH",
            ))
        }
    };
    let Some(actual) = resource.get("resourceType").and_then(Value::as_str) else {
        return Err(FhirError::bad_request(
            "The body is not a FHIR resource: resourceType is missing",
        ));
    };
    if actual != resource_type {
        return Err(FhirError::bad_request(format!(
            "The resource is a {} but the URL is for {resource_type}",
            truncate(actual)
        )));
    }
    if let Some(expected) = expected_id {
        match resource.get("id").and_then(Value::as_str) {
            Some(id) if id == expected => {}
            Some(id) => {
                return Err(FhirError::bad_request(format!(
                    "The resource id '{}' does not match the id '{}' in the URL",
                    truncate(id),
                    truncate(expected)
                )))
            }
            None => {
                return Err(FhirError::bad_request(
                    "An update needs the resource id in the body (Resource.id)",
                ))
            }
        }
    }
    let issues = validate_resource(&resource);
    if !issues.is_empty() {
        return Err(FhirError {
            status: StatusCode::BAD_REQUEST,
            issues,
        });
    }
    crate::scheduling::check_resource(resource_type, &resource)?;
    Ok(resource)
}

/// Parses an ETag or version value: `W/"3"`, `"3"` or `3`.
pub fn parse_version(s: &str) -> FhirResult<u64> {
    let t = s.trim().trim_start_matches("W/").trim_matches('"');
    t.parse::<u64>().map_err(|_| {
        FhirError::bad_request(format!(
            "'{}' is not a resource version (expected W/\"n\")",
            truncate(s)
        ))
    })
}

/// Parses the criteria of a conditional interaction (`identifier=x&active=true`).
pub fn conditional_query(resource_type: &str, pairs: &[(String, String)]) -> FhirResult<SearchQuery> {
    if pairs.is_empty() {
        return Err(FhirError::bad_request(
            "A conditional interaction needs search criteria",
        ));
    }
    Ok(SearchQuery::parse(resource_type, pairs)?)
}

/// Parses a query string such as `identifier=a|b&name=x` into decoded pairs.
pub fn parse_query_string(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The criteria of `If-None-Exist` / `ifNoneExist`: a query string, tolerating a leading
/// `?` or `Type?` as some clients send.
pub fn if_none_exist_query(q: &str) -> Vec<(String, String)> {
    parse_query_string(q.split_once('?').map_or(q, |(_, rest)| rest))
}

/// The ids of at most two resources matching conditional criteria (two is enough to know
/// there is more than one).
/// The condition is locked first, so that concurrent conditional writes with the same
/// criteria take turns.
pub fn matching_ids(tx: &mut dyn StoreTx, resource_type: &str, query: &SearchQuery) -> FhirResult<Vec<String>> {
    tx.lock_conditions(&[(resource_type, query)])?;
    Ok(tx.search_ids(resource_type, query, 2)?)
}

/// The criteria of an interaction addressed by search (`Type?criteria`), or None when it
/// names its resource by id.
pub fn criteria_unless_id(
    resource_type: &str,
    id: Option<&str>,
    query: &[(String, String)],
) -> FhirResult<Option<SearchQuery>> {
    match id {
        Some(_) => Ok(None),
        None => Ok(Some(conditional_query(resource_type, query)?)),
    }
}

/// The one resource an interaction addresses: its id, or the single match of its
/// criteria (None when nothing matches; 412 when several do).
pub fn resolve_target(
    tx: &mut dyn StoreTx,
    resource_type: &str,
    id: Option<&str>,
    criteria: Option<&SearchQuery>,
) -> FhirResult<Option<String>> {
    match (id, criteria) {
        (Some(id), _) => Ok(Some(id.to_string())),
        (None, Some(q)) => match matching_ids(tx, resource_type, q)?.as_slice() {
            [] => Ok(None),
            [found] => Ok(Some(found.clone())),
            _ => Err(multiple_matches(resource_type)),
        },
        (None, None) => Ok(None),
    }
}

/// The 412 of a conditional interaction whose criteria match several resources.
pub fn multiple_matches(resource_type: &str) -> FhirError {
    FhirError::new(
        StatusCode::PRECONDITION_FAILED,
        "multiple-matches",
        format!("The criteria match more than one {resource_type}; be more selective"),
    )
}
