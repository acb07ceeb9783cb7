//! The one guarded path to the EHR.
//!
//! Every request Portico sends to the EHR on a patient's behalf — from the FHIR facade
//! (`/fhir`), the portal API (`/api/v1`) or the portal pages — goes through a
//! [`Session`]: one principal's HTTP-free way to the EHR. A session keeps the gateway's
//! isolation invariants in exactly one place:
//! - **narrowed before it goes up**: searches are narrowed by the access policy to the
//!   principal's compartment (or refused), writes are checked against the patient write
//!   rules and the current version before anything is sent, conditional creates are
//!   narrowed like searches;
//! - **verified when it comes back**: a read of a resource the principal may not see is
//!   [`GuardError::NotFound`], exactly like a missing one; every Bundle entry is verified
//!   ([`portico_access::Policy::verify_bundle`]); what a write answers is shown only if
//!   the principal may read it. An answer's content is reachable only through the
//!   verifying methods: [`Unchecked`] keeps the body private;
//! - **audited once**: each guarded call writes one audit record (allowed, denied or
//!   failed, with the upstream status and the entries verification removed);
//! - **failures classified**: [`GuardError`] says whether the policy refused, the thing
//!   was not found (or not the principal's), a referenced resource could not be checked,
//!   or the EHR failed; the HTTP edges map it to their own formats.
//!
//! A verified answer derived from a cache hit may be kept in the cache entry's slot and
//! reused by later hits of the same principal ([`Reply`], [`BoundSlot`]): the slot is
//! bound to the principal's full fingerprint, so nothing kept for one principal is ever
//! seen by another.
//!
//! Modules: [`actor`] (who acts: principal, acting patient, cache partition),
//! [`error`], [`slot`] (kept answers), `read` (read, vread, the current version),
//! `bundle` (search, paging, history, operations, `$everything`), `write` (create,
//! update, patch and the named domain writes), `audit`.

pub mod actor;
mod audit;
mod bundle;
pub mod delegation;
pub mod error;
pub mod flow;
mod read;
pub mod slot;
mod write;

use std::sync::Arc;

use portico_access::Policy;
use portico_access::audit::AuditSink;
use portico_upstream::{Answer, FhirRequest, FhirResponse, FhirUpstream, UpstreamError};

pub use actor::Actor;
pub use bundle::{EVERYTHING_TYPES, Unchecked, Verified, operation_result_bundle};
pub use delegation::{DelegationError, Delegations};
pub use error::GuardError;
pub use read::{Checked, Target};
pub use slot::{BoundSlot, Keeper, KeptAnswer, Meta, Reply, Reuse};
pub use write::{Base, IfNoneExist, Written, WrittenBody, encode_query, outcome_unknown};

/// What every session shares: the upstream port, the policy and the audit sink. Cheap
/// to clone; built once per process.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Arc<dyn FhirUpstream>,
    /// The EHR without the read cache, for the one check that must see the present
    /// ([`Session::slot_is_held`]); `upstream` when not set.
    uncached: Option<Arc<dyn FhirUpstream>>,
    policy: Policy,
    audit: Arc<dyn AuditSink>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Guard {
    pub fn new(
        upstream: Arc<dyn FhirUpstream>,
        policy: Policy,
        audit: Arc<dyn AuditSink>,
    ) -> Guard {
        Guard {
            inner: Arc::new(Inner {
                upstream,
                uncached: None,
                policy,
                audit,
            }),
        }
    }

    /// The upstream to use, without the cache, for checks that must not be answered
    /// from it.
    pub fn with_uncached(self, uncached: Arc<dyn FhirUpstream>) -> Guard {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            upstream: shared.upstream.clone(),
            uncached: shared.uncached.clone(),
            policy: shared.policy.clone(),
            audit: shared.audit.clone(),
        });
        Guard {
            inner: Arc::new(Inner {
                uncached: Some(uncached),
                ..inner
            }),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    pub fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.inner.audit
    }

    /// One actor's guarded session.
    pub fn session<'a>(&'a self, actor: &'a Actor) -> Session<'a> {
        Session { guard: self, actor }
    }
}

/// One actor's way to the EHR. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    guard: &'a Guard,
    actor: &'a Actor,
}

impl<'a> Session<'a> {
    pub fn actor(&self) -> &'a Actor {
        self.actor
    }

    pub fn policy(&self) -> &'a Policy {
        &self.guard.inner.policy
    }

    /// The request with the actor's request id, token (passthrough) and cache
    /// partition: the cache never serves one partition's entry to another, and what it
    /// serves is verified again like anything else.
    fn prepare(&self, request: FhirRequest) -> FhirRequest {
        let mut request = request;
        if let Some(id) = &self.actor.request_id {
            request = request.with_request_id(id.clone());
        }
        if let Some(token) = &self.actor.bearer {
            request = request.with_bearer(token.clone());
        }
        request.with_partition(self.actor.partition().clone())
    }

    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        self.guard
            .inner
            .upstream
            .execute(self.prepare(request))
            .await
    }

    async fn execute_partial(&self, request: FhirRequest) -> Result<Answer, UpstreamError> {
        self.guard
            .inner
            .upstream
            .execute_partial(self.prepare(request))
            .await
    }
}

#[cfg(test)]
mod tests;
