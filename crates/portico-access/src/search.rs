//! Search narrowing: the search Portico sends upstream instead of the one it was asked.
//!
//! Narrowing is the first line; [`Policy::verify_bundle`] on every returned Bundle is the
//! guarantee (an upstream that ignores a parameter cannot widen what leaves the gateway).
//!
//! Rules, per parameter (names and values already percent-decoded once by the gateway,
//! which must re-encode them when forwarding):
//!
//! - **Patient restriction.** For patient-compartment types the restriction is *present*
//!   when a direct compartment parameter (`patient`, `subject`, `actor`, … as listed in
//!   the R4 `CompartmentDefinition`, unmodified or `:Patient`) names only the principal's
//!   patients, as `Patient/x` (relative or absolute on a local base) or as a bare id where
//!   the parameter only targets Patient (`patient=x`, `subject:Patient=x`). Otherwise it is
//!   added: `patient=Patient/x` where the type has a `patient` parameter, else its first
//!   compartment parameter. For `Patient` the restriction is `_id`.
//! - **Naming another patient is refused, never rewritten**: any value, of any
//!   parameter (chained, `_has`, `_list`, …), that is a Patient reference must name one of
//!   the principal's patients on a local base; a bare id on a parameter that targets
//!   Patient (or on a direct compartment parameter, which may target Patient) likewise.
//!   A value that mentions `Patient/` but does not parse is refused as malformed.
//! - **Modifiers on compartment parameters**: none, `:Patient` or another resource type.
//!   `:identifier` (selects a patient by a key Portico cannot check), `:missing`, `:not`,
//!   `:above`, `:below`, `:text` and any other modifier are refused.
//! - **Chained parameters**: a chain through the patient link itself (`subject.name=`,
//!   `patient.identifier=`) is refused — it selects patients by keys Portico cannot check.
//!   Other chains (`encounter.date=`, `performer.name=`) are allowed up to three hops on
//!   patient-compartment searches, because the restriction on the searched type still
//!   applies; the chain can only select among the patient's own resources.
//!   On reference-data searches only one hop, never through a compartment parameter
//!   (`Schedule?actor.name=`) nor into Patient: those would probe other patients.
//! - **`_has`**: allowed on `Patient` and patient-compartment searches (results are still
//!   the patient's own), when the source type is a patient-compartment type the principal
//!   may search, one level deep, unchained; its values follow the naming rule. Refused on
//!   reference data (`Practitioner?_has:Observation:performer:code=…` would reveal other
//!   patients' data).
//! - **`_include`, `_revinclude`** (with `:iterate`/`:recurse`): allowed with a well-formed
//!   `Type:param[:Target]`; every included resource is verified on the way out. The `*`
//!   wildcard is refused.
//! - **Refused outright**: `_filter` (an expression language outside these checks),
//!   `_query` (named queries with server-defined semantics), `_contained` and
//!   `_containedType` (would return contained resources as entries, out of their
//!   container's compartment), `_type` (system-level), and any unknown `_` parameter.
//! - **Granular scopes** are added as parameters when they can be expressed (one filter,
//!   or single-condition filters on the same parameter as an OR list); otherwise only
//!   outbound verification applies them. When `_elements` is given, the compartment and
//!   filter elements are added to it so that verification can see them.

use portico_fhir::reference::{Reference, is_valid_id};
use portico_fhir::resource_types::is_known;
use portico_fhir::search::split_or;

use crate::filter::{Filter, filter_paths};
use crate::policy::{Class, Denial, DenialReason, Grants, LinkView, Policy};
use crate::principal::Principal;
use crate::scopes::{Interaction, Permission};

/// Types with an R4 `patient` search parameter (Patient targets only) that the
/// compartment table does not list under that name.
const PATIENT_PARAM_TYPES: &[&str] = &[
    "Account",
    "Appointment",
    "AppointmentResponse",
    "ChargeItem",
    "ClinicalImpression",
    "Communication",
    "CommunicationRequest",
    "Composition",
    "Coverage",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EnrollmentRequest",
    "List",
    "Media",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "QuestionnaireResponse",
    "ResearchSubject",
    "RiskAssessment",
    "ServiceRequest",
    "Specimen",
];

/// Result and common parameters accepted as they are (values still checked).
const PLAIN_UNDERSCORE_PARAMS: &[&str] = &[
    "_at",
    "_content",
    "_count",
    "_format",
    "_id",
    "_lastUpdated",
    "_list",
    "_pretty",
    "_profile",
    "_security",
    "_since",
    "_sort",
    "_source",
    "_summary",
    "_tag",
    "_text",
    "_total",
];

/// How many parameter names a chain may have (`a.b.c` is three).
const MAX_CHAIN: usize = 3;

/// A value of a search parameter, as far as patients are concerned.
#[derive(Debug, PartialEq, Eq)]
enum Named {
    /// Names one of the principal's patients unambiguously.
    Own(String),
    /// A bare own id on a parameter that may also target other types.
    OwnAmbiguous,
    /// Names no patient.
    Other,
}

fn unsupported(message: impl Into<std::borrow::Cow<'static, str>>) -> Denial {
    Denial::new(DenialReason::UnsupportedSearch, message)
}

fn malformed(message: impl Into<std::borrow::Cow<'static, str>>) -> Denial {
    Denial::new(DenialReason::Malformed, message)
}

fn foreign() -> Denial {
    Denial::new(
        DenialReason::ForeignPatient,
        "search names a patient outside the principal's compartment",
    )
}

fn is_param_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn is_simple_param(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Whether a value looks like it means to reference a Patient (so it must parse as one).
fn mentions_patient(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    lower.contains("patient/") || lower.contains("patient%2f")
}

struct Narrowing<'a, 'p> {
    policy: &'a Policy,
    grants: Grants<'p>,
    resource_type: &'a str,
    class: Class<'a>,
}

impl Narrowing<'_, '_> {
    fn links(&self) -> &[LinkView<'_>] {
        match &self.class {
            Class::Compartment { links, .. } | Class::ReferenceData { links } => links,
            Class::Patient | Class::Other => &[],
        }
    }

    fn is_compartment_param(&self, base: &str) -> bool {
        self.links().iter().any(|l| l.param == base)
    }

    /// Parameters whose presence with own patients restricts a compartment search.
    fn is_restriction_param(&self, base: &str) -> bool {
        matches!(self.class, Class::Compartment { .. })
            && (self.is_compartment_param(base)
                || (base == "patient" && PATIENT_PARAM_TYPES.contains(&self.resource_type)))
    }

    /// Classifies one OR alternative. `patient_typed`: a bare value is a Patient id.
    /// `ambiguous_bare`: a bare value may be a Patient id (direct compartment parameter).
    fn classify(
        &self,
        alternative: &str,
        patient_typed: bool,
        ambiguous_bare: bool,
    ) -> Result<Named, Denial> {
        let parsed = Reference::parse(alternative);
        if mentions_patient(alternative) || parsed.is_ok() {
            return match parsed {
                Ok(r) if r.resource_type == "Patient" => {
                    if !self.policy.is_local(&r) || !self.grants.is_own(&r.id) {
                        Err(foreign())
                    } else {
                        Ok(Named::Own(r.id))
                    }
                }
                Ok(_) => Ok(Named::Other),
                Err(_) => Err(malformed("malformed patient reference in search")),
            };
        }
        if patient_typed || ambiguous_bare {
            if !is_valid_id(alternative) {
                return Err(malformed("malformed patient id in search"));
            }
            if !self.grants.is_own(alternative) {
                return Err(foreign());
            }
            return Ok(if patient_typed {
                Named::Own(alternative.to_owned())
            } else {
                Named::OwnAmbiguous
            });
        }
        Ok(Named::Other)
    }

    fn classify_all(
        &self,
        value: &str,
        patient_typed: bool,
        ambiguous_bare: bool,
    ) -> Result<Vec<Named>, Denial> {
        let alternatives = split_or(value);
        if alternatives.is_empty() && (patient_typed || ambiguous_bare) {
            return Err(malformed("empty patient parameter"));
        }
        alternatives
            .iter()
            .map(|alt| self.classify(alt, patient_typed, ambiguous_bare))
            .collect()
    }

    fn check_include(&self, modifier: Option<&str>, value: &str) -> Result<(), Denial> {
        if !matches!(modifier, None | Some("iterate" | "recurse")) {
            return Err(unsupported("unsupported _include modifier"));
        }
        if value.contains('*') {
            return Err(unsupported("wildcard _include is not supported"));
        }
        let parts: Vec<&str> = value.split(':').collect();
        let ok = match parts.as_slice() {
            [t, p] => is_known(t) && is_simple_param(p),
            [t, p, target] => is_known(t) && is_simple_param(p) && is_known(target),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(malformed("malformed _include value"))
        }
    }

    fn check_has(&self, name: &str, value: &str) -> Result<(), Denial> {
        if !matches!(self.class, Class::Patient | Class::Compartment { .. }) {
            return Err(unsupported(
                "_has is only supported on patient-compartment searches",
            ));
        }
        let rest = name
            .strip_prefix("_has:")
            .ok_or_else(|| malformed("malformed _has parameter"))?;
        let mut parts = rest.splitn(3, ':');
        let (Some(source), Some(reference_param), Some(inner)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("malformed _has parameter"));
        };
        if inner.starts_with("_has") {
            return Err(unsupported("nested _has is not supported"));
        }
        if inner.contains('.') || !is_simple_param(reference_param) {
            return Err(unsupported("chained _has is not supported"));
        }
        if !is_known(source) {
            return Err(malformed("unknown resource type in _has"));
        }
        let source_class = self.policy.classify(source);
        let Class::Compartment { links, .. } = &source_class else {
            return Err(unsupported(
                "_has source must be a patient-compartment type",
            ));
        };
        let may_search = self.grants.own().into_iter().any(|p| {
            self.grants
                .permission(p, source, Interaction::Search)
                .is_allowed()
        });
        if !may_search {
            return Err(Denial::new(
                DenialReason::ScopeMissing,
                format!("no scope grants search on {source}"),
            ));
        }
        let (inner_base, inner_modifier) = match inner.split_once(':') {
            Some((b, m)) => (b, Some(m)),
            None => (inner, None),
        };
        if !is_simple_param(inner_base) {
            return Err(malformed("malformed _has parameter"));
        }
        let inner_is_compartment = links.iter().any(|l| l.param == inner_base);
        if inner_is_compartment && inner_modifier.is_some_and(|m| m != "Patient" && !is_known(m)) {
            return Err(unsupported(
                "modifier not supported on a compartment parameter",
            ));
        }
        let patient_typed = inner_base == "patient" || inner_modifier == Some("Patient");
        self.classify_all(
            value,
            patient_typed,
            inner_is_compartment && inner_modifier.is_none(),
        )?;
        Ok(())
    }

    fn check_chain(&self, head: &str, tail: &str, value: &str) -> Result<(), Denial> {
        let (base, modifier) = split_modifier(head);
        let segments: Vec<&str> = tail.split('.').collect();
        if segments.len() + 1 > MAX_CHAIN {
            return Err(unsupported(
                "chains longer than three parameters are not supported",
            ));
        }
        if segments
            .iter()
            .any(|s| s.is_empty() || s.starts_with("_has") || s.starts_with("_filter"))
            || base.is_empty()
        {
            return Err(unsupported("unsupported chained parameter"));
        }
        match &self.class {
            Class::ReferenceData { .. } => {
                if segments.len() > 1
                    || self.is_compartment_param(base)
                    || base == "patient"
                    || modifier == Some("Patient")
                {
                    return Err(unsupported(
                        "this chained parameter is not supported on reference data",
                    ));
                }
            }
            Class::Compartment { .. } | Class::Patient => {
                // A chain through the patient link (`subject.identifier=`,
                // `patient.name=`) selects patients by keys Portico cannot check, and
                // can only ever match the principal's own patient anyway: refused, so
                // that a probe for another patient is an explicit refusal, not an
                // empty result.
                if self.is_restriction_param(base)
                    || self.is_compartment_param(base)
                    || base == "patient"
                {
                    return Err(unsupported(
                        "chained searches through the patient reference are not supported; results are already limited to your own record",
                    ));
                }
                if self.is_restriction_param(base)
                    && modifier.is_some_and(|m| m != "Patient" && !is_known(m))
                {
                    return Err(unsupported(
                        "modifier not supported on a compartment parameter",
                    ));
                }
            }
            Class::Other => return Err(unsupported("unsupported chained parameter")),
        }
        let last = segments.last().copied().unwrap_or_default();
        let (final_base, final_modifier) = split_modifier(last);
        let previous_modifier = if segments.len() >= 2 {
            split_modifier(segments[segments.len() - 2]).1
        } else {
            modifier
        };
        let patient_typed = final_base == "patient"
            || final_modifier == Some("Patient")
            || (final_base == "_id" && previous_modifier == Some("Patient"));
        self.classify_all(value, patient_typed, false)?;
        Ok(())
    }
}

fn split_modifier(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    }
}

/// Filter parameters for a search: one filter, or single-condition filters on one
/// parameter as an OR list. `None` when they cannot be expressed.
fn express(filters: &[Filter]) -> Option<Vec<(String, String)>> {
    match filters {
        [] => Some(vec![]),
        [one] => Some(
            one.conditions()
                .iter()
                .map(|c| (c.param.clone(), c.value.clone()))
                .collect(),
        ),
        [first, ..] => {
            let param = &first.conditions().first()?.param;
            let mut values = Vec::new();
            for f in filters {
                match f.conditions() {
                    [c] if &c.param == param => values.push(c.value.clone()),
                    _ => return None,
                }
            }
            Some(vec![(param.clone(), values.join(","))])
        }
    }
}

impl Policy {
    /// Narrows a type-level search for `principal`: returns the parameters to send
    /// upstream (the given ones, in order, plus the patient restriction and expressible
    /// granular filters), or refuses it. See the module documentation for the rules.
    /// `params` are `(name, value)` pairs, percent-decoded once.
    pub fn narrow_search(
        &self,
        principal: &Principal,
        resource_type: &str,
        params: &[(String, String)],
    ) -> Result<Vec<(String, String)>, Denial> {
        let grants = self.grants(principal)?;
        if !is_known(resource_type) {
            return Err(Denial::new(
                DenialReason::TypeNotAccessible,
                "unknown resource type",
            ));
        }
        let class = self.classify(resource_type);
        // Who may be searched, and with which permission.
        let searchable: Vec<(&str, Permission)> = match &class {
            Class::Patient | Class::Compartment { .. } => grants
                .own()
                .into_iter()
                .map(|p| (p, grants.permission(p, resource_type, Interaction::Search)))
                .filter(|(_, perm)| perm.is_allowed())
                .collect(),
            Class::ReferenceData { .. } => {
                match grants.reference_permission(resource_type, Interaction::Search) {
                    Permission::Denied => vec![],
                    perm => vec![("", perm)],
                }
            }
            Class::Other => {
                return Err(Denial::new(
                    DenialReason::TypeNotAccessible,
                    format!("{resource_type} is not accessible to patients"),
                ));
            }
        };
        if searchable.is_empty() {
            if grants
                .own()
                .into_iter()
                .any(|p| grants.level_refuses(p, resource_type, Interaction::Search))
            {
                return Err(Denial::new(
                    DenialReason::ProxyNotPermitted,
                    format!("a proxy at this access level may not search {resource_type}"),
                ));
            }
            return Err(Denial::new(
                DenialReason::ScopeMissing,
                format!("no scope grants search on {resource_type}"),
            ));
        }
        // A proxy from whom some records are withheld must not learn of them by a
        // search's effect: a count, a `_has` or a chain through another resource.
        let withholds = grants.withholds();
        if withholds {
            for (name, value) in params {
                let counting = name == "_summary" && value == "count";
                if counting || name.starts_with("_has") || name.contains('.') {
                    return Err(Denial::new(
                        DenialReason::ProxyNotPermitted,
                        "counts, _has and chained searches are not available to a proxy",
                    ));
                }
            }
        }
        let n = Narrowing {
            policy: self,
            grants,
            resource_type,
            class,
        };

        let mut named: Vec<String> = Vec::new();
        let mut out: Vec<(String, String)> = Vec::with_capacity(params.len() + 2);
        let mut elements_at: Option<usize> = None;
        for (name, value) in params {
            if !is_param_name(name) {
                return Err(malformed("malformed search parameter name"));
            }
            if name == "_has" || name.starts_with("_has:") {
                n.check_has(name, value)?;
                out.push((name.clone(), value.clone()));
                continue;
            }
            let (head, tail) = match name.split_once('.') {
                Some((h, t)) => (h, Some(t)),
                None => (name.as_str(), None),
            };
            let (base, modifier) = split_modifier(head);
            if base.starts_with('_') {
                if tail.is_some() {
                    return Err(unsupported("chained search result parameter"));
                }
                match base {
                    "_include" | "_revinclude" => n.check_include(modifier, value)?,
                    "_elements" => {
                        if modifier.is_some() {
                            return Err(unsupported("modifier on _elements"));
                        }
                        elements_at = Some(out.len());
                    }
                    "_id" if matches!(n.class, Class::Patient) => {
                        if modifier.is_some() {
                            return Err(unsupported("modifier on _id"));
                        }
                        for named_value in n.classify_all(value, true, false)? {
                            if let Named::Own(id) = named_value {
                                named.push(id);
                            }
                        }
                    }
                    "_filter" => return Err(unsupported("_filter is not supported")),
                    "_query" => return Err(unsupported("_query is not supported")),
                    "_contained" | "_containedType" => {
                        return Err(unsupported("_contained is not supported"));
                    }
                    "_type" => return Err(unsupported("_type is not supported")),
                    b if PLAIN_UNDERSCORE_PARAMS.contains(&b) => {
                        n.classify_all(value, false, false)?;
                    }
                    _ => return Err(unsupported("unknown search result parameter")),
                }
            } else if let Some(tail) = tail {
                n.check_chain(head, tail, value)?;
            } else {
                let restriction = n.is_restriction_param(base);
                // Reference data's own compartment links (Schedule.actor) are checked on
                // the way out instead: a bare practitioner id there is normal.
                let compartment = restriction
                    || (matches!(n.class, Class::Compartment { .. })
                        && n.is_compartment_param(base));
                if compartment && modifier.is_some_and(|m| m != "Patient" && !is_known(m)) {
                    return Err(unsupported(
                        "modifier not supported on a compartment parameter",
                    ));
                }
                let type_modifier_other = modifier.is_some_and(|m| m != "Patient");
                let patient_typed =
                    (base == "patient" && !type_modifier_other) || modifier == Some("Patient");
                let values =
                    n.classify_all(value, patient_typed, compartment && modifier.is_none())?;
                if restriction
                    && !type_modifier_other
                    && !values.is_empty()
                    && values.iter().all(|v| matches!(v, Named::Own(_)))
                {
                    named.extend(values.into_iter().filter_map(|v| match v {
                        Named::Own(id) => Some(id),
                        _ => None,
                    }));
                }
            }
            out.push((name.clone(), value.clone()));
        }

        // The patients the results may belong to, and their permissions.
        let effective: Vec<&(&str, Permission)> = if matches!(n.class, Class::ReferenceData { .. })
        {
            searchable.iter().collect()
        } else if named.is_empty() {
            let ids: Vec<&str> = searchable.iter().map(|(p, _)| *p).collect();
            let restriction = match &n.class {
                Class::Patient => ("_id".to_owned(), ids.join(",")),
                _ => {
                    let param = if PATIENT_PARAM_TYPES.contains(&resource_type)
                        || n.links().iter().any(|l| l.param == "patient")
                    {
                        "patient"
                    } else {
                        n.links().first().map_or("patient", |l| l.param)
                    };
                    let refs: Vec<String> = ids.iter().map(|id| format!("Patient/{id}")).collect();
                    (param.to_owned(), refs.join(","))
                }
            };
            out.push(restriction);
            searchable.iter().collect()
        } else {
            let mut effective = Vec::new();
            for id in &named {
                match searchable.iter().find(|(p, _)| p == id) {
                    Some(entry) => effective.push(entry),
                    None if n
                        .grants
                        .level_refuses(id, resource_type, Interaction::Search) =>
                    {
                        return Err(Denial::new(
                            DenialReason::ProxyNotPermitted,
                            format!("a proxy at this access level may not search {resource_type}"),
                        ));
                    }
                    None => {
                        return Err(Denial::new(
                            DenialReason::ScopeMissing,
                            format!("no scope grants search on {resource_type}"),
                        ));
                    }
                }
            }
            effective
        };

        // Granular filters, when all effective permissions carry the same ones.
        let mut filters_for_elements: Vec<&str> = Vec::new();
        if let Some(((_, first), rest)) = effective.split_first().map(|(f, r)| (*f, r))
            && let Permission::Allowed { filters } = first
            && !filters.is_empty()
        {
            for f in filters {
                filters_for_elements.extend(f.conditions().iter().map(|c| c.param.as_str()));
            }
            let same = rest.iter().all(|(_, p)| p == first);
            if same && let Some(extra) = express(filters) {
                out.extend(extra);
            }
        }

        if let Some(index) = elements_at {
            let mut elements: Vec<String> = out[index]
                .1
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            let mut needed: Vec<&str> = n
                .links()
                .iter()
                .flat_map(|l| l.paths.iter())
                .map(|p| p.split('.').next().unwrap_or(p))
                .collect();
            for param in filters_for_elements {
                if let Some(paths) = filter_paths(resource_type, param) {
                    needed.extend(paths.iter().map(|p| p.split('.').next().unwrap_or(p)));
                }
            }
            // The security labels, for the proxy rules.
            if withholds {
                needed.push("meta");
            }
            for e in needed {
                if !elements.iter().any(|x| x == e) {
                    elements.push(e.to_owned());
                }
            }
            out[index].1 = elements.join(",");
        }
        Ok(out)
    }
}
