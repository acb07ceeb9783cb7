//! The [`Locks`] contract: mutual exclusion between two clients of one lock service,
//! independence of keys, and — for locks that expire — expiry and owner-only release.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::locks::Locks;

/// Whether held locks expire (a Redis lock does, so that a dead replica cannot hold
/// one forever; a process-local lock dies with its process instead).
#[derive(Debug, Clone, Copy)]
pub enum Expiry {
    Never,
    /// After this long; the clients wait longer than this for a lock.
    After(Duration),
}

/// Runs the whole suite on two clients `a` and `b` of the same lock service (for
/// Redis: two connections; for memory: two handles on one map).
pub async fn run(a: Arc<dyn Locks>, b: Arc<dyn Locks>, expiry: Expiry) {
    exclusive_across_clients(a.as_ref(), b.as_ref()).await;
    keys_are_independent(a.as_ref(), b.as_ref()).await;
    no_two_holders_under_contention(a.clone(), b.clone()).await;
    if let Expiry::After(ttl) = expiry {
        expires_and_only_the_owner_releases(a.as_ref(), b.as_ref(), ttl).await;
    }
}

/// While `a` holds a key, `b` waits; once `a` lets go, `b` gets it.
pub async fn exclusive_across_clients(a: &dyn Locks, b: &dyn Locks) {
    let held = a.lock("slot:s1").await.expect("a locks");
    let blocked = tokio::time::timeout(Duration::from_millis(150), b.lock("slot:s1")).await;
    assert!(blocked.is_err(), "b must wait while a holds the lock");
    let (_, taken) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held);
        },
        tokio::time::timeout(Duration::from_secs(3), b.lock("slot:s1"))
    );
    let guard = taken
        .expect("b gets the lock soon after a releases it")
        .expect("b locks");
    drop(guard);
}

/// Different keys never wait for each other.
pub async fn keys_are_independent(a: &dyn Locks, b: &dyn Locks) {
    let _one = a.lock("refill:1").await.expect("a locks");
    let other = tokio::time::timeout(Duration::from_millis(500), b.lock("refill:12"))
        .await
        .expect("another key is free");
    drop(other.expect("b locks"));
    // The same key on the same client waits too (locks are not re-entrant).
    let same = tokio::time::timeout(Duration::from_millis(100), a.lock("refill:1")).await;
    assert!(same.is_err());
}

/// Many tasks on both clients taking one key: never two inside at once, and all get
/// their turn.
pub async fn no_two_holders_under_contention(a: Arc<dyn Locks>, b: Arc<dyn Locks>) {
    let inside = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let locks = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (inside, done) = (inside.clone(), done.clone());
            tokio::spawn(async move {
                let _guard = locks.lock("thread:t").await.expect("locks");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.store(false, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("every task gets its turn")
            .expect("no task panicked");
    }
    assert_eq!(done.load(Ordering::SeqCst), 12);
}

/// A lock whose holder never lets go (a crashed replica) expires; when the late
/// holder finally drops its guard, the lock someone else took since is not released.
pub async fn expires_and_only_the_owner_releases(a: &dyn Locks, b: &dyn Locks, ttl: Duration) {
    let stale = a.lock("pay:acc").await.expect("a locks");
    let taken = tokio::time::timeout(ttl * 10 + Duration::from_secs(2), b.lock("pay:acc"))
        .await
        .expect("the lock expires")
        .expect("b locks");
    // The first holder wakes up and lets go of a lock it no longer owns.
    drop(stale);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::time::timeout(ttl / 2, a.lock("pay:acc")).await;
    assert!(third.is_err(), "b still holds the lock");
    drop(taken);
    let again = tokio::time::timeout(Duration::from_secs(3), a.lock("pay:acc"))
        .await
        .expect("released by its owner")
        .expect("a locks");
    drop(again);
}
