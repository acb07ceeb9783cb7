//! SMART on FHIR scopes, v1 and v2, including v2 granular scopes.
//!
//! A resource scope is `context/Type.permissions[?query]`:
//!
//! - `context` is `patient`, `user` or `system`;
//! - `Type` is an R4 resource type or `*`;
//! - `permissions` is v1 `read` | `write` | `*`, mapped to v2 as `read` → `rs`,
//!   `write` → `cud`, `*` → `cruds`, or a v2 non-empty subset of `cruds` in that order;
//! - `query` (v2 only) is a granular filter, see [`crate::filter`].
//!
//! Non-resource scopes (`openid`, `fhirUser`, `launch`, `launch/patient`,
//! `offline_access`, `online_access`) are kept as [`Flags`]. Anything else, and every
//! resource scope that does not parse exactly, is ignored: an unparsable scope never
//! grants anything, so ignoring it can only narrow access.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::filter::{Condition, Filter, is_filter_param, is_token_value};

/// Whose access a resource scope describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Context {
    /// `patient/`: the patient(s) in the launch context.
    Patient,
    /// `user/`: whatever the signed-in user may see.
    User,
    /// `system/`: a backend service.
    System,
}

impl Context {
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// A FHIR RESTful interaction, as far as scopes are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interaction {
    Read,
    Vread,
    History,
    Search,
    Create,
    Update,
    Patch,
    Delete,
}

impl Interaction {
    /// The v2 permission letter this interaction needs: vread and history need `r`,
    /// patch needs `u`.
    pub fn letter(self) -> char {
        match self {
            Interaction::Read | Interaction::Vread | Interaction::History => 'r',
            Interaction::Search => 's',
            Interaction::Create => 'c',
            Interaction::Update | Interaction::Patch => 'u',
            Interaction::Delete => 'd',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::History => "history",
            Interaction::Search => "search",
            Interaction::Create => "create",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
        }
    }
}

/// The outcome of a scope lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Denied,
    /// `filters` empty: unrestricted. Otherwise the resource (or every search result)
    /// must satisfy at least one of them.
    Allowed {
        filters: Vec<Filter>,
    },
}

impl Permission {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Permission::Allowed { .. })
    }

    /// The union of two permissions: unrestricted wins, filters are OR-ed.
    pub fn union(self, other: Permission) -> Permission {
        match (self, other) {
            (Permission::Denied, p) | (p, Permission::Denied) => p,
            (Permission::Allowed { filters: a }, Permission::Allowed { filters: b }) => {
                if a.is_empty() || b.is_empty() {
                    Permission::Allowed { filters: vec![] }
                } else {
                    let mut filters: Vec<Filter> = a.into_iter().chain(b).collect();
                    filters.sort();
                    filters.dedup();
                    Permission::Allowed { filters }
                }
            }
        }
    }
}

const C: u8 = 1;
const R: u8 = 2;
const U: u8 = 4;
const D: u8 = 8;
const S: u8 = 16;
const LETTERS: [(char, u8); 5] = [('c', C), ('r', R), ('u', U), ('d', D), ('s', S)];

fn bit(letter: char) -> u8 {
    LETTERS
        .iter()
        .find(|(l, _)| *l == letter)
        .map_or(0, |(_, b)| *b)
}

/// One parsed resource scope, normalized to v2.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceScope {
    pub context: Context,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    letters: u8,
    pub filter: Option<Filter>,
}

impl ResourceScope {
    /// Parses one resource scope; `None` when it is not exactly one.
    pub fn parse(scope: &str) -> Option<ResourceScope> {
        let (context, rest) = scope.split_once('/')?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (body, query) = match rest.split_once('?') {
            Some((body, query)) => (body, Some(query)),
            None => (rest, None),
        };
        let (resource_type, permissions) = body.split_once('.')?;
        let resource_type = match resource_type {
            "*" => None,
            t if portico_fhir::resource_types::is_known(t) => Some(t.to_owned()),
            _ => return None,
        };
        let (letters, v1) = match permissions {
            "read" => (R | S, true),
            "write" => (C | U | D, true),
            "*" => (C | R | U | D | S, true),
            v2 => (parse_v2_letters(v2)?, false),
        };
        let filter = match query {
            None => None,
            // Granular queries are a v2 feature.
            Some(_) if v1 => return None,
            Some(q) => Some(parse_query(q)?),
        };
        Some(ResourceScope {
            context,
            resource_type,
            letters,
            filter,
        })
    }

    /// Whether this scope grants `letter`.
    pub fn has(&self, letter: char) -> bool {
        let b = bit(letter);
        b != 0 && self.letters & b == b
    }

    /// The v2 permission letters, in `cruds` order.
    pub fn letters(&self) -> String {
        LETTERS
            .iter()
            .filter(|(_, b)| self.letters & b != 0)
            .map(|(l, _)| *l)
            .collect()
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}.{}",
            self.context.as_str(),
            self.resource_type.as_deref().unwrap_or("*"),
            self.letters()
        )?;
        if let Some(filter) = &self.filter {
            write!(f, "?{}", filter.to_query())?;
        }
        Ok(())
    }
}

/// v2 letters: a non-empty subset of `cruds`, in that order, each at most once.
fn parse_v2_letters(s: &str) -> Option<u8> {
    if s.is_empty() {
        return None;
    }
    let mut letters = 0u8;
    let mut last_index = None;
    for c in s.chars() {
        let index = LETTERS.iter().position(|(l, _)| *l == c)?;
        if last_index.is_some_and(|last| index <= last) {
            return None;
        }
        last_index = Some(index);
        letters |= LETTERS[index].1;
    }
    Some(letters)
}

/// A granular query: `param=value(&param=value)*`, each param one Portico can evaluate
/// and each value a token (percent-decoded).
fn parse_query(query: &str) -> Option<Filter> {
    let mut conditions = Vec::new();
    for pair in query.split('&') {
        let (param, value) = pair.split_once('=')?;
        if !well_formed_escapes(value) {
            return None;
        }
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()?;
        if !is_filter_param(param) || !is_token_value(&value) {
            return None;
        }
        conditions.push(Condition {
            param: param.to_owned(),
            value: value.into_owned(),
        });
    }
    Filter::new(conditions)
}

/// Whether every `%` starts a two-hex-digit escape.
fn well_formed_escapes(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// The non-resource scopes a token carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub openid: bool,
    pub fhir_user: bool,
    pub launch: bool,
    pub launch_patient: bool,
    pub offline_access: bool,
    pub online_access: bool,
}

impl Flags {
    fn set(&mut self, scope: &str) -> bool {
        let slot = match scope {
            "openid" => &mut self.openid,
            "fhirUser" => &mut self.fhir_user,
            "launch" => &mut self.launch,
            "launch/patient" => &mut self.launch_patient,
            "offline_access" => &mut self.offline_access,
            "online_access" => &mut self.online_access,
            _ => return false,
        };
        *slot = true;
        true
    }

    fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.openid, "openid"),
            (self.fhir_user, "fhirUser"),
            (self.launch, "launch"),
            (self.launch_patient, "launch/patient"),
            (self.offline_access, "offline_access"),
            (self.online_access, "online_access"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }
}

/// The parsed scopes of a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSet {
    resources: Vec<ResourceScope>,
    flags: Flags,
    /// The canonical form and its fingerprint, computed once when the set is made: every
    /// request of a principal needs them (cache partitions, kept answers, cursors), and
    /// a clone shares them.
    canonical: Arc<str>,
    fingerprint: Arc<str>,
}

impl Default for ScopeSet {
    fn default() -> ScopeSet {
        ScopeSet::with(Vec::new(), Flags::default())
    }
}

impl ScopeSet {
    fn with(resources: Vec<ResourceScope>, flags: Flags) -> ScopeSet {
        let mut parts: Vec<String> = flags.names().map(str::to_owned).collect();
        parts.extend(resources.iter().map(ToString::to_string));
        parts.sort();
        let canonical: Arc<str> = parts.join(" ").into();
        let fingerprint = hex(&Sha256::digest(canonical.as_bytes())).into();
        ScopeSet {
            resources,
            flags,
            canonical,
            fingerprint,
        }
    }

    /// Parses a space-separated scope string (the `scope` claim or token response field).
    pub fn parse(scopes: &str) -> ScopeSet {
        ScopeSet::from_scopes(scopes.split_whitespace())
    }

    /// Parses a list of scopes (the `scp` claim). Invalid entries are ignored.
    pub fn from_scopes<I, S>(scopes: I) -> ScopeSet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut flags = Flags::default();
        let mut resources = BTreeSet::new();
        for scope in scopes {
            let scope = scope.as_ref();
            if flags.set(scope) {
                continue;
            }
            if let Some(parsed) = ResourceScope::parse(scope) {
                resources.insert(parsed);
            }
        }
        ScopeSet::with(resources.into_iter().collect(), flags)
    }

    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// The resource scopes, normalized and sorted.
    pub fn resource_scopes(&self) -> &[ResourceScope] {
        &self.resources
    }

    /// Whether any resource scope has this context.
    pub fn has_context(&self, context: Context) -> bool {
        self.resources.iter().any(|s| s.context == context)
    }

    /// What the scopes of `context` allow for `interaction` on `resource_type`.
    ///
    /// A scope without a filter makes the permission unrestricted; granular scopes add
    /// their filter to an OR list. A granular scope whose filter cannot be evaluated on
    /// `resource_type` grants nothing for that type.
    pub fn permission(
        &self,
        context: Context,
        resource_type: &str,
        interaction: Interaction,
    ) -> Permission {
        let letter = interaction.letter();
        let mut filters = Vec::new();
        for scope in &self.resources {
            if scope.context != context
                || !scope.has(letter)
                || scope
                    .resource_type
                    .as_deref()
                    .is_some_and(|t| t != resource_type)
            {
                continue;
            }
            match &scope.filter {
                None => return Permission::Allowed { filters: vec![] },
                Some(filter) if filter.applies_to(resource_type) => filters.push(filter.clone()),
                Some(_) => {}
            }
        }
        if filters.is_empty() {
            Permission::Denied
        } else {
            filters.sort();
            filters.dedup();
            Permission::Allowed { filters }
        }
    }

    /// A stable fingerprint (hex SHA-256 of the canonical form): equal for scope sets that
    /// grant the same, whatever the order or the v1/v2 spelling. For cache keys and
    /// cursor binding.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.to_string()
    }

    /// The canonical form (what `Display` writes), without a copy.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
}

/// The canonical form: flags, then normalized resource scopes, sorted, space-separated.
impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

    fn allowed(p: &Permission) -> bool {
        p.is_allowed()
    }

    #[test]
    fn v1_maps_to_v2() {
        let read = ResourceScope::parse("patient/Observation.read").unwrap();
        assert_eq!(read.letters(), "rs");
        let write = ResourceScope::parse("patient/Observation.write").unwrap();
        assert_eq!(write.letters(), "cud");
        let all = ResourceScope::parse("user/*.*").unwrap();
        assert_eq!(all.letters(), "cruds");
        assert_eq!(all.resource_type, None);
        assert_eq!(all.context, Context::User);
        assert_eq!(
            ScopeSet::parse("patient/Observation.read").fingerprint(),
            ScopeSet::parse("patient/Observation.rs").fingerprint()
        );
    }

    #[test]
    fn v2_letters_must_be_an_ordered_subset() {
        for good in ["c", "r", "rs", "cruds", "cud", "us", "crs"] {
            assert!(
                ResourceScope::parse(&format!("patient/Observation.{good}")).is_some(),
                "{good}"
            );
        }
        for bad in ["", "sr", "rr", "x", "crudsx", "READ", "Read", "rw", "dc"] {
            assert!(
                ResourceScope::parse(&format!("patient/Observation.{bad}")).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_scopes_are_ignored() {
        for bad in [
            "Patient/Observation.rs",
            "patient/observation.rs",
            "patient/Nope.rs",
            "patient/Observation",
            "patient/Observation.read?category=laboratory",
            "patient/Observation.rs?",
            "patient/Observation.rs?category=",
            "patient/Observation.rs?category",
            "patient/Observation.rs?subject=Patient/1",
            "patient/Observation.rs?_filter=x",
            "patient/Observation.rs?category=%ZZ",
            "clinician/Observation.rs",
            "patient/Observation.rs.extra",
            "patient//Observation.rs",
        ] {
            assert!(ResourceScope::parse(bad).is_none(), "{bad}");
            let set = ScopeSet::parse(bad);
            assert!(
                !allowed(&set.permission(Context::Patient, "Observation", Interaction::Read)),
                "{bad} must grant nothing"
            );
        }
    }

    #[test]
    fn each_interaction_needs_its_letter() {
        let set = ScopeSet::parse("patient/Observation.rs patient/Condition.cu");
        let p = |t, i| set.permission(Context::Patient, t, i).is_allowed();
        assert!(p("Observation", Interaction::Read));
        assert!(p("Observation", Interaction::Vread));
        assert!(p("Observation", Interaction::History));
        assert!(p("Observation", Interaction::Search));
        assert!(!p("Observation", Interaction::Create));
        assert!(!p("Observation", Interaction::Update));
        assert!(!p("Observation", Interaction::Patch));
        assert!(!p("Observation", Interaction::Delete));
        assert!(p("Condition", Interaction::Create));
        assert!(p("Condition", Interaction::Update));
        assert!(p("Condition", Interaction::Patch));
        assert!(!p("Condition", Interaction::Read));
        assert!(!p("Condition", Interaction::Search));
        assert!(!p("Condition", Interaction::Delete));
        assert!(!p("Patient", Interaction::Read));
        let read_only = ScopeSet::parse("patient/Observation.r");
        assert!(
            !read_only
                .permission(Context::Patient, "Observation", Interaction::Search)
                .is_allowed()
        );
    }

    #[test]
    fn contexts_are_separate() {
        let set = ScopeSet::parse("user/Observation.rs system/*.cruds");
        assert!(
            !set.permission(Context::Patient, "Observation", Interaction::Read)
                .is_allowed()
        );
        assert!(
            set.permission(Context::User, "Observation", Interaction::Read)
                .is_allowed()
        );
        assert!(set.has_context(Context::System));
        assert!(!set.has_context(Context::Patient));
    }

    #[test]
    fn wildcard_type() {
        let set = ScopeSet::parse("patient/*.read");
        assert!(
            set.permission(Context::Patient, "Condition", Interaction::Search)
                .is_allowed()
        );
        assert!(
            !set.permission(Context::Patient, "Condition", Interaction::Create)
                .is_allowed()
        );
    }

    #[test]
    fn granular_scopes() {
        let set = ScopeSet::parse(&format!("patient/Observation.rs?category={LAB}"));
        let Permission::Allowed { filters } =
            set.permission(Context::Patient, "Observation", Interaction::Read)
        else {
            panic!("granular scope must allow");
        };
        assert_eq!(filters.len(), 1);
        let lab = json!({"resourceType":"Observation","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}]});
        let vital = json!({"resourceType":"Observation","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}]});
        assert!(filters[0].matches(&lab));
        assert!(!filters[0].matches(&vital));
        // An unrestricted scope for the same type wins.
        let wide = ScopeSet::parse(&format!(
            "patient/Observation.rs?category={LAB} patient/Observation.rs"
        ));
        assert_eq!(
            wide.permission(Context::Patient, "Observation", Interaction::Read),
            Permission::Allowed { filters: vec![] }
        );
        // Two granular scopes: OR.
        let two = ScopeSet::parse(&format!(
            "patient/Observation.rs?category={LAB} patient/Observation.rs?category=vital-signs"
        ));
        let Permission::Allowed { filters } =
            two.permission(Context::Patient, "Observation", Interaction::Search)
        else {
            panic!()
        };
        assert_eq!(filters.len(), 2);
    }

    #[test]
    fn percent_encoded_granular_values() {
        let set = ScopeSet::parse("patient/Observation.rs?category=http%3A%2F%2Fx%7Claboratory");
        let Permission::Allowed { filters } =
            set.permission(Context::Patient, "Observation", Interaction::Read)
        else {
            panic!()
        };
        assert_eq!(filters[0].conditions()[0].value, "http://x|laboratory");
    }

    #[test]
    fn granular_wildcard_grants_nothing_where_it_cannot_be_evaluated() {
        let set = ScopeSet::parse("patient/*.rs?category=laboratory");
        assert!(
            set.permission(Context::Patient, "Condition", Interaction::Read)
                .is_allowed()
        );
        assert!(
            !set.permission(Context::Patient, "Patient", Interaction::Read)
                .is_allowed()
        );
        assert!(
            !set.permission(Context::Patient, "Practitioner", Interaction::Read)
                .is_allowed()
        );
    }

    #[test]
    fn flags() {
        let set = ScopeSet::parse(
            "openid fhirUser launch launch/patient offline_access online_access profile",
        );
        let f = set.flags();
        assert!(
            f.openid
                && f.fhir_user
                && f.launch
                && f.launch_patient
                && f.offline_access
                && f.online_access
        );
        assert!(set.resource_scopes().is_empty());
        assert!(!ScopeSet::parse("openid").flags().offline_access);
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn fingerprint_is_stable_and_discriminating() {
        let a = ScopeSet::parse("openid patient/Observation.rs patient/Condition.rs");
        let b =
            ScopeSet::from_scopes(["patient/Condition.read", "patient/Observation.rs", "openid"]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        let c = ScopeSet::parse("openid patient/Observation.rs patient/Condition.r");
        assert_ne!(a.fingerprint(), c.fingerprint());
        let d = ScopeSet::parse("patient/Observation.rs patient/Condition.rs");
        assert_ne!(a.fingerprint(), d.fingerprint());
        assert_eq!(
            a.to_string(),
            "openid patient/Condition.rs patient/Observation.rs"
        );
    }

    #[test]
    fn union_of_permissions() {
        let set = ScopeSet::parse("patient/Observation.rs?category=laboratory");
        let granular = set.permission(Context::Patient, "Observation", Interaction::Read);
        assert_eq!(Permission::Denied.union(granular.clone()), granular.clone());
        assert_eq!(
            granular
                .clone()
                .union(Permission::Allowed { filters: vec![] }),
            Permission::Allowed { filters: vec![] }
        );
        assert_eq!(
            Permission::Denied.union(Permission::Denied),
            Permission::Denied
        );
    }
}
