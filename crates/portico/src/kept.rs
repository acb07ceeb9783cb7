//! Answers kept in a cache entry's slot: what the facade and the portal's record lists
//! rendered from one cached upstream body for one principal, so that a hit on a hot
//! entry unpacks bytes instead of parse, verify, rewrite and serialize. The slot is a
//! [`BoundSlot`]: every key names the principal's full fingerprint (the guarded
//! session binds it), and the caller's `what` names everything else the answer depends
//! on (the request, a cursor binding, the cursors' expiry step); keys are compared
//! exactly.
//!
//! Two forms. A facade search's answer is nearly all the upstream body's own text, so it
//! is kept as [`Spliced`] pieces of that body, which the hit gets from the cache anyway:
//! a copy per hit and a small fraction of the answer's size kept. Other answers (a
//! resource read, a portal list) are packed like the cache's own bodies (see
//! [`portico_cache::Packed`]): about the size of the body they came from, packed to a
//! fraction of it.

use std::sync::Arc;

use axum::body::Bytes;
use portico_access::Spliced;
use portico_cache::Packed;
use portico_guard::{BoundSlot, Keeper, KeptAnswer};

/// One kept answer and how many entries verification removed from it (for the audit
/// record of every answer served from it).
pub(crate) struct Answer {
    body: Body,
    removed: usize,
}

enum Body {
    Packed(Packed),
    /// Pieces of the upstream body the answer came from.
    Spliced(Spliced),
}

impl KeptAnswer for Answer {
    fn removed(&self) -> usize {
        self.removed
    }
}

impl Answer {
    pub(crate) fn pack(body: &Bytes, removed: usize) -> Arc<Answer> {
        Arc::new(Answer {
            body: Body::Packed(Packed::pack(body)),
            removed,
        })
    }

    /// What it weighs in the slot: its packed size, or the pieces' own.
    pub(crate) fn weight(&self) -> usize {
        match &self.body {
            Body::Packed(packed) => packed.stored_len(),
            Body::Spliced(spliced) => spliced.weight(),
        }
    }

    /// The answer's bytes, `upstream` being the body of the cache entry that kept it;
    /// `None` only if the packed block is damaged or the pieces do not fit `upstream`.
    pub(crate) fn render(&self, upstream: &Bytes) -> Option<Bytes> {
        match &self.body {
            Body::Packed(packed) => packed.unpack(),
            Body::Spliced(spliced) => spliced.assemble(upstream).map(Bytes::from),
        }
    }
}

/// The packed answer kept under `what` with [`keep`], if any: its bytes and how many
/// entries were removed.
pub(crate) fn get(slot: &BoundSlot, what: &str) -> Option<(Bytes, usize)> {
    let kept = slot.get::<Answer>(what)?;
    match &kept.body {
        Body::Packed(packed) => Some((packed.unpack()?, kept.removed)),
        Body::Spliced(_) => None,
    }
}

/// Keeps `spliced` (the answer just rendered, as pieces of the entry's body) for the
/// next hit, if the keeper has a slot for it.
pub(crate) fn keep_spliced(keeper: &Keeper, spliced: Spliced, removed: usize) {
    let answer = Arc::new(Answer {
        body: Body::Spliced(spliced),
        removed,
    });
    let weight = answer.weight();
    keeper.keep(answer, weight);
}

/// Keeps a freshly rendered answer for the next hit, if the keeper has a slot for it
/// (nothing is packed on a miss or with the cache off).
pub(crate) fn keep_fresh(keeper: &Keeper, body: &Bytes, removed: usize) {
    if keeper.wants() {
        let answer = Answer::pack(body, removed);
        let weight = answer.weight();
        keeper.keep(answer, weight);
    }
}

/// Keeps `body` under `what`, weighed at its packed size.
pub(crate) fn keep(slot: &BoundSlot, what: &str, body: &Bytes, removed: usize) {
    let answer = Answer::pack(body, removed);
    let weight = answer.weight();
    slot.set(what, answer, weight);
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_upstream::Derived;

    #[test]
    fn a_kept_answer_comes_back_whole_packed_and_only_under_its_key() {
        let item = r#"{"id":"o1","title":"Hemoglobin","value":"13.2 g/dL","date":"2026-10-01"}"#;
        let body = Bytes::from(format!(r#"{{"items":[{}]}}"#, vec![item; 30].join(",")));
        let slot = BoundSlot::new(Derived::with_budget(1 << 20), "principal-a");
        keep(&slot, "records\nkey-a", &body, 2);
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
