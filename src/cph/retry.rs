//! When to try again, and when to stop trying: capped exponential backoff with full jitter,
//! and a circuit breaker that keeps a failing control plane from being hammered.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `attempt` (1-based): uniform in [0, min(max, base·2^(attempt-1))].
    /// Full jitter spreads retries of many clients apart.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max);
        cap.mul_f64(rand::random::<f64>())
    }
}

/// Closed → (N consecutive failures) → open for `open_for` → half-open: one trial request;
/// success closes it, failure opens it again. A trial that never reports back (its caller
/// was cancelled: a timeout around the call, a dropped request handler) is given up after
/// another `open_for`, and the next request is the trial: otherwise the breaker would stay
/// half-open, refusing every call, until the process restarts.
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    /// One trial is out; another may go at `retry_at` if it has not reported back by then.
    HalfOpen { retry_at: Instant },
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    /// May a request go out now? While open: no. When the open period ends, one trial.
    pub fn allow(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until: due } | BreakerState::HalfOpen { retry_at: due }
                if now >= due =>
            {
                *state = BreakerState::HalfOpen {
                    retry_at: now + self.open_for,
                };
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => false,
        }
    }

    pub fn record_success(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) =
            BreakerState::Closed { failures: 0 };
    }

    pub fn record_failure(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            _ => BreakerState::Open {
                until: Instant::now() + self.open_for,
            },
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            BreakerState::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..40 {
            let cap = Duration::from_millis(100 * (1 << (attempt - 1).min(16))).min(b.max);
            assert!(b.delay(attempt) <= cap, "attempt {attempt}");
        }
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.delay(3)).collect();
        assert!(delays.len() > 1, "jitter varies the delay");
    }

    #[test]
    fn breaker_opens_after_threshold_and_recovers_through_half_open() {
        let breaker = CircuitBreaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            breaker.record_failure();
            assert!(breaker.allow());
        }
        breaker.record_failure();
        assert!(!breaker.allow(), "open after 3 failures");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow(), "one trial once the open period ends");
        assert!(!breaker.allow(), "only one trial while half-open");
        breaker.record_failure();
        assert!(!breaker.allow(), "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow());
        breaker.record_success();
        assert!(breaker.allow() && breaker.allow(), "closed again");
    }

    #[test]
    fn a_trial_that_never_reports_back_is_given_up_after_the_open_period() {
        let breaker = CircuitBreaker::new(1, Duration::from_millis(30));
        breaker.record_failure();
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow(), "the trial goes out");
        // Its caller is cancelled: neither success nor failure is ever recorded.
        assert!(!breaker.allow(), "no second trial while the first may still answer");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow(), "a new trial once the first is given up");
        breaker.record_success();
        assert!(breaker.allow() && breaker.allow(), "closed again");
    }
}
