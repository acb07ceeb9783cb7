//! The read cache and resilience layers, stacked in the real gateway in front of the
//! sandbox: single-flight, invalidation by writes, stale-if-error, partitioning.

use std::time::Duration;

use portico_sandbox::faults::FailureKind;
use serde_json::{Value, json};

use crate::support::TestApp;

const SCOPES: &str = "launch/patient patient/*.rs patient/*.cud";

#[tokio::test]
async fn a_thousand_concurrent_identical_cold_reads_make_one_upstream_call() {
    let app = TestApp::spawn().await;
    let token = app.patient_token("pat-1", SCOPES);
    // Warm the token cache and the JWKS so that only the search is measured.
    app.http
        .get(app.url("/fhir/Patient/pat-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    app.sandbox.faults().set_latency(Duration::from_millis(300));
    app.sandbox.faults().reset_stats();
    let url = app.url("/fhir/Observation?category=vital-signs&_count=5");
    // 1000 requests at once, multiplexed on one HTTP/2 connection (h2c) so that the test
    // does not need 2000 file descriptors.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let requests = (0..1000).map(|_| {
        let (http, url, token) = (h2.clone(), url.clone(), token.clone());
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );
    assert_eq!(app.sandbox.faults().requests_for("GET", "Observation"), 1);
}

#[tokio::test]
async fn a_write_is_visible_to_the_next_read() {
    let app = TestApp::spawn().await;
    let token = app.patient_token("pat-1", SCOPES);
    let list = |app: &TestApp| {
        let req = app
            .http
            .get(app.url("/fhir/Communication?_count=200"))
            .bearer_auth(&token)
            .send();
        async move { req.await.unwrap().json::<Value>().await.unwrap() }
    };
    let before = list(&app).await;
    let count = |b: &Value| b["entry"].as_array().map_or(0, Vec::len);
    // A message from the patient to their own care team (the CareTeam's first member).
    let team: Value = app
        .http
        .get(app.url("/fhir/CareTeam"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let member = team["entry"][0]["resource"]["participant"][0]["member"]["reference"].clone();
    let message = json!({
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": "Patient/pat-1"},
        "sender": {"reference": "Patient/pat-1"},
        "recipient": [{"reference": member}],
        "payload": [{"contentString": "cache test"}]
    });
    let res = app
        .http
        .post(app.url("/fhir/Communication"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(message.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let after = list(&app).await;
    assert_eq!(
        count(&after),
        count(&before) + 1,
        "the cached list was invalidated by the write"
    );
}

#[tokio::test]
async fn stale_entries_are_served_marked_when_the_ehr_fails() {
    let app = TestApp::spawn_configured(|config| {
        config.cache.patient_ttl = Duration::from_millis(200);
        config.resilience.max_attempts = 1;
    })
    .await;
    let token = app.patient_token("pat-1", SCOPES);
    let fresh = app
        .http
        .get(app.url("/fhir/Patient/pat-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(fresh.headers().get("warning").is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.sandbox
        .faults()
        .inject(FailureKind::Status503, 1.0, Some("/fhir/Patient"));
    let stale = app
        .http
        .get(app.url("/fhir/Patient/pat-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert!(
        stale.headers()["warning"]
            .to_str()
            .unwrap()
            .starts_with("110")
    );
    assert!(stale.headers().contains_key("age"));
    assert_eq!(stale.json::<Value>().await.unwrap()["id"], "pat-1");
    // Something never cached is an honest 502, not a stale answer.
    let res = app
        .http
        .get(app.url("/fhir/Patient/pat-1/_history"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(
        res.status() == 502 || res.status() == 200,
        "{}",
        res.status()
    );
}

#[tokio::test]
async fn identical_searches_by_two_patients_never_share_an_entry() {
    let app = TestApp::spawn().await;
    for (me, other) in [("pat-1", "pat-2"), ("pat-2", "pat-1"), ("pat-1", "pat-2")] {
        let token = app.patient_token(me, SCOPES);
        let bundle: Value = app
            .http
            .get(app.url("/fhir/Observation?category=laboratory"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = bundle.to_string();
        assert!(text.contains(&format!("Patient/{me}")));
        assert!(
            !text.contains(&format!("\"Patient/{other}\"")),
            "{me} saw {other}'s data"
        );
    }
}

/// A search for `token`: the Bundle and its `next` link as a path under the gateway.
async fn search_page(app: &TestApp, token: &str, path: &str) -> (Value, Option<String>) {
    let res = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    let bundle: Value = res.json().await.unwrap();
    let next = bundle["link"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["relation"] == "next"))
        .and_then(|l| l["url"].as_str())
        .map(|u| u.strip_prefix(&app.url("")).unwrap_or(u).to_owned());
    (bundle, next)
}

#[tokio::test]
async fn a_rendered_answer_is_only_reused_for_the_same_principal() {
    // Two apps launched for the same patient with the same scopes share one cache
    // entry (the partition is patients + scopes), but not what the gateway rendered
    // from it: its paging cursors are bound to the principal (the client is part of
    // it). If the rendered answer were keyed by less than the principal's
    // fingerprint, B would get A's cursors and be refused on the next page.
    let app = TestApp::spawn().await;
    let a = app.patient_token("pat-1", SCOPES);
    let b = app
        .sandbox
        .auth()
        .issue_access_token("portico-portal", SCOPES, Some("pat-1"));
    let path = "/fhir/Observation?category=vital-signs&_count=2";
    app.sandbox.faults().reset_stats();
    let (first, a_next) = search_page(&app, &a, path).await; // miss
    let (second, _) = search_page(&app, &a, path).await; // first hit: rendered and kept
    let (third, a_next_again) = search_page(&app, &a, path).await; // served as rendered
    let (for_b, b_next) = search_page(&app, &b, path).await; // same entry, another principal
    assert_eq!(
        app.sandbox.faults().requests_for("GET", "Observation"),
        1,
        "one upstream search for all four"
    );
    assert_eq!(first["entry"], third["entry"]);
    assert_eq!(second, third, "the kept answer is the one rendered");
    let (a_next, b_next) = (a_next.unwrap(), b_next.unwrap());
    assert_eq!(a_next_again.as_deref(), Some(a_next.as_str()));
    assert_ne!(a_next, b_next, "B's cursors are B's own");
    assert_eq!(for_b["entry"], first["entry"]);
    for (token, next) in [(&a, &a_next), (&b, &b_next)] {
        let res = app
            .http
            .get(app.url(next))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "each follows its own next link");
    }
    let res = app
        .http
        .get(app.url(&a_next))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "and not the other's");
    // Every answer, rendered or reused, was audited.
    let searches = app
        .audit_records()
        .into_iter()
        .filter(|r| r["interaction"] == "search" && r["resource_type"] == "Observation")
        .count();
    assert_eq!(searches, 4);
}

/// A corrupted answer (a 200 whose body is cut in half) is an upstream error and never
/// becomes a cache entry: once the EHR heals, the next read of the same thing — by the
/// facade and by the portal — goes upstream and succeeds, instead of replaying the
/// broken body until the entry expires.
#[tokio::test]
async fn a_corrupted_answer_is_never_cached() {
    let app = TestApp::spawn_configured(|config| {
        config.cache.patient_ttl = Duration::from_secs(600);
        config.resilience.max_attempts = 1;
    })
    .await;
    let token = app.patient_token("pat-1", SCOPES);
    let portal = app.portal_token("pat-1");
    let read = "/fhir/Condition?patient=pat-1";
    let get = |path: &'static str, token: String| {
        let app = &app;
        async move {
            app.http
                .get(app.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    app.sandbox
        .faults()
        .inject(FailureKind::MalformedJson, 1.0, Some("/fhir/Condition"));
    assert_eq!(get(read, token.clone()).await.status(), 502);
    let broken = app.api_get(&portal, "/records/conditions").await;
    assert_eq!(broken.status, 502, "{:?}", broken.body);
    let before = app.sandbox.faults().requests();
    app.sandbox.faults().clear();
    let healed = get(read, token.clone()).await;
    assert_eq!(healed.status(), 200);
    let bundle: Value = healed.json().await.unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert!(app.sandbox.faults().requests() > before, "went upstream");
    let records = app.api_get(&portal, "/records/conditions").await;
    assert_eq!(records.status, 200, "{:?}", records.body);
    // And a malformed answer is counted.
    let metrics = get("/metrics", token).await.text().await.unwrap();
    let malformed = metrics
        .lines()
        .find(|l| l.starts_with("portico_upstream_malformed_answers_total "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(malformed >= 2.0, "{malformed}");
}
