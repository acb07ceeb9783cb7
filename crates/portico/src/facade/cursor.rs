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

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and opens cursors.
#[derive(Clone)]
pub struct CursorKey {
    key: Vec<u8>,
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

impl CursorKey {
    /// A key from configured bytes (at least 32).
    pub fn new(key: Vec<u8>) -> CursorKey {
        CursorKey {
            key,
            upstream_base: None,
        }
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

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_hmac())
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
        let mut mac = self.mac();
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
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| CursorError::Invalid)?;
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
