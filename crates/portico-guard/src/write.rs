//! Writes: everything is decided before the request goes upstream. A create, update or
//! patch is checked against the patient write rules (with the current version, and
//! with referenced compartment resources read back and checked); a conditional create's
//! query is narrowed like a search; the version that was checked is the one sent as
//! `If-Match`. What the EHR answers is shown only if the principal may read it.
//!
//! Two named domain writes exist for what a patient may not write through `/fhir` but a
//! portal action may, after its own domain rule: [`Session::create_record`] (a payment
//! record the gateway authors) and [`Session::patch_with_rule`] (moving the patient's
//! own booking to another slot). Neither loosens the facade's write rules.

use bytes::Bytes;
use portico_access::{
    Denial, DenialReason, Interaction, ReferenceResolver, ResolveError, WriteError,
};
use portico_fhir::reference::Reference;
use portico_upstream::{FhirRequest, ReturnPreference, UpstreamError};
use serde_json::Value;

use crate::audit::Outcome;
use crate::slot::Meta;
use crate::{GuardError, Session};

/// The condition of a conditional create (`If-None-Exist`).
#[derive(Debug, Clone)]
pub enum IfNoneExist {
    /// A query the client sent: narrowed like a search, so that it cannot probe other
    /// patients' data.
    Client(Vec<(String, String)>),
    /// The gateway's own query on the business identifier it put on the resource.
    Identifier(String),
}

/// The version of a resource a change is made against, as the caller read it through
/// the session: the change is checked against it and sent with `If-Match` on its
/// version.
#[derive(Debug, Clone, Copy)]
pub struct Base<'a> {
    pub rt: &'a str,
    pub id: &'a str,
    pub resource: &'a Value,
    pub version: Option<&'a str>,
}

/// What a write answered.
#[derive(Debug)]
pub struct Written {
    pub meta: Meta,
    pub body: WrittenBody,
}

/// The body of a write's answer, after the read check.
#[derive(Debug)]
pub enum WrittenBody {
    /// No body (`Prefer: return=minimal`, or an EHR that never returns one).
    Empty,
    /// A resource the principal may read.
    Resource(Value),
    /// An `OperationOutcome`.
    Outcome(Value),
    /// A resource the principal may not read: never shown.
    Hidden { resource_type: Option<String> },
    /// Not JSON.
    Malformed(UpstreamError),
}

/// Whether a failed create may nevertheless have been applied upstream.
pub fn outcome_unknown(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Timeout
            | UpstreamError::Connect { .. }
            | UpstreamError::Server { .. }
            | UpstreamError::MalformedBody { .. }
            | UpstreamError::Protocol { .. }
    )
}

impl Session<'_> {
    /// Checks a write against the patient write rules, reading referenced compartment
    /// resources as the principal would. A denial is recorded.
    pub async fn authorize(
        &self,
        interaction: Interaction,
        rt: &str,
        new: &Value,
        current: Option<&Value>,
    ) -> Result<(), GuardError> {
        let resolver = Resolver { session: *self };
        match self
            .policy()
            .authorize_write(
                self.actor.principal(),
                interaction,
                rt,
                new,
                current,
                &resolver,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(WriteError::Denied(denial)) => Err(self.deny(interaction, rt, None, denial).await),
            Err(WriteError::Resolve(e)) => {
                tracing::warn!(error = %e, "could not check a referenced resource");
                Err(GuardError::Unverifiable(e))
            }
        }
    }

    /// Creates `body` as `rt` after checking it against the patient write rules.
    pub async fn create(
        &self,
        rt: &str,
        body: &Value,
        condition: Option<IfNoneExist>,
        prefer: Option<ReturnPreference>,
    ) -> Result<Written, GuardError> {
        self.authorize(Interaction::Create, rt, body, None).await?;
        self.send_create(rt, body, condition, prefer).await
    }

    /// Creates a record the gateway itself authors for the patient after checking the
    /// action in domain code (a payment record after the processor charged the card:
    /// `PaymentReconciliation` and `Basic` have no patient write rule).
    pub async fn create_record(
        &self,
        rt: &str,
        body: &Value,
        condition: Option<IfNoneExist>,
        prefer: Option<ReturnPreference>,
    ) -> Result<Written, GuardError> {
        self.check_proxy_level(Interaction::Create, rt, None)
            .await?;
        self.send_create(rt, body, condition, prefer).await
    }

    /// The domain writes skip the patient write rules, not the proxy's level: a
    /// read-only proxy pays no bill and moves no booking. Refusals are recorded.
    async fn check_proxy_level(
        &self,
        interaction: Interaction,
        rt: &str,
        id: Option<&str>,
    ) -> Result<(), GuardError> {
        let principal = self.actor.principal();
        for patient in &principal.patients {
            if let Err(denial) = self.policy().check_proxy_write(principal, patient, rt) {
                return Err(self.deny(interaction, rt, id, denial).await);
            }
        }
        Ok(())
    }

    async fn send_create(
        &self,
        rt: &str,
        body: &Value,
        condition: Option<IfNoneExist>,
        prefer: Option<ReturnPreference>,
    ) -> Result<Written, GuardError> {
        let mut request = FhirRequest::create(rt, Bytes::from(body.to_string()));
        match condition {
            None => {}
            Some(IfNoneExist::Identifier(query)) => request = request.with_if_none_exist(query),
            Some(IfNoneExist::Client(params)) => {
                let narrowed =
                    match self
                        .policy()
                        .narrow_search(self.actor.principal(), rt, &params)
                    {
                        Ok(n) => n,
                        Err(denial) => {
                            return Err(self.deny(Interaction::Create, rt, None, denial).await);
                        }
                    };
                request = request.with_if_none_exist(encode_query(&narrowed));
            }
        }
        self.send(Interaction::Create, rt, None, request, prefer)
            .await
    }

    /// Replaces the resource `base` names with `new`, checked against the write rules
    /// with the version the caller read, sent with `If-Match` on that version.
    pub async fn update(
        &self,
        base: Base<'_>,
        new: &Value,
        prefer: Option<ReturnPreference>,
    ) -> Result<Written, GuardError> {
        self.authorize(Interaction::Update, base.rt, new, Some(base.resource))
            .await?;
        let request = FhirRequest::update(base.rt, base.id, Bytes::from(new.to_string()));
        self.send_change(Interaction::Update, base, request, prefer)
            .await
    }

    /// Applies the JSON Patch `patch` to the resource `base` names: `patched` (the
    /// caller's application of exactly these operations to it) is what the write rules
    /// check; sent with `If-Match` on the version the caller read.
    pub async fn patch(
        &self,
        base: Base<'_>,
        patch: Bytes,
        patched: &Value,
        prefer: Option<ReturnPreference>,
    ) -> Result<Written, GuardError> {
        self.authorize(Interaction::Patch, base.rt, patched, Some(base.resource))
            .await?;
        let request = FhirRequest::patch(base.rt, base.id, patch);
        self.send_change(Interaction::Patch, base, request, prefer)
            .await
    }

    async fn send_change(
        &self,
        interaction: Interaction,
        base: Base<'_>,
        request: FhirRequest,
        prefer: Option<ReturnPreference>,
    ) -> Result<Written, GuardError> {
        let request = match base.version {
            Some(v) => request.with_if_match_version(v),
            None => request,
        };
        self.send(interaction, base.rt, Some(base.id), request, prefer)
            .await
    }

    /// Applies a JSON Patch that the patient write rules do not allow in general but a
    /// domain rule allows for this action (moving the patient's own booked appointment
    /// to another slot, Cerner style), with `If-Match`:
    /// - `current` must be the principal's (as a read or a search returned it; checked
    ///   again here, else `NotFound`);
    /// - the patch is applied locally to `current`; the result must still be the
    ///   principal's, and `rule(current, patched)` must accept it, else nothing is sent;
    /// - the token must allow patching `rt` (the scope check of any write).
    pub async fn patch_with_rule<E: From<GuardError>>(
        &self,
        base: Base<'_>,
        patch: &Value,
        rule: impl FnOnce(&Value, &Value) -> Result<(), E>,
    ) -> Result<Written, E> {
        self.domain_change_allowed(Interaction::Patch, base).await?;
        let operations: json_patch::Patch = serde_json::from_value(patch.clone())
            .map_err(|_| GuardError::Invalid("the change is not a JSON Patch".to_owned()))?;
        let mut patched = base.resource.clone();
        json_patch::patch(&mut patched, &operations).map_err(|_| {
            GuardError::Invalid("the change cannot be applied to the resource".to_owned())
        })?;
        let request = FhirRequest::patch(base.rt, base.id, Bytes::from(patch.to_string()));
        self.send_domain_change(Interaction::Patch, base, &patched, rule, request)
            .await
    }

    /// Replaces the resource `base` names with `new`, which the patient write rules do
    /// not allow in general but a domain rule allows for this action (a patient ending
    /// a proxy's access on their `RelatedPerson`), with `If-Match` — checked exactly like
    /// [`Session::patch_with_rule`].
    pub async fn update_with_rule<E: From<GuardError>>(
        &self,
        base: Base<'_>,
        new: &Value,
        rule: impl FnOnce(&Value, &Value) -> Result<(), E>,
    ) -> Result<Written, E> {
        self.domain_change_allowed(Interaction::Update, base)
            .await?;
        let request = FhirRequest::update(base.rt, base.id, Bytes::from(new.to_string()));
        self.send_domain_change(Interaction::Update, base, new, rule, request)
            .await
    }

    /// The end of a domain change: the result must still be the principal's and pass
    /// `rule`, else nothing is sent (a rule's refusal is recorded as failed); then
    /// `request` goes with `If-Match`.
    async fn send_domain_change<E: From<GuardError>>(
        &self,
        interaction: Interaction,
        base: Base<'_>,
        result: &Value,
        rule: impl FnOnce(&Value, &Value) -> Result<(), E>,
        request: FhirRequest,
    ) -> Result<Written, E> {
        self.domain_result_allowed(interaction, base, result)
            .await?;
        if let Err(e) = rule(base.resource, result) {
            self.note(interaction, base.rt, Some(base.id), Outcome::Failed(None))
                .await;
            return Err(e);
        }
        Ok(self
            .send_change(
                interaction,
                base,
                request,
                Some(ReturnPreference::Representation),
            )
            .await?)
    }

    /// A domain change may start from `base`: it is the principal's (else `NotFound`),
    /// the proxy level allows writing it, and the token allows `interaction` on its type.
    async fn domain_change_allowed(
        &self,
        interaction: Interaction,
        base: Base<'_>,
    ) -> Result<(), GuardError> {
        let principal = self.actor.principal();
        let Base {
            rt,
            id,
            resource: current,
            ..
        } = base;
        if portico_fhir::json::resource_type(current) != Some(rt)
            || portico_fhir::json::id(current) != Some(id)
            || self.policy().check_read(principal, current).is_err()
        {
            self.note(interaction, rt, Some(id), Outcome::Failed(None))
                .await;
            return Err(GuardError::NotFound);
        }
        self.check_proxy_level(interaction, rt, Some(id)).await?;
        let allowed = principal
            .scopes
            .permission(portico_access::scopes::Context::Patient, rt, interaction)
            .is_allowed();
        if !allowed {
            let denial = Denial::new(
                DenialReason::ScopeMissing,
                format!("the login may not change {rt} resources"),
            );
            return Err(self.deny(interaction, rt, Some(id), denial).await);
        }
        Ok(())
    }

    /// What a domain change would write is still the principal's, with the same id.
    async fn domain_result_allowed(
        &self,
        interaction: Interaction,
        base: Base<'_>,
        changed: &Value,
    ) -> Result<(), GuardError> {
        let still_mine = changed.get("id") == base.resource.get("id")
            && changed.get("resourceType") == base.resource.get("resourceType")
            && self
                .policy()
                .check_read(self.actor.principal(), changed)
                .is_ok();
        if !still_mine {
            let denial = Denial::new(
                DenialReason::WriteRuleViolated,
                "the change would take the resource out of the patient's record",
            );
            return Err(self.deny(interaction, base.rt, Some(base.id), denial).await);
        }
        Ok(())
    }

    /// Sends a write that was decided, records it, and checks what came back.
    async fn send(
        &self,
        interaction: Interaction,
        rt: &str,
        id: Option<&str>,
        request: FhirRequest,
        prefer: Option<ReturnPreference>,
    ) -> Result<Written, GuardError> {
        let request = match prefer {
            Some(p) => request.with_prefer(p),
            None => request,
        };
        // The attempt is on record before anything reaches the EHR: a crash between the
        // call and its outcome still leaves the write in the trail.
        self.audit(interaction, rt, id, Outcome::Attempt).await?;
        let response = match self.execute(request).await {
            Ok(r) => r,
            Err(e) => {
                self.note(interaction, rt, id, Outcome::Written(Err(e.status())))
                    .await;
                return Err(GuardError::Upstream(e));
            }
        };
        self.audit(interaction, rt, id, Outcome::Written(Ok(response.status)))
            .await?;
        let meta = Meta::of(&response);
        let body = if response.body.is_empty() {
            WrittenBody::Empty
        } else {
            match response.json() {
                Err(e) => WrittenBody::Malformed(e),
                Ok(v) => {
                    let resource_type = portico_fhir::json::resource_type(&v).map(str::to_owned);
                    if resource_type.as_deref() == Some("OperationOutcome") {
                        WrittenBody::Outcome(v)
                    } else if self.policy().check_read(self.actor.principal(), &v).is_ok() {
                        WrittenBody::Resource(v)
                    } else {
                        WrittenBody::Hidden { resource_type }
                    }
                }
            }
        };
        Ok(Written { meta, body })
    }
}

/// Fetches referenced resources for write checks, as the principal's request would.
struct Resolver<'a> {
    session: Session<'a>,
}

#[async_trait::async_trait]
impl ReferenceResolver for Resolver<'_> {
    async fn resolve(&self, reference: &Reference) -> Result<Option<Value>, ResolveError> {
        match self
            .session
            .execute(FhirRequest::read(&reference.resource_type, &reference.id))
            .await
        {
            Ok(r) => r.json().map(Some).map_err(|e| ResolveError(e.to_string())),
            Err(UpstreamError::NotFound { .. } | UpstreamError::Gone { .. }) => Ok(None),
            Err(e) => Err(ResolveError(e.to_string())),
        }
    }
}

/// A query string of `params`.
pub fn encode_query(params: &[(String, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}
