//! Pacing: issuing work at a fixed rate, and measuring latency honestly
//! when doing so.
//!
//! # Open and closed loops
//!
//! Without `--rate`, the load generator runs a *closed loop*: each
//! connection sends its next message as soon as an earlier one comes back,
//! so the server's speed sets the pace. That finds the maximum throughput,
//! but the latency it reports is flattering: while the server stalls, the
//! generator stops sending, and the messages it would have sent during the
//! stall are never measured. This is *coordinated omission*.
//!
//! With `--rate`, the generator runs an *open loop*: message `k` is due at
//! `start + k / rate`, whatever the server does. Its latency is measured
//! from when it was **due**, not from when it was finally written, so a
//! stall shows up in the latency of every message that should have been
//! sent during it (this is what wrk2 does).
//!
//! A [`Pacer`] hands out due times; it never reads the clock itself; the
//! caller passes `now` in, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// Hands out permission to issue the next item, at most `rate` per second
/// on average, or without limit.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// When item 0 was due.
    start: Instant,
    /// Items per second, or `None` for no limit.
    rate: Option<f64>,
    /// How many items have been handed out so far.
    granted: u64,
}

impl Pacer {
    /// A pacer that always says yes.
    pub fn unlimited(start: Instant) -> Pacer {
        Pacer {
            start,
            rate: None,
            granted: 0,
        }
    }

    /// A pacer for `rate` items per second from `start`; a rate of zero or
    /// less, or `None`, means no limit.
    pub fn new(start: Instant, rate: Option<f64>) -> Pacer {
        Pacer {
            start,
            rate: rate.filter(|r| *r > 0.0 && r.is_finite()),
            granted: 0,
        }
    }

    /// Grants the next item if it is due at `now`, returning when it was due
    /// (which is `now` itself for an unlimited pacer). Items not granted
    /// stay due: a caller that falls behind gets them in a burst later,
    /// each with its original due time.
    pub fn take(&mut self, now: Instant) -> Option<Instant> {
        let due = match self.next_due() {
            None => now,
            Some(due) if due <= now => due,
            Some(_) => return None,
        };
        self.granted += 1;
        Some(due)
    }

    /// Returns the last grant, unused: the item is due again, with the
    /// same due time. For a caller that was granted an item and then found
    /// it could not act on it (a full socket buffer).
    pub fn give_back(&mut self) {
        self.granted = self.granted.saturating_sub(1);
    }

    /// When the next item is due, or `None` if the pacer has no limit.
    pub fn next_due(&self) -> Option<Instant> {
        // Computed from the start each time rather than by adding an
        // interval repeatedly, so rounding errors do not accumulate.
        self.rate
            .map(|rate| self.start + Duration::from_secs_f64(self.granted as f64 / rate))
    }

    /// How many items have been granted.
    pub fn granted(&self) -> u64 {
        self.granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_pacer_grants_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::unlimited(t0);
        for _ in 0..1000 {
            assert_eq!(p.take(t0), Some(t0));
        }
        assert_eq!(p.next_due(), None);
        assert_eq!(p.granted(), 1000);
    }

    #[test]
    fn a_paced_pacer_grants_on_schedule() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Some(1000.0));
        assert_eq!(p.take(t0), Some(t0));
        assert_eq!(p.take(t0), None);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(
            p.take(t0 + Duration::from_millis(1)),
            Some(t0 + Duration::from_millis(1))
        );
    }

    #[test]
    fn a_late_caller_gets_the_backlog_with_original_due_times() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Some(100.0));
        let late = t0 + Duration::from_millis(35);
        let granted: Vec<_> = std::iter::from_fn(|| p.take(late)).collect();
        assert_eq!(granted.len(), 4); // due at 0, 10, 20 and 30 ms
        assert_eq!(granted[3], t0 + Duration::from_millis(30));
    }

    #[test]
    fn a_grant_given_back_is_due_again_at_the_same_time() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Some(10.0));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(p.take(later), Some(t0));
        p.give_back();
        assert_eq!(p.take(later), Some(t0));
        assert_eq!(p.granted(), 1);
    }

    #[test]
    fn a_zero_rate_means_no_limit() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, Some(0.0));
        assert_eq!(p.take(t0), Some(t0));
        assert_eq!(p.take(t0), Some(t0));
    }
}
