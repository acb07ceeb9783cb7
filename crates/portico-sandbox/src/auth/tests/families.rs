//! The families' proxies at the authorization server: the picker, the code flow, the
//! minted tokens.

use super::*;
use crate::generator::{GeneratorConfig, generate};

fn families() -> Families {
    let config = GeneratorConfig {
        seed: 9,
        patients: 0,
        today: chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
    };
    generate(&config, &mut |_| {}).families
}

fn family_server() -> (Arc<AuthServer>, Families) {
    let families = families();
    let server = AuthServer::new(
        AuthConfig {
            base_url: BASE.into(),
            token_lifetime: Duration::from_secs(300),
        },
        patients(),
    )
    .with_families(families.clone());
    (Arc::new(server), families)
}

/// The JWT's payload, unverified (to see the claims exactly as signed).
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Signs in through `/authorize` with `login_hint` and exchanges the code.
async fn sign_in(router: &Router, hint: &str, scope: &str) -> Value {
    let (verifier, challenge) = pkce();
    let uri = authorize_uri(
        DEMO_APP,
        APP_REDIRECT,
        &challenge,
        scope,
        &[("login_hint", hint), ("nonce", "n-7")],
    );
    let response = get(router, &uri).await;
    assert_eq!(response.status(), StatusCode::FOUND, "{hint}");
    let code = query_param(&location(&response).unwrap(), "code").unwrap();
    let (status, body, _) = post_token(
        router,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", DEMO_APP),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn the_picker_lists_family_patients_and_proxies_after_the_patients() {
    let (server, families) = family_server();
    let router = router(server);
    let (_, challenge) = pkce();
    let uri = authorize_uri(DEMO_APP, APP_REDIRECT, &challenge, "launch/patient", &[]);
    let response = get(&router, &uri).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = body_text(response).await;
    let at = |id: &str| {
        page.find(&format!("name=\"login_hint\" value=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} is not listed"))
    };
    let last_patient = at("pat-12");
    let mut previous = last_patient;
    for patient in &families.patients {
        assert!(at(&patient.id) > previous, "{} out of order", patient.id);
        previous = at(&patient.id);
    }
    for login in families.logins.all() {
        assert!(at(&login.id) > previous, "{} out of order", login.id);
        previous = at(&login.id);
        assert!(page.contains(&login.name));
    }
    assert!(page.contains("for fam-child, fam-teen, fam-adult-child"));

    // The JSON patient list stays the ordinary patients; the families have their own.
    let listed: Vec<PatientSummary> =
        serde_json::from_str(&body_text(get(&router, "/patients").await).await).unwrap();
    assert_eq!(listed, patients());
    let response = get(&router, "/families").await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed: Families = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(listed, families);

    // Without families, a proxy's login id is unknown and the picker comes back.
    let plain = router_without_families();
    let uri = authorize_uri(
        DEMO_APP,
        APP_REDIRECT,
        &challenge,
        "launch/patient",
        &[("login_hint", "proxy-rivera-parent")],
    );
    let response = get(&plain, &uri).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_text(response).await.contains("not known here"));
    assert_eq!(
        get(&plain, "/families").await.status(),
        StatusCode::NOT_FOUND
    );
}

fn router_without_families() -> Router {
    router(server())
}

#[tokio::test]
async fn signing_in_as_a_proxy_gives_tokens_for_all_their_patients() {
    let (server, families) = family_server();
    let router = router(server.clone());
    let scope = "openid fhirUser launch/patient patient/*.rs offline_access";
    let daughter = &families.logins.daughter;
    let body = sign_in(&router, &daughter.id, scope).await;

    // The token response names one launch patient (a string, as SMART has it): her own.
    assert_eq!(body["patient"], families.daughter.as_str());
    let access = body["access_token"].as_str().unwrap();
    let claims = server.verify_access_token(access).unwrap();
    assert_eq!(claims.sub, daughter.id);
    assert_eq!(claims.fhir_user.as_deref(), Some("Patient/fam-daughter"));
    assert_eq!(
        claims.patients(),
        [families.daughter.clone(), families.elder.clone()]
    );
    assert_eq!(
        payload(access)["patient"],
        json!([families.daughter, families.elder])
    );

    // The id token says who signed in the same way.
    let id_token = payload(body["id_token"].as_str().unwrap());
    assert_eq!(id_token["sub"], daughter.id.as_str());
    assert_eq!(id_token["fhirUser"], "Patient/fam-daughter");
    assert_eq!(id_token["nonce"], "n-7");

    // A refresh keeps the proxy's claims.
    let (status, refreshed, _) = post_token(
        &router,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
            ("client_id", DEMO_APP),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let again = server
        .verify_access_token(refreshed["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!((again.sub, again.patient), (claims.sub, claims.patient));

    // A RelatedPerson-only proxy: fhirUser is their first RelatedPerson.
    let parent = &families.logins.parent;
    let body = sign_in(&router, &parent.id, scope).await;
    assert_eq!(body["patient"], families.child.as_str());
    let claims = server
        .verify_access_token(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.sub, "proxy-rivera-parent");
    assert_eq!(
        claims.fhir_user.as_deref(),
        Some("RelatedPerson/rp-parent-child")
    );
    assert_eq!(
        claims.patients(),
        [&families.child, &families.teen, &families.adult_child].map(String::clone)
    );
    let id_token = payload(body["id_token"].as_str().unwrap());
    assert_eq!(id_token["fhirUser"], "RelatedPerson/rp-parent-child");
    assert_eq!(id_token["sub"], "proxy-rivera-parent");

    // A family patient signs in as herself, like any patient.
    let body = sign_in(&router, &families.teen, scope).await;
    let claims = server
        .verify_access_token(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.patient,
        Some(PatientClaim::One(families.teen.clone()))
    );
    assert_eq!(claims.sub, families.teen);
    assert_eq!(claims.fhir_user.as_deref(), Some("Patient/fam-teen"));
}

#[tokio::test]
async fn minted_proxy_tokens_carry_the_login_and_verify() {
    let (server, families) = family_server();
    for login in families.logins.all() {
        let token = server.issue_proxy_token(DEMO_APP, "patient/*.rs", login);
        let claims = server.verify_access_token(&token).unwrap();
        assert_eq!(claims.sub, login.id);
        assert_eq!(claims.client_id, DEMO_APP);
        assert_eq!(claims.fhir_user.as_deref(), Some(login.fhir_user.as_str()));
        assert_eq!(
            claims.patient,
            Some(PatientClaim::Many(login.patients.clone()))
        );
        assert_eq!(payload(&token)["patient"], json!(login.patients));
    }
    // Whether the former caregiver's relationship has ended is not the authorization
    // server's business: the elder is still in the token.
    let former = &families.logins.former_caregiver;
    assert_eq!(former.patients, std::slice::from_ref(&families.elder));
}
