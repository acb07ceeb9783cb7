//! The stores whose state every replica must agree on — sessions and pending logins,
//! idempotency records, per-object locks, offers — built once at start: in this
//! process's memory when `[redis] url` is unset (a single node), in Redis otherwise.
//!
//! Redis is not needed to start: the client connects on first use and reconnects by
//! itself, so a Redis that is down at start (or later) makes the requests that need it
//! answer 503 (`session_store_unavailable`, `idempotency_unavailable`,
//! `state_unavailable`) until it is back, while everything else (probes, the FHIR
//! facade's reads with bearer tokens) keeps working. Whether it is reachable is logged
//! at start.

use std::sync::Arc;
use std::time::Duration;

use portico_portal::{
    IdempotencyStore, Locks, MemoryIdempotencyStore, MemoryLocks, MemoryOffers, Offers,
};
use portico_redis::{Redis, RedisIdempotencyStore, RedisLocks, RedisOffers};

use crate::config::Config;
use crate::login::{MemorySessionStore, RedisSessionStore, SessionStore};

/// How much longer than the portal's deadline a lock or a running idempotency record
/// outlives the request that took it, when its replica dies before releasing it.
const OWNER_MARGIN: Duration = Duration::from_secs(5);

/// The most idempotency records the memory store keeps.
const MAX_MEMORY_RECORDS: u64 = 1_000_000;

/// The shared stores, and the Redis client behind them when there is one.
pub(crate) struct SharedStores {
    pub(crate) redis: Option<Redis>,
    pub(crate) sessions: Arc<dyn SessionStore>,
    pub(crate) idempotency: Arc<dyn IdempotencyStore>,
    pub(crate) locks: Arc<dyn Locks>,
    pub(crate) offers: Arc<dyn Offers>,
}

impl SharedStores {
    /// Builds the stores `config` asks for. Must run inside a Tokio runtime.
    pub(crate) fn build(config: &Config) -> anyhow::Result<SharedStores> {
        let ttl = Duration::from_secs(config.portal.idempotency_ttl_seconds);
        let deadline = Duration::from_millis(config.portal.deadline_ms);
        // A lock or running record is held at most for one request (the deadline cuts
        // it); past that plus a margin, its owner is dead.
        let held_at_most = deadline + OWNER_MARGIN;
        let Some(settings) = config.redis.settings().map_err(anyhow::Error::msg)? else {
            return Ok(SharedStores {
                redis: None,
                sessions: Arc::new(MemorySessionStore::new()),
                idempotency: Arc::new(
                    MemoryIdempotencyStore::new(ttl, MAX_MEMORY_RECORDS)
                        .with_running_ttl(held_at_most),
                ),
                locks: Arc::new(MemoryLocks::new()),
                offers: Arc::new(MemoryOffers::default()),
            });
        };
        let redis = Redis::new(&settings)?;
        tracing::info!(redis = ?settings, "shared state in Redis");
        let probe = redis.clone();
        tokio::spawn(async move {
            match probe.ping().await {
                Ok(()) => tracing::info!("Redis answers"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "Redis does not answer; requests that need shared state answer 503 until it does"
                ),
            }
        });
        Ok(SharedStores {
            sessions: Arc::new(RedisSessionStore::new(redis.clone())),
            idempotency: Arc::new(RedisIdempotencyStore::new(redis.clone(), ttl, held_at_most)),
            // A lock not taken within half the deadline is 409 `busy`: the client learns
            // the write did not start, rather than a 504 that leaves it guessing.
            locks: Arc::new(RedisLocks::new(redis.clone(), held_at_most, deadline / 2)),
            offers: Arc::new(RedisOffers::new(
                redis.clone(),
                portico_portal::offers::OFFER_LIFETIME,
            )),
            redis: Some(redis),
        })
    }
}
