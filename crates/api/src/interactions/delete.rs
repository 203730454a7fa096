//! delete (DELETE `Type/id`) and conditional delete (DELETE `Type?criteria`, single match).
//! A delete is a new version; history keeps every earlier one.

use axum::http::StatusCode;

use super::{conditional_query, matching_ids, multiple_matches, parse_version};
use crate::engine::{Engine, Exec, FhirRequest, FhirResponse, Payload};
use crate::error::FhirResult;

/// DELETE `Type/id` (id given) or `Type?criteria` (id None).
pub fn delete(
    engine: &Engine,
    exec: Exec<'_>,
    resource_type: &str,
    id: Option<&str>,
    req: FhirRequest,
) -> FhirResult<FhirResponse> {
    let if_match = req.conditions.if_match.as_deref().map(parse_version).transpose()?;
    let query = match id {
        Some(_) => None,
        None => Some(conditional_query(resource_type, &req.query)?),
    };
    engine.with_tx(exec, |tx| {
        let target = match (id, &query) {
            (Some(id), _) => Some(id.to_string()),
            (None, Some(q)) => match matching_ids(tx, resource_type, q)?.as_slice() {
                [] => None,
                [found] => Some(found.clone()),
                _ => return Err(multiple_matches(resource_type)),
            },
            (None, None) => None,
        };
        let deleted = match target {
            Some(target) => tx.delete(resource_type, &target, if_match)?,
            None => None,
        };
        let mut response = FhirResponse::new(StatusCode::NO_CONTENT, Payload::None);
        if let Some(stored) = deleted {
            response.version = Some(stored.version);
            response.last_modified = Some(stored.last_updated);
        }
        Ok(response)
    })
}
