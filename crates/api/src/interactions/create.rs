//! create (POST `Type`), with conditional create (`If-None-Exist`).

use axum::http::StatusCode;
use sijill_store::Current;

use super::{
    checked_resource, conditional_query, if_none_exist_query, matching_ids, multiple_matches, resource_response,
};
use crate::access::Guard;
use crate::engine::{Engine, Exec, FhirRequest, FhirResponse};
use crate::error::{FhirError, FhirResult};
use sijill_auth::Action;

/// POST `Type`: a new resource with a server-assigned id (an id in the body is ignored).
pub fn create(
    engine: &Engine,
    guard: &Guard<'_>,
    exec: Exec<'_>,
    resource_type: &str,
    req: FhirRequest,
) -> FhirResult<FhirResponse> {
    let resource = checked_resource(req.body, resource_type, None)?;
    guard.check_write(Action::Create, resource_type, &resource)?;
    let condition = match &req.conditions.if_none_exist {
        Some(q) => Some(conditional_query(resource_type, &if_none_exist_query(q))?),
        None => None,
    };
    engine.with_tx(guard, exec, |tx| {
        if let Some(query) = &condition {
            match matching_ids(tx, resource_type, query)?.as_slice() {
                [] => {}
                [id] => {
                    return match tx.read(resource_type, id)? {
                        Current::Found(stored) => {
                            guard.check_visible(&stored)?;
                            let mut response = resource_response(engine, StatusCode::OK, &stored);
                            response.location = Some(engine.version_url(resource_type, id, stored.version));
                            Ok(response)
                        }
                        _ => Err(FhirError::not_found("the matching resource disappeared")),
                    };
                }
                _ => return Err(multiple_matches(resource_type)),
            }
        }
        let stored = tx.create(resource_type, resource, None)?;
        guard.disclose(&stored);
        Ok(resource_response(engine, StatusCode::CREATED, &stored))
    })
}
