//! Latency and fault knobs, and the request counter.
//!
//! Real EHRs are slow, fail, drop connections and send garbage, but never on demand;
//! these knobs make the sandbox do it on demand. They are settable at runtime from Rust
//! ([`Faults`]) and over HTTP (`GET`/`PUT /_sandbox/faults`, `GET /_sandbox/stats`,
//! `GET /_sandbox/requests`, `POST /_sandbox/stats/reset`), and apply to `/fhir` requests only, never to `/auth`
//! or `/_sandbox`.
//!
//! Semantics:
//! - the knobs apply to requests whose path contains `path_filter` (all when unset) and
//!   whose method is one of `methods` (all when empty), so that a test can aim at a
//!   write (`POST` on `/Appointment`) and leave the reads of the same type alone;
//! - the first `skip_first` requests they target (counted from when the knobs were set)
//!   pass untouched, so that a test can let a first write through and break the second;
//! - a failure happens with probability `failure_rate` (always at 1.0, never at 0.0);
//! - `phase` says whether the latency and the failure come *before* the request runs
//!   (nothing is read or written: the EHR failed, or was slow, before doing anything)
//!   or *after* it ran (a write is committed, then its answer is late or broken: the
//!   case where only the EHR knows that it happened). Unset, the latency comes before
//!   and each kind keeps its usual phase: `status500`, `status503` and `reset` answer
//!   without running the request, while `malformed_json` and `slow_body` run it and then
//!   mangle or trickle its response body;
//! - before the request, `malformed_json` is a 200 with a truncated body and `slow_body`
//!   a 503 OperationOutcome trickled out; after it, `status500`/`status503` replace the
//!   answer and `reset` drops the connection;
//! - every `/fhir` request is counted, by method and resource type (the first path
//!   segment after `/fhir`, e.g. `Slot` or `metadata`), faulty or not; while the request
//!   log is on (`PUT /_sandbox/requests {"record": true}`; off at start) the latest
//!   [`REQUEST_LOG_CAPACITY`] are also kept in order, method and target, until the reset.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::{Mutex, RwLock};
use portico_fhir::outcome::{IssueCode, error as outcome_error};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How an injected failure looks to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// 500 with an OperationOutcome.
    Status500,
    /// 503 with `Retry-After: 1` and an OperationOutcome.
    #[default]
    Status503,
    /// The connection is dropped without a complete response.
    Reset,
    /// 200 with a truncated, invalid JSON body.
    MalformedJson,
    /// Headers at once, then the body trickled over `slow_body_ms`.
    SlowBody,
}

impl FailureKind {
    /// When this kind strikes if the configuration names no [`FaultPhase`].
    fn usual_phase(self) -> FaultPhase {
        match self {
            FailureKind::Status500 | FailureKind::Status503 | FailureKind::Reset => {
                FaultPhase::Before
            }
            FailureKind::MalformedJson | FailureKind::SlowBody => FaultPhase::After,
        }
    }
}

/// When the latency and the failure strike, relative to the request's own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    /// Before the request runs: nothing is read or written.
    Before,
    /// After the request ran (a write is committed): its answer is late or broken.
    After,
}

/// The knobs. `PUT /_sandbox/faults` takes this as JSON (missing fields take defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Added latency per request, in milliseconds.
    pub latency_ms: u64,
    /// Probability of a failure, 0.0 to 1.0.
    pub failure_rate: f64,
    pub failure_kind: FailureKind,
    /// Only requests whose path contains this (e.g. `/Slot`) are affected.
    pub path_filter: Option<String>,
    /// Only requests with one of these methods (e.g. `["POST"]`) are affected; all when
    /// empty.
    pub methods: Vec<String>,
    /// Before or after the request runs; unset: the latency before, the failure at the
    /// kind's usual phase (see the module docs).
    pub phase: Option<FaultPhase>,
    /// How many targeted requests pass untouched before the knobs apply.
    pub skip_first: u64,
    /// How long a `slow_body` response takes to trickle out, in milliseconds.
    pub slow_body_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            latency_ms: 0,
            failure_rate: 0.0,
            failure_kind: FailureKind::default(),
            path_filter: None,
            methods: Vec::new(),
            phase: None,
            skip_first: 0,
            slow_body_ms: 5000,
        }
    }
}

/// Why a fault configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("failure_rate must be between 0.0 and 1.0, not {0}")]
    Rate(f64),
}

/// Requests counted for one (method, resource type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestCount {
    pub method: String,
    pub resource_type: String,
    pub count: u64,
}

/// The request counter's state, as served by `GET /_sandbox/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestStats {
    pub total: u64,
    pub by_method_and_type: Vec<RequestCount>,
}

/// One `/fhir` request as the log keeps it: its method and its target (path and query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub target: String,
}

/// How many requests `GET /_sandbox/requests` keeps (the oldest are dropped first).
pub const REQUEST_LOG_CAPACITY: usize = 20_000;

/// The fault knobs and the request counter of one sandbox.
#[derive(Debug, Default)]
pub struct Faults {
    config: RwLock<FaultConfig>,
    counts: Mutex<BTreeMap<(String, String), u64>>,
    /// The latest `/fhir` requests, in arrival order, since the last reset (bounded), kept
    /// only while `logging` is on (a lock and two copies per request, which a benchmark
    /// of the sandbox's own speed should not pay): what the benchmarks read to count the
    /// distinct requests a portal session needs.
    log: Mutex<std::collections::VecDeque<LoggedRequest>>,
    logging: std::sync::atomic::AtomicBool,
    /// `/fhir` requests being served right now, and the most at once since the last
    /// reset (shows whether a client's calls ran concurrently, without timing them).
    in_flight: std::sync::atomic::AtomicU64,
    max_in_flight: std::sync::atomic::AtomicU64,
    /// Targeted requests seen since the knobs were last set (for `skip_first`).
    targeted: std::sync::atomic::AtomicU64,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a Faults);

impl<'a> InFlight<'a> {
    fn enter(faults: &'a Faults) -> InFlight<'a> {
        use std::sync::atomic::Ordering;
        let now = faults.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        faults.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(faults)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
struct Decision {
    latency: Duration,
    failure: Option<FailureKind>,
    /// When the latency and the failure strike.
    phase: FaultPhase,
    slow_body: Duration,
}

impl Decision {
    fn none() -> Decision {
        Decision {
            latency: Duration::ZERO,
            failure: None,
            phase: FaultPhase::Before,
            slow_body: Duration::ZERO,
        }
    }
}

impl Faults {
    /// Knobs with only an added latency.
    pub fn new(latency: Duration) -> Faults {
        let faults = Faults::default();
        faults.set_latency(latency);
        faults
    }

    /// The current knobs.
    pub fn config(&self) -> FaultConfig {
        self.config.read().clone()
    }

    /// Replaces every knob.
    pub fn set(&self, config: FaultConfig) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&config.failure_rate) {
            return Err(FaultError::Rate(config.failure_rate));
        }
        let mut current = self.config.write();
        *current = config;
        self.targeted.store(0, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Sets the added latency, leaving the other knobs alone.
    pub fn set_latency(&self, latency: Duration) {
        self.config.write().latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    }

    /// Injects failures of `kind` with probability `rate` (clamped to 0.0..=1.0) on
    /// requests whose path contains `path_filter`, keeping the latency.
    pub fn inject(&self, kind: FailureKind, rate: f64, path_filter: Option<&str>) {
        let mut config = self.config.write();
        config.failure_kind = kind;
        config.failure_rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        config.path_filter = path_filter.map(str::to_owned);
        self.targeted.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// Removes every fault and the added latency.
    pub fn clear(&self) {
        *self.config.write() = FaultConfig::default();
        self.targeted.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// The counter's state.
    pub fn stats(&self) -> RequestStats {
        let counts = self.counts.lock();
        RequestStats {
            total: counts.values().sum(),
            by_method_and_type: counts
                .iter()
                .map(|((method, ty), count)| RequestCount {
                    method: method.clone(),
                    resource_type: ty.clone(),
                    count: *count,
                })
                .collect(),
        }
    }

    /// How many `/fhir` requests were served since the last reset.
    pub fn requests(&self) -> u64 {
        self.counts.lock().values().sum()
    }

    /// How many `/fhir` requests with this method (`GET`, ...) on this resource type
    /// (`Slot`, `metadata`, `""` for the base) were served since the last reset.
    pub fn requests_for(&self, method: &str, resource_type: &str) -> u64 {
        self.counts
            .lock()
            .get(&(method.to_owned(), resource_type.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// How many `/fhir` requests are being served right now (a request whose answer
    /// is late still counts until it is sent or its client went away).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most `/fhir` requests served at the same time since the last reset.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The latest requests since the last reset while logging was on, oldest first (at
    /// most [`REQUEST_LOG_CAPACITY`]).
    pub fn recent_requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().iter().cloned().collect()
    }

    /// Turns the request log on or off (it starts off); either way it is emptied.
    pub fn log_requests(&self, on: bool) {
        let mut log = self.log.lock();
        self.logging.store(on, std::sync::atomic::Ordering::SeqCst);
        log.clear();
    }

    /// Whether the request log is on.
    pub fn logs_requests(&self) -> bool {
        self.logging.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Zeroes the counter (and the in-flight high-water mark) and empties the log.
    pub fn reset_stats(&self) {
        self.counts.lock().clear();
        self.log.lock().clear();
        self.max_in_flight.store(
            self.in_flight.load(std::sync::atomic::Ordering::SeqCst),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    fn record(&self, method: &str, resource_type: &str, target: &str) {
        *self
            .counts
            .lock()
            .entry((method.to_owned(), resource_type.to_owned()))
            .or_default() += 1;
        if !self.logs_requests() {
            return;
        }
        let mut log = self.log.lock();
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(LoggedRequest {
            method: method.to_owned(),
            target: target.to_owned(),
        });
    }

    fn decide(&self, method: &str, path: &str) -> Decision {
        let config = self.config.read();
        let targeted = config
            .path_filter
            .as_deref()
            .is_none_or(|filter| path.contains(filter))
            && (config.methods.is_empty()
                || config
                    .methods
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(method)));
        if !targeted {
            return Decision::none();
        }
        let seen = self
            .targeted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if seen < config.skip_first {
            return Decision::none();
        }
        let fails = config.failure_rate >= 1.0
            || (config.failure_rate > 0.0
                && rand::thread_rng().r#gen::<f64>() < config.failure_rate);
        let failure = fails.then_some(config.failure_kind);
        Decision {
            latency: Duration::from_millis(config.latency_ms),
            failure,
            phase: match (config.phase, failure) {
                (Some(phase), _) => phase,
                (None, Some(kind)) => kind.usual_phase(),
                (None, None) => FaultPhase::Before,
            },
            slow_body: Duration::from_millis(config.slow_body_ms),
        }
    }
}

/// The resource type a `/fhir` path is about: the first segment after `/fhir`.
fn resource_type_of(path: &str) -> &str {
    let rest = path.strip_prefix("/fhir").unwrap_or(path);
    rest.trim_start_matches('/').split('/').next().unwrap_or("")
}

fn failure_response(status: StatusCode, message: &str) -> Response {
    let body = outcome_error(IssueCode::Transient, message).to_string();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(portico_fhir::FHIR_JSON),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The `/fhir` middleware: counts the request, then applies latency and faults, before
/// or after the request runs (see the module docs).
pub async fn middleware(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri(), |u| &u.0);
    let path = uri.path().to_owned();
    let target = uri.path_and_query().map_or(path.as_str(), |pq| pq.as_str());
    faults.record(request.method().as_str(), resource_type_of(&path), target);
    let _in_flight = InFlight::enter(&faults);
    let decision = faults.decide(request.method().as_str(), &path);
    let after = decision.phase == FaultPhase::After;
    if !after && !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let Some(kind) = decision.failure else {
        let response = next.run(request).await;
        if after && !decision.latency.is_zero() {
            tokio::time::sleep(decision.latency).await;
        }
        return response;
    };
    // Before: a failing request never runs. After: it runs to completion (a write is
    // committed) whatever then happens to its answer.
    let ran = if after {
        let response = next.run(request).await;
        if !decision.latency.is_zero() {
            tokio::time::sleep(decision.latency).await;
        }
        Some(response)
    } else {
        None
    };
    failure(kind, ran, decision.slow_body).await
}

/// The answer of an injected failure; `ran` is the request's own answer when it ran.
async fn failure(kind: FailureKind, ran: Option<Response>, slow_body: Duration) -> Response {
    match kind {
        FailureKind::Status500 => failure_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected fault: internal server error",
        ),
        FailureKind::Status503 => failure_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected fault: service unavailable",
        ),
        FailureKind::Reset => {
            // A body that fails before its first byte makes hyper abort the connection.
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected fault: connection reset",
                ))
            });
            let mut response = Response::new(Body::from_stream(stream));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(portico_fhir::FHIR_JSON),
            );
            response
        }
        FailureKind::MalformedJson => {
            let response = ran.unwrap_or_else(|| (StatusCode::OK, "").into_response());
            let (mut parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            // Cut the body in half (and never leave it valid): a truncated JSON document.
            let mut truncated = bytes.slice(..bytes.len() / 2).to_vec();
            if truncated.is_empty() {
                truncated.extend_from_slice(b"{\"resourceType\":");
            }
            parts.status = StatusCode::OK;
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(portico_fhir::FHIR_JSON),
            );
            Response::from_parts(parts, Body::from(truncated))
        }
        FailureKind::SlowBody => {
            // Before the request ran: the EHR takes its time to say it is unavailable.
            let response = ran.unwrap_or_else(|| {
                failure_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "injected fault: service unavailable, slowly",
                )
            });
            let (mut parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from_stream(trickle(bytes, slow_body)))
        }
    }
}

/// Streams `bytes` in ten pieces spread evenly over `total`.
fn trickle(
    bytes: Bytes,
    total: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    const PIECES: usize = 10;
    let chunk = bytes.len().div_ceil(PIECES).max(1);
    let pause = total / PIECES as u32;
    futures::stream::unfold(0usize, move |offset| {
        let bytes = bytes.clone();
        async move {
            if offset >= bytes.len() {
                return None;
            }
            tokio::time::sleep(pause).await;
            let end = (offset + chunk).min(bytes.len());
            Some((Ok(bytes.slice(offset..end)), end))
        }
    })
}

/// `/_sandbox/faults`, `/_sandbox/stats` and `/_sandbox/requests` (paths relative to
/// `/_sandbox`).
pub fn router(faults: Arc<Faults>) -> Router {
    Router::new()
        .route("/faults", get(get_faults).put(put_faults))
        .route("/stats", get(get_stats))
        .route("/stats/reset", post(reset_stats))
        .route("/requests", get(get_requests).put(put_requests))
        .with_state(faults)
}

async fn get_faults(State(faults): State<Arc<Faults>>) -> Json<FaultConfig> {
    Json(faults.config())
}

async fn put_faults(State(faults): State<Arc<Faults>>, body: Bytes) -> Response {
    let config: FaultConfig = match serde_json::from_slice(&body) {
        Ok(config) => config,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": format!("invalid fault configuration: {e}")})),
            )
                .into_response();
        }
    };
    match faults.set(config) {
        Ok(()) => Json(faults.config()).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn get_stats(State(faults): State<Arc<Faults>>) -> Json<RequestStats> {
    Json(faults.stats())
}

async fn get_requests(State(faults): State<Arc<Faults>>) -> Json<Vec<LoggedRequest>> {
    Json(faults.recent_requests())
}

/// `PUT /_sandbox/requests` with `{"record": true}` or `{"record": false}`.
async fn put_requests(State(faults): State<Arc<Faults>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Logging {
        record: bool,
    }
    match serde_json::from_slice::<Logging>(&body) {
        Ok(Logging { record }) => {
            faults.log_requests(record);
            Json(serde_json::json!({"record": record})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": format!("expected {{\"record\": true|false}}: {e}")})),
        )
            .into_response(),
    }
}

async fn reset_stats(State(faults): State<Arc<Faults>>) -> StatusCode {
    faults.reset_stats();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_knobs() {
        let faults = Faults::new(Duration::from_millis(7));
        let d = faults.decide("GET", "/fhir/Slot");
        assert_eq!(d.latency, Duration::from_millis(7));
        assert_eq!(d.failure, None);
        faults.inject(FailureKind::Reset, 1.0, Some("/Slot"));
        assert_eq!(
            faults.decide("GET", "/fhir/Slot").failure,
            Some(FailureKind::Reset)
        );
        let other = faults.decide("GET", "/fhir/Patient/1");
        assert_eq!((other.failure, other.latency), (None, Duration::ZERO));
        faults.inject(FailureKind::Status500, 0.0, None);
        assert_eq!(faults.decide("GET", "/fhir/Slot").failure, None);
        faults.clear();
        assert_eq!(faults.config(), FaultConfig::default());
        assert_eq!(
            faults.set(FaultConfig {
                failure_rate: 1.5,
                ..FaultConfig::default()
            }),
            Err(FaultError::Rate(1.5))
        );
    }

    #[test]
    fn methods_and_phase_aim_the_fault() {
        let faults = Faults::default();
        faults
            .set(FaultConfig {
                failure_rate: 1.0,
                failure_kind: FailureKind::Status500,
                path_filter: Some("/Appointment".to_owned()),
                methods: vec!["POST".to_owned(), "patch".to_owned()],
                latency_ms: 9,
                ..FaultConfig::default()
            })
            .unwrap();
        // The write is hit, before it runs (the kind's usual phase)...
        let write = faults.decide("POST", "/fhir/Appointment");
        assert_eq!(write.failure, Some(FailureKind::Status500));
        assert_eq!(write.phase, FaultPhase::Before);
        assert_eq!(write.latency, Duration::from_millis(9));
        assert_eq!(
            faults.decide("PATCH", "/fhir/Appointment/a1").failure,
            Some(FailureKind::Status500)
        );
        // ...the reads of the same type are not.
        assert_eq!(faults.decide("GET", "/fhir/Appointment"), Decision::none());
        // Malformed answers keep their usual phase (after) unless told otherwise.
        faults.inject(FailureKind::MalformedJson, 1.0, Some("/Appointment"));
        assert_eq!(
            faults.decide("POST", "/fhir/Appointment").phase,
            FaultPhase::After
        );
        let mut config = faults.config();
        config.phase = Some(FaultPhase::Before);
        faults.set(config.clone()).unwrap();
        assert_eq!(
            faults.decide("POST", "/fhir/Appointment").phase,
            FaultPhase::Before
        );
        config.phase = Some(FaultPhase::After);
        config.failure_kind = FailureKind::Reset;
        faults.set(config).unwrap();
        assert_eq!(
            faults.decide("POST", "/fhir/Appointment").phase,
            FaultPhase::After
        );
        // The first targeted requests can be let through.
        faults
            .set(FaultConfig {
                failure_rate: 1.0,
                path_filter: Some("/Communication".to_owned()),
                methods: vec!["POST".to_owned()],
                skip_first: 1,
                ..FaultConfig::default()
            })
            .unwrap();
        assert_eq!(faults.decide("GET", "/fhir/Communication").failure, None);
        assert_eq!(faults.decide("POST", "/fhir/Communication").failure, None);
        assert_eq!(
            faults.decide("POST", "/fhir/Communication").failure,
            Some(FailureKind::Status503)
        );
        // Latency alone, unphased, comes before.
        faults.clear();
        faults.set_latency(Duration::from_millis(5));
        assert_eq!(faults.decide("GET", "/fhir/Slot").phase, FaultPhase::Before);
    }

    #[test]
    fn config_json_shape() {
        let config: FaultConfig = serde_json::from_str(
            r#"{"failure_rate": 1.0, "failure_kind": "malformed_json", "path_filter": "/Slot"}"#,
        )
        .unwrap();
        assert_eq!(config.failure_kind, FailureKind::MalformedJson);
        assert_eq!(config.latency_ms, 0);
        assert_eq!((config.phase, config.methods.len()), (None, 0));
        let aimed: FaultConfig = serde_json::from_str(
            r#"{"failure_rate": 1.0, "failure_kind": "status500", "phase": "after", "methods": ["POST"]}"#,
        )
        .unwrap();
        assert_eq!(aimed.phase, Some(FaultPhase::After));
        assert_eq!(aimed.methods, ["POST"]);
        assert_eq!(serde_json::to_value(FaultPhase::Before).unwrap(), "before");
        assert!(serde_json::from_str::<FaultConfig>(r#"{"bogus": 1}"#).is_err());
        for (kind, name) in [
            (FailureKind::Status500, "status500"),
            (FailureKind::Status503, "status503"),
            (FailureKind::Reset, "reset"),
            (FailureKind::SlowBody, "slow_body"),
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
    }

    #[test]
    fn counter() {
        let faults = Faults::default();
        faults.log_requests(true);
        for (method, target) in [
            ("GET", "/fhir/Slot?status=free"),
            ("GET", "/fhir/Slot/1/_history"),
            ("POST", "/Appointment"),
            ("GET", "/fhir/metadata"),
        ] {
            let path = target.split('?').next().unwrap();
            faults.record(method, resource_type_of(path), target);
        }
        assert_eq!(faults.requests(), 4);
        assert_eq!(faults.requests_for("GET", "Slot"), 2);
        assert_eq!(faults.requests_for("POST", "Appointment"), 1);
        assert_eq!(faults.stats().by_method_and_type.len(), 3);
        let log = faults.recent_requests();
        assert_eq!(log.len(), 4);
        assert_eq!(
            (log[0].method.as_str(), log[0].target.as_str()),
            ("GET", "/fhir/Slot?status=free")
        );
        assert_eq!(log[2].method, "POST");
        faults.reset_stats();
        assert_eq!(faults.requests(), 0);
        assert!(faults.recent_requests().is_empty());
    }

    #[test]
    fn the_request_log_is_bounded() {
        let faults = Faults::default();
        faults.record("GET", "Slot", "/fhir/Slot?before=on");
        assert!(faults.recent_requests().is_empty(), "the log starts off");
        faults.log_requests(true);
        for i in 0..REQUEST_LOG_CAPACITY + 5 {
            faults.record("GET", "Slot", &format!("/fhir/Slot?n={i}"));
        }
        let log = faults.recent_requests();
        assert_eq!(log.len(), REQUEST_LOG_CAPACITY);
        assert_eq!(log[0].target, "/fhir/Slot?n=5");
    }
}
