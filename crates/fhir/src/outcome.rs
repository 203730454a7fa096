//! Issues and the OperationOutcome resource that carries them to clients.

use serde_json::{json, Value};

/// How bad an issue is (OperationOutcome.issue.severity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The operation failed.
    Fatal,
    /// The content or request is in error.
    Error,
    /// A potential problem.
    Warning,
    /// For information only.
    Information,
}

impl Severity {
    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One problem found in a request or resource (OperationOutcome.issue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// How bad it is.
    pub severity: Severity,
    /// The IssueType code, e.g. `structure`, `required`, `value`, `code-invalid`, `not-found`.
    pub code: &'static str,
    /// FHIRPath location of the problem, e.g. `Patient.name[0].given[1]` (empty when none).
    pub expression: String,
    /// Human readable explanation.
    pub diagnostics: String,
}

impl Issue {
    /// An error issue at `expression`.
    pub fn error(code: &'static str, expression: impl Into<String>, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Error,
            code,
            expression: expression.into(),
            diagnostics: diagnostics.into(),
        }
    }

    /// An informational issue without location.
    pub fn information(diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Information,
            code: "informational",
            expression: String::new(),
            diagnostics: diagnostics.into(),
        }
    }
}

/// Builds an OperationOutcome resource from issues.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v = json!({
                "severity": i.severity.code(),
                "code": i.code,
                "diagnostics": i.diagnostics,
            });
            if !i.expression.is_empty() {
                v["expression"] = json!([i.expression]);
            }
            v
        })
        .collect();
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_the_path() {
        let oo = operation_outcome(&[Issue::error("structure", "Patient.foo", "unknown element")]);
        assert_eq!(oo["issue"][0]["expression"][0], "Patient.foo");
        assert_eq!(oo["issue"][0]["severity"], "error");
        let oo = operation_outcome(&[Issue::information("ok")]);
        assert!(oo["issue"][0].get("expression").is_none());
    }
}
