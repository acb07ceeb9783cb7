//! [`RedisLocks`]: per-object locks shared by replicas.
//!
//! Layout: `{prefix}lock:{name(key)}` holds a random owner token, set with
//! `SET key token NX PX ttl`; a waiter retries with backoff (10 ms growing to 200 ms,
//! jittered) for at most the wait bound, then gives up ([`StateError::Busy`]). The
//! guard releases the lock when dropped, with a compare-and-delete Lua script, so that
//! a holder whose lock expired (and was taken by someone else) never releases the new
//! holder's. The TTL is the longest an action may hold a lock (the portal's deadline
//! plus a margin): a replica that dies while holding one blocks others for at most
//! that long.
//!
//! A lock is an optimisation: the EHR stays the final judge of conflicts (a lock that
//! expired under a very slow action lets a second one in, whose write the EHR then
//! refuses or orders).

use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_portal::StateError;
use portico_portal::locks::{LockGuard, Locks};
use rand::Rng as _;
use redis::Script;

use crate::idempotency::COMPARE_AND_DELETE;
use crate::{Redis, millis, random_hex};

/// Locks in Redis.
#[derive(Debug, Clone)]
pub struct RedisLocks {
    redis: Redis,
    ttl: Duration,
    wait: Duration,
    release: Arc<Script>,
}

impl RedisLocks {
    /// Locks that expire `ttl` after they are taken, for which callers wait at most
    /// `wait`.
    pub fn new(redis: Redis, ttl: Duration, wait: Duration) -> RedisLocks {
        RedisLocks {
            redis,
            ttl,
            wait,
            release: Arc::new(Script::new(COMPARE_AND_DELETE)),
        }
    }
}

/// A held Redis lock; released (if still ours) when dropped.
struct Held {
    redis: Redis,
    release: Arc<Script>,
    key: String,
    token: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (shutting down): the lock expires on its own.
            return;
        };
        let (redis, release) = (self.redis.clone(), self.release.clone());
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            let released: Result<i64, _> = redis.invoke(release.key(&key).arg(&token)).await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "a lock could not be released; it expires on its own");
            }
        });
    }
}

#[async_trait::async_trait]
impl Locks for RedisLocks {
    async fn lock(&self, key: &str) -> Result<LockGuard, StateError> {
        let redis_key = self.redis.key("lock", &self.redis.sealer().name(&[key]));
        let token = random_hex(16);
        let started = Instant::now();
        let mut delay = Duration::from_millis(10);
        loop {
            let taken: Option<String> = self
                .redis
                .query(
                    redis::cmd("SET")
                        .arg(&redis_key)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(self.ttl)),
                )
                .await?;
            if taken.is_some() {
                return Ok(LockGuard::new(Held {
                    redis: self.redis.clone(),
                    release: self.release.clone(),
                    key: redis_key,
                    token,
                }));
            }
            if started.elapsed() >= self.wait {
                return Err(StateError::Busy);
            }
            let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
            tokio::time::sleep(jittered.min(self.wait.saturating_sub(started.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }
}
