//! The FHIR facade's basic behaviour for a well-behaved patient: reads, searches,
//! paging through gateway cursors, discovery documents, audit records. The adversarial
//! cases live in `isolation`.

use serde_json::Value;

use crate::support::TestApp;

const SCOPES: &str = "launch/patient patient/*.rs";

#[tokio::test]
async fn a_patient_reads_their_own_record() {
    let app = TestApp::spawn().await;
    let token = app.patient_token("pat-1", SCOPES);
    let res = app
        .http
        .get(app.url("/fhir/Patient/pat-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers().contains_key("etag"));
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["id"], "pat-1");

    // A search without a patient parameter is narrowed to the principal's own data.
    let res = app
        .http
        .get(app.url("/fhir/Observation?category=laboratory"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bundle: Value = res.json().await.unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    assert!(!entries.is_empty());
    for e in entries {
        assert_eq!(e["resource"]["subject"]["reference"], "Patient/pat-1");
    }
}

#[tokio::test]
async fn foreign_and_missing_resources_look_the_same() {
    let app = TestApp::spawn().await;
    let token = app.patient_token("pat-1", SCOPES);
    let foreign = app
        .http
        .get(app.url("/fhir/Patient/pat-2"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let missing = app
        .http
        .get(app.url("/fhir/Patient/pat-999"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    assert_eq!(missing.status(), 404);
    let (f, m): (Value, Value) = (foreign.json().await.unwrap(), missing.json().await.unwrap());
    assert_eq!(f, m);
    // The sandbox has pat-2: only the gateway's check made it a 404.
    let audit = app.audit_records();
    assert!(
        audit
            .iter()
            .any(|r| r["decision"] == "denied" && r["resource_type"] == "Patient"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn paging_goes_through_signed_gateway_cursors() {
    let app = TestApp::spawn().await;
    let token = app.patient_token("pat-1", SCOPES);
    let upstream_base = app.sandbox.fhir_base();
    let mut url = app.url("/fhir/Observation?_count=3");
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    loop {
        let res = app.http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        let text = res.text().await.unwrap();
        assert!(
            !text.contains(&upstream_base),
            "the EHR's base leaked: {text}"
        );
        let bundle: Value = serde_json::from_str(&text).unwrap();
        for r in portico_fhir::bundle::resources(&bundle) {
            assert_eq!(r["subject"]["reference"], "Patient/pat-1");
            assert!(seen.insert(r["id"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        match portico_fhir::bundle::link(&bundle, "next") {
            Some(next) => {
                assert!(next.starts_with(&app.fhir()), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
        assert!(pages < 50);
    }
    assert!(pages > 2, "several pages: {pages}");

    // Another patient's token cannot replay the cursor.
    let first: Value = app
        .http
        .get(app.url("/fhir/Observation?_count=3"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = portico_fhir::bundle::link(&first, "next")
        .unwrap()
        .to_owned();
    let other = app.patient_token("pat-2", SCOPES);
    let res = app
        .http
        .get(&next)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn discovery_documents_describe_the_gateway() {
    let app = TestApp::spawn().await;
    let meta: Value = app
        .http
        .get(app.url("/fhir/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["resourceType"], "CapabilityStatement");
    assert_eq!(meta["fhirVersion"], "4.0.1");
    let oauth = &meta["rest"][0]["security"]["extension"][0];
    assert_eq!(
        oauth["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let types: Vec<&str> = meta["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"Observation") && types.contains(&"Practitioner"));
    assert!(
        !types.contains(&"PaymentNotice"),
        "only what patients can reach"
    );

    let smart: Value = app
        .http
        .get(app.url("/fhir/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        smart["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        smart["authorization_endpoint"],
        format!("{}/auth/authorize", app.sandbox.base_url())
    );
}

#[tokio::test]
async fn every_decision_is_audited_without_tokens_or_bodies() {
    let app = TestApp::spawn().await;
    let token = app.patient_token("pat-1", SCOPES);
    app.http
        .get(app.url("/fhir/Patient/pat-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    app.http
        .get(app.url("/fhir/Observation?patient=pat-2"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    app.http
        .get(app.url("/fhir/Patient/pat-1"))
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    let records = app.audit_records();
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[0]["decision"], "allowed");
    assert_eq!(records[0]["interaction"], "read");
    assert_eq!(records[1]["decision"], "denied");
    assert_eq!(records[1]["reason"], "foreign-patient");
    assert_eq!(records[2]["decision"], "denied");
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&token));
    let name = &app.sandbox.patients()[0].name;
    assert!(!text.contains(name.as_str()));
}

#[tokio::test]
async fn passthrough_credentials_do_not_replace_the_gateways_checks() {
    let sandbox = crate::support::sandbox().await;
    let app = TestApp::spawn_with(sandbox, |_, upstream| {
        upstream.auth = portico_upstream::ResolvedAuth::Passthrough;
    })
    .await;
    let token = app.patient_token("pat-1", SCOPES);
    // The patient's own token went upstream (the sandbox accepts only its tokens).
    let res = app
        .http
        .get(app.url("/fhir/Patient/pat-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The sandbox would serve pat-2 to that token; the gateway does not.
    let res = app
        .http
        .get(app.url("/fhir/Patient/pat-2"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .http
        .get(app.url("/fhir/Observation?subject=Patient/pat-2"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

/// An EHR that ignores the narrowing and answers another patient's entries beside the
/// patient's own: the facade (which checks a Bundle entry by entry on its bytes) drops
/// them, corrects `total`, and never passes on an entry whose text says something else
/// than what was checked (a key given twice). (That no answer carries the EHR's base is
/// the isolation suite's leak check, on every answer against the sandbox.)
#[tokio::test]
async fn an_ehr_answering_foreign_entries_is_checked_entry_by_entry() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let mock = MockServer::start().await;
    let base = format!("{}/fhir", mock.uri());
    let own = |id: &str| {
        format!(
            r#"{{"fullUrl":"{base}/Observation/{id}","resource":{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"text":"ok"}},"subject":{{"reference":"Patient/pat-1"}}}},"search":{{"mode":"match"}}}}"#
        )
    };
    let foreign = format!(
        r#"{{"fullUrl":"{base}/Observation/b1","resource":{{"resourceType":"Observation","id":"b1","status":"final","code":{{"text":"secret-of-b"}},"subject":{{"reference":"Patient/pat-2"}}}},"search":{{"mode":"match"}}}}"#
    );
    // Read first-wins, this entry is pat-2's; read last-wins (as checked), pat-1's.
    let repeated = r#"{"resource":{"resourceType":"Observation","id":"twice","status":"final","code":{"text":"repeated-key"},"subject":{"reference":"Patient/pat-2"},"subject":{"reference":"Patient/pat-1"}},"search":{"mode":"match"}}"#;
    let body = format!(
        r#"{{"resourceType":"Bundle","type":"searchset","total":4,"entry":[{},{foreign},{repeated},{}]}}"#,
        own("a1"),
        own("a2")
    );
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(body.into_bytes(), "application/fhir+json"),
        )
        .mount(&mock)
        .await;
    let app = TestApp::spawn_on_mock(&mock, portico::config::EhrProfile::GenericR4).await;
    let token = app.patient_token("pat-1", SCOPES);
    let res = app
        .http
        .get(app.url("/fhir/Observation?code=x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("secret-of-b"), "{text}");
    assert!(!text.contains("Patient/pat-2"), "{text}");
    let bundle: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1", "twice", "a2"]);
    assert_eq!(bundle["total"], 3);
    let audit = app.audit_records();
    assert!(
        audit
            .iter()
            .any(|r| r["resource_type"] == "Observation" && r["removed_entries"] == 1),
        "{audit:?}"
    );
}
