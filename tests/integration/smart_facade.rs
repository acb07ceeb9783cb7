//! A SMART app end to end through the gateway: discovery at the gateway's `/fhir`
//! (`.well-known/smart-configuration` and the CapabilityStatement's `oauth-uris`), the
//! authorization code + PKCE S256 flow against the endpoints those documents name with
//! `aud` = the gateway's FHIR base, then reads, searches and paging through the gateway
//! with SMART v1 (`patient/*.read`), v2 (`patient/*.rs`) and v2 granular scopes.

use serde_json::Value;

use crate::support::{Pkce, TestApp, authorization_code, exchange_code};

const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// What a SMART client library learns from discovery.
struct Endpoints {
    authorize: String,
    token: String,
}

async fn discover(app: &TestApp) -> Endpoints {
    let fhir = app.fhir();
    let res = app
        .http
        .get(format!("{fhir}/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "{ct}");
    let smart: Value = res.json().await.unwrap();
    for field in ["authorization_endpoint", "token_endpoint"] {
        assert!(smart[field].is_string(), "{field} missing: {smart}");
    }
    assert_eq!(
        smart["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let grants = smart["grant_types_supported"].to_string();
    assert!(grants.contains("authorization_code"), "{grants}");
    let capabilities: Vec<&str> = smart["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for c in [
        "launch-standalone",
        "context-standalone-patient",
        "permission-patient",
        "permission-v1",
        "permission-v2",
    ] {
        assert!(
            capabilities.contains(&c),
            "capability {c} missing: {capabilities:?}"
        );
    }
    // The documents describe the gateway: the EHR's FHIR base appears in neither.
    assert!(
        !smart.to_string().contains(&app.sandbox.fhir_base()),
        "{smart}"
    );

    // The Python fhirclient reads only the CapabilityStatement's oauth-uris.
    let res = app
        .http
        .get(format!("{fhir}/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cs: Value = res.json().await.unwrap();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert!(
        !cs.to_string().contains(&app.sandbox.fhir_base()),
        "metadata names the EHR"
    );
    let ext = cs["rest"][0]["security"]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == OAUTH_URIS)
        .expect("oauth-uris extension")
        .clone();
    let uri = |name: &str| {
        ext["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == name)
            .and_then(|e| e["valueUri"].as_str())
            .unwrap()
            .to_owned()
    };
    let endpoints = Endpoints {
        authorize: uri("authorize"),
        token: uri("token"),
    };
    assert_eq!(
        smart["authorization_endpoint"],
        endpoints.authorize.as_str()
    );
    assert_eq!(smart["token_endpoint"], endpoints.token.as_str());
    endpoints
}

/// Authorization code + PKCE S256 for `patient`; returns the token response.
async fn launch(app: &TestApp, endpoints: &Endpoints, patient: &str, scope: &str) -> Value {
    let pkce = Pkce::generate();
    let (http, aud) = (&app.http, app.fhir());
    let code = authorization_code(http, &endpoints.authorize, &aud, scope, patient, &pkce).await;
    let res = exchange_code(http, &endpoints.token, &code, &pkce.verifier).await;
    assert_eq!(res.status(), 200);
    let token: Value = res.json().await.unwrap();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["patient"], patient);
    token
}

async fn get(app: &TestApp, token: &str, url: &str) -> (u16, Value) {
    let res = app.http.get(url).bearer_auth(token).send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(&app.sandbox.fhir_base()),
        "the EHR's base leaked: {url}"
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn subjects(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|e| {
            let r = &e["resource"];
            r["subject"]["reference"]
                .as_str()
                .or(r["patient"]["reference"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// What an app does after the launch: read the patient, search, page, and fail on others.
async fn use_the_token(app: &TestApp, token: &str, patient: &str, other: &str) {
    let fhir = app.fhir();
    let (status, p) = get(app, token, &format!("{fhir}/Patient/{patient}")).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["id"], patient);

    let (status, labs) = get(
        app,
        token,
        &format!("{fhir}/Observation?category=laboratory&_count=5"),
    )
    .await;
    assert_eq!(status, 200, "{labs}");
    let refs = subjects(&labs);
    assert!(!refs.is_empty());
    assert!(
        refs.iter().all(|r| *r == format!("Patient/{patient}")),
        "{refs:?}"
    );
    // The next page, through the gateway.
    let next = labs["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .expect("a next link")
        .to_owned();
    assert!(next.starts_with(&fhir), "{next}");
    let (status, page) = get(app, token, &next).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        subjects(&page)
            .iter()
            .all(|r| *r == format!("Patient/{patient}"))
    );

    for ty in ["Condition", "MedicationRequest", "Encounter"] {
        let (status, bundle) = get(app, token, &format!("{fhir}/{ty}")).await;
        assert_eq!(status, 200, "{ty}: {bundle}");
        let refs = subjects(&bundle);
        assert!(!refs.is_empty(), "{ty}");
        assert!(
            refs.iter().all(|r| *r == format!("Patient/{patient}")),
            "{ty}: {refs:?}"
        );
    }
    let (status, _) = get(app, token, &format!("{fhir}/Patient/{other}")).await;
    assert_eq!(status, 404);
    let (status, _) = get(app, token, &format!("{fhir}/Observation?patient={other}")).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_smart_app_launches_and_reads_through_the_gateway() {
    let app = TestApp::spawn().await;
    let endpoints = discover(&app).await;
    let a = "pat-1";
    let b = "pat-2";

    // SMART v1.
    let v1 = launch(
        &app,
        &endpoints,
        a,
        "launch/patient openid fhirUser patient/*.read",
    )
    .await;
    let v1_token = v1["access_token"].as_str().unwrap();
    use_the_token(&app, v1_token, a, b).await;

    // SMART v2.
    let v2 = launch(
        &app,
        &endpoints,
        a,
        "launch/patient openid fhirUser offline_access patient/*.rs",
    )
    .await;
    let v2_token = v2["access_token"].as_str().unwrap();
    use_the_token(&app, v2_token, a, b).await;

    // The same app for B sees B's record and not A's.
    let vb = launch(
        &app,
        &endpoints,
        b,
        "launch/patient openid fhirUser patient/*.rs",
    )
    .await;
    use_the_token(&app, vb["access_token"].as_str().unwrap(), b, a).await;

    // The id token is not an access token.
    let id_token = v2["id_token"].as_str().expect("an id token");
    let (status, _) = get(&app, id_token, &format!("{}/Patient/{a}", app.fhir())).await;
    assert_eq!(status, 401);

    // A refreshed token works at the gateway too.
    let refresh = v2["refresh_token"].as_str().expect("a refresh token");
    let res = app
        .http
        .post(&endpoints.token)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "demo-app"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let refreshed: Value = res.json().await.unwrap();
    let (status, p) = get(
        &app,
        refreshed["access_token"].as_str().unwrap(),
        &format!("{}/Patient/{a}", app.fhir()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(p["id"], a);
}

#[tokio::test]
async fn a_granular_scope_launch_sees_only_labs() {
    let app = TestApp::spawn().await;
    let endpoints = discover(&app).await;
    let scope = "launch/patient patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    let token = launch(&app, &endpoints, "pat-1", scope).await;
    assert!(
        token["scope"]
            .as_str()
            .unwrap_or_default()
            .contains("laboratory"),
        "the granular scope was not granted: {token}"
    );
    let access = token["access_token"].as_str().unwrap();
    let (status, bundle) = get(
        &app,
        access,
        &format!("{}/Observation?_count=1000", app.fhir()),
    )
    .await;
    assert_eq!(status, 200, "{bundle}");
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    assert!(!entries.is_empty());
    for e in &entries {
        let obs = &e["resource"];
        assert!(obs["category"].to_string().contains("laboratory"), "{obs}");
        assert_eq!(obs["subject"]["reference"], "Patient/pat-1");
    }
    let (status, _) = get(&app, access, &format!("{}/Condition", app.fhir())).await;
    assert_eq!(status, 403);
}
