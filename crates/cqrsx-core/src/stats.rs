//! [`OperationStats`]: what a backend's client counts about its calls, for its metrics.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How many recent latencies the percentiles are computed over.
pub const LATENCY_WINDOW: usize = 4096;

/// Operations, failures and a window of recent latencies; shared by a client's clones.
///
/// ```
/// use std::time::Duration;
/// use cqrsx_core::raw::OperationStats;
/// let stats = OperationStats::default();
/// stats.record(Duration::from_micros(300), true);
/// stats.record(Duration::from_micros(900), false);
/// assert_eq!((stats.operations(), stats.errors()), (2, 1));
/// assert_eq!(stats.latencies().p99, Duration::from_micros(900));
/// ```
#[derive(Debug, Default)]
pub struct OperationStats {
    operations: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<VecDeque<u64>>,
}

/// Latency percentiles over the recent window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latencies {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl OperationStats {
    /// Records one call: how long it took and whether it succeeded.
    pub fn record(&self, elapsed: Duration, ok: bool) {
        self.operations.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut window = self.latencies_us.lock().unwrap_or_else(PoisonError::into_inner);
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Calls recorded.
    pub fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    /// Calls that failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Percentiles of the last [`LATENCY_WINDOW`] calls (zero before the first).
    pub fn latencies(&self) -> Latencies {
        let mut sorted: Vec<u64> = self
            .latencies_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        sorted.sort_unstable();
        let pct = |p: f64| match sorted.len() {
            0 => Duration::ZERO,
            n => Duration::from_micros(sorted[(((n - 1) as f64) * p).round() as usize]),
        };
        Latencies {
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_recent_window_only() {
        let stats = OperationStats::default();
        assert_eq!(stats.latencies(), Latencies::default());
        for us in 1..=100 {
            stats.record(Duration::from_micros(us), true);
        }
        let l = stats.latencies();
        assert_eq!(l.p50, Duration::from_micros(51));
        assert_eq!(l.p95, Duration::from_micros(95));
        assert_eq!(l.p99, Duration::from_micros(99));
        // A full window of slow calls pushes the fast ones out.
        for _ in 0..LATENCY_WINDOW {
            stats.record(Duration::from_millis(7), true);
        }
        assert_eq!(stats.latencies().p50, Duration::from_millis(7));
        assert_eq!(stats.operations(), 100 + LATENCY_WINDOW as u64);
        assert_eq!(stats.errors(), 0);
    }
}
