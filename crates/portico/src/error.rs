//! The one place where failures become HTTP responses.
//!
//! Domain and upstream errors know nothing of HTTP. [`ApiError`] classifies them by
//! where they came from (the client, the EHR, or us) and chooses the status code; the two
//! API surfaces render it differently: the FHIR facade as an OperationOutcome, the portal
//! API as `application/problem+json` with a stable `code`. The message shown to clients
//! is kept apart from what is logged, and neither ever contains a response body or token.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_fhir::outcome::{self, IssueCode};
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
