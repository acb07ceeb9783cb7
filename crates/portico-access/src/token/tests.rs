//! Token verification tests: keys are generated here, tokens signed here.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://auth.example/auth";
const AUD: &str = "https://gateway.example/fhir";

struct TestKey {
    alg: Algorithm,
    encoding: EncodingKey,
    kid: String,
}

impl TestKey {
    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).unwrap()
    }
}

struct Keys {
    rsa: TestKey,
    rsa_other: TestKey,
    rsa_public_pem: String,
    p256: TestKey,
    p384: TestKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use p256::pkcs8::EncodePrivateKey;
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let mut rng = rand::rngs::OsRng;
        let rsa_key = |kid: &str, rng: &mut rand::rngs::OsRng| {
            let private = rsa::RsaPrivateKey::new(rng, 2048).unwrap();
            let der = private.to_pkcs1_der().unwrap();
            (
                TestKey {
                    alg: Algorithm::RS256,
                    encoding: EncodingKey::from_rsa_der(der.as_bytes()),
                    kid: kid.into(),
                },
                private,
            )
        };
        let (rsa, private) = rsa_key("rsa-1", &mut rng);
        let (rsa_other, _) = rsa_key("rsa-1", &mut rng);
        let rsa_public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let p256 = p256::SecretKey::random(&mut rng).to_pkcs8_der().unwrap();
        let p384 = p384::SecretKey::random(&mut rng).to_pkcs8_der().unwrap();
        Keys {
            rsa,
            rsa_other,
            rsa_public_pem,
            p256: TestKey {
                alg: Algorithm::ES256,
                encoding: EncodingKey::from_ec_der(p256.as_bytes()),
                kid: "ec-256".into(),
            },
            p384: TestKey {
                alg: Algorithm::ES384,
                encoding: EncodingKey::from_ec_der(p384.as_bytes()),
                kid: "ec-384".into(),
            },
        }
    })
}

/// A key source serving a settable JWKS, counting fetches.
#[derive(Default)]
struct FakeKeys {
    jwks: Mutex<Vec<Jwk>>,
    fetches: AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
}

impl FakeKeys {
    fn with(jwks: Vec<Jwk>) -> Arc<FakeKeys> {
        let k = FakeKeys::default();
        *k.jwks.lock().unwrap() = jwks;
        Arc::new(k)
    }

    fn set(&self, jwks: Vec<Jwk>) {
        *self.jwks.lock().unwrap() = jwks;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeySource for FakeKeys {
    async fn keys(&self, issuer: &str, _kid: Option<&str>) -> Result<Vec<Jwk>, KeySourceError> {
        assert_eq!(
            issuer, ISSUER,
            "keys are only looked up for the configured issuer"
        );
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(KeySourceError("jwks unreachable".into()));
        }
        Ok(self.jwks.lock().unwrap().clone())
    }
}

fn all_jwks() -> Vec<Jwk> {
    let k = keys();
    let mut rs384 = k.rsa.jwk();
    rs384.common.key_algorithm = None;
    vec![rs384, k.p256.jwk(), k.p384.jwk()]
}

fn verifier(source: Arc<FakeKeys>) -> TokenVerifier {
    TokenVerifier::new(VerifierConfig::new(ISSUER, vec![AUD.into()]), source)
}

fn claims() -> Value {
    let now = now_unix();
    json!({
        "iss": ISSUER, "aud": AUD, "sub": "user-1", "client_id": "app",
        "patient": "pat-1", "fhirUser": "Patient/pat-1",
        "scope": "openid patient/Observation.rs",
        "iat": now, "exp": now + 300,
    })
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[tokio::test]
async fn accepts_each_allowed_algorithm() {
    let k = keys();
    let v = verifier(FakeKeys::with(all_jwks()));
    for key in [&k.rsa, &k.p256, &k.p384] {
        let p = v.verify(&key.sign(&claims())).await.unwrap();
        assert_eq!(p.subject, "user-1");
        assert_eq!(p.patients, vec!["pat-1"]);
        assert_eq!(p.client_id.as_deref(), Some("app"));
        assert!(p.scopes.flags().openid);
    }
    let rs384 = TestKey {
        alg: Algorithm::RS384,
        encoding: k.rsa.encoding.clone(),
        kid: k.rsa.kid.clone(),
    };
    assert!(v.verify(&rs384.sign(&claims())).await.is_ok());
}

#[tokio::test]
async fn refuses_alg_none() {
    let v = verifier(FakeKeys::with(all_jwks()));
    for alg in ["none", "None", "NONE"] {
        let token = unsigned(json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"}), &claims());
        assert_eq!(
            v.verify(&token).await.unwrap_err(),
            TokenError::UnsupportedAlgorithm,
            "{alg}"
        );
    }
}

#[tokio::test]
async fn refuses_hs256_signed_with_the_public_key() {
    let k = keys();
    let source = FakeKeys::with(all_jwks());
    let v = verifier(source.clone());
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    for secret in [k.rsa_public_pem.as_bytes(), b"secret".as_slice()] {
        let token = encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap();
        assert_eq!(
            v.verify(&token).await.unwrap_err(),
            TokenError::UnsupportedAlgorithm
        );
    }
    // Even when the key set publishes a symmetric key under that kid.
    let oct = Jwk::from_encoding_key(&EncodingKey::from_secret(b"shared"), Algorithm::HS256)
        .map(|mut j| {
            j.common.key_id = Some("oct".into());
            j
        })
        .unwrap();
    source.set(vec![oct]);
    header.kid = Some("oct".into());
    let token = encode(&header, &claims(), &EncodingKey::from_secret(b"shared")).unwrap();
    assert_eq!(
        v.verify(&token).await.unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
    assert_eq!(source.fetches(), 0, "no key lookup for a refused algorithm");
}

#[tokio::test]
async fn refuses_a_wrong_key() {
    let k = keys();
    let v = verifier(FakeKeys::with(all_jwks()));
    // Same kid, different key.
    let token = k.rsa_other.sign(&claims());
    assert_eq!(
        v.verify(&token).await.unwrap_err(),
        TokenError::BadSignature
    );
}

#[tokio::test]
async fn refuses_a_tampered_payload() {
    let k = keys();
    let v = verifier(FakeKeys::with(all_jwks()));
    let token = k.rsa.sign(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = with(claims(), json!({"patient": "pat-12"}));
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(
        v.verify(&tampered).await.unwrap_err(),
        TokenError::BadSignature
    );
}

#[tokio::test]
async fn refuses_an_unknown_kid() {
    let k = keys();
    let v = verifier(FakeKeys::with(all_jwks()));
    let key = TestKey {
        alg: Algorithm::RS256,
        encoding: k.rsa.encoding.clone(),
        kid: "nope".into(),
    };
    assert_eq!(
        v.verify(&key.sign(&claims())).await.unwrap_err(),
        TokenError::UnknownKey
    );
}

#[tokio::test]
async fn key_type_curve_alg_and_use_must_fit() {
    let k = keys();
    // An ES256 token naming the P-384 key.
    let v = verifier(FakeKeys::with(all_jwks()));
    let mismatched = TestKey {
        alg: Algorithm::ES256,
        encoding: k.p256.encoding.clone(),
        kid: "ec-384".into(),
    };
    assert_eq!(
        v.verify(&mismatched.sign(&claims())).await.unwrap_err(),
        TokenError::UnknownKey
    );
    // The same with a key set that does not publish `alg`: the curve decides.
    let mut p384_no_alg = k.p384.jwk();
    p384_no_alg.common.key_algorithm = None;
    let v = verifier(FakeKeys::with(vec![p384_no_alg]));
    assert_eq!(
        v.verify(&mismatched.sign(&claims())).await.unwrap_err(),
        TokenError::UnknownKey
    );
    // An RS256 token naming an EC key.
    let mut rsa_as_ec = k.p256.jwk();
    rsa_as_ec.common.key_id = Some("rsa-1".into());
    let v = verifier(FakeKeys::with(vec![rsa_as_ec]));
    assert_eq!(
        v.verify(&k.rsa.sign(&claims())).await.unwrap_err(),
        TokenError::UnknownKey
    );
    // A key published for RS384 does not verify RS256.
    let mut rs384_only = k.rsa.jwk();
    rs384_only.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::RS384);
    let v = verifier(FakeKeys::with(vec![rs384_only]));
    assert_eq!(
        v.verify(&k.rsa.sign(&claims())).await.unwrap_err(),
        TokenError::UnknownKey
    );
    // An encryption key does not verify signatures.
    let mut enc = k.rsa.jwk();
    enc.common.public_key_use = Some(PublicKeyUse::Encryption);
    let v = verifier(FakeKeys::with(vec![enc]));
    assert_eq!(
        v.verify(&k.rsa.sign(&claims())).await.unwrap_err(),
        TokenError::UnknownKey
    );
}

#[tokio::test]
async fn issuer_must_match_exactly() {
    let k = keys();
    let v = verifier(FakeKeys::with(all_jwks()));
    for (iss, err) in [
        (json!("https://evil.example/auth"), TokenError::WrongIssuer),
        (json!("https://auth.example/auth/"), TokenError::WrongIssuer),
        (
            json!([ISSUER, "https://evil.example"]),
            TokenError::WrongIssuer,
        ),
        (Value::Null, TokenError::MissingClaim("iss".into())),
    ] {
        let token = k.rsa.sign(&with(claims(), json!({ "iss": iss })));
        assert_eq!(v.verify(&token).await.unwrap_err(), err, "{iss}");
    }
}

#[tokio::test]
async fn audience_must_be_accepted() {
    let k = keys();
    let v = verifier(FakeKeys::with(all_jwks()));
    let token = k
        .rsa
        .sign(&with(claims(), json!({"aud": "https://other/fhir"})));
    assert_eq!(
        v.verify(&token).await.unwrap_err(),
        TokenError::WrongAudience
    );
    let token = k.rsa.sign(&with(claims(), json!({"aud": null})));
    assert_eq!(
        v.verify(&token).await.unwrap_err(),
        TokenError::MissingClaim("aud".into())
    );
    let token = k
        .rsa
        .sign(&with(claims(), json!({"aud": ["https://other/fhir", AUD]})));
    assert!(v.verify(&token).await.is_ok());
    // No accepted audience configured: nothing is accepted.
    let v = TokenVerifier::new(
        VerifierConfig::new(ISSUER, vec![]),
        FakeKeys::with(all_jwks()),
    );
    assert_eq!(
        v.verify(&k.rsa.sign(&claims())).await.unwrap_err(),
        TokenError::WrongAudience
    );
}

#[tokio::test]
async fn expiry_and_not_before_with_leeway() {
    let k = keys();
    let v = verifier(FakeKeys::with(all_jwks()));
    let now = now_unix();
    let expired = k.rsa.sign(&with(claims(), json!({"exp": now - 120})));
    assert_eq!(v.verify(&expired).await.unwrap_err(), TokenError::Expired);
    let within_leeway = k.rsa.sign(&with(claims(), json!({"exp": now - 10})));
    assert!(v.verify(&within_leeway).await.is_ok());
    let future = k.rsa.sign(&with(claims(), json!({"nbf": now + 120})));
    assert_eq!(
        v.verify(&future).await.unwrap_err(),
        TokenError::NotYetValid
    );
    let nearly = k.rsa.sign(&with(claims(), json!({"nbf": now + 10})));
    assert!(v.verify(&nearly).await.is_ok());
    let no_exp = k.rsa.sign(&with(claims(), json!({"exp": null})));
    assert_eq!(
        v.verify(&no_exp).await.unwrap_err(),
        TokenError::MissingClaim("exp".into())
    );
}

#[tokio::test]
async fn claims_must_make_a_principal() {
    let k = keys();
    let v = verifier(FakeKeys::with(all_jwks()));
    let no_patient = k.rsa.sign(&with(claims(), json!({"patient": null})));
    assert_eq!(
        v.verify(&no_patient).await.unwrap_err(),
        TokenError::Claims(ClaimsError::MissingPatient)
    );
    let no_sub = k.rsa.sign(&with(claims(), json!({"sub": null})));
    assert_eq!(
        v.verify(&no_sub).await.unwrap_err(),
        TokenError::MissingClaim("sub".into())
    );
    let scp = k.rsa.sign(&with(
        claims(),
        json!({"scope": null, "scp": ["patient/Condition.rs", "launch/patient"]}),
    ));
    let p = v.verify(&scp).await.unwrap();
    assert!(p.scopes.flags().launch_patient);
    assert_eq!(p.scopes.resource_scopes().len(), 1);
}

#[tokio::test]
async fn refuses_garbage() {
    let v = verifier(FakeKeys::with(all_jwks()));
    for bad in [
        "",
        "a.b.c",
        "not a token",
        "x.y",
        &"a".repeat(MAX_TOKEN_LEN + 1),
    ] {
        assert!(v.verify(bad).await.is_err(), "{bad:.20}");
    }
    // Opaque tokens need an introspector.
    assert_eq!(
        v.verify("opaque-token-123").await.unwrap_err(),
        TokenError::OpaqueNotAccepted
    );
}

#[tokio::test(start_paused = true)]
async fn kid_rotation_refetches_at_most_once_per_interval() {
    let k = keys();
    let source = FakeKeys::with(vec![k.rsa.jwk()]);
    let v = verifier(source.clone());
    assert!(v.verify(&k.rsa.sign(&claims())).await.is_ok());
    assert_eq!(source.fetches(), 1);

    // A token signed with a key the cached set lacks: one refetch, if the interval
    // allows. The first fetch was just now, so none.
    let rotated = TestKey {
        alg: Algorithm::ES256,
        encoding: k.p256.encoding.clone(),
        kid: "ec-256".into(),
    };
    source.set(vec![k.rsa.jwk(), k.p256.jwk()]);
    for _ in 0..5 {
        assert_eq!(
            v.verify(&rotated.sign(&claims())).await.unwrap_err(),
            TokenError::UnknownKey
        );
    }
    assert_eq!(source.fetches(), 1, "no refetch within the interval");

    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(v.verify(&rotated.sign(&claims())).await.is_ok());
    assert_eq!(source.fetches(), 2);

    // Forged kids: at most one more fetch per interval.
    for i in 0..20 {
        let forged = TestKey {
            alg: Algorithm::RS256,
            encoding: k.rsa.encoding.clone(),
            kid: format!("forged-{i}"),
        };
        assert!(v.verify(&forged.sign(&claims())).await.is_err());
    }
    assert_eq!(
        source.fetches(),
        2,
        "the last fetch was less than a minute ago"
    );
    tokio::time::advance(Duration::from_secs(61)).await;
    for i in 0..20 {
        let forged = TestKey {
            alg: Algorithm::RS256,
            encoding: k.rsa.encoding.clone(),
            kid: format!("forged-again-{i}"),
        };
        assert!(v.verify(&forged.sign(&claims())).await.is_err());
    }
    assert_eq!(source.fetches(), 3);
}

#[tokio::test(start_paused = true)]
async fn key_source_failure_is_retryable_and_bounded() {
    let k = keys();
    let source = FakeKeys::with(vec![k.rsa.jwk()]);
    source.fail.store(true, Ordering::SeqCst);
    let v = verifier(source.clone());
    let err = v.verify(&k.rsa.sign(&claims())).await.unwrap_err();
    assert!(matches!(err, TokenError::Keys(_)), "{err:?}");
    assert!(err.retryable());
    let again = v
        .verify(&k.rsa.sign(&with(claims(), json!({"sub":"other"}))))
        .await
        .unwrap_err();
    assert!(matches!(again, TokenError::Keys(_)));
    assert_eq!(
        source.fetches(),
        1,
        "failed fetches count against the bound"
    );
    source.fail.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(v.verify(&k.rsa.sign(&claims())).await.is_ok());
    assert_eq!(source.fetches(), 2);
}

#[tokio::test]
async fn verified_tokens_are_cached_until_exp() {
    let k = keys();
    let source = FakeKeys::with(all_jwks());
    let v = verifier(source.clone());
    let token = k.rsa.sign(&claims());
    let first = v.verify(&token).await.unwrap();
    // Keys disappear (and would be refetched by a miss on another token only after the
    // interval): the cached principal is still served for the same token.
    source.set(vec![]);
    let second = v.verify(&token).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(v.cache.len(), 1);
    // The cache is keyed by the hash of the token, never the token.
    let key: TokenHash = Sha256::digest(token.as_bytes()).into();
    assert!(v.cache.get(&key, now_unix()).is_some());
    // A different token is verified on its own.
    let other = k.rsa_other.sign(&claims());
    assert!(v.verify(&other).await.is_err());
}

#[test]
fn token_cache_is_bounded_and_expires() {
    let cache = TokenCache {
        capacity: 2,
        inner: Mutex::new(CacheInner::default()),
    };
    let p = Principal::from_claims(
        json!({"sub":"u"}).as_object().unwrap(),
        &ClaimNames::default(),
    )
    .unwrap();
    let now = 1_000;
    cache.insert([1; 32], p.clone(), now + 100, now);
    cache.insert([2; 32], p.clone(), now + 50, now);
    cache.insert([3; 32], p.clone(), now + 200, now);
    assert_eq!(cache.len(), 2);
    assert!(
        cache.get(&[2; 32], now).is_none(),
        "soonest-expiring evicted"
    );
    assert!(cache.get(&[1; 32], now).is_some());
    assert!(cache.get(&[3; 32], now).is_some());
    // Expired entries are not served, and not stored.
    assert!(cache.get(&[1; 32], now + 100).is_none());
    cache.insert([4; 32], p, now - 1, now);
    assert!(cache.get(&[4; 32], now).is_none());
}

/// An introspector answering from a fixed response, counting calls.
struct FakeIntrospector {
    response: Mutex<Result<Value, IntrospectionError>>,
    calls: AtomicUsize,
}

#[async_trait]
impl Introspector for FakeIntrospector {
    async fn introspect(&self, _token: &str) -> Result<Value, IntrospectionError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.response.lock().unwrap().clone()
    }
}

fn introspection() -> Value {
    let now = now_unix();
    json!({"active": true, "iss": ISSUER, "aud": AUD, "sub": "user-1", "client_id": "app",
           "patient": "pat-1", "scope": "patient/*.rs", "exp": now + 300})
}

#[tokio::test]
async fn opaque_tokens_through_introspection() {
    let introspector = Arc::new(FakeIntrospector {
        response: Mutex::new(Ok(introspection())),
        calls: AtomicUsize::new(0),
    });
    let v = verifier(FakeKeys::with(vec![])).with_introspector(introspector.clone());
    let p = v.verify("opaque-1").await.unwrap();
    assert_eq!(p.patients, vec!["pat-1"]);
    assert!(v.verify("opaque-1").await.is_ok());
    assert_eq!(introspector.calls.load(Ordering::SeqCst), 1, "cached");

    *introspector.response.lock().unwrap() = Err(IntrospectionError("down".into()));
    let err = v.verify("opaque-2").await.unwrap_err();
    assert!(err.retryable());
}

#[test]
fn introspection_response_mapping() {
    let config = VerifierConfig::new(ISSUER, vec![AUD.into()]);
    let now = now_unix();
    let map = |changes: Value| {
        principal_from_introspection(&with(introspection(), changes), &config, now)
    };
    assert!(map(json!({})).is_ok());
    assert_eq!(
        map(json!({"active": false})).unwrap_err(),
        TokenError::Inactive
    );
    assert_eq!(
        map(json!({"active": "true"})).unwrap_err(),
        TokenError::Inactive
    );
    assert_eq!(
        map(json!({"active": null})).unwrap_err(),
        TokenError::Inactive
    );
    assert_eq!(
        map(json!({"exp": now - 120})).unwrap_err(),
        TokenError::Expired
    );
    assert_eq!(
        map(json!({"exp": null})).unwrap_err(),
        TokenError::MissingClaim("exp".into())
    );
    assert_eq!(
        map(json!({"nbf": now + 120})).unwrap_err(),
        TokenError::NotYetValid
    );
    assert_eq!(
        map(json!({"iss": "https://evil"})).unwrap_err(),
        TokenError::WrongIssuer
    );
    assert_eq!(
        map(json!({"aud": ["x", "y"]})).unwrap_err(),
        TokenError::WrongAudience
    );
    assert!(map(json!({"aud": ["x", AUD]})).is_ok());
    assert_eq!(
        map(json!({"patient": null})).unwrap_err(),
        TokenError::Claims(ClaimsError::MissingPatient)
    );
    assert_eq!(
        principal_from_introspection(&json!([]), &config, now).unwrap_err(),
        TokenError::Malformed
    );
}
