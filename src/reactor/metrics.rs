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

    pub fn service(&self, id: ServiceId) -> &ServiceCounters {
        &self.services[id as usize]
    }

    pub fn service_mut(&mut self, id: ServiceId) -> &mut ServiceCounters {
        &mut self.services[id as usize]
    }
}
