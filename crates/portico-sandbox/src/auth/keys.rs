//! Key material of the sandbox authorization server.
//!
//! The server's own RSA-2048 signing key is generated in memory at start and never
//! written anywhere; its public half is published as a JWK whose `kid` is the RFC 7638
//! thumbprint. Client keys (for `private_key_jwt`) arrive as PEM (SPKI or PKCS#1) or as
//! a JWK / JWK Set and are turned into verification keys restricted to the algorithms
//! their type supports, so a token can never pick an algorithm of another family.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

/// Why a client key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("public key is neither an rsa nor a p-256/p-384 ec key in pem form")]
    UnsupportedPem,
    #[error("jwk is not usable: {0}")]
    BadJwk(String),
}

/// The server's RS256 signing key.
pub(crate) struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    n: String,
    e: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh RSA-2048 key.
    pub(crate) fn generate() -> SigningKey {
        let mut rng = rand::thread_rng();
        // Neither call depends on input: failure would mean a broken RNG or rsa crate.
        let private = RsaPrivateKey::new(&mut rng, 2048).expect("rsa-2048 key generation failed");
        let der = private
            .to_pkcs1_der()
            .expect("pkcs#1 encoding of a fresh rsa key failed");
        let n_bytes = private.n().to_bytes_be();
        let e_bytes = private.e().to_bytes_be();
        let n = URL_SAFE_NO_PAD.encode(&n_bytes);
        let e = URL_SAFE_NO_PAD.encode(&e_bytes);
        // RFC 7638 thumbprint: the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        SigningKey {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            decoding: DecodingKey::from_rsa_raw_components(&n_bytes, &e_bytes),
            kid,
            n,
            e,
        }
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Signs `claims` as an RS256 JWT carrying this key's `kid`.
    pub(crate) fn sign<T: serde::Serialize>(
        &self,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// The public key as a JWK.
    pub(crate) fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
            "n": self.n,
            "e": self.e,
        })
    }
}

/// A client's registered verification key.
#[derive(Clone)]
pub(crate) struct ClientKey {
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl ClientKey {
    /// Parses a PEM public key: SPKI (`PUBLIC KEY`, RSA or EC) or PKCS#1 (`RSA PUBLIC KEY`).
    pub(crate) fn from_pem(pem: &str) -> Result<ClientKey, KeyError> {
        let rsa =
            RsaPublicKey::from_public_key_pem(pem).or_else(|_| RsaPublicKey::from_pkcs1_pem(pem));
        if let Ok(rsa) = rsa {
            return Ok(ClientKey {
                kid: None,
                key: DecodingKey::from_rsa_raw_components(
                    &rsa.n().to_bytes_be(),
                    &rsa.e().to_bytes_be(),
                ),
                algorithms: RSA_ALGORITHMS.to_vec(),
            });
        }
        let key = DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| KeyError::UnsupportedPem)?;
        let point_len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
        let algorithm = match point_len {
            65 => Algorithm::ES256,
            97 => Algorithm::ES384,
            _ => return Err(KeyError::UnsupportedPem),
        };
        Ok(ClientKey {
            kid: None,
            key,
            algorithms: vec![algorithm],
        })
    }

    /// Parses a JWK or a JWK Set (`{"keys": [...]}`) holding RSA or EC public keys.
    pub(crate) fn from_jwk_value(value: &serde_json::Value) -> Result<Vec<ClientKey>, KeyError> {
        let items: Vec<&serde_json::Value> = match value.get("keys") {
            Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
            Some(_) => return Err(KeyError::BadJwk("`keys` is not an array".into())),
            None => vec![value],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let jwk: Jwk = serde_json::from_value(item.clone())
                .map_err(|e| KeyError::BadJwk(e.to_string()))?;
            let family: Vec<Algorithm> = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => return Err(KeyError::BadJwk("unsupported curve".into())),
                },
                _ => {
                    return Err(KeyError::BadJwk(
                        "only rsa and ec public keys are accepted".into(),
                    ));
                }
            };
            let algorithms = match jwk.common.key_algorithm {
                Some(declared) => {
                    let declared = Algorithm::try_from(declared)
                        .map_err(|e| KeyError::BadJwk(e.to_string()))?;
                    if !family.contains(&declared) {
                        return Err(KeyError::BadJwk("`alg` does not match the key type".into()));
                    }
                    vec![declared]
                }
                None => family,
            };
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| KeyError::BadJwk(e.to_string()))?;
            out.push(ClientKey {
                kid: jwk.common.key_id.clone(),
                key,
                algorithms,
            });
        }
        Ok(out)
    }
}
