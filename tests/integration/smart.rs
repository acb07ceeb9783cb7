//! A SMART standalone patient launch against the sandbox's authorization server:
//! discovery, authorization code + PKCE S256, then reads with the patient's token.

use serde_json::Value;

use crate::support::{Pkce, authorization_code, exchange_code, http_client, sandbox};

/// Runs `/authorize` with `login_hint` and returns the code from the redirect.
async fn authorize(
    http: &reqwest::Client,
    smart: &Value,
    fhir: &str,
    patient: &str,
    pkce: &Pkce,
) -> String {
    let authorize = smart["authorization_endpoint"].as_str().unwrap();
    let scope = "launch/patient openid fhirUser patient/*.rs";
    authorization_code(http, authorize, fhir, scope, patient, pkce).await
}

async fn exchange(
    http: &reqwest::Client,
    smart: &Value,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    let token = smart["token_endpoint"].as_str().unwrap();
    exchange_code(http, token, code, verifier).await
}

#[tokio::test]
async fn standalone_patient_launch_with_pkce() {
    let sandbox = sandbox().await;
    let http = http_client();
    let fhir = sandbox.fhir_base();
    let smart: Value = http
        .get(format!("{fhir}/.well-known/smart-configuration"))
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

    let patient = sandbox.patients()[1].id.clone();
    let pkce = Pkce::generate();
    let code = authorize(&http, &smart, &fhir, &patient, &pkce).await;
    let res = exchange(&http, &smart, &code, &pkce.verifier).await;
    assert_eq!(res.status(), 200);
    let token: Value = res.json().await.unwrap();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["patient"], patient.as_str());
    assert!(token["id_token"].is_string());
    let access = token["access_token"].as_str().unwrap();

    // The code is single-use.
    let again = exchange(&http, &smart, &code, &pkce.verifier).await;
    assert_eq!(again.status(), 400);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let res = http
        .get(format!("{fhir}/Patient/{patient}"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["id"], patient.as_str());

    let res = http
        .get(format!("{fhir}/Observation"))
        .query(&[("patient", patient.as_str()), ("category", "laboratory")])
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bundle: Value = res.json().await.unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    assert!(!entries.is_empty());
    for e in entries {
        let obs = &e["resource"];
        assert_eq!(obs["subject"]["reference"], format!("Patient/{patient}"));
        let categories = obs["category"].to_string();
        assert!(categories.contains("laboratory"), "{categories}");
    }
}

#[tokio::test]
async fn a_wrong_verifier_gets_no_token() {
    let sandbox = sandbox().await;
    let http = http_client();
    let fhir = sandbox.fhir_base();
    let smart = portico_sandbox::auth::smart_configuration(sandbox.auth());
    let pkce = Pkce::generate();
    let code = authorize(&http, &smart, &fhir, &sandbox.patients()[0].id, &pkce).await;
    let res = exchange(
        &http,
        &smart,
        &code,
        "a-different-verifier-of-sufficient-length-1234567",
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

#[tokio::test]
async fn the_sandbox_fhir_api_requires_a_valid_token() {
    let sandbox = sandbox().await;
    let http = http_client();
    let url = format!(
        "{}/Patient/{}",
        sandbox.fhir_base(),
        sandbox.patients()[0].id
    );
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let res = http
        .get(&url)
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // metadata stays open, as SMART clients expect.
    let res = http
        .get(format!("{}/metadata", sandbox.fhir_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_patient_list_matches_the_generated_patients() {
    let sandbox = sandbox().await;
    let listed: Vec<portico_sandbox::PatientSummary> = http_client()
        .get(format!("{}/auth/patients", sandbox.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, sandbox.patients());
    assert_eq!(listed.len(), 5);
}
