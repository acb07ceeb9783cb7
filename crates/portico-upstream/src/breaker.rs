//! A circuit breaker for one upstream.
//!
//! Closed, it lets everything through and counts consecutive outages
//! ([`UpstreamError::is_outage`](crate::UpstreamError::is_outage): timeouts, broken
//! connections, 5xx). After `failure_threshold` of them in a row it opens and rejects
//! every request for `cool_down`. Then it half-opens and lets exactly one probe through:
//! a healthy answer (anything that is not an outage, a 404 included) closes it, an outage
//! opens it again for another cool-down. A probe that is abandoned (its caller went
//! away) leaves the breaker half-open so that the next request probes instead.
//!
//! Invariants: at most one probe is in flight; the results of requests admitted while
//! closed that finish after the breaker opened do not move it (only the probe decides);
//! time is tokio's clock, so tests can pause and advance it.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The breaker's state as reported to `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are rejected until the cool-down ends.
    Open,
    /// The cool-down ended: one probe is (or may be) in flight.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// A number for a Prometheus gauge: closed 0, half-open 1, open 2.
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    failure_threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

/// A circuit breaker; cheap to clone (clones share state).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

/// Admission to send one request. Report its outcome with [`BreakerPermit::record`];
/// dropping it unreported counts as abandoned.
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `failure_threshold` consecutive outages (at
    /// least 1) and stays open for `cool_down`.
    pub fn new(failure_threshold: u32, cool_down: Duration) -> CircuitBreaker {
        CircuitBreaker {
            inner: Arc::new(Inner {
                failure_threshold: failure_threshold.max(1),
                cool_down,
                state: Mutex::new(State::Closed { failures: 0 }),
            }),
        }
    }

    /// The current state (an open breaker whose cool-down has ended reports half-open).
    pub fn state(&self) -> BreakerState {
        match *self.inner.state.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Admits a request, or returns how long until a probe may be tried (`None` while
    /// another probe is in flight).
    pub fn try_acquire(&self) -> Result<BreakerPermit, Option<Duration>> {
        let mut state = self.inner.state.lock();
        let now = Instant::now();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => return Err(Some(until - now)),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => return Err(None),
        };
        Ok(BreakerPermit {
            breaker: self.clone(),
            probe,
            recorded: false,
        })
    }

    fn on_result(&self, probe: bool, outage: bool) {
        let mut state = self.inner.state.lock();
        let open = State::Open {
            until: Instant::now() + self.inner.cool_down,
        };
        *state = match (*state, probe, outage) {
            (State::HalfOpen { .. }, true, false) => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, true, true) => open,
            (State::Closed { .. }, false, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, false, true) => {
                let failures = failures.saturating_add(1);
                if failures >= self.inner.failure_threshold {
                    tracing::warn!(failures, "upstream circuit breaker opened");
                    open
                } else {
                    State::Closed { failures }
                }
            }
            // A late result of a request admitted in another state: only the probe
            // decides while the breaker is open or half-open.
            (other, _, _) => other,
        };
    }

    fn on_abandoned(&self, probe: bool) {
        if probe {
            let mut state = self.inner.state.lock();
            if let State::HalfOpen { probing: true } = *state {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

impl BreakerPermit {
    /// Reports the request's outcome: `outage` when it failed in a way that suggests the
    /// EHR is down (see [`UpstreamError::is_outage`](crate::UpstreamError::is_outage)).
    pub fn record(mut self, outage: bool) {
        self.recorded = true;
        self.breaker.on_result(self.probe, outage);
    }

    /// Whether this request is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.on_abandoned(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_probes_once_after_cool_down() {
        let b = CircuitBreaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            b.try_acquire().unwrap().record(true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // A healthy answer resets the count.
        b.try_acquire().unwrap().record(false);
        for _ in 0..2 {
            b.try_acquire().unwrap().record(true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().record(true);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire().unwrap_err(), Some(Duration::from_secs(10)));

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        // Only one probe at a time.
        assert_eq!(b.try_acquire().unwrap_err(), None);
        probe.record(true);
        assert_eq!(b.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().unwrap();
        probe.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.try_acquire().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_lets_the_next_request_probe() {
        let b = CircuitBreaker::new(1, Duration::from_secs(1));
        b.try_acquire().unwrap().record(true);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.try_acquire().unwrap());
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_do_not_move_an_open_breaker() {
        let b = CircuitBreaker::new(1, Duration::from_secs(5));
        let late = b.try_acquire().unwrap();
        b.try_acquire().unwrap().record(true);
        assert_eq!(b.state(), BreakerState::Open);
        late.record(false);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
