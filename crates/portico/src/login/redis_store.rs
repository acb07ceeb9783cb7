//! [`RedisSessionStore`]: sessions and pending logins shared by replicas, so that a login
//! started on one replica completes on another, a session made on one is valid on all,
//! and a logout on one ends it everywhere.
//!
//! Layout (`{prefix}` is `redis.key_prefix`; `name(…)` the sealer's keyed digest of the
//! cookie's SHA-256, so the keys identify nothing):
//! - `{prefix}session:{name}`: a hash of `d` (the session without `last_seen`: tokens,
//!   patient, scope, deadlines — sealed JSON, the key as associated data), `v` (its
//!   version) and `s` (`last_seen`, seconds), expiring (`EXPIREAT`) at the session's
//!   deadline, the earlier of the idle and the absolute one. A touch changes only `s`
//!   and the expiry; a refresh replaces `d` only if `v` is still the version it read,
//!   and increments `v` (both Lua scripts, atomic).
//! - `{prefix}login:{name}`: the pending login, sealed JSON, expiring at its deadline
//!   (`SET … EXAT`), taken with `GETDEL` so that one callback at most gets it.
//!
//! A session or pending login that no longer opens (another encryption key, a value
//! moved between keys) counts as absent: the browser logs in again.

use portico_redis::redis::{self, Script};
use portico_redis::{Redis, RedisError};
use portico_upstream::SecretString;
use serde::{Deserialize, Serialize};

use super::session::{PendingLogin, Session, SessionKey, SessionStore, StoreError};

/// `KEYS[1]` exists: move `s` to `ARGV[1]` and the expiry to `ARGV[2]`, if later.
const TOUCH: &str = r"
local seen = redis.call('HGET', KEYS[1], 's')
if not seen then return 0 end
if tonumber(ARGV[1]) > tonumber(seen) then
  redis.call('HSET', KEYS[1], 's', ARGV[1])
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return 1
";

/// `KEYS[1]`'s `v` is still `ARGV[1]`: store `d` = `ARGV[2]`, increment `v`, and move
/// `s` to `ARGV[3]` (and the expiry to `ARGV[4]`) if later. Answers the new version,
/// or -1.
const REPLACE: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if v ~= ARGV[1] then return -1 end
local next = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'v', tostring(next))
local seen = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
if tonumber(ARGV[3]) > seen then
  redis.call('HSET', KEYS[1], 's', ARGV[3])
  redis.call('EXPIREAT', KEYS[1], ARGV[4])
end
return next
";

/// The sealed part of a session: everything but `last_seen` and `version`.
#[derive(Serialize, Deserialize)]
struct Sealed {
    subject: String,
    patient: String,
    fhir_user: Option<String>,
    scope: String,
    access_token: String,
    access_expires_at: u64,
    refresh_token: Option<String>,
    id_token: Option<String>,
    csrf_token: String,
    created_at: u64,
    idle_timeout: u64,
    absolute_expires_at: u64,
}

impl Sealed {
    fn of(s: &Session) -> Sealed {
        Sealed {
            subject: s.subject.clone(),
            patient: s.patient.clone(),
            fhir_user: s.fhir_user.clone(),
            scope: s.scope.clone(),
            access_token: s.access_token.expose().to_owned(),
            access_expires_at: s.access_expires_at,
            refresh_token: s.refresh_token.as_ref().map(|t| t.expose().to_owned()),
            id_token: s.id_token.as_ref().map(|t| t.expose().to_owned()),
            csrf_token: s.csrf_token.clone(),
            created_at: s.created_at,
            idle_timeout: s.idle_timeout,
            absolute_expires_at: s.absolute_expires_at,
        }
    }

    fn into_session(self, last_seen: u64, version: u64) -> Session {
        Session {
            subject: self.subject,
            patient: self.patient,
            fhir_user: self.fhir_user,
            scope: self.scope,
            access_token: SecretString::new(self.access_token),
            access_expires_at: self.access_expires_at,
            refresh_token: self.refresh_token.map(SecretString::new),
            id_token: self.id_token.map(SecretString::new),
            csrf_token: self.csrf_token,
            created_at: self.created_at,
            last_seen,
            version,
            idle_timeout: self.idle_timeout,
            absolute_expires_at: self.absolute_expires_at,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SealedPending {
    state: String,
    pkce_verifier: String,
    nonce: Option<String>,
    return_to: String,
    expires_at: u64,
}

/// Sessions and pending logins in Redis.
#[derive(Debug, Clone)]
pub struct RedisSessionStore {
    redis: Redis,
    touch: std::sync::Arc<Script>,
    replace: std::sync::Arc<Script>,
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> StoreError {
        StoreError(e.to_string())
    }
}

impl RedisSessionStore {
    pub fn new(redis: Redis) -> RedisSessionStore {
        RedisSessionStore {
            redis,
            touch: std::sync::Arc::new(Script::new(TOUCH)),
            replace: std::sync::Arc::new(Script::new(REPLACE)),
        }
    }

    fn session_key(&self, key: &SessionKey) -> String {
        self.redis
            .key("session", &self.redis.sealer().name(&[&key.to_hex()]))
    }

    fn pending_key(&self, key: &SessionKey) -> String {
        self.redis
            .key("login", &self.redis.sealer().name(&[&key.to_hex()]))
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisSessionStore {
    async fn get(&self, key: &SessionKey, now: u64) -> Result<Option<Session>, StoreError> {
        let redis_key = self.session_key(key);
        let (sealed, version, last_seen): (Option<Vec<u8>>, Option<u64>, Option<u64>) = self
            .redis
            .query(
                redis::cmd("HMGET")
                    .arg(&redis_key)
                    .arg("d")
                    .arg("v")
                    .arg("s"),
            )
            .await?;
        let (Some(sealed), Some(version), Some(last_seen)) = (sealed, version, last_seen) else {
            return Ok(None);
        };
        let session = match self.redis.sealer().open_json::<Sealed>(&redis_key, &sealed) {
            Ok(data) => data.into_session(last_seen, version),
            Err(RedisError::Unreadable) => {
                tracing::warn!("a session in Redis cannot be read; treated as ended");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // Redis expires it by its own clock; this replica's clock decides too.
        Ok((!session.is_expired(now)).then_some(session))
    }

    async fn put(&self, key: &SessionKey, session: Session) -> Result<(), StoreError> {
        let redis_key = self.session_key(key);
        let sealed = self
            .redis
            .sealer()
            .seal_json(&redis_key, &Sealed::of(&session));
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .del(&redis_key)
            .ignore()
            .hset_multiple(
                &redis_key,
                &[
                    ("d", sealed),
                    ("v", session.version.to_string().into_bytes()),
                    ("s", session.last_seen.to_string().into_bytes()),
                ],
            )
            .ignore()
            .cmd("EXPIREAT")
            .arg(&redis_key)
            .arg(session.expires_at())
            .ignore();
        self.redis.query_pipeline::<()>(&pipeline).await?;
        Ok(())
    }

    async fn touch(&self, key: &SessionKey, session: &Session) -> Result<bool, StoreError> {
        let redis_key = self.session_key(key);
        let exists: i64 = self
            .redis
            .invoke(
                self.touch
                    .key(&redis_key)
                    .arg(session.last_seen)
                    .arg(session.expires_at()),
            )
            .await?;
        Ok(exists == 1)
    }

    async fn replace(
        &self,
        key: &SessionKey,
        session: &Session,
    ) -> Result<Option<u64>, StoreError> {
        let redis_key = self.session_key(key);
        let sealed = self
            .redis
            .sealer()
            .seal_json(&redis_key, &Sealed::of(session));
        let version: i64 = self
            .redis
            .invoke(
                self.replace
                    .key(&redis_key)
                    .arg(session.version)
                    .arg(sealed)
                    .arg(session.last_seen)
                    .arg(session.expires_at()),
            )
            .await?;
        Ok(u64::try_from(version).ok())
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .query(redis::cmd("DEL").arg(self.session_key(key)))
            .await?;
        Ok(())
    }

    async fn put_pending(&self, key: &SessionKey, login: PendingLogin) -> Result<(), StoreError> {
        let redis_key = self.pending_key(key);
        let sealed = self.redis.sealer().seal_json(
            &redis_key,
            &SealedPending {
                state: login.state,
                pkce_verifier: login.pkce_verifier.expose().to_owned(),
                nonce: login.nonce,
                return_to: login.return_to,
                expires_at: login.expires_at,
            },
        );
        let _: () = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(sealed)
                    .arg("EXAT")
                    .arg(login.expires_at.max(1)),
            )
            .await?;
        Ok(())
    }

    async fn take_pending(
        &self,
        key: &SessionKey,
        now: u64,
    ) -> Result<Option<PendingLogin>, StoreError> {
        let redis_key = self.pending_key(key);
        let sealed: Option<Vec<u8>> = self
            .redis
            .query(redis::cmd("GETDEL").arg(&redis_key))
            .await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let login = match self
            .redis
            .sealer()
            .open_json::<SealedPending>(&redis_key, &sealed)
        {
            Ok(p) => PendingLogin {
                state: p.state,
                pkce_verifier: SecretString::new(p.pkce_verifier),
                nonce: p.nonce,
                return_to: p.return_to,
                expires_at: p.expires_at,
            },
            Err(RedisError::Unreadable) => {
                tracing::warn!("a pending login in Redis cannot be read; treated as absent");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        Ok((login.expires_at > now).then_some(login))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use portico_redis::testing::RedisServer;

    use super::*;
    use crate::clock::unix_now;

    fn store(server: &RedisServer) -> RedisSessionStore {
        let prefix = format!("test-{}:", super::super::session::random_token());
        RedisSessionStore::new(Redis::new(&server.settings(&prefix)).unwrap())
    }

    #[tokio::test]
    async fn redis_store_passes_the_contract() {
        let server = RedisServer::start();
        super::super::contract::run(async || Arc::new(store(&server)) as Arc<dyn SessionStore>)
            .await;
    }

    /// What Redis holds for a session: no token, patient or CSRF token in clear, and
    /// a touch rewrites only `last_seen`.
    #[tokio::test]
    async fn sessions_are_sealed_and_touches_leave_the_tokens_alone() {
        let server = RedisServer::start();
        let settings = server.settings("test-sealed:");
        let redis = Redis::new(&settings).unwrap();
        let store = RedisSessionStore::new(redis.clone());
        let now = unix_now();
        let key = SessionKey::of("cookie-value");
        let session = Session {
            subject: "sub-secret".into(),
            patient: "pat-secret".into(),
            fhir_user: None,
            scope: "patient/*.rs".into(),
            access_token: SecretString::new("access-secret"),
            access_expires_at: now + 300,
            refresh_token: Some(SecretString::new("refresh-secret")),
            id_token: None,
            csrf_token: "csrf-secret".into(),
            created_at: now,
            last_seen: now,
            version: 0,
            idle_timeout: 600,
            absolute_expires_at: now + 3600,
        };
        store.put(&key, session.clone()).await.unwrap();
        let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("*")).await.unwrap();
        assert_eq!(keys.len(), 1);
        assert!(!keys[0].contains(&key.to_hex()));
        let sealed_before: Vec<u8> = redis
            .query(redis::cmd("HGET").arg(&keys[0]).arg("d"))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&sealed_before);
        for secret in [
            "access-secret",
            "refresh-secret",
            "pat-secret",
            "csrf-secret",
            "sub-secret",
        ] {
            assert!(!text.contains(secret), "{secret} in clear");
        }
        let ttl: i64 = redis.query(redis::cmd("TTL").arg(&keys[0])).await.unwrap();
        assert!(
            (590..=600).contains(&ttl),
            "expires at the idle deadline: {ttl}"
        );
        let mut touched = session.clone();
        touched.last_seen = now + 100;
        assert!(store.touch(&key, &touched).await.unwrap());
        let sealed_after: Vec<u8> = redis
            .query(redis::cmd("HGET").arg(&keys[0]).arg("d"))
            .await
            .unwrap();
        assert_eq!(
            sealed_before, sealed_after,
            "a touch does not rewrite the tokens"
        );
        let ttl: i64 = redis.query(redis::cmd("TTL").arg(&keys[0])).await.unwrap();
        assert!((690..=700).contains(&ttl), "the idle deadline moved: {ttl}");
        // Another encryption key (a rotated one): the session is simply gone.
        let other = RedisSessionStore::new(Redis::new(&settings).unwrap());
        assert!(other.get(&key, now).await.unwrap().is_some());
        let rotated = portico_redis::Settings {
            encryption_key: [9; 32],
            ..settings
        };
        let rotated = RedisSessionStore::new(Redis::new(&rotated).unwrap());
        assert!(rotated.get(&key, now).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_store_error() {
        let mut server = RedisServer::start();
        let store = store(&server);
        server.stop();
        let key = SessionKey::of("x");
        let started = std::time::Instant::now();
        assert!(store.get(&key, unix_now()).await.is_err());
        assert!(store.take_pending(&key, unix_now()).await.is_err());
        assert!(store.delete(&key).await.is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }
}
