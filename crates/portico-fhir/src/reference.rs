//! FHIR references, parsed.
//!
//! Access decisions compare references as parsed `(resource type, id)` pairs. A reference
//! is never matched as a substring: `Patient/1` and `Patient/12` are different patients,
//! and `Patient/1/_history/2` is the same patient as `Patient/1`.

use std::fmt;

/// A literal reference to a resource, relative (`Patient/123`) or absolute
/// (`https://ehr.example/fhir/Patient/123`), optionally version-specific.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub resource_type: String,
    pub id: String,
    pub version: Option<String>,
    /// The service base for absolute references, without a trailing slash.
    pub base: Option<String>,
}

/// Why a string is not a literal resource reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("reference is empty")]
    Empty,
    #[error("contained and logical references are not resource references")]
    NotLiteral,
    #[error("reference is not of the form Type/id")]
    Shape,
    #[error("unknown resource type in reference")]
    UnknownType,
    #[error("invalid resource id in reference")]
    InvalidId,
}

impl Reference {
    /// A relative reference to `resource_type/id`.
    pub fn new(resource_type: impl Into<String>, id: impl Into<String>) -> Self {
        Reference {
            resource_type: resource_type.into(),
            id: id.into(),
            version: None,
            base: None,
        }
    }

    /// Parses `Type/id`, `Type/id/_history/vid`, or the same behind an `http(s)://` base.
    ///
    /// Rejects contained (`#x`) and `urn:` references, query strings, fragments, unknown
    /// types and ids that are not FHIR ids. Percent-encoded or dot segments are rejected
    /// as invalid ids, so `Patient/..%2F12` can never name another resource.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.starts_with('#') || s.starts_with("urn:") {
            return Err(ReferenceError::NotLiteral);
        }
        if s.contains(['?', '#']) || s.chars().any(char::is_whitespace) {
            return Err(ReferenceError::Shape);
        }
        let (base, path) = if let Some(rest) = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
        {
            // Find where `Type/id` starts: the last segments that parse as such.
            let scheme_len = s.len() - rest.len();
            let segments: Vec<&str> = rest.split('/').collect();
            let n = segments.len();
            let type_pos = if n >= 5 && segments[n - 2] == "_history" {
                n - 4
            } else if n >= 3 {
                n - 2
            } else {
                return Err(ReferenceError::Shape);
            };
            if type_pos == 0 {
                return Err(ReferenceError::Shape);
            }
            let base_len: usize = scheme_len
                + segments[..type_pos]
                    .iter()
                    .map(|p| p.len() + 1)
                    .sum::<usize>()
                - 1;
            (Some(&s[..base_len]), &s[base_len + 1..])
        } else {
            (None, s)
        };
        let segments: Vec<&str> = path.split('/').collect();
        let (resource_type, id, version) = match segments.as_slice() {
            [t, id] => (*t, *id, None),
            [t, id, "_history", v] => (*t, *id, Some(*v)),
            _ => return Err(ReferenceError::Shape),
        };
        if !crate::resource_types::is_known(resource_type) {
            return Err(ReferenceError::UnknownType);
        }
        if !is_valid_id(id) || version.is_some_and(|v| !is_valid_id(v)) {
            return Err(ReferenceError::InvalidId);
        }
        if let Some(b) = base
            && (b.ends_with('/') || b.contains("//") && b.matches("//").count() > 1)
        {
            return Err(ReferenceError::Shape);
        }
        Ok(Reference {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version: version.map(str::to_owned),
            base: base.map(str::to_owned),
        })
    }

    /// `Type/id`, without base or version.
    pub fn relative(&self) -> String {
        format!("{}/{}", self.resource_type, self.id)
    }

    /// Whether this reference names `resource_type/id` (ignoring base and version).
    pub fn is(&self, resource_type: &str, id: &str) -> bool {
        self.resource_type == resource_type && self.id == id
    }

    /// Whether this reference points at a resource on the server whose base is `base`:
    /// relative references always do; absolute ones only when the bases are equal
    /// (ignoring one trailing slash and the case of the scheme and host).
    pub fn is_local_to(&self, base: &str) -> bool {
        match &self.base {
            None => true,
            Some(own) => same_base(own, base),
        }
    }
}

fn same_base(a: &str, b: &str) -> bool {
    fn split(s: &str) -> (String, &str) {
        let s = s.trim_end_matches('/');
        match s.find("://") {
            Some(i) => {
                let after = &s[i + 3..];
                let host_end = after.find('/').map_or(s.len(), |j| i + 3 + j);
                (s[..host_end].to_ascii_lowercase(), &s[host_end..])
            }
            None => (String::new(), s),
        }
    }
    let (ah, ap) = split(a);
    let (bh, bp) = split(b);
    ah == bh && ap == bp
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(base) = &self.base {
            write!(f, "{base}/")?;
        }
        write!(f, "{}/{}", self.resource_type, self.id)?;
        if let Some(v) = &self.version {
            write!(f, "/_history/{v}")?;
        }
        Ok(())
    }
}

/// Whether `s` is a FHIR `id`: 1 to 64 characters from `A-Z a-z 0-9 - .`.
///
/// `.` and `..` alone are refused too: they are valid by the regex but are path
/// segments, not ids, to every HTTP stack in between.
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && s != "."
        && s != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_references() {
        let r = Reference::parse("Patient/123").unwrap();
        assert_eq!(r, Reference::new("Patient", "123"));
        assert_eq!(r.relative(), "Patient/123");
        let v = Reference::parse("Observation/o-1/_history/3").unwrap();
        assert_eq!(v.version.as_deref(), Some("3"));
        assert!(v.is("Observation", "o-1"));
        assert_eq!(v.to_string(), "Observation/o-1/_history/3");
    }

    #[test]
    fn absolute_references() {
        let r = Reference::parse("https://ehr.example/fhir/r4/Patient/abc").unwrap();
        assert_eq!(r.base.as_deref(), Some("https://ehr.example/fhir/r4"));
        assert!(r.is("Patient", "abc"));
        assert!(r.is_local_to("https://EHR.example/fhir/r4/"));
        assert!(!r.is_local_to("https://ehr.example/fhir"));
        assert!(!r.is_local_to("https://ehr.example.evil/fhir/r4"));
        let v = Reference::parse("http://h/Patient/1/_history/2").unwrap();
        assert_eq!(v.base.as_deref(), Some("http://h"));
        assert_eq!(v.version.as_deref(), Some("2"));
        assert_eq!(v.to_string(), "http://h/Patient/1/_history/2");
    }

    #[test]
    fn prefix_ids_are_different_resources() {
        let one = Reference::parse("Patient/1").unwrap();
        let twelve = Reference::parse("Patient/12").unwrap();
        assert_ne!(one, twelve);
        assert!(!twelve.is("Patient", "1"));
    }

    #[test]
    fn rejects_tricks() {
        for bad in [
            "",
            "#contained",
            "urn:uuid:1234",
            "Patient",
            "Patient/",
            "Patient/1/extra",
            "Patient/..",
            "Patient/%2F12",
            "Patient/1?x=y",
            "Patient/1#frag",
            "patient/1",
            "Nope/1",
            "Patient/ 1",
            "Patient//1",
            "http://h/Patient",
            "http:///Patient/1",
            "Patient/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("a-B.9"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id(".."));
        assert!(!is_valid_id(&"x".repeat(65)));
    }
}
