//! Server-side login state: sessions and logins in progress, behind [`SessionStore`].
//!
//! Invariants:
//! - stores are keyed by [`SessionKey`], the SHA-256 of the random value the browser
//!   holds in its cookie, so whoever can read the store cannot replay a cookie;
//! - a record past its expiry is never returned, and expired records are evicted;
//! - a pending login is taken exactly once ([`SessionStore::take_pending`] removes it),
//!   so a callback cannot be replayed;
//! - tokens live only in [`Session`] and never appear in `Debug` output;
//! - a touch ([`SessionStore::touch`]) moves only the idle deadline, and tokens change
//!   only by compare-and-set on the session's version ([`SessionStore::replace`]), so
//!   that a request holding an older copy can never write revoked tokens back, and a
//!   deleted session never comes back.
//!
//! [`MemorySessionStore`] is the single-node default; [`super::redis_store`] implements
//! the same trait so that replicas share sessions. Both pass one contract suite
//! (`super::contract`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portico_upstream::SecretString;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// How often the memory store sweeps out expired records.
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Pending logins kept at most; past this, the soonest-expiring one is dropped so that
/// anonymous `/auth/login` requests cannot grow memory without bound.
const MAX_PENDING: usize = 10_000;

/// The store key of a cookie value: its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The key for a cookie value.
    pub fn of(cookie_value: &str) -> SessionKey {
        SessionKey(Sha256::digest(cookie_value.as_bytes()).into())
    }

    /// The digest, hex-encoded (for stores that need a string key).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Session ids are secrets: `Debug` shows nothing of them.
impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

/// 256 random bits, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A logged-in browser. Everything the gateway needs to act for the patient.
#[derive(Clone)]
pub struct Session {
    /// The access token's `sub`.
    pub subject: String,
    /// The patient the login was for.
    pub patient: String,
    /// The `fhirUser` reference, when the token had one.
    pub fhir_user: Option<String>,
    /// Granted scopes, space-separated.
    pub scope: String,
    pub access_token: SecretString,
    /// When the access token expires, seconds since the Unix epoch.
    pub access_expires_at: u64,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    /// The session's CSRF token, sent back by the SPA in `X-CSRF-Token`.
    pub csrf_token: String,
    pub created_at: u64,
    pub last_seen: u64,
    /// Counts the changes of the session's tokens: set by the store, compared by
    /// [`SessionStore::replace`]. A new session has version 0.
    pub version: u64,
    /// Seconds of inactivity after which the session ends.
    pub idle_timeout: u64,
    /// When the session ends whatever its use.
    pub absolute_expires_at: u64,
}

impl Session {
    /// When the session ends if nothing happens before: the earlier of the idle and the
    /// absolute deadline.
    pub fn expires_at(&self) -> u64 {
        self.last_seen
            .saturating_add(self.idle_timeout)
            .min(self.absolute_expires_at)
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at() <= now
    }
}

/// No tokens, no patient id.
impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access_expires_at", &self.access_expires_at)
            .field("refreshable", &self.refresh_token.is_some())
            .field("created_at", &self.created_at)
            .field("last_seen", &self.last_seen)
            .field("version", &self.version)
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

/// A login started at `/auth/login`, waiting for `/auth/callback`.
#[derive(Clone)]
pub struct PendingLogin {
    /// The OAuth `state` sent to the authorization server.
    pub state: String,
    pub pkce_verifier: SecretString,
    /// The OpenID Connect `nonce`, when `openid` was requested.
    pub nonce: Option<String>,
    /// Where to send the browser after login: a path on the gateway.
    pub return_to: String,
    pub expires_at: u64,
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("return_to", &self.return_to)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The store could not be reached (a remote store; the memory store never fails).
#[derive(Debug, Clone, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct StoreError(pub String);

/// Where sessions and pending logins live. Implementations evict records past their
/// expiry ([`Session::expires_at`], [`PendingLogin::expires_at`]) and never return them.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    async fn get(&self, key: &SessionKey, now: u64) -> Result<Option<Session>, StoreError>;
    /// Inserts or replaces, with the session's version as given (a new session: 0).
    async fn put(&self, key: &SessionKey, session: Session) -> Result<(), StoreError>;
    /// Records `session.last_seen` (if later than the stored one) and moves the expiry
    /// accordingly, without rewriting anything else: a touch from a request holding an
    /// older copy never brings back older tokens. Whether the session still exists.
    async fn touch(&self, key: &SessionKey, session: &Session) -> Result<bool, StoreError>;
    /// Stores `session` (its tokens, scope, `last_seen`) if the stored version is still
    /// `session.version`, and returns the new version; `None` when another writer got
    /// there first or the session ended (nothing is written then).
    async fn replace(&self, key: &SessionKey, session: &Session)
    -> Result<Option<u64>, StoreError>;
    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError>;
    async fn put_pending(&self, key: &SessionKey, login: PendingLogin) -> Result<(), StoreError>;
    /// Removes and returns the pending login (at most one caller ever gets it).
    async fn take_pending(
        &self,
        key: &SessionKey,
        now: u64,
    ) -> Result<Option<PendingLogin>, StoreError>;
}

/// The in-process store.
#[derive(Default)]
pub struct MemorySessionStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    sessions: HashMap<SessionKey, Session>,
    pending: HashMap<SessionKey, PendingLogin>,
    last_purge: Option<Instant>,
}

impl MemoryInner {
    fn purge(&mut self, now: u64, force: bool) {
        let due = self
            .last_purge
            .is_none_or(|last| last.elapsed() >= PURGE_INTERVAL);
        if !(due || force) {
            return;
        }
        self.last_purge = Some(Instant::now());
        self.sessions.retain(|_, s| !s.is_expired(now));
        self.pending.retain(|_, p| p.expires_at > now);
    }
}

impl fmt::Debug for MemorySessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("MemorySessionStore")
            .field("sessions", &inner.sessions.len())
            .field("pending", &inner.pending.len())
            .finish()
    }
}

impl MemorySessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live sessions (expired ones not yet swept are counted too).
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn get(&self, key: &SessionKey, now: u64) -> Result<Option<Session>, StoreError> {
        let mut inner = self.lock();
        inner.purge(now, false);
        match inner.sessions.get(key) {
            Some(s) if s.is_expired(now) => {
                inner.sessions.remove(key);
                Ok(None)
            }
            other => Ok(other.cloned()),
        }
    }

    async fn put(&self, key: &SessionKey, session: Session) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.purge(crate::clock::unix_now(), false);
        inner.sessions.insert(*key, session);
        Ok(())
    }

    async fn touch(&self, key: &SessionKey, session: &Session) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let now = crate::clock::unix_now();
        match inner.sessions.get_mut(key) {
            Some(stored) if !stored.is_expired(now) => {
                stored.last_seen = stored.last_seen.max(session.last_seen);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn replace(
        &self,
        key: &SessionKey,
        session: &Session,
    ) -> Result<Option<u64>, StoreError> {
        let mut inner = self.lock();
        let Some(stored) = inner.sessions.get_mut(key) else {
            return Ok(None);
        };
        if stored.version != session.version {
            return Ok(None);
        }
        let last_seen = stored.last_seen.max(session.last_seen);
        *stored = Session {
            version: session.version + 1,
            last_seen,
            ..session.clone()
        };
        Ok(Some(stored.version))
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.lock().sessions.remove(key);
        Ok(())
    }

    async fn put_pending(&self, key: &SessionKey, login: PendingLogin) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let now = crate::clock::unix_now();
        let full = inner.pending.len() >= MAX_PENDING;
        inner.purge(now, full);
        if inner.pending.len() >= MAX_PENDING
            && let Some(oldest) = inner
                .pending
                .iter()
                .min_by_key(|(_, p)| p.expires_at)
                .map(|(k, _)| *k)
        {
            inner.pending.remove(&oldest);
        }
        inner.pending.insert(*key, login);
        Ok(())
    }

    async fn take_pending(
        &self,
        key: &SessionKey,
        now: u64,
    ) -> Result<Option<PendingLogin>, StoreError> {
        let mut inner = self.lock();
        inner.purge(now, false);
        Ok(inner.pending.remove(key).filter(|p| p.expires_at > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(last_seen: u64, idle: u64, absolute: u64) -> Session {
        Session {
            subject: "pat-1".into(),
            patient: "pat-1".into(),
            fhir_user: None,
            scope: "patient/*.rs".into(),
            access_token: SecretString::new("access"),
            access_expires_at: last_seen + 3600,
            refresh_token: None,
            id_token: None,
            csrf_token: random_token(),
            created_at: last_seen,
            last_seen,
            version: 0,
            idle_timeout: idle,
            absolute_expires_at: absolute,
        }
    }

    fn pending(expires_at: u64) -> PendingLogin {
        PendingLogin {
            state: "s".into(),
            pkce_verifier: SecretString::new("v"),
            nonce: None,
            return_to: "/".into(),
            expires_at,
        }
    }

    #[test]
    fn keys_are_digests_and_never_printed() {
        let token = random_token();
        assert_eq!(token.len(), 43);
        assert_ne!(random_token(), token);
        let key = SessionKey::of(&token);
        assert_eq!(key, SessionKey::of(&token));
        assert_ne!(key, SessionKey::of("other"));
        assert!(!format!("{key:?}").contains(&key.to_hex()));
        assert!(!key.to_hex().contains(&token));
    }

    #[test]
    fn expiry_is_the_earlier_of_idle_and_absolute() {
        assert_eq!(session(1000, 60, 5000).expires_at(), 1060);
        assert_eq!(session(1000, 600, 1200).expires_at(), 1200);
        assert!(session(1000, 60, 5000).is_expired(1060));
        assert!(!session(1000, 60, 5000).is_expired(1059));
    }

    #[test]
    fn session_debug_hides_tokens_and_patient() {
        let mut s = session(1000, 60, 5000);
        s.access_token = SecretString::new("eyJ-secret-access");
        s.refresh_token = Some(SecretString::new("refresh-secret"));
        s.patient = "pat-42".into();
        let text = format!("{s:?}");
        assert!(!text.contains("eyJ-secret-access"), "{text}");
        assert!(!text.contains("refresh-secret"), "{text}");
        assert!(!text.contains("pat-42"), "{text}");
    }

    #[tokio::test]
    async fn memory_store_round_trip_and_expiry() {
        let store = MemorySessionStore::new();
        let now = crate::clock::unix_now();
        let key = SessionKey::of("a");
        store.put(&key, session(now, 60, now + 600)).await.unwrap();
        assert!(store.get(&key, now).await.unwrap().is_some());
        // Past the idle deadline the session is gone, and evicted.
        assert!(store.get(&key, now + 61).await.unwrap().is_none());
        assert_eq!(store.session_count(), 0);
        store.put(&key, session(now, 60, now + 600)).await.unwrap();
        store.delete(&key).await.unwrap();
        assert!(store.get(&key, now).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn expired_sessions_are_swept() {
        let store = MemorySessionStore::new();
        let now = crate::clock::unix_now();
        store
            .put(&SessionKey::of("old"), session(now - 1000, 60, now + 600))
            .await
            .unwrap();
        store
            .put(&SessionKey::of("live"), session(now, 60, now + 600))
            .await
            .unwrap();
        // Force the sweep that normally runs every few seconds.
        store.lock().purge(now, true);
        assert_eq!(store.session_count(), 1);
    }

    #[tokio::test]
    async fn pending_logins_are_taken_once_and_expire() {
        let store = MemorySessionStore::new();
        let now = crate::clock::unix_now();
        let key = SessionKey::of("p");
        store.put_pending(&key, pending(now + 60)).await.unwrap();
        assert!(store.take_pending(&key, now).await.unwrap().is_some());
        assert!(store.take_pending(&key, now).await.unwrap().is_none());
        store.put_pending(&key, pending(now + 60)).await.unwrap();
        assert!(store.take_pending(&key, now + 60).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn memory_store_passes_the_contract() {
        super::super::contract::run(async || {
            std::sync::Arc::new(MemorySessionStore::new()) as std::sync::Arc<dyn SessionStore>
        })
        .await;
    }

    #[tokio::test]
    async fn pending_logins_are_bounded() {
        let store = MemorySessionStore::new();
        let now = crate::clock::unix_now();
        for i in 0..MAX_PENDING + 5 {
            store
                .put_pending(
                    &SessionKey::of(&i.to_string()),
                    pending(now + 60 + i as u64),
                )
                .await
                .unwrap();
        }
        assert_eq!(store.pending_count(), MAX_PENDING);
        // The soonest-expiring (the first) ones were dropped, the newest kept.
        assert!(
            store
                .take_pending(&SessionKey::of("0"), now)
                .await
                .unwrap()
                .is_none()
        );
        let last = (MAX_PENDING + 4).to_string();
        assert!(
            store
                .take_pending(&SessionKey::of(&last), now)
                .await
                .unwrap()
                .is_some()
        );
    }
}
