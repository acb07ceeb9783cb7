//! [`CachedUpstream`]: the read-through cache decorator.
//!
//! A read goes: plan (cacheable? key, TTL, dependencies) → fresh valid entry? serve it →
//! otherwise one single-flight fetch per (key, required generation): concurrent misses
//! for the same key in the same invalidation epoch wait for one upstream call (moka's
//! `try_get_with`; errors are shared with the waiters, never cached). The fetch makes a
//! `read` conditional (`If-None-Match` with the old entry's ETag) when there is an old
//! entry to revalidate; a `304` refreshes the old entry without a body transfer. Other
//! reads are refetched (a search has no ETag, and `_lastUpdated` cannot prove that
//! nothing left the result set).
//!
//! When the fetch fails with a timeout, a connection error, a 5xx, a 429, an open
//! circuit or the gateway's own concurrency limit, an entry past its TTL but within
//! `stale_if_error` of it is served instead, with [`FhirResponse::stale_age`] set.
//! Entries invalidated by a write are never served, stale or not.
//!
//! A write passes through, then invalidates (see [`crate::invalidation`]) before its
//! result is returned, whatever the result (a failed write may still have happened).
//!
//! A hit returns the stored response with its [`Derived`] slot, shared by every hit
//! on that entry, so that the gateway can keep what it derived from the body (the
//! verified, rewritten answer for a principal) instead of deriving it on every hit. The
//! slot is not counted by the weigher: an entry that has been hit may keep derived
//! values of up to `DERIVED_BUDGET_FACTOR` × its body + 16 KiB (entries read once keep
//! none).
//!
//! Bodies are stored LZ4-compressed unless `compress` is off (see [`crate::body`]); the
//! weigher counts the stored bytes, and every hit decompresses (~1 µs for 10 kB).
//!
//! Invariants: only `200` responses up to `max_entry_bytes` are stored; ages are
//! measured from when the fetch *started* (conservative) on tokio's clock; keys, bodies
//! and partitions are never logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use portico_upstream::{Answer, Derived, FhirRequest, FhirResponse, FhirUpstream, UpstreamError};
use tokio::time::Instant;

use crate::body::Packed;
use crate::config::CacheConfig;
use crate::invalidation::{self, Generations, SharedGenerations};
use crate::key::{CacheKey, Plan, plan};

/// One cached response.
#[derive(Debug)]
struct Entry {
    /// The response without its body (`body` is empty) and without a slot.
    response: FhirResponse,
    body: Packed,
    /// Shared by every hit on this entry (see [`Derived`]).
    derived: Derived,
    /// When the fetch that produced (or revalidated) it started.
    fetched_at: Instant,
    /// The generation clock when that fetch started.
    generation: u64,
    ttl: Duration,
}

impl Entry {
    /// The response a hit returns: the body and the entry's derived slot. `None` if
    /// the stored body is unreadable.
    fn hit(&self) -> Option<FhirResponse> {
        let mut response = self.plain()?;
        response.derived = Some(self.derived.clone());
        Some(response)
    }

    /// The response without the derived slot: for a stale serve, a revalidated entry's
    /// answer or a fetch that found the entry refreshed.
    fn plain(&self) -> Option<FhirResponse> {
        let mut response = self.response.clone();
        response.body = self.body.unpack()?;
        Some(response)
    }

    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched_at)
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.ttl
    }
}

/// moka expiry: keep an entry for its TTL plus the stale bound.
struct KeepForTtlAndStale {
    stale_if_error: Duration,
}

impl moka::Expiry<CacheKey, Arc<Entry>> for KeepForTtlAndStale {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl.saturating_add(self.stale_if_error))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl.saturating_add(self.stale_if_error))
    }
}

/// Counters for metrics, as a snapshot (see [`CachedUpstream::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Cacheable reads served from a fresh entry.
    pub hits: u64,
    /// Cacheable reads not served from a fresh entry (they joined or led a fetch).
    pub misses: u64,
    /// Misses that waited for another caller's identical fetch instead of calling.
    pub single_flight_joins: u64,
    /// Upstream calls made for misses (conditional ones included).
    pub fetches: u64,
    /// Conditional reads answered `304 Not Modified`.
    pub revalidations: u64,
    /// Expired entries served because the EHR failed.
    pub stale_serves: u64,
    /// Reads passed through uncached (not cacheable for their partition, type or form).
    pub bypasses: u64,
    /// Writes that invalidated entries.
    pub write_invalidations: u64,
    /// Entries evicted to stay under `max_bytes`.
    pub evictions: u64,
    /// Calls to the shared generation store (Redis) that failed: reads that went
    /// upstream uncached, or writes whose invalidation dropped this replica's entries.
    pub shared_failures: u64,
    /// With shared generations: whether this replica answers reads' checks from its
    /// mirror of them now, instead of asking the store for each read.
    pub shared_mirrored: Option<bool>,
    /// Current weight of the entries, in bytes (approximate until pending maintenance
    /// has run).
    pub bytes: u64,
    /// Current number of entries (approximate, likewise).
    pub entries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    single_flight_joins: AtomicU64,
    fetches: AtomicU64,
    revalidations: AtomicU64,
    stale_serves: AtomicU64,
    bypasses: AtomicU64,
    write_invalidations: AtomicU64,
    evictions: AtomicU64,
    shared_failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Whether a failure lets an expired entry be served instead.
fn serves_stale(error: &UpstreamError) -> bool {
    error.retryable() || matches!(error, UpstreamError::Server { .. })
}

/// How many bytes of derived values one entry may keep besides its body, measured
/// against the body's uncompressed size: room for a few packed rendered answers or one
/// verified portal page (parsed, a multiple of the body), and never more than this
/// multiple of the body plus 16 KiB. Derived values are not weighed against `max_bytes`,
/// which counts stored (compressed) bodies: the memory of entries that are hit can
/// exceed it by up to this budget each.
const DERIVED_BUDGET_FACTOR: usize = 8;

fn derived_budget(body_len: usize) -> usize {
    body_len
        .saturating_mul(DERIVED_BUDGET_FACTOR)
        .saturating_add(16 * 1024)
}

/// The read cache over any [`FhirUpstream`]; itself a `FhirUpstream`.
pub struct CachedUpstream<U> {
    inner: U,
    config: CacheConfig,
    entries: Cache<CacheKey, Arc<Entry>>,
    /// Single-flight only: a fetch's result lives here just long enough for its waiters.
    flights: Cache<(CacheKey, u64), FhirResponse>,
    /// The single-process generation table (used when `shared` is not set).
    generations: Generations,
    /// The generation clock and stamps every replica shares (see [`invalidation`]).
    shared: Option<Arc<dyn SharedGenerations>>,
    counters: Arc<Counters>,
}

impl<U: std::fmt::Debug> std::fmt::Debug for CachedUpstream<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedUpstream")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl<U: FhirUpstream> CachedUpstream<U> {
    /// Wraps `inner` with a cache configured by `config`.
    pub fn new(inner: U, config: CacheConfig) -> CachedUpstream<U> {
        let counters = Arc::new(Counters::default());
        let evictions = counters.clone();
        let entries = Cache::builder()
            .name("portico-read-cache")
            .max_capacity(config.max_bytes)
            .weigher(|key: &CacheKey, entry: &Arc<Entry>| {
                let bytes = key.weight() + entry.body.stored_len() + 256;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(KeepForTtlAndStale {
                stale_if_error: config.stale_if_error,
            })
            .eviction_listener(move |_key, _entry, cause| {
                if cause == RemovalCause::Size {
                    bump(&evictions.evictions);
                }
            })
            .build();
        let flights = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(1))
            .build();
        CachedUpstream {
            generations: Generations::new(config.max_lifetime()),
            shared: None,
            inner,
            config,
            entries,
            flights,
            counters,
        }
    }

    /// Keeps the generation clock and stamps in `shared` (Redis, for a fleet) instead
    /// of this process: a write on any replica invalidates the entries of every replica
    /// before its response returns. When `shared` does not answer, reads go upstream
    /// uncached, and a write's stamp that cannot be recorded drops every local entry.
    pub fn with_shared_generations(mut self, shared: Arc<dyn SharedGenerations>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The wrapped upstream.
    pub fn inner(&self) -> &U {
        &self.inner
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Invalidates a patient's cached entries of `resource_types` (all types when
    /// empty) in every partition that names the patient. Shared reference types among
    /// `resource_types` are invalidated for everyone. Takes effect before it returns.
    pub async fn invalidate_patient(&self, patient_id: &str, resource_types: &[&str]) {
        match &self.shared {
            None => self
                .generations
                .invalidate_patient(patient_id, resource_types),
            Some(_) => {
                self.stamp_shared(&invalidation::patient_keys(patient_id, resource_types))
                    .await
            }
        }
    }

    /// Invalidates cached entries of `resource_types` (all types when empty) for
    /// everyone.
    pub async fn invalidate_shared(&self, resource_types: &[&str]) {
        match &self.shared {
            None => self.generations.invalidate_shared(resource_types),
            Some(_) => {
                self.stamp_shared(&invalidation::shared_keys(resource_types))
                    .await
            }
        }
    }

    /// Invalidates every entry.
    pub async fn invalidate_all(&self) {
        match &self.shared {
            None => self.generations.invalidate_all(),
            Some(_) => self.stamp_shared(&[invalidation::ALL.to_owned()]).await,
        }
        self.entries.invalidate_all();
    }

    /// At shutdown: leaves the fleet's shared generations (see
    /// [`SharedGenerations::leave`]); nothing without them.
    pub async fn leave_shared_generations(&self) {
        if let Some(shared) = &self.shared {
            shared.leave().await;
        }
    }

    /// Stamps `keys` in the shared store; when it cannot, this replica drops every
    /// entry it holds, so that it at least never serves what the write changed.
    async fn stamp_shared(&self, keys: &[String]) {
        let Some(shared) = &self.shared else { return };
        if let Err(e) = shared.stamp(keys).await {
            bump(&self.counters.shared_failures);
            tracing::error!(error = %e, "a write's cache invalidation could not be shared; dropping this replica's entries");
            self.entries.invalidate_all();
        }
    }

    /// The generation an entry for `plan` must not be older than, and (shared mode) the
    /// clock to stamp a fetch started now with; `None` when the shared store does not
    /// answer.
    async fn required(&self, plan: &Plan) -> Option<(u64, Option<u64>)> {
        let partition = plan.key.partition.as_ref();
        let Some(shared) = &self.shared else {
            return Some((self.generations.required(partition, &plan.deps), None));
        };
        match shared
            .snapshot(&invalidation::read_keys(partition, &plan.deps))
            .await
        {
            Ok(snapshot) => Some((snapshot.newest, Some(snapshot.clock))),
            Err(e) => {
                bump(&self.counters.shared_failures);
                tracing::warn!(error = %e, "cache generations unavailable; reading upstream uncached");
                None
            }
        }
    }

    /// Runs moka's pending maintenance (evictions, expirations) so that
    /// [`CachedUpstream::stats`] is exact; for tests and before scraping metrics.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }

    /// Replaces every stored body with one that does not decompress.
    #[cfg(test)]
    pub(crate) async fn make_bodies_unreadable(&self) {
        for (key, entry) in self.entries.iter() {
            let broken = Arc::new(Entry {
                response: entry.response.clone(),
                derived: entry.derived.clone(),
                body: Packed::unreadable(),
                fetched_at: entry.fetched_at,
                generation: entry.generation,
                ttl: entry.ttl,
            });
            self.entries.insert((*key).clone(), broken).await;
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            single_flight_joins: load(&c.single_flight_joins),
            fetches: load(&c.fetches),
            revalidations: load(&c.revalidations),
            stale_serves: load(&c.stale_serves),
            bypasses: load(&c.bypasses),
            write_invalidations: load(&c.write_invalidations),
            evictions: load(&c.evictions),
            shared_failures: load(&c.shared_failures),
            shared_mirrored: self.shared.as_ref().map(|shared| shared.mirrored()),
            bytes: self.entries.weighted_size(),
            entries: self.entries.entry_count(),
        }
    }

    async fn read_through(
        &self,
        request: FhirRequest,
        plan: Plan,
    ) -> Result<FhirResponse, UpstreamError> {
        let Some((required, clock)) = self.required(&plan).await else {
            bump(&self.counters.bypasses);
            return self.inner.execute(request).await;
        };
        let current = self
            .entries
            .get(&plan.key)
            .await
            .filter(|entry| entry.generation >= required);
        if let Some(entry) = &current
            && entry.is_fresh(Instant::now())
            && let Some(response) = entry.hit()
        {
            bump(&self.counters.hits);
            return Ok(response);
        }
        bump(&self.counters.misses);

        // Keyed by the required generation too: a read that starts after a write never
        // joins a fetch that started before it.
        let flight = (plan.key.clone(), required);
        let led = AtomicBool::new(false);
        let fetched = self
            .flights
            .try_get_with(flight.clone(), async {
                led.store(true, Ordering::Relaxed);
                self.fetch(&request, &plan, required, clock).await
            })
            .await;
        if led.load(Ordering::Relaxed) {
            self.flights.invalidate(&flight).await;
        } else {
            bump(&self.counters.single_flight_joins);
        }

        let error = match fetched {
            Ok(response) => return Ok(response),
            Err(error) => (*error).clone(),
        };
        if serves_stale(&error)
            && let Some(entry) = current
        {
            let age = entry.age(Instant::now());
            if age <= entry.ttl.saturating_add(self.config.stale_if_error)
                && let Some(mut response) = entry.plain()
            {
                bump(&self.counters.stale_serves);
                tracing::debug!(read = plan.key.describe(), age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX), error = %error, "serving stale cache entry");
                response.stale_age = Some(age);
                return Ok(response);
            }
        }
        Err(error)
    }

    /// One upstream fetch for `plan`, storing a cacheable result. What a miss returns
    /// carries no derived-value slot: only entries read again (hits) pay for keeping a
    /// derived copy.
    async fn fetch(
        &self,
        request: &FhirRequest,
        plan: &Plan,
        required: u64,
        clock: Option<u64>,
    ) -> Result<FhirResponse, UpstreamError> {
        let previous = self.entries.get(&plan.key).await;
        // Another flight may have refreshed the entry since this caller looked.
        if let Some(entry) = &previous
            && entry.is_fresh(Instant::now())
            && entry.generation >= required
            && let Some(response) = entry.plain()
        {
            return Ok(response);
        }
        // The clock before the fetch starts: shared, as the snapshot gave it, or local.
        let generation = clock.unwrap_or_else(|| self.generations.now());
        let fetched_at = Instant::now();
        // If-None-Match is safe even on an invalidated entry: a 304 proves the old body
        // is still the current representation. Only an entry whose body is readable is
        // revalidated (a 304 must have a body to stand for).
        let revalidating = previous
            .as_ref()
            .filter(|_| {
                matches!(
                    request.interaction,
                    portico_upstream::Interaction::Read { .. }
                )
            })
            .and_then(|entry| {
                let etag = entry.response.etag.clone()?;
                Some((entry, etag, entry.plain()?))
            });
        let mut upstream = request.clone();
        if let Some((_, etag, _)) = &revalidating {
            upstream = upstream.with_if_none_match(etag.clone());
        }
        bump(&self.counters.fetches);
        let mut response = self.inner.execute(upstream).await?;
        response.derived = None;
        let (response, body) = if response.is_not_modified() {
            let Some((entry, _, unchanged)) = revalidating else {
                return Err(UpstreamError::Protocol {
                    detail: "304 to an unconditional read".to_owned(),
                });
            };
            bump(&self.counters.revalidations);
            (unchanged, entry.body.clone())
        } else {
            let size = u64::try_from(response.body.len()).unwrap_or(u64::MAX);
            if response.status != 200 || size > self.config.max_entry_bytes {
                return Ok(response);
            }
            let body = Packed::new(&response.body, self.config.compress);
            (response, body)
        };
        let mut stored = response.clone();
        stored.body = bytes::Bytes::new();
        let entry = Arc::new(Entry {
            response: stored,
            body,
            // A new entry, a new slot: nothing derived from an older entry carries over.
            derived: Derived::with_budget(derived_budget(response.body.len())),
            fetched_at,
            generation,
            ttl: plan.ttl,
        });
        self.entries.insert(plan.key.clone(), entry).await;
        Ok(response)
    }
}

#[async_trait::async_trait]
impl<U: FhirUpstream> FhirUpstream for CachedUpstream<U> {
    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        if !self.config.enabled {
            return self.inner.execute(request).await;
        }
        if !request.is_read() {
            let written = request.resource_type().map(str::to_owned);
            let partition = request.partition.clone();
            let result = self.inner.execute(request).await;
            if let Some(resource_type) = written {
                bump(&self.counters.write_invalidations);
                match &self.shared {
                    None => self
                        .generations
                        .invalidate_write(partition.as_ref(), &resource_type),
                    Some(_) => {
                        let keys = invalidation::write_keys(partition.as_ref(), &resource_type);
                        self.stamp_shared(&keys).await;
                    }
                }
            }
            return result;
        }
        match plan(&request, &self.config) {
            Some(plan) => self.read_through(request, plan).await,
            None => {
                bump(&self.counters.bypasses);
                self.inner.execute(request).await
            }
        }
    }

    /// Partial only where nothing is kept: with the cache off, and for reads it does
    /// not keep. What it keeps, it reads whole.
    async fn execute_partial(&self, request: FhirRequest) -> Result<Answer, UpstreamError> {
        if !self.config.enabled {
            return self.inner.execute_partial(request).await;
        }
        if request.is_read() && plan(&request, &self.config).is_none() {
            bump(&self.counters.bypasses);
            return self.inner.execute_partial(request).await;
        }
        self.execute(request).await.map(Answer::Whole)
    }
}
