//! Inbound authentication: bearer tokens verified into a [`Principal`].
//!
//! The verification rules live in `portico-access` (HTTP-agnostic); this module gives it
//! the network: [`HttpKeySource`] fetches the issuer's JWKS (configured, or discovered
//! from the EHR's SMART configuration or the issuer's OpenID configuration), and
//! [`Authenticated`] is the axum extractor that every protected handler takes.
//! Tokens are never logged.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use portico_access::audit::AuditRecord;
use portico_access::{KeySource, Principal, TokenError};
use portico_upstream::SecretString;
use tokio::sync::OnceCell;
use tower_http::request_id::RequestId;
use url::Url;

use crate::error::{ApiError, FhirError};
use crate::state::AppState;

/// Fetches an issuer's signing keys over HTTP.
#[derive(Debug)]
pub struct HttpKeySource {
    http: reqwest::Client,
    configured: Option<Url>,
    /// Documents that may name a `jwks_uri`, tried in order.
    discovery: Vec<Url>,
    discovered: OnceCell<Url>,
}

impl HttpKeySource {
    pub fn new(http: reqwest::Client, configured: Option<Url>, discovery: Vec<Url>) -> Self {
        HttpKeySource {
            http,
            configured,
            discovery,
            discovered: OnceCell::new(),
        }
    }

    async fn jwks_url(&self) -> Result<Url, String> {
        if let Some(url) = &self.configured {
            return Ok(url.clone());
        }
        self.discovered
            .get_or_try_init(|| async {
                for doc in &self.discovery {
                    let Ok(res) = self.http.get(doc.clone()).send().await else {
                        continue;
                    };
                    if !res.status().is_success() {
                        continue;
                    }
                    let Ok(body) = res.json::<serde_json::Value>().await else {
                        continue;
                    };
                    if let Some(uri) = body.get("jwks_uri").and_then(|v| v.as_str())
                        && let Ok(url) = Url::parse(uri)
                    {
                        return Ok(url);
                    }
                }
                Err("no jwks_uri could be discovered".to_owned())
            })
            .await
            .cloned()
    }
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn keys(
        &self,
        _issuer: &str,
        _kid: Option<&str>,
    ) -> Result<Vec<Jwk>, portico_access::token::KeySourceError> {
        use portico_access::token::KeySourceError;
        let url = self.jwks_url().await.map_err(KeySourceError)?;
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| KeySourceError(format!("jwks fetch failed: {}", e.without_url())))?;
        if !res.status().is_success() {
            return Err(KeySourceError(format!(
                "jwks fetch answered {}",
                res.status().as_u16()
            )));
        }
        let set: JwkSet = res
            .json()
            .await
            .map_err(|_| KeySourceError("jwks is not a JWK set".to_owned()))?;
        Ok(set.keys)
    }
}

/// An authenticated request: the principal and the raw token (for passthrough upstream).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Arc<Principal>,
    pub token: SecretString,
    pub request_id: Option<String>,
}

/// The request id tower-http assigned, for audit records.
pub fn request_id(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_owned)
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = FhirError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let request_id = request_id(parts);
        let Some(token) = bearer(parts) else {
            audit_refusal(state, request_id).await;
            return Err(unauthorized("a bearer token is required"));
        };
        match state.verifier().verify(token).await {
            Ok(principal) => {
                let token = SecretString::new(token);
                let principal = state
                    .resolve_principal(principal, &token)
                    .await
                    .map_err(FhirError)?;
                Ok(Authenticated {
                    principal: Arc::new(principal),
                    token,
                    request_id,
                })
            }
            Err(e) => {
                audit_refusal(state, request_id).await;
                if e.retryable() {
                    tracing::warn!(error = %e, "token verification unavailable");
                    return Err(FhirError(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "auth_unavailable",
                        "token verification is unavailable; try again shortly",
                    )));
                }
                tracing::debug!(error = %e, "token refused");
                Err(unauthorized(token_message(&e)))
            }
        }
    }
}

/// The answer when a login's proxy access cannot be decided.
pub fn delegation_error(e: &portico_guard::DelegationError) -> ApiError {
    match e {
        portico_guard::DelegationError::Unprovable => ApiError::new(
            StatusCode::FORBIDDEN,
            "proxy_unprovable",
            "the token names several patients but no fhirUser to check them against",
        ),
        portico_guard::DelegationError::Upstream(e) => {
            tracing::warn!(error = %e, "relationships could not be read from the EHR");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "relationships_unavailable",
                "who this login may act for cannot be checked right now; try again shortly",
            )
        }
    }
}

/// Records an unauthenticated request: no principal, denied.
async fn audit_refusal(state: &AppState, request_id: Option<String>) {
    let mut record = AuditRecord::new(None, portico_access::Interaction::Read, None);
    record.decision = portico_access::audit::Decision::Denied;
    if let Some(id) = request_id {
        record = record.with_request_id(id);
    }
    state.audit(&record).await;
}

fn token_message(e: &TokenError) -> &'static str {
    match e {
        TokenError::Expired => "the token has expired",
        _ => "the token is not valid here",
    }
}

fn unauthorized(message: &'static str) -> FhirError {
    FhirError(ApiError::unauthorized(message))
}

/// The bearer token of the `Authorization` header, if there is exactly one well-formed one.
fn bearer(parts: &Parts) -> Option<&str> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let value: &HeaderValue = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// RFC 7662 token introspection over HTTP, authenticated with HTTP Basic.
#[derive(Debug)]
pub struct HttpIntrospector {
    http: reqwest::Client,
    url: Url,
    client_id: String,
    client_secret: SecretString,
}

impl HttpIntrospector {
    pub fn new(
        http: reqwest::Client,
        url: Url,
        client_id: String,
        client_secret: SecretString,
    ) -> Self {
        HttpIntrospector {
            http,
            url,
            client_id,
            client_secret,
        }
    }
}

#[async_trait]
impl portico_access::token::Introspector for HttpIntrospector {
    async fn introspect(
        &self,
        token: &str,
    ) -> Result<serde_json::Value, portico_access::token::IntrospectionError> {
        use portico_access::token::IntrospectionError;
        let res = self
            .http
            .post(self.url.clone())
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .header(header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| {
                IntrospectionError(format!("introspection request failed: {}", e.without_url()))
            })?;
        if !res.status().is_success() {
            return Err(IntrospectionError(format!(
                "introspection answered {}",
                res.status().as_u16()
            )));
        }
        res.json()
            .await
            .map_err(|_| IntrospectionError("introspection answer is not JSON".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_access::token::Introspector;
    use portico_access::{KeySource, TokenVerifier, VerifierConfig};
    use wiremock::matchers::{body_string_contains, header as h, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[derive(Debug)]
    struct NoKeys;

    #[async_trait]
    impl KeySource for NoKeys {
        async fn keys(
            &self,
            _: &str,
            _: Option<&str>,
        ) -> Result<Vec<Jwk>, portico_access::token::KeySourceError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn opaque_tokens_are_introspected_into_a_principal() {
        let server = MockServer::start().await;
        let exp = crate::clock::unix_now() + 600;
        Mock::given(method("POST"))
            .and(path("/introspect"))
            // portico:s3cret in HTTP Basic
            .and(h("authorization", "Basic cG9ydGljbzpzM2NyZXQ="))
            .and(body_string_contains("token=opaque-abc"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "active": true, "iss": "https://idp.example", "aud": "https://gw.example/fhir",
                "sub": "u1", "client_id": "app", "scope": "launch/patient patient/*.rs",
                "patient": "pat-1", "exp": exp
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/introspect"))
            .and(body_string_contains("token=revoked"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"active": false})),
            )
            .mount(&server)
            .await;
        let introspector = HttpIntrospector::new(
            reqwest::Client::new(),
            Url::parse(&format!("{}/introspect", server.uri())).unwrap(),
            "portico".into(),
            SecretString::new("s3cret"),
        );
        assert_eq!(
            introspector.introspect("revoked").await.unwrap()["active"],
            false
        );
        let verifier = TokenVerifier::new(
            VerifierConfig::new(
                "https://idp.example",
                vec!["https://gw.example/fhir".into()],
            ),
            Arc::new(NoKeys),
        )
        .with_introspector(Arc::new(introspector));
        let principal = verifier.verify("opaque-abc").await.unwrap();
        assert_eq!(principal.patients, vec!["pat-1".to_owned()]);
        // Cached until expiry: the second verification makes no second call (`expect(1)`).
        verifier.verify("opaque-abc").await.unwrap();
        assert!(verifier.verify("revoked").await.is_err());
    }

    #[tokio::test]
    async fn introspection_outages_are_not_reported_as_bad_tokens() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        let verifier = TokenVerifier::new(
            VerifierConfig::new("https://idp.example", vec!["x".into()]),
            Arc::new(NoKeys),
        )
        .with_introspector(Arc::new(HttpIntrospector::new(
            reqwest::Client::new(),
            Url::parse(&server.uri()).unwrap(),
            "portico".into(),
            SecretString::new("s"),
        )));
        let err = verifier.verify("opaque").await.unwrap_err();
        assert!(err.retryable(), "{err:?}");
    }
}
