//! read and vread, with conditional read (`If-None-Match`, `If-Modified-Since`).

use axum::http::StatusCode;
use sijill_store::{Current, Stored};

use super::{parse_version, resource_response};
use crate::access::Guard;
use crate::engine::{truncate, Conditions, Engine, Exec, FhirResponse, Payload};
use crate::error::{FhirError, FhirResult};

/// GET `Type/id`.
pub fn read(
    engine: &Engine,
    guard: &Guard<'_>,
    exec: Exec<'_>,
    resource_type: &str,
    id: &str,
    conditions: &Conditions,
) -> FhirResult<FhirResponse> {
    let current = match exec {
        Exec::Standalone => engine.store.read(resource_type, id)?,
        Exec::InTx(tx) => tx.read(resource_type, id)?,
    };
    match current {
        Current::Found(stored) => {
            guard.check_visible(&stored)?;
            if not_modified(&stored, conditions) {
                let mut response = resource_response(engine, StatusCode::NOT_MODIFIED, &stored);
                response.payload = Payload::None;
                response.location = None;
                return Ok(response);
            }
            let mut response = resource_response(engine, StatusCode::OK, &stored);
            response.location = None;
            Ok(response)
        }
        Current::Deleted(stored) => {
            guard.check_visible_deleted(&stored)?;
            Err(gone(resource_type, id, &stored))
        }
        Current::NotFound => Err(FhirError::resource_not_found(resource_type, id)),
    }
}

/// GET `Type/id/_history/vid`.
pub fn vread(
    engine: &Engine,
    guard: &Guard<'_>,
    resource_type: &str,
    id: &str,
    version: &str,
) -> FhirResult<FhirResponse> {
    let v = parse_version(version)?;
    guard.check_current_visible(resource_type, id)?;
    match engine.store.vread(resource_type, id, v)? {
        Some(stored) if stored.deleted => {
            guard.check_visible_deleted(&stored)?;
            Err(gone(resource_type, id, &stored))
        }
        Some(stored) => {
            guard.check_visible(&stored)?;
            let mut response = resource_response(engine, StatusCode::OK, &stored);
            response.location = None;
            Ok(response)
        }
        None => Err(FhirError::not_found(format!(
            "{resource_type}/{} has no version {v}",
            truncate(id)
        ))),
    }
}

fn gone(resource_type: &str, id: &str, stored: &Stored) -> FhirError {
    FhirError::new(
        StatusCode::GONE,
        "deleted",
        format!(
            "{resource_type}/{} was deleted (version {})",
            truncate(id),
            stored.version
        ),
    )
}

fn not_modified(stored: &Stored, conditions: &Conditions) -> bool {
    if let Some(tag) = &conditions.if_none_match {
        return tag
            .split(',')
            .any(|t| t.trim() == "*" || super::parse_version(t).ok() == Some(stored.version));
    }
    if let Some(since) = &conditions.if_modified_since {
        if let (Ok(since), Some(updated)) = (httpdate::parse_http_date(since), parse_stored(&stored.last_updated)) {
            return updated <= since;
        }
    }
    false
}

/// Parses a stored instant to a whole-second SystemTime (HTTP dates have no fractions).
fn parse_stored(s: &str) -> Option<std::time::SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}
