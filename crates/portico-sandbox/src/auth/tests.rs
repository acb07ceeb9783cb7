//! End-to-end tests of the authorization server, driven through its axum router.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Request, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

use super::*;

const BASE: &str = "http://127.0.0.1:8090";
const FHIR: &str = "http://127.0.0.1:8090/fhir";
const TOKEN_URL: &str = "http://127.0.0.1:8090/auth/token";
const APP_REDIRECT: &str = "http://127.0.0.1:5555/callback";

fn patients() -> Vec<PatientSummary> {
    [
        ("pat-1", "Ana Lopez", "1980-02-03"),
        ("pat-12", "Tom Kim", "1975-06-07"),
    ]
    .into_iter()
    .map(|(id, name, birth)| PatientSummary {
        id: id.into(),
        name: name.into(),
        birth_date: birth.into(),
    })
    .collect()
}

fn server_with(lifetime: Duration, patients: Vec<PatientSummary>) -> Arc<AuthServer> {
    Arc::new(AuthServer::new(
        AuthConfig {
            base_url: BASE.into(),
            token_lifetime: lifetime,
        },
        patients,
    ))
}

fn server() -> Arc<AuthServer> {
    server_with(Duration::from_secs(300), patients())
}

fn pkce() -> (String, String) {
    let verifier = format!("verifier-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn get(router: &Router, path_and_query: &str) -> http::Response<Body> {
    let request = Request::get(path_and_query)
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap()
}

async fn post_token(
    router: &Router,
    pairs: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (StatusCode, Value, http::HeaderMap) {
    let mut request =
        Request::post("/token").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        request = request.header(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        );
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(form(pairs))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    )
}

async fn body_text(response: http::Response<Body>) -> String {
    String::from_utf8(
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

fn location(response: &http::Response<Body>) -> Option<url::Url> {
    let value = response.headers().get(header::LOCATION)?.to_str().ok()?;
    url::Url::parse(value).ok()
}

fn query_param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn authorize_uri(
    client_id: &str,
    redirect_uri: &str,
    challenge: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("state", "st-123"),
        ("aud", FHIR),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend_from_slice(extra);
    format!("/authorize?{}", form(&pairs))
}

/// Runs `/authorize` with a login hint and returns the code from the redirect.
async fn code_for(
    router: &Router,
    client_id: &str,
    redirect_uri: &str,
    challenge: &str,
    scope: &str,
) -> String {
    let uri = authorize_uri(
        client_id,
        redirect_uri,
        challenge,
        scope,
        &[("login_hint", "pat-12"), ("nonce", "n-42")],
    );
    let response = get(router, &uri).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = location(&response).expect("redirect");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st-123"));
    query_param(&location, "code").expect("code")
}

fn secret_of(server: &AuthServer, client_id: &str) -> String {
    server
        .clients()
        .into_iter()
        .find(|c| c.client_id == client_id)
        .and_then(|c| c.client_secret)
        .expect("secret")
}

fn jwks_key(server: &AuthServer) -> (String, DecodingKey) {
    let jwks = server.jwks();
    let key = &jwks["keys"][0];
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    let decoding =
        DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap())
            .unwrap();
    (key["kid"].as_str().unwrap().to_owned(), decoding)
}

#[tokio::test]
async fn pkce_login_issues_tokens_verifiable_with_the_published_key() {
    let server = server();
    let router = router(server.clone());
    let (verifier, challenge) = pkce();
    let scope = "openid fhirUser launch/patient patient/*.read offline_access user/*.read";
    let uri = authorize_uri(
        DEMO_APP,
        APP_REDIRECT,
        &challenge,
        scope,
        &[("login_hint", "pat-12"), ("nonce", "n-42")],
    );
    let response = get(&router, &uri).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let redirect = location(&response).unwrap();
    assert_eq!(
        (redirect.host_str(), redirect.port(), redirect.path()),
        (Some("127.0.0.1"), Some(5555), "/callback")
    );
    let code = query_param(&redirect, "code").unwrap();

    let (status, body, headers) = post_token(
        &router,
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
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["patient"], "pat-12");
    assert_eq!(
        body["scope"],
        "openid fhirUser launch/patient patient/*.read offline_access"
    );
    assert!(body["refresh_token"].is_string());
    assert!(body["expires_in"].as_u64().unwrap() > 0);

    let access = body["access_token"].as_str().unwrap();
    let claims = server.verify_access_token(access).unwrap();
    assert_eq!(claims.patient, Some(PatientClaim::One("pat-12".into())));
    assert_eq!(claims.fhir_user.as_deref(), Some("Patient/pat-12"));
    assert_eq!(claims.client_id, DEMO_APP);
    assert!(!claims.scope.contains("user/"));

    // Anyone holding only the JWKS can verify both tokens.
    let (kid, key) = jwks_key(&server);
    assert_eq!(
        jsonwebtoken::decode_header(access).unwrap().kid.as_deref(),
        Some(kid.as_str())
    );
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[FHIR]);
    validation.set_issuer(&[format!("{BASE}/auth")]);
    let decoded = jsonwebtoken::decode::<Value>(access, &key, &validation)
        .unwrap()
        .claims;
    for claim in [
        "iss",
        "aud",
        "sub",
        "client_id",
        "exp",
        "iat",
        "jti",
        "scope",
        "patient",
        "fhirUser",
    ] {
        assert!(decoded.get(claim).is_some(), "access token lacks {claim}");
    }
    let mut id_validation = Validation::new(Algorithm::RS256);
    id_validation.set_audience(&[DEMO_APP]);
    let id_token =
        jsonwebtoken::decode::<Value>(body["id_token"].as_str().unwrap(), &key, &id_validation)
            .unwrap()
            .claims;
    assert_eq!(id_token["fhirUser"], "Patient/pat-12");
    assert_eq!(id_token["nonce"], "n-42");
}

#[tokio::test]
async fn wrong_verifier_is_invalid_grant_and_burns_the_code() {
    let server = server();
    let router = router(server);
    let (verifier, challenge) = pkce();
    let code = code_for(
        &router,
        DEMO_APP,
        APP_REDIRECT,
        &challenge,
        "launch/patient patient/*.rs",
    )
    .await;
    let (wrong, _) = pkce();
    for attempt in [wrong.as_str(), verifier.as_str()] {
        let (status, body, _) = post_token(
            &router,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", APP_REDIRECT),
                ("code_verifier", attempt),
                ("client_id", DEMO_APP),
            ],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
    }
}

#[tokio::test]
async fn a_code_works_once_and_only_with_its_redirect_uri() {
    let server = server();
    let router = router(server);
    let (verifier, challenge) = pkce();
    let code = code_for(
        &router,
        DEMO_APP,
        APP_REDIRECT,
        &challenge,
        "launch/patient patient/*.rs",
    )
    .await;
    let exchange = |redirect: &'static str| {
        let (router, code, verifier) = (router.clone(), code.clone(), verifier.clone());
        async move {
            post_token(
                &router,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("code_verifier", &verifier),
                    ("client_id", DEMO_APP),
                ],
                None,
            )
            .await
        }
    };
    let (status, body, _) = exchange("http://127.0.0.1:5555/elsewhere").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let code = code_for(
        &router,
        DEMO_APP,
        APP_REDIRECT,
        &challenge,
        "launch/patient patient/*.rs",
    )
    .await;
    let pairs = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", APP_REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("client_id", DEMO_APP),
    ];
    let (first, _, _) = post_token(&router, &pairs, None).await;
    assert_eq!(first, StatusCode::OK);
    let (second, body, _) = post_token(&router, &pairs, None).await;
    assert_eq!(
        (second, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn foreign_or_unregistered_redirect_uris_are_never_followed() {
    let server = server();
    let router = router(server);
    let (_, challenge) = pkce();
    for redirect in [
        "http://evil.example:5555/callback",
        "http://127.0.0.1.evil.example/callback",
        "http://localhost@evil.example/callback",
        "http://user:pw@127.0.0.1:5555/callback",
        "https://127.0.0.1:5555/callback",
        "http://127.0.0.1:5555/callback#fragment",
        "javascript:alert(1)",
        "not a url",
    ] {
        let uri = authorize_uri(
            DEMO_APP,
            redirect,
            &challenge,
            "launch/patient",
            &[("login_hint", "pat-1")],
        );
        let response = get(&router, &uri).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{redirect}");
        assert!(
            response.headers().get(header::LOCATION).is_none(),
            "{redirect} was followed"
        );
    }
    // localhost on any port is fine for the demo app.
    let uri = authorize_uri(
        DEMO_APP,
        "http://localhost:7/x/y",
        &challenge,
        "launch/patient",
        &[("login_hint", "pat-1")],
    );
    assert_eq!(get(&router, &uri).await.status(), StatusCode::FOUND);

    // The portal client accepts a loopback /auth/callback on any port, nothing else.
    let uri = authorize_uri(
        PORTAL_CLIENT,
        "http://localhost:9999/auth/callback",
        &challenge,
        "launch/patient",
        &[("login_hint", "pat-1")],
    );
    let response = get(&router, &uri).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(query_param(&location(&response).unwrap(), "code").is_some());
    let uri = authorize_uri(
        PORTAL_CLIENT,
        "http://127.0.0.1:9999/other",
        &challenge,
        "launch/patient",
        &[],
    );
    let response = get(&router, &uri).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(header::LOCATION).is_none());

    // An unknown client never gets a redirect either.
    let uri = authorize_uri("nobody", APP_REDIRECT, &challenge, "launch/patient", &[]);
    let response = get(&router, &uri).await;
    assert!(response.headers().get(header::LOCATION).is_none());
    assert!(response.status().is_client_error());
}

#[tokio::test]
async fn errors_after_the_redirect_is_trusted_go_back_to_the_client() {
    let server = server();
    let router = router(server);
    let (_, challenge) = pkce();
    let cases: [(Vec<(&str, &str)>, &str); 5] = [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (
            vec![("aud", "http://other.example/fhir")],
            "invalid_request",
        ),
        (
            vec![("scope", "user/*.read system/*.read")],
            "invalid_scope",
        ),
        (vec![("code_challenge", "too-short")], "invalid_request"),
    ];
    for (overrides, expected) in cases {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", DEMO_APP),
            ("redirect_uri", APP_REDIRECT),
            ("scope", "launch/patient patient/*.rs"),
            ("state", "st-9"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("login_hint", "pat-1"),
        ];
        for (name, value) in &overrides {
            pairs.retain(|(n, _)| n != name);
            pairs.push((name, value));
        }
        let response = get(&router, &format!("/authorize?{}", form(&pairs))).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{overrides:?}");
        let redirect = location(&response).unwrap();
        assert_eq!(
            query_param(&redirect, "error").as_deref(),
            Some(expected),
            "{overrides:?}"
        );
        assert_eq!(query_param(&redirect, "state").as_deref(), Some("st-9"));
        assert!(query_param(&redirect, "code").is_none());
    }
    // A missing state is an error too (and nothing to echo).
    let uri = format!(
        "/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", DEMO_APP),
            ("redirect_uri", APP_REDIRECT),
            ("scope", "launch/patient"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("login_hint", "pat-1"),
        ])
    );
    let redirect = location(&get(&router, &uri).await).unwrap();
    assert_eq!(
        query_param(&redirect, "error").as_deref(),
        Some("invalid_request")
    );
    // Repeated parameters are refused outright.
    let uri = format!(
        "{}&client_id=demo-app",
        authorize_uri(DEMO_APP, APP_REDIRECT, &challenge, "launch/patient", &[])
    );
    assert_eq!(get(&router, &uri).await.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_patient_picker_escapes_everything_it_shows() {
    let mut list = patients();
    list.push(PatientSummary {
        id: "pat-3".into(),
        name: "<script>alert(1)</script>".into(),
        birth_date: "2001-01-01".into(),
    });
    let server = server_with(Duration::from_secs(60), list);
    let router = router(server);
    let (_, challenge) = pkce();
    let uri = authorize_uri(
        DEMO_APP,
        APP_REDIRECT,
        &challenge,
        "launch/patient",
        &[("nonce", "\"><img src=x>")],
    );
    let response = get(&router, &uri).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = body_text(response).await;
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<script>"));
    assert!(!page.contains("<img"));
    assert!(page.contains("&quot;&gt;&lt;img src=x&gt;"));
    assert!(page.contains("name=\"login_hint\" value=\"pat-12\""));
    assert!(page.contains("name=\"state\" value=\"st-123\""));
    // An unknown login hint shows the picker again rather than approving.
    let uri = authorize_uri(
        DEMO_APP,
        APP_REDIRECT,
        &challenge,
        "launch/patient",
        &[("login_hint", "pat-999")],
    );
    let response = get(&router, &uri).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_text(response).await.contains("not known"));
}

#[tokio::test]
async fn client_credentials_with_a_secret() {
    let server = server();
    let router = router(server.clone());
    let secret = secret_of(&server, SYSTEM_CLIENT);
    let (status, body, _) = post_token(
        &router,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read system/Patient.rs"),
        ],
        Some((SYSTEM_CLIENT, &secret)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "system/*.read system/Patient.rs");
    assert!(body.get("refresh_token").is_none() && body.get("patient").is_none());
    let claims = server
        .verify_access_token(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!((claims.sub.as_str(), claims.patient), (SYSTEM_CLIENT, None));

    let (status, body, _) = post_token(
        &router,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SYSTEM_CLIENT),
            ("client_secret", &secret),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "system/*.*");

    let (status, body, headers) = post_token(
        &router,
        &[("grant_type", "client_credentials")],
        Some((SYSTEM_CLIENT, "wrong")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert!(headers.get(header::WWW_AUTHENTICATE).is_some());

    // Two authentication methods at once, a public client, an unknown grant.
    let (status, _, _) = post_token(
        &router,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SYSTEM_CLIENT),
            ("client_secret", &secret),
        ],
        Some((SYSTEM_CLIENT, &secret)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, body, _) = post_token(
        &router,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", DEMO_APP),
        ],
        None,
    )
    .await;
    assert_eq!(body["error"], "unauthorized_client");
    let (_, body, _) = post_token(
        &router,
        &[("grant_type", "password")],
        Some((SYSTEM_CLIENT, &secret)),
    )
    .await;
    assert_eq!(body["error"], "unsupported_grant_type");
    let (_, body, _) = post_token(
        &router,
        &[("grant_type", "client_credentials"), ("grant_type", "x")],
        None,
    )
    .await;
    assert_eq!(body["error"], "invalid_request");
}

fn now() -> i64 {
    unix_now()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let server = server();
    let router = router(server.clone());
    let secret = secret_of(&server, PORTAL_CLIENT);
    let redirect = "http://127.0.0.1:8080/auth/callback";
    let (verifier, challenge) = pkce();
    let code = code_for(
        &router,
        PORTAL_CLIENT,
        redirect,
        &challenge,
        "openid launch/patient patient/*.rs offline_access",
    )
    .await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", verifier.as_str()),
    ];
    // The confidential portal client must authenticate.
    let mut unauthenticated = exchange.to_vec();
    unauthenticated.push(("client_id", PORTAL_CLIENT));
    let (status, _, _) = post_token(&router, &unauthenticated, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let code = code_for(
        &router,
        PORTAL_CLIENT,
        redirect,
        &challenge,
        "openid launch/patient patient/*.rs offline_access",
    )
    .await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body, _) = post_token(&router, &exchange, Some((PORTAL_CLIENT, &secret))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = body["refresh_token"].as_str().unwrap().to_owned();

    let refresh = |token: String| {
        let (router, secret) = (router.clone(), secret.clone());
        async move {
            post_token(
                &router,
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                Some((PORTAL_CLIENT, &secret)),
            )
            .await
        }
    };
    let (status, body, _) = refresh(first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(body["patient"], "pat-12");
    assert_eq!(
        server
            .verify_access_token(body["access_token"].as_str().unwrap())
            .unwrap()
            .patients(),
        ["pat-12"]
    );

    // Narrowing is allowed, widening is not.
    let (status, body, _) = post_token(
        &router,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &second),
            ("scope", "patient/*.rs patient/*.cruds"),
        ],
        Some((PORTAL_CLIENT, &secret)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );

    // Another client cannot use the token.
    let (_, body, _) = post_token(
        &router,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &second),
            ("client_id", DEMO_APP),
        ],
        None,
    )
    .await;
    assert_eq!(body["error"], "invalid_grant");

    // Replaying the rotated token fails and revokes the live one too.
    let (status, body, _) = refresh(first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, body, _) = refresh(second).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Without offline_access or online_access there is no refresh token.
    let code = code_for(
        &router,
        PORTAL_CLIENT,
        redirect,
        &challenge,
        "launch/patient patient/*.rs",
    )
    .await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", verifier.as_str()),
    ];
    let (_, body, _) = post_token(&router, &exchange, Some((PORTAL_CLIENT, &secret))).await;
    assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none());
}

fn tamper_payload(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut payload);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    )
}

#[tokio::test]
async fn verify_rejects_expired_foreign_tampered_and_unsigned_tokens() {
    let server = server_with(Duration::from_secs(1), patients());
    let token = server.issue_access_token("demo-app", "patient/*.rs", Some("pat-1"));
    let claims = server.verify_access_token(&token).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.patients()),
        ("pat-1", &["pat-1".to_owned()][..])
    );

    let other = server_with(Duration::from_secs(60), patients());
    let foreign = other.issue_access_token("demo-app", "patient/*.rs", Some("pat-1"));
    assert_eq!(
        server.verify_access_token(&foreign),
        Err(AuthError::UnknownKey)
    );
    // The same foreign token without its kid still fails on the signature.
    let parts: Vec<&str> = foreign.split('.').collect();
    let bare_header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let unkeyed = format!("{bare_header}.{}.{}", parts[1], parts[2]);
    assert_eq!(
        server.verify_access_token(&unkeyed),
        Err(AuthError::InvalidSignature)
    );

    let widened = tamper_payload(&token, |p| p["patient"] = json!("pat-12"));
    assert_eq!(
        server.verify_access_token(&widened),
        Err(AuthError::InvalidSignature)
    );

    let payload = token.split('.').nth(1).unwrap();
    let none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    assert_eq!(
        server.verify_access_token(&format!("{none_header}.{payload}.")),
        Err(AuthError::UnsupportedAlgorithm("none".into()))
    );
    let hs = EncodingKey::from_secret(b"guess");
    let hs_token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "exp": now() + 60}),
        &hs,
    )
    .unwrap();
    assert!(matches!(
        server.verify_access_token(&hs_token),
        Err(AuthError::UnsupportedAlgorithm(_))
    ));
    assert_eq!(
        server.verify_access_token("garbage"),
        Err(AuthError::Malformed)
    );
    assert_eq!(server.verify_access_token(""), Err(AuthError::Malformed));

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(server.verify_access_token(&token), Err(AuthError::Expired));
}

#[tokio::test]
async fn discovery_documents_keys_and_patients_are_served() {
    let server = server();
    let router = router(server.clone());
    let smart = smart_configuration(&server);
    for field in [
        "issuer",
        "jwks_uri",
        "authorization_endpoint",
        "token_endpoint",
        "grant_types_supported",
        "token_endpoint_auth_methods_supported",
        "token_endpoint_auth_signing_alg_values_supported",
        "scopes_supported",
        "response_types_supported",
        "capabilities",
        "code_challenge_methods_supported",
    ] {
        assert!(
            smart.get(field).is_some(),
            "smart-configuration lacks {field}"
        );
    }
    assert_eq!(smart["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(smart["token_endpoint"], TOKEN_URL);
    let capabilities: Vec<&str> = smart["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for capability in [
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "permission-patient",
        "permission-v1",
        "permission-v2",
        "permission-offline",
        "sso-openid-connect",
    ] {
        assert!(capabilities.contains(&capability), "{capability}");
    }

    let response = get(&router, "/jwks").await;
    assert_eq!(response.status(), StatusCode::OK);
    let jwks: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(jwks, server.jwks());
    assert_eq!(jwks["keys"][0]["kty"], "RSA");

    let response = get(&router, "/.well-known/openid-configuration").await;
    let oidc: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(oidc["issuer"], format!("{BASE}/auth"));
    assert_eq!(oidc["jwks_uri"], format!("{BASE}/auth/jwks"));

    let response = get(&router, "/patients").await;
    let listed: Vec<PatientSummary> = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(listed, patients());

    let clients = server.clients();
    let ids: Vec<&str> = clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, [DEMO_APP, PORTAL_CLIENT, SYSTEM_CLIENT]);
    assert!(clients[0].client_secret.is_none());
    assert!(
        clients[1]
            .client_secret
            .as_ref()
            .is_some_and(|s| s.len() >= 32)
    );
    assert_ne!(clients[1].client_secret, clients[2].client_secret);
}

mod assertions;
mod families;
