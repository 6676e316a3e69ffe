//! Counters the loop keeps about itself, served by the admin endpoint.
//!
//! They are plain integers owned by the loop thread: no atomics, no locks,
//! because nothing else ever touches them. An increment costs what an add
//! to a cached line costs, which is nothing measurable next to a syscall.

use std::time::{Duration, Instant};

use crate::service_id::ServiceId;

/// Per-service counters (PROTOCOL.md §7).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCounters {
    pub connections_open: u64,
    /// Every accepted connection, rejected ones included.
    pub connections_total: u64,
    /// Turned away by a connection limit or descriptor exhaustion.
    pub connections_rejected: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// Everything the loop counts.
#[derive(Debug, Clone)]
pub struct Metrics {
    services: [ServiceCounters; ServiceId::ALL.len()],
    /// Loop turns (one `poll()` each).
    pub iterations: u64,
    /// Readiness events returned by `poll()`.
    pub events: u64,
    /// Events in the last turn, and how long the last turn's work took
    /// (from `poll()` returning to the next `poll()`).
    pub last_turn_events: u64,
    pub last_turn: Duration,
    /// The longest turn seen: what a client may have waited behind others.
    pub max_turn: Duration,
    /// The sum of every turn's work: the time the loop was not waiting in
    /// `poll()`. Over an interval, its growth divided by the interval is
    /// how busy the one thread is.
    pub busy: Duration,
    /// When the loop was built, which is when the daemon started serving.
    pub started: Instant,
}

impl Metrics {
    /// All counters at zero, counting from `started`.
    pub fn new(started: Instant) -> Metrics {
        Metrics {
            services: Default::default(),
            iterations: 0,
            events: 0,
            last_turn_events: 0,
            last_turn: Duration::ZERO,
            max_turn: Duration::ZERO,
            busy: Duration::ZERO,
            started,
        }
    }

    /// The daemon's totals over several reactors' figures: counts and busy
    /// time add up, the longest turn is the longest of any, and the start
    /// is the earliest.
    pub fn total(all: &[Metrics]) -> Option<Metrics> {
        let (first, rest) = all.split_first()?;
        let mut t = first.clone();
        for m in rest {
            for (sum, c) in t.services.iter_mut().zip(&m.services) {
                sum.connections_open += c.connections_open;
                sum.connections_total += c.connections_total;
                sum.connections_rejected += c.connections_rejected;
                sum.bytes_received += c.bytes_received;
                sum.bytes_sent += c.bytes_sent;
            }
            t.iterations += m.iterations;
            t.events += m.events;
            t.last_turn_events += m.last_turn_events;
            t.last_turn = t.last_turn.max(m.last_turn);
            t.max_turn = t.max_turn.max(m.max_turn);
            t.busy += m.busy;
            t.started = t.started.min(m.started);
        }
        Some(t)
    }

    /// Connections open on this loop, over all services.
    pub fn connections_open(&self) -> u64 {
        self.services.iter().map(|c| c.connections_open).sum()
    }

    pub fn service(&self, id: ServiceId) -> &ServiceCounters {
        &self.services[id as usize]
    }

    pub fn service_mut(&mut self, id: ServiceId) -> &mut ServiceCounters {
        &mut self.services[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_counts_and_keep_the_longest_turn() {
        let start = Instant::now();
        let mut a = Metrics::new(start);
        let mut b = Metrics::new(start);
        a.service_mut(ServiceId::Echo).connections_open = 2;
        b.service_mut(ServiceId::Echo).connections_open = 3;
        b.service_mut(ServiceId::Chat).bytes_sent = 9;
        a.iterations = 10;
        b.iterations = 5;
        a.max_turn = Duration::from_millis(4);
        b.max_turn = Duration::from_millis(7);
        a.busy = Duration::from_millis(1);
        b.busy = Duration::from_millis(2);
        let t = Metrics::total(&[a, b]).unwrap();
        assert_eq!(t.service(ServiceId::Echo).connections_open, 5);
        assert_eq!(t.service(ServiceId::Chat).bytes_sent, 9);
        assert_eq!(t.iterations, 15);
        assert_eq!(t.max_turn, Duration::from_millis(7));
        assert_eq!(t.busy, Duration::from_millis(3));
        assert_eq!(t.connections_open(), 5);
        assert!(Metrics::total(&[]).is_none());
    }
}
