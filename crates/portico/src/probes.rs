//! The gateway's own endpoints: liveness (`/healthz`), readiness (`/readyz`),
//! Prometheus metrics (`/metrics`) and the middleware that counts every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use portico_upstream::FhirUpstream as _;

use crate::state::AppState;

/// Liveness: the process is up and serving.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the EHR answers its `metadata` and the upstream credential works.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let token = state.client().check_auth().await;
    // Probed on the client directly: readiness must see the EHR, not the cache, and a
    // probe must not wait on the breaker it reports.
    let metadata = state
        .client()
        .execute(portico_upstream::FhirRequest::capabilities())
        .await;
    let breaker = state.resilience().breaker_state();
    let check = |r: Result<(), String>| match r {
        Ok(()) => serde_json::json!({"status": "ok"}),
        Err(e) => serde_json::json!({"status": "failing", "error": e}),
    };
    let breaker_open = breaker == portico_upstream::BreakerState::Open;
    let ready = token.is_ok() && metadata.is_ok() && !breaker_open;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "upstream_credentials": check(token.map_err(|e| e.to_string())),
            "upstream_metadata": check(metadata.map(|_| ()).map_err(|e| e.to_string())),
            "upstream_breaker": {"status": if breaker_open { "failing" } else { "ok" }, "state": breaker.as_str()},
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = crate::metrics::render(
        state.http_metrics(),
        &state.resilience().stats(),
        &state.cache().stats(),
        &state.audit_trail().stats(),
    );
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// Counts every routed request by its route template, method and status, and times it.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::metrics::UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.http_metrics().record(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
