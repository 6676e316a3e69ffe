//! Throttling failed handshakes per client address (PROTOCOL.md §5.2).
//!
//! A shared key of 256 bits cannot be guessed, but a daemon should still not
//! let one address try keys (or files passwords) as fast as it can connect.
//! The rule, for exec and files alike: after `max_failures` failed
//! handshakes from one client within 60 s, new connections from that
//! client are refused, until `lockout` has passed since its last failure.
//! `max_failures = 0` turns throttling off. A client is an IPv4 address or
//! an IPv6 /64 ([`address_group`] says why).
//!
//! # Checked twice: at accept and at the proof
//!
//! Checking only when a connection is accepted is not enough. A client
//! that opens 200 connections first, and only then answers each challenge
//! wrongly, had all 200 connections accepted while it was not locked, and
//! would get 200 guesses. So the services ask again when the answer (the
//! exec mac, the files proof) arrives, and a locked client's answer is
//! turned away with the throttled error without being evaluated. Both
//! checks are one hash lookup.
//!
//! # How the rule is kept
//!
//! Each address with recent failures has a `FailureRecord` holding the
//! times of its latest failures, at most `max_failures` of them and none
//! older than the window before the newest. When a failure arrives and the
//! record then holds `max_failures` times, those failures all fell within
//! the window, so the address is locked until `now + lockout`. A failure
//! that arrives while the address is locked (from a connection opened just
//! before the lock) moves the end of the lock, since the lockout counts from
//! the *last* failure.
//!
//! Time is an argument, never read here: the caller passes the `Instant`
//! its loop turn started at, and tests pass made-up instants.
//!
//! # Bounded memory
//!
//! Every client that fails once costs an entry, and an attacker may be
//! many clients (an IPv6 /48, a common allocation, holds 65,536 /64s). So
//! the table is kept small in two ways:
//!
//! - **Pruning.** An entry whose lock is over and whose newest failure is
//!   older than the window can never matter again, and is dropped. Scanning
//!   the whole table is O(n), so it is done only when the table has doubled
//!   since the last scan, which makes it O(1) per insertion on average.
//! - **A cap.** The table never holds more than `capacity` addresses
//!   (default 65,536: under 20 MiB at worst with the default limits). When it
//!   is full of live entries, the oldest sixteenth is evicted in one O(n)
//!   pass, unlocked addresses before locked ones and, among those, the
//!   least recently failed first. Evicting in a batch again keeps the cost
//!   per insertion constant on average.
//!
//! The price of the cap is that an attacker with more than `capacity`
//! clients (IPv4 addresses or IPv6 /64s) can make the daemon forget some of
//! them. A production system might keep the table in a structure ordered
//! by time; this one keeps the rule exact for every client it remembers.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::AuthConfig;
use crate::reactor::per_ip::address_group;

/// The window within which `max_failures` failures lock an address.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The most addresses a throttle remembers unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// A full table of live entries evicts `capacity / EVICT_DIVISOR` of them.
const EVICT_DIVISOR: usize = 16;

/// Below this many entries, the table is never scanned for expired ones:
/// small tables cost little, and scanning them often would cost more.
const MIN_PRUNE_LEN: usize = 1024;

/// The longest lockout honoured: `Instant + Duration` panics on overflow,
/// and a configured lockout of `u64::MAX` seconds should mean "for a very
/// long time", not crash the daemon. About 100 years.
const MAX_LOCKOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Failed-handshake counts per client address, shared by the exec and files
/// services.
#[derive(Debug)]
pub struct Throttle {
    /// Failures within `window` that lock an address; 0 = never lock.
    max_failures: u32,
    /// How close together `max_failures` failures must be ([`FAILURE_WINDOW`]
    /// in the daemon).
    window: Duration,
    /// How long after its last failure a locked address stays locked.
    lockout: Duration,
    /// The most entries `clients` may hold.
    capacity: usize,
    /// One entry per client ([`address_group`]) with failures that still
    /// matter (or that have not been pruned yet).
    clients: HashMap<IpAddr, FailureRecord>,
    /// When `clients` reaches this many entries, the next insertion first
    /// prunes expired ones; reset after each scan to twice what survived.
    prune_at_len: usize,
}

/// What the throttle remembers about one address.
#[derive(Debug)]
struct FailureRecord {
    /// Times of the latest failures, oldest first: at most `max_failures`,
    /// none `window` or more older than `last_failure`.
    recent: VecDeque<Instant>,
    /// The newest failure; the lockout counts from it.
    last_failure: Instant,
    /// Set when the address is locked, and moved by each failure while it
    /// is; in the past once the lock is over.
    locked_until: Option<Instant>,
}

impl Throttle {
    /// A throttle that locks an address for `lockout` after `max_failures`
    /// failures within `window`, remembering up to [`DEFAULT_CAPACITY`]
    /// addresses.
    pub fn new(max_failures: u32, window: Duration, lockout: Duration) -> Throttle {
        Throttle::with_capacity(max_failures, window, lockout, DEFAULT_CAPACITY)
    }

    /// The same, remembering at most `capacity` addresses (at least one).
    pub fn with_capacity(
        max_failures: u32,
        window: Duration,
        lockout: Duration,
        capacity: usize,
    ) -> Throttle {
        let capacity = capacity.max(1);
        Throttle {
            max_failures,
            window,
            lockout: lockout.min(MAX_LOCKOUT),
            capacity,
            clients: HashMap::new(),
            prune_at_len: MIN_PRUNE_LEN.min(capacity),
        }
    }

    /// The throttle the daemon's `[auth]` settings describe: `max_failures`,
    /// the 60 s window, and `lockout_s`.
    pub fn from_config(config: &AuthConfig) -> Throttle {
        Throttle::new(
            config.max_failures,
            FAILURE_WINDOW,
            Duration::from_secs(config.lockout_s),
        )
    }

    /// Whether throttling is on (`max_failures > 0`).
    pub fn is_enabled(&self) -> bool {
        self.max_failures > 0
    }

    /// Whether `ip`'s client is locked out at `now`: a new connection from
    /// it must be refused, and an answer to a challenge from it must not be
    /// evaluated.
    pub fn is_locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.clients
            .get(&address_group(ip))
            .is_some_and(|record| record.is_locked(now))
    }

    /// Counts a failed handshake from `ip` at `now`, and returns whether the
    /// address is locked after it (so the caller can log the lock).
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.is_enabled() {
            return false;
        }
        let ip = address_group(ip);
        if !self.clients.contains_key(&ip) {
            self.make_room(now);
        }
        let record = match self.clients.entry(ip) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(FailureRecord {
                recent: VecDeque::new(),
                last_failure: now,
                locked_until: None,
            }),
        };
        let was_locked = record.is_locked(now);
        record.last_failure = now;
        record.recent.push_back(now);
        // Keep only what can still count: the latest `max_failures` times,
        // within the window before this failure.
        let keep = self.max_failures as usize;
        while record.recent.len() > keep {
            record.recent.pop_front();
        }
        while record
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            record.recent.pop_front();
        }
        if was_locked || record.recent.len() >= keep {
            record.locked_until = Some(now + self.lockout);
        }
        record.is_locked(now)
    }

    /// How many addresses the throttle remembers.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Before a new address is inserted: prune expired entries if the table
    /// has grown enough since the last scan, and evict live ones if it is
    /// still full.
    fn make_room(&mut self, now: Instant) {
        if self.clients.len() < self.prune_at_len {
            return;
        }
        let window = self.window;
        self.clients
            .retain(|_, record| !record.is_expired(now, window));
        if self.clients.len() >= self.capacity {
            self.evict_oldest(now, (self.capacity / EVICT_DIVISOR).max(1));
        }
        self.prune_at_len = (2 * self.clients.len())
            .max(MIN_PRUNE_LEN)
            .min(self.capacity);
        // Eviction removes at least one entry, so the new one fits.
        debug_assert!(self.clients.len() < self.capacity);
    }

    /// Drops the `count` entries that matter least: unlocked before locked,
    /// then least recently failed first.
    fn evict_oldest(&mut self, now: Instant, count: usize) {
        let mut by_age: Vec<((bool, Instant), IpAddr)> = self
            .clients
            .iter()
            .map(|(&ip, record)| ((record.is_locked(now), record.last_failure), ip))
            .collect();
        let count = count.min(by_age.len());
        if count == 0 {
            return;
        }
        by_age.select_nth_unstable_by_key(count - 1, |&(age, _)| age);
        for (_, ip) in &by_age[..count] {
            self.clients.remove(ip);
        }
    }
}

/// The daemon's one throttle, shared by the exec and files sessions of
/// every reactor (PROTOCOL.md §8: the throttle is the daemon's, not a
/// loop's), so failures from connections the kernel handed to different
/// reactors add up.
///
/// # Why a `Mutex`, and why it costs nothing per message
///
/// The table is touched when a handshake starts (the check at accept),
/// when an answer to a challenge arrives (the second check) and when a
/// handshake fails: a few times per connection, never per byte of a
/// running program or a transfer. Each time the lock is held for one hash
/// lookup (or one insertion, with the rare amortised prune), and the log
/// line a failure writes is formatted after it is released. With one
/// reactor the lock is never contended: an uncontended `Mutex` is one
/// atomic instruction to take and one to give back. With throttling off
/// (`auth.max_failures = 0`) the check does not take it at all.
///
/// A sharded table (one lock per hash bucket) would let two reactors check
/// different addresses at the same instant; at a handful of lookups per
/// connection it would not be measurable, so it is not done.
#[derive(Debug)]
pub struct SharedThrottle {
    /// Whether `max_failures > 0`, read without the lock: fixed at start.
    enabled: bool,
    throttle: Mutex<Throttle>,
}

impl SharedThrottle {
    pub fn new(throttle: Throttle) -> SharedThrottle {
        SharedThrottle {
            enabled: throttle.is_enabled(),
            throttle: Mutex::new(throttle),
        }
    }

    /// The throttle the daemon's `[auth]` settings describe
    /// ([`Throttle::from_config`]).
    pub fn from_config(config: &AuthConfig) -> SharedThrottle {
        SharedThrottle::new(Throttle::from_config(config))
    }

    /// [`Throttle::is_locked`], over every reactor's failures.
    pub fn is_locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.enabled && self.lock().is_locked(ip, now)
    }

    /// Counts a failed handshake from `peer` at `now` (a Unix-socket
    /// client, with no address, is not counted) and logs it as `what`
    /// failed from `who` for `reason`, with the lock if this failure set it.
    /// Every failure is logged with the peer address (PROTOCOL.md §5.2).
    /// Counted under the lock, logged after it.
    pub fn count_failure(
        &self,
        peer: Option<IpAddr>,
        now: Instant,
        what: &str,
        who: &str,
        reason: &str,
    ) {
        let locked = peer.is_some_and(|ip| self.enabled && self.lock().record_failure(ip, now));
        log::warn!(
            "{what} from {who}: {reason}{}",
            if locked { "; address locked out" } else { "" }
        );
    }

    /// How many addresses the throttle remembers.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A panic while the lock was held (there is no code that can panic
    /// there short of a bug) leaves a table that is still a valid table:
    /// the poisoning is ignored rather than spread to every reactor.
    fn lock(&self) -> MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FailureRecord {
    fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// Whether this entry can no longer affect any decision: not locked,
    /// and its failures too old to count with any future one.
    fn is_expired(&self, now: Instant, window: Duration) -> bool {
        !self.is_locked(now) && now.saturating_duration_since(self.last_failure) >= window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LOCKOUT: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    /// The default rule: 5 failures within 60 s lock for 60 s.
    fn default_throttle() -> Throttle {
        Throttle::new(5, FAILURE_WINDOW, LOCKOUT)
    }

    /// Records failures from `ip` at the given offsets from `start`, and
    /// returns what the last one reported.
    fn fail_at(throttle: &mut Throttle, ip: IpAddr, start: Instant, offsets: &[u64]) -> bool {
        offsets
            .iter()
            .map(|&s| throttle.record_failure(ip, start + secs(s)))
            .last()
            .unwrap_or(false)
    }

    // ---- The window ----

    #[test]
    fn locks_on_the_fifth_failure_within_the_window() {
        let mut throttle = default_throttle();
        let t0 = Instant::now();
        assert!(!fail_at(&mut throttle, ip(1), t0, &[0, 1, 2, 3]));
        assert!(!throttle.is_locked(ip(1), t0 + secs(3)));
        assert!(throttle.record_failure(ip(1), t0 + secs(4)));
        assert!(throttle.is_locked(ip(1), t0 + secs(4)));
        // Other addresses are unaffected.
        assert!(!throttle.is_locked(ip(2), t0 + secs(4)));
    }

    #[test]
    fn failures_spread_over_a_full_window_do_not_lock() {
        let mut throttle = default_throttle();
        let t0 = Instant::now();
        // Five failures spanning exactly 60 s are not "within 60 s".
        assert!(!fail_at(&mut throttle, ip(1), t0, &[0, 15, 30, 45, 60]));
        // Failures keep trickling in at that pace: still never locked.
        assert!(!fail_at(&mut throttle, ip(1), t0, &[75, 90, 105, 120, 135]));
        // One more, 59 s after the fifth-latest, locks.
        let mut other = default_throttle();
        assert!(fail_at(&mut other, ip(1), t0, &[0, 15, 30, 45, 59]));
    }

    // ---- The lockout ----

    #[test]
    fn lock_ends_lockout_after_the_last_failure() {
        let mut throttle = Throttle::new(5, FAILURE_WINDOW, secs(300));
        let t0 = Instant::now();
        fail_at(&mut throttle, ip(1), t0, &[0, 1, 2, 3, 4]);
        // Well after the window, but inside the lockout: still locked.
        assert!(throttle.is_locked(ip(1), t0 + secs(200)));
        let end = t0 + secs(304);
        assert!(throttle.is_locked(ip(1), end - Duration::from_millis(1)));
        assert!(!throttle.is_locked(ip(1), end));
        // A single failure after the lock does not lock again by itself.
        assert!(!throttle.record_failure(ip(1), end + secs(1)));
    }

    #[test]
    fn a_failure_while_locked_extends_the_lock() {
        let mut throttle = default_throttle();
        let t0 = Instant::now();
        fail_at(&mut throttle, ip(1), t0, &[0, 1, 2, 3, 4]);
        // A connection opened before the lock fails later on.
        assert!(throttle.record_failure(ip(1), t0 + secs(50)));
        assert!(throttle.is_locked(ip(1), t0 + secs(100)));
        assert!(!throttle.is_locked(ip(1), t0 + secs(110)));
    }

    #[test]
    fn short_lockout_relocks_while_failures_are_still_within_the_window() {
        let mut throttle = Throttle::new(5, FAILURE_WINDOW, secs(10));
        let t0 = Instant::now();
        fail_at(&mut throttle, ip(1), t0, &[0, 1, 2, 3, 4]);
        assert!(!throttle.is_locked(ip(1), t0 + secs(14)));
        // Failures at 1, 2, 3, 4 and 20 are five within 60 s.
        assert!(throttle.record_failure(ip(1), t0 + secs(20)));
        assert!(throttle.is_locked(ip(1), t0 + secs(29)));
        assert!(!throttle.is_locked(ip(1), t0 + secs(30)));
    }

    #[test]
    fn a_huge_lockout_does_not_overflow() {
        let mut throttle = Throttle::new(1, FAILURE_WINDOW, Duration::from_secs(u64::MAX));
        let t0 = Instant::now();
        assert!(throttle.record_failure(ip(1), t0));
        assert!(throttle.is_locked(ip(1), t0 + secs(10 * 365 * 24 * 3600)));
    }

    #[test]
    fn one_failure_allowed_means_the_first_failure_locks() {
        let mut throttle = Throttle::new(1, FAILURE_WINDOW, LOCKOUT);
        let t0 = Instant::now();
        assert!(throttle.record_failure(ip(1), t0));
    }

    // ---- Switched off ----

    #[test]
    fn zero_max_failures_never_locks_and_remembers_nothing() {
        let mut throttle = Throttle::new(0, FAILURE_WINDOW, LOCKOUT);
        assert!(!throttle.is_enabled());
        let t0 = Instant::now();
        for i in 0..100 {
            assert!(!throttle.record_failure(ip(1), t0 + Duration::from_millis(i)));
        }
        assert!(!throttle.is_locked(ip(1), t0 + secs(1)));
        assert!(throttle.is_empty());
    }

    #[test]
    fn from_config_uses_the_auth_settings() {
        let config = AuthConfig {
            handshake_timeout_s: 10,
            max_failures: 2,
            lockout_s: 7,
        };
        let mut throttle = Throttle::from_config(&config);
        let t0 = Instant::now();
        assert!(!throttle.record_failure(ip(1), t0));
        assert!(throttle.record_failure(ip(1), t0 + secs(59)));
        assert!(throttle.is_locked(ip(1), t0 + secs(65)));
        assert!(!throttle.is_locked(ip(1), t0 + secs(66)));
    }

    #[test]
    fn ipv4_and_ipv6_addresses_are_counted_apart() {
        let mut throttle = Throttle::new(2, FAILURE_WINDOW, LOCKOUT);
        let t0 = Instant::now();
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(!throttle.record_failure(v6, t0));
        assert!(!throttle.record_failure(v4, t0));
        assert!(throttle.record_failure(v6, t0));
        assert!(!throttle.is_locked(v4, t0));
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_record() {
        let mut throttle = Throttle::new(2, FAILURE_WINDOW, LOCKOUT);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:5:6::1".parse().unwrap();
        let b: IpAddr = "2001:db8:5:6:ffff::2".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:5:7::1".parse().unwrap();
        assert!(!throttle.record_failure(a, t0));
        assert!(
            throttle.record_failure(b, t0),
            "the second failure of the /64"
        );
        assert!(throttle.is_locked(a, t0));
        assert!(throttle.is_locked("2001:db8:5:6:1:2:3:4".parse().unwrap(), t0));
        assert!(!throttle.is_locked(elsewhere, t0));
        assert_eq!(throttle.len(), 1);
    }

    // ---- Bounded memory ----

    /// A distinct IPv6 /64 per number (its first address, which is also
    /// the key the table files it under).
    fn nth_ip(n: u32) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (n >> 16) as u16,
            n as u16,
            0,
            0,
            0,
            0,
        ))
    }

    #[test]
    fn expired_entries_are_pruned_as_new_addresses_arrive() {
        let mut throttle = default_throttle();
        let t0 = Instant::now();
        // One failure from each of many addresses, a new batch every
        // window: the old batches expire and are pruned.
        for batch in 0..10u32 {
            let now = t0 + secs(61 * u64::from(batch));
            for n in 0..1000 {
                throttle.record_failure(nth_ip(batch * 1000 + n), now);
            }
            assert!(
                throttle.len() <= 2 * MIN_PRUNE_LEN + 1000,
                "{}",
                throttle.len()
            );
        }
        assert!(throttle.len() < 10_000);
    }

    #[test]
    fn the_table_never_exceeds_its_capacity() {
        let mut throttle = Throttle::with_capacity(5, FAILURE_WINDOW, LOCKOUT, 64);
        let t0 = Instant::now();
        for n in 0..10_000 {
            throttle.record_failure(nth_ip(n), t0 + Duration::from_millis(u64::from(n)));
            assert!(throttle.len() <= 64);
        }
        // The newest address is remembered, the oldest long forgotten.
        assert!(throttle.clients.contains_key(&nth_ip(9_999)));
        assert!(!throttle.clients.contains_key(&nth_ip(0)));
    }

    #[test]
    fn eviction_spares_locked_addresses() {
        let mut throttle = Throttle::with_capacity(5, FAILURE_WINDOW, LOCKOUT, 64);
        let t0 = Instant::now();
        let attacker = ip(66);
        fail_at(&mut throttle, attacker, t0, &[0, 0, 0, 0, 0]);
        // Many newer addresses, each with a single failure, fill the table
        // again and again.
        for n in 0..1000 {
            throttle.record_failure(nth_ip(n), t0 + Duration::from_millis(u64::from(n)));
        }
        assert!(throttle.is_locked(attacker, t0 + secs(2)));
    }

    #[test]
    fn evicts_the_least_recently_failed_first() {
        let mut throttle = Throttle::with_capacity(5, FAILURE_WINDOW, LOCKOUT, 32);
        let t0 = Instant::now();
        let old = ip(1);
        throttle.record_failure(old, t0);
        for n in 0..31 {
            throttle.record_failure(nth_ip(n), t0 + secs(1));
        }
        // The table is full; refreshing the old address makes it the newest.
        throttle.record_failure(old, t0 + secs(2));
        throttle.record_failure(nth_ip(100), t0 + secs(3));
        assert!(throttle.len() < 32);
        assert!(throttle.clients.contains_key(&old));
        assert!(throttle.clients.contains_key(&nth_ip(100)));
        assert_eq!(throttle.clients[&old].recent.len(), 2);
    }

    // ---- One throttle for every reactor ----

    #[test]
    fn failures_counted_from_several_threads_lock_the_address_once_they_add_up() {
        let shared = std::sync::Arc::new(SharedThrottle::new(default_throttle()));
        let t0 = Instant::now();
        // Two "reactors" count two failures each: four, not yet locked.
        let counters: Vec<_> = (0..2)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for i in 0..2 {
                        shared.count_failure(Some(ip(1)), t0 + secs(i), "t", "c", "r");
                    }
                })
            })
            .collect();
        for c in counters {
            c.join().unwrap();
        }
        assert!(!shared.is_locked(ip(1), t0 + secs(2)));
        // The fifth, from either, locks the address for both.
        shared.count_failure(Some(ip(1)), t0 + secs(3), "t", "c", "r");
        assert!(shared.is_locked(ip(1), t0 + secs(3)));
        assert_eq!(shared.len(), 1);
    }

    #[test]
    fn a_shared_throttle_that_is_off_counts_nothing() {
        let shared = SharedThrottle::new(Throttle::new(0, FAILURE_WINDOW, LOCKOUT));
        let t0 = Instant::now();
        for i in 0..10 {
            shared.count_failure(Some(ip(1)), t0 + secs(i), "t", "c", "r");
        }
        assert!(!shared.is_locked(ip(1), t0 + secs(10)));
        assert!(shared.is_empty());
    }
}
