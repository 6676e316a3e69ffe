//! Counters the loop keeps about itself, served by the admin endpoint.
//!
//! They are plain integers owned by the loop thread: no atomics, no locks,
//! because nothing else ever touches them. An increment costs what an add
//! to a cached line costs, which is nothing measurable next to a syscall.
//!
//! # How long the turns take
//!
//! A single-threaded daemon is only as good as its slowest turn: every
//! client that became ready during a 50 ms turn waited up to 50 ms, however
//! quick its own request was. The longest turn alone (`max_turn`) says that
//! it happened once; [`TurnHistogram`] says how often, in fixed buckets a
//! Prometheus server can turn into percentiles. Recording one turn is a
//! binary search over [`TURN_BUCKETS`] (four comparisons) and an increment:
//! no allocation, no clock read beyond the one that measured the turn.
//!
//! [`TurnTally`] is the other half, in the manner of Redis's latency
//! monitor: counts of what one turn did (callbacks per service, timers,
//! jobs, bytes), reset at the start of each turn and read only when the
//! turn took longer than `limits.slow_turn_ms`, so the log line can say
//! what the time went on.

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
    /// Units of input handed to the service: one per read that brought
    /// bytes, one per datagram. TCP may split or merge what a client wrote,
    /// so this counts the daemon's work, not the client's messages; for a
    /// request-reply load (an echo at depth 1) the two are the same.
    pub messages_received: u64,
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
    /// Wake-ups in the timer queue at the end of the last turn, stale ones
    /// included: bounded by the sweep (timers.rs) to about twice the live
    /// ones, or `SWEEP_FLOOR`.
    pub timers_queued: u64,
    /// The sum of every turn's work: the time the loop was not waiting in
    /// `poll()`. Over an interval, its growth divided by the interval is
    /// how busy the one thread is.
    pub busy: Duration,
    /// When the loop was built, which is when the daemon started serving.
    pub started: Instant,
    /// Every turn's work time, by bucket.
    pub turn_histogram: TurnHistogram,
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
            timers_queued: 0,
            busy: Duration::ZERO,
            started,
            turn_histogram: TurnHistogram::default(),
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
                sum.messages_received += c.messages_received;
            }
            t.turn_histogram.add(&m.turn_histogram);
            t.iterations += m.iterations;
            t.events += m.events;
            t.last_turn_events += m.last_turn_events;
            t.last_turn = t.last_turn.max(m.last_turn);
            t.max_turn = t.max_turn.max(m.max_turn);
            t.timers_queued += m.timers_queued;
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

/// The upper bounds of the turn histogram's buckets, inclusive (`le` in
/// Prometheus' terms), from 50 µs to 1 s in steps of 1, 2.5 and 5. A turn
/// longer than the last bound is counted only in the overflow bucket
/// (`le="+Inf"`). The 10 ms bound is the loop's goal (BENCHMARKS.md), and
/// 50 ms the default of `limits.slow_turn_ms`, so both can be read off.
pub const TURN_BUCKETS: [Duration; 14] = [
    Duration::from_micros(50),
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2_500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// How many turns fell in each bucket of [`TURN_BUCKETS`], plus the
/// overflow bucket, with their sum and count. Counts are per bucket here;
/// [`TurnHistogram::cumulative`] gives them the way Prometheus wants them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnHistogram {
    /// `counts[i]` holds turns in `(TURN_BUCKETS[i-1], TURN_BUCKETS[i]]`;
    /// the last entry the turns longer than every bound.
    counts: [u64; TURN_BUCKETS.len() + 1],
    /// The sum of the recorded turns.
    sum: Duration,
    /// The number of recorded turns.
    count: u64,
}

impl TurnHistogram {
    /// Counts one turn. A binary search over the fourteen bounds: four
    /// comparisons, then one increment.
    pub fn record(&mut self, turn: Duration) {
        let i = TURN_BUCKETS.partition_point(|&bound| bound < turn);
        self.counts[i] += 1;
        self.sum += turn;
        self.count += 1;
    }

    /// `(bound, turns no longer than bound)` for each finite bound, in
    /// order: Prometheus' cumulative `le` buckets. The `+Inf` bucket is
    /// [`TurnHistogram::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        TURN_BUCKETS
            .iter()
            .zip(&self.counts)
            .scan(0, |total, (&bound, &n)| {
                *total += n;
                Some((bound, *total))
            })
    }

    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Adds another loop's turns to these, for the daemon's totals.
    pub fn add(&mut self, other: &TurnHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// What one turn did, for the line a slow turn logs. Reset by
/// [`TurnTally::begin`] when `poll()` returns; each step adds to it.
#[derive(Debug, Clone, Default)]
pub struct TurnTally {
    /// Session callbacks (and datagram answers) run, per service.
    pub callbacks: [u32; ServiceId::ALL.len()],
    /// Wake-ups fired by the timer queue.
    pub timers: u32,
    /// Finished helper jobs handed back (to their session or their cleanup).
    pub jobs: u32,
    /// Letters delivered to connections' outboxes (a chat line to a room
    /// of N is N letters). Accepting stops for the turn past
    /// `MAIL_PER_TURN`, so joins to a big room spread over turns.
    pub letters: u32,
    /// Letters callbacks announced for later ([`Cx::owe_letters`]: a chat
    /// line left in the reactors' inboxes, delivered by their drain step),
    /// which accepting counts with `letters`.
    ///
    /// [`Cx::owe_letters`]: super::Cx::owe_letters
    pub owed: u32,
    /// Connections written to (one `flush` that reached the socket each).
    /// Acting on events, the ready queue and the flush of mailed
    /// connections stop for the turn past `WRITES_PER_TURN`.
    pub writes: u32,
    /// Each service's byte counters when the turn began; the turn's bytes
    /// are the difference, worked out only for a slow turn.
    bytes_at_start: [(u64, u64); ServiceId::ALL.len()],
}

impl TurnTally {
    /// Starts a turn's count: counters to zero, byte counters remembered.
    pub fn begin(&mut self, metrics: &Metrics) {
        self.callbacks = Default::default();
        self.timers = 0;
        self.jobs = 0;
        self.letters = 0;
        self.owed = 0;
        self.writes = 0;
        for (at, c) in self.bytes_at_start.iter_mut().zip(&metrics.services) {
            *at = (c.bytes_received, c.bytes_sent);
        }
    }

    /// One line saying what the turn did, e.g. `412 events, 1000 ready,
    /// read 6144 B, wrote 6144000 B, callbacks chat 1001 admin 1, timers 0,
    /// jobs 0`. Built only for a slow turn, so it may allocate.
    pub fn describe(&self, metrics: &Metrics, events: u64, ready: usize) -> String {
        use std::fmt::Write;
        let (mut read, mut wrote) = (0, 0);
        for (&(r, w), c) in self.bytes_at_start.iter().zip(&metrics.services) {
            read += c.bytes_received.saturating_sub(r);
            wrote += c.bytes_sent.saturating_sub(w);
        }
        let mut line =
            format!("{events} events, {ready} ready, read {read} B, wrote {wrote} B, callbacks");
        let mut any = false;
        for id in ServiceId::ALL {
            let n = self.callbacks[id as usize];
            if n > 0 {
                let _ = write!(line, " {id} {n}");
                any = true;
            }
        }
        if !any {
            line.push_str(" none");
        }
        let _ = write!(line, ", timers {}, jobs {}", self.timers, self.jobs);
        line
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

    #[test]
    fn totals_add_messages_and_turn_histograms() {
        let start = Instant::now();
        let mut a = Metrics::new(start);
        let mut b = Metrics::new(start);
        a.service_mut(ServiceId::Echo).messages_received = 4;
        b.service_mut(ServiceId::Echo).messages_received = 6;
        a.turn_histogram.record(Duration::from_micros(10));
        b.turn_histogram.record(Duration::from_millis(7));
        b.turn_histogram.record(Duration::from_millis(7));
        let t = Metrics::total(&[a, b]).unwrap();
        assert_eq!(t.service(ServiceId::Echo).messages_received, 10);
        assert_eq!(t.turn_histogram.count(), 3);
        let le_10ms = t
            .turn_histogram
            .cumulative()
            .find(|(bound, _)| *bound == Duration::from_millis(10))
            .unwrap();
        assert_eq!(le_10ms.1, 3);
    }

    #[test]
    fn a_turn_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let mut h = TurnHistogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_micros(50)); // On a bound: that bucket.
        h.record(Duration::from_nanos(50_001)); // Just past it: the next.
        h.record(Duration::from_millis(7));
        h.record(Duration::from_secs(3)); // Past every bound.
        let cumulative: Vec<(Duration, u64)> = h.cumulative().collect();
        assert_eq!(cumulative.len(), TURN_BUCKETS.len());
        assert_eq!(cumulative[0], (Duration::from_micros(50), 2));
        assert_eq!(cumulative[1], (Duration::from_micros(100), 3));
        assert_eq!(cumulative[5], (Duration::from_micros(2_500), 3));
        assert_eq!(cumulative[6], (Duration::from_millis(5), 3));
        assert_eq!(cumulative[7], (Duration::from_millis(10), 4));
        assert_eq!(cumulative[13], (Duration::from_secs(1), 4));
        assert_eq!(h.count(), 5);
        assert_eq!(
            h.sum(),
            Duration::from_secs(3) + Duration::from_millis(7) + Duration::from_nanos(100_001)
        );
    }

    #[test]
    fn the_bounds_grow_strictly_so_the_search_is_sound() {
        assert!(TURN_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_tally_names_the_services_called_and_the_bytes_of_this_turn_only() {
        let mut m = Metrics::new(Instant::now());
        m.service_mut(ServiceId::Echo).bytes_received = 100;
        let mut t = TurnTally::default();
        t.begin(&m);
        m.service_mut(ServiceId::Echo).bytes_received += 10;
        m.service_mut(ServiceId::Echo).bytes_sent += 7;
        t.callbacks[ServiceId::Echo as usize] += 3;
        t.timers = 2;
        t.jobs = 1;
        assert_eq!(
            t.describe(&m, 4, 1),
            "4 events, 1 ready, read 10 B, wrote 7 B, callbacks echo 3, timers 2, jobs 1"
        );
        t.begin(&m);
        assert_eq!(
            t.describe(&m, 0, 0),
            "0 events, 0 ready, read 0 B, wrote 0 B, callbacks none, timers 0, jobs 0"
        );
    }
}
