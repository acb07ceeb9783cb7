//! OperationOutcome builders.
//!
//! Every FHIR error Portico or its sandbox returns is an OperationOutcome built here,
//! so the issue codes stay within the R4 `issue-type` value set.

use serde_json::{Value, json};

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// `OperationOutcome.issue.code`, from the R4 `issue-type` value set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    Security,
    Login,
    Forbidden,
    NotFound,
    Deleted,
    NotSupported,
    Duplicate,
    Conflict,
    Processing,
    BusinessRule,
    Exception,
    Timeout,
    Throttled,
    Transient,
    TooCostly,
    Incomplete,
}

impl IssueCode {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::Security => "security",
            IssueCode::Login => "login",
            IssueCode::Forbidden => "forbidden",
            IssueCode::NotFound => "not-found",
            IssueCode::Deleted => "deleted",
            IssueCode::NotSupported => "not-supported",
            IssueCode::Duplicate => "duplicate",
            IssueCode::Conflict => "conflict",
            IssueCode::Processing => "processing",
            IssueCode::BusinessRule => "business-rule",
            IssueCode::Exception => "exception",
            IssueCode::Timeout => "timeout",
            IssueCode::Throttled => "throttled",
            IssueCode::Transient => "transient",
            IssueCode::TooCostly => "too-costly",
            IssueCode::Incomplete => "incomplete",
        }
    }
}

/// An OperationOutcome with one issue.
pub fn operation_outcome(severity: Severity, code: IssueCode, diagnostics: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": severity.as_str(),
            "code": code.as_str(),
            "diagnostics": diagnostics,
        }]
    })
}

/// An OperationOutcome with one `error` issue.
pub fn error(code: IssueCode, diagnostics: &str) -> Value {
    operation_outcome(Severity::Error, code, diagnostics)
}

/// The diagnostics (or `details.text`) of the first issue of an OperationOutcome, if any.
pub fn first_diagnostics(outcome: &Value) -> Option<&str> {
    let issue = outcome.get("issue")?.get(0)?;
    issue
        .get("diagnostics")
        .and_then(Value::as_str)
        .or_else(|| issue.get("details")?.get("text")?.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let oo = error(IssueCode::NotFound, "resource not found");
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert_eq!(oo["issue"][0]["severity"], "error");
        assert_eq!(oo["issue"][0]["code"], "not-found");
        assert_eq!(first_diagnostics(&oo), Some("resource not found"));
    }

    #[test]
    fn details_text_is_read_too() {
        let oo = json!({"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"x","details":{"text":"t"}}]});
        assert_eq!(first_diagnostics(&oo), Some("t"));
        assert_eq!(first_diagnostics(&json!({})), None);
    }
}
