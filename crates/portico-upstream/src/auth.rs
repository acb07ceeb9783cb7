//! Upstream access tokens for the gateway's own (system) credential.
//!
//! [`TokenProvider`] fetches a token with OAuth 2.0 client credentials, either with a
//! client secret or as SMART Backend Services (`private_key_jwt`: a JWT assertion signed
//! with jsonwebtoken and sent with oauth2's `add_extra_param`, since oauth2 5 has no
//! support for it). Invariants:
//!
//! - a token is reused until it nears expiry: it is refreshed once less than
//!   `max(10% of its lifetime, min(60 s, half its lifetime))` remains;
//! - at most one token request is in flight; callers arriving meanwhile wait for it and
//!   share its outcome (success or error), except that a caller holding a token that is
//!   still valid uses it rather than wait;
//! - when a refresh fails while the cached token is still valid, the cached token is
//!   used (and the failure logged); otherwise the failure is `UpstreamError::Auth`;
//! - tokens and secrets are never logged or formatted (`SecretString`).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, HttpClientError, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};
use serde::Serialize;
use url::Url;

use crate::config::{ClientAuthMethod, ResolvedAuth, SigningAlgorithm};
use crate::error::{UpstreamError, error_chain};
use crate::secret::SecretString;

/// Lifetime assumed when the token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Lifetime of a Backend Services client assertion (SMART requires at most 5 minutes).
const ASSERTION_LIFETIME_SECS: i64 = 240;
/// A token is not handed out when it expires sooner than this.
const MIN_USABLE: Duration = Duration::from_secs(5);
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a token is obtained.
#[derive(Clone)]
enum Grant {
    ClientSecret {
        secret: SecretString,
        scope: Option<String>,
        client_auth: ClientAuthMethod,
    },
    BackendServices {
        key: EncodingKey,
        algorithm: SigningAlgorithm,
        kid: Option<String>,
        scope: String,
    },
}

#[derive(Clone)]
struct CachedToken {
    token: SecretString,
    expires_at: Instant,
    lifetime: Duration,
}

impl CachedToken {
    fn refresh_margin(&self) -> Duration {
        (self.lifetime / 10).max((self.lifetime / 2).min(Duration::from_secs(60)))
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.expires_at.saturating_duration_since(now) > self.refresh_margin()
    }

    fn is_usable(&self, now: Instant) -> bool {
        self.expires_at.saturating_duration_since(now) > MIN_USABLE
    }
}

#[derive(Default)]
struct State {
    token: Option<CachedToken>,
    /// Completed token requests, successful or not.
    flights: u64,
    /// The error of the last token request, if it failed.
    last_error: Option<UpstreamError>,
}

struct Inner {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    grant: Grant,
    state: Mutex<State>,
    refresh: tokio::sync::Mutex<()>,
}

/// Cached, single-flight access tokens for the gateway's own upstream credential.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.inner.token_url.as_str())
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider for `auth`, or `None` for modes without a gateway credential (none,
    /// passthrough). `http` should not follow redirects.
    pub(crate) fn from_auth(auth: &ResolvedAuth, http: reqwest::Client) -> Option<TokenProvider> {
        let (token_url, client_id, grant) = match auth {
            ResolvedAuth::None | ResolvedAuth::Passthrough => return None,
            ResolvedAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                client_auth,
            } => (
                token_url,
                client_id,
                Grant::ClientSecret {
                    secret: client_secret.clone(),
                    scope: scope.clone(),
                    client_auth: *client_auth,
                },
            ),
            ResolvedAuth::BackendServices {
                token_url,
                client_id,
                key,
                algorithm,
                kid,
                scope,
            } => (
                token_url,
                client_id,
                Grant::BackendServices {
                    key: key.clone(),
                    algorithm: *algorithm,
                    kid: kid.clone(),
                    scope: scope.clone(),
                },
            ),
        };
        Some(TokenProvider {
            inner: Arc::new(Inner {
                http,
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                grant,
                state: Mutex::new(State::default()),
                refresh: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// A valid access token, from the cache or freshly requested.
    pub async fn token(&self) -> Result<SecretString, UpstreamError> {
        let (cached, flights_seen) = {
            let state = self.lock_state();
            (state.token.clone(), state.flights)
        };
        let now = Instant::now();
        let stale = match cached {
            Some(t) if t.is_fresh(now) => return Ok(t.token),
            Some(t) if t.is_usable(now) => Some(t),
            _ => None,
        };
        let _guard = match stale {
            // A still-valid token: refresh if nobody else is, else keep using it.
            Some(t) => match self.inner.refresh.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(t.token),
            },
            None => self.inner.refresh.lock().await,
        };
        {
            let state = self.lock_state();
            if let Some(t) = &state.token
                && t.is_fresh(Instant::now())
            {
                return Ok(t.token.clone());
            }
            // We waited for a flight that failed: share its outcome instead of
            // hammering a failing token endpoint once per waiter.
            if state.flights != flights_seen
                && let Some(err) = &state.last_error
            {
                return Err(err.clone());
            }
        }
        let result = self.fetch().await;
        let mut state = self.lock_state();
        state.flights += 1;
        match result {
            Ok(fresh) => {
                tracing::debug!(
                    lifetime_secs = fresh.lifetime.as_secs(),
                    "obtained upstream access token"
                );
                let token = fresh.token.clone();
                state.token = Some(fresh);
                state.last_error = None;
                Ok(token)
            }
            Err(err) => {
                state.last_error = Some(err.clone());
                match &state.token {
                    Some(t) if t.is_usable(Instant::now()) => {
                        tracing::warn!(error = %err, "upstream token refresh failed; using the current token until it expires");
                        Ok(t.token.clone())
                    }
                    _ => {
                        tracing::warn!(error = %err, "could not obtain an upstream access token");
                        Err(err)
                    }
                }
            }
        }
    }

    /// Checks that a token can be obtained (for readiness probes).
    pub async fn check(&self) -> Result<(), UpstreamError> {
        self.token().await.map(|_| ())
    }

    /// Forgets the cached token, e.g. after the EHR answered 401 to it.
    pub fn invalidate(&self) {
        self.lock_state().token = None;
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data updated in single assignments: a panic elsewhere
        // cannot leave it half-written, so a poisoned lock is still safe to use.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn fetch(&self) -> Result<CachedToken, UpstreamError> {
        let inner = &*self.inner;
        let token_url = TokenUrl::from_url(inner.token_url.clone());
        let client_id = ClientId::new(inner.client_id.clone());
        let response: BasicTokenResponse = match &inner.grant {
            Grant::ClientSecret {
                secret,
                scope,
                client_auth,
            } => {
                let client = BasicClient::new(client_id)
                    .set_client_secret(ClientSecret::new(secret.expose().to_owned()))
                    .set_token_uri(token_url)
                    .set_auth_type(match client_auth {
                        ClientAuthMethod::Basic => AuthType::BasicAuth,
                        ClientAuthMethod::Post => AuthType::RequestBody,
                    });
                let request = client
                    .exchange_client_credentials()
                    .add_scopes(scopes(scope.as_deref().unwrap_or("")));
                request
                    .request_async(&inner.http)
                    .await
                    .map_err(token_error)?
            }
            Grant::BackendServices {
                key,
                algorithm,
                kid,
                scope,
            } => {
                let assertion = sign_assertion(
                    key,
                    *algorithm,
                    kid.as_deref(),
                    &inner.client_id,
                    &inner.token_url,
                )
                .map_err(|_| UpstreamError::Auth {
                    detail: "could not sign the client assertion".to_owned(),
                })?;
                let client = BasicClient::new(client_id)
                    .set_token_uri(token_url)
                    .set_auth_type(AuthType::RequestBody);
                let request = client
                    .exchange_client_credentials()
                    .add_scopes(scopes(scope))
                    .add_extra_param("client_assertion_type", JWT_BEARER)
                    .add_extra_param("client_assertion", assertion);
                request
                    .request_async(&inner.http)
                    .await
                    .map_err(token_error)?
            }
        };
        if !response
            .token_type()
            .as_ref()
            .eq_ignore_ascii_case("bearer")
        {
            return Err(UpstreamError::Auth {
                detail: "token endpoint issued a token that is not a bearer token".to_owned(),
            });
        }
        let lifetime = response
            .expires_in()
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_LIFETIME);
        Ok(CachedToken {
            token: SecretString::new(response.access_token().secret().clone()),
            expires_at: Instant::now() + lifetime,
            lifetime,
        })
    }
}

fn scopes(scope: &str) -> impl Iterator<Item = Scope> + '_ {
    scope.split_whitespace().map(|s| Scope::new(s.to_owned()))
}

fn token_error(
    err: RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>,
) -> UpstreamError {
    let detail = match err {
        RequestTokenError::ServerResponse(resp) => {
            format!("token endpoint refused the request: {}", resp.error())
        }
        RequestTokenError::Request(HttpClientError::Reqwest(e)) if e.is_timeout() => {
            "token endpoint timed out".to_owned()
        }
        RequestTokenError::Request(HttpClientError::Reqwest(e)) => {
            format!(
                "token endpoint unreachable: {}",
                error_chain(&e.without_url())
            )
        }
        RequestTokenError::Request(_) => "token request failed".to_owned(),
        RequestTokenError::Parse(_, _) => "token endpoint sent an unreadable response".to_owned(),
        RequestTokenError::Other(_) => {
            "token endpoint sent an error without a body or a non-json response".to_owned()
        }
    };
    UpstreamError::Auth { detail }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    jti: String,
}

/// Signs a SMART Backend Services client assertion: `iss = sub = client_id`,
/// `aud = token_url`, `exp` four minutes ahead, a random `jti`.
pub(crate) fn sign_assertion(
    key: &EncodingKey,
    algorithm: SigningAlgorithm,
    kid: Option<&str>,
    client_id: &str,
    token_url: &Url,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(algorithm.jwt());
    header.typ = Some("JWT".to_owned());
    header.kid = kid.map(str::to_owned);
    let now = chrono::Utc::now().timestamp();
    let claims = AssertionClaims {
        iss: client_id,
        sub: client_id,
        aud: token_url.as_str(),
        exp: now + ASSERTION_LIFETIME_SECS,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    jsonwebtoken::encode(&header, &claims, key)
}
