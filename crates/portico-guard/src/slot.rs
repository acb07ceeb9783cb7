//! What a guarded answer carries besides its content ([`Meta`]), and the answers kept
//! in a cache entry's slot for later hits of the same principal ([`BoundSlot`],
//! [`Reply`]).
//!
//! A cache hands every response served from one stored entry the same [`Derived`]
//! slot. What a session derived from that entry's body for one principal (the facade's
//! rendered answer, the portal's verified page, a record list's serialized answer) is a
//! pure function of the body and that principal, so it can be reused by the next hit
//! instead of parsing and verifying again. The only way to the slot is a [`BoundSlot`],
//! which puts the principal's full fingerprint into every key: a value kept for one
//! principal can never be found by another.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portico_upstream::{Derived, FhirResponse};

/// The headers and status of an upstream answer, without its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub status: u16,
    /// The raw `ETag` header.
    pub etag: Option<String>,
    /// The version id from `ETag` or a versioned `Location`.
    pub version_id: Option<String>,
    pub location: Option<String>,
    pub last_modified: Option<String>,
    /// Set when served from an expired cache entry because the EHR is failing.
    pub stale_age: Option<Duration>,
}

impl Meta {
    pub(crate) fn of(response: &FhirResponse) -> Meta {
        Meta {
            status: response.status,
            etag: response.etag.clone(),
            version_id: response.version_id.clone(),
            location: response.location.clone(),
            last_modified: response.last_modified.clone(),
            stale_age: response.stale_age,
        }
    }
}

/// A cache entry's slot, bound to one principal: every key names the principal's full
/// fingerprint.
#[derive(Debug, Clone)]
pub struct BoundSlot {
    slot: Derived,
    fingerprint: String,
}

impl BoundSlot {
    /// `slot` bound to the principal with this fingerprint (the guarded session makes
    /// these; tests may too).
    pub fn new(slot: Derived, fingerprint: &str) -> BoundSlot {
        BoundSlot {
            slot,
            fingerprint: fingerprint.to_owned(),
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{what}\n{}", self.fingerprint)
    }

    /// The value kept under `what` for this principal, if there is one of type `T`.
    /// `what` names everything besides the body and the principal that the value
    /// depends on (the interaction, a self link, a cursor expiry step).
    pub fn get<T: Any + Send + Sync>(&self, what: &str) -> Option<Arc<T>> {
        self.slot.get(&self.key(what))
    }

    /// Keeps `value` (said to weigh `weight` bytes) under `what` for this principal.
    /// Returns whether it was kept.
    pub fn set<T: Any + Send + Sync>(&self, what: &str, value: Arc<T>, weight: usize) -> bool {
        self.slot.set(self.key(what), value, weight)
    }

    /// The bytes of derived values the entry keeps now (of every principal).
    pub fn used(&self) -> usize {
        self.slot.used()
    }
}

/// A value kept from a verified answer, which a later hit serves in its place: it says
/// how many entries verification removed, for the audit record of every answer served
/// from it.
pub trait KeptAnswer: Any + Send + Sync {
    fn removed(&self) -> usize;
}

/// A guarded answer that may have been served from a kept value.
#[derive(Debug)]
pub struct Reply<T, F> {
    pub meta: Meta,
    /// Kept from an earlier hit on the same entry for the same principal (already
    /// verified, recorded again for this call), or `Fresh`: verified now.
    pub answer: Reuse<T, F>,
    /// Where to keep what the caller derives from a fresh answer.
    pub keeper: Keeper,
    /// The upstream body the answer came from (a kept value may be made of pieces of
    /// it: the cache entry that keeps the value holds this same body).
    pub upstream: Bytes,
}

/// Kept or fresh.
#[derive(Debug)]
pub enum Reuse<T, F> {
    Kept(Arc<T>),
    Fresh(F),
}

impl<T, F> Reply<T, F> {
    pub(crate) fn new(
        meta: Meta,
        answer: Reuse<T, F>,
        slot: Option<BoundSlot>,
        what: &str,
        upstream: Bytes,
    ) -> Self {
        Reply {
            meta,
            answer,
            keeper: Keeper {
                slot,
                what: what.to_owned(),
            },
            upstream,
        }
    }
}

/// The entry's slot for this principal (when the answer came from a cache hit) and the
/// `what` the answer was asked with.
#[derive(Debug)]
pub struct Keeper {
    slot: Option<BoundSlot>,
    what: String,
}

impl Keeper {
    /// Keeps what the caller derived from a fresh answer for the next hit of the same
    /// principal on the same entry. Nothing happens when the answer did not come from a
    /// cache hit.
    pub fn keep<T: KeptAnswer>(&self, value: Arc<T>, weight: usize) {
        if let Some(slot) = &self.slot {
            slot.set(&self.what, value, weight);
        }
    }

    /// Whether [`Keeper::keep`] would keep anything: a caller skips deriving (packing)
    /// what would only be dropped, as on a miss or with the cache off.
    pub fn wants(&self) -> bool {
        self.slot.is_some()
    }

    /// The slot, for a caller that keeps more under keys of its own.
    pub fn into_slot(self) -> Option<BoundSlot> {
        self.slot
    }
}
