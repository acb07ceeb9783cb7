//! Upstream failures, classified by where they came from.
//!
//! The gateway maps these to its clients' status codes; this crate makes no such choice.
//! Messages are lowercase and never contain a response body, a URL (whose query may
//! carry search values about a patient) or a token. An upstream `OperationOutcome` is
//! kept as data in the variants that can carry one, for the gateway to log or relay.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// Why an upstream interaction failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// 404 from the EHR.
    #[error("upstream resource not found")]
    NotFound { outcome: Option<Value> },
    /// 410 from the EHR: the resource was deleted.
    #[error("upstream resource is gone")]
    Gone { outcome: Option<Value> },
    /// 409 from the EHR.
    #[error("upstream reported a conflict")]
    Conflict { outcome: Option<Value> },
    /// 412 from the EHR: `If-Match` did not match, or a conditional create matched
    /// more than one resource.
    #[error("upstream precondition failed")]
    PreconditionFailed { outcome: Option<Value> },
    /// 400, 405, 406, 415, 422 and any other 4xx not classified above.
    #[error("upstream rejected the request (status {status})")]
    Invalid { status: u16, outcome: Option<Value> },
    /// 401 from the EHR, with its `WWW-Authenticate` challenge.
    #[error("upstream rejected the credentials")]
    Unauthorized { www_authenticate: Option<String> },
    /// 403 from the EHR.
    #[error("upstream refused access")]
    Forbidden { outcome: Option<Value> },
    /// 429 from the EHR; `retry_after` from `Retry-After` (delta-seconds or HTTP-date).
    #[error("upstream is rate limiting requests")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx from the EHR.
    #[error("upstream server error (status {status})")]
    Server { status: u16, outcome: Option<Value> },
    /// The request (headers or body) did not complete within the request timeout.
    #[error("upstream request timed out")]
    Timeout,
    /// The connection could not be made or broke (refused, reset, DNS, TLS, cut body).
    #[error("upstream connection failed: {detail}")]
    Connect { detail: String },
    /// The EHR answered with a body that is not the JSON expected.
    #[error("upstream sent a malformed body: {detail}")]
    MalformedBody { detail: String },
    /// No upstream access token could be obtained.
    #[error("upstream authentication failed: {detail}")]
    Auth { detail: String },
    /// The EHR broke the protocol: an unexpected status, a paging link outside the
    /// configured base.
    #[error("upstream protocol violation: {detail}")]
    Protocol { detail: String },
    /// The request was refused before being sent: a resource type, id or header value
    /// that cannot be put on the wire safely. Never sent upstream.
    #[error("invalid upstream request: {detail}")]
    InvalidRequest { detail: String },
    /// The circuit breaker is open: the EHR failed repeatedly and is being given time
    /// to recover. Not sent upstream; `retry_after` is the remaining cool-down, if known.
    #[error("upstream circuit is open")]
    CircuitOpen { retry_after: Option<Duration> },
    /// The gateway's own limit on concurrent upstream requests was reached and the
    /// request waited longer than allowed for a slot. Not sent upstream.
    #[error("too many concurrent upstream requests")]
    Overloaded,
}

impl UpstreamError {
    /// An answer whose body is not valid JSON, saying where the parse stopped.
    pub fn invalid_json(e: &serde_json::Error) -> UpstreamError {
        UpstreamError::MalformedBody {
            detail: format!("invalid json at line {} column {}", e.line(), e.column()),
        }
    }

    /// Whether repeating the same request later may succeed: timeouts, connection
    /// failures, 502/503/504, 429, an open circuit and the local concurrency limit.
    /// Whether it is *safe* to repeat (a create is not idempotent without
    /// `If-None-Exist`) is the caller's decision.
    pub fn retryable(&self) -> bool {
        match self {
            UpstreamError::Timeout
            | UpstreamError::Connect { .. }
            | UpstreamError::RateLimited { .. }
            | UpstreamError::CircuitOpen { .. }
            | UpstreamError::Overloaded
            // A body cut short or garbled in transit may well come whole next time.
            | UpstreamError::MalformedBody { .. } => true,
            UpstreamError::Server { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// Whether the EHR (or its authorization server) failed or misbehaved, as opposed
    /// to giving a verdict on the request (404, 409, 412, 4xx, 401, 403). An open
    /// circuit counts as the EHR's fault; the gateway's own concurrency limit does not.
    pub fn is_upstream_fault(&self) -> bool {
        matches!(
            self,
            UpstreamError::Server { .. }
                | UpstreamError::Timeout
                | UpstreamError::Connect { .. }
                | UpstreamError::MalformedBody { .. }
                | UpstreamError::Auth { .. }
                | UpstreamError::Protocol { .. }
                | UpstreamError::RateLimited { .. }
                | UpstreamError::CircuitOpen { .. }
        )
    }

    /// Whether the failure suggests the EHR is down or unreachable: a timeout, a broken
    /// connection or any 5xx. This is what the circuit breaker counts; a 429 (the EHR
    /// is alive and throttling) and verdicts on the request (4xx) are not outages.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout | UpstreamError::Connect { .. } | UpstreamError::Server { .. }
        )
    }

    /// The HTTP status the EHR answered with, when the failure is an EHR answer (not a
    /// timeout, a broken connection or a local refusal). For audit records.
    pub fn status(&self) -> Option<u16> {
        use UpstreamError as U;
        Some(match self {
            U::NotFound { .. } => 404,
            U::Gone { .. } => 410,
            U::Conflict { .. } => 409,
            U::PreconditionFailed { .. } => 412,
            U::Invalid { status, .. } | U::Server { status, .. } => *status,
            U::Unauthorized { .. } => 401,
            U::Forbidden { .. } => 403,
            U::RateLimited { .. } => 429,
            _ => return None,
        })
    }

    /// The upstream OperationOutcome, if the error response carried one.
    pub fn outcome(&self) -> Option<&Value> {
        match self {
            UpstreamError::NotFound { outcome }
            | UpstreamError::Gone { outcome }
            | UpstreamError::Conflict { outcome }
            | UpstreamError::PreconditionFailed { outcome }
            | UpstreamError::Invalid { outcome, .. }
            | UpstreamError::Forbidden { outcome }
            | UpstreamError::Server { outcome, .. } => outcome.as_ref(),
            _ => None,
        }
    }

    /// Classifies a non-2xx response. `body` is only used to recover an OperationOutcome.
    pub(crate) fn from_status(
        status: u16,
        body: &[u8],
        www_authenticate: Option<String>,
        retry_after: Option<&str>,
    ) -> UpstreamError {
        let outcome = operation_outcome(body);
        match status {
            401 => UpstreamError::Unauthorized { www_authenticate },
            403 => UpstreamError::Forbidden { outcome },
            404 => UpstreamError::NotFound { outcome },
            409 => UpstreamError::Conflict { outcome },
            410 => UpstreamError::Gone { outcome },
            412 => UpstreamError::PreconditionFailed { outcome },
            429 => UpstreamError::RateLimited {
                retry_after: retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
            },
            400..=499 => UpstreamError::Invalid { status, outcome },
            500..=599 => UpstreamError::Server { status, outcome },
            _ => UpstreamError::Protocol {
                detail: format!("unexpected status {status}"),
            },
        }
    }

    /// Classifies a transport error from reqwest, dropping the URL it carries.
    pub(crate) fn from_reqwest(err: reqwest::Error) -> UpstreamError {
        if err.is_timeout() {
            return UpstreamError::Timeout;
        }
        if err.is_builder() {
            return UpstreamError::InvalidRequest {
                detail: "the request could not be built".to_owned(),
            };
        }
        let mid_body = err.is_body() || err.is_decode();
        let detail = error_chain(&err.without_url());
        if mid_body {
            UpstreamError::Connect {
                detail: format!("response body interrupted: {detail}"),
            }
        } else {
            UpstreamError::Connect { detail }
        }
    }
}

/// The error and its sources, joined by `": "`, without any URL.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The body as JSON if it is an OperationOutcome.
fn operation_outcome(body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    (value.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")).then_some(value)
}

/// Parses `Retry-After` as delta-seconds or an HTTP-date (relative to `now`; a date in
/// the past means zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(date);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21T07:28:00Z
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn classification_and_flags() {
        let oo = br#"{"resourceType":"OperationOutcome","issue":[]}"#;
        let e = UpstreamError::from_status(404, oo, None, None);
        assert!(matches!(e, UpstreamError::NotFound { outcome: Some(_) }));
        assert!(!e.retryable() && !e.is_upstream_fault());
        let e = UpstreamError::from_status(422, b"not json", None, None);
        assert!(matches!(
            e,
            UpstreamError::Invalid {
                status: 422,
                outcome: None
            }
        ));
        let e = UpstreamError::from_status(503, b"", None, None);
        assert!(e.retryable() && e.is_upstream_fault());
        let e = UpstreamError::from_status(500, b"", None, None);
        assert!(!e.retryable() && e.is_upstream_fault());
        let e = UpstreamError::from_status(302, b"", None, None);
        assert!(matches!(e, UpstreamError::Protocol { .. }));
        // A body that is JSON but not an OperationOutcome is not kept.
        let e = UpstreamError::from_status(400, br#"{"resourceType":"Patient"}"#, None, None);
        assert!(e.outcome().is_none());
        let e = UpstreamError::CircuitOpen { retry_after: None };
        assert!(e.retryable() && e.is_upstream_fault() && !e.is_outage());
        assert!(UpstreamError::Overloaded.retryable());
        assert!(!UpstreamError::Overloaded.is_upstream_fault());
        assert!(UpstreamError::Timeout.is_outage());
        assert!(UpstreamError::from_status(500, b"", None, None).is_outage());
        assert!(!UpstreamError::from_status(429, b"", None, None).is_outage());
        assert!(!UpstreamError::from_status(404, b"", None, None).is_outage());
    }
}
