//! Fault injection through the real gateway: the sandbox's knobs make the EHR slow,
//! failing or broken, and the facade must answer with the documented status codes as
//! OperationOutcomes, open its breaker and recover, and never hang. Also `/metrics`
//! after real traffic.
//!
//! The read cache is disabled in the fault tests so that every request reaches the EHR
//! (stale serving has its own tests in `cache.rs`); retries are off so that one request
//! is one upstream attempt. Every request has the client timeout from `support`.

use std::time::Duration;

use portico_sandbox::faults::{FailureKind, FaultConfig};
use serde_json::Value;

use crate::support::{TestApp, sandbox};

const SCOPES: &str = "launch/patient patient/*.rs";
const PATIENT: &str = "/fhir/Patient/pat-1";
/// The gateway's whole-request timeout toward the EHR in these tests.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(500);

async fn faulty_app() -> TestApp {
    TestApp::spawn_with(sandbox().await, |config, upstream| {
        upstream.request_timeout = UPSTREAM_TIMEOUT;
        config.cache.enabled = false;
        config.resilience.max_attempts = 1;
        config.resilience.breaker_failure_threshold = 3;
        config.resilience.breaker_cool_down = Duration::from_millis(300);
    })
    .await
}

/// Reads the patient through the facade: status, content type and JSON body.
async fn read_patient(app: &TestApp, token: &str) -> (u16, String, Value) {
    let res = app
        .http
        .get(app.url(PATIENT))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the gateway answers in time");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

/// Asserts an OperationOutcome error with this status and FHIR issue code.
async fn expect_outcome(app: &TestApp, token: &str, status: u16, code: &str) {
    let (got, content_type, body) = read_patient(app, token).await;
    assert_eq!(got, status, "{body}");
    assert!(
        content_type.starts_with("application/fhir+json"),
        "{content_type}"
    );
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], code, "{body}");
}

/// `/readyz?strict=true`: the EHR's checks decide too (the load balancer's `/readyz`
/// keeps a replica whose EHR fails; see `gateway.rs`).
async fn readyz(app: &TestApp) -> (u16, Value) {
    let res = app
        .http
        .get(app.url("/readyz?strict=true"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("readyz answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A healthy read first, so that tokens and keys are warm and the path is known good.
async fn warmed(app: &TestApp) -> String {
    let token = app.patient_token("pat-1", SCOPES);
    let (status, _, body) = read_patient(app, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "pat-1");
    token
}

#[tokio::test]
async fn latency_beyond_the_upstream_timeout_is_a_504() {
    let app = faulty_app().await;
    let token = warmed(&app).await;
    app.sandbox
        .faults()
        .set_latency(UPSTREAM_TIMEOUT + Duration::from_millis(1500));
    expect_outcome(&app, &token, 504, "timeout").await;
}

#[tokio::test]
async fn an_upstream_500_is_a_502() {
    let app = faulty_app().await;
    let token = warmed(&app).await;
    app.sandbox
        .faults()
        .inject(FailureKind::Status500, 1.0, Some("/Patient"));
    expect_outcome(&app, &token, 502, "transient").await;
}

#[tokio::test]
async fn malformed_json_from_the_ehr_is_a_502() {
    let app = faulty_app().await;
    let token = warmed(&app).await;
    app.sandbox
        .faults()
        .inject(FailureKind::MalformedJson, 1.0, Some("/Patient"));
    expect_outcome(&app, &token, 502, "transient").await;
}

#[tokio::test]
async fn a_connection_reset_is_a_502() {
    let app = faulty_app().await;
    let token = warmed(&app).await;
    app.sandbox
        .faults()
        .inject(FailureKind::Reset, 1.0, Some("/Patient"));
    expect_outcome(&app, &token, 502, "transient").await;
}

#[tokio::test]
async fn a_body_slower_than_the_timeout_is_a_504() {
    let app = faulty_app().await;
    let token = warmed(&app).await;
    app.sandbox
        .faults()
        .set(FaultConfig {
            failure_rate: 1.0,
            failure_kind: FailureKind::SlowBody,
            path_filter: Some("/Patient".to_owned()),
            slow_body_ms: 3000,
            ..FaultConfig::default()
        })
        .unwrap();
    expect_outcome(&app, &token, 504, "timeout").await;
}

#[tokio::test]
async fn repeated_failures_open_the_breaker_and_it_recovers() {
    let app = faulty_app().await;
    let token = warmed(&app).await;
    let (status, _) = readyz(&app).await;
    assert_eq!(status, 200);

    app.sandbox
        .faults()
        .inject(FailureKind::Status500, 1.0, Some("/Patient"));
    for _ in 0..3 {
        expect_outcome(&app, &token, 502, "transient").await;
    }

    // Open: refused at once, without calling the EHR.
    app.sandbox.faults().reset_stats();
    expect_outcome(&app, &token, 503, "transient").await;
    assert_eq!(
        app.sandbox.faults().requests(),
        0,
        "an open breaker sends nothing upstream"
    );
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["upstream_breaker"]["status"], "failing");
    assert_eq!(body["checks"]["upstream_breaker"]["state"], "open");
    assert_eq!(body["checks"]["upstream_metadata"]["status"], "ok");

    // The EHR recovers; after the cool-down the probe succeeds and the breaker closes.
    app.sandbox.faults().clear();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, body) = read_patient(&app, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "pat-1");
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["upstream_breaker"]["state"], "closed");
}

/// The value of the unlabelled sample `name` in a Prometheus text body.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_text_format() {
    let app = TestApp::spawn().await;
    let token = app.patient_token("pat-1", SCOPES);
    for _ in 0..3 {
        let (status, _, _) = read_patient(&app, &token).await;
        assert_eq!(status, 200);
    }
    let res = app
        .http
        .get(app.url("/fhir/Observation?category=vital-signs&_count=5"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .http
        .get(app.url("/no/such/pat-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    let has = |s: &str| assert!(text.contains(s), "missing {s:?} in\n{text}");
    // Requests are labelled by route template, never by a raw path with an id.
    has(
        "portico_http_requests_total{route=\"/fhir/{resource_type}/{id}\",method=\"GET\",status=\"200\"} 3",
    );
    has(
        "portico_http_requests_total{route=\"/fhir/{resource_type}\",method=\"GET\",status=\"200\"} 1",
    );
    has("portico_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1");
    assert!(
        !text.contains("pat-1"),
        "an id leaked into a label:\n{text}"
    );
    has("# TYPE portico_http_request_duration_seconds histogram");
    has("portico_http_request_duration_seconds_count{route=\"/fhir/{resource_type}/{id}\"} 3");
    has(
        "portico_http_request_duration_seconds_bucket{route=\"/fhir/{resource_type}/{id}\",le=\"+Inf\"} 3",
    );
    for name in [
        "portico_upstream_requests_total",
        "portico_upstream_retries_total",
        "portico_upstream_rejections_total",
        "portico_cache_misses_total",
        "portico_cache_stale_serves_total",
        "portico_cache_evictions_total",
        "portico_cache_single_flight_joins_total",
    ] {
        has(&format!("# TYPE {name} counter"));
    }
    assert_eq!(sample(&text, "portico_upstream_breaker_state"), Some(0.0));
    // The second and third reads of the patient were cache hits.
    assert!(
        sample(&text, "portico_cache_hits_total").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "portico_upstream_requests_total").unwrap() >= 2.0,
        "{text}"
    );
    // Entries and bytes are gauges (moka's counts lag until its maintenance runs).
    has("# TYPE portico_cache_entries gauge");
    has("# TYPE portico_cache_bytes gauge");
}
