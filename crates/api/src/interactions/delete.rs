//! delete (DELETE `Type/id`) and conditional delete (DELETE `Type?criteria`, single match).
//! A delete is a new version; history keeps every earlier one.

use axum::http::StatusCode;

use super::{criteria_unless_id, parse_version, resolve_target};
use crate::access::Guard;
use crate::engine::{Engine, Exec, FhirRequest, FhirResponse, Payload};
use crate::error::FhirResult;
use sijill_auth::Action;
use sijill_store::Current;

/// DELETE `Type/id` (id given) or `Type?criteria` (id None).
pub fn delete(
    engine: &Engine,
    guard: &Guard<'_>,
    exec: Exec<'_>,
    resource_type: &str,
    id: Option<&str>,
    req: FhirRequest,
) -> FhirResult<FhirResponse> {
    let if_match = req.conditions.if_match.as_deref().map(parse_version).transpose()?;
    let criteria = criteria_unless_id(resource_type, id, &req.query)?;
    engine.with_tx(guard, exec, |tx| {
        let target = resolve_target(tx, resource_type, id, criteria.as_ref())?;
        let deleted = match target {
            Some(target) => {
                if let Current::Found(stored) = tx.read(resource_type, &target)? {
                    guard.check_write_existing(Action::Delete, &stored)?;
                    guard.disclose(&stored);
                }
                tx.delete(resource_type, &target, if_match)?
            }
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
