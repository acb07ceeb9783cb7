//! A successful (2xx) upstream response: status, raw body and the headers FHIR gives
//! meaning to (`ETag`, `Location`, `Last-Modified`, `Content-Type`).
//!
//! The body is kept as bytes: the gateway parses only what it needs, and a cache stores
//! the bytes as they came. A cache that answers from an expired entry because the EHR
//! failed says so in [`FhirResponse::stale_age`], for the gateway to emit `Warning: 110`
//! and `Age`.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use portico_fhir::reference::Reference;
use serde_json::Value;

use crate::error::UpstreamError;

/// A 2xx response from the EHR. `Debug` shows the body's length, not its content.
///
/// A conditional read (`FhirRequest::with_if_none_match`) may also yield a `304` with an
/// empty body; no other request does.
#[derive(Clone)]
pub struct FhirResponse {
    pub status: u16,
    pub body: Bytes,
    /// The raw `ETag` header, e.g. `W/"3"`.
    pub etag: Option<String>,
    /// The version id from `ETag` (`W/"3"` → `3`), else from a versioned `Location`.
    pub version_id: Option<String>,
    /// The `Location` header (or `Content-Location` when `Location` is absent).
    pub location: Option<String>,
    /// The raw `Last-Modified` header.
    pub last_modified: Option<String>,
    /// The raw `Content-Type` header.
    pub content_type: Option<String>,
    /// Set only by a cache serving an expired entry because the EHR failed: the age of
    /// the entry (time since it was fetched). `None` for everything fresh.
    pub stale_age: Option<Duration>,
    /// Set only by a cache, on a response served from a stored entry that has been
    /// served before: a slot shared by every response served from that entry, where a
    /// consumer keeps what it derived from the body (see [`Derived`]). Not part of the
    /// response's value: ignored by `==`.
    pub derived: Option<Derived>,
}

impl std::fmt::Debug for FhirResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("etag", &self.etag)
            .field("version_id", &self.version_id)
            .field("location", &self.location)
            .field("last_modified", &self.last_modified)
            .field("content_type", &self.content_type)
            .field("stale_age", &self.stale_age)
            .field("derived", &self.derived.is_some())
            .finish()
    }
}

/// Equal when everything but the [`Derived`] slot is: what was derived from a response
/// is not part of it.
impl PartialEq for FhirResponse {
    fn eq(&self, other: &FhirResponse) -> bool {
        self.status == other.status
            && self.body == other.body
            && self.etag == other.etag
            && self.version_id == other.version_id
            && self.location == other.location
            && self.last_modified == other.last_modified
            && self.content_type == other.content_type
            && self.stale_age == other.stale_age
    }
}

impl Eq for FhirResponse {}

impl FhirResponse {
    /// A response with the given status and body and no headers (for fakes and tests).
    pub fn new(status: u16, body: impl Into<Bytes>) -> FhirResponse {
        FhirResponse {
            status,
            body: body.into(),
            etag: None,
            version_id: None,
            location: None,
            last_modified: None,
            content_type: None,
            stale_age: None,
            derived: None,
        }
    }

    /// Sets `ETag` and the version id it carries.
    pub fn with_etag(mut self, etag: impl Into<String>) -> FhirResponse {
        let etag = etag.into();
        self.version_id = parse_etag_version(&etag);
        self.etag = Some(etag);
        self
    }

    /// Whether this is the `304 Not Modified` answer to a conditional read.
    pub fn is_not_modified(&self) -> bool {
        self.status == 304
    }

    /// Whether a cache served this from an expired entry.
    pub fn is_stale(&self) -> bool {
        self.stale_age.is_some()
    }

    /// The body as JSON; `MalformedBody` if it is empty or not valid JSON.
    pub fn json(&self) -> Result<Value, UpstreamError> {
        if self.body.is_empty() {
            return Err(UpstreamError::MalformedBody {
                detail: "empty body where json was expected".to_owned(),
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| UpstreamError::invalid_json(&e))
    }

    /// The resource named by `Location`: type, id and version if present.
    pub fn location_reference(&self) -> Option<Reference> {
        self.location.as_deref().and_then(parse_location)
    }
}

/// What consumers derived from one cached response body, each under an exact key.
///
/// A cache hands the same slot to every response it serves from one stored entry, so
/// work that is a pure function of (body, key) — parsing, verifying and rewriting a
/// Bundle for one principal — is done once per entry instead of once per hit. The key
/// must name **everything** besides the body that the derived value depends on (for an
/// access-checked answer: the principal's full fingerprint); keys are compared exactly,
/// never hashed. The slot lives and dies with the entry: a refetch, a revalidation or
/// an invalidating write gives a new entry and an empty slot.
///
/// A slot has a byte budget (set by whoever creates it; the cache makes it a multiple
/// of the body's size): each value is kept with the weight its consumer declares, the
/// oldest values go first when a new one would not fit, and a value heavier than the
/// whole budget is not kept.
#[derive(Clone)]
pub struct Derived(Arc<Mutex<Kept>>);

/// One derived value, of whatever type its consumer chose.
type DerivedValue = Arc<dyn Any + Send + Sync>;

struct Kept {
    budget: usize,
    used: usize,
    /// Oldest first: (key, weight, value).
    values: Vec<(String, usize, DerivedValue)>,
}

impl Derived {
    /// An empty slot that keeps at most `budget` bytes of derived values.
    pub fn with_budget(budget: usize) -> Derived {
        Derived(Arc::new(Mutex::new(Kept {
            budget,
            used: 0,
            values: Vec::new(),
        })))
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value kept under `key`, if there is one of type `T`.
    pub fn get<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let kept = self.kept();
        kept.values
            .iter()
            .find(|(k, _, _)| k == key)
            .and_then(|(_, _, v)| v.clone().downcast::<T>().ok())
    }

    /// Keeps `value`, said to weigh `weight` bytes, under `key` (replacing what was
    /// there), dropping the oldest values until it fits. Returns whether it was kept:
    /// not when it alone is heavier than the budget.
    pub fn set<T: Any + Send + Sync>(&self, mut key: String, value: Arc<T>, weight: usize) -> bool {
        let mut kept = self.kept();
        if let Some(at) = kept.values.iter().position(|(k, _, _)| *k == key) {
            let (_, old, _) = kept.values.remove(at);
            kept.used -= old;
        }
        if weight > kept.budget {
            return false;
        }
        while kept.used + weight > kept.budget {
            let (_, old, _) = kept.values.remove(0);
            kept.used -= old;
        }
        kept.used += weight;
        // Most entries keep one value: room for one, not four, at first (then the
        // usual doubling), and the key no larger than its text.
        if kept.values.capacity() == 0 {
            kept.values.reserve_exact(1);
        }
        key.shrink_to_fit();
        kept.values.push((key, weight, value));
        true
    }

    /// The bytes of derived values kept now.
    pub fn used(&self) -> usize {
        self.kept().used
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

/// Parses a `Location`/`Content-Location` value (absolute or relative, with or without
/// `_history/vid`, query ignored) into a reference.
pub fn parse_location(location: &str) -> Option<Reference> {
    let location = location.trim();
    let without_query = location.split(['?', '#']).next().unwrap_or(location);
    let trimmed = without_query.trim_end_matches('/');
    Reference::parse(trimmed).ok()
}

/// The version id in an ETag: `W/"3"` → `3`, `"3"` → `3`; `None` if empty or unquoted.
pub fn parse_etag_version(etag: &str) -> Option<String> {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    let inner = etag.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.is_empty()).then(|| inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_kept_by_exact_key_and_type_within_the_budget() {
        let slot = Derived::with_budget(100);
        assert!(slot.get::<String>("a").is_none());
        assert!(slot.set("a".to_owned(), Arc::new("one".to_owned()), 10));
        assert_eq!(
            slot.get::<String>("a").as_deref().map(String::as_str),
            Some("one")
        );
        assert!(slot.get::<String>("ab").is_none(), "exact keys only");
        assert!(
            slot.get::<u32>("a").is_none(),
            "another type under the same key"
        );
        // Clones share the slot; replacing a key frees its old weight.
        let shared = slot.clone();
        assert!(shared.set("a".to_owned(), Arc::new("two".to_owned()), 20));
        assert_eq!(
            slot.get::<String>("a").as_deref().map(String::as_str),
            Some("two")
        );
        assert_eq!(slot.used(), 20);
        // The oldest go first when a new value would not fit.
        assert!(slot.set("b".to_owned(), Arc::new(1_u32), 50));
        assert!(slot.set("c".to_owned(), Arc::new(2_u32), 40));
        assert!(slot.get::<String>("a").is_none(), "the oldest went");
        assert_eq!(slot.get::<u32>("b").as_deref(), Some(&1));
        assert_eq!(slot.used(), 90);
        // Heavier than the whole budget: not kept, nothing else dropped.
        assert!(!slot.set("d".to_owned(), Arc::new(3_u32), 101));
        assert!(slot.get::<u32>("d").is_none());
        assert_eq!(slot.used(), 90);
        assert_eq!(FhirResponse::new(200, "x"), {
            let mut r = FhirResponse::new(200, "x");
            r.derived = Some(slot);
            r
        });
    }

    #[test]
    fn etag_versions() {
        assert_eq!(parse_etag_version("W/\"3\"").as_deref(), Some("3"));
        assert_eq!(parse_etag_version("\"abc-1\"").as_deref(), Some("abc-1"));
        assert_eq!(parse_etag_version(" W/\"12\" ").as_deref(), Some("12"));
        assert_eq!(parse_etag_version("W/\"\""), None);
        assert_eq!(parse_etag_version("3"), None);
    }

    #[test]
    fn locations() {
        let r = parse_location("http://ehr.example/fhir/Patient/123/_history/4").unwrap();
        assert_eq!(
            (
                r.resource_type.as_str(),
                r.id.as_str(),
                r.version.as_deref()
            ),
            ("Patient", "123", Some("4"))
        );
        let r = parse_location("Observation/abc").unwrap();
        assert_eq!(
            (r.resource_type.as_str(), r.id.as_str()),
            ("Observation", "abc")
        );
        assert_eq!(r.version, None);
        let r = parse_location("https://ehr.example/fhir/Task/t1/_history/2?_format=json").unwrap();
        assert_eq!(r.version.as_deref(), Some("2"));
        assert!(parse_location("https://ehr.example/fhir/").is_none());
        assert!(parse_location("").is_none());
    }

    #[test]
    fn constructor_and_etag() {
        let r = FhirResponse::new(200, "{}").with_etag("W/\"7\"");
        assert_eq!(r.version_id.as_deref(), Some("7"));
        assert_eq!(r.etag.as_deref(), Some("W/\"7\""));
        assert!(!r.is_stale() && !r.is_not_modified());
    }

    #[test]
    fn json_errors_are_malformed_body_without_content() {
        let resp = FhirResponse::new(200, Bytes::from_static(b"{\"secret\": "));
        assert!(!format!("{resp:?}").contains("secret"));
        let err = resp.json().unwrap_err();
        assert!(matches!(err, UpstreamError::MalformedBody { .. }));
        assert!(!err.to_string().contains("secret"));
    }
}
