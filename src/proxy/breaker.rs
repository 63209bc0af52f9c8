//! A circuit breaker per endpoint: after a run of failed calls, calls fail at once for a
//! while instead of each waiting out its timeout on an endpoint that is down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    /// Calls fail at once until `until`; then one goes through as a probe.
    Open {
        until: Instant,
    },
    /// One call is the probe. A probe whose caller went away (its connection closed) never
    /// reports back, so after `until` (its timeout) another call may probe.
    Probing {
        until: Instant,
    },
}

pub(crate) struct Breaker {
    state: Mutex<State>,
    failures_to_open: u32,
    open_for: Duration,
    /// How long a probe may take before another may start: the call's timeout.
    probe_for: Duration,
}

impl Breaker {
    pub(crate) fn new(failures_to_open: u32, open_for: Duration, probe_for: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_to_open,
            open_for,
            probe_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value: a panic elsewhere cannot leave it half written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call may go to the endpoint now.
    pub(crate) fn admit(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::Probing { until } if now >= until => {
                *state = State::Probing {
                    until: now + self.probe_for,
                };
                true
            }
            State::Open { .. } | State::Probing { .. } => false,
        }
    }

    /// A call's outcome. Returns `Some(open)` when the breaker opened or closed.
    pub(crate) fn record(&self, ok: bool, now: Instant) -> Option<bool> {
        let mut state = self.lock();
        let was_open = !matches!(*state, State::Closed { .. });
        *state = match (*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.failures_to_open => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => State::Open {
                until: now + self.open_for,
            },
        };
        let open = !matches!(*state, State::Closed { .. });
        (open != was_open).then_some(open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_and_a_successful_probe_closes_it() {
        let t0 = Instant::now();
        let b = Breaker::new(3, Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.record(false, t0), None);
        assert_eq!(b.record(false, t0), None);
        assert!(b.admit(t0));
        assert_eq!(b.record(false, t0), Some(true));
        assert!(!b.admit(t0 + Duration::from_secs(4)));
        // Open time over: exactly one probe.
        let t1 = t0 + Duration::from_secs(5);
        assert!(b.admit(t1));
        assert!(!b.admit(t1));
        assert_eq!(b.record(true, t1), Some(false));
        assert!(b.admit(t1));
    }

    #[test]
    fn a_failed_probe_reopens_and_a_lost_probe_is_replaced() {
        let t0 = Instant::now();
        let b = Breaker::new(1, Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.record(false, t0), Some(true));
        let t1 = t0 + Duration::from_secs(5);
        assert!(b.admit(t1));
        assert_eq!(b.record(false, t1), None, "still open");
        assert!(!b.admit(t1 + Duration::from_secs(4)));
        let t2 = t1 + Duration::from_secs(5);
        assert!(b.admit(t2));
        // That probe never reports; after its timeout another may go.
        assert!(!b.admit(t2 + Duration::from_millis(500)));
        assert!(b.admit(t2 + Duration::from_secs(1)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let b = Breaker::new(2, Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.record(false, t0), None);
        assert_eq!(b.record(true, t0), None);
        assert_eq!(b.record(false, t0), None);
        assert!(b.admit(t0));
    }
}
