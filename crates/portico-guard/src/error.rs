//! Why a guarded call did not answer, in terms the HTTP edges map to their own formats
//! (the facade to OperationOutcomes, the portal to problem+json).

use portico_access::{Denial, ResolveError};
use portico_upstream::UpstreamError;

/// A guarded call's failure.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// Missing, gone, or not the principal's: the three are never told apart.
    #[error("not found")]
    NotFound,
    /// The policy refused the request before anything was sent (audited as denied).
    #[error("{}", .0.message())]
    Denied(Denial),
    /// A resource a write references could not be checked upstream, so the write was
    /// not sent.
    #[error("a referenced resource could not be checked")]
    Unverifiable(ResolveError),
    /// What the caller asked for cannot be done as asked (a change that is not a JSON
    /// Patch, or does not apply).
    #[error("{0}")]
    Invalid(String),
    /// The audit trail cannot be written, so nothing is answered or sent
    /// (`[audit] on_failure = "refuse"`).
    #[error("the audit trail cannot be written")]
    AuditUnavailable,
    /// The EHR failed or refused (classified by origin in [`UpstreamError`]).
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
}

impl GuardError {
    /// The denial behind a [`GuardError::Denied`].
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            GuardError::Denied(d) => Some(d),
            _ => None,
        }
    }
}
