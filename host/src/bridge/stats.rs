//! How long the interpreter's lock is held per request, and how long requests wait to reach
//! the loop thread, kept in log-scale histograms.
//!
//! The loop thread is the only writer of the hold figures; recording is a few relaxed atomic
//! adds, cheap enough for every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling: four gives about 19% resolution.
const STEPS_PER_OCTAVE: f64 = 4.0;
/// Durations from 64 ns up to about an hour.
const BUCKETS: usize = 4 * 36;
const FLOOR_NANOS: f64 = 64.0;

/// A lock-free histogram of durations.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub(crate) const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub(crate) fn record(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Number of recorded durations.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The duration below which `quantile` (0..=1) of the records fall (bucket upper bound).
    pub(crate) fn quantile(&self, quantile: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64) * quantile).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                let upper = upper_bound(index).min(self.max.load(Ordering::Relaxed) as f64);
                return Duration::from_nanos(upper as u64);
            }
        }
        self.max()
    }

    /// The longest recorded duration.
    pub(crate) fn max(&self) -> Duration {
        Duration::from_nanos(self.max.load(Ordering::Relaxed))
    }
}

fn bucket_of(nanos: u64) -> usize {
    if (nanos as f64) <= FLOOR_NANOS {
        return 0;
    }
    let index = ((nanos as f64 / FLOOR_NANOS).log2() * STEPS_PER_OCTAVE).ceil() as usize;
    index.min(BUCKETS - 1)
}

fn upper_bound(index: usize) -> f64 {
    FLOOR_NANOS * 2f64.powf(index as f64 / STEPS_PER_OCTAVE)
}

/// The bridge's figures.
pub(crate) struct BridgeStats {
    /// Time the loop thread held the GIL on a request's behalf: starting it, every step of
    /// the handler, and converting its result.
    pub gil_hold: Histogram,
    /// Time from a tokio worker handing a request over to the loop thread starting it. This
    /// includes the loop thread waiting for the GIL and finishing other work.
    pub handoff: Histogram,
    /// Time the host's own threads (loop start-up, watchdog) waited to acquire the GIL.
    pub gil_wait: Histogram,
    /// GIL acquisitions attempted from inside a tokio runtime; the design keeps this at zero.
    pub tokio_attaches: AtomicU64,
}

/// The process-wide figures (there is one interpreter per process).
pub(crate) static STATS: BridgeStats = BridgeStats {
    gil_hold: Histogram::new(),
    handoff: Histogram::new(),
    gil_wait: Histogram::new(),
    tokio_attaches: AtomicU64::new(0),
};

/// `Python::attach` for the host's own threads, recording how long the GIL took to get.
pub(crate) fn attach<R>(f: impl for<'py> FnOnce(pyo3::Python<'py>) -> R) -> R {
    if tokio::runtime::Handle::try_current().is_ok() {
        STATS.tokio_attaches.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("the GIL was requested from inside a tokio runtime");
    }
    let asked = std::time::Instant::now();
    pyo3::Python::attach(|py| {
        STATS.gil_wait.record(asked.elapsed());
        f(py)
    })
}

impl BridgeStats {
    /// One line of `key=value` figures, in microseconds.
    pub(crate) fn summary(&self) -> String {
        let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
        format!(
            "requests={} gil_hold_p50_us={} gil_hold_p99_us={} gil_hold_max_us={} handoff_p50_us={} handoff_p99_us={} gil_waits={} gil_wait_max_us={} tokio_gil_attaches={}",
            self.gil_hold.count(),
            us(self.gil_hold.quantile(0.5)),
            us(self.gil_hold.quantile(0.99)),
            us(self.gil_hold.max()),
            us(self.handoff.quantile(0.5)),
            us(self.handoff.quantile(0.99)),
            self.gil_wait.count(),
            us(self.gil_wait.max()),
            self.tokio_attaches.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let histogram = Histogram::new();
        for micros in 1..=100 {
            histogram.record(Duration::from_micros(micros));
        }
        let p50 = histogram.quantile(0.5).as_secs_f64() * 1e6;
        assert!((50.0..=62.0).contains(&p50), "p50 {p50}");
        let p99 = histogram.quantile(0.99).as_secs_f64() * 1e6;
        assert!((99.0..=100.0).contains(&p99), "p99 {p99}");
        assert_eq!(histogram.max(), Duration::from_micros(100));
    }
}
