//! Cache keys: which reads are cacheable, for whom, and what they depend on.
//!
//! A key is the normalized read (type, id or version, search parameters sorted by name
//! then value — `_count`, `_include`s and all others included — or the paging URL) plus
//! the request's [`CachePartition`] plus, for passthrough requests, the SHA-256 of the
//! caller's bearer token (never the token itself). Two requests share an entry only if
//! all three are equal, so one principal's upstream view is never served to another.
//!
//! Cacheable: `read`, `vread`, `_history` on an instance, type-level search and paging
//! links. Not cached: `metadata` (the gateway reads it once at start), conditional reads
//! the caller made itself (`If-None-Match`), and every write.
//!
//! Without a partition, only reads of [`SHARED_TYPES`](crate::SHARED_TYPES) are
//! cacheable, and only searches that cannot pull in other types (no `_include`,
//! `_revinclude`, `_has`, chained parameter or paging link): patient-compartment data
//! is never cached unpartitioned.
//!
//! Each key also records what it depends on, for invalidation: the resource type it is
//! about; that type plus the R4 target types of each `_include` whose parameter is known
//! (`include_targets`); or "anything" for searches whose result can contain or be
//! filtered by other types in ways not listed there (`_revinclude`, `:iterate`,
//! wildcard or unknown includes, `_has`, chains) and for paging links (whose type is not
//! known).

use portico_fhir::resource_types;
use portico_upstream::{CachePartition, FhirRequest, Interaction};
use sha2::{Digest, Sha256};

use crate::config::{CacheConfig, is_shared_type};

/// The normalized read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ReadKey {
    Read {
        resource_type: String,
        id: String,
    },
    VRead {
        resource_type: String,
        id: String,
        version: String,
    },
    History {
        resource_type: String,
        id: String,
        params: Vec<(String, String)>,
    },
    Search {
        resource_type: String,
        params: Vec<(String, String)>,
    },
    Page {
        url: String,
    },
}

/// A cache key. `Debug` is not derived on purpose: it would print ids, search values
/// and patient ids; use [`CacheKey::describe`] for logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub(crate) partition: Option<CachePartition>,
    pub(crate) bearer: Option<[u8; 32]>,
    pub(crate) read: ReadKey,
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl CacheKey {
    /// The kind of read, with no data in it.
    pub(crate) fn describe(&self) -> &'static str {
        match self.read {
            ReadKey::Read { .. } => "read",
            ReadKey::VRead { .. } => "vread",
            ReadKey::History { .. } => "history",
            ReadKey::Search { .. } => "search",
            ReadKey::Page { .. } => "page",
        }
    }

    /// Approximate heap bytes of the key, for the weigher.
    pub(crate) fn weight(&self) -> usize {
        let params = |p: &[(String, String)]| -> usize {
            p.iter().map(|(k, v)| k.len() + v.len() + 48).sum()
        };
        let read: usize = match &self.read {
            ReadKey::Read { resource_type, id } => resource_type.len() + id.len(),
            ReadKey::VRead {
                resource_type,
                id,
                version,
            } => resource_type.len() + id.len() + version.len(),
            ReadKey::History {
                resource_type,
                id,
                params: p,
            } => resource_type.len() + id.len() + params(p),
            ReadKey::Search {
                resource_type,
                params: p,
            } => resource_type.len() + params(p),
            ReadKey::Page { url } => url.len(),
        };
        let partition = self.partition.as_ref().map_or(0, |p| {
            p.patients().iter().map(|id| id.len() + 24).sum::<usize>() + p.scope_fingerprint().len()
        });
        read + partition + 128
    }
}

/// What an entry depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deps {
    /// Only resources of this type.
    Type(String),
    /// Only resources of these types (a search with `_include`s whose targets are known).
    Types(Vec<String>),
    /// Possibly any type.
    Any,
}

/// The types a reference search parameter can point at, for the parameters the
/// gateway's own searches `_include` (FHIR R4 search parameter targets). Unknown
/// parameters have no entry: a search including them depends on anything.
fn include_targets(source: &str, param: &str) -> Option<&'static [&'static str]> {
    const PEOPLE: &[&str] = &[
        "Practitioner",
        "PractitionerRole",
        "Patient",
        "RelatedPerson",
        "Organization",
        "Device",
    ];
    Some(match (source, param) {
        ("Appointment", "actor") => &[
            "Patient",
            "Practitioner",
            "PractitionerRole",
            "RelatedPerson",
            "Device",
            "HealthcareService",
            "Location",
        ],
        ("Slot", "schedule") => &["Schedule"],
        ("MedicationRequest", "medication") => &["Medication"],
        ("MedicationRequest", "requester") => PEOPLE,
        ("Communication", "recipient") => &[
            "Device",
            "Organization",
            "Patient",
            "Practitioner",
            "PractitionerRole",
            "RelatedPerson",
            "Group",
            "CareTeam",
            "HealthcareService",
        ],
        ("Communication", "sender") => &[
            "Device",
            "Organization",
            "Patient",
            "Practitioner",
            "PractitionerRole",
            "RelatedPerson",
            "HealthcareService",
        ],
        ("Observation", "performer") => &[
            "Practitioner",
            "PractitionerRole",
            "Organization",
            "CareTeam",
            "Patient",
            "RelatedPerson",
        ],
        ("DiagnosticReport", "result") => &["Observation"],
        _ => return None,
    })
}

/// The dependencies of a search of `resource_type` with `params`: its own type, plus
/// the targets of plain `_include`s of its own type (`Source:param` with a known
/// parameter, or `Source:param:Target`). Anything else that widens the result
/// (`_revinclude`, `:iterate`, `*`, `_has`, chains) makes it depend on anything.
fn search_deps(resource_type: &str, params: &[(String, String)]) -> Deps {
    let mut types = vec![resource_type.to_owned()];
    for (name, value) in params {
        if !widens(name) {
            continue;
        }
        if name != "_include" {
            return Deps::Any;
        }
        let mut parts = value.split(':');
        let (Some(source), Some(param)) = (parts.next(), parts.next()) else {
            return Deps::Any;
        };
        let explicit = parts.next();
        if source != resource_type || parts.next().is_some() {
            return Deps::Any;
        }
        match explicit {
            Some(target) if resource_types::is_known(target) => types.push(target.to_owned()),
            Some(_) => return Deps::Any,
            None => match include_targets(source, param) {
                Some(targets) => types.extend(targets.iter().map(|t| (*t).to_owned())),
                None => return Deps::Any,
            },
        }
    }
    if types.len() == 1 {
        return Deps::Type(types.swap_remove(0));
    }
    types.sort();
    types.dedup();
    Deps::Types(types)
}

/// How to cache one read.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) key: CacheKey,
    pub(crate) deps: Deps,
    pub(crate) ttl: std::time::Duration,
}

/// Whether a search parameter makes the result depend on other resource types.
fn widens(name: &str) -> bool {
    let base = name.split(':').next().unwrap_or(name);
    matches!(
        base,
        "_include" | "_revinclude" | "_has" | "_contained" | "_containedType"
    ) || base.contains('.')
}

fn sorted(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut params = params.to_vec();
    params.sort();
    params
}

/// The resource type a paging link names in its path (`.../Observation?...`), if any.
/// Used for the TTL only, never for access or invalidation.
fn page_type(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    resource_types::is_known(last).then_some(last)
}

/// How to cache `request`, or `None` if it must not be cached.
pub(crate) fn plan(request: &FhirRequest, config: &CacheConfig) -> Option<Plan> {
    if request.if_none_match.is_some() {
        return None;
    }
    let (read, ttl_type, deps) = match &request.interaction {
        Interaction::Read { resource_type, id } => (
            ReadKey::Read {
                resource_type: resource_type.clone(),
                id: id.clone(),
            },
            Some(resource_type.as_str()),
            Deps::Type(resource_type.clone()),
        ),
        Interaction::VRead {
            resource_type,
            id,
            version,
        } => (
            ReadKey::VRead {
                resource_type: resource_type.clone(),
                id: id.clone(),
                version: version.clone(),
            },
            Some(resource_type.as_str()),
            Deps::Type(resource_type.clone()),
        ),
        Interaction::History {
            resource_type,
            id,
            params,
        } => (
            ReadKey::History {
                resource_type: resource_type.clone(),
                id: id.clone(),
                params: sorted(params),
            },
            Some(resource_type.as_str()),
            Deps::Type(resource_type.clone()),
        ),
        Interaction::Search {
            resource_type,
            params,
        } => {
            let deps = search_deps(resource_type, params);
            (
                ReadKey::Search {
                    resource_type: resource_type.clone(),
                    params: sorted(params),
                },
                Some(resource_type.as_str()),
                deps,
            )
        }
        Interaction::SearchPage { url } => (
            ReadKey::Page { url: url.clone() },
            page_type(url),
            Deps::Any,
        ),
        Interaction::Capabilities
        | Interaction::Create { .. }
        | Interaction::Update { .. }
        | Interaction::Patch { .. }
        | Interaction::Delete { .. }
        | Interaction::Operation { .. } => return None,
    };
    if request.partition.is_none() {
        match &deps {
            Deps::Type(t) if is_shared_type(t) => {}
            _ => return None,
        }
    }
    let ttl = config.ttl_for(ttl_type);
    if ttl.is_zero() {
        return None;
    }
    let bearer = request.bearer.as_ref().map(|token| {
        let digest = Sha256::digest(token.expose().as_bytes());
        <[u8; 32]>::from(digest)
    });
    Some(Plan {
        key: CacheKey {
            partition: request.partition.clone(),
            bearer,
            read,
        },
        deps,
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use portico_upstream::SecretString;

    use super::*;

    fn part(p: &str) -> CachePartition {
        CachePartition::new([p], "fp")
    }

    fn key(request: FhirRequest) -> Option<CacheKey> {
        plan(&request, &CacheConfig::default()).map(|p| p.key)
    }

    #[test]
    fn search_params_are_sorted_by_name_then_value() {
        let a = FhirRequest::search(
            "Observation",
            [("code", "b"), ("_count", "10"), ("code", "a")],
        )
        .with_partition(part("p1"));
        let b = FhirRequest::search(
            "Observation",
            [("code", "a"), ("code", "b"), ("_count", "10")],
        )
        .with_partition(part("p1"));
        assert_eq!(key(a.clone()), key(b));
        let c = FhirRequest::search("Observation", [("code", "a"), ("_count", "10")])
            .with_partition(part("p1"));
        assert_ne!(key(a), key(c));
    }

    #[test]
    fn partition_and_bearer_are_part_of_the_key_and_the_token_is_hashed() {
        let r = || FhirRequest::read("Observation", "o1");
        assert_ne!(
            key(r().with_partition(part("a"))),
            key(r().with_partition(part("b")))
        );
        assert_ne!(
            key(r().with_partition(CachePartition::new(["a"], "fp1"))),
            key(r().with_partition(CachePartition::new(["a"], "fp2")))
        );
        let ka = key(r()
            .with_partition(part("a"))
            .with_bearer(SecretString::new("token-a")))
        .unwrap();
        let kb = key(r()
            .with_partition(part("a"))
            .with_bearer(SecretString::new("token-b")))
        .unwrap();
        assert_ne!(ka, kb);
        let expected: [u8; 32] = Sha256::digest(b"token-a").into();
        assert_eq!(ka.bearer, Some(expected));
        assert!(!format!("{ka:?}").contains("token"));
    }

    #[test]
    fn unpartitioned_reads_are_cached_only_for_shared_types_without_includes() {
        assert!(key(FhirRequest::read("Practitioner", "x")).is_some());
        assert!(key(FhirRequest::search("Slot", [("schedule", "Schedule/1")])).is_some());
        assert!(key(FhirRequest::read("Observation", "x")).is_none());
        assert!(key(FhirRequest::search("Patient", [("name", "x")])).is_none());
        assert!(
            key(FhirRequest::search(
                "Practitioner",
                [("_revinclude", "Appointment:practitioner")]
            ))
            .is_none()
        );
        assert!(key(FhirRequest::search_page("http://ehr/fhir/Practitioner?p=2")).is_none());
        assert!(key(FhirRequest::capabilities()).is_none());
        assert!(key(FhirRequest::create("Practitioner", "{}")).is_none());
        assert!(
            key(FhirRequest::read("Practitioner", "x").with_if_none_match("W/\"1\"")).is_none()
        );
    }

    #[test]
    fn includes_chains_and_pages_depend_on_anything() {
        let deps = |r: FhirRequest| plan(&r, &CacheConfig::default()).unwrap().deps;
        let p = || part("p1");
        assert_eq!(
            deps(FhirRequest::search("Observation", [("code", "x")]).with_partition(p())),
            Deps::Type("Observation".into())
        );
        for name in [
            "_include",
            "_revinclude:iterate",
            "_revinclude",
            "_has:Observation:patient:code",
            "subject.name",
        ] {
            assert_eq!(
                deps(FhirRequest::search("Patient", [(name, "x")]).with_partition(p())),
                Deps::Any,
                "{name}"
            );
        }
        assert_eq!(
            deps(FhirRequest::search_page("http://ehr/fhir/Slot?page=2").with_partition(p())),
            Deps::Any
        );
    }

    #[test]
    fn includes_of_known_parameters_depend_on_their_targets_only() {
        let deps = |params: &[(&str, &str)]| {
            let r = FhirRequest::search("Appointment", params.iter().copied())
                .with_partition(part("p1"));
            plan(&r, &CacheConfig::default()).unwrap().deps
        };
        let Deps::Types(types) = deps(&[("date", "ge2026"), ("_include", "Appointment:actor")])
        else {
            panic!("expected a list of types");
        };
        assert!(types.contains(&"Appointment".to_owned()));
        assert!(types.contains(&"Practitioner".to_owned()));
        assert!(types.contains(&"Patient".to_owned()));
        assert!(!types.contains(&"Communication".to_owned()));
        assert_eq!(
            deps(&[("_include", "Appointment:actor:Location")]),
            Deps::Types(vec!["Appointment".into(), "Location".into()])
        );
        // Unknown parameters, other sources, iterate, wildcards, revincludes: anything.
        for (name, value) in [
            ("_include", "Appointment:unknown-param"),
            ("_include", "Observation:performer"),
            ("_include:iterate", "Appointment:actor"),
            ("_include", "*"),
            ("_include", "Appointment:actor:NotAType"),
            ("_revinclude", "Provenance:target"),
        ] {
            assert_eq!(deps(&[(name, value)]), Deps::Any, "{name}={value}");
        }
    }

    #[test]
    fn page_ttl_follows_the_type_in_the_link() {
        let config = CacheConfig::default();
        let ttl = |url: &str| {
            plan(
                &FhirRequest::search_page(url).with_partition(part("p")),
                &config,
            )
            .unwrap()
            .ttl
        };
        assert_eq!(
            ttl("http://ehr/fhir/Observation?page=2"),
            config.patient_ttl
        );
        assert_eq!(ttl("http://ehr/fhir?_getpages=abc"), config.slot_ttl);
    }
}
