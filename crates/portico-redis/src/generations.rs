//! [`RedisGenerations`]: the read cache's generation clock and stamps, shared by every
//! replica (see `portico_cache::invalidation`), so that a write on one replica is
//! never followed by a stale read of the same patient's data on another.
//!
//! Layout, all in one hash slot (`{g}`) so that each script touches one slot:
//! - `{prefix}gen:{g}:clock` — the clock. Created (by whichever script runs first) at
//!   the Redis server's time in microseconds, then `INCR`ed by every invalidation;
//! - `{prefix}gen:{g}:floor` — the clock's first value. No entry fetched before it is
//!   valid: a Redis that lost its data (restarted without persistence) creates a new
//!   clock whose floor is later than every generation handed out before, so every
//!   replica's entries become invalid instead of the lost stamps being forgotten;
//! - `{prefix}gen:{g}:s:{name}` — a stamp: the clock value of the last invalidation of
//!   one (scope, topic) (names from `portico_cache::invalidation`, patients by hash),
//!   expiring after the longest an entry is of use.
//!
//! A cacheable read takes one round trip: an `MGET` of the clock, the floor and its
//! stamps (the newest of floor and stamps computed here), or — when the clock or the
//! floor is missing — [`SNAPSHOT`], which creates them; a write runs [`STAMP`] (one round
//! trip) before its response returns.

use std::sync::Arc;
use std::time::Duration;

use portico_cache::{SharedError, SharedGenerations, Snapshot};
use redis::Script;

use crate::Redis;

/// Creates the clock and the floor if missing (at the server's time, µs).
const ENSURE: &str = r"
local clock = redis.call('GET', KEYS[1])
if not clock then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[1], now, 'NX')
  redis.call('SET', KEYS[2], now, 'NX')
  clock = redis.call('GET', KEYS[1])
end
local floor = redis.call('GET', KEYS[2])
if not floor then
  floor = clock
  redis.call('SET', KEYS[2], floor)
end
";

/// KEYS: clock, floor, stamps… → {clock, newest of floor and stamps}.
pub const SNAPSHOT: &str = r"
__ENSURE__
local newest = tonumber(floor)
for i = 3, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and tonumber(v) > newest then newest = tonumber(v) end
end
return {tonumber(clock), newest}
";

/// KEYS: clock, floor, stamps…; ARGV[1]: stamp lifetime (s) → the new clock value.
pub const STAMP: &str = r"
__ENSURE__
local g = redis.call('INCR', KEYS[1])
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], g, 'EX', ARGV[1])
end
return g
";

/// Generation stamps in Redis.
#[derive(Debug, Clone)]
pub struct RedisGenerations {
    redis: Redis,
    /// How long a stamp is kept: the longest a cache entry is of use.
    retention: Duration,
    snapshot: Arc<Script>,
    stamp: Arc<Script>,
}

impl RedisGenerations {
    pub fn new(redis: Redis, retention: Duration) -> RedisGenerations {
        RedisGenerations {
            redis,
            retention: retention.saturating_add(Duration::from_secs(1)),
            snapshot: Arc::new(Script::new(&SNAPSHOT.replace("__ENSURE__", ENSURE))),
            stamp: Arc::new(Script::new(&STAMP.replace("__ENSURE__", ENSURE))),
        }
    }

    fn key(&self, name: &str) -> String {
        self.redis.key("gen", &format!("{{g}}:{name}"))
    }

    fn keys(&self, stamps: &[String]) -> Vec<String> {
        let mut keys = vec![self.key("clock"), self.key("floor")];
        keys.extend(stamps.iter().map(|s| self.key(&format!("s:{s}"))));
        keys
    }
}

#[async_trait::async_trait]
impl SharedGenerations for RedisGenerations {
    async fn snapshot(&self, keys: &[String]) -> Result<Snapshot, SharedError> {
        let keys = self.keys(keys);
        // Once the clock exists (every time but the first, or after Redis lost its
        // data), the snapshot is one `MGET`: as atomic as the script, cheaper to run.
        let mut mget = redis::cmd("MGET");
        for key in &keys {
            mget.arg(key);
        }
        let values: Vec<Option<u64>> = self
            .redis
            .query(&mget)
            .await
            .map_err(|e| SharedError(e.to_string()))?;
        if let [Some(clock), Some(floor), stamps @ ..] = values.as_slice() {
            let newest = stamps.iter().flatten().fold(*floor, |a, b| a.max(*b));
            return Ok(Snapshot {
                clock: *clock,
                newest,
            });
        }
        // No clock (or no floor): the script creates them, then answers the same.
        let mut invocation = self.snapshot.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        let (clock, newest): (u64, u64) = self
            .redis
            .invoke(&invocation)
            .await
            .map_err(|e| SharedError(e.to_string()))?;
        Ok(Snapshot { clock, newest })
    }

    async fn stamp(&self, keys: &[String]) -> Result<(), SharedError> {
        let mut invocation = self.stamp.prepare_invoke();
        for key in self.keys(keys) {
            invocation.key(key);
        }
        invocation.arg(self.retention.as_secs().max(1));
        let _: u64 = self
            .redis
            .invoke(&invocation)
            .await
            .map_err(|e| SharedError(e.to_string()))?;
        Ok(())
    }
}
