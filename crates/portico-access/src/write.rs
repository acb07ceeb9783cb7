//! Write decisions: what a patient may create, update or patch, checked before anything
//! is sent upstream.
//!
//! Every write must pass, in order:
//!
//! 1. delete is never allowed; the body's type is the request's type;
//! 2. the type has a patient write rule (Communication, Appointment, MedicationRequest,
//!    ServiceRequest, Task when Task is linked to the compartment); everything else is
//!    denied;
//! 3. no `contained` resources (they would let a patient author data about someone who is
//!    not a checkable reference); compartment and rule elements hold literal references
//!    (a logical reference by identifier could name anyone);
//! 4. every reference in the body (anywhere, extensions included) parses and is local; every
//!    Patient reference names the same one of the principal's patients, the *acting
//!    patient*; references to other patient-compartment resources (`basedOn`,
//!    `partOf`, `priorPrescription`, `encounter`, …) must be verified to be in the acting
//!    patient's compartment before the write goes up (see [`WriteApproval`] and
//!    [`Policy::authorize_write`]);
//! 5. the body is in the acting patient's compartment, and a scope grants the letter
//!    (`c`, or `u` for update and patch) with its granular filters satisfied;
//! 6. for update and patch, the current resource (fetched by the gateway; for patch, the
//!    patch is applied to it to produce the new body) is in the same compartment, names no
//!    other patient, and satisfies the filters: a patient cannot take over someone else's
//!    resource. The gateway should send the write with `If-Match` on the version it checked;
//! 7. the rule of the type.
//!
//! Update-as-create (PUT to an id that does not exist) is refused: patients do not choose
//! ids.

use std::collections::BTreeSet;

use async_trait::async_trait;
use portico_fhir::json;
use portico_fhir::reference::Reference;
use serde_json::Value;

use crate::policy::{Class, Denial, DenialReason, Policy, require};
use crate::principal::Principal;
use crate::scopes::Interaction;
use portico_fhir::json::values_at;

/// The most references to other compartment resources one write may carry.
const MAX_VERIFIED_REFERENCES: usize = 16;

/// A write that passed the checks that need no I/O. Before sending it upstream, the
/// gateway must fetch each of [`WriteApproval::references_to_verify`] and pass it to
/// [`Policy::verify_referenced`] — or simply use [`Policy::authorize_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "referenced resources must be verified before the write is sent"]
pub struct WriteApproval {
    patient: String,
    references: Vec<Reference>,
}

impl WriteApproval {
    /// The patient whose compartment the write is in.
    pub fn patient(&self) -> &str {
        &self.patient
    }

    /// Local references to patient-compartment resources, each of which must be in the
    /// acting patient's compartment.
    pub fn references_to_verify(&self) -> &[Reference] {
        &self.references
    }
}

/// Fetching a referenced resource failed (not: it does not exist).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("referenced resource could not be fetched: {0}")]
pub struct ResolveError(pub String);

/// Fetches the current version of local resources, for [`Policy::authorize_write`].
#[async_trait]
pub trait ReferenceResolver: Send + Sync {
    /// The resource, or `None` when it does not exist.
    async fn resolve(&self, reference: &Reference) -> Result<Option<Value>, ResolveError>;
}

/// Why [`Policy::authorize_write`] did not approve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

fn denial(reason: DenialReason, message: impl Into<std::borrow::Cow<'static, str>>) -> Denial {
    Denial::new(reason, message)
}

fn rule(message: &'static str) -> Denial {
    denial(DenialReason::WriteRuleViolated, message)
}

/// Element paths each writable type's rule reads; they must hold literal references.
fn rule_paths(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Communication" => &["sender", "subject", "recipient"],
        "Appointment" => &["participant.actor"],
        "MedicationRequest" => &["subject", "requester", "performer", "recorder"],
        "ServiceRequest" => &["subject", "requester", "performer"],
        "Task" => &["for", "requester", "owner"],
        _ => &[],
    }
}

/// Every `reference` string anywhere in `value`.
fn all_references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("reference", Value::String(s)) => out.push(s),
                    _ => all_references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| all_references(v, out)),
        _ => {}
    }
}

fn is_patient(reference: &str, patient: &str) -> bool {
    Reference::parse(reference).is_ok_and(|r| r.is("Patient", patient))
}

/// Exactly one element at `path`, a reference to the patient.
fn exactly_self(resource: &Value, path: &str, patient: &str) -> bool {
    let refs = json::references_at(resource, path);
    values_at(resource, path).len() == 1 && refs.len() == 1 && is_patient(refs[0], patient)
}

/// Nothing at `path`, or exactly the patient.
fn absent_or_self(resource: &Value, path: &str, patient: &str) -> bool {
    values_at(resource, path).is_empty() || exactly_self(resource, path, patient)
}

fn str_at<'a>(resource: &'a Value, key: &str) -> Option<&'a str> {
    resource.get(key)?.as_str()
}

/// `resource` without the keys an update may change.
fn without(resource: &Value, keys: &[&str]) -> Value {
    let mut copy = resource.clone();
    if let Some(map) = copy.as_object_mut() {
        for key in keys {
            map.remove(*key);
        }
    }
    copy
}

fn proxy_refusal(resource_type: &str) -> Denial {
    denial(
        DenialReason::ProxyNotPermitted,
        format!("a proxy at this access level may not write {resource_type}"),
    )
}

impl Policy {
    /// For writes the gateway authors after a domain check instead of
    /// [`Policy::check_write`] (a payment record, a rescheduling patch): refused when the
    /// principal acts for `patient` as a proxy whose level does not write `resource_type`.
    pub fn check_proxy_write(
        &self,
        principal: &Principal,
        patient: &str,
        resource_type: &str,
    ) -> Result<(), Denial> {
        let grants = self.grants(principal)?;
        if grants.level_refuses(patient, resource_type, Interaction::Create) {
            return Err(proxy_refusal(resource_type));
        }
        Ok(())
    }

    /// Checks a create, update or patch by `principal` before it is sent upstream.
    /// `new` is the body to be written (for patch: the current resource with the patch
    /// applied); `current` is the resource as it is now (required for update and patch).
    /// Delete is always denied. See the module documentation for the rules.
    pub fn check_write(
        &self,
        principal: &Principal,
        interaction: Interaction,
        resource_type: &str,
        new: &Value,
        current: Option<&Value>,
    ) -> Result<WriteApproval, Denial> {
        let grants = self.grants(principal)?;
        match interaction {
            Interaction::Delete => {
                return Err(denial(
                    DenialReason::DeleteNotAllowed,
                    "patients may not delete resources",
                ));
            }
            Interaction::Create | Interaction::Update | Interaction::Patch => {}
            _ => return Err(denial(DenialReason::Malformed, "not a write interaction")),
        }
        if json::resource_type(new) != Some(resource_type) {
            return Err(denial(
                DenialReason::Malformed,
                "resource type does not match the request",
            ));
        }
        if rule_paths(resource_type).is_empty() {
            return Err(denial(
                DenialReason::WriteNotAllowed,
                format!("patients may not write {resource_type}"),
            ));
        }
        let Class::Compartment { links, standard } = self.classify(resource_type) else {
            return Err(denial(
                DenialReason::WriteNotAllowed,
                format!("patients may not write {resource_type}"),
            ));
        };
        if new.get("contained").is_some_and(|c| !c.is_null()) {
            return Err(rule("contained resources are not accepted from patients"));
        }
        let shaped_paths = links
            .iter()
            .flat_map(|l| l.paths.iter().copied())
            .chain(rule_paths(resource_type).iter().copied());
        for path in shaped_paths {
            for element in values_at(new, path) {
                if element.get("reference").and_then(Value::as_str).is_none() {
                    return Err(denial(
                        DenialReason::WriteRuleViolated,
                        format!("{resource_type}.{path} must be a literal reference"),
                    ));
                }
            }
        }

        let mut references = Vec::new();
        all_references(new, &mut references);
        let mut patients = BTreeSet::new();
        let mut to_verify: Vec<Reference> = Vec::new();
        for r in references {
            let parsed = Reference::parse(r).map_err(|_| {
                denial(
                    DenialReason::Malformed,
                    "resource holds a reference Portico cannot check",
                )
            })?;
            if !self.is_local(&parsed) {
                return Err(rule("references to other servers are not accepted"));
            }
            if parsed.resource_type == "Patient" {
                if !grants.is_own(&parsed.id) {
                    return Err(denial(
                        DenialReason::ForeignPatient,
                        "resource references a patient outside the principal's compartment",
                    ));
                }
                patients.insert(parsed.id);
            } else if matches!(
                self.classify(&parsed.resource_type),
                Class::Compartment { .. }
            ) {
                let plain = Reference::new(parsed.resource_type, parsed.id);
                if !to_verify.contains(&plain) {
                    to_verify.push(plain);
                }
            }
        }
        if to_verify.len() > MAX_VERIFIED_REFERENCES {
            return Err(rule("resource holds too many references"));
        }
        let mut patients = patients.into_iter();
        let (Some(patient), None) = (patients.next(), patients.next()) else {
            return Err(denial(
                DenialReason::NotInCompartment,
                "resource must reference exactly one of the principal's patients",
            ));
        };
        if !self.in_compartment(new, &links, standard, &patient) {
            return Err(denial(
                DenialReason::NotInCompartment,
                format!("{resource_type} is not in the patient compartment"),
            ));
        }
        if grants.level_refuses(&patient, resource_type, interaction) {
            return Err(proxy_refusal(resource_type));
        }
        let permission = grants.permission(&patient, resource_type, interaction);
        require(permission.clone(), resource_type, new)?;

        let current = match interaction {
            Interaction::Update | Interaction::Patch => {
                let current = current.ok_or_else(|| {
                    denial(
                        DenialReason::WriteNotAllowed,
                        "patients may only update existing resources",
                    )
                })?;
                if json::resource_type(current) != Some(resource_type)
                    || json::id(current).is_none()
                    || json::id(new) != json::id(current)
                {
                    return Err(denial(
                        DenialReason::Malformed,
                        "resource id does not match the current resource",
                    ));
                }
                if !self.in_compartment(current, &links, standard, &patient) {
                    return Err(denial(
                        DenialReason::NotInCompartment,
                        format!("{resource_type} is not in the patient compartment"),
                    ));
                }
                let mut current_refs = Vec::new();
                all_references(current, &mut current_refs);
                for r in current_refs {
                    if let Ok(parsed) = Reference::parse(r)
                        && parsed.resource_type == "Patient"
                        && !(parsed.id == patient && self.is_local(&parsed))
                    {
                        return Err(denial(
                            DenialReason::ForeignPatient,
                            "the current resource also belongs to someone else",
                        ));
                    }
                }
                require(permission, resource_type, current)?;
                Some(current)
            }
            _ => None,
        };

        type_rule(resource_type, interaction, new, current, &patient)?;
        Ok(WriteApproval {
            patient,
            references: to_verify,
        })
    }

    /// Checks one resource named by [`WriteApproval::references_to_verify`], as fetched
    /// (`None` when it does not exist): it must exist and be in the acting patient's
    /// compartment.
    pub fn verify_referenced(
        &self,
        approval: &WriteApproval,
        reference: &Reference,
        fetched: Option<&Value>,
    ) -> Result<(), Denial> {
        let not_in = || {
            denial(
                DenialReason::NotInCompartment,
                "a referenced resource is not in the patient compartment",
            )
        };
        let fetched = fetched.ok_or_else(not_in)?;
        if json::resource_type(fetched) != Some(reference.resource_type.as_str())
            || json::id(fetched) != Some(reference.id.as_str())
        {
            return Err(not_in());
        }
        match self.classify(&reference.resource_type) {
            Class::Compartment { links, standard }
                if self.in_compartment(fetched, &links, standard, &approval.patient) =>
            {
                Ok(())
            }
            _ => Err(not_in()),
        }
    }

    /// [`Policy::check_write`], then every referenced compartment resource fetched with
    /// `resolver` and verified. Nothing may be sent upstream unless this returns `Ok`.
    pub async fn authorize_write(
        &self,
        principal: &Principal,
        interaction: Interaction,
        resource_type: &str,
        new: &Value,
        current: Option<&Value>,
        resolver: &dyn ReferenceResolver,
    ) -> Result<(), WriteError> {
        let approval = self.check_write(principal, interaction, resource_type, new, current)?;
        for reference in approval.references_to_verify() {
            let fetched = resolver.resolve(reference).await?;
            self.verify_referenced(&approval, reference, fetched.as_ref())?;
        }
        Ok(())
    }
}

/// The per-type rules, with the acting patient known.
fn type_rule(
    resource_type: &str,
    interaction: Interaction,
    new: &Value,
    current: Option<&Value>,
    patient: &str,
) -> Result<(), Denial> {
    let creating = interaction == Interaction::Create;
    match resource_type {
        "Communication" => {
            if !creating {
                return Err(denial(
                    DenialReason::WriteNotAllowed,
                    "patients may only create Communication",
                ));
            }
            if !exactly_self(new, "sender", patient) {
                return Err(rule("Communication.sender must be the patient"));
            }
            if !exactly_self(new, "subject", patient) {
                return Err(rule("Communication.subject must be the patient"));
            }
            Ok(())
        }
        "Appointment" => match current {
            None => {
                if !matches!(
                    str_at(new, "status"),
                    Some("proposed" | "pending" | "booked")
                ) {
                    return Err(rule(
                        "a new Appointment must be proposed, pending or booked",
                    ));
                }
                Ok(())
            }
            Some(current) => {
                if !matches!(
                    str_at(current, "status"),
                    Some("proposed" | "pending" | "booked" | "waitlist")
                ) {
                    return Err(rule("this Appointment can no longer be cancelled"));
                }
                if str_at(new, "status") != Some("cancelled") {
                    return Err(rule("an Appointment may only be changed to cancelled"));
                }
                if new.get("cancelationReason").is_none_or(|r| !r.is_object()) {
                    return Err(rule("cancelling an Appointment needs a cancelationReason"));
                }
                let ignored = ["status", "cancelationReason", "meta", "text"];
                if without(new, &ignored) != without(current, &ignored) {
                    return Err(rule(
                        "cancelling an Appointment may not change anything else",
                    ));
                }
                Ok(())
            }
        },
        "MedicationRequest" => {
            if str_at(new, "intent") != Some("proposal") {
                return Err(rule(
                    "a patient's MedicationRequest must have intent proposal",
                ));
            }
            if !matches!(str_at(new, "status"), Some("draft" | "active")) {
                return Err(rule(
                    "a patient's MedicationRequest must be draft or active",
                ));
            }
            if !exactly_self(new, "subject", patient) {
                return Err(rule("MedicationRequest.subject must be the patient"));
            }
            for path in ["requester", "performer", "recorder"] {
                if !absent_or_self(new, path, patient) {
                    return Err(rule(
                        "a patient's MedicationRequest may only name the patient as requester, performer or recorder",
                    ));
                }
            }
            if let Some(current) = current
                && (str_at(current, "intent") != Some("proposal")
                    || !absent_or_self(current, "requester", patient))
            {
                return Err(rule("patients may only change their own proposals"));
            }
            Ok(())
        }
        "ServiceRequest" => {
            if str_at(new, "intent") != Some("proposal") {
                return Err(rule("a patient's ServiceRequest must have intent proposal"));
            }
            if !matches!(str_at(new, "status"), Some("draft" | "active")) {
                return Err(rule("a patient's ServiceRequest must be draft or active"));
            }
            if !exactly_self(new, "subject", patient) {
                return Err(rule("ServiceRequest.subject must be the patient"));
            }
            if !exactly_self(new, "requester", patient) {
                return Err(rule("ServiceRequest.requester must be the patient"));
            }
            if let Some(current) = current
                && (str_at(current, "intent") != Some("proposal")
                    || !exactly_self(current, "requester", patient))
            {
                return Err(rule("patients may only change their own proposals"));
            }
            Ok(())
        }
        "Task" => {
            if !exactly_self(new, "for", patient) || !exactly_self(new, "requester", patient) {
                return Err(rule("Task.for and Task.requester must be the patient"));
            }
            if let Some(current) = current
                && (!exactly_self(current, "for", patient)
                    || !exactly_self(current, "requester", patient))
            {
                return Err(rule("patients may only change their own Tasks"));
            }
            Ok(())
        }
        _ => Err(denial(
            DenialReason::WriteNotAllowed,
            format!("patients may not write {resource_type}"),
        )),
    }
}
