//! Behaviour of the cache against a fake upstream that counts calls, numbers its
//! answers (`{"call":N}`) and can be slowed down, made to fail or to honour ETags.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use portico_upstream::{
    CachePartition, FhirRequest, FhirResponse, FhirUpstream, SecretString, UpstreamError,
};

use crate::{CacheConfig, CachedUpstream};

#[derive(Debug, Default)]
struct Fake {
    calls: AtomicUsize,
    /// Delay of reads (writes answer at once).
    delay: Mutex<Duration>,
    failure: Mutex<Option<UpstreamError>>,
    /// When set, reads carry this ETag and a matching `If-None-Match` gets a 304.
    etag: Mutex<Option<String>>,
    if_none_match: Mutex<Vec<Option<String>>>,
    /// Pads bodies to at least this many bytes.
    body_len: Mutex<usize>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake::default())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn fail_with(&self, error: Option<UpstreamError>) {
        *self.failure.lock() = error;
    }
}

#[async_trait::async_trait]
impl FhirUpstream for Fake {
    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if !request.is_read() {
            return match self.failure.lock().clone() {
                Some(e) => Err(e),
                None => Ok(FhirResponse::new(201, "")),
            };
        }
        self.if_none_match
            .lock()
            .push(request.if_none_match.clone());
        let delay = *self.delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(e) = self.failure.lock().clone() {
            return Err(e);
        }
        let etag = self.etag.lock().clone();
        if let (Some(etag), Some(inm)) = (&etag, &request.if_none_match)
            && etag == inm
        {
            return Ok(FhirResponse::new(304, "").with_etag(etag.clone()));
        }
        let mut body = format!("{{\"call\":{n}}}");
        let pad = self.body_len.lock().saturating_sub(body.len());
        body.push_str(&" ".repeat(pad));
        let response = FhirResponse::new(200, body);
        Ok(match etag {
            Some(etag) => response.with_etag(etag),
            None => response,
        })
    }
}

type Cached = CachedUpstream<Arc<Fake>>;

fn cache(fake: &Arc<Fake>) -> Cached {
    CachedUpstream::new(fake.clone(), CacheConfig::default())
}

fn cache_with(fake: &Arc<Fake>, config: CacheConfig) -> Cached {
    CachedUpstream::new(fake.clone(), config)
}

fn part(patient: &str) -> CachePartition {
    CachePartition::new([patient], "scopes-1")
}

fn appointments(patient: &str) -> FhirRequest {
    FhirRequest::search("Appointment", [("patient", patient), ("_count", "50")])
        .with_partition(part(patient))
}

fn observations(patient: &str) -> FhirRequest {
    FhirRequest::search("Observation", [("patient", patient)]).with_partition(part(patient))
}

fn slots() -> FhirRequest {
    FhirRequest::search("Slot", [("status", "free")])
}

async fn body(c: &Cached, request: FhirRequest) -> String {
    let response = c.execute(request).await.unwrap();
    String::from_utf8(response.body.to_vec())
        .unwrap()
        .trim_end()
        .to_owned()
}

fn call(n: usize) -> String {
    format!("{{\"call\":{n}}}")
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_cold_reads_make_one_upstream_call() {
    let fake = Fake::new();
    *fake.delay.lock() = Duration::from_millis(50);
    *fake.body_len.lock() = 2048; // stored compressed
    let c = Arc::new(cache(&fake));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { body(&c, observations("a")).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), call(1));
    }
    assert_eq!(fake.calls(), 1);
    let stats = c.stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.hits + stats.misses, 1000);
    assert!(stats.single_flight_joins > 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn errors_are_shared_by_waiters_and_not_cached() {
    let fake = Fake::new();
    *fake.delay.lock() = Duration::from_millis(50);
    fake.fail_with(Some(UpstreamError::Timeout));
    let c = cache(&fake);
    let (a, b, d) = tokio::join!(
        c.execute(observations("a")),
        c.execute(observations("a")),
        c.execute(observations("a"))
    );
    for r in [a, b, d] {
        assert!(matches!(r, Err(UpstreamError::Timeout)), "{r:?}");
    }
    assert_eq!(fake.calls(), 1);
    fake.fail_with(None);
    assert_eq!(body(&c, observations("a")).await, call(2));
}

#[tokio::test]
async fn partitions_and_tokens_never_share_entries() {
    let fake = Fake::new();
    let c = cache(&fake);
    // The same search by two patients (the gateway narrows both to one patient id).
    let search = |p: &str| {
        FhirRequest::search("Observation", [("category", "laboratory")]).with_partition(part(p))
    };
    assert_eq!(body(&c, search("a")).await, call(1));
    assert_eq!(body(&c, search("b")).await, call(2));
    assert_eq!(body(&c, search("a")).await, call(1));
    assert_eq!(body(&c, search("b")).await, call(2));
    // Same patient, different scopes.
    let narrow = FhirRequest::search("Observation", [("category", "laboratory")])
        .with_partition(CachePartition::new(["a"], "scopes-2"));
    assert_eq!(body(&c, narrow).await, call(3));
    // Passthrough: same partition, different tokens.
    let token = |t: &str| search("a").with_bearer(SecretString::new(t));
    assert_eq!(body(&c, token("token-a")).await, call(4));
    assert_eq!(body(&c, token("token-b")).await, call(5));
    assert_eq!(body(&c, token("token-a")).await, call(4));
    assert_eq!(fake.calls(), 5);

    // Patient data without a partition is never cached; shared reference data is.
    let unpartitioned = || FhirRequest::read("Observation", "o1");
    assert_eq!(body(&c, unpartitioned()).await, call(6));
    assert_eq!(body(&c, unpartitioned()).await, call(7));
    let practitioner = || FhirRequest::read("Practitioner", "dr1");
    assert_eq!(body(&c, practitioner()).await, call(8));
    assert_eq!(body(&c, practitioner()).await, call(8));
    assert_eq!(c.stats().bypasses, 2);
}

#[tokio::test]
async fn a_write_invalidates_what_it_changes_before_returning() {
    let fake = Fake::new();
    let c = cache(&fake);
    assert_eq!(body(&c, appointments("a")).await, call(1));
    assert_eq!(body(&c, appointments("b")).await, call(2));
    assert_eq!(body(&c, slots()).await, call(3));
    assert_eq!(body(&c, observations("a")).await, call(4));
    let proxy = FhirRequest::search("Appointment", [("patient", "a")])
        .with_partition(CachePartition::new(["a", "b"], "proxy"));
    assert_eq!(body(&c, proxy.clone()).await, call(5));

    let booking = FhirRequest::create("Appointment", "{}").with_partition(part("a"));
    assert_eq!(c.execute(booking).await.unwrap().status, 201); // call 6

    assert_eq!(body(&c, appointments("a")).await, call(7));
    assert_eq!(body(&c, proxy).await, call(8), "partitions naming A too");
    assert_eq!(
        body(&c, slots()).await,
        call(9),
        "booking changes shared slots"
    );
    assert_eq!(body(&c, appointments("b")).await, call(2), "B untouched");
    assert_eq!(
        body(&c, observations("a")).await,
        call(4),
        "other types untouched"
    );

    // A refill request as a Task invalidates medication requests.
    let meds =
        || FhirRequest::search("MedicationRequest", [("patient", "a")]).with_partition(part("a"));
    assert_eq!(body(&c, meds()).await, call(10));
    let _ = c
        .execute(FhirRequest::create("Task", "{}").with_partition(part("a")))
        .await;
    assert_eq!(body(&c, meds()).await, call(12));
    // Even a failed write invalidates: its outcome is unknown.
    fake.fail_with(Some(UpstreamError::Timeout));
    let r = c
        .execute(FhirRequest::update("Observation", "o1", "{}").with_partition(part("a")))
        .await;
    assert!(r.is_err());
    fake.fail_with(None);
    assert_eq!(body(&c, observations("a")).await, call(14));
}

#[tokio::test(start_paused = true)]
async fn a_read_racing_a_write_is_neither_joined_nor_served_after_it() {
    let fake = Fake::new();
    *fake.delay.lock() = Duration::from_millis(100);
    let c = Arc::new(cache(&fake));
    let early = tokio::spawn({
        let c = c.clone();
        async move { body(&c, appointments("a")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let write = FhirRequest::create("Appointment", "{}").with_partition(part("a"));
    c.execute(write).await.unwrap(); // call 2
    // Started after the write: must not join the early read's flight.
    *fake.delay.lock() = Duration::from_millis(10);
    assert_eq!(body(&c, appointments("a")).await, call(3));
    // The early read finishes last and stores its pre-write answer...
    assert_eq!(early.await.unwrap(), call(1));
    // ...which is never served after the write.
    assert_eq!(body(&c, appointments("a")).await, call(4));
    assert_eq!(body(&c, appointments("a")).await, call(4));
    assert_eq!(fake.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_type_ttl() {
    let fake = Fake::new();
    let c = cache(&fake);
    assert_eq!(body(&c, observations("a")).await, call(1));
    assert_eq!(body(&c, slots()).await, call(2));
    advance(14).await;
    assert_eq!(body(&c, slots()).await, call(2));
    advance(2).await;
    assert_eq!(body(&c, slots()).await, call(3), "slots live 15 s");
    assert_eq!(body(&c, observations("a")).await, call(1));
    advance(45).await;
    assert_eq!(
        body(&c, observations("a")).await,
        call(4),
        "patient data 60 s"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_read_with_an_etag_is_revalidated() {
    let fake = Fake::new();
    *fake.etag.lock() = Some("W/\"1\"".to_owned());
    let c = cache(&fake);
    let read = || FhirRequest::read("Patient", "a").with_partition(part("a"));
    assert_eq!(body(&c, read()).await, call(1));
    advance(61).await;
    let r = c.execute(read()).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, call(1).as_bytes());
    assert_eq!(r.stale_age, None);
    assert_eq!(fake.calls(), 2);
    assert_eq!(
        *fake.if_none_match.lock(),
        [None, Some("W/\"1\"".to_owned())]
    );
    assert_eq!(c.stats().revalidations, 1);
    // Revalidated means fresh again.
    assert_eq!(body(&c, read()).await, call(1));
    assert_eq!(fake.calls(), 2);
    // A changed resource comes back in full.
    *fake.etag.lock() = Some("W/\"2\"".to_owned());
    advance(61).await;
    assert_eq!(body(&c, read()).await, call(3));
}

#[tokio::test(start_paused = true)]
async fn stale_is_served_only_within_the_bound_and_on_retryable_errors() {
    let fake = Fake::new();
    let c = cache(&fake); // 60 s TTL, 300 s stale bound
    assert_eq!(body(&c, observations("a")).await, call(1));
    advance(61).await;
    for error in [
        UpstreamError::Timeout,
        UpstreamError::Server {
            status: 500,
            outcome: None,
        },
        UpstreamError::CircuitOpen { retry_after: None },
        UpstreamError::Connect {
            detail: "refused".into(),
        },
    ] {
        fake.fail_with(Some(error));
        let r = c.execute(observations("a")).await.unwrap();
        assert_eq!(r.body, call(1).as_bytes());
        assert!(r.stale_age.unwrap() >= Duration::from_secs(61));
    }
    assert_eq!(c.stats().stale_serves, 4);
    // A verdict is passed on, not papered over.
    fake.fail_with(Some(UpstreamError::NotFound { outcome: None }));
    assert!(matches!(
        c.execute(observations("a")).await,
        Err(UpstreamError::NotFound { .. })
    ));
    // Past the bound, the failure shows.
    fake.fail_with(Some(UpstreamError::Timeout));
    advance(300).await;
    assert!(matches!(
        c.execute(observations("a")).await,
        Err(UpstreamError::Timeout)
    ));
}

#[tokio::test(start_paused = true)]
async fn data_invalidated_by_a_write_is_never_served_stale() {
    let fake = Fake::new();
    let c = cache(&fake);
    assert_eq!(body(&c, appointments("a")).await, call(1));
    c.execute(FhirRequest::create("Appointment", "{}").with_partition(part("a")))
        .await
        .unwrap();
    fake.fail_with(Some(UpstreamError::Timeout));
    assert!(matches!(
        c.execute(appointments("a")).await,
        Err(UpstreamError::Timeout)
    ));
}

#[tokio::test]
async fn the_byte_bound_evicts_and_oversized_bodies_are_not_stored() {
    let fake = Fake::new();
    *fake.body_len.lock() = 1000;
    let config = CacheConfig {
        max_bytes: 20_000,
        ..CacheConfig::default()
    };
    let c = cache_with(&fake, config);
    for i in 0..100 {
        let _ = body(&c, FhirRequest::read("Practitioner", format!("dr{i}"))).await;
    }
    c.run_pending_tasks().await;
    let stats = c.stats();
    assert!(stats.bytes <= 20_000, "{stats:?}");
    assert!(stats.bytes > 0, "{stats:?}");
    assert!(stats.entries < 100, "{stats:?}");
    assert!(stats.evictions > 0, "{stats:?}");

    let fake = Fake::new();
    *fake.body_len.lock() = 1000;
    let config = CacheConfig {
        max_entry_bytes: 500,
        ..CacheConfig::default()
    };
    let c = cache_with(&fake, config);
    let _ = body(&c, FhirRequest::read("Practitioner", "big")).await;
    let _ = body(&c, FhirRequest::read("Practitioner", "big")).await;
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn compressed_entries_weigh_less_and_every_path_serves_the_whole_body() {
    let padded = |n: usize| {
        let mut body = call(n);
        body.push_str(&" ".repeat(8192 - body.len()));
        body
    };
    for compress in [true, false] {
        let fake = Fake::new();
        *fake.body_len.lock() = 8192;
        *fake.etag.lock() = Some("W/\"1\"".to_owned());
        let c = cache_with(
            &fake,
            CacheConfig {
                compress,
                ..CacheConfig::default()
            },
        );
        let read = || FhirRequest::read("Patient", "a").with_partition(part("a"));
        let whole = |r: FhirResponse| String::from_utf8(r.body.to_vec()).unwrap();

        let miss = c.execute(read()).await.unwrap();
        assert!(miss.derived.is_none());
        assert_eq!(whole(miss), padded(1), "miss, compress={compress}");
        let hit = c.execute(read()).await.unwrap();
        assert!(hit.derived.is_some());
        assert_eq!(whole(hit), padded(1), "hit, compress={compress}");
        c.run_pending_tasks().await;
        let weight = c.stats().bytes;
        if compress {
            assert!(weight < 2048, "compressed weight {weight}");
        } else {
            assert!(weight > 8192, "plain weight {weight}");
        }

        // Expired: revalidated by a 304, the entry is served whole and weighs the same.
        advance(61).await;
        let revalidated = c.execute(read()).await.unwrap();
        assert_eq!(
            whole(revalidated),
            padded(1),
            "revalidated, compress={compress}"
        );
        assert_eq!(c.stats().revalidations, 1);
        c.run_pending_tasks().await;
        assert_eq!(c.stats().bytes, weight);
        assert_eq!(whole(c.execute(read()).await.unwrap()), padded(1));

        // Expired again and the EHR fails: the stale serve is whole too.
        advance(61).await;
        fake.fail_with(Some(UpstreamError::Timeout));
        let stale = c.execute(read()).await.unwrap();
        assert!(stale.stale_age.is_some());
        assert_eq!(whole(stale), padded(1), "stale, compress={compress}");
        assert_eq!(fake.calls(), 3);
    }
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_stored_body_is_a_miss_and_never_revalidated() {
    let fake = Fake::new();
    *fake.body_len.lock() = 2048;
    *fake.etag.lock() = Some("W/\"1\"".to_owned());
    let c = cache(&fake);
    let read = || FhirRequest::read("Patient", "a").with_partition(part("a"));
    assert_eq!(body(&c, read()).await, call(1));
    c.make_bodies_unreadable().await;
    // Fresh but unreadable: refetched, unconditionally (a 304 would stand for nothing).
    assert_eq!(body(&c, read()).await, call(2));
    assert_eq!(*fake.if_none_match.lock(), [None, None]);
    // The refetch replaced the entry: a hit again.
    assert_eq!(body(&c, read()).await, call(2));
    assert_eq!(fake.calls(), 2);
    // Expired and unreadable while the EHR fails: an error, not an empty stale body.
    c.make_bodies_unreadable().await;
    advance(61).await;
    fake.fail_with(Some(UpstreamError::Timeout));
    assert!(matches!(
        c.execute(read()).await,
        Err(UpstreamError::Timeout)
    ));
    assert_eq!(c.stats().stale_serves, 0);
}

#[tokio::test]
async fn invalidate_patient_reaches_every_partition_naming_the_patient() {
    let fake = Fake::new();
    let c = cache(&fake);
    let proxy = || observations("a").with_partition(CachePartition::new(["a", "b"], "proxy"));
    assert_eq!(body(&c, observations("a")).await, call(1));
    assert_eq!(body(&c, proxy()).await, call(2));
    assert_eq!(body(&c, observations("b")).await, call(3));
    c.invalidate_patient("a", &["Observation"]).await;
    assert_eq!(body(&c, observations("a")).await, call(4));
    assert_eq!(body(&c, proxy()).await, call(5));
    assert_eq!(body(&c, observations("b")).await, call(3));
    c.invalidate_patient("b", &[]).await;
    assert_eq!(body(&c, observations("b")).await, call(6));
    c.invalidate_all().await;
    assert_eq!(body(&c, observations("a")).await, call(7));
}

#[tokio::test]
async fn searches_with_includes_are_invalidated_by_writes_of_what_they_include() {
    let fake = Fake::new();
    let c = cache(&fake);
    let with_include = || {
        FhirRequest::search(
            "MedicationRequest",
            [
                ("patient", "a"),
                ("_include", "MedicationRequest:medication"),
            ],
        )
        .with_partition(part("a"))
    };
    let unknown_include = || {
        FhirRequest::search(
            "MedicationRequest",
            [("patient", "a"), ("_include", "MedicationRequest:reason")],
        )
        .with_partition(part("a"))
    };
    assert_eq!(body(&c, with_include()).await, call(1));
    assert_eq!(body(&c, unknown_include()).await, call(2));
    // A Condition can be neither a match nor an included Medication...
    c.execute(FhirRequest::update("Condition", "c1", "{}").with_partition(part("a")))
        .await
        .unwrap(); // call 3
    assert_eq!(body(&c, with_include()).await, call(1), "kept");
    // ...but an include the gateway cannot place may be anything.
    assert_eq!(body(&c, unknown_include()).await, call(4));
    // A write of an included type invalidates, for everyone (Medication is shared).
    c.execute(FhirRequest::update("Medication", "m1", "{}"))
        .await
        .unwrap(); // call 5
    assert_eq!(body(&c, with_include()).await, call(6));
    // And so does a write of the searched type.
    c.execute(FhirRequest::create("MedicationRequest", "{}").with_partition(part("a")))
        .await
        .unwrap(); // call 7
    assert_eq!(body(&c, with_include()).await, call(8));
}

#[tokio::test]
async fn a_disabled_cache_passes_everything_through() {
    let fake = Fake::new();
    let c = cache_with(
        &fake,
        CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        },
    );
    assert_eq!(body(&c, observations("a")).await, call(1));
    assert_eq!(body(&c, observations("a")).await, call(2));
}

#[tokio::test(start_paused = true)]
async fn hits_share_one_derived_slot_that_dies_with_the_entry() {
    let fake = Fake::new();
    *fake.etag.lock() = Some("W/\"1\"".to_owned());
    let c = cache(&fake);
    let read = || FhirRequest::read("Observation", "o1").with_partition(part("a"));
    let miss = c.execute(read()).await.unwrap();
    assert!(miss.derived.is_none(), "a miss carries no slot");
    let first = c.execute(read()).await.unwrap();
    let slot = first.derived.expect("a hit carries the entry's slot");
    slot.set("principal-1".to_owned(), Arc::new(7_u32), 4);
    let second = c.execute(read()).await.unwrap();
    assert_eq!(
        second.derived.unwrap().get::<u32>("principal-1").as_deref(),
        Some(&7),
        "every hit on the entry shares it"
    );
    let other = c
        .execute(FhirRequest::read("Observation", "o1").with_partition(part("b")))
        .await
        .unwrap();
    assert!(other.derived.is_none(), "another partition, another entry");

    // An invalidating write: the next entry starts empty.
    let _ = c
        .execute(FhirRequest::update("Observation", "o1", "{}").with_partition(part("a")))
        .await;
    let _ = c.execute(read()).await.unwrap();
    let after_write = c.execute(read()).await.unwrap();
    assert!(
        after_write
            .derived
            .unwrap()
            .get::<u32>("principal-1")
            .is_none()
    );

    // Expiry and revalidation (304): a new entry, an empty slot.
    c.execute(read()).await.unwrap().derived.unwrap().set(
        "principal-1".to_owned(),
        Arc::new(8_u32),
        4,
    );
    advance(3600).await;
    let revalidated = c.execute(read()).await.unwrap();
    assert!(revalidated.derived.is_none(), "the refetch is a miss");
    let hit = c.execute(read()).await.unwrap();
    assert!(hit.derived.unwrap().get::<u32>("principal-1").is_none());
}

/// A shared generation store in memory, standing for Redis: one clock, a floor and
/// stamps, as the gateway's Redis implementation keeps them; it can be made to fail or
/// to lose everything (a restart without persistence).
/// The clock, the floor and the stamps.
type SharedState = (u64, u64, std::collections::HashMap<String, u64>);

#[derive(Debug)]
struct SharedFake {
    state: Mutex<Option<SharedState>>,
    /// The "time" a fresh clock starts from (grows like a clock in microseconds).
    epoch: AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

impl SharedFake {
    fn new() -> Arc<SharedFake> {
        Arc::new(SharedFake {
            state: Mutex::new(None),
            epoch: AtomicUsize::new(1_000),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut SharedState) -> T,
    ) -> Result<T, crate::SharedError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(crate::SharedError("down".to_owned()));
        }
        let mut state = self.state.lock();
        let state = state.get_or_insert_with(|| {
            let start = self.epoch.fetch_add(1_000_000, Ordering::SeqCst) as u64;
            (start, start, std::collections::HashMap::new())
        });
        Ok(f(state))
    }

    /// Loses the clock, the floor and every stamp.
    fn restart_empty(&self) {
        *self.state.lock() = None;
    }
}

#[async_trait::async_trait]
impl crate::SharedGenerations for SharedFake {
    async fn snapshot(&self, keys: &[String]) -> Result<crate::Snapshot, crate::SharedError> {
        self.with_state(|(clock, floor, stamps)| crate::Snapshot {
            clock: *clock,
            newest: keys
                .iter()
                .filter_map(|k| stamps.get(k))
                .fold(*floor, |a, b| a.max(*b)),
        })
    }

    async fn stamp(&self, keys: &[String]) -> Result<(), crate::SharedError> {
        self.with_state(|(clock, _, stamps)| {
            *clock += 1;
            for k in keys {
                stamps.insert(k.clone(), *clock);
            }
        })
    }
}

/// Two replicas (two caches over one EHR) sharing one generation store.
fn fleet(fake: &Arc<Fake>, shared: &Arc<SharedFake>) -> (Cached, Cached) {
    let one = cache(fake).with_shared_generations(shared.clone());
    let two = cache(fake).with_shared_generations(shared.clone());
    (one, two)
}

#[tokio::test]
async fn a_write_on_one_replica_invalidates_the_others_entries() {
    let fake = Fake::new();
    let shared = SharedFake::new();
    let (a, b) = fleet(&fake, &shared);
    // B caches the patient's appointments and their slots.
    assert_eq!(body(&b, appointments("p1")).await, call(1));
    assert_eq!(body(&b, appointments("p1")).await, call(1), "a hit");
    assert_eq!(body(&b, observations("p1")).await, call(2));
    // A books: the next read on B goes upstream; unrelated entries stay.
    a.execute(FhirRequest::create("Appointment", "{}").with_partition(part("p1")))
        .await
        .unwrap();
    assert_eq!(body(&b, appointments("p1")).await, call(4));
    assert_eq!(body(&b, observations("p1")).await, call(2), "still a hit");
    // Another patient's entries on B are untouched.
    assert_eq!(body(&b, appointments("p2")).await, call(5));
    a.execute(FhirRequest::create("Observation", "{}").with_partition(part("p1")))
        .await
        .unwrap();
    assert_eq!(body(&b, appointments("p2")).await, call(5));
}

#[tokio::test]
async fn a_shared_store_that_lost_its_data_invalidates_everything() {
    let fake = Fake::new();
    let shared = SharedFake::new();
    let (a, b) = fleet(&fake, &shared);
    assert_eq!(body(&b, observations("p1")).await, call(1));
    // A write whose stamp is then lost with the store: B must not trust its entry.
    a.execute(FhirRequest::create("Observation", "{}").with_partition(part("p1")))
        .await
        .unwrap();
    shared.restart_empty();
    assert_eq!(body(&b, observations("p1")).await, call(3));
}

#[tokio::test]
async fn without_the_shared_store_reads_go_upstream_and_writes_drop_local_entries() {
    let fake = Fake::new();
    let shared = SharedFake::new();
    let (a, b) = fleet(&fake, &shared);
    assert_eq!(body(&a, observations("p1")).await, call(1));
    assert_eq!(body(&a, appointments("p1")).await, call(2));
    assert_eq!(
        body(&b, observations("p1")).await,
        call(3),
        "each replica its own"
    );
    shared.down.store(true, Ordering::SeqCst);
    // Reads: upstream, uncached.
    assert_eq!(body(&a, observations("p1")).await, call(4));
    assert_eq!(body(&a, observations("p1")).await, call(5));
    // A write that cannot be shared: A forgets everything it had, even what the write
    // did not touch.
    a.execute(FhirRequest::create("Observation", "{}").with_partition(part("p1")))
        .await
        .unwrap();
    shared.down.store(false, Ordering::SeqCst);
    assert_eq!(body(&a, appointments("p1")).await, call(7));
    assert!(a.stats().shared_failures >= 3);
}
