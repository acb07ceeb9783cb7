//! Portal actions as domain logic, independent of HTTP.
//!
//! The portal API (`/api/v1` in the `portico` crate) is task-shaped: "book this slot",
//! "request a refill of this medication". This crate turns each task into FHIR R4 calls
//! through the [`context::Ctx`] (which enforces the access policy, idempotency and
//! auditing on every call) and maps FHIR resources into simple, stable views. EHR
//! profiles ([`profile::EhrProfile`]) pick the FHIR strategy per action.
//!
//! Modules: [`context`] (the way to the EHR), [`profile`] (EHR profiles),
//! [`idempotency`] (exactly-once writes), [`payments`] (the processor port), [`error`],
//! [`view`] (shared FHIR → JSON helpers), and one module per portal area.

pub mod appointments;
pub mod bills;
pub mod card;
pub mod careteam;
pub mod context;
pub mod dashboard;
pub mod error;
pub mod idempotency;
pub mod input;
pub mod me;
pub mod medications;
pub mod messages;
pub mod payments;
pub mod profile;
pub mod records;
pub mod referrals;
pub mod view;
pub mod whole;

pub use context::{Caller, Ctx, Page, Portal, Versioned};
pub use error::{PortalError, PortalResult};
pub use idempotency::{Idem, IdempotencyStore, MemoryIdempotencyStore};
pub use profile::EhrProfile;
