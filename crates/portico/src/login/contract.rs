//! The [`SessionStore`] contract, run against the memory store and against Redis: create,
//! get, touch, compare-and-set replace, delete, expiry, and pending logins taken once.
//! Times are mostly synthetic (`now` is an argument of the store), plus one real wait
//! for the store's own expiry.

use std::sync::Arc;
use std::time::Duration;

use portico_upstream::SecretString;

use super::session::{PendingLogin, Session, SessionKey, SessionStore, random_token};
use crate::clock::unix_now;

fn session(now: u64, idle: u64, absolute: u64, access: &str) -> Session {
    Session {
        subject: "sub-1".into(),
        patient: "pat-1".into(),
        fhir_user: Some("Patient/pat-1".into()),
        scope: "openid patient/*.rs".into(),
        access_token: SecretString::new(access),
        access_expires_at: now + 300,
        refresh_token: Some(SecretString::new(format!("refresh-of-{access}"))),
        id_token: None,
        csrf_token: random_token(),
        created_at: now,
        last_seen: now,
        version: 0,
        idle_timeout: idle,
        absolute_expires_at: absolute,
    }
}

fn pending(expires_at: u64) -> PendingLogin {
    PendingLogin {
        state: random_token(),
        pkce_verifier: SecretString::new(random_token()),
        nonce: Some(random_token()),
        return_to: "/portal/home?tab=1".into(),
        expires_at,
    }
}

/// Every field, tokens included.
fn assert_same(a: &Session, b: &Session) {
    assert_eq!(
        (
            &a.subject,
            &a.patient,
            &a.fhir_user,
            &a.scope,
            &a.csrf_token
        ),
        (
            &b.subject,
            &b.patient,
            &b.fhir_user,
            &b.scope,
            &b.csrf_token
        )
    );
    assert_eq!(a.access_token.expose(), b.access_token.expose());
    assert_eq!(
        a.refresh_token.as_ref().map(SecretString::expose),
        b.refresh_token.as_ref().map(SecretString::expose)
    );
    assert_eq!(
        a.id_token.as_ref().map(SecretString::expose),
        b.id_token.as_ref().map(SecretString::expose)
    );
    assert_eq!(
        (
            a.access_expires_at,
            a.created_at,
            a.last_seen,
            a.version,
            a.idle_timeout,
            a.absolute_expires_at
        ),
        (
            b.access_expires_at,
            b.created_at,
            b.last_seen,
            b.version,
            b.idle_timeout,
            b.absolute_expires_at
        )
    );
}

/// Runs the whole suite; `make` builds a fresh, empty store.
pub async fn run(make: impl AsyncFn() -> Arc<dyn SessionStore>) {
    round_trip_and_expiry(make().await.as_ref()).await;
    touch_moves_only_the_idle_deadline(make().await.as_ref()).await;
    replace_is_compare_and_set(make().await.as_ref()).await;
    one_of_concurrent_replaces_wins(make().await).await;
    a_deleted_session_never_comes_back(make().await.as_ref()).await;
    pending_logins_are_taken_once(make().await).await;
    the_store_itself_forgets_expired_records(make().await.as_ref()).await;
}

pub async fn round_trip_and_expiry(store: &dyn SessionStore) {
    let now = unix_now();
    let key = SessionKey::of(&random_token());
    let mut s = session(now, 60, now + 600, "access-1");
    s.id_token = Some(SecretString::new("id-token"));
    store.put(&key, s.clone()).await.unwrap();
    assert_same(&store.get(&key, now).await.unwrap().expect("stored"), &s);
    assert!(
        store
            .get(&SessionKey::of("other"), now)
            .await
            .unwrap()
            .is_none()
    );
    // Past the idle deadline, or past the absolute one, it is not returned.
    assert!(store.get(&key, now + 60).await.unwrap().is_none());
    let key2 = SessionKey::of(&random_token());
    store
        .put(&key2, session(now, 600, now + 100, "access-2"))
        .await
        .unwrap();
    assert!(store.get(&key2, now + 99).await.unwrap().is_some());
    assert!(store.get(&key2, now + 100).await.unwrap().is_none());
}

pub async fn touch_moves_only_the_idle_deadline(store: &dyn SessionStore) {
    let now = unix_now();
    let key = SessionKey::of(&random_token());
    let old = session(now, 60, now + 600, "access-old");
    store.put(&key, old.clone()).await.unwrap();
    // Another request refreshes meanwhile.
    let mut refreshed = old.clone();
    refreshed.access_token = SecretString::new("access-new");
    refreshed.refresh_token = Some(SecretString::new("refresh-new"));
    assert_eq!(store.replace(&key, &refreshed).await.unwrap(), Some(1));
    // A touch by a request that still holds the old copy.
    let mut touched = old.clone();
    touched.last_seen = now + 50;
    assert!(store.touch(&key, &touched).await.unwrap());
    let stored = store.get(&key, now + 50).await.unwrap().expect("alive");
    assert_eq!(
        stored.access_token.expose(),
        "access-new",
        "tokens untouched"
    );
    assert_eq!(
        stored.refresh_token.as_ref().map(SecretString::expose),
        Some("refresh-new")
    );
    assert_eq!((stored.last_seen, stored.version), (now + 50, 1));
    // The idle deadline moved: alive past the first one.
    assert!(store.get(&key, now + 100).await.unwrap().is_some());
    // A late touch with an earlier time does not move it back.
    let mut late = old.clone();
    late.last_seen = now + 10;
    assert!(store.touch(&key, &late).await.unwrap());
    assert_eq!(
        store
            .get(&key, now + 100)
            .await
            .unwrap()
            .map(|s| s.last_seen),
        Some(now + 50)
    );
    // A touch of no session says so.
    assert!(
        !store
            .touch(&SessionKey::of("absent"), &touched)
            .await
            .unwrap()
    );
}

pub async fn replace_is_compare_and_set(store: &dyn SessionStore) {
    let now = unix_now();
    let key = SessionKey::of(&random_token());
    let v0 = session(now, 60, now + 600, "a0");
    store.put(&key, v0.clone()).await.unwrap();
    let mut first = v0.clone();
    first.access_token = SecretString::new("a1");
    first.last_seen = now + 5;
    assert_eq!(store.replace(&key, &first).await.unwrap(), Some(1));
    // A second writer with the same starting version loses, and writes nothing.
    let mut stale = v0.clone();
    stale.access_token = SecretString::new("revoked");
    assert_eq!(store.replace(&key, &stale).await.unwrap(), None);
    let stored = store.get(&key, now).await.unwrap().expect("alive");
    assert_eq!(stored.access_token.expose(), "a1");
    assert_eq!((stored.version, stored.last_seen), (1, now + 5));
    // From the current version, it wins.
    let mut second = stored.clone();
    second.access_token = SecretString::new("a2");
    second.scope = "patient/*.rs".into();
    assert_eq!(store.replace(&key, &second).await.unwrap(), Some(2));
    let stored = store.get(&key, now).await.unwrap().expect("alive");
    assert_same(
        &stored,
        &Session {
            version: 2,
            ..second
        },
    );
}

pub async fn one_of_concurrent_replaces_wins(store: Arc<dyn SessionStore>) {
    let now = unix_now();
    let key = SessionKey::of(&random_token());
    let v0 = session(now, 60, now + 600, "a0");
    store.put(&key, v0.clone()).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, mut mine) = (store.clone(), v0.clone());
            mine.access_token = SecretString::new(format!("a-{i}"));
            tokio::spawn(async move { (i, store.replace(&key, &mine).await.unwrap()) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let (i, Some(version)) = task.await.unwrap() {
            assert_eq!(version, 1);
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let stored = store.get(&key, now).await.unwrap().expect("alive");
    assert_eq!(stored.access_token.expose(), format!("a-{}", winners[0]));
}

pub async fn a_deleted_session_never_comes_back(store: &dyn SessionStore) {
    let now = unix_now();
    let key = SessionKey::of(&random_token());
    let s = session(now, 60, now + 600, "a0");
    store.put(&key, s.clone()).await.unwrap();
    store.delete(&key).await.unwrap();
    assert!(store.get(&key, now).await.unwrap().is_none());
    // A request that read it before the logout refreshes or touches it afterwards.
    assert_eq!(store.replace(&key, &s).await.unwrap(), None);
    assert!(!store.touch(&key, &s).await.unwrap());
    assert!(store.get(&key, now).await.unwrap().is_none());
    // Deleting what is not there is fine.
    store.delete(&key).await.unwrap();
}

pub async fn pending_logins_are_taken_once(store: Arc<dyn SessionStore>) {
    let now = unix_now();
    let key = SessionKey::of(&random_token());
    let login = pending(now + 60);
    store.put_pending(&key, login.clone()).await.unwrap();
    let taken = store.take_pending(&key, now).await.unwrap().expect("taken");
    assert_eq!(
        (&taken.state, taken.pkce_verifier.expose(), &taken.nonce),
        (&login.state, login.pkce_verifier.expose(), &login.nonce)
    );
    assert_eq!(
        (&taken.return_to, taken.expires_at),
        (&login.return_to, login.expires_at)
    );
    assert!(store.take_pending(&key, now).await.unwrap().is_none());
    // Expired: not returned (and gone).
    store.put_pending(&key, pending(now + 60)).await.unwrap();
    assert!(store.take_pending(&key, now + 60).await.unwrap().is_none());
    assert!(store.take_pending(&key, now).await.unwrap().is_none());
    // Pending logins and sessions do not mix.
    store.put_pending(&key, pending(now + 60)).await.unwrap();
    assert!(store.get(&key, now).await.unwrap().is_none());
    // Many callbacks at once: one gets it.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_pending(&key, now).await.unwrap().is_some() })
        })
        .collect();
    let mut taken = 0;
    for task in tasks {
        taken += usize::from(task.await.unwrap());
    }
    assert_eq!(taken, 1);
}

/// Without any `now` from the caller, an expired session and pending login are gone
/// (a Redis TTL, the memory store's own check).
pub async fn the_store_itself_forgets_expired_records(store: &dyn SessionStore) {
    let now = unix_now();
    let key = SessionKey::of(&random_token());
    store
        .put(&key, session(now, 1, now + 600, "a0"))
        .await
        .unwrap();
    store.put_pending(&key, pending(now + 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(store.get(&key, unix_now()).await.unwrap().is_none());
    assert!(
        store
            .take_pending(&key, unix_now())
            .await
            .unwrap()
            .is_none()
    );
}
