//! Access decisions: what a [`Principal`] may read, search and write.
//!
//! The [`Policy`] knows the local server's base URL(s) (the upstream EHR's FHIR base, and
//! the gateway's own public base when absolute references may use it) and the explicit
//! links that put types outside the R4 Patient compartment into it ([`ExtraLink`]). It
//! answers four questions, each without I/O:
//!
//! - [`Policy::check_read`]: may this resource leave the gateway for this principal?
//! - [`Policy::narrow_search`] (in `search.rs`): what search is sent upstream instead of
//!   the one asked for, or is it refused?
//! - [`Policy::verify_bundle`]: drop every Bundle entry `check_read` refuses.
//! - [`Policy::check_write`] (in `write.rs`): may this create, update or patch go upstream?
//!
//! Resource types fall in four classes:
//!
//! - `Patient`: only the principal's own patients, by id (`Patient.link` does not make
//!   another patient readable);
//! - patient-compartment types (the R4 `CompartmentDefinition`, plus [`ExtraLink`]s): a
//!   compartment element must reference one of the principal's patients, compared as
//!   parsed references (relative, or absolute on a local base), and no compartment
//!   element may name another patient (a resource shared with someone else — a group
//!   appointment, a Group — would reveal them, so it is refused: stricter than R4);
//! - reference data ([`REFERENCE_DATA_TYPES`]): readable with a read scope for the type;
//!   a Schedule whose actor is a patient must name one of the principal's patients;
//! - everything else, and the security records of [`SECURITY_TYPES`] although R4 puts
//!   them in the compartment: denied.
//!
//! A read denial must look exactly like a missing resource: the gateway answers 404 for
//! any [`Denial`] on read, vread and history, never 403, so that a foreign id cannot be
//! probed. Searches and writes that are refused get 403 (or 400 for
//! [`DenialReason::Malformed`] and [`DenialReason::UnsupportedSearch`]).

use std::borrow::Cow;

use portico_fhir::compartment::{in_patient_compartment, patient_links};
use portico_fhir::json;
use portico_fhir::reference::Reference;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::delegation::{ProxyGrant, is_labelled};
use crate::filter::any_matches;
use crate::principal::Principal;
use crate::scopes::{Context, Interaction, Permission};

/// Types in the R4 Patient compartment that are never served to patients: security
/// records. An AuditEvent names everyone an access involved (a proxy's other patients,
/// the client, the gateway instance), and the gateway itself writes AuditEvents to the
/// EHR when its `fhir` audit sink points there; an accounting of disclosures is the
/// hospital's process, not a search.
pub const SECURITY_TYPES: &[&str] = &["AuditEvent"];

/// Types outside the patient compartment that patients may read with a read scope for the
/// type: the directory data a portal needs to show who and where.
pub use portico_fhir::compartment::REFERENCE_DATA_TYPES;

/// Why a request or resource is refused. Stable, for audit records and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenialReason {
    /// The principal has no patient context this policy can use.
    NoPatientContext,
    /// No scope grants this interaction on this type for this patient.
    ScopeMissing,
    /// The resource is not in any of the principal's patient compartments.
    NotInCompartment,
    /// The request names a patient that is not the principal's.
    ForeignPatient,
    /// The resource type is never accessible to patients.
    TypeNotAccessible,
    /// A granular scope's filter does not match.
    FilterMismatch,
    /// A search feature Portico refuses (`_filter`, `_query`, `_contained`, …).
    UnsupportedSearch,
    /// The request or resource is malformed (bad reference, wrong type, …).
    Malformed,
    /// Patients may not write this type, or this interaction on it.
    WriteNotAllowed,
    /// The write breaks a rule for its type (intent, requester, status, …).
    WriteRuleViolated,
    /// Patients may never delete.
    DeleteNotAllowed,
    /// The principal acts for this patient as a proxy whose access level does not allow
    /// it (a read-only proxy writing, a billing-only proxy and clinical data).
    ProxyNotPermitted,
}

impl DenialReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::NoPatientContext => "no-patient-context",
            DenialReason::ScopeMissing => "scope-missing",
            DenialReason::NotInCompartment => "not-in-compartment",
            DenialReason::ForeignPatient => "foreign-patient",
            DenialReason::TypeNotAccessible => "type-not-accessible",
            DenialReason::FilterMismatch => "filter-mismatch",
            DenialReason::UnsupportedSearch => "unsupported-search",
            DenialReason::Malformed => "malformed",
            DenialReason::WriteNotAllowed => "write-not-allowed",
            DenialReason::WriteRuleViolated => "write-rule-violated",
            DenialReason::DeleteNotAllowed => "delete-not-allowed",
            DenialReason::ProxyNotPermitted => "proxy-not-permitted",
        }
    }
}

/// A refusal: a machine reason and a log-safe message. Messages name resource types,
/// parameter names and rules, never ids of other patients, parameter values or bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    reason: DenialReason,
    message: Cow<'static, str>,
}

impl Denial {
    pub fn new(reason: DenialReason, message: impl Into<Cow<'static, str>>) -> Denial {
        Denial {
            reason,
            message: message.into(),
        }
    }

    pub fn reason(&self) -> DenialReason {
        self.reason
    }

    /// The log-safe message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// An explicit rule that puts a type outside the R4 Patient compartment into it: the
/// resource is in patient P's compartment when a reference at one of `paths` is
/// `Patient/P`, and searches are narrowed with `param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraLink {
    pub resource_type: String,
    /// The search parameter that selects by that reference (`patient` for Task).
    pub param: String,
    /// Dot-separated element paths.
    pub paths: Vec<String>,
}

impl ExtraLink {
    /// `Task` whose `for` is the patient (searched with `patient`).
    pub fn task_for() -> ExtraLink {
        ExtraLink {
            resource_type: "Task".into(),
            param: "patient".into(),
            paths: vec!["for".into()],
        }
    }
}

/// One compartment link, borrowed from the R4 table or an [`ExtraLink`].
#[derive(Debug, Clone)]
pub(crate) struct LinkView<'a> {
    pub(crate) param: &'a str,
    pub(crate) paths: Vec<&'a str>,
}

/// How a resource type is treated.
#[derive(Debug)]
pub(crate) enum Class<'a> {
    Patient,
    /// `standard`: whether the links come only from the R4 table.
    Compartment {
        links: Vec<LinkView<'a>>,
        standard: bool,
    },
    /// Reference data; `links` are its R4 compartment links (Schedule.actor), if any.
    ReferenceData {
        links: Vec<LinkView<'a>>,
    },
    Other,
}

/// The patient compartments a principal acts in, and which scopes apply to each.
#[derive(Debug)]
pub(crate) struct Grants<'p> {
    principal: &'p Principal,
    /// The `fhirUser` patient on a local base, where `user/` scopes apply.
    user_patient: Option<&'p str>,
}

impl<'p> Grants<'p> {
    /// Every patient the principal acts for, without duplicates.
    pub(crate) fn own(&self) -> Vec<&'p str> {
        let mut own: Vec<&str> = self.principal.patients.iter().map(String::as_str).collect();
        if let Some(u) = self.user_patient
            && !own.contains(&u)
        {
            own.push(u);
        }
        own
    }

    pub(crate) fn is_own(&self, id: &str) -> bool {
        self.principal.patients.iter().any(|p| p == id) || self.user_patient == Some(id)
    }

    /// The grant under which the principal acts for `patient` as a proxy. The
    /// `fhirUser` patient is always the principal's own, whatever the token claims.
    pub(crate) fn proxy(&self, patient: &str) -> Option<&'p ProxyGrant> {
        if self.user_patient == Some(patient) {
            return None;
        }
        self.principal.proxy_for(patient)
    }

    /// Whether some patient of the principal is one it acts for as a proxy whose
    /// records are partly withheld: searches that could reveal withheld records by
    /// their effect (counts, `_has`, chains) are refused for it.
    pub(crate) fn withholds(&self) -> bool {
        // Every Bundle asks: an ordinary login answers without a walk.
        if self.principal.proxies.is_empty() {
            return false;
        }
        self.own()
            .into_iter()
            .any(|p| self.proxy(p).is_some_and(|g| !g.withheld.is_empty()))
    }

    /// Whether `resource`, in `patient`'s compartment, is withheld from the principal
    /// as that patient's proxy: a type its level does not read, or a record carrying a
    /// withheld security label.
    pub(crate) fn withheld(&self, patient: &str, resource_type: &str, resource: &Value) -> bool {
        self.proxy(patient)
            .is_some_and(|g| !g.level.may_read(resource_type) || is_labelled(resource, &g.withheld))
    }

    /// Whether the proxy level for `patient` refuses `interaction` on `resource_type`.
    pub(crate) fn level_refuses(
        &self,
        patient: &str,
        resource_type: &str,
        interaction: Interaction,
    ) -> bool {
        self.proxy(patient).is_some_and(|g| match interaction {
            Interaction::Create
            | Interaction::Update
            | Interaction::Patch
            | Interaction::Delete => !g.level.may_write(resource_type),
            _ => !g.level.may_read(resource_type),
        })
    }

    /// The permission for `interaction` on `resource_type` in `patient`'s compartment.
    pub(crate) fn permission(
        &self,
        patient: &str,
        resource_type: &str,
        interaction: Interaction,
    ) -> Permission {
        let scopes = &self.principal.scopes;
        let mut permission = Permission::Denied;
        if self.level_refuses(patient, resource_type, interaction) {
            return permission;
        }
        if self.principal.patients.iter().any(|p| p == patient) {
            permission =
                permission.union(scopes.permission(Context::Patient, resource_type, interaction));
        }
        if self.user_patient == Some(patient) {
            permission =
                permission.union(scopes.permission(Context::User, resource_type, interaction));
        }
        permission
    }

    /// The permission for reference data, which belongs to no compartment.
    pub(crate) fn reference_permission(
        &self,
        resource_type: &str,
        interaction: Interaction,
    ) -> Permission {
        let scopes = &self.principal.scopes;
        let mut permission = Permission::Denied;
        if !self.principal.patients.is_empty() {
            permission =
                permission.union(scopes.permission(Context::Patient, resource_type, interaction));
        }
        if self.user_patient.is_some() {
            permission =
                permission.union(scopes.permission(Context::User, resource_type, interaction));
        }
        permission
    }
}

/// The outcome of [`Policy::verify_bundle`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries kept (OperationOutcome entries included).
    pub kept: usize,
    /// Entries removed: refused by `check_read`, or without a resource.
    pub removed: usize,
    /// The value was not a Bundle at all and was replaced by an empty searchset.
    pub replaced: bool,
}

/// The access policy of one gateway. Cheap to clone; holds no principal.
#[derive(Debug, Clone)]
pub struct Policy {
    local_bases: Vec<String>,
    extra_links: Vec<ExtraLink>,
}

impl Policy {
    /// A policy for the upstream server at `upstream_base` (its FHIR base URL). Absolute
    /// references count as local only on a local base; relative ones always do.
    pub fn new(upstream_base: impl Into<String>) -> Policy {
        Policy {
            local_bases: vec![upstream_base.into().trim_end_matches('/').to_owned()],
            extra_links: Vec::new(),
        }
    }

    /// Another base under which absolute references name local resources (the gateway's
    /// public `/fhir` base, for resources written through it).
    pub fn with_local_base(mut self, base: impl Into<String>) -> Policy {
        self.local_bases
            .push(base.into().trim_end_matches('/').to_owned());
        self
    }

    /// Puts a type outside the R4 Patient compartment into it (see [`ExtraLink`]).
    /// Ignored for `Patient` and for reference-data types.
    pub fn with_link(mut self, link: ExtraLink) -> Policy {
        if link.resource_type != "Patient"
            && !REFERENCE_DATA_TYPES.contains(&link.resource_type.as_str())
            && !SECURITY_TYPES.contains(&link.resource_type.as_str())
            && portico_fhir::resource_types::is_known(&link.resource_type)
        {
            self.extra_links.push(link);
        }
        self
    }

    pub(crate) fn classify<'a>(&'a self, resource_type: &str) -> Class<'a> {
        if resource_type == "Patient" {
            return Class::Patient;
        }
        if SECURITY_TYPES.contains(&resource_type) {
            return Class::Other;
        }
        let standard: Vec<LinkView<'a>> = patient_links(resource_type)
            .unwrap_or_default()
            .iter()
            .map(|l| LinkView {
                param: l.param,
                paths: l.paths.to_vec(),
            })
            .collect();
        if REFERENCE_DATA_TYPES.contains(&resource_type) {
            return Class::ReferenceData { links: standard };
        }
        let extra: Vec<LinkView<'a>> = self
            .extra_links
            .iter()
            .filter(|l| l.resource_type == resource_type)
            .map(|l| LinkView {
                param: &l.param,
                paths: l.paths.iter().map(String::as_str).collect(),
            })
            .collect();
        if standard.is_empty() && extra.is_empty() {
            return Class::Other;
        }
        let only_standard = extra.is_empty();
        let mut links = standard;
        links.extend(extra);
        Class::Compartment {
            links,
            standard: only_standard,
        }
    }

    /// The top-level members of a `resource_type` resource that the read check looks at:
    /// the type, the id, `meta` (security labels), every element a compartment link
    /// (R4's and the configured extra ones, as `classify` gives them) walks, and — when
    /// `filtered`, i.e. the principal holds a scope with a filter — every element a scope
    /// filter on that type can walk (without a filtered scope no filter is evaluated).
    /// [`Policy::verify_bundle_bytes`] parses only these of an entry, so this must name
    /// everything `check_read_class` reads: a member missing here is one the check would
    /// not see.
    pub(crate) fn members_read_by_check(&self, resource_type: &str, filtered: bool) -> Vec<String> {
        let mut members: Vec<String> = vec!["resourceType".into(), "id".into(), "meta".into()];
        let links = match self.classify(resource_type) {
            Class::Compartment { links, .. } | Class::ReferenceData { links } => links,
            Class::Patient | Class::Other => Vec::new(),
        };
        let mut add = |path: &str| {
            let first = path.split(['.', '[']).next().unwrap_or(path);
            if !members.iter().any(|m| m == first) {
                members.push(first.to_owned());
            }
        };
        links
            .iter()
            .flat_map(|l| l.paths.iter())
            .for_each(|p| add(p));
        if filtered {
            crate::filter::paths_read_by_filters(resource_type).for_each(add);
        }
        members
    }

    pub(crate) fn grants<'p>(&self, principal: &'p Principal) -> Result<Grants<'p>, Denial> {
        let user_patient = principal
            .fhir_user
            .as_ref()
            .filter(|r| r.resource_type == "Patient" && self.is_local(r))
            .map(|r| r.id.as_str());
        if principal.patients.is_empty() && user_patient.is_none() {
            return Err(Denial::new(
                DenialReason::NoPatientContext,
                "principal has no patient context",
            ));
        }
        Ok(Grants {
            principal,
            user_patient,
        })
    }

    /// Whether a reference names a resource on this server.
    pub(crate) fn is_local(&self, reference: &Reference) -> bool {
        self.local_bases.iter().any(|b| reference.is_local_to(b))
    }

    /// Whether `resource` is in `patient`'s compartment through one of `links`.
    pub(crate) fn in_compartment(
        &self,
        resource: &Value,
        links: &[LinkView<'_>],
        standard: bool,
        patient: &str,
    ) -> bool {
        if standard {
            return self
                .local_bases
                .iter()
                .any(|b| in_patient_compartment(resource, patient, Some(b)));
        }
        links.iter().flat_map(|l| l.paths.iter()).any(|path| {
            json::references_at(resource, path).into_iter().any(|r| {
                Reference::parse(r).is_ok_and(|r| r.is("Patient", patient) && self.is_local(&r))
            })
        })
    }

    /// Whether a compartment element of `resource` references a Patient that is not one
    /// of the principal's (or is on another server).
    fn names_other_patient(
        &self,
        grants: &Grants<'_>,
        resource: &Value,
        links: &[LinkView<'_>],
    ) -> bool {
        links.iter().flat_map(|l| l.paths.iter()).any(|path| {
            json::references_at(resource, path).into_iter().any(|r| {
                Reference::parse(r).is_ok_and(|r| {
                    r.resource_type == "Patient" && !(self.is_local(&r) && grants.is_own(&r.id))
                })
            })
        })
    }

    /// May `resource` be returned to `principal` (read, vread, history, or as a search or
    /// history entry)? Needs the `r` letter for its type.
    pub fn check_read(&self, principal: &Principal, resource: &Value) -> Result<(), Denial> {
        let grants = self.grants(principal)?;
        let Some(resource_type) = json::resource_type(resource) else {
            return Err(Denial::new(DenialReason::Malformed, "resource has no type"));
        };
        self.check_read_class(&grants, resource_type, resource, Interaction::Read)
    }

    /// [`Policy::check_read`] for a read by id: the resource must also be the one asked for
    /// (an upstream answering with another resource is refused like a foreign one).
    pub fn check_read_at(
        &self,
        principal: &Principal,
        requested: &Reference,
        resource: &Value,
    ) -> Result<(), Denial> {
        if json::resource_type(resource) != Some(requested.resource_type.as_str())
            || json::id(resource) != Some(requested.id.as_str())
        {
            return Err(Denial::new(
                DenialReason::Malformed,
                "resource is not the one requested",
            ));
        }
        self.check_read(principal, resource)
    }

    /// `interaction` is `Read`, or `Search` for the matches of a search (a `s`-only scope
    /// may see what its searches match, but not what they `_include`).
    fn check_read_class(
        &self,
        grants: &Grants<'_>,
        resource_type: &str,
        resource: &Value,
        interaction: Interaction,
    ) -> Result<(), Denial> {
        let not_in = || {
            Denial::new(
                DenialReason::NotInCompartment,
                format!("{resource_type} is not in the patient compartment"),
            )
        };
        match self.classify(resource_type) {
            Class::Patient => {
                let id = json::id(resource)
                    .filter(|id| grants.is_own(id))
                    .ok_or_else(not_in)?;
                require(
                    grants.permission(id, resource_type, interaction),
                    resource_type,
                    resource,
                )
            }
            Class::Compartment { links, standard } => {
                // Shared with someone else (a group appointment, a Group listing other
                // members): it would reveal the other patient, so it is not the
                // principal's to read.
                if self.names_other_patient(grants, resource, &links) {
                    return Err(not_in());
                }
                // The principal's patients whose compartment holds the resource.
                let holders: Vec<&str> = grants
                    .own()
                    .into_iter()
                    .filter(|p| self.in_compartment(resource, &links, standard, p))
                    .collect();
                // Withheld from a proxy (a sensitive record, or a type its level does
                // not read): exactly like a resource of someone else.
                if !grants.principal.proxies.is_empty()
                    && holders
                        .iter()
                        .any(|p| grants.withheld(p, resource_type, resource))
                {
                    return Err(not_in());
                }
                let mut denial = not_in();
                for patient in holders {
                    match require(
                        grants.permission(patient, resource_type, interaction),
                        resource_type,
                        resource,
                    ) {
                        Ok(()) => return Ok(()),
                        Err(d) => denial = d,
                    }
                }
                Err(denial)
            }
            Class::ReferenceData { links } => {
                require(
                    grants.reference_permission(resource_type, interaction),
                    resource_type,
                    resource,
                )?;
                // Reference data that names a patient (a patient's own Schedule) is that
                // patient's: every patient it names must be the principal's.
                if self.names_other_patient(grants, resource, &links) {
                    return Err(not_in());
                }
                Ok(())
            }
            Class::Other => Err(Denial::new(
                DenialReason::TypeNotAccessible,
                format!("{resource_type} is not accessible to patients"),
            )),
        }
    }

    /// Removes from a searchset or history Bundle every entry the principal may not read,
    /// and every entry without a resource (a history delete would reveal an id).
    /// OperationOutcome entries are kept. When entries were removed, `total` is corrected
    /// on a single-page Bundle and removed otherwise. A value that is not a Bundle is
    /// replaced by an empty searchset. The gateway calls this (or its entry-by-entry twin
    /// on the bytes, [`Policy::verify_bundle_bytes`]) on every Bundle leaving it.
    pub fn verify_bundle(&self, principal: &Principal, bundle: &mut Value) -> VerifyReport {
        let mut report = VerifyReport::default();
        if json::resource_type(bundle) != Some("Bundle") {
            *bundle = portico_fhir::bundle::searchset(Some(0), &[], vec![]);
            report.removed = 1;
            report.replaced = true;
            return report;
        }
        let grants = self.grants(principal);
        let searchset = is_searchset(bundle);
        if let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) {
            entries.retain(|entry| {
                let keep = self.keeps_entry(&grants, searchset, entry);
                if keep {
                    report.kept += 1;
                } else {
                    report.removed += 1;
                }
                keep
            });
        } else if bundle.get("entry").is_some_and(|e| !e.is_null()) {
            // An `entry` that is not an array cannot be verified entry by entry.
            if let Some(map) = bundle.as_object_mut() {
                map.remove("entry");
            }
            report.removed += 1;
        }
        correct_total(bundle, &grants, report, |bundle| {
            bundle
                .get("entry")
                .and_then(Value::as_array)
                .map_or(0, |entries| {
                    entries.iter().filter(|e| counts_as_match(e)).count()
                })
        });
        report
    }

    /// Whether one entry of a Bundle may leave: it has a resource, and that resource is
    /// an OperationOutcome or one the principal may read (a search match as a search,
    /// anything else as a read).
    pub(crate) fn keeps_entry(
        &self,
        grants: &Result<Grants<'_>, Denial>,
        searchset: bool,
        entry: &Value,
    ) -> bool {
        let is_match = searchset
            && entry
                .get("search")
                .and_then(|s| s.get("mode"))
                .and_then(Value::as_str)
                != Some("include");
        let interaction = if is_match {
            Interaction::Search
        } else {
            Interaction::Read
        };
        match entry.get("resource") {
            None => false,
            Some(resource) => match json::resource_type(resource) {
                Some("OperationOutcome") => true,
                Some(t) => grants
                    .as_ref()
                    .is_ok_and(|g| self.check_read_class(g, t, resource, interaction).is_ok()),
                None => false,
            },
        }
    }
}

/// Whether a Bundle is a searchset (its entries are matches unless marked otherwise).
pub(crate) fn is_searchset(bundle: &Value) -> bool {
    bundle.get("type").and_then(Value::as_str) == Some("searchset")
}

/// Whether a kept entry counts in a corrected `total`: not an include, not an outcome.
pub(crate) fn counts_as_match(entry: &Value) -> bool {
    !matches!(
        entry
            .get("search")
            .and_then(|s| s.get("mode"))
            .and_then(Value::as_str),
        Some("include" | "outcome")
    ) && entry.get("resource").and_then(json::resource_type) != Some("OperationOutcome")
}

/// After verification: a Bundle whose entries were removed (or whose principal has
/// records withheld) keeps no `total` when paged, and the count of its kept matches
/// (`matches`, asked only then) when it is a single page.
pub(crate) fn correct_total(
    bundle: &mut Value,
    grants: &Result<Grants<'_>, Denial>,
    report: VerifyReport,
    matches: impl FnOnce(&Value) -> usize,
) {
    // A proxy's withheld records may sit on another page of a paged search: its
    // `total` would count them, so a paged Bundle never carries one for it.
    let withholds = grants.as_ref().is_ok_and(Grants::withholds);
    if (report.removed > 0 || withholds) && bundle.get("total").is_some() {
        let paged = ["next", "previous", "prev"]
            .iter()
            .any(|rel| portico_fhir::bundle::link(bundle, rel).is_some());
        if paged {
            if let Some(map) = bundle.as_object_mut() {
                map.remove("total");
            }
        } else {
            let matches = matches(bundle);
            bundle["total"] = Value::from(matches);
        }
    }
}

/// An allowed permission whose filters `resource` satisfies, or the denial.
pub(crate) fn require(
    permission: Permission,
    resource_type: &str,
    resource: &Value,
) -> Result<(), Denial> {
    match permission {
        Permission::Denied => Err(Denial::new(
            DenialReason::ScopeMissing,
            format!("no scope grants this interaction on {resource_type}"),
        )),
        Permission::Allowed { filters } if any_matches(&filters, resource) => Ok(()),
        Permission::Allowed { .. } => Err(Denial::new(
            DenialReason::FilterMismatch,
            format!("{resource_type} does not match the granted scope filters"),
        )),
    }
}

#[cfg(test)]
mod proxies;
#[cfg(test)]
mod tests;
