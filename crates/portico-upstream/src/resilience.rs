//! [`Resilient`]: retries, a circuit breaker, a concurrency limit and `429` handling
//! around any [`FhirUpstream`], itself a `FhirUpstream`.
//!
//! One call goes through, in order:
//! 1. the rate-limit hold: after a `429` with `Retry-After`, requests wait out the
//!    remaining delay if it is at most `max_rate_limit_wait`, and otherwise fail at once
//!    with [`UpstreamError::RateLimited`] carrying the remaining delay;
//! 2. the circuit breaker ([`CircuitBreaker`]): while open, [`UpstreamError::CircuitOpen`]
//!    without touching the EHR;
//! 3. the concurrency limit: at most `max_concurrent` requests in flight to the EHR; one
//!    that waits longer than `max_queue_wait` for a slot fails with
//!    [`UpstreamError::Overloaded`] (a distinct variant so that the gateway can tell its
//!    own saturation from the EHR's 429, and so that the breaker does not count it);
//! 4. the wrapped upstream; its outcome feeds the breaker (outages only, see
//!    [`UpstreamError::is_outage`]) and the rate-limit hold.
//!
//! Invariants:
//! - only reads ([`FhirRequest::is_read`]) are ever retried, and only on
//!   [`UpstreamError::retryable`] failures other than `CircuitOpen` and `Overloaded`
//!   (repeating those at once cannot help); writes are sent exactly once here, their
//!   safety on repeat is the idempotency layer's business;
//! - retries wait a full-jitter exponential backoff (uniform in `[0, min(max, base·2ⁿ)]`)
//!   and each one spends a token from a retry budget that earns `retry_budget_ratio`
//!   tokens per request plus `retry_budget_per_sec` per second, capped at
//!   `retry_budget_max`: a failing EHR sees at most about 20 % extra load, not 3×;
//! - all waiting is on tokio's clock, so tests pause and advance time.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::FhirUpstream;
use crate::breaker::{BreakerState, CircuitBreaker};
use crate::error::UpstreamError;
use crate::partial::Answer;
use crate::request::FhirRequest;
use crate::response::FhirResponse;

/// Resilience settings (`[upstream.resilience]` or wherever the gateway nests it).
/// Every field has a default; durations accept `"250ms"`, `"10s"`, `"5m"` or
/// milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Attempts per read, the first included; 1 disables retries (default 3).
    pub max_attempts: u32,
    /// Backoff base: the n-th retry waits up to `base·2ⁿ⁻¹` (default 100 ms).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub backoff_base: Duration,
    /// Longest backoff before a retry (default 2 s).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub backoff_max: Duration,
    /// Retry tokens earned per request (default 0.2: retries ≤ 20 % of requests).
    pub retry_budget_ratio: f64,
    /// Retry tokens earned per second regardless of traffic, the floor that lets a quiet
    /// gateway still retry (default 1.0).
    pub retry_budget_per_sec: f64,
    /// Most retry tokens that can be saved up; the bucket starts full (default 10).
    pub retry_budget_max: f64,
    /// Consecutive outages that open the breaker (default 5).
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before one probe is let through (default 10 s).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub breaker_cool_down: Duration,
    /// Most requests in flight to the EHR at once; 0 means no limit (default 32).
    pub max_concurrent: usize,
    /// Longest wait for a slot under `max_concurrent` before `Overloaded` (default 1 s).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_queue_wait: Duration,
    /// After a `429`, requests wait out a remaining `Retry-After` up to this long and
    /// fail fast with `RateLimited` beyond it (default 1 s).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_rate_limit_wait: Duration,
    /// Upper bound on the hold a `Retry-After` can impose, against absurd values
    /// (default 5 min).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_retry_after: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            max_attempts: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            retry_budget_ratio: 0.2,
            retry_budget_per_sec: 1.0,
            retry_budget_max: 10.0,
            breaker_failure_threshold: 5,
            breaker_cool_down: Duration::from_secs(10),
            max_concurrent: 32,
            max_queue_wait: Duration::from_secs(1),
            max_rate_limit_wait: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// Counters for metrics, as a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilienceStats {
    /// Calls to [`Resilient::execute`](FhirUpstream::execute).
    pub requests: u64,
    /// Retries sent (attempts beyond the first).
    pub retries: u64,
    /// Retries not sent because the budget was empty.
    pub retries_denied: u64,
    /// Attempts rejected by the open breaker.
    pub breaker_rejections: u64,
    /// Attempts that failed with `Overloaded`.
    pub overloaded: u64,
    /// Attempts that failed fast during a `Retry-After` hold.
    pub rate_limit_rejections: u64,
    /// Answers the EHR sent that were not what was asked (cut short, not JSON, not the
    /// resource type asked for): never used, never cached.
    pub malformed_answers: u64,
    /// The breaker's state now.
    pub breaker_state: BreakerState,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    retries_denied: AtomicU64,
    breaker_rejections: AtomicU64,
    overloaded: AtomicU64,
    malformed_answers: AtomicU64,
    rate_limit_rejections: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A token bucket for retries.
#[derive(Debug)]
struct RetryBudget {
    tokens: f64,
    max: f64,
    ratio: f64,
    per_sec: f64,
    last: Instant,
}

impl RetryBudget {
    fn new(config: &ResilienceConfig) -> RetryBudget {
        // `f64::max` ignores NaN, so a nonsensical setting becomes 0.
        let max = config.retry_budget_max.max(0.0);
        RetryBudget {
            tokens: max,
            max,
            ratio: config.retry_budget_ratio.max(0.0),
            per_sec: config.retry_budget_per_sec.max(0.0),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + self.per_sec * elapsed).min(self.max);
        self.last = now;
    }

    fn deposit(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + self.ratio).min(self.max);
    }

    fn try_withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Retries, circuit breaker, concurrency limit and `429` handling around an upstream.
#[derive(Debug)]
pub struct Resilient<U> {
    inner: U,
    config: ResilienceConfig,
    breaker: CircuitBreaker,
    budget: Mutex<RetryBudget>,
    limiter: Option<Arc<Semaphore>>,
    /// Until when a `429`'s `Retry-After` holds requests back.
    hold_until: Mutex<Option<Instant>>,
    counters: Counters,
}

impl<U: FhirUpstream> Resilient<U> {
    /// Wraps `inner`.
    pub fn new(inner: U, config: ResilienceConfig) -> Resilient<U> {
        let limiter = (config.max_concurrent > 0).then(|| {
            Arc::new(Semaphore::new(
                config.max_concurrent.min(Semaphore::MAX_PERMITS),
            ))
        });
        Resilient {
            breaker: CircuitBreaker::new(
                config.breaker_failure_threshold,
                config.breaker_cool_down,
            ),
            budget: Mutex::new(RetryBudget::new(&config)),
            limiter,
            hold_until: Mutex::new(None),
            counters: Counters::default(),
            inner,
            config,
        }
    }

    /// The wrapped upstream.
    pub fn inner(&self) -> &U {
        &self.inner
    }

    /// The circuit breaker (shared state; clone it to watch it from `/readyz`).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The breaker's state, for `/readyz` and metrics.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ResilienceStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ResilienceStats {
            requests: load(&c.requests),
            retries: load(&c.retries),
            retries_denied: load(&c.retries_denied),
            breaker_rejections: load(&c.breaker_rejections),
            overloaded: load(&c.overloaded),
            malformed_answers: load(&c.malformed_answers),
            rate_limit_rejections: load(&c.rate_limit_rejections),
            breaker_state: self.breaker.state(),
        }
    }

    /// Full jitter: uniform in `[0, min(backoff_max, backoff_base·2^retry)]`.
    fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .config
            .backoff_base
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.config.backoff_max);
        let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::thread_rng().gen_range(0..=cap_us))
    }

    /// Holds further requests after a `429` for `retry_after` (capped).
    fn hold(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after.min(self.config.max_retry_after);
        let mut hold = self.hold_until.lock();
        *hold = Some(hold.map_or(until, |current| current.max(until)));
    }

    async fn wait_for_rate_limit(&self) -> Result<(), UpstreamError> {
        let Some(until) = *self.hold_until.lock() else {
            return Ok(());
        };
        let remaining = until.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(());
        }
        if remaining > self.config.max_rate_limit_wait {
            bump(&self.counters.rate_limit_rejections);
            return Err(UpstreamError::RateLimited {
                retry_after: Some(remaining),
            });
        }
        tokio::time::sleep_until(until).await;
        Ok(())
    }

    /// One attempt under the breaker and the limits: what `call` answered, with the
    /// concurrency slot it held (for a partial answer to keep while its body comes).
    async fn attempt<T, F, Fut>(
        &self,
        request: &FhirRequest,
        call: &F,
    ) -> Result<(T, Option<OwnedSemaphorePermit>), UpstreamError>
    where
        F: Fn(FhirRequest) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.wait_for_rate_limit().await?;
        let permit = self.breaker.try_acquire().map_err(|retry_after| {
            bump(&self.counters.breaker_rejections);
            UpstreamError::CircuitOpen { retry_after }
        })?;
        let slot = match &self.limiter {
            None => None,
            Some(semaphore) => {
                let acquire = Arc::clone(semaphore).acquire_owned();
                match tokio::time::timeout(self.config.max_queue_wait, acquire).await {
                    Ok(Ok(slot)) => Some(slot),
                    // Timed out waiting (or the semaphore was closed, which never happens).
                    Ok(Err(_)) | Err(_) => {
                        bump(&self.counters.overloaded);
                        return Err(UpstreamError::Overloaded);
                    }
                }
            }
        };
        let result = call(request.clone()).await;
        if let Err(UpstreamError::MalformedBody { .. }) = &result {
            bump(&self.counters.malformed_answers);
        }
        if let Err(UpstreamError::RateLimited {
            retry_after: Some(delay),
        }) = &result
        {
            self.hold(*delay);
        }
        permit.record(matches!(&result, Err(e) if e.is_outage()));
        result.map(|answer| (answer, slot))
    }
}

#[async_trait::async_trait]
impl<U: FhirUpstream> FhirUpstream for Resilient<U> {
    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        let (response, _slot) = self
            .with_retries(request, |r| self.inner.execute(r))
            .await?;
        Ok(response)
    }

    /// Retried like [`FhirUpstream::execute`] until an answer has begun: a partial
    /// answer's rest is never retried, and it keeps its concurrency slot until its body
    /// has ended. (The breaker counts the answer from its first part: a body that breaks
    /// later is the caller's error to report, not an outage the breaker sees.)
    async fn execute_partial(&self, request: FhirRequest) -> Result<Answer, UpstreamError> {
        let (answer, slot) = self
            .with_retries(request, |r| self.inner.execute_partial(r))
            .await?;
        Ok(match (answer, slot) {
            (Answer::Partial(response, rest), Some(slot)) => {
                Answer::Partial(response, rest.holding(slot))
            }
            (answer, _) => answer,
        })
    }
}

impl<U: FhirUpstream> Resilient<U> {
    /// Runs `call` for `request` under the breaker and the limits, retrying reads.
    async fn with_retries<T, F, Fut>(
        &self,
        request: FhirRequest,
        call: F,
    ) -> Result<(T, Option<OwnedSemaphorePermit>), UpstreamError>
    where
        F: Fn(FhirRequest) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        bump(&self.counters.requests);
        self.budget.lock().deposit(Instant::now());
        let may_retry = request.is_read();
        let mut attempts = 0u32;
        loop {
            let error = match self.attempt(&request, &call).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            attempts += 1;
            // An open circuit, the local limit and a Retry-After longer than we wait
            // will not have cleared by the next attempt.
            let worth_retrying = may_retry
                && error.retryable()
                && !matches!(
                    error,
                    UpstreamError::CircuitOpen { .. } | UpstreamError::Overloaded
                )
                && !matches!(
                    error,
                    UpstreamError::RateLimited { retry_after: Some(d) }
                        if d > self.config.max_rate_limit_wait
                );
            if !worth_retrying || attempts >= self.config.max_attempts {
                return Err(error);
            }
            if !self.budget.lock().try_withdraw(Instant::now()) {
                bump(&self.counters.retries_denied);
                return Err(error);
            }
            bump(&self.counters.retries);
            tracing::debug!(
                interaction = request.kind(),
                attempt = attempts + 1,
                error = %error,
                "retrying upstream read"
            );
            tokio::time::sleep(self.backoff(attempts - 1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    type Outcome = Result<FhirResponse, UpstreamError>;

    /// Answers from a script, then with `fallback`; counts calls and concurrency.
    #[derive(Debug)]
    struct Fake {
        script: Mutex<VecDeque<Outcome>>,
        fallback: Mutex<Outcome>,
        delay: Mutex<Duration>,
        calls: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Fake {
        fn new(script: Vec<Outcome>, fallback: Outcome) -> Arc<Fake> {
            Arc::new(Fake {
                script: Mutex::new(script.into()),
                fallback: Mutex::new(fallback),
                delay: Mutex::new(Duration::ZERO),
                calls: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl FhirUpstream for Fake {
        async fn execute(&self, _request: FhirRequest) -> Outcome {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let delay = *self.delay.lock();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let next = self.script.lock().pop_front();
            next.unwrap_or_else(|| self.fallback.lock().clone())
        }
    }

    fn ok() -> Outcome {
        Ok(FhirResponse::new(200, "{}"))
    }

    fn status(code: u16) -> Outcome {
        Err(UpstreamError::Server {
            status: code,
            outcome: None,
        })
    }

    fn not_found() -> Outcome {
        Err(UpstreamError::NotFound { outcome: None })
    }

    fn read() -> FhirRequest {
        FhirRequest::read("Patient", "p1")
    }

    fn config() -> ResilienceConfig {
        ResilienceConfig::default()
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_retried_on_retryable_failures_until_success() {
        let fake = Fake::new(vec![status(503), Err(UpstreamError::Timeout)], ok());
        let r = Resilient::new(fake.clone(), config());
        assert_eq!(r.execute(read()).await.unwrap().status, 200);
        assert_eq!(fake.calls(), 3);
        assert_eq!(r.stats().retries, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts() {
        let fake = Fake::new(vec![], status(502));
        let r = Resilient::new(fake.clone(), config());
        let e = r.execute(read()).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Server { status: 502, .. }));
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_and_non_retryable_failures_are_not_retried() {
        let fake = Fake::new(vec![], status(503));
        let r = Resilient::new(fake.clone(), config());
        for write in [
            FhirRequest::create("Task", "{}"),
            FhirRequest::update("Task", "t1", "{}"),
            FhirRequest::patch("Task", "t1", "[]"),
            FhirRequest::delete("Task", "t1"),
            FhirRequest::operation(Some("Appointment"), None, "book", "{}"),
        ] {
            assert!(r.execute(write).await.is_err());
        }
        assert_eq!(fake.calls(), 5);

        for fallback in [status(500), not_found()] {
            let fake = Fake::new(vec![], fallback);
            let r = Resilient::new(fake.clone(), config());
            assert!(r.execute(read()).await.is_err());
            assert_eq!(fake.calls(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_budget_caps_retries() {
        let fake = Fake::new(vec![], status(503));
        let cfg = ResilienceConfig {
            retry_budget_max: 2.0,
            retry_budget_per_sec: 0.0,
            retry_budget_ratio: 0.5,
            breaker_failure_threshold: 1000,
            ..config()
        };
        let r = Resilient::new(fake.clone(), cfg);
        // The bucket starts with 2 tokens (+0.5 deposited, capped at 2): two retries.
        assert!(r.execute(read()).await.is_err());
        assert_eq!(fake.calls(), 3);
        // Now 0 + 0.5 tokens: no retry.
        assert!(r.execute(read()).await.is_err());
        assert_eq!(fake.calls(), 4);
        assert_eq!(r.stats().retries_denied, 1);
        // One more request brings the bucket to 1.0: one retry.
        assert!(r.execute(read()).await.is_err());
        assert_eq!(fake.calls(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_rejects_without_calling_and_recovers_after_a_probe() {
        let fake = Fake::new(vec![status(503), status(503), status(503)], ok());
        let cfg = ResilienceConfig {
            max_attempts: 1,
            breaker_failure_threshold: 3,
            breaker_cool_down: Duration::from_secs(10),
            ..config()
        };
        let r = Arc::new(Resilient::new(fake.clone(), cfg));
        for _ in 0..3 {
            assert!(r.execute(read()).await.is_err());
        }
        assert_eq!(r.breaker_state(), BreakerState::Open);
        let e = r.execute(read()).await.unwrap_err();
        assert!(
            matches!(e, UpstreamError::CircuitOpen { retry_after: Some(d) } if d == Duration::from_secs(10)),
            "{e:?}"
        );
        assert_eq!(fake.calls(), 3);
        assert_eq!(r.stats().breaker_rejections, 1);

        tokio::time::advance(Duration::from_secs(10)).await;
        *fake.delay.lock() = Duration::from_millis(100);
        let probe = tokio::spawn({
            let r = r.clone();
            async move { r.execute(read()).await }
        });
        tokio::task::yield_now().await;
        // While the probe is in flight everything else is still rejected.
        let e = r.execute(read()).await.unwrap_err();
        assert!(matches!(
            e,
            UpstreamError::CircuitOpen { retry_after: None }
        ));
        assert!(probe.await.unwrap().is_ok());
        assert_eq!(fake.calls(), 4);
        assert_eq!(r.breaker_state(), BreakerState::Closed);
        assert!(r.execute(read()).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_and_rate_limits_do_not_open_the_breaker() {
        let fake = Fake::new(vec![], not_found());
        let cfg = ResilienceConfig {
            breaker_failure_threshold: 2,
            ..config()
        };
        let r = Resilient::new(fake.clone(), cfg);
        for _ in 0..5 {
            assert!(r.execute(read()).await.is_err());
        }
        *fake.fallback.lock() = Err(UpstreamError::RateLimited { retry_after: None });
        for _ in 0..5 {
            assert!(r.execute(read()).await.is_err());
        }
        assert_eq!(r.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_limited_and_long_waits_are_overloaded() {
        let fake = Fake::new(vec![], ok());
        *fake.delay.lock() = Duration::from_secs(1);
        let cfg = ResilienceConfig {
            max_concurrent: 2,
            max_queue_wait: Duration::from_millis(100),
            ..config()
        };
        let r = Resilient::new(fake.clone(), cfg);
        let results = futures_join3(&r).await;
        let overloaded = results
            .iter()
            .filter(|r| matches!(r, Err(UpstreamError::Overloaded)))
            .count();
        assert_eq!(overloaded, 1, "{results:?}");
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
        assert_eq!(fake.calls(), 2, "overload is neither sent nor retried");
        assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 2);

        // With a long enough queue wait, the third request waits for a slot instead.
        let fake = Fake::new(vec![], ok());
        *fake.delay.lock() = Duration::from_secs(1);
        let cfg = ResilienceConfig {
            max_concurrent: 2,
            max_queue_wait: Duration::from_secs(5),
            ..config()
        };
        let r = Resilient::new(fake.clone(), cfg);
        let results = futures_join3(&r).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 2);
    }

    /// An upstream whose every answer is partial: a first part, then a rest that ends
    /// when the test says so.
    #[derive(Debug)]
    struct Partial {
        rests: Mutex<
            Vec<futures::channel::mpsc::UnboundedSender<Result<bytes::Bytes, UpstreamError>>>,
        >,
    }

    #[async_trait::async_trait]
    impl FhirUpstream for Partial {
        async fn execute(&self, _: FhirRequest) -> Outcome {
            ok()
        }

        async fn execute_partial(&self, _: FhirRequest) -> Result<Answer, UpstreamError> {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            self.rests.lock().push(tx);
            let first = FhirResponse::new(200, bytes::Bytes::from_static(b"{"));
            Ok(Answer::Partial(first, crate::BodyRest::new(rx)))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_answer_holds_its_slot_until_its_body_ends() {
        let upstream = Partial {
            rests: Mutex::new(Vec::new()),
        };
        let cfg = ResilienceConfig {
            max_concurrent: 1,
            max_queue_wait: Duration::from_millis(100),
            ..config()
        };
        let r = Resilient::new(upstream, cfg);
        let search = || FhirRequest::search("Observation", Vec::<(String, String)>::new());
        let Ok(Answer::Partial(_, mut rest)) = r.execute_partial(search()).await else {
            panic!("not partial");
        };
        // Its body is still coming: the one slot is taken.
        let e = r.execute_partial(search()).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Overloaded), "{e:?}");
        // Once the body has ended, the slot is free again.
        r.inner.rests.lock().clear();
        assert!(rest.next().await.is_none());
        assert!(r.execute_partial(search()).await.is_ok());
    }

    async fn futures_join3<U: FhirUpstream>(r: &Resilient<U>) -> Vec<Outcome> {
        let (a, b, c) = tokio::join!(r.execute(read()), r.execute(read()), r.execute(read()));
        vec![a, b, c]
    }

    #[tokio::test(start_paused = true)]
    async fn long_retry_after_fails_fast_until_it_passes() {
        let limited = Err(UpstreamError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        });
        let fake = Fake::new(vec![limited], ok());
        let r = Resilient::new(fake.clone(), config());
        let e = r.execute(read()).await.unwrap_err();
        assert!(
            matches!(e, UpstreamError::RateLimited { retry_after: Some(d) } if d > Duration::from_secs(25)),
            "{e:?}"
        );
        assert_eq!(fake.calls(), 1, "the retry is held back, not sent");
        assert_eq!(r.stats().retries, 0, "no retry budget spent on a long hold");
        // Writes are held too.
        let e = r.execute(FhirRequest::create("Task", "{}")).await;
        assert!(matches!(e, Err(UpstreamError::RateLimited { .. })));
        assert_eq!(fake.calls(), 1);
        assert_eq!(r.stats().rate_limit_rejections, 1);

        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(r.execute(read()).await.is_ok());
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn short_retry_after_is_waited_out() {
        let limited = Err(UpstreamError::RateLimited {
            retry_after: Some(Duration::from_millis(500)),
        });
        let fake = Fake::new(vec![limited], ok());
        let r = Resilient::new(fake.clone(), config());
        let started = Instant::now();
        assert!(r.execute(read()).await.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_retry_after_is_capped() {
        let limited = Err(UpstreamError::RateLimited {
            retry_after: Some(Duration::from_secs(86_400)),
        });
        let fake = Fake::new(vec![limited], ok());
        let cfg = ResilienceConfig {
            max_attempts: 1,
            max_retry_after: Duration::from_secs(60),
            ..config()
        };
        let r = Resilient::new(fake.clone(), cfg);
        assert!(r.execute(read()).await.is_err());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(r.execute(read()).await.is_ok());
    }

    #[test]
    fn backoff_is_bounded_by_base_doubling_and_max() {
        let r = Resilient::new(Fake::new(vec![], ok()), config());
        for _ in 0..200 {
            assert!(r.backoff(0) <= Duration::from_millis(100));
            assert!(r.backoff(2) <= Duration::from_millis(400));
            assert!(r.backoff(30) <= Duration::from_secs(2));
        }
    }

    #[test]
    fn config_defaults_and_durations_deserialize() {
        let c: ResilienceConfig =
            serde_json::from_str(r#"{"max_attempts": 2, "breaker_cool_down": "30s"}"#).unwrap();
        assert_eq!(c.max_attempts, 2);
        assert_eq!(c.breaker_cool_down, Duration::from_secs(30));
        assert_eq!(c.max_concurrent, 32);
        assert!(serde_json::from_str::<ResilienceConfig>(r#"{"max_atempts": 2}"#).is_err());
    }
}
