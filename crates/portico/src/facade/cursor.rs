//! Paging cursors: opaque, signed, bound to the principal, expiring.
//!
//! An upstream `next` link is never handed to clients to follow: it would leak the EHR's
//! address and, followed by anyone, bypass the gateway's checks. (The payload is signed,
//! not encrypted; it keeps the link relative to the EHR's base, so the address is not in
//! it.) The facade replaces it with
//! `<gateway>/fhir/_page?_cursor=<payload>.<mac>`, where the payload carries the upstream
//! link, the fingerprint of the principal that may follow it (subject, patients, scopes)
//! and an expiry, and the MAC is HMAC-SHA256 under a key only the gateway has. A cursor
//! that was altered, has expired, or is presented by another principal is refused; the
//! link inside is still checked against the upstream base before it is followed.
//!
//! **Keys and rotation.** Every replica of a fleet reads the same keys from
//! `facade.cursor_key_file`: one key per line (each at least 32 characters, for
//! example `openssl rand -hex 32`), the first signs, every one verifies. To rotate, put
//! a new key on the first line and keep the old one below it: links signed with the old
//! key keep working until they expire; after `facade.cursor_ttl_seconds`, remove it.
//! Without a file, a random key per process makes links die with a restart (and fail
//! on any other replica).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and opens cursors.
#[derive(Clone)]
pub struct CursorKey {
    /// The signing key first, then the keys that still verify.
    keys: Vec<Vec<u8>>,
    /// The EHR's base URL: left out of the payload (which is signed, not encrypted) and
    /// put back when the cursor is opened, so that a cursor does not show the EHR's
    /// address.
    upstream_base: Option<String>,
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey([redacted])")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// The upstream link.
    u: String,
    /// The principal's fingerprint.
    f: String,
    /// Expiry, seconds since the Unix epoch.
    e: u64,
}

/// Why a cursor is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("the paging link is malformed or was altered")]
    Invalid,
    #[error("the paging link has expired")]
    Expired,
    #[error("the paging link belongs to another session")]
    WrongPrincipal,
}

/// The shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

impl CursorKey {
    /// A key from configured bytes (at least 32).
    pub fn new(key: Vec<u8>) -> CursorKey {
        CursorKey {
            keys: vec![key],
            upstream_base: None,
        }
    }

    /// The keys of a key file: one per line (blank lines ignored), the first signs.
    pub fn from_file_contents(contents: &[u8]) -> Result<CursorKey, String> {
        let keys: Vec<Vec<u8>> = contents
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect();
        if keys.is_empty() {
            return Err("the file holds no key".to_owned());
        }
        if keys.iter().any(|k| k.len() < MIN_KEY_LEN) {
            return Err(format!(
                "every key (one per line) must be at least {MIN_KEY_LEN} characters, \
                 e.g. `openssl rand -hex 32`"
            ));
        }
        Ok(CursorKey {
            keys,
            upstream_base: None,
        })
    }

    /// Keeps `base` (the EHR's FHIR base) out of the cursors' payloads.
    pub fn with_upstream_base(mut self, base: impl Into<String>) -> CursorKey {
        self.upstream_base = Some(base.into());
        self
    }

    /// A fresh random key: links die with the process.
    pub fn random() -> CursorKey {
        use rand::RngCore;
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        CursorKey::new(key)
    }

    fn mac(key: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac())
    }

    /// A cursor for `upstream_link`, valid for `principal_fingerprint` until `expires`.
    pub fn seal(&self, upstream_link: &str, principal_fingerprint: &str, expires: u64) -> String {
        // `~` marks a link relative to the EHR's base.
        let link = match &self.upstream_base {
            Some(base) if upstream_link.starts_with(base.as_str()) => {
                format!("~{}", &upstream_link[base.len()..])
            }
            _ => upstream_link.to_owned(),
        };
        let payload = Payload {
            u: link,
            f: principal_fingerprint.to_owned(),
            e: expires,
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap_or_default());
        let mut mac = Self::mac(&self.keys[0]);
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The upstream link inside `cursor`, if it is intact, unexpired and `principal_fingerprint`'s.
    pub fn open(
        &self,
        cursor: &str,
        principal_fingerprint: &str,
        now: u64,
    ) -> Result<String, CursorError> {
        let (payload, tag) = cursor.split_once('.').ok_or(CursorError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CursorError::Invalid)?;
        let verifies = |key: &Vec<u8>| {
            let mut mac = Self::mac(key);
            mac.update(payload.as_bytes());
            mac.verify_slice(&tag).is_ok()
        };
        if !self.keys.iter().any(verifies) {
            return Err(CursorError::Invalid);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CursorError::Invalid)?;
        let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| CursorError::Invalid)?;
        if payload.e < now {
            return Err(CursorError::Expired);
        }
        if payload.f != principal_fingerprint {
            return Err(CursorError::WrongPrincipal);
        }
        match (payload.u.strip_prefix('~'), &self.upstream_base) {
            (Some(rest), Some(base)) => Ok(format!("{base}{rest}")),
            (Some(_), None) => Err(CursorError::Invalid),
            (None, _) => Ok(payload.u),
        }
    }
}

fn unreachable_hmac() -> HmacSha256 {
    // Only reachable if the hmac crate changed its contract; a fixed key keeps the
    // cursor code total instead of panicking (cursors then simply never verify across
    // keys, which fails closed).
    match HmacSha256::new_from_slice(&[0u8; 32]) {
        Ok(mac) => mac,
        Err(_) => std::process::abort(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_file_signs_with_the_new_key_and_still_opens_old_links() {
        let old =
            CursorKey::from_file_contents(format!("{}\n", "a".repeat(64)).as_bytes()).unwrap();
        let link = "http://ehr/fhir/Observation?page=2";
        let before = old.seal(link, "fp-a", 100);
        let rotated = CursorKey::from_file_contents(
            format!("{}\n{}\n\n", "b".repeat(64), "a".repeat(64)).as_bytes(),
        )
        .unwrap();
        assert_eq!(rotated.open(&before, "fp-a", 50).unwrap(), link);
        let after = rotated.seal(link, "fp-a", 100);
        assert_ne!(after, before, "the new key signs");
        assert_eq!(old.open(&after, "fp-a", 50), Err(CursorError::Invalid));
        // Once the old key is removed, its links stop working.
        let new_only = CursorKey::from_file_contents("b".repeat(64).as_bytes()).unwrap();
        assert_eq!(
            new_only.open(&before, "fp-a", 50),
            Err(CursorError::Invalid)
        );
        assert_eq!(new_only.open(&after, "fp-a", 50).unwrap(), link);
        assert!(CursorKey::from_file_contents(b"short\n").is_err());
        assert!(CursorKey::from_file_contents(b"\n \n").is_err());
    }

    #[test]
    fn round_trip() {
        let key = CursorKey::random();
        let c = key.seal("http://ehr/fhir/Observation?page=2", "fp-a", 100);
        assert_eq!(
            key.open(&c, "fp-a", 50).unwrap(),
            "http://ehr/fhir/Observation?page=2"
        );
    }

    #[test]
    fn the_ehrs_address_is_not_in_the_payload() {
        let key = CursorKey::random().with_upstream_base("http://ehr.internal:9443/fhir");
        let link = "http://ehr.internal:9443/fhir/Observation?page=2";
        let c = key.seal(link, "fp-a", 100);
        let (payload, _) = c.split_once('.').unwrap();
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert!(!text.contains("ehr.internal"), "{text}");
        assert_eq!(key.open(&c, "fp-a", 50).unwrap(), link);
    }

    #[test]
    fn refuses_other_principals_expiry_and_tampering() {
        let key = CursorKey::random();
        let c = key.seal("http://ehr/fhir/Observation?page=2", "fp-a", 100);
        assert_eq!(key.open(&c, "fp-b", 50), Err(CursorError::WrongPrincipal));
        assert_eq!(key.open(&c, "fp-a", 101), Err(CursorError::Expired));
        let mut tampered = c.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.open(&String::from_utf8(tampered).unwrap(), "fp-a", 50),
            Err(CursorError::Invalid)
        );
        assert_eq!(
            CursorKey::random().open(&c, "fp-a", 50),
            Err(CursorError::Invalid),
            "another key"
        );
        assert_eq!(key.open("garbage", "fp-a", 50), Err(CursorError::Invalid));
        // A forged payload with a recomputed-looking tag is still refused.
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"u":"http://evil/","f":"fp-a","e":999}"#),
            c.split_once('.').unwrap().1
        );
        assert_eq!(key.open(&forged, "fp-a", 50), Err(CursorError::Invalid));
    }
}
