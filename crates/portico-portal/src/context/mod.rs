//! The portal's way to the EHR: [`Portal`] (shared, built once) and [`Ctx`] (one
//! patient's request).
//!
//! Every upstream call of every portal action goes through [`Ctx`], a thin user of the
//! gateway's one guarded path ([`portico_guard::Session`]), which narrows, verifies and
//! audits exactly as it does for the FHIR facade. What `Ctx` adds is portal-shaped:
//! - it acts for one patient at a time (the login narrowed to the acting patient's
//!   compartment, [`portico_guard::Actor::acting_for`]);
//! - search answers become [`Page`]s (kept in the cache entry's slot for the next hit of
//!   the same principal);
//! - creates carry a business identifier derived from the idempotency key and are
//!   sent with `If-None-Exist`, so that an upstream retry cannot duplicate them; when
//!   the EHR fails after a create may have been applied, the create is reconciled by
//!   searching its identifier ([`Ctx::create`]);
//! - guarded errors become [`PortalError`]s.

mod page;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use portico_access::audit::AuditSink;
use portico_access::{Interaction, Policy, Principal};
use portico_guard::{
    Actor, Base, Checked, Guard, GuardError, Reuse, Session, Written, WrittenBody,
};
use portico_upstream::{FhirUpstream, ReturnPreference, SecretString, UpstreamError};
use serde_json::Value;

pub use page::{Page, SharedPage};
pub(crate) use portico_guard::outcome_unknown;

use crate::error::{PortalError, PortalResult};
use crate::idempotency::{Idem, with_identifier};
use crate::locks::{LockGuard, Locks, MemoryLocks};
use crate::offers::{MemoryOffers, Offer, Offers};
use crate::payments::PaymentProcessor;
use crate::profile::EhrProfile;

pub use crate::idempotency::IDENTIFIER_SYSTEM;

/// The most entries [`Ctx::search_all`] collects, whatever the caller asks.
pub const MAX_COLLECTED: usize = 1000;

/// The most pages one collected search follows ([`Ctx::search_all`],
/// [`crate::whole::search_whole`]): an EHR whose `next` links never end, or that ignores
/// `_count` with tiny pages, gets no more requests than this.
pub const MAX_PAGES: usize = 100;

pub use crate::offers::OFFER_LIFETIME;

/// What a verified [`Page`] kept in a cache entry's slot is taken to weigh, as a
/// multiple of the Bundle's JSON size: parsed `serde_json` values of FHIR JSON (short
/// strings in ordered maps) take several times their text.
const PAGE_WEIGHT_FACTOR: usize = 6;

/// The key of a verified page kept in a cache entry's slot (bound to the acting
/// principal by the slot itself).
const KEPT_PAGE: &str = "portal";

/// Where "now" comes from; tests fix it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every portal request shares. Cheap to clone.
#[derive(Clone)]
pub struct Portal {
    guard: Guard,
    profile: Arc<EhrProfile>,
    payments: Arc<dyn PaymentProcessor>,
    clock: Clock,
    /// Per-object locks (in this process, or shared by the replicas through Redis).
    locks: Arc<dyn Locks>,
    /// What an operation such as `Appointment/$find` offered each patient, by
    /// (patient, type, id), so that only an offer made to this patient can be acted on
    /// later (see [`Ctx::remember_offers`]).
    offers: Arc<dyn Offers>,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("profile", &self.profile.name)
            .finish_non_exhaustive()
    }
}

impl Portal {
    /// A portal over its own guarded path (tests and tools; the gateway shares one
    /// [`Guard`] between the facade and the portal with [`Portal::with_guard`]).
    pub fn new(
        upstream: Arc<dyn FhirUpstream>,
        policy: Policy,
        profile: EhrProfile,
        audit: Arc<dyn AuditSink>,
        payments: Arc<dyn PaymentProcessor>,
    ) -> Portal {
        Portal::with_guard(Guard::new(upstream, policy, audit), profile, payments)
    }

    /// A portal reaching the EHR through `guard`.
    pub fn with_guard(
        guard: Guard,
        profile: EhrProfile,
        payments: Arc<dyn PaymentProcessor>,
    ) -> Portal {
        Portal {
            guard,
            profile: Arc::new(profile),
            payments,
            clock: Arc::new(Utc::now),
            locks: Arc::new(MemoryLocks::new()),
            offers: Arc::new(MemoryOffers::default()),
        }
    }

    /// Replaces the process-local per-object locks (locks shared by replicas).
    pub fn with_locks(mut self, locks: Arc<dyn Locks>) -> Portal {
        self.locks = locks;
        self
    }

    /// Replaces the process-local offers (offers shared by replicas).
    pub fn with_offers(mut self, offers: Arc<dyn Offers>) -> Portal {
        self.offers = offers;
        self
    }

    /// The upstream to use, without the cache, for checks that must not be answered from
    /// it.
    pub fn with_uncached(mut self, upstream: Arc<dyn FhirUpstream>) -> Portal {
        self.guard = self.guard.with_uncached(upstream);
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
        self.guard.policy()
    }

    pub fn payments(&self) -> &dyn PaymentProcessor {
        self.payments.as_ref()
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Serializes actions on one key (for example two bookings of the same slot: the
    /// second re-checks the slot after the first has booked it), in this process or
    /// across replicas, depending on the [`Locks`] the portal was built with. The EHR
    /// remains the final arbiter; a lock that cannot be taken stops the action
    /// (`state_unavailable`, or `busy` when another request holds it too long).
    pub async fn lock(&self, key: &str) -> PortalResult<LockGuard> {
        Ok(self.locks.lock(key).await?)
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
    /// The login narrowed to the acting patient, with the request's id and (in
    /// passthrough mode) token: what the guarded path acts as.
    actor: Actor,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("request_id", &self.actor.request_id)
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
        let actor = Actor::acting_for(&principal, &patient);
        Ok(Caller {
            principal,
            patient,
            actor,
        })
    }

    /// The patient's own token, sent upstream (passthrough mode only).
    pub fn with_bearer(mut self, bearer: SecretString) -> Caller {
        self.actor.bearer = Some(bearer);
        self
    }

    /// The request id carried upstream and in audit records.
    pub fn with_request_id(mut self, request_id: Option<String>) -> Caller {
        self.actor.request_id = request_id;
        self
    }

    pub fn request_id(&self) -> Option<&str> {
        self.actor.request_id.as_deref()
    }

    /// `Patient/<id>` of the acting patient.
    pub fn patient_reference(&self) -> String {
        format!("Patient/{}", self.patient)
    }

    /// The grant under which the login acts for this patient, when it is their proxy.
    pub fn proxy(&self) -> Option<&portico_access::ProxyGrant> {
        self.actor.principal().proxies.first()
    }

    /// Whether the login may take the portal action `action` (`book`, `pay`, ...) for
    /// this patient: anyone for themselves; a full proxy, any; a billing-only proxy,
    /// only `pay`; a read-only proxy, none. Checked before the action starts, so that
    /// nothing (not a card charge) happens before the EHR write would be refused.
    pub fn may_act(&self, action: &str) -> PortalResult<()> {
        use portico_access::AccessLevel;
        let allowed = match self.proxy().map(|g| g.level) {
            None | Some(AccessLevel::Full) => true,
            Some(AccessLevel::BillingOnly) => action == "pay",
            Some(AccessLevel::ReadOnly) => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(PortalError::ProxyNotPermitted {
                message: "your access for this patient does not include this action".to_owned(),
            })
        }
    }

    /// Refused for a proxy: only the patient themselves may change who acts for them.
    pub fn require_self(&self) -> PortalResult<()> {
        match self.proxy() {
            None => Ok(()),
            Some(_) => Err(PortalError::ProxyNotPermitted {
                message: "only the patient may change who can act for them".to_owned(),
            }),
        }
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

impl From<Checked> for Versioned {
    fn from(checked: Checked) -> Versioned {
        Versioned {
            version: checked.version(),
            stale: checked.meta.stale_age,
            resource: checked.resource,
        }
    }
}

impl From<GuardError> for PortalError {
    fn from(e: GuardError) -> PortalError {
        match e {
            GuardError::NotFound => PortalError::NotFound,
            GuardError::Denied(denial)
                if denial.reason() == portico_access::DenialReason::ProxyNotPermitted =>
            {
                PortalError::ProxyNotPermitted {
                    message: denial.message().to_owned(),
                }
            }
            GuardError::Denied(denial) => PortalError::Forbidden {
                message: denial.message().to_owned(),
            },
            GuardError::Unverifiable(_) => PortalError::Upstream(UpstreamError::Protocol {
                detail: "a referenced resource could not be checked".to_owned(),
            }),
            GuardError::Invalid(message) => PortalError::invalid(message),
            GuardError::AuditUnavailable => PortalError::AuditUnavailable,
            GuardError::Upstream(e) => PortalError::Upstream(e),
        }
    }
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

    fn session(&self) -> Session<'a> {
        self.portal.guard.session(&self.caller.actor)
    }

    /// The principal narrowed to the acting patient: what every decision is made for.
    pub fn acting(&self) -> &'a Principal {
        self.caller.actor.principal()
    }

    /// Whether a resource is the acting patient's (or shared reference data).
    #[cfg(test)]
    fn belongs_to_patient(&self, resource: &Value) -> bool {
        self.portal
            .policy()
            .check_read(self.acting(), resource)
            .is_ok()
    }

    // -----------------------------------------------------------------------------
    // Reads

    /// Reads `rt/id`; anything the acting patient may not see is `NotFound`.
    pub async fn read(&self, rt: &str, id: &str) -> PortalResult<Versioned> {
        Ok(self.session().read(rt, id).await?.into())
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
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let unchecked = self.session().search(rt, &params).await?;
        self.page_from(unchecked).await
    }

    /// The page behind an upstream `next` link from an earlier [`Page`].
    pub async fn search_page(&self, rt: &str, url: &str) -> PortalResult<Page> {
        Ok(Arc::unwrap_or_clone(
            self.search_page_shared(rt, url).await?.page,
        ))
    }

    /// [`Ctx::search_page`] without a copy of a page kept from an earlier hit.
    pub async fn search_page_shared(&self, rt: &str, url: &str) -> PortalResult<SharedPage> {
        let unchecked = self.session().next_page(rt, url).await?;
        self.page_from(unchecked).await
    }

    /// A verified page: on a cache hit on an entry this principal has read before, the
    /// page as it was verified then (only fresh hits carry a slot, so a kept page is
    /// never stale); otherwise verified now and kept for the next hit.
    async fn page_from(&self, unchecked: portico_guard::Unchecked) -> PortalResult<SharedPage> {
        let reply = self
            .session()
            .verify_kept::<Page>(unchecked, KEPT_PAGE)
            .await?;
        let page = match reply.answer {
            Reuse::Kept(page) => page,
            Reuse::Fresh(verified) => {
                let weight = verified.body_len.saturating_mul(PAGE_WEIGHT_FACTOR);
                let page = Arc::new(Page::from_verified(verified));
                reply.keeper.keep(page.clone(), weight);
                page
            }
        };
        Ok(SharedPage {
            page,
            slot: reply.keeper.into_slot(),
        })
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

    /// Whether any live appointment — of any patient — holds `slot_id` (see
    /// [`Session::slot_is_held`]: only the yes/no leaves it).
    pub async fn slot_is_held(&self, slot_id: &str) -> bool {
        self.session().slot_is_held(slot_id).await
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
        Ok(self
            .session()
            .authorize(interaction, rt, new, current)
            .await?)
    }

    /// Creates a resource the patient is allowed to write (the patient write rules),
    /// exactly once per idempotency key: the body gets the key's business identifier,
    /// the create is conditional (`If-None-Exist`), and when the EHR fails after the
    /// create may have happened, the identifier is searched to tell.
    pub async fn create(&self, rt: &str, body: Value, idem: &Idem) -> PortalResult<Versioned> {
        self.create_once(rt, body, idem, Checks::WriteRules).await
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
        self.create_once(rt, body, idem, Checks::DomainRule).await
    }

    async fn create_once(
        &self,
        rt: &str,
        body: Value,
        idem: &Idem,
        checks: Checks,
    ) -> PortalResult<Versioned> {
        let body = with_identifier(body, idem);
        let session = self.session();
        let condition = Some(idem.condition());
        let prefer = Some(ReturnPreference::Representation);
        let sent = match checks {
            Checks::WriteRules => session.create(rt, &body, condition, prefer).await,
            Checks::DomainRule => session.create_record(rt, &body, condition, prefer).await,
        };
        match sent {
            // The EHR accepted the create (2xx); if what it answered cannot be read (a
            // garbled body, no Location, a failing read-back), the create still happened:
            // find it by its identifier rather than report a failure.
            Ok(written) => match self.written(rt, None, written).await {
                Err(PortalError::Upstream(e)) => {
                    tracing::warn!(error = %e, resource_type = rt, "a create's answer could not be read; finding it by identifier");
                    // Not found by its identifier is not "it did not happen" here: the
                    // EHR said it did.
                    let accepted = UpstreamError::Protocol {
                        detail: "the EHR accepted the create but its answer could not be read"
                            .to_owned(),
                    };
                    self.reconcile(rt, idem, accepted).await
                }
                other => other,
            },
            Err(GuardError::Upstream(e)) if outcome_unknown(&e) => {
                tracing::warn!(error = %e, resource_type = rt, "create failed mid-flight; reconciling by identifier");
                self.reconcile(rt, idem, e).await
            }
            Err(e) => Err(e.into()),
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
                        version: portico_fhir::json::version_id(&resource).map(str::to_owned),
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

    /// The resource a write answered with: the returned body, or read back (from `id`,
    /// or from `Location` when the EHR answered with an empty body, as Cerner does).
    async fn written(
        &self,
        rt: &str,
        id: Option<&str>,
        written: Written,
    ) -> PortalResult<Versioned> {
        match written.body {
            WrittenBody::Resource(resource)
                if portico_fhir::json::resource_type(&resource) == Some(rt) =>
            {
                return Ok(Versioned {
                    version: portico_fhir::json::version_id(&resource)
                        .map(str::to_owned)
                        .or(written.meta.version_id),
                    stale: None,
                    resource,
                });
            }
            WrittenBody::Hidden { resource_type } if resource_type.as_deref() == Some(rt) => {
                return Err(PortalError::NotFound);
            }
            WrittenBody::Empty if id.is_some() => {
                return self.read(rt, id.unwrap_or_default()).await;
            }
            _ => {}
        }
        let location = written
            .meta
            .location
            .as_deref()
            .and_then(portico_upstream::response::parse_location)
            .ok_or_else(|| {
                PortalError::Upstream(UpstreamError::Protocol {
                    detail: "the EHR answered a write with neither a body nor a Location"
                        .to_owned(),
                })
            })?;
        self.read(&location.resource_type, &location.id).await
    }

    /// Applies a JSON Patch to `current` (`If-Match` on its version), after checking
    /// the patched resource against the write rules. Returns the resource as written.
    pub async fn patch(
        &self,
        rt: &str,
        current: &Versioned,
        patch: Value,
        patched: &Value,
    ) -> PortalResult<Versioned> {
        let base = base(rt, current)?;
        let patch = bytes::Bytes::from(patch.to_string());
        let sent = self
            .session()
            .patch(base, patch, patched, Some(ReturnPreference::Representation))
            .await;
        self.updated(base, sent).await
    }

    /// Replaces `current` with `new` (`If-Match` on its version), after checking it
    /// against the write rules.
    pub async fn update(
        &self,
        rt: &str,
        current: &Versioned,
        new: Value,
    ) -> PortalResult<Versioned> {
        let base = base(rt, current)?;
        let sent = self
            .session()
            .update(base, &new, Some(ReturnPreference::Representation))
            .await;
        self.updated(base, sent).await
    }

    async fn updated(
        &self,
        base: Base<'_>,
        sent: Result<Written, GuardError>,
    ) -> PortalResult<Versioned> {
        match sent {
            Ok(written) => self.written(base.rt, Some(base.id), written).await,
            // Cerner answers a wrong version with 409, the spec with 412.
            Err(GuardError::Upstream(
                UpstreamError::PreconditionFailed { .. } | UpstreamError::Conflict { .. },
            )) => Err(version_conflict()),
            Err(GuardError::Upstream(other)) => Err(PortalError::from_read(other)),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies a JSON Patch that the patient write rules do not allow in general but a
    /// domain rule allows for this action (see [`Session::patch_with_rule`]).
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
        let base = base(rt, current)?;
        let sent = self.session().patch_with_rule(base, &patch, rule).await;
        match sent {
            Ok(written) => self.written(rt, Some(base.id), written).await,
            Err(PortalError::Upstream(UpstreamError::PreconditionFailed { .. })) => {
                Err(version_conflict())
            }
            Err(PortalError::Upstream(e @ UpstreamError::Conflict { .. })) => {
                Err(PortalError::Upstream(e))
            }
            Err(PortalError::Upstream(other)) => Err(PortalError::from_read(other)),
            Err(e) => Err(e),
        }
    }

    /// Replaces `current` with `new` where a domain rule, not the patient write rules,
    /// allows it (see [`Session::update_with_rule`]); a wrong version is
    /// `version_conflict`.
    pub async fn update_with_rule(
        &self,
        rt: &str,
        current: &Versioned,
        new: Value,
        rule: impl FnOnce(&Value, &Value) -> PortalResult<()>,
    ) -> PortalResult<Versioned> {
        let base = base(rt, current)?;
        let sent = self.session().update_with_rule(base, &new, rule).await;
        match sent {
            Ok(written) => self.written(rt, Some(base.id), written).await,
            Err(PortalError::Upstream(
                UpstreamError::PreconditionFailed { .. } | UpstreamError::Conflict { .. },
            )) => Err(version_conflict()),
            Err(PortalError::Upstream(other)) => Err(PortalError::from_read(other)),
            Err(e) => Err(e),
        }
    }

    // -----------------------------------------------------------------------------
    // Operations

    /// Runs the FHIR operation `POST [rt]/$name` with a `Parameters` body and returns
    /// its result like a search page: verified entry by entry for the acting patient,
    /// exactly like [`Ctx::search`] (what names another patient is dropped and counted
    /// in `removed`); a `Parameters` answer's `return` resource and a bare resource are
    /// treated as a one-entry Bundle. `OperationOutcome`s land in [`Page::outcomes`].
    /// Audited as `interaction` (a `$find` is a search, a `$book` a create). Never
    /// retried or cached upstream.
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
        let session = self.session();
        let unchecked = session
            .operation(rt, name, &parameters, interaction)
            .await?;
        Ok(Page::from_verified(session.verify(unchecked).await?))
    }

    /// Remembers what an operation offered the acting patient (for example the proposed
    /// Appointments of a `$find`) for [`OFFER_LIFETIME`], so that a later action on one
    /// of them can check it was offered to this patient.
    pub async fn remember_offers(&self, offers: &[Value]) -> PortalResult<()> {
        let offers: Vec<Offer> = offers
            .iter()
            .filter_map(|offer| {
                Some(Offer {
                    resource_type: offer.get("resourceType")?.as_str()?.to_owned(),
                    id: offer.get("id")?.as_str()?.to_owned(),
                    resource: offer.clone(),
                })
            })
            .collect();
        if offers.is_empty() {
            return Ok(());
        }
        Ok(self
            .portal
            .offers
            .put(&self.caller.patient, &offers)
            .await?)
    }

    /// The offer `rt/id` this gateway made to the acting patient, if it is still valid.
    pub async fn offered(&self, rt: &str, id: &str) -> PortalResult<Option<Value>> {
        Ok(self.portal.offers.get(&self.caller.patient, rt, id).await?)
    }
}

/// Which checks a create passes before it is sent.
enum Checks {
    /// The patient write rules.
    WriteRules,
    /// A domain rule the caller applied (a named domain write).
    DomainRule,
}

/// The version a change to `current` is made against.
fn base<'v>(rt: &'v str, current: &'v Versioned) -> PortalResult<Base<'v>> {
    Ok(Base {
        rt,
        id: current.id().ok_or(PortalError::NotFound)?,
        resource: &current.resource,
        version: current.version.as_deref(),
    })
}

fn version_conflict() -> PortalError {
    PortalError::conflict(
        "version_conflict",
        "it changed since it was read; reload and try again",
    )
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
