//! The shared generations against a real `redis-server`: first the path where every
//! read asks Redis (the batched `MGET`), then the mirror that answers reads inside a
//! lease, and what a write waits for.

use std::time::{Duration, Instant};

use portico_cache::SharedGenerations as _;

use crate::testing::RedisServer;
use crate::{Redis, RedisGenerations};

fn client(server: &RedisServer) -> Redis {
    let prefix = format!("test-{}:", crate::random_hex(4));
    Redis::new(&server.settings(&prefix)).expect("client")
}

#[tokio::test]
async fn cache_generations_stamp_what_writes_touch_and_survive_nothing_a_restart_lost() {
    let mut server = RedisServer::start();
    let generations = RedisGenerations::without_mirror(client(&server), Duration::from_secs(60));
    let mine = ["p1|t:Appointment".to_owned(), "p1|*".to_owned()];
    let theirs = ["p2|t:Appointment".to_owned(), "p2|*".to_owned()];
    let first = generations.snapshot(&mine).await.unwrap();
    assert_eq!(first.newest, first.clock, "a fresh clock is its own floor");
    // A write stamps its keys past every clock value handed out before it.
    generations.stamp(&mine[..1]).await.unwrap();
    let after = generations.snapshot(&mine).await.unwrap();
    assert!(after.newest > first.clock && after.clock >= after.newest);
    // Another patient's keys are untouched.
    let other = generations.snapshot(&theirs).await.unwrap();
    assert_eq!(other.newest, first.newest);
    // Redis restarts empty: a new floor, later than any generation handed out before.
    server.restart();
    let fresh = loop {
        if let Ok(s) = generations.snapshot(&theirs).await {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(fresh.newest > after.clock, "{fresh:?} vs {after:?}");
    // Again, with reads waiting together: one script creates the clock for the batch,
    // and every read compares its stamps with the new floor.
    server.restart();
    let reads = (0..8).map(|i| {
        let generations = generations.clone();
        async move {
            let keys = [format!("p{i}|*")];
            loop {
                if let Ok(s) = generations.snapshot(&keys).await {
                    break s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    for snapshot in futures::future::join_all(reads).await {
        assert!(snapshot.newest > fresh.clock, "{snapshot:?} vs {fresh:?}");
        assert!(snapshot.clock >= snapshot.newest);
    }
}

/// How many `MGET`s the server has run.
async fn mget_calls(redis: &Redis) -> u64 {
    let info: String = redis
        .query(redis::cmd("INFO").arg("commandstats"))
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_mget:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test]
async fn an_unreadable_stamp_sends_only_its_own_reads_to_the_ehr() {
    let server = RedisServer::start();
    let redis = client(&server);
    let generations = RedisGenerations::without_mirror(redis.clone(), Duration::from_secs(60));
    generations.stamp(&["p1|*".to_owned()]).await.unwrap();
    let p1_stamp = generations
        .snapshot(&["p1|*".to_owned()])
        .await
        .unwrap()
        .newest;
    generations.stamp(&["p3|*".to_owned()]).await.unwrap();
    // Something other than a clock value where p2's stamp belongs.
    let key = [redis.key("gen", "{g}:s:"), "p2|*".to_owned()].concat();
    let _: () = redis
        .query(redis::cmd("SET").arg(&key).arg("not a number"))
        .await
        .unwrap();
    let (p1_keys, p2_keys) = (
        ["p1|*".to_owned()],
        ["p2|t:Observation".to_owned(), "p2|*".to_owned()],
    );
    let (p1, p2) = tokio::join!(
        generations.snapshot(&p1_keys),
        generations.snapshot(&p2_keys)
    );
    let (p1, p2) = (p1.unwrap(), p2.unwrap());
    assert_eq!(
        p1.newest, p1_stamp,
        "the other read in the batch is unaffected"
    );
    assert!(p1.newest < p1.clock);
    assert_eq!(
        p2.newest, p2.clock,
        "an unreadable stamp counts as written just now: no cached entry is used"
    );
}

#[tokio::test]
async fn reads_beyond_the_waiting_bound_fail_at_once() {
    let server = RedisServer::start();
    let redis = client(&server);
    let generations = RedisGenerations::without_mirror(redis.clone(), Duration::from_secs(60));
    // On this single-threaded runtime the batching task cannot run while the reads are
    // first polled: every read past the queue's bound finds it full.
    let reads = (0..super::MAX_WAITING + 500).map(|i| {
        let generations = generations.clone();
        async move { generations.snapshot(&[format!("p{i}|*")]).await }
    });
    let answers = futures::future::join_all(reads).await;
    let refused: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(!refused.is_empty(), "no read was refused");
    assert!(
        refused
            .iter()
            .all(|e| e.to_string().contains("already waiting for Redis")),
        "{:?}",
        refused.first()
    );
    let answered = answers.iter().filter(|a| a.is_ok()).count();
    assert!(answered >= super::MAX_WAITING, "{answered}");
    // Once the queue has drained, reads are answered again.
    generations.snapshot(&["p0|*".to_owned()]).await.unwrap();
}

#[tokio::test]
async fn concurrent_snapshots_share_a_round_trip_and_each_sees_only_its_own_stamps() {
    let server = RedisServer::start();
    let redis = client(&server);
    let generations = RedisGenerations::without_mirror(redis.clone(), Duration::from_secs(60));
    let first = generations.snapshot(&["p0|*".to_owned()]).await.unwrap();
    // Patient i's stamp is written i-th: later patients have newer stamps, p0 none.
    for i in 1..40 {
        generations.stamp(&[format!("p{i}|*")]).await.unwrap();
    }
    let before = mget_calls(&redis).await;
    let reads = (0..40).map(|i| {
        let generations = generations.clone();
        async move {
            let keys = [format!("p{i}|t:Observation"), format!("p{i}|*")];
            generations.snapshot(&keys).await.unwrap()
        }
    });
    let snapshots = futures::future::join_all(reads).await;
    let round_trips = mget_calls(&redis).await - before;
    assert!(
        (1..=2).contains(&round_trips),
        "40 reads waiting together took {round_trips} MGETs"
    );
    assert_eq!(snapshots[0].newest, first.newest, "p0 has no stamp");
    for pair in snapshots[1..].windows(2) {
        assert!(
            pair[1].newest > pair[0].newest,
            "each read sees its own patient's stamp, not the newest of the batch: {pair:?}"
        );
    }
    let clock = snapshots[0].clock;
    assert!(
        snapshots
            .iter()
            .all(|s| s.clock == clock && s.newest <= clock)
    );
    // A stamp written after the batch is seen by the next read.
    generations.stamp(&["p0|*".to_owned()]).await.unwrap();
    let after = generations.snapshot(&["p0|*".to_owned()]).await.unwrap();
    assert!(after.newest > clock);
}

/// A replica of a fleet: a client of `server` with the fleet's key `prefix`, and its
/// generations with their mirror.
fn replica(server: &RedisServer, prefix: &str) -> (Redis, RedisGenerations) {
    let redis = Redis::new(&server.settings(prefix)).expect("client");
    let generations = RedisGenerations::new(redis.clone(), Duration::from_secs(60));
    (redis, generations)
}

/// Waits until `generations` answers from its mirror.
async fn mirrored(generations: &RedisGenerations) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !generations.mirrored() {
        assert!(
            Instant::now() < deadline,
            "the mirror follows Redis within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `generations` has stopped answering from its mirror (within 2 s: its
/// local lease is 1.5 s).
async fn unmirrored(generations: &RedisGenerations) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while generations.mirrored() {
        assert!(Instant::now() < deadline, "still answering from the mirror");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The ids in the members set.
async fn members(redis: &Redis) -> Vec<String> {
    let key = redis.key("gen", "{g}:members");
    redis
        .query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
        .await
        .unwrap()
}

/// Cuts every pub/sub connection (Redis keeps its data and other connections).
async fn kill_subscriptions(redis: &Redis) {
    let _: () = redis
        .query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
        .await
        .unwrap();
}

/// The Redis server's time, in µs.
async fn server_micros(redis: &Redis) -> u64 {
    let (secs, micros): (u64, u64) = redis.query(&redis::cmd("TIME")).await.unwrap();
    secs * 1_000_000 + micros
}

/// Creates the fleet's clock as if ten seconds ago: a clock created less than a lease ago
/// makes every write wait a whole lease (Redis may have lost the members), which the
/// tests that time a write do not want.
async fn aged_clock(server: &RedisServer, prefix: &str) {
    let redis = Redis::new(&server.settings(prefix)).expect("client");
    let then = server_micros(&redis).await - 10_000_000;
    for name in ["clock", "floor"] {
        let _: () = redis
            .query(
                redis::cmd("SET")
                    .arg(redis.key("gen", &format!("{{g}}:{name}")))
                    .arg(then),
            )
            .await
            .unwrap();
    }
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// On this single-threaded runtime no other task runs between a write's return and the
/// next read: the other replica has the write's stamp only because the write waited for
/// its acknowledgement.
#[tokio::test]
async fn a_write_reaches_every_mirror_before_it_returns_and_reads_ask_redis_nothing() {
    let server = RedisServer::start();
    let prefix = format!("test-{}:", crate::random_hex(4));
    aged_clock(&server, &prefix).await;
    let (redis, a) = replica(&server, &prefix);
    let (_, b) = replica(&server, &prefix);
    mirrored(&a).await;
    mirrored(&b).await;
    let before = mget_calls(&redis).await;
    let theirs = keys(&["p2|t:Appointment", "p2|*"]);
    // Each replica's floor is its own (the clock value it took when it subscribed).
    let untouched = [
        a.snapshot(&theirs).await.unwrap().newest,
        b.snapshot(&theirs).await.unwrap().newest,
    ];
    let mut last = b.snapshot(&keys(&["p1|*"])).await.unwrap();
    for i in 0..40 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        writer.stamp(&keys(&["p1|t:Appointment"])).await.unwrap();
        let seen = reader
            .snapshot(&keys(&["p1|t:Appointment", "p1|*"]))
            .await
            .unwrap();
        assert!(
            seen.newest > last.clock && seen.clock >= seen.newest,
            "write {i} not seen by the other replica: {seen:?} after {last:?}"
        );
        last = seen;
    }
    // A few heartbeats later (each checks that the clock moved only by what was
    // published): another patient's keys are still untouched, nothing was dropped.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (replica, untouched) in [&a, &b].into_iter().zip(untouched) {
        assert_eq!(
            replica.snapshot(&theirs).await.unwrap().newest,
            untouched,
            "another patient's keys are untouched"
        );
    }
    assert_eq!(
        mget_calls(&redis).await,
        before,
        "every read was answered by a mirror"
    );
}

#[tokio::test]
async fn a_write_waits_for_each_member_until_it_acknowledges_or_its_lease_ends() {
    let server = RedisServer::start();
    let prefix = format!("test-{}:", crate::random_hex(4));
    aged_clock(&server, &prefix).await;
    let (redis, a) = replica(&server, &prefix);
    mirrored(&a).await;
    let members_key = redis.key("gen", "{g}:members");
    let zadd = |member: &str, end: u64| {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&members_key).arg(end).arg(member);
        cmd
    };

    // A member that never answers: the write waits until its lease ends.
    let started = Instant::now();
    let now = server_micros(&redis).await;
    let _: () = redis.query(&zadd("silent", now + 700_000)).await.unwrap();
    a.stamp(&keys(&["p1|*"])).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(650),
        "returned after {took:?}, before the silent member's lease ended"
    );

    // A member whose lease has ended is not waited for.
    let now = server_micros(&redis).await;
    let _: () = redis.query(&zadd("gone", now - 1)).await.unwrap();
    let started = Instant::now();
    a.stamp(&keys(&["p1|*"])).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(1500));

    // A member that acknowledges late, in the hash only (as one whose acknowledgement
    // message the writer missed): the writer reads it there and stops waiting.
    let now = server_micros(&redis).await;
    let _: () = redis.query(&zadd("late", now + 10_000_000)).await.unwrap();
    let acked = redis.key("gen", "{g}:acked");
    let acknowledging = {
        let redis = redis.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _: () = redis
                .query(redis::cmd("HSET").arg(&acked).arg("late").arg(i64::MAX))
                .await
                .unwrap();
        })
    };
    let started = Instant::now();
    a.stamp(&keys(&["p1|*"])).await.unwrap();
    let took = started.elapsed();
    acknowledging.await.unwrap();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(1900),
        "{took:?}: not the acknowledgement (150 ms) but the lease cap (2 s)"
    );
    let members = members(&redis).await;
    assert!(members.contains(&a.member_id().to_owned()), "{members:?}");
}

/// The subscription is cut (`CLIENT KILL TYPE pubsub`: Redis keeps its data) and a write
/// is made before the replica subscribes again: the replica's mirror missed it, and
/// must not serve anything it held from before the gap.
#[tokio::test]
async fn a_replica_that_loses_its_subscription_trusts_nothing_it_held_before() {
    let server = RedisServer::start();
    let prefix = format!("test-{}:", crate::random_hex(4));
    aged_clock(&server, &prefix).await;
    let (redis, a) = replica(&server, &prefix);
    let writer = RedisGenerations::without_mirror(redis.clone(), Duration::from_secs(60));
    mirrored(&a).await;
    let before = a.snapshot(&keys(&["p1|*", "p9|*"])).await.unwrap();
    kill_subscriptions(&redis).await;
    let started = Instant::now();
    writer.stamp(&keys(&["p1|*"])).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1900),
        "{took:?}: the resubscribed replica acknowledged what its floor covers"
    );
    mirrored(&a).await;
    let p1 = a.snapshot(&keys(&["p1|*"])).await.unwrap();
    let p9 = a.snapshot(&keys(&["p9|*"])).await.unwrap();
    assert!(p1.newest > before.clock, "{p1:?} vs {before:?}");
    assert!(
        p9.newest > before.clock,
        "an entry fetched before the gap is invalid even where nothing was stamped: {p9:?} vs {before:?}"
    );
}

/// Redis killed: the replica stops answering from its mirror at once (its reads ask
/// Redis, and fail), and follows the new Redis when it is back.
#[tokio::test]
async fn a_replica_stops_answering_from_its_mirror_when_redis_goes_and_resumes_after() {
    let mut server = RedisServer::start();
    let prefix = format!("test-{}:", crate::random_hex(4));
    aged_clock(&server, &prefix).await;
    let (_, a) = replica(&server, &prefix);
    mirrored(&a).await;
    let before = a.snapshot(&keys(&["p1|*"])).await.unwrap();
    server.stop();
    unmirrored(&a).await;
    assert!(a.snapshot(&keys(&["p1|*"])).await.is_err());
    server.restart();
    mirrored(&a).await;
    let after = a.snapshot(&keys(&["p1|*"])).await.unwrap();
    assert!(after.newest > before.clock, "{after:?} vs {before:?}");
    // Redis came back empty: its members set may have lost replicas still answering from
    // their mirrors, so a write waits a whole lease.
    let started = Instant::now();
    a.stamp(&keys(&["p1|*"])).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    let seen = a.snapshot(&keys(&["p1|*"])).await.unwrap();
    assert!(seen.newest > after.clock, "{seen:?} vs {after:?}");
}

/// A replica shutting down leaves: it stops answering from its mirror at once, and the
/// fleet's writes stop waiting for it (it no longer acknowledges anything).
#[tokio::test]
async fn a_replica_that_leaves_is_not_waited_for() {
    let server = RedisServer::start();
    let prefix = format!("test-{}:", crate::random_hex(4));
    aged_clock(&server, &prefix).await;
    let (redis, a) = replica(&server, &prefix);
    let (_, b) = replica(&server, &prefix);
    mirrored(&a).await;
    mirrored(&b).await;
    b.leave().await;
    assert!(!b.mirrored());
    let started = Instant::now();
    a.stamp(&keys(&["p1|*"])).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1900),
        "{took:?}: the write waited for the replica that left"
    );
    // It stays out: no heartbeat puts it back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let members = members(&redis).await;
    assert!(!members.contains(&b.member_id().to_owned()), "{members:?}");
    assert!(members.contains(&a.member_id().to_owned()), "{members:?}");
    assert!(!b.mirrored());
}

/// Redis comes back having lost its last writes (an append-only file a second behind, a
/// failover): the clock is older than what the replica saw. Neither what the replica
/// held before nor what it fetches after may outlive the next write.
#[tokio::test]
async fn a_clock_that_went_back_never_hands_out_a_generation_older_than_the_replica_saw() {
    let server = RedisServer::start();
    let prefix = format!("test-{}:", crate::random_hex(4));
    aged_clock(&server, &prefix).await;
    let (redis, a) = replica(&server, &prefix);
    let writer = RedisGenerations::without_mirror(redis.clone(), Duration::from_secs(60));
    mirrored(&a).await;
    for _ in 0..5 {
        a.stamp(&keys(&["p1|*"])).await.unwrap();
    }
    let before = a.snapshot(&keys(&["p1|*"])).await.unwrap();
    // The last five writes are lost, and the subscription with them.
    let clock_key = redis.key("gen", "{g}:clock");
    let _: () = redis
        .query(redis::cmd("SET").arg(&clock_key).arg(before.clock - 5))
        .await
        .unwrap();
    let _: () = redis
        .query(redis::cmd("DEL").arg([redis.key("gen", "{g}:s:"), "p1|*".to_owned()].concat()))
        .await
        .unwrap();
    kill_subscriptions(&redis).await;
    unmirrored(&a).await;
    mirrored(&a).await;
    // What an entry fetched now is stamped with.
    let after = a.snapshot(&keys(&["p1|*"])).await.unwrap();
    assert!(after.newest > before.clock, "{after:?} vs {before:?}");
    writer.stamp(&keys(&["p1|*"])).await.unwrap();
    let seen = a.snapshot(&keys(&["p1|*"])).await.unwrap();
    assert!(
        seen.newest > after.clock,
        "an entry fetched after the loss outlives the next write: {seen:?} vs {after:?}"
    );
}

/// A writer that stamps without publishing (a replica of the version before the mirrors,
/// during a rolling upgrade that should not have been one): the next heartbeat shows the
/// clock past everything the mirror was told, and the replica drops what it held.
#[tokio::test]
async fn a_clock_moved_without_an_invalidation_invalidates_the_mirror() {
    let server = RedisServer::start();
    let prefix = format!("test-{}:", crate::random_hex(4));
    aged_clock(&server, &prefix).await;
    let (redis, a) = replica(&server, &prefix);
    mirrored(&a).await;
    let before = a.snapshot(&keys(&["p1|*"])).await.unwrap();
    // What the earlier version's script did: INCR, SET the stamp, publish nothing.
    let generation: u64 = redis
        .query(redis::cmd("INCR").arg(redis.key("gen", "{g}:clock")))
        .await
        .unwrap();
    let _: () = redis
        .query(
            redis::cmd("SET")
                .arg([redis.key("gen", "{g}:s:"), "p1|*".to_owned()].concat())
                .arg(generation),
        )
        .await
        .unwrap();
    assert!(generation > before.clock);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // p9 was never stamped: only a floor raised by the mirror covers it.
        if let Ok(seen) = a.snapshot(&keys(&["p9|*"])).await
            && seen.newest >= generation
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unannounced write was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
