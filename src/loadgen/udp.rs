//! `bench udp`: datagram round trips through a UDP echo server.
//!
//! ```text
//! socketlab bench udp --addr A --count N --size S [--window W] [--rate R] [--timeout T]
//! ```
//!
//! # Datagrams
//!
//! Each datagram is numbered and carries its send time, then a body drawn
//! from a seeded stream (see [`super::pattern`]) keyed by both:
//!
//! ```text
//!   | number: u64 LE | sent: u64 LE, ns since the run started | body ... |
//! ```
//!
//! so a reply is checked completely: its length, that its number was sent
//! and not already answered (**duplication**), and that its body matches
//! its number and time (**corruption**).
//!
//! # Loss is a measurement, not a failure
//!
//! UDP may drop datagrams, and does when a socket buffer overflows. At most
//! `--window` datagrams are outstanding; one not answered within
//! `--timeout` counts as lost and frees its place in the window (without
//! that, every loss would shrink the window for good). A reply that comes
//! after its timeout is counted as late and no longer lost. After the last
//! datagram is sent, the run waits at most `--timeout` for stragglers.
//! Loss is reported; the exit status is 1 only for corrupted, duplicated or
//! unknown replies, or when no reply came back at all.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::pacing::Pacer;
use super::pattern::Pattern;
use super::report::{Failure, Figures};
use super::stats::{Interval, Latency, LatencySummary};
use super::units::{self, parse_duration, parse_size};
use super::{Common, Outcome, Session, UsageError};

/// Arguments of `socketlab bench udp`.
#[derive(Debug, clap::Args)]
pub struct UdpArgs {
    /// The UDP echo server's address.
    #[arg(long, default_value = "127.0.0.1:7007")]
    pub addr: String,
    /// Datagrams to send.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub count: u64,
    /// Bytes per datagram (16 to 65507).
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Datagrams outstanding at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: u64,
    /// Datagrams per second (default: as fast as the window allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to wait for a reply before counting the datagram lost.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Upper bound on the time spent sending.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub time_limit: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// The figures of a UDP run.
#[derive(Debug, Serialize)]
pub struct UdpFigures {
    pub count: u64,
    pub size: usize,
    pub window: u64,
    pub sent: u64,
    /// Datagrams whose reply came back intact (late ones included).
    pub answered: u64,
    pub lost: u64,
    pub loss_percent: f64,
    /// Answered after their timeout had passed.
    pub late: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    /// ICMP "port unreachable" reports: nothing listening.
    pub unreachable: u64,
    pub datagrams_per_s: f64,
    pub latency: LatencySummary,
}

impl Figures for UdpFigures {
    fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "datagrams",
                format!(
                    "{} sent of {}, {} answered = {} /s ({} B each, window {})",
                    units::count(self.sent),
                    units::count(self.count),
                    units::count(self.answered),
                    units::rate(self.datagrams_per_s),
                    self.size,
                    self.window
                ),
            ),
            (
                "loss",
                format!(
                    "{} lost ({:.3}%), {} late",
                    units::count(self.lost),
                    self.loss_percent,
                    units::count(self.late)
                ),
            ),
            (
                "bad replies",
                format!(
                    "{} duplicated, {} corrupted, {} unreachable",
                    units::count(self.duplicated),
                    units::count(self.corrupted),
                    units::count(self.unreachable)
                ),
            ),
            ("latency", self.latency.line()),
        ]
    }
}

/// Runs `bench udp`.
pub fn run(args: UdpArgs, stop: Arc<AtomicBool>) -> ExitCode {
    let addr = match validate(&args) {
        Ok(addr) => addr,
        Err(e) => return super::usage_error(e),
    };
    let common = args.common.clone();
    super::measure(
        "udp",
        addr,
        &common,
        Some("echo"),
        "dgram/s",
        stop,
        |session| {
            let (progress_tx, progress_rx) = session.progress_channel();
            let pinger = Pinger::new(&args, addr, session, progress_tx);
            session.run_worker(
                "bench-udp",
                progress_rx,
                move || pinger.and_then(Pinger::run),
                || UdpFigures::empty(&args),
            )
        },
    )
}

fn validate(args: &UdpArgs) -> Result<SocketAddr, UsageError> {
    if !(HEADER..=65_507).contains(&args.size) {
        return Err(UsageError(format!(
            "--size must be {HEADER} to 65507 bytes"
        )));
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(UsageError("--rate must be a positive number".into()));
    }
    super::resolve(&args.addr)
}

impl UdpFigures {
    fn empty(args: &UdpArgs) -> UdpFigures {
        UdpFigures {
            count: args.count,
            size: args.size,
            window: args.window,
            sent: 0,
            answered: 0,
            lost: 0,
            loss_percent: 0.0,
            late: 0,
            duplicated: 0,
            corrupted: 0,
            unreachable: 0,
            datagrams_per_s: 0.0,
            latency: Latency::new().summary(),
        }
    }
}

/// Number and send time.
const HEADER: usize = 16;

/// The seed all datagram bodies derive from.
const RUN_SEED: u64 = 0x7564_705f_6563_686f;

/// Writes datagram `seq`, sent `sent_ns` after the start, into `buf`.
fn write_datagram(seq: u64, sent_ns: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    body_pattern(seq, sent_ns).fill(0, &mut buf[HEADER..]);
}

/// The body of a datagram depends on its number and its time, so damage to
/// either shows up in the body.
fn body_pattern(seq: u64, sent_ns: u64) -> Pattern {
    Pattern::for_connection(RUN_SEED ^ sent_ns, seq)
}

/// Why a reply is not one of the datagrams sent.
#[derive(Debug, PartialEq, Eq)]
enum BadReply {
    Length(usize),
    Body(String),
}

/// Reads a reply's number and send time, checking its length and body.
fn read_datagram(reply: &[u8], size: usize) -> Result<(u64, u64), BadReply> {
    if reply.len() != size {
        return Err(BadReply::Length(reply.len()));
    }
    let seq = u64::from_le_bytes(reply[..8].try_into().expect("8 bytes"));
    let sent_ns = u64::from_le_bytes(reply[8..16].try_into().expect("8 bytes"));
    body_pattern(seq, sent_ns)
        .check(0, &reply[HEADER..])
        .map_err(|m| BadReply::Body(format!("body byte {} differs", m.offset)))?;
    Ok((seq, sent_ns))
}

/// A set of datagram numbers, one bit each.
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(len: u64) -> BitSet {
        BitSet(vec![0; len.div_ceil(64) as usize])
    }
    fn contains(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn insert(&mut self, i: u64) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sending,
    /// Everything sent (or time is up); waiting for stragglers.
    Waiting {
        until: Instant,
    },
    Done,
}

/// At most this many individual bad replies are listed; the figures count all.
const MAX_LISTED: usize = 20;
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
const SOCKET: Token = Token(0);

/// The worker: one connected UDP socket.
struct Pinger {
    size: usize,
    count: u64,
    window: u64,
    timeout: Duration,
    send_until: Instant,
    start: Instant,
    stop: Arc<AtomicBool>,
    progress: Sender<Interval>,
    poll: Poll,
    socket: UdpSocket,
    pacer: Pacer,
    phase: Phase,
    /// Datagrams sent, oldest first, until answered or expired.
    in_flight: VecDeque<(u64, Instant)>,
    /// Sent and neither answered nor expired.
    outstanding: u64,
    answered: BitSet,
    expired: BitSet,
    figures: UdpFigures,
    latency: Latency,
    interval: Interval,
    stopped_at: Option<Instant>,
    failures: Vec<Failure>,
    buf: Vec<u8>,
}

impl Pinger {
    fn new(
        args: &UdpArgs,
        addr: SocketAddr,
        session: &Session,
        progress: Sender<Interval>,
    ) -> io::Result<Pinger> {
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal address")
        } else {
            "[::]:0".parse().expect("literal address")
        };
        let mut socket = UdpSocket::bind(local)?;
        // Connected: the kernel drops datagrams from anyone else, and
        // reports ICMP errors for this peer as errors on receive.
        socket.connect(addr)?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Pinger {
            size: args.size,
            count: args.count,
            window: args.window,
            timeout: args.timeout,
            send_until: session.start + args.time_limit,
            start: session.start,
            stop: Arc::clone(&session.stop),
            progress,
            poll,
            socket,
            pacer: Pacer::new(session.start, args.rate),
            phase: Phase::Sending,
            in_flight: VecDeque::new(),
            outstanding: 0,
            answered: BitSet::new(args.count),
            expired: BitSet::new(args.count),
            figures: UdpFigures::empty(args),
            latency: Latency::new(),
            interval: Interval::default(),
            stopped_at: None,
            failures: Vec::new(),
            buf: vec![0; 65_536],
        })
    }

    fn run(mut self) -> io::Result<Outcome<UdpFigures>> {
        let mut events = Events::with_capacity(16);
        let mut next_report = self.start + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            self.expire(now);
            match self.phase {
                Phase::Sending => {
                    if self.figures.sent == self.count
                        || now >= self.send_until
                        || self.stop.load(Ordering::Relaxed)
                    {
                        self.stopped_at = Some(now);
                        // Every datagram in flight expires within `timeout`.
                        self.phase = Phase::Waiting {
                            until: now + self.timeout,
                        };
                        continue;
                    }
                    self.send(now);
                }
                Phase::Waiting { until } => {
                    if self.outstanding == 0 || now >= until {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Done => break,
            }
            if now >= next_report {
                self.interval.open = 1;
                let _ = self.progress.send(self.interval.take());
                while next_report <= now {
                    next_report += Duration::from_secs(1);
                }
            }
            let mut wake = next_report;
            if let Some((_, sent)) = self.in_flight.front() {
                wake = wake.min(*sent + self.timeout);
            }
            match self.phase {
                Phase::Sending if self.outstanding < self.window => {
                    wake = wake.min(self.pacer.next_due().unwrap_or(now + MAX_POLL_WAIT));
                }
                Phase::Waiting { until } => wake = wake.min(until),
                _ => {}
            }
            let timeout = wake.saturating_duration_since(now).min(MAX_POLL_WAIT);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if super::interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            if events.iter().any(|e| e.is_readable() || e.is_error()) {
                self.receive();
            }
        }
        let _ = self.progress.send(self.interval.take());
        Ok(self.outcome())
    }

    /// Sends while the window, the pacer and the count allow.
    fn send(&mut self, now: Instant) {
        while self.figures.sent < self.count && self.outstanding < self.window {
            let Some(due) = self.pacer.take(now) else {
                return;
            };
            let seq = self.figures.sent;
            let sent_ns = due.saturating_duration_since(self.start).as_nanos() as u64;
            write_datagram(seq, sent_ns, &mut self.buf[..self.size]);
            match self.socket.send(&self.buf[..self.size]) {
                Ok(_) => {
                    self.figures.sent += 1;
                    self.outstanding += 1;
                    self.in_flight.push_back((seq, due));
                }
                Err(e)
                    if super::would_block(&e) || e.kind() == io::ErrorKind::ConnectionRefused =>
                {
                    // The send buffer is full (WRITABLE will follow), or a
                    // pending ICMP error surfaced here; either way this
                    // datagram was not sent, so give the pacer's grant
                    // back: it goes out later with its original due time.
                    if !super::would_block(&e) {
                        self.figures.unreachable += 1;
                        self.interval.errors += 1;
                    }
                    self.pacer.give_back();
                    return;
                }
                Err(e) if super::interrupted(&e) => {}
                Err(e) => {
                    self.record_failure(format!("send failed: {e}"));
                    self.phase = Phase::Done;
                    return;
                }
            }
        }
    }

    /// Receives every reply waiting on the socket.
    fn receive(&mut self) {
        loop {
            let result = self.socket.recv(&mut self.buf);
            let now = Instant::now();
            match result {
                Ok(n) => self.on_reply(n, now),
                Err(e) if super::would_block(&e) => return,
                Err(e) if super::interrupted(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.figures.unreachable += 1;
                    self.interval.errors += 1;
                }
                Err(e) => {
                    self.record_failure(format!("receive failed: {e}"));
                    return;
                }
            }
        }
    }

    fn on_reply(&mut self, n: usize, now: Instant) {
        let (seq, sent_ns) = match read_datagram(&self.buf[..n], self.size) {
            Ok(reply) => reply,
            Err(bad) => {
                self.figures.corrupted += 1;
                let error = match bad {
                    BadReply::Length(len) => {
                        format!(
                            "a reply of {len} bytes to datagrams of {} (corrupted)",
                            self.size
                        )
                    }
                    BadReply::Body(what) => format!("a reply whose {what} (corrupted)"),
                };
                self.record_failure(error);
                return;
            }
        };
        if seq >= self.figures.sent {
            self.figures.corrupted += 1;
            self.record_failure(format!("a reply to datagram {seq}, which was never sent"));
            return;
        }
        if self.answered.contains(seq) {
            self.figures.duplicated += 1;
            self.record_failure(format!("datagram {seq} answered twice (duplicated)"));
            return;
        }
        self.answered.insert(seq);
        self.figures.answered += 1;
        if self.expired.contains(seq) {
            self.figures.late += 1;
        } else {
            self.outstanding -= 1;
        }
        let latency = now.saturating_duration_since(self.start + Duration::from_nanos(sent_ns));
        self.latency.record(latency);
        self.interval.latency.record(latency);
        self.interval.completed += 1;
        self.interval.bytes += n as u64;
    }

    /// Forgets answered datagrams at the front of the queue and expires
    /// those whose timeout has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&(seq, sent)) = self.in_flight.front() {
            if self.answered.contains(seq) {
                self.in_flight.pop_front();
            } else if now.saturating_duration_since(sent) >= self.timeout {
                self.in_flight.pop_front();
                self.expired.insert(seq);
                self.outstanding -= 1;
            } else {
                break;
            }
        }
    }

    fn record_failure(&mut self, error: String) {
        self.interval.errors += 1;
        if self.failures.len() < MAX_LISTED {
            self.failures.push(Failure::run(error));
        }
    }

    fn outcome(mut self) -> Outcome<UdpFigures> {
        let elapsed = self
            .stopped_at
            .unwrap_or_else(Instant::now)
            .duration_since(self.start);
        let f = &mut self.figures;
        f.lost = f.sent - f.answered;
        f.loss_percent = if f.sent > 0 {
            100.0 * f.lost as f64 / f.sent as f64
        } else {
            0.0
        };
        f.datagrams_per_s = f.answered as f64 / elapsed.as_secs_f64().max(1e-9);
        f.latency = self.latency.summary();
        let bad = f.corrupted + f.duplicated;
        if bad as usize > self.failures.len() {
            self.failures.push(Failure::run(format!(
                "{} bad replies in all (only the first {MAX_LISTED} are listed)",
                bad
            )));
        }
        if f.answered == 0 && f.sent > 0 {
            let why = if f.unreachable > 0 {
                "port unreachable: nothing listens there; is `socketlab serve` running there?"
            } else {
                "no reply within the timeout"
            };
            self.failures.push(Failure::run(format!(
                "none of {} datagrams came back ({why})",
                f.sent
            )));
        }
        Outcome {
            completed: self.figures.answered,
            figures: self.figures,
            elapsed,
            failures: self.failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reads_back_as_written() {
        let mut buf = vec![0; 100];
        write_datagram(7, 12_345, &mut buf);
        assert_eq!(read_datagram(&buf, 100), Ok((7, 12_345)));
    }

    #[test]
    fn damage_anywhere_is_caught() {
        let mut buf = vec![0; 100];
        write_datagram(7, 12_345, &mut buf);
        assert_eq!(read_datagram(&buf[..99], 100), Err(BadReply::Length(99)));
        for at in [0, 9, 16, 99] {
            let mut bad = buf.clone();
            bad[at] ^= 1;
            assert!(read_datagram(&bad, 100).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn bitsets_remember_numbers() {
        let mut set = BitSet::new(130);
        assert!(!set.contains(129));
        set.insert(129);
        set.insert(0);
        assert!(set.contains(129) && set.contains(0) && !set.contains(64));
    }
}
