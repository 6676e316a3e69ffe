//! Deadlines: idle timeouts, handshake deadlines, kill grace periods.
//!
//! # Wake-ups, not callbacks
//!
//! The queue holds *wake-up calls*: "look at token 17 at 12:00:05". It does
//! not hold the truth about what is due; the connection does. When a wake-up
//! fires, the reactor asks the connection whether anything is really due
//! now (its idle deadline may have moved because a byte arrived since, or
//! the token may belong to a newer connection by now). Stale wake-ups are
//! therefore harmless, and nothing ever has to be *removed* from the queue.
//!
//! That is what keeps a busy connection cheap. An idle timeout moves forward
//! with every byte received; re-inserting it each time would cost a heap
//! operation per message. Instead the connection only records when it was
//! last active (one store), and when its one wake-up fires early the reactor
//! schedules the next at the real deadline. Each connection has at most one
//! idle wake-up in the queue at a time.
//!
//! # Cost
//!
//! A binary heap: `O(log n)` to add a wake-up and to take the earliest,
//! `O(1)` to peek at the earliest for the poll timeout. Redis scans all its
//! timers linearly (`ae.c` notes it "does not need" better); a daemon with
//! ten thousand idle-timed connections does. A hashed timing wheel would
//! make insertion `O(1)` at the price of a fixed resolution; the heap keeps
//! exact deadlines and is simpler to read.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Why a wake-up was scheduled; decides what the reactor checks when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wake {
    /// Check the connection's idle deadline.
    Idle,
    /// Call the session's `on_timer` (handshake deadline, kill grace, ...).
    Session,
    /// A closing connection has lingered long enough: drop it.
    Linger,
    /// Try accepting again on a listener paused by descriptor exhaustion.
    Accept,
    /// See whether the connection's stall with this count is still under
    /// way (`Connection::stall`): then its client is too slow.
    Stall(u8),
}

/// The earliest-first queue of wake-ups.
#[derive(Debug, Default)]
pub struct Timers {
    /// Min-heap on the deadline. `Reverse` turns std's max-heap around.
    heap: BinaryHeap<Reverse<(Instant, usize, Wake)>>,
}

impl Timers {
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Schedules a wake-up for `token` at `at`.
    pub fn schedule(&mut self, at: Instant, token: usize, wake: Wake) {
        self.heap.push(Reverse((at, token, wake)));
    }

    /// How long `poll` may sleep before the earliest wake-up is due:
    /// `None` = no wake-up at all, sleep until an event arrives.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _, _))| at.saturating_duration_since(now))
    }

    /// Takes the next wake-up that is due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, Wake)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self
                .heap
                .pop()
                .map(|Reverse((_, token, wake))| (token, wake)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_come_out_earliest_first_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0 + Duration::from_secs(3), 3, Wake::Idle);
        timers.schedule(t0 + Duration::from_secs(1), 1, Wake::Session);
        timers.schedule(t0 + Duration::from_secs(2), 2, Wake::Linger);
        assert_eq!(timers.timeout(t0), Some(Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(later), Some((1, Wake::Session)));
        assert_eq!(timers.pop_due(later), Some((2, Wake::Linger)));
        assert_eq!(timers.pop_due(later), None);
        assert_eq!(timers.timeout(later), Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_past_deadline_means_do_not_sleep() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0, 9, Wake::Accept);
        assert_eq!(
            timers.timeout(t0 + Duration::from_secs(1)),
            Some(Duration::ZERO)
        );
        assert_eq!(Timers::new().timeout(t0), None);
    }
}
