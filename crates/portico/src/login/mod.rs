//! Portal login under `/auth`: the gateway as a backend-for-frontend (BFF).
//!
//! A portal SPA never sees an OAuth token. `GET /auth/login` starts an authorization
//! code flow (PKCE S256, `state`, `nonce` with `openid`, `aud` = the EHR's FHIR base) at
//! the EHR's authorization server as a confidential client; `GET /auth/callback`
//! exchanges the code, verifies the access token with the gateway's own verifier, and
//! opens a server-side session whose only trace in the browser is an opaque cookie;
//! `GET /auth/session` tells the SPA who is logged in (and its CSRF token);
//! `POST /auth/logout` ends the session. [`PortalAuth`] is the extractor portal API
//! handlers take: the session cookie or a bearer token.
//!
//! Invariants:
//! - access, refresh and id tokens stay in the [`SessionStore`]; no response body,
//!   header or cookie carries one, and nothing here logs tokens, codes, session ids or
//!   patient ids;
//! - a login in progress is bound to the browser that started it (a short-lived
//!   HttpOnly cookie naming a server-side record) and can be completed once; its `state`
//!   is compared in constant time;
//! - every session gets a fresh random 256-bit id at login (no fixation); the store is
//!   keyed by its SHA-256;
//! - a cookie-authenticated state-changing request needs the session's CSRF token and a
//!   same-origin `Origin`/`Referer` when one is sent (see [`browser::check_csrf`]); the
//!   check runs before anything else happens for the request, refresh included;
//! - an access token that expires within `login.refresh_margin_seconds` is refreshed
//!   before use, one refresh at a time per session across every replica (refresh
//!   tokens rotate: two concurrent refreshes with one token would revoke the login): the
//!   refresh runs under the session's lock ([`portico_portal::Locks`], in Redis when
//!   replicas share state), re-reads the session first and uses another refresh's result
//!   when its version moved, and stores its tokens by compare-and-set on the version; a
//!   refused refresh ends the session (unless another one already rotated the token);
//! - sessions end after `login.idle_timeout_seconds` without use and
//!   `login.absolute_timeout_seconds` after login, whichever comes first.

pub mod browser;
#[cfg(test)]
mod contract;
mod error;
mod extract;
pub mod oauth;
pub mod redis_store;
pub mod session;
pub mod state;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use oauth2::TokenResponse as _;
use portico_upstream::SecretString;
use serde_json::json;

use crate::authn::HttpKeySource;
use crate::clock::unix_now;
use crate::error::ProblemError;
use crate::state::AppState;
pub use error::LoginError;
pub use extract::{PortalAuth, SessionInfo};
use oauth::{OAuthError, OAuthSettings};
use portico_portal::StateError;
pub use redis_store::RedisSessionStore;
pub use session::{
    MemorySessionStore, PendingLogin, Session, SessionKey, SessionStore, StoreError,
};
pub use state::LoginState;

impl LoginState {
    /// The session behind the request's cookie, checked and ready for use: CSRF rule for
    /// unsafe methods, then refresh and idle-deadline update, then verification of the
    /// access token.
    pub(crate) async fn authenticate_session(
        &self,
        state: &AppState,
        parts: &Parts,
    ) -> Result<(SessionKey, Session, portico_access::Principal), LoginError> {
        let value = browser::cookie(&parts.headers, &self.cookie_name)
            .ok_or(LoginError::Unauthenticated)?;
        let key = SessionKey::of(value);
        let now = unix_now();
        let mut session = self
            .store
            .get(&key, now)
            .await?
            .ok_or(LoginError::SessionExpired)?;
        if browser::is_unsafe(&parts.method) {
            browser::check_csrf(&parts.headers, &session.csrf_token, &self.public_origin)?;
        }
        if self.needs_refresh(&session, now) || self.needs_touch(&session, now) {
            session = self.maintain(state, &key, session).await?;
        }
        let principal = match state.verifier().verify(session.access_token.expose()).await {
            Ok(p) => p,
            Err(e) if e.retryable() => {
                tracing::warn!(error = %e, "session token verification unavailable");
                return Err(LoginError::AuthServerUnavailable);
            }
            Err(e) => {
                tracing::info!(error = %e, "session token no longer valid; session ended");
                self.end_session(&key).await?;
                return Err(LoginError::SessionExpired);
            }
        };
        if !principal.patients.contains(&session.patient) {
            tracing::warn!("session token names another patient; session ended");
            self.end_session(&key).await?;
            return Err(LoginError::SessionExpired);
        }
        let principal = state
            .resolve_principal(principal, &session.access_token)
            .await
            .map_err(LoginError::Proxy)?;
        Ok((key, session, principal))
    }

    /// Refreshes the access token if it is about to expire and moves the idle deadline.
    /// A touch alone takes no lock (it writes only `last_seen`); a refresh runs under
    /// the session's lock, shared by every replica, so that exactly one of them spends
    /// the rotating refresh token and the others use its result.
    async fn maintain(
        &self,
        state: &AppState,
        key: &SessionKey,
        seen: Session,
    ) -> Result<Session, LoginError> {
        let now = unix_now();
        if !self.needs_refresh(&seen, now) {
            return self.touched(key, seen, now).await;
        }
        let _guard = match self.refresh_lock(key).await {
            Ok(guard) => guard,
            // Another replica's refresh is taking very long: the current token, while
            // it lasts; then the authorization server counts as unavailable.
            Err(StateError::Busy) if seen.access_expires_at > now => {
                tracing::warn!("session refresh lock busy; using the current token");
                return Ok(seen);
            }
            Err(StateError::Busy) => return Err(LoginError::AuthServerUnavailable),
            Err(StateError::Unavailable(e)) => return Err(StoreError(e).into()),
        };
        self.refresh_locked(state, key, now).await
    }

    /// `session` with `last_seen` moved to `now` in the store.
    async fn touched(
        &self,
        key: &SessionKey,
        mut session: Session,
        now: u64,
    ) -> Result<Session, LoginError> {
        session.last_seen = now;
        if self.store.touch(key, &session).await? {
            Ok(session)
        } else {
            Err(LoginError::SessionExpired)
        }
    }

    async fn refresh_locked(
        &self,
        state: &AppState,
        key: &SessionKey,
        now: u64,
    ) -> Result<Session, LoginError> {
        // Read again under the lock: another request, on this replica or another, may
        // have refreshed meanwhile; its tokens are then the ones to use.
        let mut session = self
            .store
            .get(key, now)
            .await?
            .ok_or(LoginError::SessionExpired)?;
        if !self.needs_refresh(&session, now) {
            return self.touched(key, session, now).await;
        }
        let still_valid = session.access_expires_at > now;
        let Some(refresh_token) = session.refresh_token.clone() else {
            if still_valid {
                return self.touched(key, session, now).await;
            }
            self.store.delete(key).await?;
            return Err(LoginError::SessionExpired);
        };
        match self.refresh(state, &refresh_token).await {
            Ok(tokens) => {
                apply_tokens(&mut session, &tokens, now);
                session.last_seen = now;
                tracing::debug!("portal session tokens refreshed");
                match self.store.replace(key, &session).await? {
                    Some(version) => {
                        session.version = version;
                        Ok(session)
                    }
                    // Someone else changed the session despite the lock (it expired
                    // under a very slow refresh), or it was ended: what is stored wins,
                    // and never the tokens read before.
                    None => {
                        tracing::warn!(
                            "the session changed during its refresh; using the stored one"
                        );
                        self.store
                            .get(key, now)
                            .await?
                            .ok_or(LoginError::SessionExpired)
                    }
                }
            }
            Err(OAuthError::Unavailable(e)) if still_valid => {
                tracing::warn!(error = %e, "token refresh failed; using the current token");
                self.touched(key, session, now).await
            }
            Err(OAuthError::Unavailable(e)) => {
                tracing::warn!(error = %e, "token refresh failed");
                Err(LoginError::AuthServerUnavailable)
            }
            Err(e) => {
                // Refused. If another writer rotated the token meanwhile (the version
                // moved), its tokens are good and the session lives on.
                if let Some(current) = self.store.get(key, now).await?
                    && current.version != session.version
                {
                    return Ok(current);
                }
                tracing::info!(error = %e, "token refresh refused; session ended");
                self.store.delete(key).await?;
                Err(LoginError::SessionExpired)
            }
        }
    }

    async fn refresh(
        &self,
        state: &AppState,
        refresh_token: &SecretString,
    ) -> Result<oauth::SmartTokenResponse, OAuthError> {
        let settings = self
            .settings
            .as_ref()
            .ok_or_else(|| OAuthError::Config("portal login is not configured".to_owned()))?;
        let endpoints = state.smart_endpoints().await.ok_or_else(|| {
            OAuthError::Unavailable("authorization server endpoints unknown".to_owned())
        })?;
        settings
            .refresh(&self.http, &endpoints, refresh_token)
            .await
    }

    /// `/auth/login`: remembers a new pending login and sends the browser to the
    /// authorization server.
    async fn start_login(
        &self,
        state: &AppState,
        query: Option<&str>,
    ) -> Result<Response, LoginError> {
        let settings = self.settings()?;
        let params = query_params(query)?;
        let return_to = browser::return_to(params.get("return_to").map(String::as_str))
            .map_err(LoginError::BadRequest)?;
        let endpoints = state
            .smart_endpoints()
            .await
            .ok_or(LoginError::AuthServerUnavailable)?;
        let start = settings
            .start(&endpoints)
            .map_err(|e| LoginError::Config(e.to_string()))?;
        let id = session::random_token();
        self.store
            .put_pending(
                &SessionKey::of(&id),
                PendingLogin {
                    state: start.state,
                    pkce_verifier: start.pkce_verifier,
                    nonce: start.nonce,
                    return_to,
                    expires_at: unix_now() + self.pending_timeout,
                },
            )
            .await?;
        let mut response = redirect(start.url.as_str())?;
        if let Some(cookie) =
            self.cookies
                .set(&self.login_cookie_name, &id, "/auth", self.pending_timeout)
        {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    /// `/auth/callback`: completes the pending login of this browser. Returns the new
    /// session's cookie value and where to send the browser.
    async fn finish_login(
        &self,
        state: &AppState,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(String, String), LoginError> {
        let settings = self.settings()?;
        let params = query_params(query)?;
        let now = unix_now();
        // The pending login is consumed whatever happens next: a callback works once.
        let pending = match browser::cookie(headers, &self.login_cookie_name) {
            Some(id) => self.store.take_pending(&SessionKey::of(id), now).await?,
            None => None,
        }
        .ok_or(LoginError::NoPendingLogin)?;
        let state_ok = params
            .get("state")
            .is_some_and(|s| browser::constant_time_eq(s.as_bytes(), pending.state.as_bytes()));
        if !state_ok {
            return Err(LoginError::StateMismatch);
        }
        if let Some(error) = params.get("error") {
            return Err(LoginError::Denied(oauth_error_code(error)));
        }
        let code = params
            .get("code")
            .ok_or(LoginError::BadRequest("the callback carries no code"))?;
        let endpoints = state
            .smart_endpoints()
            .await
            .ok_or(LoginError::AuthServerUnavailable)?;
        let tokens = settings
            .exchange(&self.http, &endpoints, code, &pending.pkce_verifier)
            .await
            .map_err(|e| match e {
                OAuthError::Refused(code) => LoginError::Denied(code),
                OAuthError::Unavailable(e) => {
                    tracing::warn!(error = %e, "code exchange failed");
                    LoginError::AuthServerUnavailable
                }
                OAuthError::Config(e) => LoginError::Config(e),
            })?;
        let access = tokens.access_token().secret();
        let principal = match state.verifier().verify(access).await {
            Ok(p) => p,
            Err(e) if e.retryable() => return Err(LoginError::AuthServerUnavailable),
            Err(e) => {
                tracing::warn!(error = %e, "the authorization server's access token was refused");
                return Err(LoginError::TokenRejected);
            }
        };
        let extra = tokens.extra_fields();
        let patient = match (&extra.patient, principal.patients.first()) {
            (Some(p), _) if !principal.patients.contains(p) => {
                return Err(LoginError::TokenRejected);
            }
            (_, Some(p)) => p.clone(),
            (_, None) => return Err(LoginError::NoPatient),
        };
        if let Some(nonce) = &pending.nonce {
            let openid_granted = tokens
                .scopes()
                .is_none_or(|granted| granted.iter().any(|s| s.as_str() == "openid"));
            match &extra.id_token {
                Some(id_token) => {
                    self.check_id_token(state, &endpoints, settings, id_token, nonce)
                        .await?
                }
                None if openid_granted => return Err(LoginError::IdToken),
                None => {}
            }
        }
        // A login always opens a new session; one the browser still had is ended.
        if let Some(old) = browser::cookie(headers, &self.cookie_name) {
            self.end_session(&SessionKey::of(old)).await?;
        }
        let mut session = Session {
            subject: principal.subject.clone(),
            patient,
            fhir_user: principal.fhir_user.as_ref().map(ToString::to_string),
            scope: String::new(),
            access_token: SecretString::new(String::new()),
            access_expires_at: 0,
            refresh_token: None,
            id_token: None,
            csrf_token: session::random_token(),
            created_at: now,
            last_seen: now,
            version: 0,
            idle_timeout: self.idle_timeout,
            absolute_expires_at: now + self.absolute_timeout,
        };
        apply_tokens(&mut session, &tokens, now);
        if let Some(exp) = principal.expires_at {
            session.access_expires_at = exp;
        }
        if session.scope.is_empty() {
            session.scope = principal.scopes.to_string();
        }
        let id = session::random_token();
        self.store.put(&SessionKey::of(&id), session).await?;
        tracing::info!("portal login completed");
        Ok((id, pending.return_to))
    }

    async fn check_id_token(
        &self,
        state: &AppState,
        endpoints: &crate::login::oauth::SmartEndpoints,
        settings: &OAuthSettings,
        id_token: &str,
        nonce: &str,
    ) -> Result<(), LoginError> {
        let issuer = state.verifier().config().issuer.clone();
        let jwks = self.jwks_url.clone().or_else(|| {
            endpoints
                .jwks
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
        });
        let discovery = url::Url::parse(&format!("{issuer}/.well-known/openid-configuration"))
            .into_iter()
            .collect();
        let keys = HttpKeySource::new(self.http.clone(), jwks, discovery);
        oauth::verify_id_token(
            &keys,
            &issuer,
            &settings.client_id,
            self.leeway,
            id_token,
            nonce,
        )
        .await
        .map_err(|e| match e {
            oauth::IdTokenError::Keys(e) => {
                tracing::warn!(error = %e, "id token keys unavailable");
                LoginError::AuthServerUnavailable
            }
            other => {
                tracing::warn!(error = %other, "id token refused");
                LoginError::IdToken
            }
        })
    }
}

/// Copies a token response into a session (keeping the refresh token when the server
/// did not rotate it).
fn apply_tokens(session: &mut Session, tokens: &oauth::SmartTokenResponse, now: u64) {
    session.access_token = SecretString::new(tokens.access_token().secret().clone());
    // Without `expires_in`, assume a short life so that a refresh is tried soon.
    session.access_expires_at = now + tokens.expires_in().map_or(300, |d| d.as_secs());
    if let Some(refresh) = tokens.refresh_token() {
        session.refresh_token = Some(SecretString::new(refresh.secret().clone()));
    }
    if let Some(id) = &tokens.extra_fields().id_token {
        session.id_token = Some(SecretString::new(id.clone()));
    }
    if let Some(scopes) = tokens.scopes() {
        session.scope = scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
    }
}

/// An RFC 6749 error code from the callback, echoed only if it looks like one.
fn oauth_error_code(raw: &str) -> String {
    if !raw.is_empty()
        && raw.len() <= 40
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        raw.to_owned()
    } else {
        "error".to_owned()
    }
}

/// Query parameters; a repeated one is refused (which `state` or `code` would count?).
fn query_params(query: Option<&str>) -> Result<HashMap<String, String>, LoginError> {
    let mut out = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if out.insert(name.into_owned(), value.into_owned()).is_some() {
            return Err(LoginError::BadRequest("a query parameter is repeated"));
        }
    }
    Ok(out)
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A 303 to `location`.
fn redirect(location: &str) -> Result<Response, LoginError> {
    let value = HeaderValue::from_str(location)
        .map_err(|_| LoginError::BadRequest("the redirect target is not a valid header"))?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, value);
    no_store(&mut response);
    Ok(response)
}

/// The `/auth` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/logout", post(logout))
        .route("/session", get(session_info))
        .fallback(|| async { LoginError::BadRequest("no such login endpoint").into_response() })
}

async fn login(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    match state.login().start_login(&state, query.as_deref()).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let login = state.login();
    let mut response = match login.finish_login(&state, query.as_deref(), &headers).await {
        Ok((id, return_to)) => match redirect(&return_to) {
            Ok(mut r) => {
                if let Some(cookie) = login.session_cookie(&id) {
                    r.headers_mut().append(header::SET_COOKIE, cookie);
                }
                r
            }
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    };
    // The login cookie has served its purpose, whatever the outcome.
    if let Some(clear) = login.cookies.clear(&login.login_cookie_name, "/auth") {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    no_store(&mut response);
    response
}

/// `POST /auth/logout`: ends the cookie session (CSRF-checked by [`PortalAuth`]). A
/// request without a live session still gets its cookie cleared.
async fn logout(State(state): State<AppState>, auth: Result<PortalAuth, ProblemError>) -> Response {
    let login = state.login();
    let mut response = match auth {
        Ok(PortalAuth {
            session: Some(info),
            ..
        }) => match login.end_session(&info.key).await {
            Ok(()) => {
                tracing::info!("portal session ended by logout");
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => return LoginError::from(e).into_response(),
        },
        // A bearer request: there is no cookie session to end.
        Ok(_) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            no_store(&mut response);
            return response;
        }
        Err(e) if e.0.status == StatusCode::UNAUTHORIZED => StatusCode::NO_CONTENT.into_response(),
        Err(e) => return e.into_response(),
    };
    if let Some(clear) = login.clear_session_cookie() {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    no_store(&mut response);
    response
}

/// `GET /auth/session`: who is logged in, for a portal SPA. Never tokens.
async fn session_info(
    State(state): State<AppState>,
    headers: HeaderMap,
    auth: Result<PortalAuth, ProblemError>,
) -> Response {
    let login = state.login();
    let mut response = match auth {
        Ok(auth) => {
            let principal = &auth.principal;
            let body = match &auth.session {
                Some(info) => json!({
                    "authenticated": true,
                    "via": "session",
                    "patient": info.patient,
                    "fhir_user": principal.fhir_user.as_ref().map(ToString::to_string),
                    "scope": principal.scopes.to_string(),
                    "expires_at": info.expires_at,
                    "csrf_token": info.csrf_token,
                }),
                None => json!({
                    "authenticated": true,
                    "via": "bearer",
                    "patient": principal.patients.first(),
                    "fhir_user": principal.fhir_user.as_ref().map(ToString::to_string),
                    "scope": principal.scopes.to_string(),
                    "expires_at": principal.expires_at,
                    "csrf_token": null,
                }),
            };
            axum::Json(body).into_response()
        }
        Err(e) => {
            let ended = e.0.status == StatusCode::UNAUTHORIZED
                && browser::cookie(&headers, &login.cookie_name).is_some();
            let mut r = e.into_response();
            if ended && let Some(clear) = login.clear_session_cookie() {
                r.headers_mut().append(header::SET_COOKIE, clear);
            }
            r
        }
    };
    no_store(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use crate::login::browser::CsrfError;

    #[test]
    fn repeated_query_parameters_are_refused() {
        assert!(query_params(Some("code=a&state=b")).is_ok());
        assert!(query_params(Some("code=a&state=b&state=c")).is_err());
        assert!(query_params(None).unwrap().is_empty());
    }

    #[test]
    fn callback_error_codes_are_sanitized() {
        assert_eq!(oauth_error_code("access_denied"), "access_denied");
        assert_eq!(oauth_error_code("<script>"), "error");
        assert_eq!(oauth_error_code(""), "error");
        assert_eq!(oauth_error_code(&"a".repeat(41)), "error");
    }

    #[test]
    fn errors_map_to_problem_codes() {
        let e = ApiError::from(LoginError::StateMismatch);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "login_state_mismatch");
        let e = ApiError::from(LoginError::Csrf(CsrfError::MissingToken));
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.code, "csrf_failed");
        let e = ApiError::from(LoginError::SessionExpired);
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = ApiError::from(LoginError::Config("secret detail".into()));
        assert!(!e.message.contains("secret detail"));
    }
}
