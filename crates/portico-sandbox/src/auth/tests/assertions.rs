//! Client authentication by `private_key_jwt`: ES384 and RSA keys (PEM and JWK), the
//! assertion's signature and claims checked, replays refused.

use super::*;

fn assertion(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn assertion_claims(client_id: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now() + 120,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

async fn assert_with(router: &Router, jwt: &str) -> (StatusCode, Value) {
    let (status, body, _) = post_token(
        router,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", jwt),
        ],
        None,
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn private_key_jwt_with_es384_checks_signature_claims_and_replay() {
    use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let server = server();
    let router = router(server.clone());
    let secret = p384::SecretKey::random(&mut rand::thread_rng());
    let pem = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    server
        .try_register_client(ClientRegistration::backend_service("bulk-es", pem))
        .unwrap();
    let key = EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes());

    let jwt = assertion(
        Algorithm::ES384,
        &key,
        Some("k1"),
        &assertion_claims("bulk-es"),
    );
    let (status, body) = assert_with(&router, &jwt).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = server
        .verify_access_token(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (claims.client_id.as_str(), claims.scope.as_str()),
        ("bulk-es", "system/*.rs")
    );

    let (status, body) = assert_with(&router, &jwt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "replayed jti"
    );

    let mut bad_claims = Vec::new();
    for (field, value) in [
        ("aud", json!("http://127.0.0.1:8090/fhir")),
        ("exp", json!(now() - 600)),
        ("exp", json!(now() + 3600)),
        ("sub", json!("someone-else")),
        ("jti", Value::Null),
    ] {
        let mut claims = assertion_claims("bulk-es");
        claims[field] = value;
        bad_claims.push((field, claims));
    }
    for (field, claims) in bad_claims {
        let jwt = assertion(Algorithm::ES384, &key, None, &claims);
        let (status, _) = assert_with(&router, &jwt).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "bad {field} accepted");
    }
    // Signed by a key the client never registered.
    let stranger = p384::SecretKey::random(&mut rand::thread_rng());
    let stranger = EncodingKey::from_ec_der(stranger.to_pkcs8_der().unwrap().as_bytes());
    let (status, _) = assert_with(
        &router,
        &assertion(
            Algorithm::ES384,
            &stranger,
            None,
            &assertion_claims("bulk-es"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A symmetric algorithm using the public key as the secret (algorithm confusion).
    let pem = server
        .client("bulk-es")
        .unwrap()
        .reg
        .public_key_pem
        .clone()
        .unwrap();
    let confused = EncodingKey::from_secret(pem.as_bytes());
    let (status, _) = assert_with(
        &router,
        &assertion(
            Algorithm::HS256,
            &confused,
            None,
            &assertion_claims("bulk-es"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn private_key_jwt_with_rsa_keys_from_pem_and_jwk() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    let server = server();
    let router = router(server.clone());
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let public = rsa::RsaPublicKey::from(&private);
    let key = EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes());

    let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    server
        .try_register_client(ClientRegistration::backend_service("bulk-rs", pem))
        .unwrap();
    for alg in [Algorithm::RS384, Algorithm::RS256] {
        let (status, body) = assert_with(
            &router,
            &assertion(alg, &key, None, &assertion_claims("bulk-rs")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{alg:?}: {body}");
    }
    // The key proves only its own client: the same key claiming another client fails.
    let (status, _) = assert_with(
        &router,
        &assertion(
            Algorithm::RS384,
            &key,
            None,
            &assertion_claims(SYSTEM_CLIENT),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let jwk = json!({
        "kty": "RSA",
        "kid": "rsa-1",
        "alg": "RS384",
        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    });
    server
        .try_register_client(ClientRegistration {
            client_id: "bulk-jwk".into(),
            public_key_jwk: Some(json!({ "keys": [jwk] })),
            grant_types: vec![GrantType::ClientCredentials],
            allowed_scopes: ClientRegistration::system_scopes(),
            ..ClientRegistration::default()
        })
        .unwrap();
    let (status, body) = assert_with(
        &router,
        &assertion(
            Algorithm::RS384,
            &key,
            Some("rsa-1"),
            &assertion_claims("bulk-jwk"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The JWK pins RS384: RS256 with the same key is refused.
    let (status, _) = assert_with(
        &router,
        &assertion(
            Algorithm::RS256,
            &key,
            Some("rsa-1"),
            &assertion_claims("bulk-jwk"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A key that cannot be parsed does not register the client at all.
    let broken = ClientRegistration::backend_service(
        "broken",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    assert!(server.try_register_client(broken.clone()).is_err());
    server.register_client(broken);
    assert!(server.clients().iter().all(|c| c.client_id != "broken"));
}
