//! The contract every implementation of a shared-state trait passes: one suite per
//! trait, run against the memory implementation here (unit tests) and against Redis in
//! `portico-redis` (a real `redis-server`). A suite is a plain async function that
//! panics on the first broken promise; what differs between implementations (a store
//! built with given lifetimes, two clients of one lock service) comes in through its
//! arguments.
//!
//! Compiled for this crate's tests and, with the `contract` feature, for other crates'
//! tests; never part of the gateway.

pub mod idempotency;
pub mod locks;
pub mod offers;
