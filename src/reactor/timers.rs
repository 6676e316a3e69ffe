//! Deadlines: idle timeouts, handshake deadlines, kill grace periods.
//!
//! # Wake-ups, not callbacks
//!
//! The queue holds *wake-up calls*: "look at token 17 at 12:00:05". It does
//! not hold the truth about what is due; the connection does. When a wake-up
//! fires, the reactor asks the connection whether anything is really due
//! now (its idle deadline may have moved because a byte arrived since, or
//! the token may belong to a newer connection by now). Stale wake-ups are
//! therefore harmless, and nothing has to be *removed* from the queue when
//! a deadline moves or a connection ends.
//!
//! That is what keeps a busy connection cheap. An idle timeout moves forward
//! with every byte received; re-inserting it each time would cost a heap
//! operation per message. Instead the connection only records when it was
//! last active (one store), and when its one wake-up fires early the reactor
//! schedules the next at the real deadline. Each connection has at most one
//! idle wake-up in the queue at a time.
//!
//! # Stale wake-ups are swept, in bulk
//!
//! Harmless is not free: each stale wake-up holds its place in the heap
//! until its time comes. A connection that closes leaves its idle wake-up
//! behind, and a session its timers, so a daemon taking a thousand short
//! connections a second with a 300 s idle timeout would carry 300,000
//! dead entries. Every wake-up therefore names the connection it was set
//! for by its serial number (unique over the daemon's life; listeners use
//! 0), and when the heap has doubled since it was last swept the reactor
//! sweeps it ([`Timers::sweep`], step "free" of the turn): one pass that
//! keeps the wake-ups whose connection is still there. The pass is
//! `O(n)`, paid once per doubling, so `O(1)` per wake-up scheduled, and
//! the heap stays within about twice the wake-ups that can still matter.
//! The serial also lets a wake-up that fires check it still means the
//! connection now on its token.
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

/// How large the heap may grow before it is first swept. Below this a sweep
/// would save less than it costs.
pub const SWEEP_FLOOR: usize = 4_096;

/// One wake-up: when, for which token and which connection on it (its
/// serial; 0 for a listener), and why.
type Entry = (Instant, usize, u64, Wake);

/// The earliest-first queue of wake-ups.
#[derive(Debug)]
pub struct Timers {
    /// Min-heap on the deadline. `Reverse` turns std's max-heap around.
    heap: BinaryHeap<Reverse<Entry>>,
    /// The size past which the next sweep is due: twice what the last
    /// sweep kept, and never less than [`SWEEP_FLOOR`].
    sweep_at: usize,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            sweep_at: SWEEP_FLOOR,
        }
    }
}

impl Timers {
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Schedules a wake-up at `at` for the connection with `serial` on
    /// `token` (0 for a listener).
    pub fn schedule(&mut self, at: Instant, token: usize, serial: u64, wake: Wake) {
        self.heap.push(Reverse((at, token, serial, wake)));
    }

    /// How long `poll` may sleep before the earliest wake-up is due:
    /// `None` = no wake-up at all, sleep until an event arrives.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, ..))| at.saturating_duration_since(now))
    }

    /// Takes the next wake-up that is due at `now`, earliest first, as
    /// (token, serial, why).
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, Wake)> {
        match self.heap.peek() {
            Some(Reverse((at, ..))) if *at <= now => self
                .heap
                .pop()
                .map(|Reverse((_, token, serial, wake))| (token, serial, wake)),
            _ => None,
        }
    }

    /// Wake-ups in the queue, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether the queue has grown enough since the last sweep to be
    /// swept again.
    pub fn sweep_due(&self) -> bool {
        self.heap.len() > self.sweep_at
    }

    /// Keeps only the wake-ups for which `live(token, serial)` holds, and
    /// returns how many were dropped. `O(n)`.
    pub fn sweep(&mut self, mut live: impl FnMut(usize, u64) -> bool) -> usize {
        let before = self.heap.len();
        self.heap
            .retain(|Reverse((_, token, serial, _))| live(*token, *serial));
        self.sweep_at = (2 * self.heap.len()).max(SWEEP_FLOOR);
        before - self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_come_out_earliest_first_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0 + Duration::from_secs(3), 3, 30, Wake::Idle);
        timers.schedule(t0 + Duration::from_secs(1), 1, 10, Wake::Session);
        timers.schedule(t0 + Duration::from_secs(2), 2, 20, Wake::Linger);
        assert_eq!(timers.timeout(t0), Some(Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(later), Some((1, 10, Wake::Session)));
        assert_eq!(timers.pop_due(later), Some((2, 20, Wake::Linger)));
        assert_eq!(timers.pop_due(later), None);
        assert_eq!(timers.timeout(later), Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_past_deadline_means_do_not_sleep() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0, 9, 0, Wake::Accept);
        assert_eq!(
            timers.timeout(t0 + Duration::from_secs(1)),
            Some(Duration::ZERO)
        );
        assert_eq!(Timers::new().timeout(t0), None);
    }

    #[test]
    fn a_sweep_keeps_the_live_wake_ups_in_order_and_waits_for_the_heap_to_double() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        // Connection serials 1..=6000 on tokens 0..6000; the even ones
        // are still open.
        for serial in 1..=6_000u64 {
            let at = t0 + Duration::from_millis(6_001 - serial);
            timers.schedule(at, serial as usize - 1, serial, Wake::Idle);
        }
        assert!(timers.sweep_due(), "{} > {SWEEP_FLOOR}", timers.len());
        let dropped = timers.sweep(|token, serial| serial % 2 == 0 && token as u64 == serial - 1);
        assert_eq!(dropped, 3_000);
        assert_eq!(timers.len(), 3_000);
        // The next sweep waits for the heap to double what was kept.
        assert!(!timers.sweep_due());
        for k in 0..3_000u64 {
            timers.schedule(t0, 0, 10_000 + k, Wake::Session);
        }
        assert!(!timers.sweep_due(), "6,000 is not over twice 3,000");
        timers.schedule(t0, 0, 20_000, Wake::Session);
        assert!(timers.sweep_due());
        // What was kept still comes out earliest first.
        timers.sweep(|_, serial| serial < 10_000);
        let mut last = None;
        let mut n = 0;
        while let Some((_, serial, _)) = timers.pop_due(t0 + Duration::from_secs(7)) {
            assert_eq!(serial % 2, 0);
            assert!(last.is_none_or(|l| serial < l), "out of order");
            last = Some(serial);
            n += 1;
        }
        assert_eq!(n, 3_000);
    }
}
