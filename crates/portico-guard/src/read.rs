//! Reads: a resource by id (or version), checked against the principal's compartment
//! and scopes as it came back. A resource the principal may not see is
//! [`GuardError::NotFound`], exactly like a missing one.

use portico_access::Interaction;
use portico_fhir::reference::{Reference, is_valid_id};
use portico_upstream::{FhirRequest, FhirResponse, UpstreamError};
use serde_json::Value;

use crate::audit::Outcome;
use crate::slot::{BoundSlot, KeptAnswer, Meta, Reply, Reuse};
use crate::{GuardError, Session};

/// What to read.
#[derive(Debug, Clone, Copy)]
pub enum Target<'t> {
    Current {
        rt: &'t str,
        id: &'t str,
    },
    Version {
        rt: &'t str,
        id: &'t str,
        version: &'t str,
    },
}

impl<'t> Target<'t> {
    fn request(&self) -> FhirRequest {
        match *self {
            Target::Current { rt, id } => FhirRequest::read(rt, id),
            Target::Version { rt, id, version } => FhirRequest::vread(rt, id, version),
        }
    }

    fn interaction(&self) -> Interaction {
        match self {
            Target::Current { .. } => Interaction::Read,
            Target::Version { .. } => Interaction::Vread,
        }
    }

    fn parts(&self) -> (&'t str, &'t str) {
        match *self {
            Target::Current { rt, id } | Target::Version { rt, id, .. } => (rt, id),
        }
    }

    fn valid(&self) -> bool {
        match *self {
            Target::Current { id, .. } => is_valid_id(id),
            Target::Version { id, version, .. } => is_valid_id(id) && is_valid_id(version),
        }
    }
}

/// A resource that passed the read check, with its answer's headers.
#[derive(Debug, Clone)]
pub struct Checked {
    pub resource: Value,
    pub meta: Meta,
}

impl Checked {
    /// The resource's version: `meta.versionId`, else the version the `ETag` carried.
    pub fn version(&self) -> Option<String> {
        portico_fhir::json::version_id(&self.resource)
            .map(str::to_owned)
            .or_else(|| self.meta.version_id.clone())
    }

    pub fn id(&self) -> Option<&str> {
        portico_fhir::json::id(&self.resource)
    }
}

impl Session<'_> {
    /// Reads `rt/id`; audited.
    pub async fn read(&self, rt: &str, id: &str) -> Result<Checked, GuardError> {
        let target = Target::Current { rt, id };
        let checked = self.checked(target).await?;
        self.audit(
            Interaction::Read,
            rt,
            Some(id),
            Outcome::allowed(checked.meta.status, 0),
        )
        .await?;
        Ok(checked)
    }

    /// Reads `rt/id` for a decision or a composed answer whose own record covers it (the
    /// current version a write is checked against, the history of a resource, the
    /// Patient of `$everything`): checked like any read, but only a failure or a denial
    /// is recorded here.
    pub async fn current(&self, rt: &str, id: &str) -> Result<Checked, GuardError> {
        self.checked(Target::Current { rt, id }).await
    }

    /// A read or vread whose caller keeps what it derives from the checked resource
    /// (see [`Reply`]): on a hit with a value kept under `what` for this principal,
    /// that value, audited again; otherwise the resource, checked and audited.
    pub async fn read_kept<T: KeptAnswer>(
        &self,
        target: Target<'_>,
        what: &str,
    ) -> Result<Reply<T, Checked>, GuardError> {
        let (rt, id) = target.parts();
        let response = self.fetch(target).await?;
        let slot = self.bound(&response);
        if let Some(kept) = slot.as_ref().and_then(|s| s.get::<T>(what)) {
            self.audit(
                target.interaction(),
                rt,
                Some(id),
                Outcome::allowed(response.status, kept.removed()),
            )
            .await?;
            return Ok(Reply::new(
                Meta::of(&response),
                Reuse::Kept(kept),
                slot,
                what,
                response.body,
            ));
        }
        let upstream = response.body.clone();
        let checked = self.check(target, response).await?;
        self.audit(
            target.interaction(),
            rt,
            Some(id),
            Outcome::allowed(checked.meta.status, 0),
        )
        .await?;
        Ok(Reply::new(
            checked.meta.clone(),
            Reuse::Fresh(checked),
            slot,
            what,
            upstream,
        ))
    }

    /// The entry's slot bound to this principal, when the response came from a cache
    /// hit.
    pub(crate) fn bound(&self, response: &FhirResponse) -> Option<BoundSlot> {
        response
            .derived
            .clone()
            .map(|slot| BoundSlot::new(slot, self.actor.fingerprint()))
    }

    async fn checked(&self, target: Target<'_>) -> Result<Checked, GuardError> {
        let response = self.fetch(target).await?;
        self.check(target, response).await
    }

    /// Runs a read; a missing or gone resource (or an id that cannot exist) is
    /// `NotFound`. Failures are recorded.
    async fn fetch(&self, target: Target<'_>) -> Result<FhirResponse, GuardError> {
        if !target.valid() {
            return Err(GuardError::NotFound);
        }
        let (rt, id) = target.parts();
        match self.execute(target.request()).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.note(
                    target.interaction(),
                    rt,
                    Some(id),
                    Outcome::Failed(e.status()),
                )
                .await;
                Err(match e {
                    UpstreamError::NotFound { .. } | UpstreamError::Gone { .. } => {
                        GuardError::NotFound
                    }
                    other => GuardError::Upstream(other),
                })
            }
        }
    }

    /// Parses a read's answer and checks the principal may see `rt/id` as it came back;
    /// a denial is recorded and answered as `NotFound`.
    async fn check(
        &self,
        target: Target<'_>,
        response: FhirResponse,
    ) -> Result<Checked, GuardError> {
        let (rt, id) = target.parts();
        let resource = match response.json() {
            Ok(r) => r,
            Err(e) => {
                self.note(
                    target.interaction(),
                    rt,
                    Some(id),
                    Outcome::Failed(Some(response.status)),
                )
                .await;
                return Err(GuardError::Upstream(e));
            }
        };
        if let Err(denial) =
            self.policy()
                .check_read_at(self.actor.principal(), &Reference::new(rt, id), &resource)
        {
            self.note(target.interaction(), rt, Some(id), Outcome::Denied(&denial))
                .await;
            return Err(GuardError::NotFound);
        }
        Ok(Checked {
            resource,
            meta: Meta::of(&response),
        })
    }

    /// Whether any live appointment — of any patient — holds `slot_id`. A plain FHIR
    /// store does not mark a booked Slot busy, so the Slot's own status cannot be the
    /// only check before booking. This one search goes upstream without the patient
    /// restriction and without the cache; only the yes/no leaves this method (nothing of
    /// another patient's is returned, logged or cached). If the EHR cannot answer it (an
    /// unsupported parameter), the Slot's status and the EHR remain the arbiters.
    pub async fn slot_is_held(&self, slot_id: &str) -> bool {
        let mut request = FhirRequest::search(
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
        if let Some(id) = &self.actor.request_id {
            request = request.with_request_id(id.clone());
        }
        if let Some(token) = &self.actor.bearer {
            request = request.with_bearer(token.clone());
        }
        let inner = &self.guard.inner;
        let upstream = inner.uncached.as_ref().unwrap_or(&inner.upstream);
        let answer = upstream.execute(request).await;
        self.note(
            Interaction::Search,
            "Appointment",
            Some(slot_id),
            match &answer {
                Ok(r) => Outcome::allowed(r.status, 0),
                Err(e) => Outcome::Failed(e.status()),
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
}
