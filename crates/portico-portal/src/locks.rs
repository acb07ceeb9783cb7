//! Per-object locks: two actions on one object (the same slot, prescription, account,
//! thread, or the same login session's refresh) run one after the other, so that the
//! second re-reads what the first changed.
//!
//! The EHR stays the final judge of conflicts (a slot booked twice is refused there);
//! a lock only spares it the obvious races. [`Locks`] has two implementations proven by
//! one contract suite (`crate::contract::locks`): [`MemoryLocks`] for a single node
//! (exact, process-local) and a Redis one (`portico-redis`) for replicas, whose locks
//! expire so that a crashed replica cannot hold one forever.
//!
//! Invariants:
//! - a [`LockGuard`] holds its lock until dropped, and dropping it releases it (a Redis
//!   lock is released in the background, and only if this guard still owns it);
//! - a lock that cannot be taken is an error ([`StateError`]), never a silent "go
//!   ahead": the caller answers 503 or 409 without acting.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::StateError;

/// Where per-object locks live. Keys are the caller's (`slot:<id>`, `refill:<id>`, …);
/// implementations must not show them to anyone who can list the store.
#[async_trait::async_trait]
pub trait Locks: Send + Sync + fmt::Debug {
    /// Waits for the lock on `key` and holds it until the guard is dropped. Fails when
    /// the store cannot answer, or (for locks that bound their wait) when another
    /// holder keeps it too long.
    async fn lock(&self, key: &str) -> Result<LockGuard, StateError>;
}

/// A held lock; dropping it releases it.
pub struct LockGuard {
    _held: Box<dyn Any + Send + Sync>,
}

impl LockGuard {
    /// A guard over whatever an implementation needs to keep alive while the lock is
    /// held (and whose `Drop` releases it).
    pub fn new(held: impl Any + Send + Sync) -> LockGuard {
        LockGuard {
            _held: Box::new(held),
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Process-local locks: one tokio mutex per key, kept in a map only while someone
/// holds or waits for it (so the map is bounded by the requests in flight, and a held
/// lock is never evicted).
#[derive(Debug, Default, Clone)]
pub struct MemoryLocks {
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl MemoryLocks {
    pub fn new() -> MemoryLocks {
        MemoryLocks::default()
    }

    /// Keys with a holder or a waiter.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a [`MemoryLocks`] guard holds: the mutex's guard, and what it needs to take
/// the key out of the map when nobody else wants it.
struct MemoryHeld {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    mutex: Arc<tokio::sync::Mutex<()>>,
    key: String,
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Drop for MemoryHeld {
    fn drop(&mut self) {
        // Unlock first, then forget the key if only the map and this guard know the
        // mutex: a waiter clones it from the map under the map's lock, so the count
        // read under the same lock cannot miss one.
        drop(self.guard.take());
        let mut map = self.map.lock();
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::ptr_eq(m, &self.mutex))
            && Arc::strong_count(&self.mutex) == 2
        {
            map.remove(&self.key);
        }
    }
}

#[async_trait::async_trait]
impl Locks for MemoryLocks {
    async fn lock(&self, key: &str) -> Result<LockGuard, StateError> {
        let mutex = self.map.lock().entry(key.to_owned()).or_default().clone();
        // If this future is dropped while waiting, the clone is dropped with it and the
        // holder's guard finds the count it expects.
        let mut held = MemoryHeld {
            guard: None,
            mutex: mutex.clone(),
            key: key.to_owned(),
            map: self.map.clone(),
        };
        held.guard = Some(mutex.lock_owned().await);
        Ok(LockGuard::new(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_locks_pass_the_contract() {
        let locks = MemoryLocks::new();
        crate::contract::locks::run(
            Arc::new(locks.clone()),
            Arc::new(locks.clone()),
            crate::contract::locks::Expiry::Never,
        )
        .await;
        assert!(locks.is_empty(), "released locks leave nothing behind");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_nothing_behind() {
        let locks = MemoryLocks::new();
        let held = locks.lock("k").await.unwrap();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("k")).await;
        assert!(waiting.is_err(), "the lock is held");
        drop(held);
        assert!(locks.is_empty());
        let again = locks.lock("k").await.unwrap();
        drop(again);
        assert!(locks.is_empty());
    }
}
