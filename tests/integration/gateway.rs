//! The gateway skeleton: probes, request ids, error formats, limits, shutdown.

use std::net::SocketAddr;

use portico_sandbox::faults::FailureKind;
use portico_upstream::{ResolvedAuth, SecretString};
use serde_json::Value;

use crate::support::{TestApp, http_client, sandbox};

#[tokio::test]
async fn healthz_answers_without_the_ehr() {
    let app = TestApp::spawn().await;
    app.sandbox
        .faults()
        .inject(FailureKind::Status503, 1.0, None);
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn readyz_follows_the_ehr() {
    let app = TestApp::spawn().await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["upstream_metadata"]["status"], "ok");

    // The EHR's metadata fails: strictly, not ready, and the failing check is named.
    app.sandbox
        .faults()
        .inject(FailureKind::Status503, 1.0, Some("/metadata"));
    let res = app
        .http
        .get(app.url("/readyz?strict=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["upstream_metadata"]["status"], "failing");
    assert_eq!(body["checks"]["upstream_credentials"]["status"], "ok");
    // For the load balancer, the replica keeps serving what it can (cached and stale
    // answers): degraded, not taken out.
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["upstream_metadata"]["status"], "failing");

    app.sandbox.faults().clear();
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn readyz_fails_when_the_upstream_credential_is_refused() {
    let app = TestApp::spawn_with(sandbox().await, |_, upstream| {
        if let ResolvedAuth::ClientCredentials { client_secret, .. } = &mut upstream.auth {
            *client_secret = SecretString::new("not-the-secret");
        } else {
            panic!("the demo gateway uses client credentials");
        }
    })
    .await;
    let res = app
        .http
        .get(app.url("/readyz?strict=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["upstream_credentials"]["status"], "failing");
    // The secret never appears in what the probe says.
    assert!(!body.to_string().contains("not-the-secret"));
}

#[tokio::test]
async fn request_ids_are_generated_or_propagated() {
    let app = TestApp::spawn().await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let res = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn errors_use_each_surface_format() {
    let app = TestApp::spawn().await;
    // Without a token: 401, as an OperationOutcome, with the challenge.
    let res = app
        .http
        .get(app.url("/fhir/Patient/pat-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["issue"][0]["code"],
        "login"
    );

    let token = app.patient_token("pat-1", "patient/*.rs");
    let res = app
        .http
        .get(app.url("/fhir/NoSuchThing/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/fhir+json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], "not-found");

    let res = app
        .http
        .get(app.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_anything_else() {
    let app = TestApp::spawn().await;
    app.sandbox.faults().reset_stats();
    let big = vec![b'x'; 200 * 1024];
    let res = app
        .http
        .post(app.url("/fhir/Observation"))
        .header("content-type", "application/fhir+json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(app.sandbox.faults().requests(), 0, "nothing went upstream");
}

/// A 2 MB body — declared or streamed in chunks — to a portal write and to the facade:
/// each answer is a 413 the client can read (the gateway reads the rest of the body
/// before answering instead of resetting the connection), in the surface's format.
#[tokio::test]
async fn oversized_bodies_get_a_readable_413_in_the_api_format() {
    let app = TestApp::spawn().await;
    let portal = app.portal_token("pat-1");
    let fhir = app.patient_token("pat-1", "launch/patient patient/*.rs patient/*.cu");
    let big = || vec![b' '; 2 * 1024 * 1024];
    let chunked = || {
        let chunks = (0..32).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
        reqwest::Body::wrap_stream(futures::stream::iter(chunks))
    };
    for streamed in [false, true] {
        let body = if streamed { chunked() } else { big().into() };
        let res = app
            .http
            .post(app.url("/api/v1/messages/threads"))
            .bearer_auth(&portal)
            .header("content-type", "application/json")
            .header("idempotency-key", "big-1")
            .body(body)
            .send()
            .await
            .expect("a status, not a broken pipe");
        assert_eq!(res.status(), 413, "streamed: {streamed}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "payload_too_large");

        let body = if streamed { chunked() } else { big().into() };
        let res = app
            .http
            .post(app.url("/fhir/Observation"))
            .bearer_auth(&fhir)
            .header("content-type", "application/fhir+json")
            .body(body)
            .send()
            .await
            .expect("a status, not a broken pipe");
        assert_eq!(res.status(), 413, "streamed: {streamed}");
        let outcome: Value = res.json().await.unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
}

/// 404, 405 and 415 in the surface's format, whichever layer refused.
#[tokio::test]
async fn routing_and_media_type_errors_are_in_the_api_format() {
    let app = TestApp::spawn().await;
    let portal = app.portal_token("pat-1");
    let fhir = app.patient_token("pat-1", "launch/patient patient/*.rs");
    let checks = [
        ("GET", "/api/v1/no-such-thing", &portal, None, 404),
        ("DELETE", "/api/v1/me", &portal, None, 405),
        (
            "POST",
            "/api/v1/messages/threads",
            &portal,
            Some("text/plain"),
            415,
        ),
        ("GET", "/fhir/NotAType/1", &fhir, None, 404),
        ("PUT", "/fhir/metadata", &fhir, None, 405),
        ("POST", "/fhir/Observation", &fhir, Some("text/plain"), 415),
    ];
    for (method, path, token, content_type, status) in checks {
        let mut request = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(token);
        if let Some(ct) = content_type {
            request = request
                .header("content-type", ct)
                .header("idempotency-key", "k-415")
                .body("hello");
        }
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let body: Value = res.json().await.unwrap();
        if path.starts_with("/fhir") {
            assert!(content_type.starts_with("application/fhir+json"), "{path}");
            assert_eq!(body["resourceType"], "OperationOutcome", "{path}");
        } else {
            assert_eq!(content_type, "application/problem+json", "{path}");
            assert!(body["code"].is_string(), "{path}: {body}");
            assert_eq!(body["status"], status, "{path}");
        }
    }
}

#[tokio::test]
async fn stops_serving_after_shutdown() {
    let app = TestApp::spawn().await;
    let url = app.url("/healthz");
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 200);
    drop(app);
    let mut refused = false;
    for _ in 0..50 {
        if http_client().get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "the gateway still answers after shutdown");
}

#[tokio::test]
async fn a_profile_the_ehr_cannot_serve_is_refused_at_start_naming_what_is_missing() {
    let sandbox = sandbox().await;
    let (mut config, upstream) =
        portico::demo::gateway_for_sandbox(&sandbox, SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap();
    // Epic schedules through $find/$book, which the sandbox does not declare.
    config.ehr.profile = portico::config::EhrProfile::Epic;
    let error = portico::app::App::build_with(config, upstream)
        .await
        .expect_err("the profile does not fit this EHR")
        .to_string();
    assert!(error.contains("Appointment $find"), "{error}");
    assert!(error.contains("Appointment $book"), "{error}");
    assert!(error.contains("`epic`"), "{error}");
}

#[tokio::test]
async fn audit_events_reach_the_sandbox_as_in_the_demo() {
    let sandbox = sandbox().await;
    let base = sandbox.fhir_base();
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let app = TestApp::spawn_with(sandbox, |config, _| {
        config.audit.instance = Some("gw-test".to_owned());
        portico::demo::send_audit_events_to(config, &base, spool_dir).unwrap();
    })
    .await;
    let token = app.patient_token("pat-1", "launch/patient patient/*.rs");
    let res = app
        .http
        .get(app.url("/fhir/Patient/pat-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The JSON line is written before the response; the AuditEvent follows it.
    let line = app
        .audit_records()
        .into_iter()
        .find(|r| r["resource_type"] == "Patient" && r["interaction"] == "read")
        .expect("the read is in the audit log");
    assert_eq!(line["instance"], "gw-test");
    let mut events = Vec::new();
    for _ in 0..500 {
        events = app.all_stored("AuditEvent");
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let event = events
        .iter()
        .find(|e| e["subtype"][0]["code"] == "read")
        .unwrap_or_else(|| panic!("no AuditEvent for the read in the sandbox: {events:?}"));
    assert_eq!(
        event["source"]["observer"]["identifier"]["value"],
        "gw-test"
    );
    assert_eq!(event["action"], "R");
    assert_eq!(event["outcome"], "0");
    let entities = event["entity"].as_array().unwrap();
    assert!(
        entities
            .iter()
            .any(|e| e["what"]["reference"] == "Patient/pat-1"),
        "{event}"
    );
    // The gateway's metrics count what was delivered.
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE portico_audit_fhir_delivered_total counter"),
        "{text}"
    );
    assert!(text.contains("portico_audit_failures_total 0"), "{text}");
}
