//! The gateway's own endpoints: liveness (`/healthz`), readiness (`/readyz`),
//! Prometheus metrics (`/metrics`) and the middleware that counts every request.

use std::time::Instant;

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use portico_upstream::FhirUpstream as _;

use crate::state::AppState;

/// Liveness: the process is up and serving.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz[?strict=true]`: whether this replica should receive traffic.
///
/// Two kinds of checks: the **dependencies'** (the upstream credential works, the EHR
/// answers its `metadata`, the circuit breaker is not open, Redis answers when replicas
/// share state through it) and **this replica's own** (what it needs to answer anything
/// at all: the audit trail). The answer is
/// - `ready` (200): everything works;
/// - `degraded` (200): the EHR or Redis is failing, but this replica still serves what it can —
///   cached answers, stale answers (`Warning: 110`), logins in progress — so a load
///   balancer keeps it; every replica sees the same EHR, and taking them all out would
///   serve nothing;
/// - `not_ready` (503): this replica itself cannot serve.
///
/// With `?strict=true` (for monitoring, not for Kubernetes' readiness probe) any
/// failing check answers 503.
pub async fn readyz(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let strict = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "strict=true" || p == "strict=1"));
    let token = state.client().check_auth().await;
    // Probed on the client directly: readiness must see the EHR, not the cache, and a
    // probe must not wait on the breaker it reports.
    let metadata = state
        .client()
        .execute(portico_upstream::FhirRequest::capabilities())
        .await;
    let breaker = state.resilience().breaker_state();
    let check = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({"status": "ok"}),
        Err(e) => serde_json::json!({"status": "failing", "error": e}),
    };
    let breaker_open = breaker == portico_upstream::BreakerState::Open;
    let token = token.map_err(|e| e.to_string());
    let metadata = metadata.map(|_| ()).map_err(|e| e.to_string());
    // Redis, when replicas share state: without it logins, sessions and keyed writes
    // answer 503, but reads with a bearer token are still served (and every replica
    // shares the same Redis): a dependency like the EHR, not this replica's fault.
    let shared_state = match state.redis() {
        None => None,
        Some(redis) => Some(redis.ping().await.map_err(|e| e.to_string())),
    };
    let ehr_ok = token.is_ok()
        && metadata.is_ok()
        && !breaker_open
        && shared_state.as_ref().is_none_or(Result::is_ok);
    let replica = replica_checks(&state).await;
    let replica_ok = replica.iter().all(|(_, r)| r.is_ok());
    let mut checks = serde_json::json!({
        "upstream_credentials": check(&token),
        "upstream_metadata": check(&metadata),
        "upstream_breaker": {"status": if breaker_open { "failing" } else { "ok" }, "state": breaker.as_str()},
    });
    if let Some(result) = &shared_state {
        checks["shared_state"] = check(result);
    }
    for (name, result) in &replica {
        checks[*name] = check(result);
    }
    let (status, code) = match (replica_ok, ehr_ok) {
        (true, true) => ("ready", StatusCode::OK),
        (true, false) if !strict => ("degraded", StatusCode::OK),
        _ => ("not_ready", StatusCode::SERVICE_UNAVAILABLE),
    };
    let body = serde_json::json!({"status": status, "checks": checks});
    (code, axum::Json(body)).into_response()
}

/// What this replica needs to answer anything at all, each named.
async fn replica_checks(state: &AppState) -> Vec<(&'static str, Result<(), String>)> {
    let trail = state.audit_trail();
    // A trail that failed is tried again here (the file reopened), so that a replica the
    // load balancer took out for it comes back once the disk does.
    let audit = if trail.can_record() || trail.reopen().await.is_ok() {
        Ok(())
    } else {
        Err("the audit trail cannot be written; patient data is refused".to_owned())
    };
    vec![("audit_trail", audit)]
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
