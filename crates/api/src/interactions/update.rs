//! update (PUT `Type/id`, create-on-update with a client id) and conditional update
//! (PUT `Type?criteria`).

use axum::http::StatusCode;

use super::{checked_resource, conditional_query, matching_ids, multiple_matches, parse_version, resource_response};
use crate::access::Guard;
use crate::engine::{truncate, Engine, Exec, FhirRequest, FhirResponse};
use crate::error::{FhirError, FhirResult};
use serde_json::Value;
use sijill_auth::Action;
use sijill_store::{Current, StoreTx};

/// PUT `Type/id` (id given) or PUT `Type?criteria` (id None).
pub fn update(
    engine: &Engine,
    guard: &Guard<'_>,
    exec: Exec<'_>,
    resource_type: &str,
    id: Option<&str>,
    req: FhirRequest,
) -> FhirResult<FhirResponse> {
    let if_match = req.conditions.if_match.as_deref().map(parse_version).transpose()?;
    match id {
        Some(id) => {
            let resource = checked_resource(req.body, resource_type, Some(id))?;
            engine.with_tx(guard, exec, |tx| {
                check_replacing(guard, tx, resource_type, id, &resource)?;
                let (stored, created) = tx.update(resource_type, id, resource, if_match)?;
                let status = if created { StatusCode::CREATED } else { StatusCode::OK };
                guard.disclose(&stored);
                Ok(resource_response(engine, status, &stored))
            })
        }
        None => {
            let query = conditional_query(resource_type, &req.query)?;
            let resource = checked_resource(req.body, resource_type, None)?;
            let body_id = resource.get("id").and_then(|v| v.as_str()).map(str::to_string);
            engine.with_tx(guard, exec, |tx| {
                let target = match matching_ids(tx, resource_type, &query)?.as_slice() {
                    [] => None,
                    [found] => Some(found.clone()),
                    _ => return Err(multiple_matches(resource_type)),
                };
                let (stored, created) = match (target, body_id) {
                    (Some(found), Some(body_id)) if found != body_id => {
                        return Err(FhirError::bad_request(format!(
                            "The criteria match {resource_type}/{found} but the body has id '{}'",
                            truncate(&body_id)
                        )))
                    }
                    (Some(found), _) => {
                        check_replacing(guard, tx, resource_type, &found, &resource)?;
                        tx.update(resource_type, &found, resource, if_match)?
                    }
                    (None, Some(body_id)) => {
                        // The id names a resource the criteria did not match: do not overwrite it.
                        if let sijill_store::Current::Found(_) = tx.read(resource_type, &body_id)? {
                            return Err(FhirError::new(
                                StatusCode::CONFLICT,
                                "conflict",
                                format!(
                                    "{resource_type}/{} exists but does not match the criteria",
                                    truncate(&body_id)
                                ),
                            ));
                        }
                        guard.check_write(Action::Create, resource_type, &resource)?;
                        tx.update(resource_type, &body_id, resource, if_match)?
                    }
                    (None, None) => {
                        guard.check_write(Action::Create, resource_type, &resource)?;
                        (tx.create(resource_type, resource, None)?, true)
                    }
                };
                let status = if created { StatusCode::CREATED } else { StatusCode::OK };
                guard.disclose(&stored);
                Ok(resource_response(engine, status, &stored))
            })
        }
    }
}

/// Checks that the actor may replace `resource_type/id` (when it exists) with `resource`,
/// or create it (when it does not).
fn check_replacing(
    guard: &Guard<'_>,
    tx: &mut dyn StoreTx,
    resource_type: &str,
    id: &str,
    resource: &Value,
) -> FhirResult<()> {
    if guard.sees_through(Action::Update, resource_type) && guard.sees_through(Action::Create, resource_type) {
        return Ok(());
    }
    match tx.read(resource_type, id)? {
        Current::Found(stored) => {
            guard.check_write_existing(Action::Update, &stored)?;
            guard.check_write(Action::Update, resource_type, resource)
        }
        _ => guard.check_write(Action::Create, resource_type, resource),
    }
}
