//! The sandbox EHR: an in-memory FHIR R4 server with a SMART authorization server
//! and a deterministic synthetic patient generator.
//!
//! Portico's demo, integration tests and benchmarks run against this crate instead of
//! a real EHR, so it behaves like one: versioned resources, real search semantics,
//! conditional create, `If-Match`, JSON Patch, OperationOutcome errors, RS256 JWT
//! access tokens from an authorization-code + PKCE flow. It also carries knobs that
//! real EHRs have but never on demand: added latency and injected faults, settable at
//! runtime, and a counter of the requests it served.
//!
//! The sandbox deliberately does *not* enforce patient compartments on the tokens it
//! issues: a patient token can read any patient here. Nor does it apply proxy rules
//! (ages, relationship periods, access levels) or withhold security-labelled records
//! (the generated families, [`Families`], carry both). That keeps Portico honest: the
//! gateway's own checks are the only thing between patient A and patient B's data
//! in every test.
//!
//! This crate never depends on `portico` or `portico-portal`.

pub mod auth;
pub mod faults;
pub mod fhir;
pub mod generator;
pub mod rules;
pub mod search;
pub mod server;
pub mod state;
pub mod store;

pub use auth::PatientClaim;
pub use faults::{FailureKind, FaultConfig, FaultPhase, Faults};
pub use generator::{Families, FamilyLogins, ProxyLogin, RelationshipInfo};
pub use server::{Sandbox, SandboxConfig};

/// One generated patient, as listed by `GET /auth/patients` and printed by `portico demo`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatientSummary {
    /// The FHIR id of the Patient resource.
    pub id: String,
    /// A display name ("Given Family").
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

/// A client registered with the sandbox authorization server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientInfo {
    pub client_id: String,
    /// `None` for public clients.
    pub client_secret: Option<String>,
    /// What the client is for, printed by `portico demo`.
    pub description: String,
}
