//! Behaviour of the client against wiremock (and a raw TCP server for broken bodies):
//! error classification, requests and headers, paging-link confinement; upstream
//! credentials in `tests/auth.rs`, configuration in `tests/config.rs`, answers read in
//! part in `tests/partial.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::{
    ConfigError, FhirClient, FhirRequest, FhirUpstream, ReturnPreference, SecretString,
    SigningAlgorithm, UpstreamAuthConfig, UpstreamConfig, UpstreamError,
};

fn config(base: &str, auth: UpstreamAuthConfig) -> UpstreamConfig {
    let mut config = UpstreamConfig::new(Url::parse(base).unwrap(), auth);
    config.request_timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(500);
    config
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn client(base: &str, auth: UpstreamAuthConfig) -> FhirClient {
    FhirClient::new(config(base, auth).resolve_with(no_env).unwrap()).unwrap()
}

fn open_client(server: &MockServer) -> FhirClient {
    client(&format!("{}/fhir", server.uri()), UpstreamAuthConfig::None)
}

fn client_credentials(server: &MockServer) -> FhirClient {
    let auth = UpstreamAuthConfig::ClientCredentials {
        token_url: Url::parse(&format!("{}/token", server.uri())).unwrap(),
        client_id: "portico".into(),
        client_secret_file: None,
        client_secret_env: Some("EHR_SECRET".into()),
        scope: Some("system/*.read".into()),
        client_auth: Default::default(),
    };
    let resolved = config(&format!("{}/fhir", server.uri()), auth)
        .resolve_with(|var| (var == "EHR_SECRET").then(|| "s3cret".to_owned()))
        .unwrap();
    FhirClient::new(resolved).unwrap()
}

/// A hand-written EHR document from the repository's `fixtures/` (see its README); the
/// crate's other test modules use it too.
pub(crate) fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn outcome(code: &str) -> Value {
    json!({"resourceType": "OperationOutcome",
           "issue": [{"severity": "error", "code": code, "diagnostics": "x"}]})
}

fn token_response(token: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}),
    )
}

fn auth_header(req: &Request) -> Option<String> {
    req.headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
}

fn form(req: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect()
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

// ---------------------------------------------------------------------------------
// Error classification
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_statuses_are_classified() {
    let server = MockServer::start().await;
    let respond = |id: &str, template: ResponseTemplate| {
        Mock::given(method("GET"))
            .and(path(format!("/fhir/Patient/{id}")))
            .respond_with(template)
    };
    respond(
        "e404",
        ResponseTemplate::new(404).set_body_json(outcome("not-found")),
    )
    .mount(&server)
    .await;
    respond(
        "e409",
        ResponseTemplate::new(409).set_body_json(outcome("conflict")),
    )
    .mount(&server)
    .await;
    respond("e410", ResponseTemplate::new(410))
        .mount(&server)
        .await;
    respond(
        "e412",
        ResponseTemplate::new(412).set_body_json(outcome("conflict")),
    )
    .mount(&server)
    .await;
    respond(
        "e422",
        ResponseTemplate::new(422).set_body_json(outcome("invalid")),
    )
    .mount(&server)
    .await;
    respond(
        "e401",
        ResponseTemplate::new(401)
            .insert_header("www-authenticate", "Bearer error=\"invalid_token\""),
    )
    .mount(&server)
    .await;
    respond("e403", ResponseTemplate::new(403))
        .mount(&server)
        .await;
    respond(
        "e429s",
        ResponseTemplate::new(429).insert_header("retry-after", "7"),
    )
    .mount(&server)
    .await;
    let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    respond(
        "e429d",
        ResponseTemplate::new(429).insert_header("retry-after", in_a_minute.as_str()),
    )
    .mount(&server)
    .await;
    respond(
        "e500",
        ResponseTemplate::new(500).set_body_string("<html>stack trace with secrets</html>"),
    )
    .mount(&server)
    .await;
    respond(
        "e503",
        ResponseTemplate::new(503).set_body_json(outcome("transient")),
    )
    .mount(&server)
    .await;
    respond(
        "e302",
        ResponseTemplate::new(302).insert_header("location", "http://evil/"),
    )
    .mount(&server)
    .await;

    let c = open_client(&server);
    let err = |id: &'static str| {
        let c = c.clone();
        async move { c.read("Patient", id).await.unwrap_err() }
    };

    match err("e404").await {
        UpstreamError::NotFound { outcome: Some(o) } => assert_eq!(o, outcome("not-found")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err("e409").await,
        UpstreamError::Conflict { outcome: Some(_) }
    ));
    assert!(matches!(
        err("e410").await,
        UpstreamError::Gone { outcome: None }
    ));
    assert!(matches!(
        err("e412").await,
        UpstreamError::PreconditionFailed { outcome: Some(_) }
    ));
    let e = err("e422").await;
    assert!(matches!(
        e,
        UpstreamError::Invalid {
            status: 422,
            outcome: Some(_)
        }
    ));
    assert!(!e.retryable() && !e.is_upstream_fault());
    match err("e401").await {
        UpstreamError::Unauthorized { www_authenticate } => assert_eq!(
            www_authenticate.as_deref(),
            Some("Bearer error=\"invalid_token\"")
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(err("e403").await, UpstreamError::Forbidden { .. }));
    let e = err("e429s").await;
    assert!(matches!(
        e,
        UpstreamError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)
    ));
    assert!(e.retryable());
    match err("e429d").await {
        UpstreamError::RateLimited {
            retry_after: Some(d),
        } => assert!(
            (Duration::from_secs(55)..=Duration::from_secs(61)).contains(&d),
            "{d:?}"
        ),
        other => panic!("{other:?}"),
    }
    let e = err("e500").await;
    assert!(matches!(
        e,
        UpstreamError::Server {
            status: 500,
            outcome: None
        }
    ));
    assert!(!e.retryable() && e.is_upstream_fault());
    assert!(!e.to_string().contains("secrets"));
    let e = err("e503").await;
    assert!(matches!(
        e,
        UpstreamError::Server {
            status: 503,
            outcome: Some(_)
        }
    ));
    assert!(e.retryable());
    // Redirects are not followed: the credential would go wherever they point.
    assert!(matches!(err("e302").await, UpstreamError::Protocol { .. }));
}

#[tokio::test]
async fn malformed_json_on_success_is_malformed_body() {
    let server = MockServer::start().await;
    Mock::given(path("/fhir/Patient/p1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("{\"resourceType\": \"Pat", "application/fhir+json"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/fhir/metadata"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html/>", "text/html"))
        .mount(&server)
        .await;
    let c = open_client(&server);
    // A body cut short is refused by the client itself: nothing downstream (the cache
    // above all) ever sees it as an answer.
    assert!(matches!(
        c.read("Patient", "p1").await,
        Err(UpstreamError::MalformedBody { .. })
    ));
    assert!(matches!(
        c.capabilities().await,
        Err(UpstreamError::MalformedBody { .. })
    ));
}

#[tokio::test]
async fn slow_response_is_timeout() {
    let server = MockServer::start().await;
    Mock::given(path("/fhir/Patient/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let c = open_client(&server);
    let started = std::time::Instant::now();
    let e = c.read("Patient", "slow").await.unwrap_err();
    assert!(matches!(e, UpstreamError::Timeout), "{e:?}");
    assert!(e.retryable() && e.is_upstream_fault());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn closed_port_is_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let c = client(
        &format!("http://127.0.0.1:{port}/fhir"),
        UpstreamAuthConfig::None,
    );
    let e = c.read("Patient", "1").await.unwrap_err();
    assert!(matches!(e, UpstreamError::Connect { .. }), "{e:?}");
    assert!(e.retryable());
    assert!(!e.to_string().contains("Patient"), "no url in errors: {e}");
}

/// A server that answers every request with `head` and then either closes the
/// connection or stalls.
async fn raw_server(head: &'static str, close: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(head.as_bytes()).await;
                if !close {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }
    });
    format!("http://{addr}/fhir")
}

const PARTIAL: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\n\
                       content-length: 100\r\n\r\n{\"resourceType\":";

#[tokio::test]
async fn body_cut_mid_stream_is_connect() {
    let base = raw_server(PARTIAL, true).await;
    let e = client(&base, UpstreamAuthConfig::None)
        .read("Patient", "1")
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Connect { .. }), "{e:?}");
}

#[tokio::test]
async fn body_stalled_mid_stream_is_timeout() {
    let base = raw_server(PARTIAL, false).await;
    let e = client(&base, UpstreamAuthConfig::None)
        .read("Patient", "1")
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Timeout), "{e:?}");
}

// ---------------------------------------------------------------------------------
// Requests and headers
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn read_sends_accept_and_request_id_and_no_authorization_in_none_mode() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .and(header("accept", "application/fhir+json"))
        .and(header("x-request-id", "req-42"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("etag", "W/\"7\"")
                .insert_header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")
                .set_body_raw(
                    fixture("ehr/patient-p1.json").to_string(),
                    "application/fhir+json",
                ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = open_client(&server);
    // A caller token is never forwarded outside passthrough mode.
    let request = FhirRequest::read("Patient", "p1")
        .with_request_id("req-42")
        .with_bearer(SecretString::new("patient-token"));
    let response = c.execute(request).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.etag.as_deref(), Some("W/\"7\""));
    assert_eq!(response.version_id.as_deref(), Some("7"));
    assert_eq!(
        response.last_modified.as_deref(),
        Some("Wed, 21 Oct 2015 07:28:00 GMT")
    );
    assert_eq!(
        response.content_type.as_deref(),
        Some("application/fhir+json")
    );
    assert_eq!(response.json().unwrap()["id"], "p1");
    let received = requests_to(&server, "/fhir/Patient/p1").await;
    assert_eq!(auth_header(&received[0]), None);
}

#[tokio::test]
async fn conditional_read_returns_not_modified_and_partition_is_not_sent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .and(header("if-none-match", "W/\"7\""))
        .respond_with(ResponseTemplate::new(304).insert_header("etag", "W/\"7\""))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p2"))
        .respond_with(ResponseTemplate::new(304))
        .mount(&server)
        .await;
    let c = open_client(&server);
    let partition = crate::CachePartition::new(["secret-patient"], "secret-scope");
    let r = c
        .execute(
            FhirRequest::read("Patient", "p1")
                .with_if_none_match("W/\"7\"")
                .with_partition(partition),
        )
        .await
        .unwrap();
    assert!(r.is_not_modified());
    assert!(r.body.is_empty());
    assert_eq!(r.version_id.as_deref(), Some("7"));
    let sent = &requests_to(&server, "/fhir/Patient/p1").await[0];
    let wire = format!("{:?} {:?}", sent.url, sent.headers);
    assert!(!wire.contains("secret-patient") && !wire.contains("secret-scope"));
    // Without If-None-Match a 304 is still a protocol violation.
    let r = c.execute(FhirRequest::read("Patient", "p2")).await;
    assert!(matches!(r, Err(UpstreamError::Protocol { .. })), "{r:?}");
}

#[tokio::test]
async fn writes_send_content_type_and_conditional_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Task"))
        .and(header("content-type", "application/fhir+json"))
        .and(header("if-none-exist", "identifier=urn:portico|k1"))
        .and(header("prefer", "return=representation"))
        .and(body_string_contains("\"resourceType\":\"Task\""))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header(
                    "location",
                    format!("{}/fhir/Task/t9/_history/1", server.uri()),
                )
                .insert_header("etag", "W/\"1\""),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/fhir/Patient/p1"))
        .and(header("content-type", "application/fhir+json"))
        .and(header("if-match", "W/\"3\""))
        .respond_with(ResponseTemplate::new(200).insert_header("etag", "W/\"4\""))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/fhir/Patient/p1"))
        .and(header("content-type", "application/json-patch+json"))
        .and(header("if-match", "W/\"4\""))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let c = open_client(&server);

    let created = c
        .execute(
            FhirRequest::create("Task", r#"{"resourceType":"Task"}"#)
                .with_if_none_exist("identifier=urn:portico|k1")
                .with_prefer(ReturnPreference::Representation),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    let r = created.location_reference().unwrap();
    assert_eq!(
        (
            r.resource_type.as_str(),
            r.id.as_str(),
            r.version.as_deref()
        ),
        ("Task", "t9", Some("1"))
    );
    assert_eq!(created.version_id.as_deref(), Some("1"));

    let updated = c
        .update(
            "Patient",
            "p1",
            Bytes::from_static(b"{}"),
            Some("W/\"3\"".into()),
        )
        .await
        .unwrap();
    assert_eq!(updated.version_id.as_deref(), Some("4"));
    c.execute(FhirRequest::patch("Patient", "p1", "[]").with_if_match_version("4"))
        .await
        .unwrap();
    assert_eq!(c.delete("Patient", "p1").await.unwrap().status, 204);

    // No Prefer header unless asked for.
    let puts = requests_to(&server, "/fhir/Patient/p1").await;
    assert!(puts.iter().all(|r| r.headers.get("prefer").is_none()));
}

#[tokio::test]
async fn search_uses_get_and_switches_to_post_when_long() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .and(query_param("patient", "Patient/p1"))
        .and(query_param("code", "http://loinc.org|1234-5"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/searchset-empty.json")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir/Observation/_search"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/searchset-empty.json")))
        .expect(1)
        .mount(&server)
        .await;
    let c = open_client(&server);
    c.search(
        "Observation",
        vec![
            ("patient".into(), "Patient/p1".into()),
            ("code".into(), "http://loinc.org|1234-5".into()),
        ],
    )
    .await
    .unwrap();
    let long = "x".repeat(5000);
    c.search("Observation", vec![("code".into(), long.clone())])
        .await
        .unwrap();
    let post = &requests_to(&server, "/fhir/Observation/_search").await[0];
    assert_eq!(form(post).get("code"), Some(&long));
}

#[tokio::test]
async fn bad_types_ids_and_header_values_are_refused_before_sending() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let c = open_client(&server);
    for request in [
        FhirRequest::read("Patient", "../metadata"),
        FhirRequest::read("Patient", "a/b"),
        FhirRequest::read("NotAType", "1"),
        FhirRequest::vread("Patient", "1", "x y"),
        FhirRequest::read("Patient", "1").with_request_id("a\r\nX-Injected: 1"),
        FhirRequest::create("Task", "{}").with_if_none_exist("a\nb"),
    ] {
        let e = c.execute(request).await.unwrap_err();
        assert!(matches!(e, UpstreamError::InvalidRequest { .. }), "{e:?}");
    }
}

#[tokio::test]
async fn passthrough_sends_the_callers_token_and_nothing_without_one() {
    let server = MockServer::start().await;
    Mock::given(path("/fhir/Patient/p1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/patient-p1.json")))
        .mount(&server)
        .await;
    let c = client(
        &format!("{}/fhir", server.uri()),
        UpstreamAuthConfig::Passthrough,
    );
    assert!(c.token_provider().is_none());
    c.check_auth().await.unwrap();
    c.execute(FhirRequest::read("Patient", "p1").with_bearer(SecretString::new("caller-tok")))
        .await
        .unwrap();
    c.read("Patient", "p1").await.unwrap();
    let received = requests_to(&server, "/fhir/Patient/p1").await;
    assert_eq!(
        auth_header(&received[0]).as_deref(),
        Some("Bearer caller-tok")
    );
    assert_eq!(auth_header(&received[1]), None);
}

#[tokio::test]
async fn capabilities_are_fetched_and_summarised() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("ehr/capability-statement-appointment.json")),
        )
        .mount(&server)
        .await;
    let caps = open_client(&server).capabilities().await.unwrap();
    assert_eq!(caps.summary.fhir_version.as_deref(), Some("4.0.1"));
    assert!(caps.summary.supports("Appointment", "create"));
    assert!(caps.summary.supports_search_param("Appointment", "patient"));
    assert_eq!(caps.statement["resourceType"], "CapabilityStatement");
}

// ---------------------------------------------------------------------------------
// Paging links
// ---------------------------------------------------------------------------------

#[test]
fn paging_links_must_stay_under_the_base() {
    let c = client("https://ehr.example.org/fhir/r4/", UpstreamAuthConfig::None);
    for ok in [
        "https://ehr.example.org/fhir/r4/Patient?page=2",
        "https://ehr.example.org/fhir/r4?_getpages=abc&_offset=10",
        "https://EHR.example.org:443/fhir/r4/Observation?_cursor=x",
        "Patient?page=3",
    ] {
        let url = c.check_page_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!(url.as_str().starts_with("https://ehr.example.org/fhir/r4"));
    }
    for bad in [
        "https://ehr.example.org.evil.com/fhir/r4/Patient?page=2",
        "https://ehr.example.org@evil.com/fhir/r4/Patient",
        "https://user:pw@ehr.example.org/fhir/r4/Patient",
        "http://ehr.example.org/fhir/r4/Patient",
        "https://ehr.example.org:8443/fhir/r4/Patient",
        "https://ehr.example.org/fhir/r4x/Patient",
        "https://ehr.example.org/fhir/Patient",
        "https://ehr.example.org/fhir/r4/../admin",
        "https://ehr.example.org/fhir/r4/%2e%2e/%2e%2e/admin",
        "https://evil.com/fhir/r4/Patient",
        "//evil.com/fhir/r4/Patient",
        "../../other",
        "javascript:alert(1)",
    ] {
        assert!(
            matches!(c.check_page_url(bad), Err(UpstreamError::Protocol { .. })),
            "{bad} should be refused"
        );
    }
}

#[tokio::test]
async fn search_page_outside_base_is_not_sent() {
    let server = MockServer::start().await;
    let other = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&other)
        .await;
    Mock::given(path("/fhir/Patient"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/searchset-empty.json")))
        .expect(1)
        .mount(&server)
        .await;
    let c = open_client(&server);
    let e = c
        .search_page(&format!("{}/fhir/Patient?page=2", other.uri()))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Protocol { .. }));
    c.search_page(&format!("{}/fhir/Patient?page=2", server.uri()))
        .await
        .unwrap();
}

mod auth;
mod config;
mod partial;
