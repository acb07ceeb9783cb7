//! Missing and forged tokens. Against the demo gateway: no token, malformed headers,
//! `alg: none`, payloads swapped under a real signature, HS256 keyed with the issuer's
//! public key, our own key under the issuer's `kid`, keys embedded in or linked from
//! the header (`jwk`, `jku`, `x5u`; the linked server must never be contacted), patient
//! context missing or widened. Against a gateway that trusts an issuer we control
//! (our own JWKS server), each claim check on its own: expired, not yet valid, wrong
//! `aud`, wrong `iss`, missing `exp`, and claims that try to widen the patient context;
//! a valid token from that issuer is the control.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::RsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{A, Attempt, Expect, FULL_SCOPE, Fixture, Tok, finish};

/// How many attempts [`claims_are_checked_one_by_one`] makes besides its controls.
pub const FORGED_ISSUER_ATTEMPTS: usize = 22;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `header.claims.` with no signature.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn sign_rs256(key: &RsaPrivateKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let sig = signer.sign(input.as_bytes()).to_vec();
    format!("{input}.{}", b64(&sig))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = if key.len() > 64 {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(64, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), msg].concat());
    let inner: Vec<u8> = inner.to_vec();
    Sha256::digest([opad, inner].concat()).to_vec()
}

fn sign_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{input}.{}", b64(&hmac_sha256(secret, input.as_bytes())))
}

fn decode_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn rsa_key() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap()
}

fn jwk_of(key: &RsaPrivateKey, kid: &str) -> Value {
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
    })
}

/// A tiny HTTP server answering fixed JSON documents by path, counting the hits.
pub struct DocServer {
    pub base: String,
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl DocServer {
    pub async fn start(docs: HashMap<String, Value>) -> DocServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                let docs = docs.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    *counter.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let (status, body) = match docs.get(&path) {
                        Some(doc) => ("200 OK", doc.to_string()),
                        None => ("404 Not Found", "{}".to_owned()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        DocServer { base, hits }
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// Forged tokens against the demo gateway (which trusts the sandbox's issuer).
pub struct Forgery {
    pub attacker: RsaPrivateKey,
    pub attacker_server: String,
}

pub fn attempts(fx: &Fixture) -> Vec<Attempt> {
    forged_rows(fx, None)
}

fn forged_rows(fx: &Fixture, forgery: Option<&Forgery>) -> Vec<Attempt> {
    let real_header = decode_part(&fx.token_a, 0);
    let real_claims = decode_part(&fx.token_a, 1);
    let kid = real_header["kid"].as_str().unwrap_or_default().to_owned();
    let mut as_b = real_claims.clone();
    as_b["patient"] = json!("pat-2");
    as_b["sub"] = json!("pat-2");
    as_b["fhirUser"] = json!("Patient/pat-2");
    let jwks = fx.app.sandbox.auth().jwks();
    let jwk = &jwks["keys"][0];
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from_bytes_be(&e),
    )
    .unwrap();
    let pem = public
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let parts: Vec<&str> = fx.token_a.split('.').collect();
    let b_parts: Vec<&str> = fx.token_b.split('.').collect();
    let mut flipped_sig = parts[2].to_owned();
    let last = flipped_sig.pop().unwrap();
    flipped_sig.push(if last == 'A' { 'B' } else { 'A' });

    let unauthorized = |name: &str, path: &str, tok: Tok| {
        Attempt::get(format!("token: {name}"), path)
            .token(tok)
            .expect(Expect::Unauthorized)
    };
    let bearer = |t: String| Tok::Bearer(t);
    let mut rows = vec![
        unauthorized("none, reading B", "/Patient/pat-2", Tok::None),
        unauthorized("none, searching B", "/Observation?patient=pat-2", Tok::None),
        unauthorized("none, searching everything", "/Observation", Tok::None),
        unauthorized(
            "empty bearer",
            "/Observation",
            Tok::Header("Bearer ".into()),
        ),
        unauthorized(
            "garbage bearer",
            "/Observation",
            Tok::Header("Bearer not.a.jwt".into()),
        ),
        unauthorized(
            "basic credentials",
            "/Observation",
            Tok::Header(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("demo-app:")
            )),
        ),
        unauthorized(
            "alg none with A's claims",
            "/Observation",
            bearer(unsigned(
                &json!({"alg": "none", "typ": "JWT"}),
                &real_claims,
            )),
        ),
        unauthorized(
            "alg none claiming B",
            "/Observation",
            bearer(unsigned(&json!({"alg": "none"}), &as_b)),
        ),
        unauthorized(
            "alg None claiming B",
            "/Patient/pat-2",
            bearer(unsigned(&json!({"alg": "None"}), &as_b)),
        ),
        unauthorized(
            "alg none with the real kid",
            "/Patient/pat-2",
            bearer(unsigned(&json!({"alg": "none", "kid": kid}), &as_b)),
        ),
        unauthorized(
            "A's signature under claims of B",
            "/Patient/pat-2",
            bearer(format!(
                "{}.{}.{}",
                parts[0],
                b64(as_b.to_string().as_bytes()),
                parts[2]
            )),
        ),
        unauthorized(
            "B's header and claims with A's signature",
            "/Patient/pat-2",
            bearer(format!("{}.{}.{}", b_parts[0], b_parts[1], parts[2])),
        ),
        unauthorized(
            "A's token with its signature changed",
            "/Observation",
            bearer(format!("{}.{}.{}", parts[0], parts[1], flipped_sig)),
        ),
        unauthorized(
            "A's token without its signature",
            "/Observation",
            bearer(format!("{}.{}.", parts[0], parts[1])),
        ),
        unauthorized(
            "A's token with a fourth segment",
            "/Observation",
            bearer(format!("{}.x", fx.token_a)),
        ),
        unauthorized(
            "HS256 keyed with the issuer's modulus",
            "/Patient/pat-2",
            bearer(sign_hs256(&n, &json!({"alg": "HS256", "kid": kid}), &as_b)),
        ),
        unauthorized(
            "HS256 keyed with the issuer's public PEM",
            "/Patient/pat-2",
            bearer(sign_hs256(
                pem.as_bytes(),
                &json!({"alg": "HS256", "kid": kid}),
                &as_b,
            )),
        ),
        unauthorized(
            "HS256 with an empty key and a path as kid",
            "/Patient/pat-2",
            bearer(sign_hs256(
                b"",
                &json!({"alg": "HS256", "kid": "../../../../../dev/null"}),
                &as_b,
            )),
        ),
        Attempt::get("token: two Authorization headers", "/Patient/pat-2")
            .header("Authorization", format!("Bearer {}", fx.token_b))
            .expect(Expect::Status(vec![400, 401, 404])),
        Attempt::get(
            "token: access_token in the query",
            format!("/Patient/pat-2?access_token={}", fx.token_b),
        )
        .token(Tok::None)
        .expect(Expect::Unauthorized),
    ];
    // Patient scopes but no patient context: nothing of anyone's.
    let no_patient = fx
        .app
        .sandbox
        .auth()
        .issue_access_token("demo-app", "patient/*.rs", None);
    rows.extend([
        Attempt::get(
            "token: patient scopes without a patient, reading B",
            "/Patient/pat-2",
        )
        .token(bearer(no_patient.clone()))
        .expect(Expect::Status(vec![401, 403, 404])),
        Attempt::get(
            "token: patient scopes without a patient, searching",
            "/Observation",
        )
        .token(bearer(no_patient.clone()))
        .expect(Expect::Status(vec![401, 403])),
        Attempt::get(
            "token: patient scopes without a patient, naming B",
            "/Observation?patient=pat-2",
        )
        .token(bearer(no_patient))
        .expect(Expect::Status(vec![401, 403])),
    ]);
    if let Some(f) = forgery {
        let own_header = |extra: Value| {
            let mut h = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
            if let (Some(h), Some(extra)) = (h.as_object_mut(), extra.as_object()) {
                h.extend(extra.clone());
            }
            h
        };
        rows.extend([
            unauthorized(
                "our key under the issuer's kid",
                "/Patient/pat-2",
                bearer(sign_rs256(&f.attacker, &own_header(json!({})), &as_b)),
            ),
            unauthorized(
                "our key, no kid",
                "/Patient/pat-2",
                bearer(sign_rs256(&f.attacker, &json!({"alg": "RS256"}), &as_b)),
            ),
            unauthorized(
                "our key embedded as jwk",
                "/Patient/pat-2",
                bearer(sign_rs256(
                    &f.attacker,
                    &own_header(json!({"jwk": jwk_of(&f.attacker, &kid)})),
                    &as_b,
                )),
            ),
            unauthorized(
                "our key linked by jku",
                "/Patient/pat-2",
                bearer(sign_rs256(
                    &f.attacker,
                    &own_header(json!({"jku": format!("{}/attacker-jwks", f.attacker_server)})),
                    &as_b,
                )),
            ),
            unauthorized(
                "our key linked by x5u",
                "/Patient/pat-2",
                bearer(sign_rs256(
                    &f.attacker,
                    &own_header(json!({"x5u": format!("{}/attacker-x5u", f.attacker_server)})),
                    &as_b,
                )),
            ),
        ]);
    }
    rows
}

/// The number of rows [`attempts`] leaves out because they need a key of ours.
pub const KEYED_ROWS: usize = 5;

#[tokio::test]
async fn forged_and_missing_tokens_are_refused() {
    let fx = Fixture::new().await;
    let attacker = rsa_key();
    let attacker_kid = "attacker";
    let server = DocServer::start(HashMap::from([(
        "/attacker-jwks".to_owned(),
        json!({"keys": [jwk_of(&attacker, attacker_kid)]}),
    )]))
    .await;
    let forgery = Forgery {
        attacker,
        attacker_server: server.base.clone(),
    };
    let rows = forged_rows(&fx, Some(&forgery));
    assert_eq!(rows.len(), attempts(&fx).len() + KEYED_ROWS);
    let mut failures = fx.run_all(&rows).await;
    for path in ["/attacker-jwks", "/attacker-x5u"] {
        if server.hits(path) > 0 {
            failures.push(format!(
                "[token] the gateway fetched keys from a URL in a token header ({path})"
            ));
        }
    }
    // The control: A's real token reads A's record.
    let control =
        Attempt::get("token control: A's real token", "/Patient/pat-1").expect(Expect::ResourceOfA);
    if let Err(e) = fx.check(&control).await {
        failures.push(e);
    }
    finish("tokens", rows.len(), &failures);
}

#[tokio::test]
async fn claims_are_checked_one_by_one() {
    // A gateway trusting an issuer whose key we hold: each token differs from the valid
    // control in one claim or header only.
    let key = rsa_key();
    let other = rsa_key();
    let kid = "test-key";
    let docs = DocServer::start(HashMap::from([(
        "/jwks".to_owned(),
        json!({"keys": [jwk_of(&key, kid)]}),
    )]))
    .await;
    let issuer = format!("{}/issuer", docs.base);
    let jwks_url = format!("{}/jwks", docs.base);
    let sandbox = crate::support::sandbox().await;
    let app = crate::support::TestApp::spawn_with(sandbox, |config, _| {
        config.auth.issuer = issuer.parse().unwrap();
        config.auth.jwks_url = Some(jwks_url.parse().unwrap());
    })
    .await;
    let fx = Fixture::on(app);
    let t = now();
    let claims = json!({
        "iss": issuer, "aud": fx.gw, "sub": A, "client_id": "demo-app", "scope": FULL_SCOPE,
        "patient": A, "fhirUser": "Patient/pat-1", "iat": t, "exp": t + 300, "jti": "j-1",
    });
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        f(&mut c);
        sign_rs256(&key, &header, &c)
    };
    let pem = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();

    let mut failures = Vec::new();
    for (name, token) in [
        (
            "control: a valid token for the gateway's aud",
            with(&|_| {}),
        ),
        (
            "control: a valid token for the EHR's aud",
            with(&|c| c["aud"] = json!(fx.up_fhir)),
        ),
    ] {
        let row = Attempt::get(format!("forged issuer {name}"), "/Patient/pat-1")
            .token(Tok::Bearer(token))
            .expect(Expect::ResourceOfA);
        if let Err(e) = fx.check(&row).await {
            failures.push(e);
        }
    }

    let refused = |name: &str, path: &str, token: String| {
        Attempt::get(format!("forged issuer: {name}"), path)
            .token(Tok::Bearer(token))
            .expect(Expect::Unauthorized)
    };
    let denied = |name: &str, path: &str, token: String| {
        Attempt::get(format!("forged issuer: {name}"), path)
            .token(Tok::Bearer(token))
            .expect(Expect::Status(vec![401, 403, 404]))
    };
    let rows = vec![
        refused(
            "expired long ago",
            "/Patient/pat-1",
            with(&|c| c["exp"] = json!(t - 3600)),
        ),
        refused(
            "expired beyond the leeway",
            "/Patient/pat-1",
            with(&|c| c["exp"] = json!(t - 90)),
        ),
        refused(
            "not valid yet",
            "/Patient/pat-1",
            with(&|c| c["nbf"] = json!(t + 600)),
        ),
        refused(
            "wrong aud",
            "/Patient/pat-1",
            with(&|c| c["aud"] = json!("https://evil.example/fhir")),
        ),
        refused(
            "wrong aud in a list",
            "/Patient/pat-1",
            with(&|c| c["aud"] = json!(["https://evil.example/fhir"])),
        ),
        refused(
            "aud is the gateway without /fhir",
            "/Patient/pat-1",
            with(&|c| c["aud"] = json!(fx.gw.trim_end_matches("/fhir"))),
        ),
        refused(
            "aud is a path under the gateway",
            "/Patient/pat-1",
            with(&|c| c["aud"] = json!(format!("{}/Patient", fx.gw))),
        ),
        refused(
            "no aud",
            "/Patient/pat-1",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        refused(
            "wrong iss",
            "/Patient/pat-1",
            with(&|c| c["iss"] = json!("https://evil.example/issuer")),
        ),
        refused(
            "no exp",
            "/Patient/pat-1",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        refused(
            "exp as a string",
            "/Patient/pat-1",
            with(&|c| c["exp"] = json!((t + 300).to_string())),
        ),
        refused(
            "alg none",
            "/Patient/pat-1",
            unsigned(&json!({"alg": "none", "kid": kid}), &claims),
        ),
        refused(
            "HS256 keyed with the public PEM",
            "/Patient/pat-1",
            sign_hs256(
                pem.as_bytes(),
                &json!({"alg": "HS256", "kid": kid}),
                &claims,
            ),
        ),
        refused("ES256 header over an RSA signature", "/Patient/pat-1", {
            let token = with(&|_| {});
            let rest = token.split_once('.').unwrap().1.to_owned();
            format!(
                "{}.{rest}",
                b64(json!({"alg": "ES256", "kid": kid}).to_string().as_bytes())
            )
        }),
        refused(
            "an unpublished key under the published kid",
            "/Patient/pat-1",
            sign_rs256(&other, &header, &claims),
        ),
        refused(
            "an unknown kid",
            "/Patient/pat-1",
            sign_rs256(
                &other,
                &json!({"alg": "RS256", "kid": "rotated-away"}),
                &claims,
            ),
        ),
        refused(
            "a token of the sandbox's real issuer",
            "/Patient/pat-1",
            fx.token_a.clone(),
        ),
        denied(
            "no patient claim",
            "/Observation",
            with(&|c| {
                c.as_object_mut().unwrap().remove("patient");
            }),
        ),
        denied(
            "sub of B with patient A",
            "/Patient/pat-2",
            with(&|c| c["sub"] = json!("pat-2")),
        ),
        denied(
            "patient claim 'pat-1,pat-2'",
            "/Observation?patient=pat-2",
            with(&|c| c["patient"] = json!("pat-1,pat-2")),
        ),
        denied(
            "fhirUser of B with patient A",
            "/Patient/pat-2",
            with(&|c| c["fhirUser"] = json!("Patient/pat-2")),
        ),
        denied(
            "no scope",
            "/Patient/pat-1",
            with(&|c| {
                c.as_object_mut().unwrap().remove("scope");
            }),
        ),
    ];
    assert_eq!(rows.len(), FORGED_ISSUER_ATTEMPTS);
    failures.extend(fx.run_all(&rows).await);
    println!(
        "isolation/tokens: the issuer's JWKS was fetched {} time(s)",
        docs.hits("/jwks")
    );
    finish("forged-issuer", rows.len(), &failures);
}
