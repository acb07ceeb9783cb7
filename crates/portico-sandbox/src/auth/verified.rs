//! Access tokens already verified. The sandbox checks a token's RS256 signature once, not
//! on every request: under load the `rsa` crate's verification took about 60 % of the
//! sandbox's CPU, so every benchmark that goes through it (the direct and nginx
//! references, and the gateway's own upstream calls) measured bignum arithmetic rather
//! than serving. A hit is re-checked against `exp`; an expired token is verified again
//! in full (and refused as expired). Keys are SHA-256 digests of the tokens.

use std::collections::HashMap;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::AccessClaims;

/// Tokens kept at most; past it the map starts over (tokens are re-verified once).
const CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct VerifiedTokens {
    map: Mutex<HashMap<[u8; 32], AccessClaims>>,
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified before and has not expired at `now`.
    pub(super) fn get(&self, token: &str, now: i64) -> Option<AccessClaims> {
        let key = digest(token);
        let mut map = self.map.lock();
        match map.get(&key) {
            Some(claims) if claims.exp >= now => Some(claims.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a token that was just verified in full.
    pub(super) fn insert(&self, token: &str, claims: &AccessClaims) {
        let mut map = self.map.lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(digest(token), claims.clone());
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            sub: "u".into(),
            client_id: "c".into(),
            scope: "patient/*.rs".into(),
            patient: None,
            fhir_user: None,
            exp,
        }
    }

    #[test]
    fn a_token_is_found_until_it_expires_and_only_itself() {
        let tokens = VerifiedTokens::default();
        tokens.insert("a.b.c", &claims(100));
        assert_eq!(tokens.get("a.b.c", 100), Some(claims(100)));
        assert_eq!(tokens.get("a.b.d", 100), None);
        assert_eq!(tokens.get("a.b.c", 101), None, "expired");
        assert_eq!(
            tokens.get("a.b.c", 50),
            None,
            "an expired token is forgotten"
        );
    }

    #[test]
    fn the_map_is_bounded() {
        let tokens = VerifiedTokens::default();
        for i in 0..=CAPACITY {
            tokens.insert(&format!("t{i}"), &claims(100));
        }
        assert!(tokens.map.lock().len() <= CAPACITY);
        assert!(tokens.get(&format!("t{CAPACITY}"), 0).is_some());
    }
}
