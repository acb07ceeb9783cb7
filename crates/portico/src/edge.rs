//! The gateway's outer edge, one middleware ([`edge`]): request bodies read whole and
//! bounded before any handler runs, the request's time limit, server errors logged, and
//! every error in the API's format. One layer, not one per concern: each `from_fn`
//! layer costs every request a clone of the routes behind it and a boxed future.
//!
//! - **Bounded bodies** (`bounded`): a body over `server.body_limit_bytes` —
//!   declared by `Content-Length` or found while reading a chunked one — is answered
//!   413 in the API's format *after the rest of it has been read and discarded* (up to
//!   [`DRAIN_MAX_BYTES`] within [`DRAIN_MAX_TIME`]), so that a client still sending
//!   gets a status it can read instead of a reset connection. Handlers receive a body
//!   already in memory.
//! - **A time limit**: a request whose answer has not begun within
//!   `server.request_timeout` is dropped and answered 504. (A long search answer written
//!   as it arrives has begun: its body is bounded by the upstream client's timeout,
//!   which runs until the EHR's body has been read.)
//! - **Uniform errors** (`uniform`): an error response that did not come
//!   through the gateway's renderers (axum's own 404/405/413/415 and extractor
//!   rejections, the time limit's 504) is rendered again in the format of its
//!   surface: an OperationOutcome under `/fhir`, problem+json with a stable `code` under
//!   `/api/v1` and `/auth`.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;

use crate::error::{ApiError, FhirError, ProblemError};

/// The most of an oversized body read (and discarded) before answering 413.
pub const DRAIN_MAX_BYTES: usize = 64 * 1024 * 1024;
/// The longest an oversized body is read (and discarded) before answering 413.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// Which error format a path's surface speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Fhir,
    Problem,
    Other,
}

fn surface(path: &str) -> Surface {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/fhir") {
        Surface::Fhir
    } else if under("/api/v1") || under("/auth") {
        Surface::Problem
    } else {
        Surface::Other
    }
}

fn render(surface: Surface, error: ApiError) -> Response {
    match surface {
        Surface::Fhir => FhirError(error).into_response(),
        Surface::Problem | Surface::Other => ProblemError(error).into_response(),
    }
}

/// The edge's settings, as middleware state.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    /// The largest request body read, in bytes.
    pub body_limit: usize,
    /// The longest a request may take.
    pub timeout: Duration,
}

/// The gateway's edge; see the module docs.
pub async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let surface = surface(request.uri().path());
    let response = tokio::time::timeout(edge.timeout, bounded(edge.body_limit, request, next))
        .await
        .unwrap_or_else(|_| StatusCode::GATEWAY_TIMEOUT.into_response());
    log_errors(&response);
    uniform(surface, response)
}

/// Logs an answered error: failures as warnings, refusals at debug level.
fn log_errors(response: &Response) {
    if let Some(e) = response.extensions().get::<ApiError>() {
        if e.status.is_server_error() {
            tracing::warn!(status = e.status.as_u16(), code = e.code, "request failed");
        } else {
            tracing::debug!(status = e.status.as_u16(), code = e.code, "request refused");
        }
    }
}

/// Reads the request body whole, up to `limit`, then runs the rest; see the module docs.
async fn bounded(limit: usize, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.size_hint().exact() == Some(0) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        render(
            surface(parts.uri.path()),
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            ),
        )
    };
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(stream, 0).await;
        return too_large();
    }
    let mut read = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return render(
                surface(parts.uri.path()),
                ApiError::bad_request("the request body could not be read"),
            );
        };
        if read.len() + chunk.len() > limit {
            drain(stream, read.len() + chunk.len()).await;
            return too_large();
        }
        read.extend_from_slice(&chunk);
    }
    next.run(Request::from_parts(parts, Body::from(Bytes::from(read))))
        .await
}

/// Reads and discards what is left of a body, within the drain bounds.
async fn drain(mut stream: axum::body::BodyDataStream, already: usize) {
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        let mut total = already;
        while let Some(Ok(chunk)) = stream.next().await {
            total += chunk.len();
            if total > DRAIN_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Renders error responses that bypassed the gateway's renderers in the format of their
/// surface; see the module docs.
fn uniform(surface: Surface, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || surface == Surface::Other
        || response.extensions().get::<ApiError>().is_some()
    {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT => "gateway_timeout",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = match status {
        StatusCode::GATEWAY_TIMEOUT => "the request took too long".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this method is not supported here".to_owned(),
        StatusCode::NOT_FOUND => "not found".to_owned(),
        s if s.is_server_error() => "internal error".to_owned(),
        s => s
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_lowercase(),
    };
    let mut rendered = render(surface, ApiError::new(status, code, message));
    // Keep what the original said about retrying or allowed methods.
    for name in [header::RETRY_AFTER, header::ALLOW] {
        if let Some(v) = response.headers().get(&name) {
            rendered.headers_mut().insert(name, v.clone());
        }
    }
    rendered
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::{get, post};
    use tower::ServiceExt as _;

    use super::*;

    /// Routes behind the edge: one that answers after `slow`, one that echoes its body's
    /// length.
    fn app() -> Router {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        };
        let echo = |body: Bytes| async move { body.len().to_string() };
        Router::new()
            .route("/fhir/slow", get(slow))
            .route("/api/v1/slow", get(slow))
            .route("/fhir/echo", post(echo))
            .layer(axum::middleware::from_fn_with_state(
                Edge {
                    body_limit: 16,
                    timeout: Duration::from_millis(50),
                },
                edge,
            ))
    }

    async fn call(method: &str, path: &str, body: &'static str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn the_edge_bounds_bodies_times_out_and_speaks_each_surfaces_format() {
        // Within the limit, the handler gets the body whole.
        assert_eq!(
            call("POST", "/fhir/echo", "0123456789").await,
            (StatusCode::OK, "10".into())
        );
        // Over it: 413, as an OperationOutcome under /fhir.
        let (status, body) = call("POST", "/fhir/echo", "0123456789abcdefXYZ").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.contains("OperationOutcome"), "{body}");
        // Past the time limit: 504 in the surface's format.
        let (status, body) = call("GET", "/fhir/slow", "").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(body.contains("OperationOutcome"), "{body}");
        let (status, body) = call("GET", "/api/v1/slow", "").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(body.contains("\"code\":\"gateway_timeout\""), "{body}");
        // axum's own refusals too.
        let (status, body) = call("DELETE", "/fhir/echo", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body.contains("OperationOutcome"), "{body}");
    }

    #[test]
    fn surfaces_are_told_by_whole_path_segments() {
        assert_eq!(surface("/fhir/Patient/1"), Surface::Fhir);
        assert_eq!(surface("/fhir"), Surface::Fhir);
        assert_eq!(surface("/fhirx"), Surface::Other);
        assert_eq!(surface("/api/v1/me"), Surface::Problem);
        assert_eq!(surface("/auth/login"), Surface::Problem);
        assert_eq!(surface("/healthz"), Surface::Other);
    }
}
