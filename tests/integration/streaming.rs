//! Long search answers written while the EHR's is still arriving (the cache off, so
//! nothing keeps them): the same entries as the whole answer, another patient's never,
//! links rewritten, the access recorded (an attempt, then its outcome); an EHR that
//! breaks off after the entries began makes the gateway cut its own answer off rather
//! than close it as if whole, and a client that goes away leaves an outcome too.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{TestApp, sandbox};

const SCOPES: &str = "launch/patient patient/*.rs";

/// A paged searchset of `n` of pat-1's Observations on `base`, pat-2's at each of
/// `foreign` (as the i-th entry), its links on `links`; several times what the client
/// reads whole.
fn long_bundle(base: &str, links: &str, n: usize, foreign: &[usize]) -> String {
    let entries: Vec<String> = (0..n)
        .map(|i| {
            let (patient, text) = if foreign.contains(&i) {
                ("pat-2", "secret-of-b")
            } else {
                ("pat-1", "own")
            };
            format!(
                r#"{{"fullUrl":"{base}/Observation/o{i}","resource":{{"resourceType":"Observation","id":"o{i}","status":"final","code":{{"text":"{text} {}"}},"subject":{{"reference":"Patient/{patient}"}}}},"search":{{"mode":"match"}}}}"#,
                "lab result ".repeat(20)
            )
        })
        .collect();
    format!(
        r#"{{"resourceType":"Bundle","type":"searchset","total":{n},"link":[{{"relation":"self","url":"{links}/Observation?patient=pat-1"}},{{"relation":"next","url":"{links}/Observation?patient=pat-1&page=2"}}],"entry":[{}]}}"#,
        entries.join(",")
    )
}

/// Points a gateway's upstream client at `base`, with its cache on or off. (The base
/// its answers' URLs are rewritten from stays the sandbox's, which issues the tokens.)
fn in_front_of(
    base: &str,
    cache: bool,
) -> impl FnOnce(&mut portico::config::Config, &mut portico_upstream::ResolvedUpstreamConfig) {
    let base = url::Url::parse(base).expect("base");
    move |config, upstream| {
        config.ehr.profile = portico::config::EhrProfile::GenericR4;
        config.ehr.check_capabilities = false;
        config.cache.enabled = cache;
        upstream.base_url = base;
    }
}

async fn gateway(base: &str, cache: bool) -> TestApp {
    TestApp::spawn_with(sandbox().await, in_front_of(base, cache)).await
}

/// pat-1's Observation search through `app`.
async fn search(app: &TestApp) -> reqwest::Response {
    let token = app.patient_token("pat-1", SCOPES);
    app.http
        .get(app.url("/fhir/Observation?code=x"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the gateway answers")
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["resource"]["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_long_answer_streams_with_the_entries_of_a_whole_one() {
    let mock = MockServer::start().await;
    let streaming = gateway(&format!("{}/fhir", mock.uri()), false).await;
    // The cache keeps what it reads, so it reads it whole: the reference.
    let whole = streaming
        .spawn_beside(in_front_of(&format!("{}/fhir", mock.uri()), true))
        .await;
    // URLs on the base the gateways rewrite (the sandbox's).
    let base = streaming.sandbox.fhir_base();
    let n = 1500;
    let body = long_bundle(&base, &format!("{}/fhir", mock.uri()), n, &[0, 700, n - 1]);
    assert!(body.len() > 4 * portico_upstream::partial::WHOLE_UP_TO);
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(body.into_bytes(), "application/fhir+json"),
        )
        .mount(&mock)
        .await;

    let res = search(&streaming).await;
    assert_eq!(res.status(), 200);
    // Written as it came: no length known up front.
    assert!(
        res.headers().get("content-length").is_none(),
        "{:?}",
        res.headers()
    );
    let text = res.text().await.unwrap();
    let res = search(&whole).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("content-length").is_some());
    let reference = res.text().await.unwrap();

    for t in [&text, &reference] {
        assert!(!t.contains("secret-of-b"));
        assert!(!t.contains("Patient/pat-2"));
        assert!(!t.contains(&base), "the EHR's base leaked");
    }
    // Each gateway writes its own base.
    let streamed: Value = serde_json::from_str(&text.replace(&streaming.fhir(), "GW")).unwrap();
    let reference: Value = serde_json::from_str(&reference.replace(&whole.fhir(), "GW")).unwrap();
    assert_eq!(streamed["entry"][0]["fullUrl"], "GW/Observation/o1");
    assert_eq!(ids(&streamed).len(), n - 3);
    assert_eq!(ids(&streamed), ids(&reference));
    assert_eq!(streamed["entry"], reference["entry"]);
    // Entries were removed from a paged search: neither carries the EHR's `total`.
    assert!(streamed.get("total").is_none() && reference.get("total").is_none());
    let links = |b: &Value| {
        b["link"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["relation"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(links(&streamed), links(&reference));
    let next = streamed["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap();
    assert!(next["url"].as_str().unwrap().contains("/_page?_cursor="));
    // Recorded before it was written, and again with what it came to: the three
    // entries of another patient's withheld.
    assert_eq!(
        search_records(&streaming),
        [
            ("attempt".to_owned(), "allowed".to_owned(), None),
            ("outcome".to_owned(), "allowed".to_owned(), Some(3)),
        ]
    );
}

/// The phase, decision and removed entries of each Observation search record `app`
/// wrote, in order.
fn search_records(app: &TestApp) -> Vec<(String, String, Option<u64>)> {
    app.audit_records()
        .iter()
        .filter(|r| r["resource_type"] == "Observation" && r["interaction"] == "search")
        .map(|r| {
            (
                r["phase"].as_str().unwrap_or("none").to_owned(),
                r["decision"].as_str().expect("a decision").to_owned(),
                r["removed_entries"].as_u64(),
            )
        })
        .collect()
}

/// An EHR that answers every request with the first `sent` bytes of `body` and then
/// closes the connection, or, when `trickle`, sends the rest 2 KiB at a time, one piece
/// every 50 ms.
async fn stopping_ehr(body: String, sent: usize, trickle: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body.as_bytes()[..sent]).await;
                if trickle {
                    for piece in body.as_bytes()[sent..].chunks(2048) {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        if socket.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}/fhir")
}

/// The EHR's base in answers built before its server runs (it is never followed).
const PLACEHOLDER: &str = "https://ehr.example/fhir";

/// pat-1's search through a gateway whose EHR sends half of a long answer and then
/// breaks off, or with `trickle` sends the rest slowly (see [`stopping_ehr`]). One
/// foreign entry comes past the first part the client reads whole, before the half.
async fn half_sent(trickle: bool) -> (TestApp, reqwest::Response) {
    let body = long_bundle(PLACEHOLDER, PLACEHOLDER, 1500, &[600]);
    let sent = body.len() / 2;
    let base = stopping_ehr(body, sent, trickle).await;
    let app = gateway(&base, false).await;
    let res = search(&app).await;
    // The head leaves before the EHR stops.
    assert_eq!(res.status(), 200);
    (app, res)
}

/// The records of a [`half_sent`] answer cut off: allowed when it began, denied at its
/// end, the one foreign entry withheld.
fn cut_off_records() -> Vec<(String, String, Option<u64>)> {
    vec![
        ("attempt".to_owned(), "allowed".to_owned(), None),
        ("outcome".to_owned(), "denied".to_owned(), Some(1)),
    ]
}

#[tokio::test]
async fn an_answer_that_breaks_off_after_its_entries_began_is_cut_off() {
    let (app, mut res) = half_sent(false).await;
    let mut received = Vec::new();
    let mut failed = false;
    loop {
        match res.chunk().await {
            Ok(Some(piece)) => received.extend_from_slice(&piece),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "a cut answer ended as if whole");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains(r#""id":"o1""#),
        "entries were streamed before the break"
    );
    assert!(serde_json::from_slice::<Value>(&received).is_err());
    assert!(!text.contains("secret-of-b"));
    // The outcome record says it was cut off, after withholding the one foreign entry
    // that came before the break.
    assert_eq!(search_records(&app), cut_off_records());
}

#[tokio::test]
async fn an_answer_whose_client_goes_away_is_recorded_as_cut_off() {
    // The rest would take about 8 s to come.
    let (app, mut res) = half_sent(true).await;
    let first = res
        .chunk()
        .await
        .expect("a first piece")
        .expect("not the end");
    assert!(!first.is_empty());
    drop(res);
    // The gateway finds its client gone at its next write and drops the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    loop {
        let records = search_records(&app);
        if records.len() >= 2 {
            assert_eq!(records, cut_off_records());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no outcome record: {records:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_answer_that_breaks_off_before_its_entries_is_an_upstream_error() {
    let body = long_bundle(PLACEHOLDER, PLACEHOLDER, 1500, &[]);
    // Cut inside the first part the client reads whole.
    let base = stopping_ehr(body, 100, false).await;
    let app = gateway(&base, false).await;
    let res = search(&app).await;
    assert_eq!(res.status(), 502);
    let outcome: Value = res.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn a_long_answer_that_is_not_a_bundle_is_an_upstream_error() {
    let mock = MockServer::start().await;
    let outcome = format!(
        r#"{{"resourceType":"OperationOutcome","issue":[{}]}}"#,
        vec![r#"{"severity":"warning","code":"informational","diagnostics":"busy"}"#; 2000]
            .join(",")
    );
    assert!(outcome.len() > portico_upstream::partial::WHOLE_UP_TO);
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(outcome.into_bytes(), "application/fhir+json"),
        )
        .mount(&mock)
        .await;
    let app = gateway(&format!("{}/fhir", mock.uri()), false).await;
    let res = search(&app).await;
    // As the buffered client refuses a search answered with something else than a
    // Bundle: not an empty result.
    assert_eq!(res.status(), 502);
}
