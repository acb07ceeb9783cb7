//! [`AppState`]: everything a handler needs, cheap to clone. Built once by the
//! bootstrap (`app.rs`, which alone knows how to construct it from a [`Config`]); every
//! handler module depends on this file, and this file only on leaf modules (config,
//! cursors, the login's state, metrics), so the handlers and the bootstrap do not form
//! a circle.

use std::sync::Arc;

use portico_access::audit::{AuditRecord, AuditSink};
use portico_access::{Policy, Spliced, TokenVerifier, VerifiedBytes};
use portico_cache::CachedUpstream;
use portico_upstream::{Capabilities, FhirClient, FhirUpstream, Resilient};
use tokio::sync::OnceCell;

use crate::clock::unix_now;
use crate::config::Config;
use crate::facade::cursor::CursorKey;
use crate::login::oauth::SmartEndpoints;

/// Everything a handler needs, cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) upstream: Arc<dyn FhirUpstream>,
    pub(crate) cache: Arc<CachedUpstream<Arc<Resilient<Arc<FhirClient>>>>>,
    pub(crate) resilient: Arc<Resilient<Arc<FhirClient>>>,
    pub(crate) client: Arc<FhirClient>,
    pub(crate) passthrough: bool,
    pub(crate) verifier: TokenVerifier,
    pub(crate) policy: Policy,
    pub(crate) audit: Arc<dyn AuditSink>,
    /// The same sink, as itself: for `/metrics` and shutdown.
    pub(crate) audit_trail: crate::audit::AuditTrail,
    pub(crate) cursor_key: CursorKey,
    pub(crate) http: reqwest::Client,
    pub(crate) fhir_base: String,
    pub(crate) upstream_base: String,
    pub(crate) smart: OnceCell<SmartEndpoints>,
    pub(crate) capabilities: OnceCell<Capabilities>,
    pub(crate) login: crate::login::state::LoginState,
    pub(crate) http_metrics: crate::metrics::HttpMetrics,
    pub(crate) guard: portico_guard::Guard,
    /// Proxy access from the EHR's `RelatedPerson` records.
    pub(crate) delegations: portico_guard::Delegations,
    pub(crate) portal: portico_portal::Portal,
    pub(crate) idempotency: Arc<dyn portico_portal::IdempotencyStore>,
    /// The Redis client replicas share state through, when `[redis] url` is set.
    pub(crate) redis: Option<portico_redis::Redis>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("fhir_base", &self.fhir_base)
            .finish_non_exhaustive()
    }
}

/// `bytes` with every occurrence of `from` replaced by `to`; `bytes` itself when there
/// is none.
fn replace_all(bytes: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    let finder = memchr::memmem::Finder::new(from.as_bytes());
    let mut found = finder.find_iter(&bytes).peekable();
    if found.peek().is_none() {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + to.len().saturating_sub(from.len()) * 8);
    let mut at = 0;
    for start in found {
        out.extend_from_slice(&bytes[at..start]);
        out.extend_from_slice(to.as_bytes());
        at = start + from.len();
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

impl AppState {
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The upstream port every request goes through.
    pub fn upstream(&self) -> &Arc<dyn FhirUpstream> {
        &self.inner.upstream
    }

    /// The concrete client, for probes that need more than the port (token checks).
    pub fn client(&self) -> &FhirClient {
        &self.inner.client
    }

    /// The read cache (for invalidation and statistics).
    pub fn cache(&self) -> &CachedUpstream<Arc<Resilient<Arc<FhirClient>>>> {
        &self.inner.cache
    }

    /// The resilience layer (breaker state for `/readyz`).
    pub fn resilience(&self) -> &Resilient<Arc<FhirClient>> {
        &self.inner.resilient
    }

    /// Where a login's proxy access comes from ([`portico_guard::delegation`]).
    pub fn delegations(&self) -> &portico_guard::Delegations {
        &self.inner.delegations
    }

    /// The principal every decision is made for: `principal` as verified from a token,
    /// with the patients its relationships in the EHR back and their proxy grants.
    /// `token` goes upstream with the lookups in passthrough mode.
    pub async fn resolve_principal(
        &self,
        principal: portico_access::Principal,
        token: &portico_upstream::SecretString,
    ) -> Result<portico_access::Principal, crate::error::ApiError> {
        let bearer = self.passthrough().then_some(token);
        self.delegations()
            .resolve(principal, bearer)
            .await
            .map_err(|e| crate::authn::delegation_error(&e))
    }

    /// The one guarded path to the EHR (see [`portico_guard`]).
    pub fn guard(&self) -> &portico_guard::Guard {
        &self.inner.guard
    }

    /// The portal actions' way to the EHR.
    pub fn portal(&self) -> &portico_portal::Portal {
        &self.inner.portal
    }

    /// Where portal writes' idempotency keys are remembered.
    pub fn idempotency(&self) -> &dyn portico_portal::IdempotencyStore {
        self.inner.idempotency.as_ref()
    }

    /// The Redis client shared state goes through (`None`: single node, all in memory).
    pub fn redis(&self) -> Option<&portico_redis::Redis> {
        self.inner.redis.as_ref()
    }

    /// The audit trail (its figures for `/metrics`; closing it at shutdown).
    pub fn audit_trail(&self) -> &crate::audit::AuditTrail {
        &self.inner.audit_trail
    }

    /// HTTP request counters and latency histograms, for `/metrics`.
    pub fn http_metrics(&self) -> &crate::metrics::HttpMetrics {
        &self.inner.http_metrics
    }

    /// Whether the caller's own token goes upstream.
    pub fn passthrough(&self) -> bool {
        self.inner.passthrough
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.inner.verifier
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The portal login (BFF) and its sessions.
    pub fn login(&self) -> &crate::login::state::LoginState {
        &self.inner.login
    }

    pub fn cursor_key(&self) -> &CursorKey {
        &self.inner.cursor_key
    }

    /// When a paging cursor issued now expires: `cursor_ttl_seconds` from the start of
    /// the current step (a tenth of the TTL, at most a minute), so that a Bundle
    /// rendered once can be served again for the rest of the step with the same
    /// cursors (see the facade's rendered answers). A cursor lives at least 90 % of the
    /// TTL.
    pub fn cursor_expiry(&self) -> u64 {
        let ttl = self.inner.config.facade.cursor_ttl_seconds;
        let step = (ttl / 10).clamp(1, 60);
        unix_now() / step * step + ttl
    }

    /// The gateway's FHIR base, as clients see it.
    pub fn fhir_base(&self) -> &str {
        &self.inner.fhir_base
    }

    /// Replaces the EHR's FHIR base with the gateway's in text leaving the gateway, so
    /// that no upstream address (and no link around the gateway) reaches a client.
    pub fn rewrite_bases(&self, text: &str) -> String {
        // A whole UTF-8 string replaced by another in UTF-8 text leaves UTF-8 (a match
        // of a complete string always starts and ends on character boundaries).
        String::from_utf8(self.rewrite_bases_bytes(text.as_bytes().to_vec()))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// [`AppState::rewrite_bases`] over bytes (serialized JSON), without a copy when
    /// the upstream base does not occur.
    pub fn rewrite_bases_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        replace_all(bytes, &self.inner.upstream_base, &self.inner.fhir_base)
    }

    /// `verified`'s answer as [`AppState::rewrite_bases_bytes`] of its JSON would give
    /// it, held as pieces of the upstream body (see [`Spliced`]); `None` when it cannot
    /// be.
    pub fn splice(&self, verified: &VerifiedBytes) -> Option<Spliced> {
        verified.splice(&self.inner.upstream_base, &self.inner.fhir_base)
    }

    /// Writes an audit record; a failing sink is logged, never silently dropped.
    pub async fn audit(&self, record: &AuditRecord) {
        if let Err(e) = self.inner.audit.record(record).await {
            tracing::error!(error = %e, "audit record could not be written");
        }
    }

    /// The authorization server's endpoints: configured, or discovered from the EHR's
    /// SMART configuration (cached once found).
    pub async fn smart_endpoints(&self) -> Option<SmartEndpoints> {
        let auth = &self.inner.config.auth;
        let issuer = auth.issuer.as_str().trim_end_matches('/').to_owned();
        if let (Some(a), Some(t)) = (&auth.authorize_url, &auth.token_url) {
            return Some(SmartEndpoints {
                issuer,
                authorize: a.to_string(),
                token: t.to_string(),
                jwks: auth.jwks_url.as_ref().map(|u| u.to_string()),
            });
        }
        self.inner
            .smart
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/smart-configuration",
                    self.inner.upstream_base
                );
                let doc: serde_json::Value = self
                    .inner
                    .http
                    .get(url)
                    .send()
                    .await
                    .map_err(|_| ())?
                    .json()
                    .await
                    .map_err(|_| ())?;
                let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                Ok::<_, ()>(SmartEndpoints {
                    issuer: field("issuer").unwrap_or(issuer.clone()),
                    authorize: auth
                        .authorize_url
                        .as_ref()
                        .map(|u| u.to_string())
                        .or_else(|| field("authorization_endpoint"))
                        .ok_or(())?,
                    token: auth
                        .token_url
                        .as_ref()
                        .map(|u| u.to_string())
                        .or_else(|| field("token_endpoint"))
                        .ok_or(())?,
                    jwks: auth
                        .jwks_url
                        .as_ref()
                        .map(|u| u.to_string())
                        .or_else(|| field("jwks_uri")),
                })
            })
            .await
            .ok()
            .cloned()
    }

    /// The EHR's CapabilityStatement (cached once read).
    pub async fn upstream_capabilities(&self) -> Option<Capabilities> {
        self.inner
            .capabilities
            .get_or_try_init(|| self.inner.client.capabilities())
            .await
            .ok()
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::replace_all;

    #[test]
    fn replace_all_replaces_every_occurrence_and_copies_nothing_otherwise() {
        let up = "http://ehr:8080/fhir";
        let gw = "https://portal.example/fhir";
        let text = format!(r#"{{"a":"{up}/Patient/1","b":["{up}/x","{up}"]}}"#);
        let out = replace_all(text.clone().into_bytes(), up, gw);
        assert_eq!(String::from_utf8(out).unwrap(), text.replace(up, gw));
        let none = br#"{"a":"Patient/1"}"#.to_vec();
        let ptr = none.as_ptr();
        let same = replace_all(none, up, gw);
        assert_eq!(same.as_ptr(), ptr, "no occurrence: the same buffer");
        assert_eq!(replace_all(b"x".to_vec(), "xy", "z"), b"x");
    }
}
