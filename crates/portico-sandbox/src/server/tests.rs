//! End-to-end tests: a real sandbox on port 0, driven over HTTP with reqwest.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::{Sandbox, SandboxConfig};
use crate::faults::{FailureKind, FaultConfig, FaultPhase};

async fn start(require_auth: bool) -> Sandbox {
    Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        SandboxConfig {
            seed: 7,
            patients: 2,
            require_auth,
            latency: Duration::ZERO,
        },
    )
    .await
    .unwrap()
}

const FHIR: &str = "application/fhir+json";

async fn json_of(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn issue_code(outcome: &Value) -> &str {
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    outcome["issue"][0]["code"].as_str().unwrap()
}

fn observation(patient: &str, date: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": date
    })
}

#[tokio::test]
async fn crud_versions_and_conditional_create() {
    let sb = start(false).await;
    let base = sb.fhir_base();
    let http = Client::new();

    // Create: 201, server id, version 1, ETag, Location, Last-Modified.
    let created = http
        .post(format!("{base}/Observation"))
        .header("content-type", FHIR)
        .body(observation("crud-p", "2024-05-01").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["etag"], "W/\"1\"");
    assert!(created.headers().contains_key("last-modified"));
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let body = json_of(created).await;
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["meta"]["versionId"], "1");
    assert_eq!(location, format!("{base}/Observation/{id}/_history/1"));

    // Update with the right If-Match, then a stale one.
    let mut v2 = body.clone();
    v2["status"] = json!("amended");
    let updated = http
        .put(format!("{base}/Observation/{id}"))
        .header("content-type", FHIR)
        .header("if-match", "W/\"1\"")
        .body(v2.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(updated.headers()["etag"], "W/\"2\"");
    let stale = http
        .put(format!("{base}/Observation/{id}"))
        .header("content-type", FHIR)
        .header("if-match", "W/\"1\"")
        .body(v2.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(issue_code(&json_of(stale).await), "conflict");

    // PUT with a mismatched id is refused; PUT on a new id creates it with that id.
    let mismatched = http
        .put(format!("{base}/Observation/other-id"))
        .header("content-type", FHIR)
        .body(v2.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(mismatched.status(), StatusCode::BAD_REQUEST);
    let mut client_id = observation("crud-p", "2024-05-02");
    client_id["id"] = json!("client-chosen");
    let put_new = http
        .put(format!("{base}/Observation/client-chosen"))
        .header("content-type", FHIR)
        .body(client_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put_new.status(), StatusCode::CREATED);

    // vread and history.
    let v1 = http
        .get(format!("{base}/Observation/{id}/_history/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), StatusCode::OK);
    assert_eq!(json_of(v1).await["status"], "final");
    let hist = json_of(
        http.get(format!("{base}/Observation/{id}/_history"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(hist["type"], "history");
    assert_eq!(hist["total"], 2);
    assert_eq!(hist["entry"][0]["resource"]["meta"]["versionId"], "2");
    assert_eq!(hist["entry"][1]["request"]["method"], "POST");

    // JSON Patch: applied, If-Match honoured, id and resourceType protected.
    let patch = |ops: Value, etag: Option<&str>| {
        let mut req = http
            .patch(format!("{base}/Observation/{id}"))
            .header("content-type", "application/json-patch+json")
            .body(ops.to_string());
        if let Some(etag) = etag {
            req = req.header("if-match", etag);
        }
        req.send()
    };
    let patched = patch(
        json!([{"op": "replace", "path": "/status", "value": "corrected"}]),
        Some("W/\"2\""),
    )
    .await
    .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let patched = json_of(patched).await;
    assert_eq!(
        (
            patched["status"].as_str(),
            patched["meta"]["versionId"].as_str()
        ),
        (Some("corrected"), Some("3"))
    );
    let stale_patch = patch(json!([{"op": "remove", "path": "/code"}]), Some("W/\"2\""))
        .await
        .unwrap();
    assert_eq!(stale_patch.status(), StatusCode::PRECONDITION_FAILED);
    let id_patch = patch(
        json!([{"op": "replace", "path": "/id", "value": "x"}]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(id_patch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let invalid_patch = patch(json!([{"op": "add", "path": "/bogus", "value": 1}]), None)
        .await
        .unwrap();
    assert_eq!(invalid_patch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let wrong_type = http
        .patch(format!("{base}/Observation/{id}"))
        .header("content-type", FHIR)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Delete: 204, then 410 on read, and history still shows every version.
    let deleted = http
        .delete(format!("{base}/Observation/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = http
        .get(format!("{base}/Observation/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::GONE);
    assert_eq!(issue_code(&json_of(gone).await), "deleted");
    let hist = json_of(
        http.get(format!("{base}/Observation/{id}/_history"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(hist["total"], 4);
    assert_eq!(hist["entry"][0]["request"]["method"], "DELETE");
    assert!(hist["entry"][0].get("resource").is_none());
    let missing = http
        .get(format!("{base}/Observation/never-was"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(issue_code(&json_of(missing).await), "not-found");

    // Conditional create twice: one resource; the second answer is 200 with it.
    let task = json!({"resourceType": "Task", "status": "requested", "intent": "order",
                      "identifier": [{"system": "urn:portico:idempotency", "value": "k-1"}]});
    let mut ids = Vec::new();
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let r = http
            .post(format!("{base}/Task"))
            .header("content-type", FHIR)
            .header("if-none-exist", "identifier=urn:portico:idempotency|k-1")
            .body(task.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
        ids.push(json_of(r).await["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    let count = json_of(
        http.get(format!(
            "{base}/Task?identifier=urn:portico:idempotency|k-1&_summary=count"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(count["total"], 1);
    assert!(count.get("entry").is_none(), "no empty arrays in FHIR JSON");

    // Prefer: return=minimal gives no body.
    let minimal = http
        .post(format!("{base}/Task"))
        .header("content-type", FHIR)
        .header("prefer", "return=minimal")
        .body(task.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(minimal.status(), StatusCode::CREATED);
    assert!(minimal.headers().contains_key("location"));
    assert!(minimal.bytes().await.unwrap().is_empty());
    let conflict = http
        .post(format!("{base}/Task"))
        .header("content-type", FHIR)
        .header("if-none-exist", "identifier=k-1")
        .body(task.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), StatusCode::PRECONDITION_FAILED);

    // Invalid resources: 422 (unknown element, wrong type), 400 (not JSON), 415.
    for (body, status) in [
        (
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "bogus": 1}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"resourceType": "Patient"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("{not json".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let r = http
            .post(format!("{base}/Observation"))
            .header("content-type", FHIR)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        json_of(r).await;
    }
    let xml = http
        .post(format!("{base}/Observation"))
        .header("content-type", "application/fhir+xml")
        .body("<Observation/>")
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let unknown_type = http.get(format!("{base}/Nope/1")).send().await.unwrap();
    assert_eq!(unknown_type.status(), StatusCode::NOT_FOUND);
    let not_allowed = http
        .delete(format!("{base}/Observation"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_allowed.status(), StatusCode::METHOD_NOT_ALLOWED);
    issue_code(&json_of(not_allowed).await);

    sb.shutdown().await;
}

#[tokio::test]
async fn search_semantics_over_http() {
    let sb = start(false).await;
    let base = sb.fhir_base();
    let http = Client::new();
    let store = sb.store();
    for day in 1..=23 {
        let mut obs = observation("search-p", &format!("2024-03-{day:02}T08:00:00Z"));
        obs["id"] = json!(format!("o{day:02}"));
        store.insert_loaded(obs).unwrap();
    }
    store
        .insert_loaded(json!({"resourceType": "Schedule", "id": "sch1", "actor": [{"reference": "Practitioner/dr1"}]}))
        .unwrap();
    for i in 0..3 {
        store
            .insert_loaded(json!({"resourceType": "Slot", "id": format!("slot{i}"), "status": "free",
                "schedule": {"reference": "Schedule/sch1"},
                "start": format!("2030-01-0{}T09:00:00Z", i + 1), "end": format!("2030-01-0{}T09:30:00Z", i + 1)}))
            .unwrap();
    }
    let get = |query: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}/{query}")).send().await.unwrap();
            (r.status(), json_of(r).await)
        }
    };
    let ids = |bundle: &Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Prefixes and comma OR.
    let (_, b) = get("Observation?patient=search-p&date=ge2024-03-20".into()).await;
    assert_eq!(ids(&b), vec!["o20", "o21", "o22", "o23"]);
    let (_, b) = get("Observation?patient=search-p&date=lt2024-03-02,gt2024-03-22".into()).await;
    assert_eq!(ids(&b), vec!["o01", "o23"]);
    let (_, b) =
        get("Observation?subject=Patient/search-p&date=eb2024-03-03&date=sa2024-03-01".into())
            .await;
    assert_eq!(ids(&b), vec!["o02"]);

    // _sort descending with a stable tiebreak; _summary=count; _count=0.
    let (_, b) = get("Observation?patient=search-p&_sort=-date&_count=3".into()).await;
    assert_eq!(ids(&b), vec!["o23", "o22", "o21"]);
    let (_, b) = get("Observation?patient=search-p&_summary=count".into()).await;
    assert_eq!((b["total"].as_u64(), b.get("entry")), (Some(23), None));
    let (_, b) = get("Observation?patient=search-p&_count=0".into()).await;
    assert_eq!(b["total"], 23);

    // Paging through next links: every result exactly once, links on our own base.
    let mut url = format!("{base}/Observation?patient=search-p&_count=5&_sort=date");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let b = json_of(r).await;
        assert_eq!(b["total"], 23);
        assert_eq!(
            b["entry"][0]["fullUrl"]
                .as_str()
                .unwrap()
                .split("/fhir/")
                .next()
                .unwrap(),
            sb.base_url()
        );
        seen.extend(ids(&b));
        pages += 1;
        let next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        match next {
            Some(next) => {
                assert!(next.starts_with(&base), "{next}");
                url = next;
            }
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 23);
    assert_eq!(seen[0], "o01");

    // POST _search with a form body.
    let r = http
        .post(format!("{base}/Observation/_search"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("patient=search-p&date=2024-03-05")
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&json_of(r).await), vec!["o05"]);

    // _include (with :iterate) and _revinclude.
    let (_, b) = get("Slot?schedule=sch1&_include=Slot:schedule&start=ge2030-01-02".into()).await;
    assert_eq!(ids(&b), vec!["slot1", "slot2"]);
    let included: Vec<_> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["fullUrl"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(included, vec![format!("{base}/Schedule/sch1")]);
    let (_, b) = get("Schedule?_id=sch1&_revinclude=Slot:schedule".into()).await;
    assert_eq!(b["entry"].as_array().unwrap().len(), 4);

    // Unknown parameters: 400 unless Prefer: handling=lenient.
    let (status, b) = get("Observation?patient=search-p&bogus=1".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_code(&b), "not-supported");
    let lenient = http
        .get(format!(
            "{base}/Observation?patient=search-p&bogus=1&_count=1"
        ))
        .header("prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    assert_eq!(lenient.status(), StatusCode::OK);
    let (status, _) = get("Observation?date=notadate".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The generated data is searchable too: each patient has resources.
    let patient = &sb.patients()[0];
    let (status, b) = get(format!("Patient?_id={}", patient.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b["total"], 1);

    // metadata describes the server without a token.
    let (status, cs) = get("metadata".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    sb.shutdown().await;
}

#[tokio::test]
async fn faults_and_request_counter() {
    let sb = start(false).await;
    let base = sb.fhir_base();
    let http = Client::new();
    let patient = sb.patients()[0].id.clone();
    let read = format!("{base}/Patient/{patient}");
    assert_eq!(
        http.get(&read).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Counter: by method and type, resettable; /_sandbox and /auth are not counted.
    sb.faults().reset_stats();
    for _ in 0..3 {
        http.get(&read).send().await.unwrap();
    }
    http.get(format!("{base}/Slot?_count=1"))
        .send()
        .await
        .unwrap();
    http.get(format!("{}/_sandbox/stats", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sb.faults().requests(), 4);
    assert_eq!(sb.faults().requests_for("GET", "Patient"), 3);
    assert_eq!(sb.faults().requests_for("GET", "Slot"), 1);
    let stats = json_of(
        http.get(format!("{}/_sandbox/stats", sb.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stats["total"], 4);
    let reset = http
        .post(format!("{}/_sandbox/stats/reset", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    assert_eq!(sb.faults().requests(), 0);

    // 500 and 503 as OperationOutcomes; 503 with Retry-After.
    sb.faults().inject(FailureKind::Status500, 1.0, None);
    let r = http.get(&read).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    issue_code(&json_of(r).await);
    sb.faults().inject(FailureKind::Status503, 1.0, None);
    let r = http.get(&read).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    // Faults never touch /auth or /_sandbox.
    let r = http
        .get(format!("{}/auth/patients", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A path filter targets only matching requests.
    sb.faults()
        .inject(FailureKind::Status503, 1.0, Some("/Slot"));
    assert_eq!(
        http.get(&read).send().await.unwrap().status(),
        StatusCode::OK
    );
    let r = http.get(format!("{base}/Slot")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Reset: no complete response.
    sb.faults().inject(FailureKind::Reset, 1.0, None);
    let outcome = match http.get(&read).send().await {
        Err(_) => None,
        Ok(r) => Some(r.bytes().await),
    };
    assert!(
        matches!(outcome, None | Some(Err(_))),
        "a reset must not deliver a complete response"
    );

    // Malformed JSON: 200 with a body that does not parse.
    sb.faults().inject(FailureKind::MalformedJson, 1.0, None);
    let r = http.get(&read).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = r.bytes().await.unwrap();
    assert!(!bytes.is_empty());
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    // Slow body over HTTP knobs: headers at once, the body over ~slow_body_ms.
    let config = FaultConfig {
        failure_rate: 1.0,
        failure_kind: FailureKind::SlowBody,
        slow_body_ms: 600,
        ..FaultConfig::default()
    };
    let put = http
        .put(format!("{}/_sandbox/faults", sb.base_url()))
        .json(&config)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(sb.faults().config(), config);
    let started = Instant::now();
    let r = http.get(&read).send().await.unwrap();
    let headers_at = started.elapsed();
    let body = r.bytes().await.unwrap();
    let body_at = started.elapsed();
    assert!(headers_at < Duration::from_millis(400), "{headers_at:?}");
    assert!(body_at >= Duration::from_millis(500), "{body_at:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["id"],
        patient.as_str()
    );

    // Latency, and a refused configuration.
    sb.faults().clear();
    sb.faults().set_latency(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(
        http.get(&read).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    sb.faults().clear();
    let bad = http
        .put(format!("{}/_sandbox/faults", sb.base_url()))
        .json(&json!({"failure_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        http.get(&read).send().await.unwrap().status(),
        StatusCode::OK
    );
    sb.shutdown().await;
}

/// Observations of `patient` the sandbox stores.
fn observations_of(sb: &Sandbox, patient: &str) -> usize {
    let store = sb.store();
    store
        .ids("Observation")
        .into_iter()
        .filter_map(|id| store.read("Observation", &id).ok()?.body)
        .filter(|body| {
            serde_json::from_slice::<Value>(body)
                .is_ok_and(|o| o["subject"]["reference"] == format!("Patient/{patient}"))
        })
        .count()
}

#[tokio::test]
async fn faults_strike_before_the_write_or_after_it_committed() {
    let sb = start(false).await;
    let base = sb.fhir_base();
    let http = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let kinds = [
        FailureKind::Status500,
        FailureKind::Status503,
        FailureKind::Reset,
        FailureKind::MalformedJson,
        FailureKind::SlowBody,
    ];
    for (n, kind) in kinds.into_iter().enumerate() {
        for phase in [FaultPhase::Before, FaultPhase::After] {
            let patient = format!("phase-{n}-{phase:?}");
            sb.faults()
                .set(FaultConfig {
                    failure_rate: 1.0,
                    failure_kind: kind,
                    path_filter: Some("/Observation".to_owned()),
                    methods: vec!["POST".to_owned()],
                    phase: Some(phase),
                    slow_body_ms: 1000,
                    ..FaultConfig::default()
                })
                .unwrap();
            // Reads of the same type are left alone.
            let search = http
                .get(format!("{base}/Observation?_count=1"))
                .send()
                .await
                .unwrap();
            assert_eq!(search.status(), StatusCode::OK, "{kind:?} {phase:?}");
            json_of(search).await;
            let sent = http
                .post(format!("{base}/Observation"))
                .header("content-type", FHIR)
                .timeout(Duration::from_millis(400))
                .body(observation(&patient, "2024-05-01").to_string())
                .send()
                .await;
            let answer = match sent {
                Ok(r) => {
                    let status = r.status();
                    r.bytes().await.map(|b| (status, b)).ok()
                }
                Err(_) => None,
            };
            let parsed = answer
                .as_ref()
                .and_then(|(s, b)| Some((*s, serde_json::from_slice::<Value>(b).ok()?)));
            // Never a well-formed "created" answer.
            assert!(
                !matches!(&parsed, Some((s, v)) if *s == StatusCode::CREATED && v["resourceType"] == "Observation"),
                "{kind:?} {phase:?}: {parsed:?}"
            );
            let stored = observations_of(&sb, &patient);
            match phase {
                FaultPhase::Before => assert_eq!(stored, 0, "{kind:?} before: nothing written"),
                FaultPhase::After => assert_eq!(stored, 1, "{kind:?} after: committed"),
            }
            match (kind, &parsed) {
                (FailureKind::Status500, Some((s, _))) => {
                    assert_eq!(*s, StatusCode::INTERNAL_SERVER_ERROR);
                }
                (FailureKind::Status503, Some((s, _))) => {
                    assert_eq!(*s, StatusCode::SERVICE_UNAVAILABLE);
                }
                // A body slower than the client's patience never arrives.
                (FailureKind::Reset | FailureKind::MalformedJson | FailureKind::SlowBody, None) => {
                }
                (kind, other) => panic!("{kind:?} {phase:?}: {other:?}"),
            }
            if kind == FailureKind::MalformedJson {
                let (status, _) = answer.as_ref().unwrap();
                assert_eq!(*status, StatusCode::OK, "{phase:?}");
            }
        }
    }

    // A slow body before the request: a 503 that takes its time, nothing written.
    sb.faults()
        .set(FaultConfig {
            failure_rate: 1.0,
            failure_kind: FailureKind::SlowBody,
            path_filter: Some("/Observation".to_owned()),
            phase: Some(FaultPhase::Before),
            slow_body_ms: 300,
            ..FaultConfig::default()
        })
        .unwrap();
    let started = Instant::now();
    let slow = http
        .post(format!("{base}/Observation"))
        .header("content-type", FHIR)
        .body(observation("slow-before", "2024-05-01").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
    issue_code(&json_of(slow).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(observations_of(&sb, "slow-before"), 0);

    // Latency after the request: the write is committed before the (late) answer.
    sb.faults()
        .set(FaultConfig {
            latency_ms: 1500,
            path_filter: Some("/Observation".to_owned()),
            methods: vec!["POST".to_owned()],
            phase: Some(FaultPhase::After),
            ..FaultConfig::default()
        })
        .unwrap();
    let late = http
        .post(format!("{base}/Observation"))
        .header("content-type", FHIR)
        .timeout(Duration::from_millis(500))
        .body(observation("late-after", "2024-05-01").to_string())
        .send()
        .await;
    assert!(late.is_err(), "the answer comes after the client gave up");
    assert_eq!(observations_of(&sb, "late-after"), 1);
    sb.faults().clear();
    sb.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_are_required() {
    let sb = start(true).await;
    let base = sb.fhir_base();
    let http = Client::new();
    let patient = sb.patients()[0].id.clone();
    let read = format!("{base}/Patient/{patient}");

    let r = http.get(&read).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(issue_code(&json_of(r).await), "login");
    let r = http
        .get(&read)
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let token = sb
        .auth()
        .issue_access_token("demo-app", "patient/*.read", Some(&patient));
    let r = http.get(&read).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // No compartment enforcement here: the same token reads another patient's data.
    let other = &sb.patients()[1].id;
    let r = http
        .get(format!("{base}/Patient/{other}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // metadata and the SMART configuration are public.
    let cs = http.get(format!("{base}/metadata")).send().await.unwrap();
    assert_eq!(cs.status(), StatusCode::OK);
    let cs = json_of(cs).await;
    assert_eq!(
        cs["rest"][0]["security"]["extension"][0]["extension"][1]["valueUri"],
        format!("{}/auth/token", sb.base_url())
    );
    let smart = http
        .get(format!("{base}/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(smart.status(), StatusCode::OK);
    assert!(json_of(smart).await["token_endpoint"].is_string());
    sb.shutdown().await;
}

#[tokio::test]
async fn batch_and_transaction_bundles() {
    let sb = start(false).await;
    let base = sb.fhir_base();
    let http = Client::new();
    let post = |bundle: Value| {
        http.post(&base)
            .header("content-type", FHIR)
            .body(bundle.to_string())
            .send()
    };
    let patient = sb.patients()[0].id.clone();
    let before = sb.store().count("Communication");

    // A transaction creates entries that refer to each other by urn:uuid.
    let r = post(json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:6f0c6a3e-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Communication", "status": "completed",
                          "subject": {"reference": format!("Patient/{patient}")}},
             "request": {"method": "POST", "url": "Communication"}},
            {"resource": {"resourceType": "Communication", "status": "completed",
                          "partOf": [{"reference": "urn:uuid:6f0c6a3e-0000-4000-8000-000000000001"}]},
             "request": {"method": "POST", "url": "Communication"}},
            {"request": {"method": "GET", "url": format!("Patient/{patient}")}}
        ]
    }))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b = json_of(r).await;
    assert_eq!(b["type"], "transaction-response");
    assert_eq!(b["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(b["entry"][2]["response"]["status"], "200 OK");
    let first_id = b["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(
        b["entry"][1]["resource"]["partOf"][0]["reference"],
        format!("Communication/{first_id}")
    );
    assert_eq!(sb.store().count("Communication"), before + 2);

    // All or nothing: a stale ifMatch in the second entry leaves the first unwritten.
    let r = post(json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Communication", "status": "completed"},
             "request": {"method": "POST", "url": "Communication"}},
            {"resource": {"resourceType": "Communication", "id": first_id, "status": "stopped"},
             "request": {"method": "PUT", "url": format!("Communication/{first_id}"), "ifMatch": "W/\"9\""}}
        ]
    }))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(sb.store().count("Communication"), before + 2);
    let r = post(json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Communication", "status": "completed"},
             "request": {"method": "POST", "url": "Communication"}},
            {"resource": {"resourceType": "Communication", "status": "completed", "bogus": true},
             "request": {"method": "POST", "url": "Communication"}}
        ]
    }))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(sb.store().count("Communication"), before + 2);

    // A batch reports each entry on its own.
    let r = post(json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Communication", "status": "completed"},
             "request": {"method": "POST", "url": "Communication"}},
            {"request": {"method": "GET", "url": "Communication/does-not-exist"}},
            {"request": {"method": "GET", "url": "Communication?status=stopped"}},
            {"request": {"method": "DELETE", "url": format!("Communication/{first_id}")}}
        ]
    }))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b = json_of(r).await;
    assert_eq!(b["type"], "batch-response");
    assert_eq!(b["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(b["entry"][1]["response"]["status"], "404 Not Found");
    assert_eq!(
        b["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(b["entry"][2]["resource"]["type"], "searchset");
    assert_eq!(b["entry"][3]["response"]["status"], "204 No Content");
    assert_eq!(sb.store().count("Communication"), before + 2);
    sb.shutdown().await;
}

mod families;
