//! One FHIR interaction to perform upstream, as data.
//!
//! A [`FhirRequest`] is an [`Interaction`] (what to do) plus the per-call context the
//! client needs (the caller's bearer token for passthrough, a request id, a `Prefer`
//! return preference, an `If-None-Match` for conditional reads). The interaction is
//! `Eq + Hash` so that a cache can key on it.
//!
//! The [`CachePartition`] is context for the cache only: the gateway sets it from the
//! principal (the patients it may read and a fingerprint of its scopes) and the cache
//! keys and invalidates by it. It is never sent upstream, and `Debug` never shows it.

use bytes::Bytes;

use crate::secret::SecretString;

/// What to do upstream.
///
/// `Debug` shows the shape (kind, type, id, parameter names, body length) but no search
/// values and no bodies, which may carry patient data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `GET [type]/[id]`
    Read { resource_type: String, id: String },
    /// `GET [type]/[id]/_history/[version]`
    VRead {
        resource_type: String,
        id: String,
        version: String,
    },
    /// `GET [type]/[id]/_history?params`
    History {
        resource_type: String,
        id: String,
        params: Vec<(String, String)>,
    },
    /// `GET [type]?params`, or `POST [type]/_search` when the query is long.
    Search {
        resource_type: String,
        params: Vec<(String, String)>,
    },
    /// `GET` of an upstream `next`/`previous` link; it must lie under the configured base.
    SearchPage { url: String },
    /// `POST [type]`, conditional when `if_none_exist` is set.
    Create {
        resource_type: String,
        body: Bytes,
        if_none_exist: Option<String>,
    },
    /// `PUT [type]/[id]`, version-aware when `if_match` is set.
    Update {
        resource_type: String,
        id: String,
        body: Bytes,
        if_match: Option<String>,
    },
    /// `PATCH [type]/[id]` with a JSON Patch document.
    Patch {
        resource_type: String,
        id: String,
        json_patch: Bytes,
        if_match: Option<String>,
    },
    /// `DELETE [type]/[id]`
    Delete { resource_type: String, id: String },
    /// `POST [base]/[type]/[id]/$name` with a `Parameters` body (`application/fhir+json`):
    /// a FHIR operation such as `Appointment/$find` or `Appointment/$book`. Never cached
    /// and never retried (it may change data); a cache treats it as a write of its
    /// resource type.
    Operation {
        resource_type: Option<String>,
        id: Option<String>,
        /// The operation's name without the `$`.
        name: String,
        body: Bytes,
    },
    /// `GET metadata`
    Capabilities,
}

impl std::fmt::Debug for Interaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names =
            |params: &[(String, String)]| params.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        match self {
            Interaction::Read { resource_type, id } => f
                .debug_struct("Read")
                .field("resource_type", resource_type)
                .field("id", id)
                .finish(),
            Interaction::VRead {
                resource_type,
                id,
                version,
            } => f
                .debug_struct("VRead")
                .field("resource_type", resource_type)
                .field("id", id)
                .field("version", version)
                .finish(),
            Interaction::History {
                resource_type,
                id,
                params,
            } => f
                .debug_struct("History")
                .field("resource_type", resource_type)
                .field("id", id)
                .field("param_names", &names(params))
                .finish(),
            Interaction::Search {
                resource_type,
                params,
            } => f
                .debug_struct("Search")
                .field("resource_type", resource_type)
                .field("param_names", &names(params))
                .finish(),
            Interaction::SearchPage { .. } => f.debug_struct("SearchPage").finish_non_exhaustive(),
            Interaction::Create {
                resource_type,
                body,
                if_none_exist,
            } => f
                .debug_struct("Create")
                .field("resource_type", resource_type)
                .field("body_len", &body.len())
                .field("if_none_exist", &if_none_exist.is_some())
                .finish(),
            Interaction::Update {
                resource_type,
                id,
                body,
                if_match,
            } => f
                .debug_struct("Update")
                .field("resource_type", resource_type)
                .field("id", id)
                .field("body_len", &body.len())
                .field("if_match", if_match)
                .finish(),
            Interaction::Patch {
                resource_type,
                id,
                json_patch,
                if_match,
            } => f
                .debug_struct("Patch")
                .field("resource_type", resource_type)
                .field("id", id)
                .field("patch_len", &json_patch.len())
                .field("if_match", if_match)
                .finish(),
            Interaction::Delete { resource_type, id } => f
                .debug_struct("Delete")
                .field("resource_type", resource_type)
                .field("id", id)
                .finish(),
            Interaction::Operation {
                resource_type,
                id,
                name,
                body,
            } => f
                .debug_struct("Operation")
                .field("resource_type", resource_type)
                .field("id", id)
                .field("name", name)
                .field("body_len", &body.len())
                .finish(),
            Interaction::Capabilities => f.write_str("Capabilities"),
        }
    }
}

/// The `Prefer: return=...` preference for writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnPreference {
    Minimal,
    Representation,
    OperationOutcome,
}

impl ReturnPreference {
    /// The `Prefer` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            ReturnPreference::Minimal => "return=minimal",
            ReturnPreference::Representation => "return=representation",
            ReturnPreference::OperationOutcome => "return=OperationOutcome",
        }
    }
}

/// Who a cached answer may be served to: the patients whose data the principal may
/// read (its compartment, or several for a proxy) and an opaque fingerprint of the scopes
/// that shaped the request. Two requests share cache entries only if their partitions
/// are equal; a write invalidates the entries of every partition that names one of its
/// patients.
///
/// `Debug` shows how many patients there are, never their ids.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CachePartition {
    /// Sorted and deduplicated.
    patients: Vec<String>,
    scope_fingerprint: String,
}

impl CachePartition {
    /// A partition for these patient ids (order and duplicates do not matter) and scope
    /// fingerprint (for example a hash of the sorted granted scopes).
    pub fn new<I, S>(patients: I, scope_fingerprint: impl Into<String>) -> CachePartition
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut patients: Vec<String> = patients.into_iter().map(Into::into).collect();
        patients.sort();
        patients.dedup();
        CachePartition {
            patients,
            scope_fingerprint: scope_fingerprint.into(),
        }
    }

    /// The patient ids, sorted.
    pub fn patients(&self) -> &[String] {
        &self.patients
    }

    /// The scope fingerprint.
    pub fn scope_fingerprint(&self) -> &str {
        &self.scope_fingerprint
    }
}

impl std::fmt::Debug for CachePartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachePartition")
            .field("patients", &self.patients.len())
            .finish_non_exhaustive()
    }
}

/// One FHIR interaction and its per-call context.
///
/// `Debug` redacts the bearer token and the partition.
#[derive(Clone)]
pub struct FhirRequest {
    pub interaction: Interaction,
    /// The caller's own access token, sent upstream only in passthrough mode.
    pub bearer: Option<SecretString>,
    /// Forwarded as `X-Request-Id`.
    pub request_id: Option<String>,
    /// Sent as `Prefer`.
    pub prefer: Option<ReturnPreference>,
    /// Sent as `If-None-Match` on a read or vread; the client then returns a `304`
    /// response (empty body) instead of an error when the EHR answers Not Modified.
    pub if_none_match: Option<String>,
    /// The cache partition; never sent upstream.
    pub partition: Option<CachePartition>,
}

impl std::fmt::Debug for FhirRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirRequest")
            .field("interaction", &self.interaction)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("request_id", &self.request_id)
            .field("prefer", &self.prefer)
            .field("if_none_match", &self.if_none_match)
            .field("partition", &self.partition)
            .finish()
    }
}

impl From<Interaction> for FhirRequest {
    fn from(interaction: Interaction) -> Self {
        FhirRequest {
            interaction,
            bearer: None,
            request_id: None,
            prefer: None,
            if_none_match: None,
            partition: None,
        }
    }
}

impl FhirRequest {
    pub fn read(resource_type: impl Into<String>, id: impl Into<String>) -> Self {
        Interaction::Read {
            resource_type: resource_type.into(),
            id: id.into(),
        }
        .into()
    }

    pub fn vread(
        resource_type: impl Into<String>,
        id: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Interaction::VRead {
            resource_type: resource_type.into(),
            id: id.into(),
            version: version.into(),
        }
        .into()
    }

    pub fn history(
        resource_type: impl Into<String>,
        id: impl Into<String>,
        params: Vec<(String, String)>,
    ) -> Self {
        Interaction::History {
            resource_type: resource_type.into(),
            id: id.into(),
            params,
        }
        .into()
    }

    pub fn search<K: Into<String>, V: Into<String>>(
        resource_type: impl Into<String>,
        params: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Interaction::Search {
            resource_type: resource_type.into(),
            params: params
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
        .into()
    }

    pub fn search_page(url: impl Into<String>) -> Self {
        Interaction::SearchPage { url: url.into() }.into()
    }

    pub fn create(resource_type: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Interaction::Create {
            resource_type: resource_type.into(),
            body: body.into(),
            if_none_exist: None,
        }
        .into()
    }

    pub fn update(
        resource_type: impl Into<String>,
        id: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Self {
        Interaction::Update {
            resource_type: resource_type.into(),
            id: id.into(),
            body: body.into(),
            if_match: None,
        }
        .into()
    }

    pub fn patch(
        resource_type: impl Into<String>,
        id: impl Into<String>,
        json_patch: impl Into<Bytes>,
    ) -> Self {
        Interaction::Patch {
            resource_type: resource_type.into(),
            id: id.into(),
            json_patch: json_patch.into(),
            if_match: None,
        }
        .into()
    }

    pub fn delete(resource_type: impl Into<String>, id: impl Into<String>) -> Self {
        Interaction::Delete {
            resource_type: resource_type.into(),
            id: id.into(),
        }
        .into()
    }

    pub fn capabilities() -> Self {
        Interaction::Capabilities.into()
    }

    /// `POST [type]/[id]/$name` (type- or instance-level when `resource_type`/`id` are
    /// given, system-level otherwise) with a `Parameters` body.
    pub fn operation(
        resource_type: Option<&str>,
        id: Option<&str>,
        name: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Self {
        Interaction::Operation {
            resource_type: resource_type.map(str::to_owned),
            id: id.map(str::to_owned),
            name: name.into(),
            body: body.into(),
        }
        .into()
    }

    /// Sets the caller's bearer token (used in passthrough mode only).
    pub fn with_bearer(mut self, token: SecretString) -> Self {
        self.bearer = Some(token);
        self
    }

    /// Sets the id forwarded as `X-Request-Id`.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the `Prefer: return=` preference.
    pub fn with_prefer(mut self, prefer: ReturnPreference) -> Self {
        self.prefer = Some(prefer);
        self
    }

    /// Sets the cache partition (never sent upstream).
    pub fn with_partition(mut self, partition: CachePartition) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Makes a read or vread conditional: `If-None-Match` with this raw ETag (e.g.
    /// `W/"3"`). A `304` answer is then returned as a response, not an error.
    pub fn with_if_none_match(mut self, etag: impl Into<String>) -> Self {
        self.if_none_match = Some(etag.into());
        self
    }

    /// Sets `If-None-Exist` (the query part, e.g. `identifier=urn:x|123`) on a create;
    /// ignored for other interactions.
    pub fn with_if_none_exist(mut self, query: impl Into<String>) -> Self {
        if let Interaction::Create { if_none_exist, .. } = &mut self.interaction {
            *if_none_exist = Some(query.into());
        }
        self
    }

    /// Sets `If-Match` to the raw ETag value (e.g. `W/"3"`) on an update or patch;
    /// ignored for other interactions.
    pub fn with_if_match(mut self, etag: impl Into<String>) -> Self {
        if let Interaction::Update { if_match, .. } | Interaction::Patch { if_match, .. } =
            &mut self.interaction
        {
            *if_match = Some(etag.into());
        }
        self
    }

    /// Sets `If-Match: W/"<version>"` on an update or patch.
    pub fn with_if_match_version(self, version: &str) -> Self {
        self.with_if_match(format!("W/\"{version}\""))
    }

    /// The resource type the interaction is about; `None` for `SearchPage`,
    /// `Capabilities` and system-level operations.
    pub fn resource_type(&self) -> Option<&str> {
        match &self.interaction {
            Interaction::Read { resource_type, .. }
            | Interaction::VRead { resource_type, .. }
            | Interaction::History { resource_type, .. }
            | Interaction::Search { resource_type, .. }
            | Interaction::Create { resource_type, .. }
            | Interaction::Update { resource_type, .. }
            | Interaction::Patch { resource_type, .. }
            | Interaction::Delete { resource_type, .. } => Some(resource_type),
            Interaction::Operation { resource_type, .. } => resource_type.as_deref(),
            Interaction::SearchPage { .. } | Interaction::Capabilities => None,
        }
    }

    /// The resource id the interaction is about, for instance-level interactions.
    pub fn id(&self) -> Option<&str> {
        match &self.interaction {
            Interaction::Read { id, .. }
            | Interaction::VRead { id, .. }
            | Interaction::History { id, .. }
            | Interaction::Update { id, .. }
            | Interaction::Patch { id, .. }
            | Interaction::Delete { id, .. } => Some(id),
            Interaction::Operation { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// Whether the interaction only reads (safe to cache and to repeat).
    pub fn is_read(&self) -> bool {
        matches!(
            self.interaction,
            Interaction::Read { .. }
                | Interaction::VRead { .. }
                | Interaction::History { .. }
                | Interaction::Search { .. }
                | Interaction::SearchPage { .. }
                | Interaction::Capabilities
        )
    }

    /// A short name for logs and metrics (`read`, `search-type`, ...), with no data in it.
    pub fn kind(&self) -> &'static str {
        match self.interaction {
            Interaction::Read { .. } => "read",
            Interaction::VRead { .. } => "vread",
            Interaction::History { .. } => "history-instance",
            Interaction::Search { .. } => "search-type",
            Interaction::SearchPage { .. } => "search-page",
            Interaction::Create { .. } => "create",
            Interaction::Update { .. } => "update",
            Interaction::Patch { .. } => "patch",
            Interaction::Delete { .. } => "delete",
            Interaction::Operation { .. } => "operation",
            Interaction::Capabilities => "capabilities",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_and_redaction() {
        let r = FhirRequest::read("Patient", "1").with_bearer(SecretString::new("tok-123"));
        assert_eq!(r.resource_type(), Some("Patient"));
        assert_eq!(r.id(), Some("1"));
        assert!(r.is_read());
        assert!(!format!("{r:?}").contains("tok-123"));
        let s = FhirRequest::search("Patient", [("name", "Smith")]);
        let c2 = FhirRequest::create("Patient", r#"{"name":[{"family":"Smith"}]}"#);
        for debug in [format!("{s:?}"), format!("{c2:?}")] {
            assert!(!debug.contains("Smith"), "{debug}");
        }
        assert!(format!("{s:?}").contains("name"));

        let c = FhirRequest::create("Task", "{}").with_if_none_exist("identifier=a|b");
        assert!(!c.is_read());
        assert!(matches!(
            c.interaction,
            Interaction::Create { if_none_exist: Some(ref q), .. } if q == "identifier=a|b"
        ));
        let u = FhirRequest::update("Patient", "1", "{}").with_if_match_version("3");
        assert!(matches!(
            u.interaction,
            Interaction::Update { if_match: Some(ref m), .. } if m == "W/\"3\""
        ));
        assert_eq!(FhirRequest::search_page("http://x").resource_type(), None);

        let op = FhirRequest::operation(
            Some("Appointment"),
            None,
            "book",
            r#"{"resourceType":"Parameters","parameter":[{"name":"comment","valueString":"Smith"}]}"#,
        );
        assert!(
            !op.is_read(),
            "an operation may write: never cached or retried"
        );
        assert_eq!(op.kind(), "operation");
        assert_eq!(op.resource_type(), Some("Appointment"));
        assert_eq!(op.id(), None);
        let debug = format!("{op:?}");
        assert!(
            !debug.contains("Smith") && debug.contains("book"),
            "{debug}"
        );
        let instance = FhirRequest::operation(Some("Appointment"), Some("a1"), "hold", "{}");
        assert_eq!(instance.id(), Some("a1"));
    }

    #[test]
    fn partition_is_normalized_and_redacted() {
        let p = CachePartition::new(["pat-b", "pat-a", "pat-b"], "fp1");
        assert_eq!(p.patients(), ["pat-a".to_owned(), "pat-b".to_owned()]);
        assert_eq!(p, CachePartition::new(["pat-a", "pat-b"], "fp1"));
        assert_ne!(p, CachePartition::new(["pat-a", "pat-b"], "fp2"));
        let r = FhirRequest::read("Patient", "x").with_partition(p);
        let debug = format!("{r:?}");
        assert!(
            !debug.contains("pat-a") && !debug.contains("fp1"),
            "{debug}"
        );
    }
}
