//! Structural validation of a resource against the official R4 definitions.
//! (Being written: see the helper task.)

use serde_json::Value;

use crate::outcome::Issue;

/// Validates one resource; returns every error found (empty when valid).
pub fn validate_resource(resource: &Value) -> Vec<Issue> {
    let _ = resource;
    Vec::new()
}
