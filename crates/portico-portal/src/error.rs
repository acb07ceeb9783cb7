//! Why a portal action did not happen, in domain terms.
//!
//! The HTTP layer (`portico::portal`) maps each variant to a status and renders it as
//! problem+json with the variant's stable [`PortalError::code`]. Messages are shown to
//! the patient: they never contain another patient's data, a token or an upstream body.

use portico_upstream::UpstreamError;
use serde_json::Value;

/// A portal action's failure.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The request is malformed or out of bounds (400): a bad date window, an unknown
    /// kind, a text too long, an amount that is not a number.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },

    /// The thing does not exist or is not the patient's (404; the two are never told
    /// apart).
    #[error("not found")]
    NotFound,

    /// A business rule refuses the action (422): `refill_not_eligible`,
    /// `recipient_not_allowed`, `amount_exceeds_balance`, `not_cancelable`, ...
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: String,
        /// Machine-readable detail for the client (for example the eligibility reason).
        detail: Option<Value>,
    },

    /// The state changed under the action (409): `slot_unavailable`, `version_conflict`.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },

    /// The patient's token lacks a scope the action needs (403, `scope_missing`).
    #[error("{message}")]
    Forbidden { message: String },

    /// The login acts for this patient as a proxy whose access level does not allow
    /// the action (403, `proxy_not_permitted`): a read-only proxy writing, a
    /// billing-only proxy booking or reading clinical data, a proxy managing who else
    /// may act for the patient.
    #[error("{message}")]
    ProxyNotPermitted { message: String },

    /// The configured EHR profile has no way to do this (501, `not_supported_by_ehr`).
    #[error("{message}")]
    NotSupported { message: String },

    /// The EHR failed and the action did not happen (mapped like any upstream error:
    /// 502/503/504 with `upstream_*` codes).
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),

    /// A write was sent, the EHR failed before answering, and searching for it by its
    /// identifier could not tell whether it happened (503, `outcome_unknown`). Retrying
    /// with the same `Idempotency-Key` is safe: the retry finds or creates exactly one.
    #[error("the outcome of {action} is unknown")]
    OutcomeUnknown { action: &'static str },

    /// The audit trail cannot be written, so the gateway answers nothing that reveals
    /// or changes patient data (503, `audit_unavailable`); a write may have reached the
    /// EHR before its outcome could be recorded, so a retry with the same
    /// `Idempotency-Key` is the way to learn what happened.
    #[error("the audit trail cannot be written")]
    AuditUnavailable,

    /// State the replicas share (per-object locks, offers) cannot be reached, so the
    /// action was not attempted (503, `state_unavailable`).
    #[error("shared state is unavailable")]
    StateUnavailable,

    /// A multi-step action stopped half-way (502, `partially_completed`); `state`
    /// says precisely what happened (for example a reschedule whose new appointment is
    /// booked but whose old one could not be cancelled).
    #[error("{message}")]
    Partial {
        code: &'static str,
        message: String,
        state: Value,
    },
}

impl PortalError {
    pub fn invalid(message: impl Into<String>) -> PortalError {
        PortalError::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }

    pub fn refused(code: &'static str, message: impl Into<String>) -> PortalError {
        PortalError::Refused {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> PortalError {
        PortalError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn not_supported(message: impl Into<String>) -> PortalError {
        PortalError::NotSupported {
            message: message.into(),
        }
    }

    /// The stable machine-readable code (upstream errors are coded by the HTTP layer).
    pub fn code(&self) -> &'static str {
        match self {
            PortalError::Invalid { code, .. }
            | PortalError::Refused { code, .. }
            | PortalError::Conflict { code, .. }
            | PortalError::Partial { code, .. } => code,
            PortalError::NotFound => "not_found",
            PortalError::Forbidden { .. } => "scope_missing",
            PortalError::ProxyNotPermitted { .. } => "proxy_not_permitted",
            PortalError::NotSupported { .. } => "not_supported_by_ehr",
            PortalError::Upstream(_) => "upstream_error",
            PortalError::OutcomeUnknown { .. } => "outcome_unknown",
            PortalError::AuditUnavailable => "audit_unavailable",
            PortalError::StateUnavailable => "state_unavailable",
        }
    }

    /// Upstream "not found" and "gone" become [`PortalError::NotFound`]; the rest stay
    /// upstream failures.
    pub fn from_read(e: UpstreamError) -> PortalError {
        match e {
            UpstreamError::NotFound { .. } | UpstreamError::Gone { .. } => PortalError::NotFound,
            other => PortalError::Upstream(other),
        }
    }
}

pub type PortalResult<T> = Result<T, PortalError>;

/// Why state shared between replicas (idempotency records, per-object locks, offers)
/// could not be read or written. The memory stores never fail; a remote store (Redis)
/// fails when it cannot be reached, answers too slowly, or holds a value that cannot be
/// read. Messages never carry keys, values or patient data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The store could not answer.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// A lock stayed held by another request for longer than a caller waits.
    #[error("another request holds this lock")]
    Busy,
}

/// A lock that cannot be taken stops the action before it starts: unavailable is a
/// 503, a lock held too long by another request a 409 the client may retry.
impl From<StateError> for PortalError {
    fn from(e: StateError) -> PortalError {
        match e {
            StateError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "shared state unavailable");
                PortalError::StateUnavailable
            }
            StateError::Busy => PortalError::conflict(
                "busy",
                "another request is changing this right now; try again shortly",
            ),
        }
    }
}
