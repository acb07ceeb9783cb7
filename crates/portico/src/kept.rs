//! Answers kept in a cache entry's [`Derived`] slot: what the facade and the portal's
//! record lists rendered from one cached upstream body for one principal, so that a hit
//! on a hot entry unpacks bytes instead of parse, verify, rewrite and serialize. The
//! caller's key names everything besides the body that the answer depends on (the
//! principal's fingerprint or cursor binding, the request, the cursors' expiry step);
//! keys are compared exactly. Packed like the cache's own bodies (see
//! [`portico_cache::Packed`]): a kept answer is about the size of the body it came from,
//! and packing keeps a hot entry a fraction of its JSON size. A hit with a kept answer
//! still has the cache unpack the upstream body, which it does not use (~1 µs per 10 kB).

use std::sync::Arc;

use axum::body::Bytes;
use portico_cache::Packed;
use portico_upstream::Derived;

/// One kept answer and how many entries verification removed from it (for the audit
/// record of every answer served from it).
struct Answer {
    body: Packed,
    removed: usize,
}

/// The answer kept under `key`, if any: its bytes and how many entries were removed.
pub(crate) fn get(slot: &Derived, key: &str) -> Option<(Bytes, usize)> {
    let kept = slot.get::<Answer>(key)?;
    Some((kept.body.unpack()?, kept.removed))
}

/// Keeps `body` under `key`, weighed at its packed size.
pub(crate) fn keep(slot: &Derived, key: String, body: &Bytes, removed: usize) {
    let body = Packed::pack(body);
    let weight = body.stored_len();
    slot.set(key, Arc::new(Answer { body, removed }), weight);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_answer_comes_back_whole_packed_and_only_under_its_key() {
        let item = r#"{"id":"o1","title":"Hemoglobin","value":"13.2 g/dL","date":"2026-10-01"}"#;
        let body = Bytes::from(format!(r#"{{"items":[{}]}}"#, vec![item; 30].join(",")));
        let slot = Derived::with_budget(1 << 20);
        keep(&slot, "records\nkey-a".to_owned(), &body, 2);
        assert_eq!(get(&slot, "records\nkey-a"), Some((body.clone(), 2)));
        assert_eq!(get(&slot, "records\nkey-b"), None);
        assert!(
            slot.used() > 0 && slot.used() * 4 < body.len(),
            "kept {} bytes for a {}-byte answer",
            slot.used(),
            body.len()
        );
    }
}
