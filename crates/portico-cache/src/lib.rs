//! Portico's read cache: a decorator over the upstream port
//! ([`FhirUpstream`](portico_upstream::FhirUpstream)) that is
//! itself a `FhirUpstream`, so the gateway stacks `CachedUpstream(Resilient(FhirClient))`
//! without its handlers knowing.
//!
//! What it guarantees:
//! - **isolation**: an entry is keyed by the normalized read, the request's
//!   [`CachePartition`](portico_upstream::CachePartition) (patients + scope fingerprint)
//!   and, in passthrough mode, the SHA-256 of the caller's token; requests without a
//!   partition are cached only for shared reference types ([`SHARED_TYPES`]); see
//!   the private `key` module documents the rules;
//! - **read-your-writes**: a write through the cache invalidates the types it changes
//!   for the patients of its partition (and shared types for everyone) before its result
//!   is returned, and a read that raced the write can neither be served afterwards nor
//!   be joined by a later read ([`invalidation`]);
//! - **one upstream call per cold key**: concurrent misses share one fetch; errors are
//!   shared with the waiters and never cached;
//! - **bounded memory**: entries are weighed in bytes (stored body + key + overhead)
//!   against `max_bytes`, bodies stored LZ4-compressed ([`Packed`]); values derived
//!   from hit entries come on top, within a per-entry budget; TTLs are per resource
//!   type ([`CacheConfig`]);
//! - **honest staleness**: when the EHR fails, an expired entry within `stale_if_error`
//!   may be served, always marked with `FhirResponse::stale_age`.
//!
//! Never logged: keys, partitions, bodies, tokens.

pub mod body;
mod cache;
pub mod config;
pub mod invalidation;
mod key;

#[cfg(test)]
mod tests;

pub use body::Packed;
pub use cache::{CacheStats, CachedUpstream};
pub use config::{CacheConfig, SHARED_TYPES, is_shared_type};
pub use invalidation::{SharedError, SharedGenerations, Snapshot, invalidated_types};
