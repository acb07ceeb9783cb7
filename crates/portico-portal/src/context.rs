//! The portal's way to the EHR: [`Portal`] (shared, built once) and [`Ctx`] (one
//! patient's request).
//!
//! Every upstream call of every portal action goes through [`Ctx`], which keeps the
//! gateway's invariants in one place:
//! - searches are narrowed by the access policy to the acting patient's compartment, and
//!   every resource that comes back is verified again ([`Policy::verify_bundle`]);
//!   reads of another patient's resource are [`PortalError::NotFound`];
//! - writes pass the same write rules as the FHIR facade ([`Policy::authorize_write`]),
//!   carry a business identifier derived from the idempotency key, and are sent with
//!   `If-None-Exist` so that an upstream retry cannot duplicate them; when the EHR
//!   fails after a create may have been applied, the create is reconciled by searching
//!   its identifier ([`Ctx::create`]);
//! - each call is audited (who, what type and id, allowed or denied, upstream status);
//! - requests carry the cache partition (patient + scopes), the request id and, in
//!   passthrough mode, the patient's own token.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use portico_access::audit::{AuditRecord, AuditSink, Decision};
use portico_access::{Interaction, Policy, Principal, ReferenceResolver, ResolveError, WriteError};
use portico_fhir::reference::Reference;
use portico_upstream::{
    CachePartition, Derived, FhirRequest, FhirResponse, FhirUpstream, ReturnPreference,
    SecretString, UpstreamError,
};
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::payments::PaymentProcessor;
use crate::profile::EhrProfile;

/// The identifier system of the business identifiers Portico puts on what it creates.
pub const IDENTIFIER_SYSTEM: &str = "urn:ietf:rfc:3986";

/// The most entries [`Ctx::search_all`] collects, whatever the caller asks.
pub const MAX_COLLECTED: usize = 1000;

/// The most pages one collected search follows ([`Ctx::search_all`],
/// [`crate::whole::search_whole`]): an EHR whose `next` links never end, or that ignores
/// `_count` with tiny pages, gets no more requests than this.
pub const MAX_PAGES: usize = 100;

/// How long an offer made by an operation (a proposed appointment from `$find`) may be
/// acted on through this gateway.
pub const OFFER_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Where "now" comes from; tests fix it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every portal request shares. Cheap to clone.
#[derive(Clone)]
pub struct Portal {
    upstream: Arc<dyn FhirUpstream>,
    policy: Policy,
    profile: Arc<EhrProfile>,
    audit: Arc<dyn AuditSink>,
    payments: Arc<dyn PaymentProcessor>,
    clock: Clock,
    locks: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
    /// The EHR without the read cache, for checks that must see the present
    /// ([`Ctx::slot_is_held`]); `upstream` when not set.
    uncached: Option<Arc<dyn FhirUpstream>>,
    /// What an operation such as `Appointment/$find` offered each patient, by
    /// (patient, type, id), so that only an offer made to this patient can be acted on
    /// later (see [`Ctx::remember_offers`]).
    offers: moka::sync::Cache<(String, String, String), Arc<Value>>,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("profile", &self.profile.name)
            .finish_non_exhaustive()
    }
}

impl Portal {
    pub fn new(
        upstream: Arc<dyn FhirUpstream>,
        policy: Policy,
        profile: EhrProfile,
        audit: Arc<dyn AuditSink>,
        payments: Arc<dyn PaymentProcessor>,
    ) -> Portal {
        Portal {
            upstream,
            policy,
            profile: Arc::new(profile),
            audit,
            payments,
            clock: Arc::new(Utc::now),
            // Bounded: a flood of distinct keys evicts idle locks (the EHR stays the
            // arbiter of conflicts; the lock only spares it the obvious ones).
            locks: moka::sync::Cache::builder()
                .time_to_idle(Duration::from_secs(300))
                .max_capacity(100_000)
                .build(),
            offers: moka::sync::Cache::builder()
                .time_to_live(OFFER_LIFETIME)
                .max_capacity(100_000)
                .build(),
            uncached: None,
        }
    }

    /// The upstream to use, without the cache, for checks that must not be answered from
    /// it.
    pub fn with_uncached(mut self, upstream: Arc<dyn FhirUpstream>) -> Portal {
        self.uncached = Some(upstream);
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Portal {
        self.clock = clock;
        self
    }

    pub fn profile(&self) -> &EhrProfile {
        &self.profile
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn payments(&self) -> &dyn PaymentProcessor {
        self.payments.as_ref()
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Serializes actions on one key inside this gateway process (for example two
    /// bookings of the same slot: the second re-checks the slot after the first has
    /// booked it). The EHR remains the arbiter across replicas.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let mutex = self
            .locks
            .get_with(key.to_owned(), || Arc::new(tokio::sync::Mutex::new(())));
        mutex.lock_owned().await
    }

    /// A request context for one caller.
    pub fn ctx<'a>(&'a self, caller: &'a Caller) -> Ctx<'a> {
        Ctx {
            portal: self,
            caller,
        }
    }
}

/// Who is acting, for one request.
#[derive(Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The acting patient: one of `principal.patients`.
    pub patient: String,
    /// The patient's own token, sent upstream only in passthrough mode.
    pub bearer: Option<SecretString>,
    pub request_id: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The caller acting for `patient`, who must be one of the principal's patients.
    pub fn new(principal: Arc<Principal>, patient: Option<&str>) -> PortalResult<Caller> {
        let patient = match patient {
            Some(p) if principal.patients.iter().any(|q| q == p) => p.to_owned(),
            // Not told apart from "no such patient".
            Some(_) => return Err(PortalError::NotFound),
            None => match principal.patients.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(PortalError::Forbidden {
                        message: "the login has no patient context".to_owned(),
                    });
                }
                _ => {
                    return Err(PortalError::Invalid {
                        code: "patient_required",
                        message: "this login may act for several patients: choose one with \
                                  the Portico-Patient header"
                            .to_owned(),
                    });
                }
            },
        };
        Ok(Caller {
            principal,
            patient,
            bearer: None,
            request_id: None,
        })
    }

    /// `Patient/<id>` of the acting patient.
    pub fn patient_reference(&self) -> String {
        format!("Patient/{}", self.patient)
    }
}

/// A resource as read or written, with its version.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub resource: Value,
    /// `meta.versionId` or the ETag's version.
    pub version: Option<String>,
    /// Set when served from an expired cache entry because the EHR is failing.
    pub stale: Option<Duration>,
}

impl Versioned {
    pub fn id(&self) -> Option<&str> {
        self.resource.get("id").and_then(Value::as_str)
    }
}

/// What a verified [`Page`] kept in a cache entry's slot is taken to weigh, as a
/// multiple of the Bundle's JSON size: parsed `serde_json` values of FHIR JSON (short
/// strings in ordered maps) take several times their text.
const PAGE_WEIGHT_FACTOR: usize = 6;

/// One page of search results, verified.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// `search.mode = match` entries (or entries without a mode), in order.
    pub matches: Vec<Value>,
    /// `_include`d / `_revinclude`d entries.
    pub included: Vec<Value>,
    /// The upstream `next` link (opaque; never shown to a client as is).
    pub next: Option<String>,
    pub total: Option<u64>,
    /// Entries the policy removed (never shown; counted for the audit).
    pub removed: usize,
    /// Set when any page came from an expired cache entry.
    pub stale: bool,
    /// `OperationOutcome` entries of the Bundle (warnings, or why an operation failed).
    pub outcomes: Vec<Value>,
    /// The EHR's answer was not a Bundle and the policy replaced it with an empty
    /// searchset: "no matches" here is not the EHR's word.
    pub replaced: bool,
}

impl Page {
    /// Moves a verified Bundle's entries into the page: `OperationOutcome`s to
    /// `outcomes`, `search.mode = include` to `included`, the rest to `matches`.
    fn take_entries(&mut self, bundle: &mut Value) {
        let Some(Value::Array(entries)) = bundle.get_mut("entry") else {
            return;
        };
        for mut entry in entries.drain(..) {
            let Some(resource) = entry.get_mut("resource").map(Value::take) else {
                continue;
            };
            let include = entry.pointer("/search/mode").and_then(Value::as_str) == Some("include");
            if resource.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") {
                self.outcomes.push(resource);
            } else if include {
                self.included.push(resource);
            } else {
                self.matches.push(resource);
            }
        }
    }

    /// Adds the next page of the same search to this one (its `next` link replaces
    /// this one's).
    pub fn append(&mut self, page: Page) {
        self.matches.extend(page.matches);
        self.included.extend(page.included);
        self.removed += page.removed;
        self.stale |= page.stale;
        self.replaced |= page.replaced;
        self.outcomes.extend(page.outcomes);
        self.next = page.next;
    }

    /// The included resource a reference points to (`Practitioner/1`), if any.
    pub fn included(&self, reference: &str) -> Option<&Value> {
        let r = Reference::parse(reference).ok()?;
        self.included.iter().chain(self.matches.iter()).find(|v| {
            v.get("resourceType").and_then(Value::as_str) == Some(r.resource_type.as_str())
                && v.get("id").and_then(Value::as_str) == Some(r.id.as_str())
        })
    }
}

/// A verified page as [`Ctx::search_shared`] hands it out: shared, not copied, with the
/// cache entry's [`Derived`] slot when the page came from a cache hit (for a caller that
/// keeps what it builds from the page, under a key naming everything else it depends
/// on). The slot is not inside the kept page: that would be a reference cycle.
#[derive(Debug, Clone)]
pub struct SharedPage {
    pub page: Arc<Page>,
    pub slot: Option<Derived>,
}

/// One caller's way to the EHR.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub portal: &'a Portal,
    pub caller: &'a Caller,
}

impl<'a> Ctx<'a> {
    pub fn profile(&self) -> &'a EhrProfile {
        &self.portal.profile
    }

    pub fn patient(&self) -> &'a str {
        &self.caller.patient
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.portal.now()
    }

    fn prepare(&self, request: FhirRequest) -> FhirRequest {
        let mut request = request;
        if let Some(id) = &self.caller.request_id {
            request = request.with_request_id(id.clone());
        }
        if let Some(token) = &self.caller.bearer {
            request = request.with_bearer(token.clone());
        }
        request.with_partition(CachePartition::new(
            self.caller.principal.patients.iter().cloned(),
            self.caller.principal.scopes.fingerprint(),
        ))
    }

    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        self.portal.upstream.execute(self.prepare(request)).await
    }

    async fn audit(
        &self,
        interaction: Interaction,
        resource_type: &str,
        id: Option<&str>,
        outcome: AuditOutcome<'_>,
    ) {
        let mut r = AuditRecord::new(
            Some(&self.caller.principal),
            interaction,
            Some(resource_type),
        );
        if let Some(id) = id {
            r = r.with_resource_id(id);
        }
        if let Some(rid) = &self.caller.request_id {
            r = r.with_request_id(rid.clone());
        }
        match outcome {
            AuditOutcome::Allowed { status, removed } => {
                if let Some(s) = status {
                    r = r.with_upstream_status(s);
                }
                if removed > 0 {
                    r = r.with_removed_entries(removed);
                }
            }
            AuditOutcome::Denied(denial) => r = r.denied(denial),
            AuditOutcome::Failed(status) => {
                r.decision = Decision::Denied;
                if let Some(s) = status {
                    r = r.with_upstream_status(s);
                }
            }
        }
        if let Err(e) = self.portal.audit.record(&r).await {
            tracing::error!(error = %e, "audit record could not be written");
        }
    }

    // -----------------------------------------------------------------------------
    // Reads

    /// Reads `rt/id`; anything the acting patient may not see is `NotFound`.
    pub async fn read(&self, rt: &str, id: &str) -> PortalResult<Versioned> {
        if !portico_fhir::reference::is_valid_id(id) {
            return Err(PortalError::NotFound);
        }
        let response = match self.execute(FhirRequest::read(rt, id)).await {
            Ok(r) => r,
            Err(e) => {
                self.audit(
                    Interaction::Read,
                    rt,
                    Some(id),
                    AuditOutcome::Failed(e.status()),
                )
                .await;
                return Err(PortalError::from_read(e));
            }
        };
        let resource = response.json()?;
        if let Err(denial) = self.portal.policy.check_read_at(
            &self.caller.principal,
            &Reference::new(rt, id),
            &resource,
        ) {
            self.audit(
                Interaction::Read,
                rt,
                Some(id),
                AuditOutcome::Denied(&denial),
            )
            .await;
            return Err(PortalError::NotFound);
        }
        // A proxy may read several patients' data; the portal acts for one at a time.
        if !self.belongs_to_patient(&resource) {
            return Err(PortalError::NotFound);
        }
        self.audit(
            Interaction::Read,
            rt,
            Some(id),
            AuditOutcome::Allowed {
                status: Some(response.status),
                removed: 0,
            },
        )
        .await;
        Ok(Versioned {
            version: version_of(&resource, &response),
            stale: response.stale_age,
            resource,
        })
    }

    /// Whether a resource the policy let through is the acting patient's (or shared
    /// reference data). With one patient per principal this always holds.
    fn belongs_to_patient(&self, resource: &Value) -> bool {
        self.portal
            .policy
            .check_read(&self.acting(), resource)
            .is_ok()
    }

    /// The principal narrowed to the acting patient: their compartment only. A
    /// `fhirUser` naming another patient (a parent's own record, for a parent acting
    /// for a child) is dropped, since the policy counts it as one of the principal's own
    /// patients.
    fn acting(&self) -> Principal {
        let principal = &self.caller.principal;
        let fhir_user = principal
            .fhir_user
            .as_ref()
            .filter(|r| r.resource_type != "Patient" || r.id == self.caller.patient)
            .cloned();
        Principal {
            patients: vec![self.caller.patient.clone()],
            fhir_user,
            ..(**principal).clone()
        }
    }

    /// One page of a type-level search. The policy narrows the parameters to the acting
    /// patient's compartment (or refuses them); every entry is verified.
    pub async fn search(&self, rt: &str, params: &[(&str, String)]) -> PortalResult<Page> {
        Ok(Arc::unwrap_or_clone(
            self.search_shared(rt, params).await?.page,
        ))
    }

    /// [`Ctx::search`] for a caller that only reads the page: on a cache hit it gets
    /// the page verified earlier for the same principal without a copy.
    pub async fn search_shared(
        &self,
        rt: &str,
        params: &[(&str, String)],
    ) -> PortalResult<SharedPage> {
        let mut params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let only_me = self.acting();
        params = match self.portal.policy.narrow_search(&only_me, rt, &params) {
            Ok(p) => p,
            Err(denial) => {
                self.audit(Interaction::Search, rt, None, AuditOutcome::Denied(&denial))
                    .await;
                return Err(PortalError::Forbidden {
                    message: denial.message().to_owned(),
                });
            }
        };
        let response = match self.execute(FhirRequest::search(rt, params)).await {
            Ok(r) => r,
            Err(e) => {
                self.audit(
                    Interaction::Search,
                    rt,
                    None,
                    AuditOutcome::Failed(e.status()),
                )
                .await;
                return Err(PortalError::Upstream(e));
            }
        };
        self.page_from(rt, &only_me, response).await
    }

    /// The page behind an upstream `next` link from an earlier [`Page`].
    pub async fn search_page(&self, rt: &str, url: &str) -> PortalResult<Page> {
        Ok(Arc::unwrap_or_clone(
            self.search_page_shared(rt, url).await?.page,
        ))
    }

    /// [`Ctx::search_page`] without a copy of a page kept from an earlier hit.
    pub async fn search_page_shared(&self, rt: &str, url: &str) -> PortalResult<SharedPage> {
        let only_me = self.acting();
        let response = match self.execute(FhirRequest::search_page(url)).await {
            Ok(r) => r,
            Err(e) => {
                self.audit(
                    Interaction::Search,
                    rt,
                    None,
                    AuditOutcome::Failed(e.status()),
                )
                .await;
                return Err(PortalError::Upstream(e));
            }
        };
        self.page_from(rt, &only_me, response).await
    }

    async fn page_from(
        &self,
        rt: &str,
        only_me: &Principal,
        response: FhirResponse,
    ) -> PortalResult<SharedPage> {
        // A cache hit on an entry this principal has read before: the page as it was
        // verified then (verification is a function of the body and the principal, and
        // the entry's slot dies with the entry). Only fresh hits carry a slot, so a kept
        // page is never stale. Audited like any other answer.
        let slot = response.derived.as_ref();
        let key = slot.map(|_| format!("portal\n{}", only_me.fingerprint()));
        if let (Some(slot), Some(key)) = (slot, &key)
            && let Some(verified) = slot.get::<Page>(key)
        {
            self.audit(
                Interaction::Search,
                rt,
                None,
                AuditOutcome::Allowed {
                    status: Some(response.status),
                    removed: verified.removed,
                },
            )
            .await;
            return Ok(SharedPage {
                page: verified,
                slot: Some(slot.clone()),
            });
        }
        let bundle = response.json()?;
        let page = Arc::new(
            self.verified_page(Interaction::Search, rt, only_me, bundle, &response)
                .await,
        );
        if let (Some(slot), Some(key)) = (slot, key) {
            slot.set(
                key,
                page.clone(),
                response.body.len().saturating_mul(PAGE_WEIGHT_FACTOR),
            );
        }
        Ok(SharedPage {
            page,
            slot: response.derived,
        })
    }

    /// Verifies a Bundle the EHR answered (a search page, or an operation's result made
    /// a Bundle) for `only_me` and sorts it into a [`Page`]; audited as `interaction`.
    async fn verified_page(
        &self,
        interaction: Interaction,
        rt: &str,
        only_me: &Principal,
        mut bundle: Value,
        response: &FhirResponse,
    ) -> Page {
        let report = self.portal.policy.verify_bundle(only_me, &mut bundle);
        self.audit(
            interaction,
            rt,
            None,
            AuditOutcome::Allowed {
                status: Some(response.status),
                removed: report.removed,
            },
        )
        .await;
        let mut page = Page {
            removed: report.removed,
            replaced: report.replaced,
            stale: response.stale_age.is_some(),
            total: bundle.get("total").and_then(Value::as_u64),
            next: portico_fhir::bundle::link(&bundle, "next").map(str::to_owned),
            ..Page::default()
        };
        page.take_entries(&mut bundle);
        page
    }

    /// Every match of a search, following `next` links, up to `limit` (at most
    /// [`MAX_COLLECTED`]) matches.
    ///
    /// A page the EHR answered with something other than a Bundle (which the policy
    /// replaces with an empty one) is an upstream error here, not "no matches": the
    /// callers (balances, thread lists, request lists) would otherwise show nothing as
    /// if there were nothing.
    pub async fn search_all(
        &self,
        rt: &str,
        params: &[(&str, String)],
        limit: usize,
    ) -> PortalResult<Page> {
        let limit = limit.min(MAX_COLLECTED);
        let first = self.search(rt, params).await?;
        let mut all = self
            .follow(rt, first, |page| {
                page.matches.len() < limit && !page.replaced
            })
            .await?;
        if all.replaced {
            return Err(PortalError::Upstream(UpstreamError::MalformedBody {
                detail: format!(
                    "the EHR answered a {rt} search with something other than a Bundle"
                ),
            }));
        }
        all.matches.truncate(limit);
        Ok(all)
    }

    /// Follows `next` links from `all`, appending each page, while `more` says so and for
    /// at most [`MAX_PAGES`] pages in all; a `next` link not followed is left in place.
    pub(crate) async fn follow(
        &self,
        rt: &str,
        mut all: Page,
        more: impl Fn(&Page) -> bool,
    ) -> PortalResult<Page> {
        let mut pages = 1;
        while pages < MAX_PAGES && more(&all) {
            let Some(next) = all.next.take() else { break };
            all.append(self.search_page(rt, &next).await?);
            pages += 1;
        }
        Ok(all)
    }

    // -----------------------------------------------------------------------------
    // Writes

    /// Checks a write the portal built against the patient write rules (the same as
    /// the facade's), verifying referenced compartment resources upstream.
    pub async fn authorize(
        &self,
        interaction: Interaction,
        rt: &str,
        new: &Value,
        current: Option<&Value>,
    ) -> PortalResult<()> {
        let only_me = self.acting();
        let resolver = Resolver { ctx: *self };
        match self
            .portal
            .policy
            .authorize_write(&only_me, interaction, rt, new, current, &resolver)
            .await
        {
            Ok(()) => Ok(()),
            Err(WriteError::Denied(denial)) => {
                self.audit(interaction, rt, None, AuditOutcome::Denied(&denial))
                    .await;
                Err(PortalError::Forbidden {
                    message: denial.message().to_owned(),
                })
            }
            Err(WriteError::Resolve(e)) => {
                tracing::warn!(error = %e, "could not check a referenced resource");
                Err(PortalError::Upstream(UpstreamError::Protocol {
                    detail: "a referenced resource could not be checked".to_owned(),
                }))
            }
        }
    }

    /// Creates a resource the patient is allowed to write (checked with
    /// [`Ctx::authorize`]), exactly once per idempotency key: the body gets the key's
    /// business identifier, the create is conditional (`If-None-Exist`), and when the
    /// EHR fails after the create may have happened, the identifier is searched to tell.
    pub async fn create(&self, rt: &str, body: Value, idem: &Idem) -> PortalResult<Versioned> {
        let body = with_identifier(body, idem);
        self.authorize(Interaction::Create, rt, &body, None).await?;
        self.create_unchecked(rt, body, idem).await
    }

    /// Creates a record the gateway itself authors for the patient after checking the
    /// action in domain code (a payment record after the processor charged the card:
    /// `PaymentReconciliation` and `Basic` have no patient write rule). Same exactly-once
    /// handling as [`Ctx::create`].
    pub async fn create_record(
        &self,
        rt: &str,
        body: Value,
        idem: &Idem,
    ) -> PortalResult<Versioned> {
        let body = with_identifier(body, idem);
        self.create_unchecked(rt, body, idem).await
    }

    async fn create_unchecked(
        &self,
        rt: &str,
        body: Value,
        idem: &Idem,
    ) -> PortalResult<Versioned> {
        let request = FhirRequest::create(rt, Bytes::from(body.to_string()))
            .with_if_none_exist(idem.search_query())
            .with_prefer(ReturnPreference::Representation);
        match self.execute(request).await {
            Ok(response) => {
                self.audit(
                    Interaction::Create,
                    rt,
                    None,
                    AuditOutcome::Allowed {
                        status: Some(response.status),
                        removed: 0,
                    },
                )
                .await;
                self.written(rt, response).await
            }
            Err(e) if outcome_unknown(&e) => {
                self.audit(
                    Interaction::Create,
                    rt,
                    None,
                    AuditOutcome::Failed(e.status()),
                )
                .await;
                tracing::warn!(error = %e, resource_type = rt, "create failed mid-flight; reconciling by identifier");
                self.reconcile(rt, idem, e).await
            }
            Err(e) => {
                self.audit(
                    Interaction::Create,
                    rt,
                    None,
                    AuditOutcome::Failed(e.status()),
                )
                .await;
                Err(PortalError::Upstream(e))
            }
        }
    }

    /// Whether any live appointment — of any patient — holds `slot_id`. A plain FHIR
    /// store does not mark a booked Slot busy, so the Slot's own status cannot be the
    /// only check before booking. This one search goes upstream without the patient
    /// restriction and without the cache; only the yes/no leaves this method (nothing of
    /// another patient's is returned, logged or cached). If the EHR cannot answer it
    /// (an unsupported parameter), the Slot's status and the EHR remain the arbiters.
    pub async fn slot_is_held(&self, slot_id: &str) -> bool {
        let request = FhirRequest::search(
            "Appointment",
            vec![
                ("slot".to_owned(), format!("Slot/{slot_id}")),
                (
                    "status".to_owned(),
                    "proposed,pending,booked,arrived,checked-in,waitlist".to_owned(),
                ),
                ("_count".to_owned(), "50".to_owned()),
            ],
        );
        let mut request = request;
        if let Some(id) = &self.caller.request_id {
            request = request.with_request_id(id.clone());
        }
        if let Some(token) = &self.caller.bearer {
            request = request.with_bearer(token.clone());
        }
        let upstream = self
            .portal
            .uncached
            .as_ref()
            .unwrap_or(&self.portal.upstream);
        let answer = upstream.execute(request).await;
        self.audit(
            Interaction::Search,
            "Appointment",
            Some(slot_id),
            match &answer {
                Ok(r) => AuditOutcome::Allowed {
                    status: Some(r.status),
                    removed: 0,
                },
                Err(e) => AuditOutcome::Failed(e.status()),
            },
        )
        .await;
        match answer.and_then(|r| r.json()) {
            // Only an entry that really references the slot counts: a server that
            // ignores the `slot` parameter answers with unrelated appointments.
            Ok(bundle) => {
                let wanted = Reference::new("Slot", slot_id);
                portico_fhir::bundle::resources(&bundle)
                    .filter(|r| {
                        r.get("resourceType").and_then(Value::as_str) == Some("Appointment")
                    })
                    .flat_map(|r| portico_fhir::json::references_at(r, "slot"))
                    .any(|r| Reference::parse(r).is_ok_and(|r| r == wanted))
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check whether a slot is held; relying on its status");
                false
            }
        }
    }

    /// Finds what a create with this identifier made, if anything.
    pub async fn find_by_identifier(&self, rt: &str, idem: &Idem) -> PortalResult<Option<Value>> {
        let params = [("identifier", idem.token())];
        let page = self.search(rt, &params).await?;
        Ok(page.matches.into_iter().next())
    }

    /// After a create failed in a way that may have left it applied: looks for it by
    /// its identifier, twice, giving a create still being applied time to land. Found:
    /// the create happened. Not found after the EHR itself answered with an error: it
    /// did not happen, and the client is told so. Anything else (a timeout, a broken
    /// connection, a garbled answer, or the search failing too): the outcome is unknown,
    /// and a retry with the same key is safe (`If-None-Exist` on the identifier).
    async fn reconcile(
        &self,
        rt: &str,
        idem: &Idem,
        failure: UpstreamError,
    ) -> PortalResult<Versioned> {
        let mut searched_clean = true;
        for delay in [Duration::from_millis(200), Duration::from_millis(800)] {
            tokio::time::sleep(delay).await;
            match self.find_by_identifier(rt, idem).await {
                Ok(Some(resource)) => {
                    return Ok(Versioned {
                        version: version_of(&resource, &FhirResponse::new(200, Bytes::new())),
                        stale: None,
                        resource,
                    });
                }
                Ok(None) => {}
                Err(_) => searched_clean = false,
            }
        }
        if searched_clean && matches!(failure, UpstreamError::Server { .. }) {
            return Err(PortalError::Upstream(failure));
        }
        Err(PortalError::OutcomeUnknown {
            action: action_name(rt),
        })
    }

    /// The resource a write answered with: the returned body, or read back from
    /// `Location` when the EHR answered with an empty body (Cerner).
    async fn written(&self, rt: &str, response: FhirResponse) -> PortalResult<Versioned> {
        if !response.body.is_empty()
            && let Ok(resource) = response.json()
            && resource.get("resourceType").and_then(Value::as_str) == Some(rt)
        {
            if self
                .portal
                .policy
                .check_read(&self.caller.principal, &resource)
                .is_err()
            {
                return Err(PortalError::NotFound);
            }
            return Ok(Versioned {
                version: version_of(&resource, &response),
                stale: None,
                resource,
            });
        }
        let location = response.location_reference().ok_or_else(|| {
            PortalError::Upstream(UpstreamError::Protocol {
                detail: "the EHR answered a write with neither a body nor a Location".to_owned(),
            })
        })?;
        self.read(&location.resource_type, &location.id).await
    }

    /// Applies a JSON Patch to `rt/id` at `version` (`If-Match`), after checking the
    /// patched resource against the write rules. Returns the resource as written.
    pub async fn patch(
        &self,
        rt: &str,
        current: &Versioned,
        patch: Value,
        patched: &Value,
    ) -> PortalResult<Versioned> {
        let id = current.id().ok_or(PortalError::NotFound)?.to_owned();
        self.authorize(Interaction::Patch, rt, patched, Some(&current.resource))
            .await?;
        let mut request = FhirRequest::patch(rt, &id, Bytes::from(patch.to_string()))
            .with_prefer(ReturnPreference::Representation);
        if let Some(v) = &current.version {
            request = request.with_if_match_version(v);
        }
        self.send_update(Interaction::Patch, rt, &id, request).await
    }

    /// Replaces `rt/id` at `version` (`If-Match`), after checking it against the write
    /// rules.
    pub async fn update(
        &self,
        rt: &str,
        current: &Versioned,
        new: Value,
    ) -> PortalResult<Versioned> {
        let id = current.id().ok_or(PortalError::NotFound)?.to_owned();
        self.authorize(Interaction::Update, rt, &new, Some(&current.resource))
            .await?;
        let mut request = FhirRequest::update(rt, &id, Bytes::from(new.to_string()))
            .with_prefer(ReturnPreference::Representation);
        if let Some(v) = &current.version {
            request = request.with_if_match_version(v);
        }
        self.send_update(Interaction::Update, rt, &id, request)
            .await
    }

    async fn send_update(
        &self,
        interaction: Interaction,
        rt: &str,
        id: &str,
        request: FhirRequest,
    ) -> PortalResult<Versioned> {
        match self.send_write(interaction, rt, id, request).await {
            Ok(written) => written,
            // Cerner answers a wrong version with 409, the spec with 412.
            Err(UpstreamError::PreconditionFailed { .. } | UpstreamError::Conflict { .. }) => {
                Err(version_conflict())
            }
            Err(other) => Err(PortalError::from_read(other)),
        }
    }

    /// Sends an update or patch and audits it: `Err` is the EHR's refusal or failure
    /// (for the caller to classify), `Ok` the written resource (or why it could not be
    /// read back).
    async fn send_write(
        &self,
        interaction: Interaction,
        rt: &str,
        id: &str,
        request: FhirRequest,
    ) -> Result<PortalResult<Versioned>, UpstreamError> {
        match self.execute(request).await {
            Ok(response) => {
                self.audit(
                    interaction,
                    rt,
                    Some(id),
                    AuditOutcome::Allowed {
                        status: Some(response.status),
                        removed: 0,
                    },
                )
                .await;
                if response.body.is_empty() {
                    return Ok(self.read(rt, id).await);
                }
                Ok(self.written(rt, response).await)
            }
            Err(e) => {
                self.audit(interaction, rt, Some(id), AuditOutcome::Failed(e.status()))
                    .await;
                Err(e)
            }
        }
    }

    /// Applies a JSON Patch that the patient write rules do not allow in general but a
    /// domain rule allows for this action (moving the patient's own booked appointment
    /// to another slot, Cerner style), with `If-Match`:
    /// - `current` must be the acting patient's (as [`Ctx::read`] or a search returned
    ///   it; checked again here, else `NotFound`);
    /// - the patch is applied locally to `current`; the result must still be the
    ///   patient's, and `rule(current, patched)` must accept it, else nothing is sent;
    /// - the patient's token must allow patching `rt` (the scope check of any write).
    ///
    /// Errors: a wrong version (412) is `version_conflict`; a 409 is returned as
    /// `PortalError::Upstream(UpstreamError::Conflict)` because EHRs use it both for a
    /// wrong version (Cerner) and for a business conflict (the slot is taken): the
    /// caller tells them apart by reading the resource again.
    pub async fn patch_with_rule(
        &self,
        rt: &str,
        current: &Versioned,
        patch: Value,
        rule: impl FnOnce(&Value, &Value) -> PortalResult<()>,
    ) -> PortalResult<Versioned> {
        let only_me = self.acting();
        let id = current.id().ok_or(PortalError::NotFound)?.to_owned();
        if current.resource.get("resourceType").and_then(Value::as_str) != Some(rt)
            || self
                .portal
                .policy
                .check_read(&only_me, &current.resource)
                .is_err()
        {
            self.audit(
                Interaction::Patch,
                rt,
                Some(&id),
                AuditOutcome::Failed(None),
            )
            .await;
            return Err(PortalError::NotFound);
        }
        let allowed = self
            .caller
            .principal
            .scopes
            .permission(
                portico_access::scopes::Context::Patient,
                rt,
                Interaction::Patch,
            )
            .is_allowed();
        if !allowed {
            self.audit(
                Interaction::Patch,
                rt,
                Some(&id),
                AuditOutcome::Failed(None),
            )
            .await;
            return Err(PortalError::Forbidden {
                message: format!("the login may not change {rt} resources"),
            });
        }
        let operations: json_patch::Patch = serde_json::from_value(patch.clone())
            .map_err(|_| PortalError::invalid("the change is not a JSON Patch"))?;
        let mut patched = current.resource.clone();
        json_patch::patch(&mut patched, &operations)
            .map_err(|_| PortalError::invalid("the change cannot be applied to the resource"))?;
        let still_mine = patched.get("id") == current.resource.get("id")
            && patched.get("resourceType") == current.resource.get("resourceType")
            && self.portal.policy.check_read(&only_me, &patched).is_ok();
        let verdict = if still_mine {
            rule(&current.resource, &patched)
        } else {
            Err(PortalError::Forbidden {
                message: "the change would take the resource out of the patient's record"
                    .to_owned(),
            })
        };
        if let Err(e) = verdict {
            self.audit(
                Interaction::Patch,
                rt,
                Some(&id),
                AuditOutcome::Failed(None),
            )
            .await;
            return Err(e);
        }
        let mut request = FhirRequest::patch(rt, &id, Bytes::from(patch.to_string()))
            .with_prefer(ReturnPreference::Representation);
        if let Some(v) = &current.version {
            request = request.with_if_match_version(v);
        }
        match self.send_write(Interaction::Patch, rt, &id, request).await {
            Ok(written) => written,
            Err(UpstreamError::PreconditionFailed { .. }) => Err(version_conflict()),
            Err(e @ UpstreamError::Conflict { .. }) => Err(PortalError::Upstream(e)),
            Err(other) => Err(PortalError::from_read(other)),
        }
    }

    // -----------------------------------------------------------------------------
    // Operations

    /// Runs the FHIR operation `POST [rt]/$name` with a `Parameters` body and returns
    /// its result like a search page: a Bundle answer is verified entry by entry with
    /// the policy for the acting patient, exactly like [`Ctx::search`] (what names
    /// another patient is dropped and counted in `removed`); a `Parameters` answer's
    /// `return` resource and a bare resource are treated as a one-entry Bundle.
    /// `OperationOutcome`s land in [`Page::outcomes`]. Audited as `interaction` (a
    /// `$find` is a search, a `$book` a create). Never retried or cached upstream.
    ///
    /// The caller decides whether the patient may run the operation at all (for a
    /// write, check before calling: see [`Ctx::authorize`] and [`Ctx::offered`]).
    pub async fn operation(
        &self,
        rt: &str,
        name: &str,
        parameters: Value,
        interaction: Interaction,
    ) -> PortalResult<Page> {
        let request =
            FhirRequest::operation(Some(rt), None, name, Bytes::from(parameters.to_string()));
        let response = match self.execute(request).await {
            Ok(r) => r,
            Err(e) => {
                self.audit(interaction, rt, None, AuditOutcome::Failed(e.status()))
                    .await;
                return Err(PortalError::Upstream(e));
            }
        };
        let body = if response.body.is_empty() {
            Value::Null
        } else {
            response.json()?
        };
        let body = operation_result_bundle(body);
        Ok(self
            .verified_page(interaction, rt, &self.acting(), body, &response)
            .await)
    }

    /// Remembers what an operation offered the acting patient (for example the proposed
    /// Appointments of a `$find`) for [`OFFER_LIFETIME`], so that a later action on one
    /// of them can check it was offered to this patient.
    pub fn remember_offers(&self, offers: &[Value]) {
        for offer in offers {
            let (Some(rt), Some(id)) = (
                offer.get("resourceType").and_then(Value::as_str),
                offer.get("id").and_then(Value::as_str),
            ) else {
                continue;
            };
            self.portal.offers.insert(
                (self.caller.patient.clone(), rt.to_owned(), id.to_owned()),
                Arc::new(offer.clone()),
            );
        }
    }

    /// The offer `rt/id` this gateway made to the acting patient, if it is still valid.
    pub fn offered(&self, rt: &str, id: &str) -> Option<Value> {
        self.portal
            .offers
            .get(&(self.caller.patient.clone(), rt.to_owned(), id.to_owned()))
            .map(|v| (*v).clone())
    }
}

fn version_conflict() -> PortalError {
    PortalError::conflict(
        "version_conflict",
        "it changed since it was read; reload and try again",
    )
}

/// An operation's answer as a Bundle: a Bundle as is; a `Parameters` answer's `return`
/// resource (a Bundle, or one resource); one resource as a one-entry collection.
fn operation_result_bundle(body: Value) -> Value {
    let wrap = |resource: Value| {
        serde_json::json!({"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": resource}]})
    };
    match body.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => body,
        Some("Parameters") => {
            let returned = body
                .get("parameter")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some("return"))
                .and_then(|p| p.get("resource"))
                .cloned();
            match returned {
                Some(r) => operation_result_bundle(r),
                None => serde_json::json!({"resourceType": "Bundle", "type": "collection"}),
            }
        }
        Some(_) => wrap(body),
        // Not a resource: `verify_bundle` replaces it with an empty Bundle.
        None => body,
    }
}

enum AuditOutcome<'a> {
    Allowed { status: Option<u16>, removed: usize },
    Denied(&'a portico_access::Denial),
    Failed(Option<u16>),
}

struct Resolver<'a> {
    ctx: Ctx<'a>,
}

#[async_trait::async_trait]
impl ReferenceResolver for Resolver<'_> {
    async fn resolve(&self, reference: &Reference) -> Result<Option<Value>, ResolveError> {
        match self
            .ctx
            .execute(FhirRequest::read(&reference.resource_type, &reference.id))
            .await
        {
            Ok(r) => r.json().map(Some).map_err(|e| ResolveError(e.to_string())),
            Err(UpstreamError::NotFound { .. } | UpstreamError::Gone { .. }) => Ok(None),
            Err(e) => Err(ResolveError(e.to_string())),
        }
    }
}

/// Whether a failed create may nevertheless have been applied upstream.
pub(crate) fn outcome_unknown(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Timeout
            | UpstreamError::Connect { .. }
            | UpstreamError::Server { .. }
            | UpstreamError::MalformedBody { .. }
            | UpstreamError::Protocol { .. }
    )
}

fn version_of(resource: &Value, response: &FhirResponse) -> Option<String> {
    portico_fhir::json::version_id(resource)
        .map(str::to_owned)
        .or_else(|| response.version_id.clone())
}

/// Adds the idempotency identifier to a body (keeping any identifiers it has).
fn with_identifier(mut body: Value, idem: &Idem) -> Value {
    if let Some(obj) = body.as_object_mut() {
        let identifier = serde_json::json!({"system": IDENTIFIER_SYSTEM, "value": idem.value()});
        match obj.get_mut("identifier") {
            Some(Value::Array(list)) => {
                if !list.contains(&identifier) {
                    list.push(identifier);
                }
            }
            _ => {
                obj.insert("identifier".to_owned(), Value::Array(vec![identifier]));
            }
        }
    }
    body
}

fn action_name(rt: &str) -> &'static str {
    match rt {
        "Appointment" => "the appointment request",
        "Task" | "MedicationRequest" => "the refill request",
        "ServiceRequest" => "the referral request",
        "Communication" => "the message",
        "PaymentReconciliation" | "Basic" => "the payment record",
        _ => "the request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NoUpstream;

    #[async_trait::async_trait]
    impl FhirUpstream for NoUpstream {
        async fn execute(&self, _: FhirRequest) -> Result<FhirResponse, UpstreamError> {
            Err(UpstreamError::Timeout)
        }
    }

    #[test]
    fn acting_for_a_child_excludes_the_parents_own_record() {
        let portal = Portal::new(
            Arc::new(NoUpstream),
            Policy::new("http://ehr.example/fhir"),
            EhrProfile::built_in("generic-r4").unwrap(),
            Arc::new(portico_access::audit::MemoryAuditSink::default()),
            Arc::new(crate::payments::NoProcessor),
        );
        let principal = Arc::new(Principal {
            subject: "parent".to_owned(),
            client_id: Some("portal".to_owned()),
            patients: vec!["child".to_owned()],
            fhir_user: Some(Reference::new("Patient", "parent")),
            scopes: portico_access::ScopeSet::parse("patient/*.rs user/*.rs"),
            expires_at: None,
            issuer: None,
        });
        let caller = Caller::new(principal.clone(), Some("child")).unwrap();
        let ctx = portal.ctx(&caller);
        let parents = serde_json::json!({"resourceType": "Condition", "id": "c1",
            "subject": {"reference": "Patient/parent"}});
        let childs = serde_json::json!({"resourceType": "Condition", "id": "c2",
            "subject": {"reference": "Patient/child"}});
        // The login as a whole may read the parent's own record...
        assert!(portal.policy().check_read(&principal, &parents).is_ok());
        // ...but acting for the child, only the child's.
        assert!(ctx.acting().fhir_user.is_none());
        assert!(!ctx.belongs_to_patient(&parents));
        assert!(ctx.belongs_to_patient(&childs));
        // Acting for oneself keeps the fhirUser.
        let me = Principal {
            patients: vec!["parent".to_owned()],
            ..(*principal).clone()
        };
        let caller = Caller::new(Arc::new(me), None).unwrap();
        assert!(portal.ctx(&caller).acting().fhir_user.is_some());
    }

    /// Answers every request with the same Bundle and the same derived-value slot, as
    /// a cache does for hits on one entry.
    #[derive(Debug)]
    struct OneEntry {
        body: String,
        slot: portico_upstream::Derived,
    }

    #[async_trait::async_trait]
    impl FhirUpstream for OneEntry {
        async fn execute(&self, _: FhirRequest) -> Result<FhirResponse, UpstreamError> {
            let mut response = FhirResponse::new(200, self.body.clone());
            response.derived = Some(self.slot.clone());
            Ok(response)
        }
    }

    fn patient_principal(patient: &str) -> Arc<Principal> {
        Arc::new(Principal {
            subject: format!("Patient/{patient}"),
            client_id: Some("portal".to_owned()),
            patients: vec![patient.to_owned()],
            fhir_user: Some(Reference::new("Patient", patient)),
            scopes: portico_access::ScopeSet::parse("patient/*.rs"),
            expires_at: None,
            issuer: None,
        })
    }

    #[tokio::test]
    async fn a_verified_page_is_reused_only_for_the_principal_it_was_verified_for() {
        let bundle = serde_json::json!({"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": {"resourceType": "Observation", "id": "o1",
                "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/pat-1"}}}]});
        let upstream = Arc::new(OneEntry {
            body: bundle.to_string(),
            slot: portico_upstream::Derived::with_budget(1 << 20),
        });
        let audit = Arc::new(portico_access::audit::MemoryAuditSink::default());
        let portal = Portal::new(
            upstream.clone(),
            Policy::new("http://ehr.example/fhir"),
            EhrProfile::built_in("generic-r4").unwrap(),
            audit.clone(),
            Arc::new(crate::payments::NoProcessor),
        );
        let one = Caller::new(patient_principal("pat-1"), None).unwrap();
        let two = Caller::new(patient_principal("pat-2"), None).unwrap();
        for _ in 0..3 {
            let page = portal.ctx(&one).search("Observation", &[]).await.unwrap();
            assert_eq!(page.matches.len(), 1);
        }
        // The same entry, another patient: verified for them, not reused.
        let page = portal.ctx(&two).search("Observation", &[]).await.unwrap();
        assert!(page.matches.is_empty(), "pat-2 must not see pat-1's page");
        assert_eq!(page.removed, 1);
        let kept = format!("portal\n{}", portal.ctx(&one).acting().fingerprint());
        let shared = portal
            .ctx(&one)
            .search_shared("Observation", &[])
            .await
            .unwrap()
            .page;
        assert!(
            Arc::ptr_eq(&shared, &upstream.slot.get::<Page>(&kept).unwrap()),
            "a shared search hands out the kept page itself"
        );
        // Every answer was audited, reused or not.
        assert_eq!(audit.records().len(), 5);
    }

    #[tokio::test]
    async fn a_page_verified_for_one_child_is_not_reused_for_the_other_by_the_same_login() {
        // One login acting for two patients (a parent for two children): both reach the
        // same cache entry (the partition names both), so only the acting patient in the
        // kept page's key keeps one child's page from the other.
        let bundle = serde_json::json!({"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": {"resourceType": "Observation", "id": "o1",
                "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/c1"}}}]});
        let upstream = Arc::new(OneEntry {
            body: bundle.to_string(),
            slot: portico_upstream::Derived::with_budget(1 << 20),
        });
        let portal = Portal::new(
            upstream,
            Policy::new("http://ehr.example/fhir"),
            EhrProfile::built_in("generic-r4").unwrap(),
            Arc::new(portico_access::audit::MemoryAuditSink::default()),
            Arc::new(crate::payments::NoProcessor),
        );
        let parent = Arc::new(Principal {
            subject: "RelatedPerson/parent".to_owned(),
            client_id: Some("portal".to_owned()),
            patients: vec!["c1".to_owned(), "c2".to_owned()],
            fhir_user: Some(Reference::new("RelatedPerson", "parent")),
            scopes: portico_access::ScopeSet::parse("patient/*.rs"),
            expires_at: None,
            issuer: None,
        });
        let first = Caller::new(parent.clone(), Some("c1")).unwrap();
        let second = Caller::new(parent, Some("c2")).unwrap();
        for _ in 0..2 {
            let page = portal.ctx(&first).search("Observation", &[]).await.unwrap();
            assert_eq!(page.matches.len(), 1, "c1 sees c1's result");
        }
        let page = portal
            .ctx(&second)
            .search("Observation", &[])
            .await
            .unwrap();
        assert!(page.matches.is_empty(), "c2 must not see c1's page");
        assert_eq!(page.removed, 1);
    }

    #[tokio::test]
    async fn search_all_refuses_an_answer_that_was_not_a_bundle() {
        let upstream = Arc::new(OneEntry {
            body: serde_json::json!({"resourceType": "Patient", "id": "pat-1"}).to_string(),
            slot: portico_upstream::Derived::with_budget(1 << 20),
        });
        let portal = Portal::new(
            upstream,
            Policy::new("http://ehr.example/fhir"),
            EhrProfile::built_in("generic-r4").unwrap(),
            Arc::new(portico_access::audit::MemoryAuditSink::default()),
            Arc::new(crate::payments::NoProcessor),
        );
        let caller = Caller::new(patient_principal("pat-1"), None).unwrap();
        let ctx = portal.ctx(&caller);
        // One page: replaced by an empty searchset, and says so.
        let page = ctx.search("Account", &[]).await.unwrap();
        assert!(page.replaced && page.matches.is_empty());
        // A collected search: an upstream error, not "no accounts".
        assert!(matches!(
            ctx.search_all("Account", &[], 10).await,
            Err(PortalError::Upstream(UpstreamError::MalformedBody { .. }))
        ));
    }

    #[test]
    fn identifiers_are_added_once() {
        let idem = Idem::new("pat-1", "book", Some("k1"));
        let body = serde_json::json!({"resourceType": "Task"});
        let once = with_identifier(body, &idem);
        let twice = with_identifier(once.clone(), &idem);
        assert_eq!(once, twice);
        assert_eq!(once["identifier"][0]["system"], IDENTIFIER_SYSTEM);
    }

    #[test]
    fn operation_answers_become_bundles() {
        let bundle = serde_json::json!({"resourceType": "Bundle", "type": "searchset"});
        assert_eq!(operation_result_bundle(bundle.clone()), bundle);
        let appointment = serde_json::json!({"resourceType": "Appointment", "id": "a"});
        let wrapped = operation_result_bundle(appointment.clone());
        assert_eq!(wrapped["entry"][0]["resource"], appointment);
        let parameters = serde_json::json!({"resourceType": "Parameters", "parameter": [
            {"name": "other", "valueString": "x"},
            {"name": "return", "resource": bundle}]});
        assert_eq!(operation_result_bundle(parameters)["type"], "searchset");
        let empty = serde_json::json!({"resourceType": "Parameters"});
        assert!(operation_result_bundle(empty).get("entry").is_none());
        // Not a resource: left for the policy to replace with an empty Bundle.
        assert_eq!(operation_result_bundle(Value::Null), Value::Null);
    }
}
