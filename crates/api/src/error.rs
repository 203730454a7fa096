//! Errors of FHIR interactions, each with its HTTP status and OperationOutcome.

use axum::http::StatusCode;
use sijill_fhir::outcome::{operation_outcome, Issue};
use sijill_store::StoreError;

/// A failed interaction: a status and the issues to report.
#[derive(Debug, Clone)]
pub struct FhirError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub issues: Vec<Issue>,
}

impl FhirError {
    /// An error with one issue.
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        FhirError {
            status,
            issues: vec![Issue::error(code, "", diagnostics)],
        }
    }

    /// 400 with an `invalid` issue.
    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", diagnostics)
    }

    /// 404 for a resource that is not there (also the answer for one the actor may not see:
    /// the two must read the same).
    pub fn resource_not_found(resource_type: &str, id: &str) -> Self {
        Self::not_found(format!(
            "{resource_type}/{} does not exist",
            crate::engine::truncate(id)
        ))
    }

    /// 403 with a `forbidden` issue: the actor may not do this.
    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", diagnostics)
    }

    /// 404 for a type or anything else that is not there.
    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", diagnostics)
    }

    /// The OperationOutcome resource.
    pub fn outcome(&self) -> serde_json::Value {
        operation_outcome(&self.issues)
    }
}

impl From<StoreError> for FhirError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::VersionConflict { .. } => Self::new(StatusCode::PRECONDITION_FAILED, "conflict", e.to_string()),
            StoreError::Invalid(_) => Self::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
            StoreError::MultipleMatches(_) => {
                Self::new(StatusCode::PRECONDITION_FAILED, "multiple-matches", e.to_string())
            }
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not-found", e.to_string()),
            StoreError::Contention(_) => Self::new(StatusCode::CONFLICT, "transient", e.to_string()),
            StoreError::Database(_) => {
                tracing::error!(error = %e, "store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    "The store failed; the change was not made",
                )
            }
        }
    }
}

/// Result alias of interactions.
pub type FhirResult<T> = Result<T, FhirError>;
