//! The one place where failures become HTTP responses.
//!
//! Domain and upstream errors know nothing of HTTP. [`ApiError`] classifies them by
//! where they came from (the client, the EHR, or us) and chooses the status code, in
//! three tables: upstream failures (`From<&UpstreamError>`), portal domain failures
//! (`From<&PortalError>`, and a payment's `From<&PayError>`), and the portal API's own
//! refusals ([`RequestError`]). The two API surfaces render it differently: the FHIR
//! facade as an OperationOutcome ([`FhirError`]), the portal API and login as
//! `application/problem+json` with a stable `code` ([`ProblemError`]). The message shown
//! to clients is kept apart from what is logged, and neither ever contains a response
//! body or token.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_fhir::outcome::{self, IssueCode};
use portico_portal::PortalError;
use portico_portal::bills::PayError;
use portico_upstream::UpstreamError;

/// A classified failure, ready to be rendered by either surface.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code (`upstream_timeout`, `not_found`, ...).
    pub code: &'static str,
    /// What the client is told.
    pub message: String,
    /// `Retry-After` seconds to pass on, if any.
    pub retry_after: Option<u64>,
    /// Machine-readable detail for portal clients (an eligibility reason, the exact
    /// state of a half-done action), rendered as the problem's `details` member.
    pub details: Option<Box<serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "resource not found")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The audit trail cannot be written: nothing that reveals or changes patient data
    /// is answered (`[audit] on_failure = "refuse"`).
    pub fn audit_unavailable() -> Self {
        ApiError {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit trail cannot be written right now; try again shortly",
            )
        }
    }

    /// State the replicas share (per-object locks, offers) cannot be reached through
    /// Redis: the action was not attempted.
    pub fn state_unavailable() -> Self {
        ApiError {
            retry_after: Some(2),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                "the gateway's shared state cannot be reached right now; nothing was done, \
                 try again shortly",
            )
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    fn issue_code(&self) -> IssueCode {
        match self.status {
            StatusCode::NOT_FOUND => IssueCode::NotFound,
            StatusCode::GONE => IssueCode::Deleted,
            StatusCode::UNAUTHORIZED => IssueCode::Login,
            StatusCode::FORBIDDEN => IssueCode::Forbidden,
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => IssueCode::Conflict,
            StatusCode::UNPROCESSABLE_ENTITY => IssueCode::Processing,
            StatusCode::TOO_MANY_REQUESTS => IssueCode::Throttled,
            StatusCode::GATEWAY_TIMEOUT => IssueCode::Timeout,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => IssueCode::Transient,
            StatusCode::PAYLOAD_TOO_LARGE => IssueCode::TooCostly,
            s if s.is_client_error() => IssueCode::Invalid,
            _ => IssueCode::Exception,
        }
    }

    fn finish(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // The middleware in `app` logs failures from this extension, so rendering stays
        // free of side effects.
        response.extensions_mut().insert(self.clone());
        response
    }
}

/// The mapping table from upstream failures to client-facing errors.
impl From<&UpstreamError> for ApiError {
    fn from(e: &UpstreamError) -> Self {
        use UpstreamError as U;
        match e {
            U::NotFound { .. } | U::Gone { .. } => ApiError::not_found(),
            U::Conflict { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the resource changed; reload and try again",
            ),
            U::PreconditionFailed { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_conflict",
                "the resource changed since it was read; reload and try again",
            ),
            U::Invalid { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected_by_ehr",
                "the EHR rejected the request",
            ),
            U::RateLimited { retry_after } => ApiError {
                retry_after: retry_after.map(|d| d.as_secs().max(1)),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_busy",
                    "the EHR is busy; try again shortly",
                )
            },
            U::CircuitOpen { retry_after } => ApiError {
                retry_after: retry_after.map(|d| d.as_secs().max(1)),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_unavailable",
                    "the EHR is failing; the gateway is giving it time to recover",
                )
            },
            U::Overloaded => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_busy",
                "too many requests to the EHR are in flight; try again shortly",
            ),
            U::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the EHR did not answer in time",
            ),
            U::Unauthorized { .. } | U::Forbidden { .. } | U::Auth { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_auth",
                "the gateway could not authenticate to the EHR",
            ),
            // The gateway built a request the client cannot send upstream (an invalid id
            // that slipped past the handlers' own checks): the client's input was bad.
            U::InvalidRequest { .. } => ApiError::bad_request("invalid request"),
            U::Server { .. } | U::Connect { .. } | U::MalformedBody { .. } | U::Protocol { .. } => {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the EHR is unavailable",
                )
            }
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        ApiError::from(&e)
    }
}

/// The mapping table from portal domain failures to client-facing errors: the status of
/// each case. The stable code is the domain's own ([`PortalError::code`]); upstream
/// failures go through the upstream table above.
impl From<&PortalError> for ApiError {
    fn from(e: &PortalError) -> Self {
        use PortalError as P;
        let (status, message, details) = match e {
            P::Upstream(upstream) => return ApiError::from(upstream),
            P::NotFound => return ApiError::not_found(),
            P::Invalid { message, .. } => (StatusCode::BAD_REQUEST, message.clone(), None),
            P::Forbidden { message } | P::ProxyNotPermitted { message } => {
                (StatusCode::FORBIDDEN, message.clone(), None)
            }
            P::Conflict { message, .. } => (StatusCode::CONFLICT, message.clone(), None),
            P::Refused {
                message, detail, ..
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                message.clone(),
                detail.clone(),
            ),
            P::NotSupported { message } => (StatusCode::NOT_IMPLEMENTED, message.clone(), None),
            P::Partial { message, state, .. } => (
                StatusCode::BAD_GATEWAY,
                message.clone(),
                Some(state.clone()),
            ),
            P::AuditUnavailable => return ApiError::audit_unavailable(),
            P::StateUnavailable => return ApiError::state_unavailable(),
            P::OutcomeUnknown { action } => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the EHR failed while {action} was being saved and it is not yet known \
                     whether it was; retry with the same Idempotency-Key to find out"
                ),
                None,
            ),
        };
        ApiError {
            details: details.map(Box::new),
            ..ApiError::new(status, e.code(), message)
        }
    }
}

/// A payment's failures: the domain's, or the processor's (nothing was charged).
impl From<&PayError> for ApiError {
    fn from(e: &PayError) -> Self {
        match e {
            PayError::Portal(e) => ApiError::from(e),
            PayError::ProcessorUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment_unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<PortalError> for ApiError {
    fn from(e: PortalError) -> Self {
        ApiError::from(&e)
    }
}

impl From<PayError> for ApiError {
    fn from(e: PayError) -> Self {
        ApiError::from(&e)
    }
}

/// What the portal API refuses, or gives up on, before or around any portal action:
/// the request's route, shape and idempotency key, and its deadline. Failures of the
/// action itself are [`PortalError`]s.
#[derive(Debug)]
pub enum RequestError {
    /// No portal route has this path.
    NoRoute,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is not JSON, not an object, too deep, or not of the expected shape.
    InvalidBody(String),
    /// A query parameter is unknown or malformed.
    InvalidQuery(String),
    /// `/records/{kind}` names no kind of record.
    UnknownRecordKind,
    /// A paging cursor that is not this caller's, altered, expired or for another kind.
    InvalidCursor(String),
    /// An `Idempotency-Key` header that is not 1 to 255 visible ASCII characters.
    InvalidIdempotencyKey,
    /// A request with the same key is still running.
    IdempotencyInProgress,
    /// The key was used before for a different request.
    IdempotencyKeyReused,
    /// The idempotency store cannot be reached: the write was not attempted.
    IdempotencyUnavailable,
    /// The request ran past the portal's overall deadline.
    DeadlineExceeded,
}

/// The mapping table from the portal API's own refusals to client-facing errors.
impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        use RequestError as R;
        let (status, code, message) = match e {
            R::NoRoute => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such portal API route".to_owned(),
            ),
            R::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this portal API route does not take that method".to_owned(),
            ),
            R::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json".to_owned(),
            ),
            R::InvalidBody(message) => (StatusCode::BAD_REQUEST, "invalid_body", message),
            R::InvalidQuery(message) => (StatusCode::BAD_REQUEST, "invalid_request", message),
            R::UnknownRecordKind => (
                StatusCode::NOT_FOUND,
                "not_found",
                "unknown record kind".to_owned(),
            ),
            R::InvalidCursor(message) => (StatusCode::BAD_REQUEST, "invalid_cursor", message),
            R::InvalidIdempotencyKey => (
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned(),
            ),
            R::IdempotencyInProgress => (
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still being processed".to_owned(),
            ),
            R::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request".to_owned(),
            ),
            R::IdempotencyUnavailable => {
                return ApiError {
                    retry_after: Some(2),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "idempotency_unavailable",
                        "the write cannot be protected against running twice right now, so \
                         it was not attempted; try again shortly with the same \
                         Idempotency-Key",
                    )
                };
            }
            R::DeadlineExceeded => (
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                "the request took too long; if it was a write, retry it with the same \
                 Idempotency-Key to learn its outcome"
                    .to_owned(),
            ),
        };
        ApiError::new(status, code, message)
    }
}

/// An error rendered for the FHIR facade: an OperationOutcome.
#[derive(Debug)]
pub struct FhirError(pub ApiError);

impl<E: Into<ApiError>> From<E> for FhirError {
    fn from(e: E) -> Self {
        FhirError(e.into())
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = outcome::error(e.issue_code(), &e.message);
        let mut response = (e.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(portico_fhir::FHIR_JSON),
        );
        e.finish(response)
    }
}

/// An error rendered for the portal API and portal login: RFC 9457 problem details
/// with a stable `code`. (Not to be confused with the domain's
/// [`portico_portal::PortalError`], one of the failures it renders.)
#[derive(Debug)]
pub struct ProblemError(pub ApiError);

impl<E: Into<ApiError>> From<E> for ProblemError {
    fn from(e: E) -> Self {
        ProblemError(e.into())
    }
}

impl IntoResponse for ProblemError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut body = serde_json::json!({
            "type": format!("https://portico.dev/problems/{}", e.code),
            "title": e.status.canonical_reason().unwrap_or("error"),
            "status": e.status.as_u16(),
            "code": e.code,
            "detail": e.message,
        });
        if let Some(details) = &e.details {
            body["details"] = (**details).clone();
        }
        let mut response = (e.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        e.finish(response)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn domain_failures_keep_their_code_and_details_and_choose_only_the_status() {
        let refused = ApiError::from(PortalError::Refused {
            code: "refill_not_eligible",
            message: "not yet".to_owned(),
            detail: Some(json!({"reason": "too_soon"})),
        });
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.code, "refill_not_eligible");
        assert_eq!(refused.message, "not yet");
        assert_eq!(
            refused.details.as_deref(),
            Some(&json!({"reason": "too_soon"}))
        );

        let partial = ApiError::from(PortalError::Partial {
            code: "reschedule_incomplete",
            message: "half done".to_owned(),
            state: json!({"new": "a2"}),
        });
        assert_eq!(partial.status, StatusCode::BAD_GATEWAY);
        assert_eq!(partial.details.as_deref(), Some(&json!({"new": "a2"})));

        let unknown = ApiError::from(PortalError::OutcomeUnknown { action: "book" });
        assert_eq!(unknown.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unknown.code, "outcome_unknown");
        assert!(unknown.message.contains("book"));

        // Upstream failures are coded by the upstream table, not as `upstream_error`.
        let upstream = ApiError::from(PortalError::Upstream(UpstreamError::Timeout));
        assert_eq!(upstream.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(upstream.code, "upstream_timeout");

        let no_processor = ApiError::from(PayError::ProcessorUnavailable);
        assert_eq!(no_processor.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(no_processor.code, "payment_unavailable");
        let declined = ApiError::from(PayError::Portal(PortalError::refused(
            "payment_declined",
            "declined",
        )));
        assert_eq!(declined.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(declined.code, "payment_declined");
    }

    #[test]
    fn shared_state_failures_are_503s_with_their_own_codes() {
        use portico_portal::StateError;
        let state = ApiError::from(PortalError::from(StateError::Unavailable(
            "connection refused".to_owned(),
        )));
        assert_eq!(state.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(state.code, "state_unavailable");
        assert!(!state.message.contains("refused"), "no internal detail");
        assert!(state.retry_after.is_some());
        let busy = ApiError::from(PortalError::from(StateError::Busy));
        assert_eq!(busy.status, StatusCode::CONFLICT);
        assert_eq!(busy.code, "busy");
        let idem = ApiError::from(RequestError::IdempotencyUnavailable);
        assert_eq!(idem.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(idem.code, "idempotency_unavailable");
        assert!(idem.retry_after.is_some());
    }
}
