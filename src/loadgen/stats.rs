//! Counting and timing: latency histograms and the per-second progress
//! each worker thread reports.
//!
//! # Why a histogram
//!
//! Latency is not one number. An average hides the slow tail that users
//! notice, and percentiles cannot be averaged across threads or seconds.
//! An HDR histogram records every sample in a fixed amount of memory with a
//! bounded relative error (here 3 significant figures), and histograms add
//! up exactly: each worker keeps its own, with no locks on the hot path,
//! and the main thread merges them.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Round-trip or delivery latencies, in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

/// The longest latency recorded exactly; longer ones count as this much.
/// A minute is far beyond any run in which latency still means anything.
const MAX_RECORDED_NS: u64 = 60_000_000_000;

impl Latency {
    pub fn new() -> Latency {
        Latency {
            // 1 ns to a minute at 3 significant figures: about 220 KiB.
            histogram: Histogram::new_with_bounds(1, MAX_RECORDED_NS, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Records one sample.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(ns.max(1));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    /// How many samples were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at `quantile` (0.0 to 1.0) in nanoseconds; 0 when empty.
    pub fn quantile_ns(&self, quantile: f64) -> u64 {
        if self.histogram.is_empty() {
            0
        } else {
            self.histogram.value_at_quantile(quantile)
        }
    }

    /// The usual percentiles, for reports.
    pub fn summary(&self) -> LatencySummary {
        let empty = self.histogram.is_empty();
        let us = |ns: u64| ns as f64 / 1e3;
        LatencySummary {
            samples: self.count(),
            min_us: if empty { 0.0 } else { us(self.histogram.min()) },
            mean_us: if empty {
                0.0
            } else {
                self.histogram.mean() / 1e3
            },
            p50_us: us(self.quantile_ns(0.50)),
            p90_us: us(self.quantile_ns(0.90)),
            p99_us: us(self.quantile_ns(0.99)),
            p999_us: us(self.quantile_ns(0.999)),
            max_us: if empty { 0.0 } else { us(self.histogram.max()) },
        }
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

/// Percentiles of a latency histogram, in microseconds (the JSON form).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    /// One line for the summary table.
    pub fn line(&self) -> String {
        let ns = |us: f64| crate::loadgen::units::nanos((us * 1e3) as u64);
        if self.samples == 0 {
            return "no samples".to_string();
        }
        format!(
            "min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ns(self.min_us),
            ns(self.p50_us),
            ns(self.p90_us),
            ns(self.p99_us),
            ns(self.p999_us),
            ns(self.max_us)
        )
    }
}

/// What one worker did during one reporting interval (about a second).
/// Workers send these to the main thread, which prints the status line.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    /// Units of work completed: echoed messages, deliveries, datagrams,
    /// connections, as the workload counts them.
    pub completed: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Errors and failures seen.
    pub errors: u64,
    /// Connections open at the end of the interval.
    pub open: u64,
    /// Latencies of the work completed.
    pub latency: Latency,
}

impl Interval {
    /// Adds `other` (another worker's interval) into this one.
    pub fn merge(&mut self, other: &Interval) {
        self.completed += other.completed;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.open += other.open;
        self.latency.merge(&other.latency);
    }

    /// Takes the figures collected so far, leaving this interval empty
    /// except for `open`, which is a level, not a count.
    pub fn take(&mut self) -> Interval {
        let taken = self.clone();
        self.completed = 0;
        self.bytes = 0;
        self.errors = 0;
        self.latency.reset();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_exactly() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for us in 1..=99 {
            a.record(Duration::from_micros(us));
        }
        b.record(Duration::from_millis(10));
        a.merge(&b);
        assert_eq!(a.count(), 100);
        let s = a.summary();
        assert!((s.p50_us - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.max_us - 10_000.0).abs() < 10.0, "{s:?}");
        assert!(s.p99_us < 100.0, "{s:?}");
    }

    #[test]
    fn an_empty_histogram_summarises_to_zero() {
        let s = Latency::new().summary();
        assert_eq!(s.samples, 0);
        assert_eq!(s.p99_us, 0.0);
        assert_eq!(s.line(), "no samples");
    }

    #[test]
    fn taking_an_interval_keeps_the_open_level() {
        let mut i = Interval {
            completed: 5,
            open: 3,
            ..Interval::default()
        };
        i.latency.record(Duration::from_micros(5));
        let taken = i.take();
        assert_eq!(
            (taken.completed, taken.open, taken.latency.count()),
            (5, 3, 1)
        );
        assert_eq!((i.completed, i.open, i.latency.count()), (0, 3, 0));
    }
}
