//! [`Sealer`]: what goes into Redis is encrypted, and key names identify nothing.
//!
//! Values holding tokens or patient data are sealed with XChaCha20-Poly1305 (a fresh
//! random 192-bit nonce per value, so that random nonces never collide in practice)
//! with the full Redis key as associated data: a value copied under another key does
//! not open. A sealed value is `version (1 byte) || nonce (24) || ciphertext || tag
//! (16)`.
//!
//! Key names are HMAC-SHA-256 digests of what identifies the record (a patient and an
//! idempotency key, a patient and an offered appointment): the names stay stable for a
//! deployment but reveal neither ids nor, for guessable ids, whether a given patient
//! has a record (the digest is keyed).
//!
//! Both keys are derived from the configured 32-byte key (HMAC-SHA-256 with distinct
//! labels), so one secret serves both without being used twice.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

use crate::error::RedisError;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Seals values and names keys (see the module documentation).
pub struct Sealer {
    aead: XChaCha20Poly1305,
    naming: [u8; 32],
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

fn derive(key: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        let value_key = derive(key, "portico-redis/values/v1");
        Sealer {
            aead: XChaCha20Poly1305::new(&Key::from(value_key)),
            naming: derive(key, "portico-redis/names/v1"),
        }
    }

    /// `plaintext` sealed for the Redis key `key`.
    pub fn seal(&self, key: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .aead
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: key.as_bytes(),
                },
            )
            // Only a plaintext beyond 256 GiB can fail.
            .expect("XChaCha20-Poly1305 seals any value that fits in memory");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// The plaintext of a value sealed for `key`.
    pub fn open(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>, RedisError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(RedisError::Unreadable);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| RedisError::Unreadable)?;
        self.aead
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| RedisError::Unreadable)
    }

    /// `value` as JSON, sealed for `key`.
    pub fn seal_json<T: Serialize>(&self, key: &str, value: &T) -> Vec<u8> {
        // Serializing plain data structures (strings, numbers, JSON values) into a
        // Vec cannot fail.
        let json = serde_json::to_vec(value).unwrap_or_default();
        self.seal(key, &json)
    }

    /// A value sealed with [`Sealer::seal_json`], opened and decoded.
    pub fn open_json<T: DeserializeOwned>(
        &self,
        key: &str,
        sealed: &[u8],
    ) -> Result<T, RedisError> {
        let json = self.open(key, sealed)?;
        serde_json::from_slice(&json).map_err(|_| RedisError::Unreadable)
    }

    /// A key name for the record identified by `parts`: the keyed digest of the parts
    /// (each length-prefixed, so that `("a\nb", "c")` and `("a", "b\nc")` differ),
    /// hex-encoded.
    pub fn name(&self, parts: &[&str]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.naming).expect("HMAC takes any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        crate::hex(&mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_open_only_under_their_key_and_with_their_encryption_key() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal("p:session:a", b"refresh-token-secret");
        assert!(
            !sealed
                .windows(b"refresh-token-secret".len())
                .any(|w| w == b"refresh-token-secret"),
            "the plaintext does not show"
        );
        assert_eq!(
            sealer.open("p:session:a", &sealed).unwrap(),
            b"refresh-token-secret"
        );
        // Another key: moved values do not open.
        assert_eq!(
            sealer.open("p:session:b", &sealed),
            Err(RedisError::Unreadable)
        );
        // Another encryption key.
        assert_eq!(
            Sealer::new(&[8; 32]).open("p:session:a", &sealed),
            Err(RedisError::Unreadable)
        );
        // A flipped bit anywhere.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(sealer.open("p:session:a", &bad).is_err(), "byte {i}");
        }
        assert!(sealer.open("p:session:a", b"short").is_err());
        // A fresh nonce each time.
        assert_ne!(sealer.seal("k", b"x"), sealer.seal("k", b"x"));
    }

    #[test]
    fn names_are_keyed_digests_of_length_prefixed_parts() {
        let sealer = Sealer::new(&[7; 32]);
        let a = sealer.name(&["sub\npat-1", "key"]);
        assert_eq!(a.len(), 64);
        assert_eq!(a, sealer.name(&["sub\npat-1", "key"]));
        assert_ne!(a, sealer.name(&["sub", "pat-1\nkey"]));
        assert_ne!(a, sealer.name(&["sub\npat-12", "key"]));
        assert_ne!(a, Sealer::new(&[8; 32]).name(&["sub\npat-1", "key"]));
        assert!(!a.contains("pat"));
        assert_eq!(format!("{sealer:?}"), "Sealer([redacted])");
    }
}
