//! [`Mirror`]: the shared generation stamps, pushed to every replica, so that a
//! cacheable read is answered in this process instead of by a round trip to Redis.
//!
//! How a write's invalidation reaches every replica before its response returns:
//! - **Members hold leases.** Each replica is a member of `{prefix}gen:{g}:members` (a
//!   sorted set scored by the lease's end, in the Redis server's time), renewed every
//!   [`HEARTBEAT`] by a script that also publishes a heartbeat on the events channel.
//! - **A write publishes its stamps and waits for the members.** [`STAMP`](super) takes
//!   the new clock value, stamps its keys, publishes `i <generation> <names…>` on the
//!   events channel and returns the members whose lease runs. The writer then waits until
//!   each of them has acknowledged that generation or its lease has ended.
//! - **A member acknowledges what it applied.** Its subscriber applies each invalidation
//!   to the table, then acknowledges (`HSET` in `{prefix}gen:{g}:acked` and an `a <id>
//!   <generation>` message the writers listen for; a writer that hears nothing polls the
//!   hash every [`POLL`]).
//! - **A member answers from its table only inside its lease,** as this process measures
//!   it: the lease is extended only when the member's *own* heartbeat comes back on its
//!   subscription, to [`LEASE`] minus [`MARGIN`] after the heartbeat was sent. The echo
//!   proves that every message published before the heartbeat has been received (one
//!   channel, one connection: Redis delivers in order). A lease in Redis ends no earlier
//!   than that, so whenever a writer stops waiting for a silent member, the member has
//!   already stopped answering from its table.
//! - **A subscription that breaks trusts nothing it held.** When it is lost, the member's
//!   floor moves past every clock value it knew; on every (re)subscription it takes a new
//!   clock value (`INCR`, after subscribing, the clock first moved up to the newest value
//!   the member knew) and makes it its table's floor: an entry it fetched before is never
//!   valid again, whatever invalidations the gap lost. An invalidation published before
//!   the subscription has a smaller generation than that floor; one published after it is
//!   received.
//! - **A write that cannot tell what happened waits a lease.** A stamp whose answer is
//!   lost may still have been published, and a clock created less than a lease ago
//!   comes with a members set that lost its members too (Redis restarted empty, or
//!   failed over): the writer then waits [`LEASE`], after which every member that missed
//!   the invalidation has stopped answering from its table.
//!
//! - **A clock moved by a writer that publishes nothing is noticed.** Each heartbeat
//!   carries the clock as it found it, and every invalidation (and every other member's
//!   resubscription) published before it has arrived by the echo: a clock past what they
//!   brought was moved by a writer that does not publish (a replica of an earlier
//!   version). The member then drops everything it held (its floor moves to that clock)
//!   and logs an error. This narrows a rolling upgrade's hazard to one heartbeat; it does
//!   not remove it (see `docs/DEPLOY.md`).
//!
//! Assumptions: the Redis server's clock does not step forward by more than [`MARGIN`]
//! (it measures the leases in the set), and this process's monotonic clock runs while
//! it does (a paused virtual machine whose clock stops would outlive its lease).
//!
//! Outside its lease (starting, reconnecting, Redis unreachable), the replica asks Redis
//! for each read as before (the batched `MGET`), which fails when Redis does, and the read
//! goes to the EHR uncached. A member that stops answering holds writes up to its lease
//! ([`LEASE`], 2 s), never longer; a member shutting down leaves and holds nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt as _;
use parking_lot::{Mutex, RwLock};
use portico_cache::Snapshot;
use redis::Script;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Keys;

/// How long a heartbeat keeps a member's lease in Redis.
pub(crate) const LEASE: Duration = Duration::from_secs(2);

/// How much earlier than [`LEASE`] after a heartbeat was sent the member stops answering
/// from its table: room for the Redis server's clock to run faster than this one's.
const MARGIN: Duration = Duration::from_millis(500);

/// How often a member renews its lease.
const HEARTBEAT: Duration = Duration::from_millis(250);

/// A heartbeat not echoed within this long: the subscription is taken for broken and
/// made again.
const ECHO_OVERDUE: Duration = Duration::from_secs(1);

/// How long a writer waits for acknowledgements on the channel before it also reads
/// them from the hash (its own subscription may be the one that is broken).
const POLL: Duration = Duration::from_millis(20);

/// The acknowledgement of a member that left: more than any generation.
const LEFT: i64 = i64::MAX;

/// Renews the lease (pruning expired members) and publishes a heartbeat with the clock's
/// value (`h <member> <sent> <clock>`); on a
/// (re)subscription also takes a new clock value, after moving the clock up to the
/// member's newest known value (a Redis that lost its last writes must not hand out
/// generations older than what the member saw). A member that left is not renewed.
/// KEYS: clock, floor, members, acked; ARGV: member id, lease (µs), channel, heartbeat,
/// resync (`1`), the member's newest known clock value → {clock, floor}.
const HEARTBEAT_SCRIPT: &str = r"
__ENSURE__
if redis.call('HGET', KEYS[4], ARGV[1]) == '9223372036854775807' then
  return {tonumber(clock), tonumber(floor)}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if #expired > 0 then
  redis.call('ZREM', KEYS[3], unpack(expired))
  redis.call('HDEL', KEYS[4], unpack(expired))
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
local g = tonumber(clock)
if ARGV[5] == '1' then
  if g < tonumber(ARGV[6]) then
    redis.call('SET', KEYS[1], ARGV[6])
  end
  g = redis.call('INCR', KEYS[1])
end
redis.call('PUBLISH', ARGV[3], 'h ' .. ARGV[1] .. ' ' .. ARGV[4] .. ' ' .. string.format('%.0f', g))
return {g, tonumber(floor)}
";

/// Records (never lowering it: not below [`LEFT`]) and announces what a member applied.
/// KEYS: acked; ARGV: id, generation, channel.
const ACK_SCRIPT: &str = r"
local known = redis.call('HGET', KEYS[1], ARGV[1])
if not known or tonumber(known) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], 'a ' .. ARGV[1] .. ' ' .. ARGV[2])
";

/// This replica's copy of the shared stamps, and what it knows of the other members.
#[derive(Debug)]
pub(super) struct Mirror {
    /// This member's name in the set: random, so a restarted replica is a new member.
    id: String,
    /// What the lease's end is measured from.
    base: Instant,
    /// Nanoseconds after `base` until which the table may answer reads; 0: not at all.
    usable_until: AtomicU64,
    /// Set at shutdown: the table never answers reads again.
    left: AtomicBool,
    table: RwLock<Table>,
    /// The newest generation each member is known to have applied.
    acks: Mutex<HashMap<String, u64>>,
    /// Woken on every acknowledgement heard.
    acked: Notify,
    /// The newest generation this member applied, for the task that acknowledges it.
    applied: watch::Sender<u64>,
    /// How long a stamp is kept (as in Redis).
    retention: Duration,
}

#[derive(Debug)]
struct Table {
    /// The newest clock value known: what a fetch started now is stamped with.
    clock: u64,
    /// No entry older than this is valid (the last resynchronisation).
    floor: u64,
    stamps: HashMap<String, (u64, Instant)>,
    pruned: Instant,
}

impl Mirror {
    pub(super) fn new(retention: Duration) -> Mirror {
        let now = Instant::now();
        Mirror {
            id: crate::random_hex(8),
            base: now,
            usable_until: AtomicU64::new(0),
            left: AtomicBool::new(false),
            table: RwLock::new(Table {
                clock: 0,
                floor: 0,
                stamps: HashMap::new(),
                pruned: now,
            }),
            acks: Mutex::new(HashMap::new()),
            acked: Notify::new(),
            applied: watch::Sender::new(0),
            retention,
        }
    }

    /// Starts the subscriber and the acknowledging task; both end once the mirror is
    /// dropped.
    pub(super) fn start(self: &Arc<Mirror>, keys: &Keys) {
        tokio::spawn(follow(Arc::downgrade(self), keys.clone()));
        tokio::spawn(acknowledge(
            keys.clone(),
            Arc::downgrade(self),
            self.applied.subscribe(),
        ));
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether this member is inside its lease (and may answer reads from its table).
    pub(super) fn usable(&self) -> bool {
        !self.left.load(Ordering::Acquire)
            && self.nanos(Instant::now()) < self.usable_until.load(Ordering::Acquire)
    }

    /// Stops answering reads from the table for good, then ends this member's lease in
    /// the set (the next heartbeat of any member prunes it) and records it as having
    /// applied everything ([`LEFT`]), so that a write waiting for it stops at its next
    /// poll and no heartbeat of its own, already on the way, renews it. Best effort: if
    /// Redis does not answer, writers wait for the lease to end.
    pub(super) async fn leave(&self, keys: &Keys) {
        self.left.store(true, Ordering::Release);
        let mut leaving = redis::pipe();
        leaving
            .atomic()
            .cmd("ZADD")
            .arg(keys.key("members"))
            .arg(0)
            .arg(&self.id)
            .ignore()
            .cmd("HSET")
            .arg(keys.key("acked"))
            .arg(&self.id)
            .arg(LEFT)
            .ignore();
        if let Err(e) = keys.redis.query_pipeline::<()>(&leaving).await {
            tracing::warn!(error = %e, "could not leave the cache generations' members; writes wait for this replica's lease to end");
        }
    }

    /// The clock and the newest stamp on `keys`, from the table; `None` outside the
    /// lease.
    pub(super) fn snapshot(&self, keys: &[String]) -> Option<Snapshot> {
        if !self.usable() {
            return None;
        }
        let table = self.table.read();
        let newest = keys
            .iter()
            .filter_map(|key| table.stamps.get(key.as_str()))
            .map(|(generation, _)| *generation)
            .fold(table.floor, u64::max);
        Some(Snapshot {
            clock: table.clock,
            newest,
        })
    }

    /// The floor of the table: entries older are not valid, whichever way a read is
    /// answered.
    pub(super) fn floor(&self) -> u64 {
        self.table.read().floor
    }

    /// The newest clock value this member knows of.
    pub(super) fn clock(&self) -> u64 {
        self.table.read().clock
    }

    /// The subscription is lost: whatever it would have delivered meanwhile is unknown,
    /// so nothing fetched until now is valid any more.
    fn distrust(&self) {
        self.usable_until.store(0, Ordering::Release);
        let mut table = self.table.write();
        table.floor = table.floor.max(table.clock.saturating_add(1));
        table.clock = table.floor;
    }

    fn apply(&self, generation: u64, names: &[String]) {
        let now = Instant::now();
        {
            let mut table = self.table.write();
            table.clock = table.clock.max(generation);
            for name in names {
                let stamp = table
                    .stamps
                    .entry(name.clone())
                    .or_insert((generation, now));
                if stamp.0 < generation {
                    *stamp = (generation, now);
                }
            }
            if now.saturating_duration_since(table.pruned) > self.retention / 4 {
                let retention = self.retention;
                table
                    .stamps
                    .retain(|_, (_, at)| now.saturating_duration_since(*at) <= retention);
                table.pruned = now;
            }
        }
        self.covers(generation);
    }

    /// The clock reached `clock` without an invalidation (a resubscription's new value).
    fn advance(&self, clock: u64) {
        let mut table = self.table.write();
        table.clock = table.clock.max(clock);
    }

    /// An invalidation whose names do not read: nothing older than `generation` is valid.
    fn apply_everything(&self, generation: u64) {
        {
            let mut table = self.table.write();
            table.clock = table.clock.max(generation);
            table.floor = table.floor.max(generation);
        }
        self.covers(generation);
    }

    /// After a (re)subscription: nothing older than `clock` is valid any more.
    fn resync(&self, clock: u64, floor: u64) {
        {
            let mut table = self.table.write();
            table.clock = table.clock.max(clock);
            table.floor = table.floor.max(clock).max(floor);
        }
        // Every invalidation before `clock` is covered by the floor, including any a
        // writer published while the subscription was down and still waits for.
        self.covers(clock);
    }

    /// The table now accounts for every invalidation up to `generation`: acknowledge it.
    fn covers(&self, generation: u64) {
        self.applied.send_if_modified(|applied| {
            let newer = generation > *applied;
            *applied = (*applied).max(generation);
            newer
        });
        // This member's own acknowledgement needs no round trip.
        self.heard_ack(&self.id, generation);
    }

    fn heard_ack(&self, member: &str, generation: u64) {
        let mut acks = self.acks.lock();
        let known = acks.entry(member.to_owned()).or_insert(0);
        if *known < generation {
            *known = generation;
            drop(acks);
            self.acked.notify_waiters();
        }
    }

    /// Waits until every member of `members` (as the write's script returned them:
    /// id, lease end, …) has acknowledged `generation`, or its lease has ended. `now` is
    /// the server's time when the script ran and `floor` the clock's creation (server
    /// µs), `replied` when the answer arrived here. A clock created less than a lease ago
    /// (Redis lost its data) comes with a members set that may have lost members too:
    /// then the write also waits a whole lease, after which no member that missed it
    /// still answers reads.
    pub(super) async fn await_acks(
        &self,
        keys: &Keys,
        generation: u64,
        (now, floor): (u64, u64),
        members: &[String],
        replied: Instant,
    ) {
        let lease_us = u64::try_from((LEASE + MARGIN).as_micros()).unwrap_or(u64::MAX);
        if now.saturating_sub(floor) < lease_us {
            tokio::time::sleep_until(replied + LEASE).await;
        }
        let deadlines: Vec<(&str, Instant)> = members
            .chunks_exact(2)
            .map(|pair| {
                let end = pair[1].parse::<f64>().map_or(u64::MAX, |end| end as u64);
                let left = Duration::from_micros(end.saturating_sub(now)).min(LEASE);
                (pair[0].as_str(), replied + left)
            })
            .collect();
        let mut polled = replied;
        let lapsed = loop {
            let notified = self.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let at = Instant::now();
            // Members yet to acknowledge: inside their lease, or past it.
            let (waiting, lapsed): (Vec<(&str, Instant)>, Vec<_>) = {
                let acks = self.acks.lock();
                deadlines
                    .iter()
                    .filter(|(id, _)| acks.get(*id).copied().unwrap_or(0) < generation)
                    .partition(|(_, until)| at < *until)
            };
            if waiting.is_empty() {
                break lapsed.len();
            }
            let next_poll = polled + POLL;
            let until = waiting
                .iter()
                .map(|(_, until)| *until)
                .min()
                .unwrap_or(at)
                .min(next_poll);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {
                    if Instant::now() >= next_poll {
                        polled = Instant::now();
                        self.poll_acks(keys, &waiting).await;
                    }
                }
            }
        };
        if lapsed > 0 {
            tracing::warn!(
                members = lapsed,
                "a replica did not acknowledge a cache invalidation; the write waited for its lease to end"
            );
        }
    }

    /// Reads the acknowledgements of `waiting` from the hash.
    async fn poll_acks(&self, keys: &Keys, waiting: &[(&str, Instant)]) {
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(keys.key("acked"));
        for (id, _) in waiting {
            hmget.arg(*id);
        }
        if let Ok(values) = keys.redis.query::<Vec<Option<u64>>>(&hmget).await {
            for ((id, _), value) in waiting.iter().zip(values) {
                if let Some(generation) = value {
                    self.heard_ack(id, generation);
                }
            }
        }
    }
}

/// Follows the events channel for `mirror`, subscribing again whenever the
/// subscription is lost, until the mirror is dropped.
async fn follow(mirror: Weak<Mirror>, keys: Keys) {
    let heartbeat = Arc::new(Script::new(
        &HEARTBEAT_SCRIPT.replace("__ENSURE__", super::ENSURE),
    ));
    let mut backoff = Duration::from_millis(50);
    loop {
        let ended = subscription(&mirror, &keys, &heartbeat).await;
        let Some(alive) = mirror.upgrade() else {
            return;
        };
        alive.distrust();
        drop(alive);
        match ended {
            Ended::Dropped => return,
            Ended::Lost { followed } => {
                if followed {
                    backoff = Duration::from_millis(50);
                }
                tracing::warn!(
                    "the cache invalidation subscription to Redis was lost; reads ask Redis until it is back"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

enum Ended {
    /// The mirror is gone: stop.
    Dropped,
    /// Subscribe again (`followed`: after a working subscription, so without waiting
    /// long).
    Lost { followed: bool },
}

/// One subscription: subscribe, resynchronise, then apply what arrives and renew the
/// lease until the subscription breaks.
async fn subscription(mirror: &Weak<Mirror>, keys: &Keys, heartbeat: &Arc<Script>) -> Ended {
    let channel = keys.key("events");
    let Ok((_sink, mut messages)) = keys.redis.subscribe(&channel).await else {
        return Ended::Lost { followed: false };
    };
    let Some(me) = mirror.upgrade() else {
        return Ended::Dropped;
    };
    // Subscribed: every message published from now on arrives. Take a new clock value as
    // the floor, which also renews the lease and sends the first heartbeat.
    let sent = Instant::now();
    let Ok((clock, floor)) = beat(keys, heartbeat, &me, sent, true).await else {
        return Ended::Lost { followed: false };
    };
    me.resync(clock, floor);
    let id = me.id.clone();
    drop(me);
    let mut outstanding = Some(sent);
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Ended::Lost { followed: true };
                };
                let Some(me) = mirror.upgrade() else {
                    return Ended::Dropped;
                };
                let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else {
                    continue;
                };
                let mut words = text.splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("i"), Some(generation), names) => {
                        if let Ok(generation) = generation.parse() {
                            // The names as JSON (`cjson`: an empty list is `{}`); names
                            // that do not read invalidate everything up to `generation`.
                            match names.map(serde_json::from_str::<Vec<String>>) {
                                Some(Ok(names)) => me.apply(generation, &names),
                                _ => me.apply_everything(generation),
                            }
                        }
                    }
                    (Some("a"), Some(member), Some(generation)) => {
                        if let Ok(generation) = generation.parse() {
                            me.heard_ack(member, generation);
                        }
                    }
                    (Some("h"), Some(member), Some(rest)) => {
                        // `h <member> <sent> <clock>`: the clock as the heartbeat saw it.
                        let mut rest = rest.split(' ');
                        let echoed = rest.next().and_then(|n| n.parse::<u64>().ok());
                        let clock = rest.next().and_then(|c| c.parse::<u64>().ok());
                        if member != id {
                            // Another member's resubscription moved the clock: no
                            // invalidation, but the clock's newest value.
                            if let Some(clock) = clock {
                                me.advance(clock);
                            }
                            continue;
                        }
                        if let (Some(echoed), Some(sent)) = (echoed, outstanding)
                            && echoed == me.nanos(sent)
                        {
                            outstanding = None;
                            // Every invalidation and resubscription before this heartbeat
                            // has arrived: a clock past what they brought was moved by a
                            // writer that publishes nothing (a replica of an earlier
                            // version), whose stamps this mirror cannot know.
                            if let Some(clock) = clock
                                && clock > me.clock()
                            {
                                tracing::error!(
                                    "the cache generations' clock moved without an invalidation being published (a replica of an earlier version writing?); this replica's cached entries are dropped"
                                );
                                me.apply_everything(clock);
                            }
                            let until = me.nanos(sent + LEASE - MARGIN);
                            me.usable_until.fetch_max(until, Ordering::AcqRel);
                        }
                    }
                    _ => {}
                }
            }
            _ = ticks.tick() => {
                let Some(me) = mirror.upgrade().filter(|me| !me.left.load(Ordering::Acquire)) else {
                    return Ended::Dropped;
                };
                match outstanding {
                    Some(sent) if sent.elapsed() > ECHO_OVERDUE => {
                        return Ended::Lost { followed: true };
                    }
                    Some(_) => {}
                    None => {
                        // One heartbeat at a time: the lease in Redis is renewed only
                        // while the previous one came back.
                        let sent = Instant::now();
                        outstanding = Some(sent);
                        let (keys, heartbeat) = (keys.clone(), heartbeat.clone());
                        tokio::spawn(async move {
                            let _ = beat(&keys, &heartbeat, &me, sent, false).await;
                        });
                    }
                }
            }
        }
    }
}

/// Runs the heartbeat script for `me`, sent at `sent`.
async fn beat(
    keys: &Keys,
    heartbeat: &Script,
    me: &Mirror,
    sent: Instant,
    resync: bool,
) -> Result<(u64, u64), crate::RedisError> {
    let mut invocation = heartbeat.prepare_invoke();
    for name in ["clock", "floor", "members", "acked"] {
        invocation.key(keys.key(name));
    }
    invocation
        .arg(&me.id)
        .arg(u64::try_from(LEASE.as_micros()).unwrap_or(u64::MAX))
        .arg(keys.key("events"))
        .arg(me.nanos(sent))
        .arg(if resync { "1" } else { "0" })
        .arg(me.clock());
    keys.redis.invoke(&invocation).await
}

/// Acknowledges the newest generation the member applied, one at a time, until the
/// mirror is dropped or leaves. A failed acknowledgement is tried again (writers waiting for it
/// also poll the hash).
async fn acknowledge(keys: Keys, mirror: Weak<Mirror>, mut applied: watch::Receiver<u64>) {
    let script = Script::new(ACK_SCRIPT);
    let Some(id) = mirror.upgrade().map(|me| me.id.clone()) else {
        return;
    };
    let mut sent = 0;
    loop {
        let gone = mirror
            .upgrade()
            .is_none_or(|me| me.left.load(Ordering::Acquire));
        if gone {
            // Dropped, or left the members (which recorded it as having applied all).
            return;
        }
        let generation = *applied.borrow_and_update();
        if generation <= sent {
            if applied.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut invocation = script.prepare_invoke();
        invocation
            .key(keys.key("acked"))
            .arg(&id)
            .arg(generation)
            .arg(keys.key("events"));
        match keys.redis.invoke::<()>(&invocation).await {
            Ok(()) => sent = generation,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
impl Mirror {
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}
