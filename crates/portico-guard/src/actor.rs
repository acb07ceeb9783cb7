//! Who acts in a [`crate::Session`]: the principal every decision is made for, the
//! cache partition its requests carry, and what travels with each request.

use std::sync::{Arc, OnceLock};

use portico_access::Principal;
use portico_upstream::{CachePartition, SecretString};

/// One request's actor.
///
/// `principal` decides everything (narrowing, verification, write rules, the audit
/// record's who). For a login acting for one of several patients it is the login
/// narrowed to that patient ([`Actor::acting_for`]); the cache partition stays the
/// login's own (every patient it names and its scopes), so the partition never lets
/// two logins share entries.
#[derive(Clone)]
pub struct Actor {
    principal: Arc<Principal>,
    partition: CachePartition,
    /// The caller's own token, sent upstream only in passthrough mode.
    pub bearer: Option<SecretString>,
    pub request_id: Option<String>,
    fingerprint: OnceLock<String>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Actor {
    /// The principal as it is: every patient it names (a SMART app's launch context).
    pub fn new(principal: Arc<Principal>) -> Actor {
        let partition = partition_of(&principal);
        Actor {
            principal,
            partition,
            bearer: None,
            request_id: None,
            fingerprint: OnceLock::new(),
        }
    }

    /// The principal narrowed to `patient`'s compartment (one of its patients; the
    /// caller checks that), with the proxy grant for that patient if it is one. A `fhirUser` naming another patient (a parent's own record,
    /// for a parent acting for a child) is dropped, since the policy counts it as one of
    /// the principal's own patients.
    pub fn acting_for(principal: &Principal, patient: &str) -> Actor {
        let fhir_user = principal
            .fhir_user
            .as_ref()
            .filter(|r| r.resource_type != "Patient" || r.id == patient)
            .cloned();
        let acting = Principal {
            patients: vec![patient.to_owned()],
            fhir_user,
            proxies: principal
                .proxies
                .iter()
                .filter(|g| g.patient == patient)
                .cloned()
                .collect(),
            ..principal.clone()
        };
        Actor {
            principal: Arc::new(acting),
            partition: partition_of(principal),
            bearer: None,
            request_id: None,
            fingerprint: OnceLock::new(),
        }
    }

    pub fn with_bearer(mut self, bearer: Option<SecretString>) -> Actor {
        self.bearer = bearer;
        self
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Actor {
        self.request_id = request_id;
        self
    }

    /// The principal every decision is made for.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The principal, for what outlives the request's borrow of the actor.
    pub fn principal_shared(&self) -> Arc<Principal> {
        Arc::clone(&self.principal)
    }

    pub(crate) fn partition(&self) -> &CachePartition {
        &self.partition
    }

    /// The principal's full fingerprint (subject, client, patients, fhirUser, scopes),
    /// computed once per actor: what binds kept answers and paging cursors.
    pub fn fingerprint(&self) -> &str {
        self.fingerprint
            .get_or_init(|| self.principal.fingerprint())
    }
}

fn partition_of(principal: &Principal) -> CachePartition {
    CachePartition::new(
        principal.patients.iter().cloned(),
        principal.scopes.fingerprint(),
    )
}
