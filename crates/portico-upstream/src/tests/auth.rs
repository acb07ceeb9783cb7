//! Upstream credentials: client credentials (one token request shared and reused,
//! refreshed near expiry, dropped on a 401) and SMART Backend Services assertions.

use super::*;

#[tokio::test]
async fn client_credentials_token_is_requested_once_and_reused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response("t1", 3600))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/p1"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/patient-p1.json")))
        .expect(3)
        .mount(&server)
        .await;
    let c = client_credentials(&server);
    for _ in 0..3 {
        c.read("Patient", "p1").await.unwrap();
    }
    let token_request = &requests_to(&server, "/token").await[0];
    let basic = auth_header(token_request).unwrap();
    assert!(
        basic.starts_with("Basic "),
        "client_secret_basic by default"
    );
    let body = form(token_request);
    assert_eq!(body["grant_type"], "client_credentials");
    assert_eq!(body["scope"], "system/*.read");
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[tokio::test]
async fn client_credentials_token_is_refreshed_near_expiry() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(token_response("t1", 1))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/token"))
        .respond_with(token_response("t2", 3600))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/p1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/patient-p1.json")))
        .mount(&server)
        .await;
    let c = client_credentials(&server);
    c.read("Patient", "p1").await.unwrap();
    c.read("Patient", "p1").await.unwrap();
    // With a 1 s lifetime the refresh margin is 0.5 s.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.read("Patient", "p1").await.unwrap();
    c.read("Patient", "p1").await.unwrap();
    let tokens: Vec<_> = requests_to(&server, "/fhir/Patient/p1")
        .await
        .iter()
        .map(|r| auth_header(r).unwrap())
        .collect();
    assert_eq!(tokens, ["Bearer t1", "Bearer t1", "Bearer t2", "Bearer t2"]);
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(token_response("t1", 3600).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/p1"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/patient-p1.json")))
        .expect(10)
        .mount(&server)
        .await;
    let c = Arc::new(client_credentials(&server));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let c = Arc::clone(&c);
        tasks.spawn(async move { c.read("Patient", "p1").await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
}

#[tokio::test]
async fn token_endpoint_failure_is_auth_error_shared_by_waiters() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_delay(Duration::from_millis(100))
                .set_body_json(json!({"error": "invalid_client"})),
        )
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/p1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let c = Arc::new(client_credentials(&server));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let c = Arc::clone(&c);
        tasks.spawn(async move { c.read("Patient", "p1").await });
    }
    while let Some(result) = tasks.join_next().await {
        match result.unwrap().unwrap_err() {
            UpstreamError::Auth { detail } => {
                assert!(detail.contains("invalid_client"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(c.read("Patient", "p1").await.is_err());
    let e = c.check_auth().await.unwrap_err();
    assert!(e.is_upstream_fault() && !e.retryable());
    // Three attempts in all: the five concurrent callers, then two sequential calls.
    server.verify().await;
}

#[tokio::test]
async fn upstream_401_discards_the_cached_token() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(token_response("t1", 3600))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/token"))
        .respond_with(token_response("t2", 3600))
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/p1"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/p1"))
        .and(header("authorization", "Bearer t2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/patient-p1.json")))
        .mount(&server)
        .await;
    let c = client_credentials(&server);
    assert!(matches!(
        c.read("Patient", "p1").await,
        Err(UpstreamError::Unauthorized { .. })
    ));
    c.read("Patient", "p1").await.unwrap();
}

// ---------------------------------------------------------------------------------
// SMART Backend Services
// ---------------------------------------------------------------------------------

pub(super) fn es384_keys() -> (String, String) {
    use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let private = secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (private, public)
}

fn rs384_keys() -> (String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (
        private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public,
    )
}

fn backend_auth(server: &MockServer, algorithm: SigningAlgorithm) -> UpstreamAuthConfig {
    UpstreamAuthConfig::BackendServices {
        token_url: Url::parse(&format!("{}/auth/token", server.uri())).unwrap(),
        client_id: "portico-backend".into(),
        private_key_file: None,
        private_key_env: Some("EHR_KEY".into()),
        algorithm,
        kid: Some("key-1".into()),
        scope: "system/Patient.rs system/Observation.rs".into(),
    }
}

async fn check_backend_services(algorithm: SigningAlgorithm) {
    let (private, public) = match algorithm {
        SigningAlgorithm::ES384 => es384_keys(),
        SigningAlgorithm::RS384 => rs384_keys(),
    };
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/token"))
        .respond_with(token_response("bs-token", 300))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/p1"))
        .and(header("authorization", "Bearer bs-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("ehr/patient-p1.json")))
        .expect(1)
        .mount(&server)
        .await;
    let resolved = config(
        &format!("{}/fhir", server.uri()),
        backend_auth(&server, algorithm),
    )
    .resolve_with(|var| (var == "EHR_KEY").then(|| private.clone()))
    .unwrap();
    let c = FhirClient::new(resolved).unwrap();
    c.read("Patient", "p1").await.unwrap();
    c.token_provider().unwrap().invalidate();
    c.check_auth().await.unwrap();

    let token_url = format!("{}/auth/token", server.uri());
    let (jwt_alg, key) = match algorithm {
        SigningAlgorithm::ES384 => (
            jsonwebtoken::Algorithm::ES384,
            jsonwebtoken::DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
        ),
        SigningAlgorithm::RS384 => (
            jsonwebtoken::Algorithm::RS384,
            jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
        ),
    };
    let mut validation = jsonwebtoken::Validation::new(jwt_alg);
    validation.set_audience(&[token_url.as_str()]);
    validation.set_issuer(&["portico-backend"]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let mut jtis = Vec::new();
    for request in requests_to(&server, "/auth/token").await {
        assert_eq!(
            auth_header(&request),
            None,
            "no client secret, no basic auth"
        );
        let body = form(&request);
        assert_eq!(body["grant_type"], "client_credentials");
        assert_eq!(body["scope"], "system/Patient.rs system/Observation.rs");
        assert_eq!(
            body["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        let data = jsonwebtoken::decode::<Value>(&body["client_assertion"], &key, &validation)
            .expect("assertion verifies with the public key");
        assert_eq!(data.header.kid.as_deref(), Some("key-1"));
        assert_eq!(data.header.alg, jwt_alg);
        let claims = data.claims;
        assert_eq!(claims["iss"], "portico-backend");
        assert_eq!(claims["sub"], "portico-backend");
        assert_eq!(claims["aud"], token_url.as_str());
        let exp = claims["exp"].as_i64().unwrap();
        let now = chrono::Utc::now().timestamp();
        assert!(exp > now && exp <= now + 300, "exp within five minutes");
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(jtis.len(), 2);
    assert_ne!(jtis[0], jtis[1], "jti is unique per assertion");
}

#[tokio::test]
async fn backend_services_es384_assertion_verifies() {
    check_backend_services(SigningAlgorithm::ES384).await;
}

#[tokio::test]
async fn backend_services_rs384_assertion_verifies() {
    check_backend_services(SigningAlgorithm::RS384).await;
}
