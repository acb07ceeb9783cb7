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
