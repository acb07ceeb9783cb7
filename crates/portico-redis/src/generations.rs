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
//!   expiring after the longest an entry is of use;
//! - `{prefix}gen:{g}:members` (sorted set: replica id → end of its lease, server µs),
//!   `{prefix}gen:{g}:acked` (hash: replica id → the newest generation it applied, or
//!   `i64::MAX` once it left) and
//!   the channel `{prefix}gen:{g}:events`: the mirrors ([`mirror`]).
//!
//! **Reads are answered in this process** while the replica holds its lease: each
//! replica keeps a mirror of the stamps, pushed to it over the events channel, and a
//! write ([`STAMP`]: stamps, publishes, returns the members) returns only once every
//! member has acknowledged it or its lease has ended. See [`mirror`] for why that gives
//! read-your-writes across the fleet.
//!
//! **Outside its lease** (starting, resubscribing, Redis unreachable) a read asks Redis.
//! Those reads share their round trips: a read hands its stamps to one task per
//! gateway, which takes every read waiting and answers them all with one `MGET` of the
//! clock, the floor and the union of their stamps (each read's newest computed here
//! from its own), with up to [`MAX_IN_FLIGHT`] such `MGET`s on the wire at once. A read
//! therefore only ever joins an `MGET` sent *after* it arrived: it sees every write
//! whose stamp was taken before the read began, as one `MGET` per read would. When the
//! clock or the floor is missing, one [`SNAPSHOT`] for the batch creates them and gives
//! the floor the batch's stamps are compared with. A read waits at most four times the
//! command timeout (for a batch in flight to end, then its own: each an `MGET` and, at
//! most, the script); at most [`MAX_WAITING`] reads wait for a batch, and one more fails
//! at once. A stamp that is not a number (written by something else) makes only the
//! reads that use it go to the EHR, as if stamped just now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use portico_cache::{SharedError, SharedGenerations, Snapshot};
use redis::Script;
use tokio::sync::{mpsc, oneshot};

use crate::Redis;

mod mirror;
#[cfg(test)]
mod tests;

use mirror::Mirror;

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

/// Takes a new clock value, stamps it on the keys and publishes the invalidation to the
/// replicas' mirrors. KEYS: clock, floor, members, stamps…; ARGV: stamp lifetime (s),
/// the events channel, the writer's newest known clock value, the stamps' names… → {the
/// new clock value, the server's time (µs), the floor, {member, lease end, …} of the
/// members whose lease runs}. The clock first moves up to the writer's newest known value:
/// a Redis that lost its last writes (a restart from an append-only file a second behind,
/// a failover) must not hand out a generation older than entries a replica holds.
pub const STAMP: &str = r"
__ENSURE__
if tonumber(clock) < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[3])
end
local g = redis.call('INCR', KEYS[1])
for i = 4, #KEYS do
  redis.call('SET', KEYS[i], g, 'EX', ARGV[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local names = {}
for i = 4, #ARGV do
  names[#names + 1] = ARGV[i]
end
redis.call('PUBLISH', ARGV[2], 'i ' .. string.format('%.0f', g) .. ' ' .. cjson.encode(names))
return {g, now, tonumber(floor), redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf', 'WITHSCORES')}
";

/// The most reads one `MGET` answers.
const MAX_BATCH: usize = 256;

/// The most `MGET`s sent and not yet answered.
const MAX_IN_FLIGHT: usize = 4;

/// The most reads waiting for a batch. Each waiting read is a request in flight, so the
/// queue only fills when Redis stops answering; a read that finds it full fails at once
/// (as it would after its timeout) instead of adding to a backlog.
pub(crate) const MAX_WAITING: usize = 4 * MAX_IN_FLIGHT * MAX_BATCH;

/// Generation stamps in Redis.
#[derive(Debug, Clone)]
pub struct RedisGenerations {
    keys: Keys,
    /// How long a stamp is kept: the longest a cache entry is of use.
    retention: Duration,
    stamp: Arc<Script>,
    /// To the task that answers snapshots in batches ([`answer_snapshots`]).
    asks: mpsc::Sender<Ask>,
    /// The stamps pushed to this replica, which answer reads inside its lease.
    mirror: Arc<Mirror>,
}

/// One read's question: the full keys of its stamps, and where to answer.
#[derive(Debug)]
struct Ask {
    stamps: Vec<String>,
    answer: oneshot::Sender<Result<Snapshot, SharedError>>,
}

/// Names the keys of one deployment's generations.
#[derive(Debug, Clone)]
struct Keys {
    redis: Redis,
    /// What every stamp's key starts with.
    stamp_prefix: Arc<str>,
}

impl Keys {
    fn new(redis: Redis) -> Keys {
        let stamp_prefix = redis.key("gen", "{g}:s:").into();
        Keys {
            redis,
            stamp_prefix,
        }
    }

    fn key(&self, name: &str) -> String {
        self.redis.key("gen", &format!("{{g}}:{name}"))
    }

    fn stamps(&self, stamps: &[String]) -> Vec<String> {
        stamps
            .iter()
            .map(|s| [&*self.stamp_prefix, s.as_str()].concat())
            .collect()
    }

    /// The clock, the floor, then `stamps` (already full keys).
    fn with_clock(&self, stamps: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut keys = vec![self.key("clock"), self.key("floor")];
        keys.extend(stamps);
        keys
    }
}

impl RedisGenerations {
    /// Starts the tasks that answer snapshots and keep this replica's mirror: must be
    /// called inside a Tokio runtime. They end when the last clone of this value is
    /// dropped.
    pub fn new(redis: Redis, retention: Duration) -> RedisGenerations {
        let generations = RedisGenerations::asking_redis(redis, retention);
        generations.mirror.start(&generations.keys);
        generations
    }

    /// Without a mirror: every read asks Redis (the batched `MGET`).
    fn asking_redis(redis: Redis, retention: Duration) -> RedisGenerations {
        let keys = Keys::new(redis);
        let (asks, queue) = mpsc::channel(MAX_WAITING);
        let snapshot = Arc::new(Script::new(&SNAPSHOT.replace("__ENSURE__", ENSURE)));
        tokio::spawn(answer_snapshots(keys.clone(), snapshot, queue));
        let retention = retention.saturating_add(Duration::from_secs(1));
        RedisGenerations {
            keys,
            retention,
            stamp: Arc::new(Script::new(&STAMP.replace("__ENSURE__", ENSURE))),
            asks,
            mirror: Arc::new(Mirror::new(retention)),
        }
    }

    /// A replica whose reads always ask Redis, for the tests of that path.
    #[cfg(test)]
    pub(crate) fn without_mirror(redis: Redis, retention: Duration) -> RedisGenerations {
        RedisGenerations::asking_redis(redis, retention)
    }

    #[cfg(test)]
    pub(crate) fn member_id(&self) -> &str {
        self.mirror.id()
    }
}

/// Waits for a read, takes every read waiting with it (up to [`MAX_BATCH`]) and answers
/// them with one round trip; again until the gateway drops its generations.
async fn answer_snapshots(keys: Keys, snapshot: Arc<Script>, mut queue: mpsc::Receiver<Ask>) {
    use futures::StreamExt as _;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            received = queue.recv_many(&mut batch, MAX_BATCH), if in_flight.len() < MAX_IN_FLIGHT => {
                if received == 0 {
                    break;
                }
                // A read whose request has gone (its client left, or it timed out while
                // Redis was slow) needs no answer and adds no keys.
                batch.retain(|ask| !ask.answer.is_closed());
                if !batch.is_empty() {
                    in_flight.push(answer_batch(&keys, &snapshot, std::mem::take(&mut batch)));
                }
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    // The gateway dropped its generations: answer what was asked before.
    while in_flight.next().await.is_some() {}
}

async fn answer_batch(keys: &Keys, snapshot: &Script, batch: Vec<Ask>) {
    // The union of the batch's stamps, each read keeping where its own are.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut union: Vec<String> = Vec::new();
    let positions: Vec<Vec<usize>> = batch
        .iter()
        .map(|ask| {
            ask.stamps
                .iter()
                .map(|stamp| {
                    *index.entry(stamp.as_str()).or_insert_with(|| {
                        union.push(stamp.clone());
                        union.len() + 1
                    })
                })
                .collect()
        })
        .collect();
    let mut mget = redis::cmd("MGET");
    for key in keys.with_clock(union) {
        mget.arg(key);
    }
    let answered = match keys.redis.query::<Vec<redis::Value>>(&mget).await {
        Ok(raw) => {
            let values: Vec<Stamp> = raw.iter().map(Stamp::of).collect();
            match (values.first(), values.get(1)) {
                (Some(Stamp::Value(clock)), Some(Stamp::Value(floor))) => {
                    Ok((*clock, *floor, values))
                }
                (Some(Stamp::Unreadable), _) | (_, Some(Stamp::Unreadable)) => Err(SharedError(
                    "the generation clock in Redis is not a number".to_owned(),
                )),
                // No clock (or no floor): the first read ever, or Redis lost its data. The
                // script creates them (one call for the batch) and answers the clock and the
                // floor; the stamps read above are the ones to compare with the new floor.
                _ => {
                    let mut invocation = snapshot.prepare_invoke();
                    for key in keys.with_clock(std::iter::empty()) {
                        invocation.key(key);
                    }
                    keys.redis
                        .invoke::<(u64, u64)>(&invocation)
                        .await
                        .map(|(clock, floor)| (clock, floor, values))
                        .map_err(|e| SharedError(e.to_string()))
                }
            }
        }
        Err(e) => Err(SharedError(e.to_string())),
    };
    match answered {
        Ok((clock, floor, values)) => {
            let mut unreadable = false;
            for (ask, positions) in batch.into_iter().zip(positions) {
                let newest = positions
                    .iter()
                    .map(|&i| match values.get(i) {
                        Some(Stamp::Value(v)) => *v,
                        // Not a number (written by something else, or damaged): when it
                        // was stamped is unknown, so as if just now — every entry this
                        // read could use is older, and it goes to the EHR.
                        Some(Stamp::Unreadable) => {
                            unreadable = true;
                            clock
                        }
                        Some(Stamp::Missing) | None => floor,
                    })
                    .fold(floor, u64::max);
                // A read that stopped waiting (its client left) needs no answer.
                let _ = ask.answer.send(Ok(Snapshot { clock, newest }));
            }
            if unreadable {
                tracing::warn!(
                    "a generation stamp in Redis is not a number; the reads it covers go to the EHR until it expires"
                );
            }
        }
        Err(e) => {
            for ask in batch {
                let _ = ask.answer.send(Err(e.clone()));
            }
        }
    }
}

/// One value of the `MGET`: a clock value, no key, or something that is not a clock
/// value (which fails only the reads it concerns, not the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Value(u64),
    Missing,
    Unreadable,
}

impl Stamp {
    fn of(value: &redis::Value) -> Stamp {
        match value {
            redis::Value::Nil => Stamp::Missing,
            redis::Value::Int(n) => u64::try_from(*n).map_or(Stamp::Unreadable, Stamp::Value),
            redis::Value::BulkString(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(Stamp::Unreadable, Stamp::Value),
            _ => Stamp::Unreadable,
        }
    }
}

#[async_trait::async_trait]
impl SharedGenerations for RedisGenerations {
    async fn snapshot(&self, keys: &[String]) -> Result<Snapshot, SharedError> {
        if let Some(snapshot) = self.mirror.snapshot(keys) {
            return Ok(snapshot);
        }
        let (answer, answered) = oneshot::channel();
        let stopped = || SharedError("the generation snapshot task stopped".to_owned());
        self.asks
            .try_send(Ask {
                stamps: self.keys.stamps(keys),
                answer,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    SharedError(format!("{MAX_WAITING} reads are already waiting for Redis"))
                }
                mpsc::error::TrySendError::Closed(_) => stopped(),
            })?;
        let snapshot = answered.await.map_err(|_| stopped())??;
        // What this replica's last resubscription made invalid stays invalid.
        Ok(Snapshot {
            newest: snapshot.newest.max(self.mirror.floor()),
            ..snapshot
        })
    }

    async fn stamp(&self, keys: &[String]) -> Result<(), SharedError> {
        let mut invocation = self.stamp.prepare_invoke();
        invocation
            .key(self.keys.key("clock"))
            .key(self.keys.key("floor"))
            .key(self.keys.key("members"));
        for key in self.keys.stamps(keys) {
            invocation.key(key);
        }
        invocation
            .arg(self.retention.as_secs().max(1))
            .arg(self.keys.key("events"))
            .arg(self.mirror.clock());
        for name in keys {
            invocation.arg(name);
        }
        let answer: Result<(u64, u64, u64, Vec<String>), _> =
            self.keys.redis.invoke(&invocation).await;
        let (generation, now, floor, members) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                // The script may have run (the answer was lost) and been published to
                // mirrors that have not applied it yet: wait until any mirror still
                // answering reads has renewed its lease since, which proves it has.
                tokio::time::sleep(mirror::LEASE).await;
                return Err(SharedError(e.to_string()));
            }
        };
        // Stamped in Redis: now every replica answering reads from its mirror must have
        // it too (or have stopped answering from it) before the write's response returns.
        self.mirror
            .await_acks(
                &self.keys,
                generation,
                (now, floor),
                &members,
                tokio::time::Instant::now(),
            )
            .await;
        Ok(())
    }

    async fn leave(&self) {
        self.mirror.leave(&self.keys).await;
    }

    fn mirrored(&self) -> bool {
        self.mirror.usable()
    }
}
