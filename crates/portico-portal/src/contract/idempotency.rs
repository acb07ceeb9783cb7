//! The [`IdempotencyStore`] contract: begin / complete / replay / mismatch /
//! in progress / abandon, claims, and the expiry of running and final records.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::idempotency::{Begin, Claim, IdempotencyStore, StoredResponse};

/// The lifetimes a store under test is built with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a final answer is remembered.
    pub ttl: Duration,
    /// How long a running record lasts without its owner.
    pub running_ttl: Duration,
}

fn started(begin: Begin) -> Claim {
    match begin {
        Begin::Started(claim) => claim,
        other => panic!("expected Started, got {other:?}"),
    }
}

fn answer(id: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: json!({"id": id, "text": "Grüße, \"quoted\"\nline", "nested": {"a": [1, 2.5, null, true]}}),
    }
}

/// Runs the whole suite. `make` builds a fresh, empty store with the given lifetimes;
/// stores it builds must not see each other's records.
pub async fn run(make: impl AsyncFn(Settings) -> Arc<dyn IdempotencyStore>) {
    let long = Settings {
        ttl: Duration::from_secs(600),
        running_ttl: Duration::from_secs(600),
    };
    begin_replay_mismatch_in_progress(make(long).await.as_ref()).await;
    abandon_frees_the_key(make(long).await.as_ref()).await;
    only_the_claim_completes_or_abandons(make(long).await.as_ref()).await;
    one_of_many_concurrent_begins_starts(make(long).await).await;
    let short_running = Settings {
        ttl: Duration::from_secs(600),
        running_ttl: Duration::from_millis(300),
    };
    a_dead_owners_running_record_expires(make(short_running).await.as_ref()).await;
    let short = Settings {
        ttl: Duration::from_millis(500),
        running_ttl: Duration::from_secs(600),
    };
    final_answers_expire(make(short).await.as_ref()).await;
}

/// The memory store's behaviour, which every store has: first use starts, a second
/// use with the same body while running is in progress, with another body a mismatch,
/// after completion a replay; scopes are independent.
pub async fn begin_replay_mismatch_in_progress(store: &dyn IdempotencyStore) {
    // Scopes and keys carry newlines and any visible ASCII.
    let (scope, other_scope) = ("sub-1\npat-1", "sub-1\npat-12");
    let key = "k:1/ä?*";
    let claim = started(store.begin(scope, key, "f1").await.unwrap());
    assert_eq!(store.begin(scope, key, "f1").await, Ok(Begin::InProgress));
    assert_eq!(store.begin(scope, key, "f2").await, Ok(Begin::Mismatch));
    let other = started(store.begin(other_scope, key, "f1").await.unwrap());
    assert_ne!(claim, other, "claims are unique");
    let first = answer("a1");
    store
        .complete(scope, key, &claim, first.clone())
        .await
        .unwrap();
    assert_eq!(
        store.begin(scope, key, "f1").await,
        Ok(Begin::Replay(first.clone()))
    );
    // Replayed as often as asked, and still refused for another body.
    assert_eq!(
        store.begin(scope, key, "f1").await,
        Ok(Begin::Replay(first))
    );
    assert_eq!(store.begin(scope, key, "f2").await, Ok(Begin::Mismatch));
    // The other scope is still running, untouched by the first one's completion.
    assert_eq!(
        store.begin(other_scope, key, "f1").await,
        Ok(Begin::InProgress)
    );
    // A completed key is not abandoned by a late abandon.
    store.abandon(scope, key, &claim).await.unwrap();
    assert!(matches!(
        store.begin(scope, key, "f1").await,
        Ok(Begin::Replay(_))
    ));
}

/// A failure without a final answer forgets the key: a retry may use it, even with
/// another body.
pub async fn abandon_frees_the_key(store: &dyn IdempotencyStore) {
    let claim = started(store.begin("s", "k", "f1").await.unwrap());
    store.abandon("s", "k", &claim).await.unwrap();
    let again = started(store.begin("s", "k", "f9").await.unwrap());
    store.complete("s", "k", &again, answer("b")).await.unwrap();
    assert_eq!(
        store.begin("s", "k", "f9").await,
        Ok(Begin::Replay(answer("b")))
    );
}

/// Another claim (a forged one, or the previous owner's) neither completes nor
/// abandons a running record.
pub async fn only_the_claim_completes_or_abandons(store: &dyn IdempotencyStore) {
    let claim = started(store.begin("s", "k", "f").await.unwrap());
    let forged = Claim::random();
    store
        .complete("s", "k", &forged, answer("x"))
        .await
        .unwrap();
    assert_eq!(store.begin("s", "k", "f").await, Ok(Begin::InProgress));
    store.abandon("s", "k", &forged).await.unwrap();
    assert_eq!(store.begin("s", "k", "f").await, Ok(Begin::InProgress));
    store.complete("s", "k", &claim, answer("y")).await.unwrap();
    assert_eq!(
        store.begin("s", "k", "f").await,
        Ok(Begin::Replay(answer("y")))
    );
    // Completing a key nobody started stores nothing.
    store
        .complete("s", "never", &claim, answer("z"))
        .await
        .unwrap();
    assert!(matches!(
        store.begin("s", "never", "f").await,
        Ok(Begin::Started(_))
    ));
}

/// Of many requests with one key at once, exactly one runs.
pub async fn one_of_many_concurrent_begins_starts(store: Arc<dyn IdempotencyStore>) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.begin("s", "race", "f").await })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        match task.await.expect("task").expect("store answers") {
            Begin::Started(_) => started += 1,
            Begin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1, "exactly one request runs");
}

/// A running record whose owner died (never completed nor abandoned) expires after
/// the running TTL; the late owner can then no longer complete it.
pub async fn a_dead_owners_running_record_expires(store: &dyn IdempotencyStore) {
    let dead = started(store.begin("s", "k", "f").await.unwrap());
    assert_eq!(store.begin("s", "k", "f").await, Ok(Begin::InProgress));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let live = started(store.begin("s", "k", "f").await.unwrap());
    // The first owner wakes up: its answer does not replace the new run's record.
    store
        .complete("s", "k", &dead, answer("late"))
        .await
        .unwrap();
    assert_eq!(store.begin("s", "k", "f").await, Ok(Begin::InProgress));
    store.abandon("s", "k", &dead).await.unwrap();
    assert_eq!(store.begin("s", "k", "f").await, Ok(Begin::InProgress));
    store
        .complete("s", "k", &live, answer("live"))
        .await
        .unwrap();
    assert_eq!(
        store.begin("s", "k", "f").await,
        Ok(Begin::Replay(answer("live")))
    );
    // A final answer does not expire with the running TTL.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        store.begin("s", "k", "f").await,
        Ok(Begin::Replay(answer("live")))
    );
}

/// Final answers are remembered for the store's TTL, then forgotten.
pub async fn final_answers_expire(store: &dyn IdempotencyStore) {
    let claim = started(store.begin("s", "k", "f").await.unwrap());
    store.complete("s", "k", &claim, answer("a")).await.unwrap();
    assert_eq!(
        store.begin("s", "k", "f").await,
        Ok(Begin::Replay(answer("a")))
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(matches!(
        store.begin("s", "k", "other").await,
        Ok(Begin::Started(_))
    ));
}
