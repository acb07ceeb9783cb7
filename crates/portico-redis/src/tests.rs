//! The Redis halves of the shared-state contract suites (the memory halves run in
//! `portico-portal`), against a real `redis-server` per test; then what only a remote
//! store can do: go away, hang, and come back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_portal::StateError;
use portico_portal::contract;
use portico_portal::idempotency::{Begin, IdempotencyStore, StoredResponse};
use portico_portal::locks::Locks;
use portico_portal::offers::{Offer, Offers};
use serde_json::json;

use crate::testing::RedisServer;
use crate::{Redis, RedisIdempotencyStore, RedisLocks, RedisOffers};

/// A client of `server` with its own key prefix, so that stores a suite builds on one
/// server never see each other's records.
fn client(server: &RedisServer) -> Redis {
    let prefix = format!("test-{}:", crate::random_hex(4));
    Redis::new(&server.settings(&prefix)).expect("client")
}

#[tokio::test]
async fn idempotency_store_passes_the_contract() {
    let server = RedisServer::start();
    contract::idempotency::run(async |settings| {
        Arc::new(RedisIdempotencyStore::new(
            client(&server),
            settings.ttl,
            settings.running_ttl,
        )) as Arc<dyn IdempotencyStore>
    })
    .await;
}

#[tokio::test]
async fn locks_pass_the_contract_across_two_connections() {
    let server = RedisServer::start();
    let settings = server.settings("test-locks:");
    // Two clients, two connections: as two replicas see one Redis.
    let ttl = Duration::from_secs(1);
    let a = RedisLocks::new(Redis::new(&settings).unwrap(), ttl, Duration::from_secs(10));
    let b = RedisLocks::new(Redis::new(&settings).unwrap(), ttl, Duration::from_secs(10));
    contract::locks::run(
        Arc::new(a),
        Arc::new(b),
        contract::locks::Expiry::After(ttl),
    )
    .await;
}

#[tokio::test]
async fn offers_pass_the_contract() {
    let server = RedisServer::start();
    contract::offers::run(async |lifetime| {
        Arc::new(RedisOffers::new(client(&server), lifetime)) as Arc<dyn Offers>
    })
    .await;
}

#[tokio::test]
async fn a_lock_held_past_the_wait_bound_is_busy() {
    let server = RedisServer::start();
    let redis = client(&server);
    let locks = RedisLocks::new(redis, Duration::from_secs(30), Duration::from_millis(300));
    let _held = locks.lock("slot:1").await.unwrap();
    let started = Instant::now();
    assert_eq!(locks.lock("slot:1").await.err(), Some(StateError::Busy));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// What Redis holds: no plaintext patient data or identifiers, in keys or values; and a
/// value moved under another key does not open.
#[tokio::test]
async fn values_are_sealed_and_keys_identify_nothing() {
    let server = RedisServer::start();
    let redis = client(&server);
    let offers = RedisOffers::new(redis.clone(), Duration::from_secs(60));
    let offer = Offer {
        resource_type: "Appointment".to_owned(),
        id: "appt-77".to_owned(),
        resource: json!({"resourceType": "Appointment", "id": "appt-77",
            "participant": [{"actor": {"reference": "Patient/pat-secret"}}]}),
    };
    offers
        .put("pat-secret", std::slice::from_ref(&offer))
        .await
        .unwrap();
    let idem = RedisIdempotencyStore::new(
        redis.clone(),
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let Begin::Started(claim) = idem.begin("sub\npat-secret", "key-1", "fp").await.unwrap() else {
        panic!("starts")
    };
    idem.complete(
        "sub\npat-secret",
        "key-1",
        &claim,
        StoredResponse {
            status: 201,
            body: json!({"note": "pat-secret's answer"}),
        },
    )
    .await
    .unwrap();
    let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("*")).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        assert!(!key.contains("pat-secret") && !key.contains("appt-77") && !key.contains("key-1"));
        let value: Vec<u8> = redis.query(redis::cmd("GET").arg(key)).await.unwrap();
        let text = String::from_utf8_lossy(&value);
        assert!(
            !text.contains("pat-secret") && !text.contains("Appointment"),
            "{text}"
        );
    }
    // Swap the two values: neither opens under the other's key.
    let (a, b) = (&keys[0], &keys[1]);
    let va: Vec<u8> = redis.query(redis::cmd("GET").arg(a)).await.unwrap();
    let vb: Vec<u8> = redis.query(redis::cmd("GET").arg(b)).await.unwrap();
    let _: () = redis
        .query(redis::cmd("SET").arg(a).arg(&vb))
        .await
        .unwrap();
    let _: () = redis
        .query(redis::cmd("SET").arg(b).arg(&va))
        .await
        .unwrap();
    assert_eq!(
        offers.get("pat-secret", "Appointment", "appt-77").await,
        Ok(None)
    );
    assert!(matches!(
        idem.begin("sub\npat-secret", "key-1", "fp").await,
        Err(StateError::Unavailable(_))
    ));
}

/// Each store's operations, for the outage tests: all of them answer, or all fail.
async fn every_operation(
    idem: &RedisIdempotencyStore,
    locks: &RedisLocks,
    offers: &RedisOffers,
) -> Vec<Result<(), StateError>> {
    let key = crate::random_hex(4);
    let begin = idem.begin("s", &key, "f").await;
    let claim = match &begin {
        Ok(Begin::Started(claim)) => Some(claim.clone()),
        _ => None,
    };
    let mut results = vec![begin.map(|_| ())];
    if let Some(claim) = claim {
        results.push(idem.abandon("s", &key, &claim).await);
    }
    results.push(locks.lock(&key).await.map(drop));
    results.push(offers.put("p", &[]).await);
    results.push(
        offers
            .put(
                "p",
                &[Offer {
                    resource_type: "Appointment".to_owned(),
                    id: key.clone(),
                    resource: json!({}),
                }],
            )
            .await,
    );
    results.push(offers.get("p", "Appointment", &key).await.map(drop));
    results
}

/// Redis killed mid-test: every store answers an error within the command timeout (no
/// hang), and once Redis is back the same clients work again without being rebuilt.
#[tokio::test]
async fn a_stopped_redis_is_an_error_within_the_timeout_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start();
    let redis = client(&server);
    let timeout = redis.command_timeout();
    let idem = RedisIdempotencyStore::new(
        redis.clone(),
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let locks = RedisLocks::new(
        redis.clone(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let offers = RedisOffers::new(redis.clone(), Duration::from_secs(60));
    for result in every_operation(&idem, &locks, &offers).await {
        result.expect("works while Redis runs");
    }

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let results = every_operation(&idem, &locks, &offers).await;
        // `put` of nothing never reaches Redis; every other operation fails.
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, results.len() - 1, "{results:?}");
        for e in results.into_iter().filter_map(Result::err) {
            assert!(matches!(e, StateError::Unavailable(_)), "{e:?}");
        }
        assert!(
            started.elapsed() < timeout * 6 + Duration::from_millis(500),
            "bounded by the command timeout: {:?}",
            started.elapsed()
        );
        assert!(redis.ping().await.is_err());
    }

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the client reconnects by itself");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Scripts are loaded again (the restarted server's script cache is empty).
    for result in every_operation(&idem, &locks, &offers).await {
        result.expect("works again after the restart");
    }
}

/// A frozen Redis (the connection open, no answer): each command fails after the
/// command timeout instead of waiting for ever; once it thaws, the client works.
#[tokio::test]
async fn a_hung_redis_is_an_error_after_the_command_timeout() {
    let server = RedisServer::start();
    let redis = client(&server);
    let timeout = redis.command_timeout();
    let offers = RedisOffers::new(redis.clone(), Duration::from_secs(60));
    redis.ping().await.expect("connected");
    server.freeze();
    let started = Instant::now();
    let result = offers.get("p", "Appointment", "a").await;
    let took = started.elapsed();
    server.thaw();
    assert!(
        matches!(result, Err(StateError::Unavailable(_))),
        "{result:?}"
    );
    assert!(took >= timeout / 2 && took < timeout * 3, "{took:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while offers.get("p", "Appointment", "a").await.is_err() {
        assert!(Instant::now() < deadline, "the client works again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis that is down when the client is built: nothing fails until a command runs,
/// each command fails quickly, and when Redis comes up the client uses it.
#[tokio::test]
async fn a_redis_down_at_start_is_used_once_it_is_up() {
    let mut server = RedisServer::start();
    let settings = server.settings("test-late:");
    server.stop();
    let redis = Redis::new(&settings).expect("built without connecting");
    let started = Instant::now();
    assert!(redis.ping().await.is_err());
    assert!(started.elapsed() < settings.command_timeout * 3);
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the client connects once Redis is up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cache_generations_stamp_what_writes_touch_and_survive_nothing_a_restart_lost() {
    use portico_cache::SharedGenerations as _;
    let mut server = RedisServer::start();
    let generations = crate::RedisGenerations::new(client(&server), Duration::from_secs(60));
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
    use portico_cache::SharedGenerations as _;
    let server = RedisServer::start();
    let redis = client(&server);
    let generations = crate::RedisGenerations::new(redis.clone(), Duration::from_secs(60));
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
    use portico_cache::SharedGenerations as _;
    let server = RedisServer::start();
    let redis = client(&server);
    let generations = crate::RedisGenerations::new(redis.clone(), Duration::from_secs(60));
    // On this single-threaded runtime the batching task cannot run while the reads are
    // first polled: every read past the queue's bound finds it full.
    let reads = (0..crate::generations::MAX_WAITING + 500).map(|i| {
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
    assert!(answered >= crate::generations::MAX_WAITING, "{answered}");
    // Once the queue has drained, reads are answered again.
    generations.snapshot(&["p0|*".to_owned()]).await.unwrap();
}

#[tokio::test]
async fn concurrent_snapshots_share_a_round_trip_and_each_sees_only_its_own_stamps() {
    use portico_cache::SharedGenerations as _;
    let server = RedisServer::start();
    let redis = client(&server);
    let generations = crate::RedisGenerations::new(redis.clone(), Duration::from_secs(60));
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
