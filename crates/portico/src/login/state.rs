//! The login's configuration and state ([`LoginState`]), held in the gateway's
//! `AppState`. The flows that use it (`/auth/*`, the session extractor) live in the
//! parent module; this file knows nothing of the HTTP state around it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use portico_portal::{LockGuard, Locks, MemoryLocks, StateError};

use super::browser::CookiePolicy;
use super::error::LoginError;
use super::oauth::OAuthSettings;
use super::session::{MemorySessionStore, Session, SessionKey, SessionStore, StoreError};
use crate::config::Config;

/// The login's configuration and state, held in [`AppState`].
pub struct LoginState {
    /// `None` when `login.client_id` is not set: `/auth/login` then answers 404.
    pub(super) settings: Option<OAuthSettings>,
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) http: reqwest::Client,
    pub(super) cookies: CookiePolicy,
    pub(super) cookie_name: String,
    pub(super) login_cookie_name: String,
    pub(super) public_origin: url::Origin,
    pub(super) jwks_url: Option<url::Url>,
    pub(super) leeway: u64,
    pub(super) idle_timeout: u64,
    pub(super) absolute_timeout: u64,
    pub(super) pending_timeout: u64,
    pub(super) refresh_margin: u64,
    /// One lock per session being refreshed (in this process, or across replicas).
    pub(super) locks: Arc<dyn Locks>,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("settings", &self.settings)
            .field("store", &self.store)
            .field("cookie_name", &self.cookie_name)
            .finish_non_exhaustive()
    }
}

impl LoginState {
    /// Builds the login from a final configuration (`server.public_url` resolved).
    pub fn new(config: &Config) -> anyhow::Result<LoginState> {
        let login = &config.login;
        let public = url::Url::parse(&config.public_url())?;
        let settings = match &login.client_id {
            None => None,
            Some(client_id) => Some(OAuthSettings {
                client_id: client_id.clone(),
                client_secret: login.resolve_secret().map_err(anyhow::Error::msg)?,
                redirect_uri: format!("{}/auth/callback", config.public_url()),
                scopes: login.scopes.split_whitespace().map(str::to_owned).collect(),
                aud: login.aud.clone().unwrap_or_else(|| {
                    config
                        .upstream
                        .base_url
                        .as_str()
                        .trim_end_matches('/')
                        .to_owned()
                }),
            }),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(LoginState {
            settings,
            store: Arc::new(MemorySessionStore::new()),
            http,
            cookies: CookiePolicy {
                secure: public.scheme() == "https",
            },
            cookie_name: login.cookie_name.clone(),
            login_cookie_name: format!("{}_login", login.cookie_name),
            public_origin: public.origin(),
            jwks_url: config.auth.jwks_url.clone(),
            leeway: config.auth.leeway_seconds,
            idle_timeout: login.idle_timeout_seconds,
            absolute_timeout: login.absolute_timeout_seconds,
            pending_timeout: login.pending_timeout_seconds,
            refresh_margin: login.refresh_margin_seconds,
            locks: Arc::new(MemoryLocks::new()),
        })
    }

    /// Replaces the in-memory store (a shared store for several replicas).
    pub fn with_store(mut self, store: Arc<dyn SessionStore>) -> LoginState {
        self.store = store;
        self
    }

    /// Replaces the in-process refresh locks (locks shared by replicas).
    pub fn with_locks(mut self, locks: Arc<dyn Locks>) -> LoginState {
        self.locks = locks;
        self
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    pub(super) fn settings(&self) -> Result<&OAuthSettings, LoginError> {
        self.settings.as_ref().ok_or(LoginError::NotConfigured)
    }

    pub(super) fn session_cookie(&self, value: &str) -> Option<HeaderValue> {
        self.cookies
            .set(&self.cookie_name, value, "/", self.absolute_timeout)
    }

    pub(super) fn clear_session_cookie(&self) -> Option<HeaderValue> {
        self.cookies.clear(&self.cookie_name, "/")
    }

    pub(super) fn needs_refresh(&self, session: &Session, now: u64) -> bool {
        session.access_expires_at <= now.saturating_add(self.refresh_margin)
    }

    /// Sessions are re-stored (for the idle deadline) at most this often.
    pub(super) fn needs_touch(&self, session: &Session, now: u64) -> bool {
        let interval = (self.idle_timeout / 4).clamp(1, 60);
        now.saturating_sub(session.last_seen) >= interval
    }

    /// The lock under which one session is refreshed: one refresh at a time per
    /// session, across every replica sharing the locks.
    pub(super) async fn refresh_lock(&self, key: &SessionKey) -> Result<LockGuard, StateError> {
        self.locks.lock(&format!("session:{}", key.to_hex())).await
    }

    /// Ends a session, in every replica sharing the store. No lock is needed: a refresh
    /// or touch in flight writes only by compare-and-set or to an existing session
    /// ([`SessionStore::replace`], [`SessionStore::touch`]), so it cannot store the
    /// session back.
    pub async fn end_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.store.delete(key).await
    }
}
