//! Portal actions as domain logic, independent of HTTP.
//!
//! The portal API (`/api/v1` in the `portico` crate) is task-shaped: "book this slot",
//! "request a refill of this medication". This crate turns each task into FHIR R4 calls
//! through the [`context::Ctx`] (which enforces the access policy, idempotency and
//! auditing on every call) and maps FHIR resources into simple, stable views. EHR
//! profiles ([`profile::EhrProfile`]) pick the FHIR strategy per action.
//!
//! Modules: [`context`] (the way to the EHR: a thin user of `portico_guard`'s one
//! guarded session), [`profile`] (EHR profiles), [`idempotency`] (exactly-once writes),
//! [`locks`] (per-object locks) and [`offers`] (what `$find` offered) — the state
//! replicas share, each a trait with a memory implementation here, a Redis one in
//! `portico-redis`, and one contract suite for both (`contract`, behind the `contract`
//! feature),
//! [`payments`] (the processor port) and [`card`] (card numbers never enter), [`error`],
//! [`input`] (the one validator of patients' text and ids), [`careteam`] (the one
//! care-team lookup), [`view`] (shared FHIR → JSON helpers), [`whole`] (searches
//! collected whole or not at all), and one module per portal area: [`records`],
//! [`appointments`], [`medications`], [`referrals`], [`messages`], [`bills`] (folders
//! split by concern and strategy), [`dashboard`], [`me`].

pub mod access;
pub mod appointments;
pub mod bills;
pub mod card;
pub mod careteam;
pub mod context;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod dashboard;
pub mod error;
pub mod idempotency;
pub mod input;
pub mod locks;
pub mod me;
pub mod medications;
pub mod messages;
pub mod offers;
pub mod payments;
pub mod profile;
pub mod records;
pub mod referrals;
pub mod view;
pub mod whole;

pub use context::{Caller, Ctx, Page, Portal, Versioned};
pub use error::{PortalError, PortalResult, StateError};
pub use idempotency::{Idem, IdempotencyStore, MemoryIdempotencyStore};
pub use locks::{LockGuard, Locks, MemoryLocks};
pub use offers::{MemoryOffers, Offer, Offers};
pub use profile::EhrProfile;

/// A hand-written EHR document from the repository's `fixtures/` (see its README), for
/// the unit tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/").to_owned() + name;
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path} cannot be read: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
