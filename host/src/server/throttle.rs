//! One warning per interval for a condition that can repeat thousands of times a second (an
//! accept loop out of descriptors, responses refused for want of buffer), saying how many
//! were not logged since the last.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate limit for one kind of warning.
pub(super) struct Throttle {
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// At most one warning per `interval`.
    pub(super) const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// Calls `warn` with the number of occurrences not logged since the last warning, unless
    /// one was logged less than the interval ago. Only called on a failure path: the lock and
    /// the clock read are never on a request's way.
    pub(super) fn warn(&self, warn: impl FnOnce(u64)) {
        let now = Instant::now();
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            state.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut state.suppressed);
        state.last = Some(now);
        drop(state);
        warn(suppressed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_interval_are_counted_not_logged() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        let mut logged = Vec::new();
        for _ in 0..5 {
            throttle.warn(|suppressed| logged.push(suppressed));
        }
        assert_eq!(logged, vec![0]);
        let throttle = Throttle::new(Duration::ZERO);
        let mut logged = Vec::new();
        for _ in 0..3 {
            throttle.warn(|suppressed| logged.push(suppressed));
        }
        assert_eq!(logged, vec![0, 0, 0]);
    }
}
