//! The upstream client against the sandbox EHR: real FHIR semantics, real tokens, and
//! the sandbox's fault knobs for the failure classes.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use portico_sandbox::SandboxConfig;
use portico_sandbox::auth::ClientRegistration;
use portico_sandbox::faults::FailureKind;
use portico_upstream::{
    FhirClient, FhirRequest, FhirUpstream, SecretString, SigningAlgorithm, UpstreamAuthConfig,
    UpstreamConfig, UpstreamError,
};
use serde_json::{Value, json};

use crate::support::{sandbox, sandbox_with, system_client, system_client_with};

fn observation(patient: &str, key: &str) -> Bytes {
    Bytes::from(
        json!({
            "resourceType": "Observation",
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{key}")}],
            "status": "final",
            "code": {"text": "integration test"},
            "subject": {"reference": format!("Patient/{patient}")}
        })
        .to_string(),
    )
}

#[tokio::test]
async fn conditional_create_twice_makes_one_resource() {
    let sandbox = sandbox().await;
    let client = system_client(&sandbox);
    let key = "4b1c1e9e-1d6b-4c57-9d53-cc3e7f0a0001";
    let condition = format!("identifier=urn:ietf:rfc:3986|urn:uuid:{key}");
    let first = client
        .create(
            "Observation",
            observation("pat-1", key),
            Some(condition.clone()),
        )
        .await
        .unwrap();
    assert_eq!(first.status, 201);
    let created = first
        .location_reference()
        .expect("Location names the new resource");
    let second = client
        .create("Observation", observation("pat-1", key), Some(condition))
        .await
        .unwrap();
    assert_eq!(second.status, 200, "the second create matched the first");

    let found = client
        .search(
            "Observation",
            vec![(
                "identifier".into(),
                format!("urn:ietf:rfc:3986|urn:uuid:{key}"),
            )],
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(found["total"], 1);
    assert_eq!(found["entry"][0]["resource"]["id"], created.id.as_str());
}

#[tokio::test]
async fn update_with_a_stale_version_is_refused() {
    let sandbox = sandbox().await;
    let client = system_client(&sandbox);
    let created = client
        .create("Observation", observation("pat-2", "u-1"), None)
        .await
        .unwrap();
    let id = created.location_reference().unwrap().id;
    let v1 = created.version_id.clone().expect("a version");
    let mut body: Value = client
        .read("Observation", &id)
        .await
        .unwrap()
        .json()
        .unwrap();
    body["status"] = json!("amended");
    let updated = client
        .update(
            "Observation",
            &id,
            Bytes::from(body.to_string()),
            Some(format!("W/\"{v1}\"")),
        )
        .await
        .unwrap();
    assert_ne!(updated.version_id.as_deref(), Some(v1.as_str()));

    body["status"] = json!("corrected");
    let stale = client
        .update(
            "Observation",
            &id,
            Bytes::from(body.to_string()),
            Some(format!("W/\"{v1}\"")),
        )
        .await;
    assert!(
        matches!(stale, Err(UpstreamError::PreconditionFailed { .. })),
        "{stale:?}"
    );
    let current: Value = client
        .read("Observation", &id)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        current["status"], "amended",
        "the stale update changed nothing"
    );
}

#[tokio::test]
async fn search_pages_follow_next_links_to_the_end() {
    let sandbox = sandbox().await;
    let client = system_client(&sandbox);
    let first = client
        .search(
            "Observation",
            vec![
                ("patient".into(), "pat-1".into()),
                ("_count".into(), "4".into()),
            ],
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    let total = first["total"].as_u64().unwrap() as usize;
    assert!(total > 8, "enough data to page: {total}");
    let mut ids = HashSet::new();
    let mut page = first;
    let mut pages = 0;
    loop {
        pages += 1;
        for r in portico_fhir::bundle::resources(&page) {
            assert!(
                ids.insert(r["id"].as_str().unwrap().to_owned()),
                "duplicate across pages"
            );
        }
        let Some(next) = portico_fhir::bundle::link(&page, "next") else {
            break;
        };
        page = client.search_page(next).await.unwrap().json().unwrap();
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(ids.len(), total);
    assert!(pages > 1);
}

#[tokio::test]
async fn a_paging_link_outside_the_base_is_never_followed() {
    let sandbox = sandbox().await;
    let client = system_client(&sandbox);
    sandbox.faults().reset_stats();
    let evil = "http://127.0.0.1:9/fhir/Observation?patient=pat-1";
    let res = client.search_page(evil).await;
    assert!(
        matches!(res, Err(UpstreamError::Protocol { .. })),
        "{res:?}"
    );
    let sibling = format!("{}-evil/Observation", sandbox.fhir_base());
    assert!(client.search_page(&sibling).await.is_err());
    assert_eq!(sandbox.faults().requests(), 0);
}

#[tokio::test]
async fn missing_resources_are_not_found_with_the_outcome_kept() {
    let sandbox = sandbox().await;
    let client = system_client(&sandbox);
    match client.read("Patient", "no-such-patient").await {
        Err(UpstreamError::NotFound { outcome: Some(oo) }) => {
            assert_eq!(oo["resourceType"], "OperationOutcome")
        }
        other => panic!("expected NotFound with an outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn backend_services_private_key_jwt() {
    use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let sandbox = sandbox().await;
    let key = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let private_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public_pem = key.public_key().to_public_key_pem(LineEnding::LF).unwrap();
    sandbox
        .auth()
        .register_client(ClientRegistration::backend_service(
            "backend-test",
            public_pem,
        ));

    let config = UpstreamConfig::new(
        sandbox.fhir_base().parse().unwrap(),
        UpstreamAuthConfig::BackendServices {
            token_url: format!("{}/auth/token", sandbox.base_url())
                .parse()
                .unwrap(),
            client_id: "backend-test".into(),
            private_key_file: None,
            private_key_env: Some("TEST_KEY".into()),
            algorithm: SigningAlgorithm::ES384,
            kid: None,
            scope: "system/*.rs".into(),
        },
    );
    let resolved = config
        .resolve_with(|var| (var == "TEST_KEY").then(|| private_pem.clone()))
        .unwrap();
    let client = FhirClient::new(resolved).unwrap();
    client.check_auth().await.unwrap();
    let p: Value = client
        .read("Patient", "pat-1")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(p["id"], "pat-1");

    // A key the sandbox does not know gets no token.
    let other = p384::SecretKey::random(&mut rand::rngs::OsRng)
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string();
    let resolved = config.resolve_with(|_| Some(other.clone())).unwrap();
    let client = FhirClient::new(resolved).unwrap();
    assert!(matches!(
        client.check_auth().await,
        Err(UpstreamError::Auth { .. })
    ));
}

#[tokio::test]
async fn passthrough_forwards_the_callers_token() {
    let sandbox = sandbox().await;
    let config = UpstreamConfig::new(
        sandbox.fhir_base().parse().unwrap(),
        UpstreamAuthConfig::Passthrough,
    );
    let client = FhirClient::new(config.resolve().unwrap()).unwrap();
    let token = sandbox
        .auth()
        .issue_access_token("demo-app", "patient/*.rs", Some("pat-3"));
    let ok = client
        .execute(FhirRequest::read("Patient", "pat-3").with_bearer(SecretString::new(token)))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let anonymous = client.execute(FhirRequest::read("Patient", "pat-3")).await;
    assert!(
        matches!(anonymous, Err(UpstreamError::Unauthorized { .. })),
        "{anonymous:?}"
    );
}

#[tokio::test]
async fn failures_are_classified() {
    let sandbox = sandbox_with(SandboxConfig {
        patients: 2,
        ..SandboxConfig::default()
    })
    .await;
    let client = system_client_with(&sandbox, |c| c.request_timeout = Duration::from_millis(500));
    client.check_auth().await.unwrap();
    let faults = sandbox.faults();

    faults.inject(FailureKind::Status500, 1.0, None);
    let r = client.read("Patient", "pat-1").await;
    assert!(
        matches!(r, Err(UpstreamError::Server { status: 500, .. })),
        "{r:?}"
    );

    faults.inject(FailureKind::Status503, 1.0, None);
    let r = client.read("Patient", "pat-1").await;
    assert!(
        matches!(r, Err(UpstreamError::Server { status: 503, .. })),
        "{r:?}"
    );
    assert!(r.unwrap_err().retryable());

    faults.inject(FailureKind::MalformedJson, 1.0, None);
    let r = client
        .read("Patient", "pat-1")
        .await
        .and_then(|res| res.json());
    assert!(
        matches!(r, Err(UpstreamError::MalformedBody { .. })),
        "{r:?}"
    );

    faults.inject(FailureKind::Reset, 1.0, None);
    let r = client.read("Patient", "pat-1").await;
    assert!(
        matches!(
            r,
            Err(UpstreamError::Connect { .. } | UpstreamError::MalformedBody { .. })
        ),
        "{r:?}"
    );

    faults.inject(FailureKind::SlowBody, 1.0, None);
    let r = client.read("Patient", "pat-1").await;
    assert!(matches!(r, Err(UpstreamError::Timeout)), "{r:?}");

    faults.clear();
    faults.set_latency(Duration::from_millis(1500));
    let r = client.read("Patient", "pat-1").await;
    assert!(matches!(r, Err(UpstreamError::Timeout)), "{r:?}");

    faults.clear();
    assert_eq!(client.read("Patient", "pat-1").await.unwrap().status, 200);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure() {
    let config = UpstreamConfig::new(
        "http://127.0.0.1:9/fhir".parse().unwrap(),
        UpstreamAuthConfig::None,
    );
    let client = FhirClient::new(config.resolve().unwrap()).unwrap();
    let r = client.read("Patient", "x").await;
    assert!(matches!(r, Err(UpstreamError::Connect { .. })), "{r:?}");
}
