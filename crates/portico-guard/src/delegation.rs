//! Where a login's proxy access comes from: the EHR's `RelatedPerson` records, read by
//! the gateway and decided by [`DelegationRules`].
//!
//! [`Delegations::resolve`] turns a principal verified from a token into the one every
//! decision is made for:
//!
//! - a login that acts only for its own patient (its `fhirUser`), or a token with one
//!   launch patient and no `fhirUser` (a SMART app's context), is returned as it is,
//!   without a lookup;
//! - every other patient the token names must be backed by a `RelatedPerson` of that
//!   patient that belongs to the login and is in force ([`DelegationRules::decide`]):
//!   for a `fhirUser` that is `RelatedPerson/r`, r itself and the patient's
//!   `RelatedPerson`s sharing an identifier with r (one person, several patients); for
//!   a `fhirUser` that is `Patient/p`, the `RelatedPerson`s `Patient/p.link` names. The
//!   token and the EHR must agree: a patient either does not back is dropped (the
//!   narrower wins), and each one kept carries its [`portico_access::ProxyGrant`];
//! - a token naming several patients without a `fhirUser` to check them against is
//!   refused ([`DelegationError::Unprovable`]).
//!
//! The lookups (`RelatedPerson?patient=…`, `Patient/…`) go through the gateway's
//! upstream, cached like any read in a partition of that patient alone: a write of a
//! patient's `RelatedPerson` (a revocation, on any replica when the cache generations
//! are shared) invalidates them, so a revocation takes effect on the proxy's next
//! request. The lookups are not audited as the proxy's reads: they are the gateway's
//! own, and the proxy sees none of what they return.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use portico_access::Principal;
use portico_access::delegation::{DelegationRules, Relationship, denied_by_consents, parse_date};
use portico_fhir::reference::Reference;
use portico_upstream::{CachePartition, FhirRequest, FhirUpstream, SecretString, UpstreamError};
use serde_json::Value;

/// The cache partition marker of the gateway's own relationship lookups.
const LOOKUP_SCOPE: &str = "portico-delegation";

/// Why a principal's proxy access could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    /// The token names several patients but no `fhirUser` to check them against.
    #[error("the token names several patients but no fhirUser to check them against")]
    Unprovable,
    /// The EHR did not answer the lookups.
    #[error("relationships could not be read from the EHR: {0}")]
    Upstream(#[from] UpstreamError),
}

/// Reads relationships and decides proxy grants. Cheap to clone.
#[derive(Clone)]
pub struct Delegations {
    upstream: Arc<dyn FhirUpstream>,
    rules: Arc<DelegationRules>,
    /// Whether revocations are `Consent`s (the EHR profile's `consent` strategy).
    consents: bool,
}

impl std::fmt::Debug for Delegations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegations").finish_non_exhaustive()
    }
}

impl Delegations {
    pub fn new(upstream: Arc<dyn FhirUpstream>, rules: DelegationRules) -> Delegations {
        Delegations {
            upstream,
            rules: Arc::new(rules),
            consents: false,
        }
    }

    /// Also read each patient's active `Consent`s: one denying a relationship ends it
    /// ([`denied_by_consents`]).
    pub fn with_consents(mut self, consents: bool) -> Self {
        self.consents = consents;
        self
    }

    pub fn rules(&self) -> &DelegationRules {
        &self.rules
    }

    /// The principal with the patients its relationships back and their grants; see the
    /// module documentation. `bearer` is the caller's token (passthrough mode).
    pub async fn resolve(
        &self,
        mut principal: Principal,
        bearer: Option<&SecretString>,
    ) -> Result<Principal, DelegationError> {
        let own = principal
            .fhir_user
            .as_ref()
            .filter(|r| r.resource_type == "Patient")
            .map(|r| r.id.clone());
        let others: Vec<String> = principal
            .patients
            .iter()
            .filter(|p| Some(*p) != own.as_ref())
            .cloned()
            .collect();
        if others.is_empty() {
            return Ok(principal);
        }
        let login = match principal.fhir_user.as_ref() {
            Some(r) if r.resource_type == "RelatedPerson" => Login::RelatedPerson(r.id.clone()),
            Some(r) if r.resource_type == "Patient" => {
                let patient = self.read_patient(&r.id, bearer).await?;
                Login::Patient(linked_related_persons(patient.as_ref()))
            }
            _ if principal.patients.len() == 1 => return Ok(principal),
            _ => return Err(DelegationError::Unprovable),
        };
        let mut lists = Vec::with_capacity(others.len());
        for patient in &others {
            lists.push(self.related_persons(patient, bearer).await?);
        }
        // One person, several patients: the fhirUser RelatedPerson's identifiers find
        // its siblings on the other patients' lists.
        let identifiers = match &login {
            Login::RelatedPerson(me) => lists
                .iter()
                .flatten()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(me.as_str()))
                .map(identifier_keys)
                .unwrap_or_default(),
            Login::Patient(_) => BTreeSet::new(),
        };
        let now = Utc::now();
        let mut kept: Vec<String> = own
            .iter()
            .filter(|p| principal.patients.contains(p))
            .cloned()
            .collect();
        let mut grants = Vec::new();
        for (patient, related) in others.iter().zip(&lists) {
            let mine: Vec<Relationship> = related
                .iter()
                .filter(|r| login.owns(r, &identifiers))
                .filter_map(|r| Relationship::from_resource(r, &self.rules.level_extension))
                .filter(|r| &r.patient == patient)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let revoked = self.revoked(patient, bearer, now).await?;
            let mine: Vec<Relationship> = mine
                .into_iter()
                .filter(|r| !revoked.contains(&r.id))
                .collect();
            let birth = self.birth_date(patient, bearer).await?;
            if let Some(grant) = mine
                .iter()
                .find_map(|r| self.rules.decide(r, birth, now).ok())
            {
                kept.push(patient.clone());
                grants.push(grant);
            }
        }
        // Keep the token's order.
        principal.patients.retain(|p| kept.contains(p));
        grants.sort_by_key(|g| principal.patients.iter().position(|p| *p == g.patient));
        principal.proxies = grants;
        Ok(principal)
    }

    fn request(
        &self,
        request: FhirRequest,
        patient: &str,
        bearer: Option<&SecretString>,
    ) -> FhirRequest {
        let request = request.with_partition(CachePartition::new([patient], LOOKUP_SCOPE));
        match bearer {
            Some(token) => request.with_bearer(token.clone()),
            None => request,
        }
    }

    async fn birth_date(
        &self,
        patient: &str,
        bearer: Option<&SecretString>,
    ) -> Result<Option<chrono::NaiveDate>, DelegationError> {
        Ok(self
            .read_patient(patient, bearer)
            .await?
            .as_ref()
            .and_then(|p| p.get("birthDate"))
            .and_then(Value::as_str)
            .and_then(parse_date))
    }

    /// The patient, or `None` when the EHR has no such patient.
    async fn read_patient(
        &self,
        patient: &str,
        bearer: Option<&SecretString>,
    ) -> Result<Option<Value>, DelegationError> {
        let request = self.request(FhirRequest::read("Patient", patient), patient, bearer);
        match self.upstream.execute(request).await {
            Ok(response) => {
                let value = response.json()?;
                Ok(
                    (value.get("resourceType").and_then(Value::as_str) == Some("Patient")
                        && value.get("id").and_then(Value::as_str) == Some(patient))
                    .then_some(value),
                )
            }
            Err(UpstreamError::NotFound { .. } | UpstreamError::Gone { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The relationships `patient`'s active Consents deny now (none unless revocations
    /// are Consents).
    async fn revoked(
        &self,
        patient: &str,
        bearer: Option<&SecretString>,
        now: DateTime<Utc>,
    ) -> Result<BTreeSet<String>, DelegationError> {
        if !self.consents {
            return Ok(BTreeSet::new());
        }
        let consents = self
            .search(
                "Consent",
                patient,
                &[("status", "active".to_owned())],
                bearer,
            )
            .await?;
        Ok(denied_by_consents(&consents, now))
    }

    /// `RelatedPerson?patient=<patient>`, first page of up to 100.
    async fn related_persons(
        &self,
        patient: &str,
        bearer: Option<&SecretString>,
    ) -> Result<Vec<Value>, DelegationError> {
        self.search("RelatedPerson", patient, &[], bearer).await
    }

    /// `<rt>?patient=<patient>&...`, the first page of up to 100 resources of `rt`.
    async fn search(
        &self,
        rt: &str,
        patient: &str,
        extra: &[(&str, String)],
        bearer: Option<&SecretString>,
    ) -> Result<Vec<Value>, DelegationError> {
        let mut params = vec![
            ("patient".to_owned(), format!("Patient/{patient}")),
            ("_count".to_owned(), "100".to_owned()),
        ];
        params.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let search = FhirRequest::search(rt, params);
        let response = self
            .upstream
            .execute(self.request(search, patient, bearer))
            .await?;
        let bundle = response.json()?;
        Ok(bundle
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource"))
            .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some(rt))
            .cloned()
            .collect())
    }
}

/// How the login is known in the EHR.
enum Login {
    /// `fhirUser` is this `RelatedPerson`.
    RelatedPerson(String),
    /// `fhirUser` is a patient whose `link`s name these `RelatedPerson`s.
    Patient(BTreeSet<String>),
}

impl Login {
    /// Whether the `RelatedPerson` `r` is this login's.
    fn owns(&self, r: &Value, identifiers: &BTreeSet<String>) -> bool {
        let Some(id) = r.get("id").and_then(Value::as_str) else {
            return false;
        };
        match self {
            Login::RelatedPerson(me) => {
                id == me
                    || (!identifiers.is_empty() && !identifier_keys(r).is_disjoint(identifiers))
            }
            Login::Patient(linked) => linked.contains(id),
        }
    }
}

/// `system|value` of each identifier with both.
fn identifier_keys(resource: &Value) -> BTreeSet<String> {
    resource
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let system = i.get("system")?.as_str()?;
            let value = i.get("value")?.as_str()?;
            (!system.is_empty() && !value.is_empty()).then(|| format!("{system}|{value}"))
        })
        .collect()
}

/// The `RelatedPerson` ids a patient's `link`s name (relative references only).
fn linked_related_persons(patient: Option<&Value>) -> BTreeSet<String> {
    patient
        .and_then(|p| p.get("link"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("other")?.get("reference")?.as_str())
        .filter_map(|r| Reference::parse(r).ok())
        .filter(|r| r.resource_type == "RelatedPerson" && r.base.is_none())
        .map(|r| r.id)
        .collect()
}
