//! `bench chat`: fan-out through a chat room (PROTOCOL.md §4), every line
//! accounted for.
//!
//! ```text
//! socketlab bench chat --addr A --members N --messages M --size S
//!                      [--rate R] [--window W] [--time-limit T]
//! ```
//!
//! # The run
//!
//! ```text
//!   Joining ──all welcomed and announced──▶ Sending ──M lines sent──▶ Draining ──▶ Done
//!      └──────────── time limit, Ctrl-C ──────────┴──────────────────────▲
//! ```
//!
//! **Joining.** Member 0, the sender, connects first; the chat service
//! greets it with `* welcome <nick>; room lobby; ...` and announces
//! `* <nick> joined lobby` to the room. Then the other members connect (at
//! `--connect-rate`). Every member reads its welcome line, which gives its
//! nick, and the notices that follow. The room is complete when every
//! member has been welcomed *and* the sender has seen every member's join
//! notice: from then on, whatever the sender says reaches them all.
//!
//! **Sending.** The sender says `M` lines, each of `S` bytes of text:
//!
//! ```text
//!   0000000042 000001234567890 klmnopqrstuvwxyz0123456789abcdefghij...
//!   └ line number └ ns since the run started └ padding, derived from the number
//! ```
//!
//! Every member, the sender included, should receive
//! `<YYYY-MM-DD HH:MM:SS> <sender's nick>: <text>` for each line, in
//! order. A member checks the number against the one it expects next
//! (a gap is **loss**, a smaller number **duplication or reordering**),
//! the padding and length (**corruption**), and records the delivery
//! latency from the time in the line. Lines from other chat users are
//! counted and skipped; `! error` lines are failures.
//!
//! The sender stays at most `--window` lines ahead of the slowest member,
//! so the run measures how fast the server delivers rather than how much
//! it can buffer (the daemon disconnects a member more than 1 MiB behind).
//!
//! **Draining.** Once all lines are sent, the run waits (at most
//! `--drain-timeout`) until every member has received every line; lines
//! still missing then are reported as lost.
//!
//! One thread runs every member: reading lines is cheap next to the
//! server's work of writing each line to every member.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::link::{ConnectResult, Link, connect_result, promote};
use super::pacing::Pacer;
use super::report::{Failure, Figures};
use super::stats::{Interval, Latency, LatencySummary};
use super::units::{self, parse_duration, parse_size};
use super::{Common, Outcome, Session, UsageError};

/// Arguments of `socketlab bench chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The chat server's address.
    #[arg(long, default_value = "127.0.0.1:7194")]
    pub addr: String,
    /// Members in the room, the sender included.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub members: u64,
    /// Lines the sender says.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Bytes of text per line (at least 27: number, time, padding).
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Lines per second the sender says (default: as fast as the window allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How many lines the sender may be ahead of the slowest member.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub window: u64,
    /// New members per second while joining.
    #[arg(long, default_value_t = 5000.0)]
    pub connect_rate: f64,
    /// Upper bound on joining and sending together.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub time_limit: Duration,
    /// How long to wait for lines in flight once the sender is done.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// The figures of a chat run.
#[derive(Debug, Serialize)]
pub struct ChatFigures {
    pub members: u64,
    pub joined: u64,
    pub join_s: f64,
    pub sender_nick: Option<String>,
    pub messages: u64,
    pub size: usize,
    pub lines_sent: u64,
    /// Lines received by members, the sender's own copies included.
    pub deliveries: u64,
    /// `lines_sent × members`.
    pub deliveries_expected: u64,
    pub deliveries_per_s: f64,
    /// From the first line sent to the last delivery.
    pub send_s: f64,
    pub latency: LatencySummary,
    /// Lines from other chat users, skipped.
    pub foreign_lines: u64,
}

impl Figures for ChatFigures {
    fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "members",
                format!(
                    "{} joined of {} in {:.2} s (the sender, {}, included)",
                    units::count(self.joined),
                    units::count(self.members),
                    self.join_s,
                    self.sender_nick.as_deref().unwrap_or("-")
                ),
            ),
            (
                "lines",
                format!(
                    "{} sent of {}, {} B of text each",
                    units::count(self.lines_sent),
                    units::count(self.messages),
                    self.size
                ),
            ),
            (
                "deliveries",
                format!(
                    "{} of {} in {:.2} s = {} deliveries/s",
                    units::count(self.deliveries),
                    units::count(self.deliveries_expected),
                    self.send_s,
                    units::rate(self.deliveries_per_s)
                ),
            ),
            ("latency", self.latency.line()),
            ("foreign lines", units::count(self.foreign_lines)),
        ]
    }
}

/// Runs `bench chat`.
pub fn run(args: ChatArgs, stop: Arc<AtomicBool>) -> ExitCode {
    let addr = match validate(&args) {
        Ok(addr) => addr,
        Err(e) => return super::usage_error(e),
    };
    let common = args.common.clone();
    super::measure(
        "chat",
        addr,
        &common,
        Some("chat"),
        "deliveries/s",
        stop,
        |session| {
            let (progress_tx, progress_rx) = session.progress_channel();
            let room = Room::new(&args, addr, session, progress_tx);
            session.run_worker(
                "bench-chat",
                progress_rx,
                move || room.and_then(Room::run),
                || ChatFigures::empty(&args),
            )
        },
    )
}

fn validate(args: &ChatArgs) -> Result<SocketAddr, UsageError> {
    if args.size < PROBE_HEADER || args.size > 1 << 20 {
        return Err(UsageError(format!(
            "--size must be {PROBE_HEADER} to 1M bytes (the daemon's default line limit is 4096)"
        )));
    }
    for (name, rate) in [
        ("--rate", args.rate),
        ("--connect-rate", Some(args.connect_rate)),
    ] {
        if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(UsageError(format!("{name} must be a positive number")));
        }
    }
    let limit = super::open_file_limit();
    if args.members + 64 > limit {
        return Err(UsageError(format!(
            "--members {} needs more open files than this process may have ({limit}); raise `ulimit -n`",
            args.members
        )));
    }
    super::resolve(&args.addr)
}

impl ChatFigures {
    fn empty(args: &ChatArgs) -> ChatFigures {
        ChatFigures {
            members: args.members,
            joined: 0,
            join_s: 0.0,
            sender_nick: None,
            messages: args.messages,
            size: args.size,
            lines_sent: 0,
            deliveries: 0,
            deliveries_expected: 0,
            deliveries_per_s: 0.0,
            send_s: 0.0,
            latency: Latency::new().summary(),
            foreign_lines: 0,
        }
    }
}

// ---------------------------------------------------------------------------
// The lines: pure functions, tested below.

/// The fixed part of a probe line's text: 10 digits of line number, a
/// space, 15 digits of nanoseconds, a space.
const PROBE_HEADER: usize = 27;

/// What the padding of probe lines is drawn from.
const PADDING: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Appends the text of line `seq`, sent `sent_ns` after the run started,
/// `size` bytes long, followed by `\n`.
fn write_probe(seq: u64, sent_ns: u64, size: usize, out: &mut Vec<u8>) {
    // The widths are fixed so every line has exactly `size` bytes; the
    // modulo keeps absurd values from widening the field.
    let header = format!(
        "{:010} {:015} ",
        seq % 10_000_000_000,
        sent_ns % 1_000_000_000_000_000
    );
    out.extend_from_slice(header.as_bytes());
    out.extend((0..size - PROBE_HEADER).map(|i| padding_byte(seq, i)));
    out.push(b'\n');
}

fn padding_byte(seq: u64, i: usize) -> u8 {
    PADDING[((seq as usize % PADDING.len()) + i) % PADDING.len()]
}

/// Names the line numbers `first` to `last` inclusive: `line 7` or `lines 7..9`.
fn lines(first: u64, last: u64) -> String {
    if first == last {
        format!("line {first}")
    } else {
        format!("lines {first}..{last}")
    }
}

/// A probe line, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    seq: u64,
    sent_ns: u64,
}

/// Why a line from the sender is not a correct probe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProbeError {
    Length { expected: usize, found: usize },
    Header,
    Padding { at: usize },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Length { expected, found } => {
                write!(f, "text of {found} bytes, sent {expected} (corrupted)")
            }
            ProbeError::Header => write!(f, "line number or time garbled (corrupted)"),
            ProbeError::Padding { at } => write!(f, "byte {at} of the text differs (corrupted)"),
        }
    }
}

/// Reads and checks the text of a probe line of `size` bytes.
fn read_probe(text: &str, size: usize) -> Result<Probe, ProbeError> {
    let bytes = text.as_bytes();
    if bytes.len() != size {
        return Err(ProbeError::Length {
            expected: size,
            found: bytes.len(),
        });
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let field = &text[range];
        field
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| field.parse().ok())
            .flatten()
    };
    let (Some(seq), Some(sent_ns)) = (digits(0..10), digits(11..26)) else {
        return Err(ProbeError::Header);
    };
    if bytes[10] != b' ' || bytes[26] != b' ' {
        return Err(ProbeError::Header);
    }
    if let Some(at) = bytes[PROBE_HEADER..]
        .iter()
        .enumerate()
        .position(|(i, &b)| b != padding_byte(seq, i))
    {
        return Err(ProbeError::Padding {
            at: PROBE_HEADER + at,
        });
    }
    Ok(Probe { seq, sent_ns })
}

/// A line from the chat service, classified (PROTOCOL.md §4).
#[derive(Debug, PartialEq, Eq)]
enum ChatLine<'a> {
    /// `* welcome <nick>; room lobby; <N> online; /help for commands`
    Welcome { nick: &'a str },
    /// `* <nick> joined <room>`
    Joined { nick: &'a str },
    /// Any other `* ` line.
    Notice,
    /// `! error: <reason>`
    Error(&'a str),
    /// `<YYYY-MM-DD HH:MM:SS> <nick>: <text>`
    Said { nick: &'a str, text: &'a str },
    /// Anything else.
    Unknown,
}

fn classify(line: &str) -> ChatLine<'_> {
    if let Some(notice) = line.strip_prefix("* ") {
        if let Some(rest) = notice.strip_prefix("welcome ") {
            let nick = rest.split(';').next().unwrap_or("").trim();
            return ChatLine::Welcome { nick };
        }
        let mut words = notice.split(' ');
        return match (words.next(), words.next(), words.next(), words.next()) {
            (Some(nick), Some("joined"), Some(_room), None) => ChatLine::Joined { nick },
            _ => ChatLine::Notice,
        };
    }
    if let Some(reason) = line.strip_prefix("! ") {
        return ChatLine::Error(reason);
    }
    // Date and time are two space-separated words; the nick ends at ": ".
    let mut parts = line.splitn(3, ' ');
    let (Some(_date), Some(_time), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return ChatLine::Unknown;
    };
    match rest.split_once(": ") {
        Some((nick, text)) if !nick.contains(' ') => ChatLine::Said { nick, text },
        _ => ChatLine::Unknown,
    }
}

// ---------------------------------------------------------------------------
// The worker.

/// The phases of a chat run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Joining,
    Sending,
    Draining { until: Instant },
    Done,
}

/// One member of the room.
struct Member {
    link: Link,
    /// Its nick, from the welcome line.
    nick: Option<String>,
    /// Received bytes of a line not yet complete.
    inbox: Vec<u8>,
    /// The sender's next line number this member expects.
    next_seq: u64,
}

/// The sender's side (member 0): what it has said and not yet written.
struct Voice {
    /// Lines issued so far.
    issued: u64,
    /// Text issued but not yet accepted by the kernel.
    outbox: Vec<u8>,
    /// Nicks the sender has seen join.
    seen_joining: HashSet<String>,
    pacer: Pacer,
}

const SENDER: usize = 0;
const MAX_PENDING_CONNECTS: usize = 256;
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// The room: every member, and the run's counters.
struct Room {
    addr: SocketAddr,
    size: usize,
    messages: u64,
    window: u64,
    /// Lines per second for the sender, if paced.
    rate: Option<f64>,
    time_limit: Instant,
    drain_timeout: Duration,
    start: Instant,
    stop: Arc<AtomicBool>,
    progress: Sender<Interval>,
    poll: Poll,
    members: Vec<Member>,
    voice: Voice,
    connect_pacer: Pacer,
    next_to_open: usize,
    pending_connects: usize,
    welcomed: u64,
    open: u64,
    phase: Phase,
    join_s: f64,
    /// When the room was complete and the sender began.
    sending_since: Option<Instant>,
    scratch: Vec<u8>,
    latency: Latency,
    interval: Interval,
    deliveries: u64,
    last_delivery: Option<Instant>,
    foreign_lines: u64,
    failures: Vec<Failure>,
}

impl Room {
    fn new(
        args: &ChatArgs,
        addr: SocketAddr,
        session: &Session,
        progress: Sender<Interval>,
    ) -> io::Result<Room> {
        Ok(Room {
            addr,
            size: args.size,
            messages: args.messages,
            window: args.window,
            rate: args.rate,
            time_limit: session.start + args.time_limit,
            drain_timeout: args.drain_timeout,
            start: session.start,
            stop: Arc::clone(&session.stop),
            progress,
            poll: Poll::new()?,
            members: (0..args.members)
                .map(|_| Member {
                    link: Link::Closed,
                    nick: None,
                    inbox: Vec::new(),
                    next_seq: 0,
                })
                .collect(),
            voice: Voice {
                issued: 0,
                outbox: Vec::new(),
                seen_joining: HashSet::new(),
                pacer: Pacer::new(session.start, args.rate),
            },
            connect_pacer: Pacer::new(session.start, Some(args.connect_rate)),
            next_to_open: 0,
            pending_connects: 0,
            welcomed: 0,
            open: 0,
            phase: Phase::Joining,
            join_s: 0.0,
            sending_since: None,
            scratch: vec![0; 64 * 1024],
            latency: Latency::new(),
            interval: Interval::default(),
            deliveries: 0,
            last_delivery: None,
            foreign_lines: 0,
            failures: Vec::new(),
        })
    }

    fn run(mut self) -> io::Result<Outcome<ChatFigures>> {
        let mut events = Events::with_capacity(1024);
        let mut next_report = self.start + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            self.advance_phase(now);
            match self.phase {
                Phase::Joining => self.open_members(now),
                Phase::Sending => self.say(now),
                Phase::Draining { .. } => {}
                Phase::Done => break,
            }
            if now >= next_report {
                self.interval.open = self.open;
                let _ = self.progress.send(self.interval.take());
                while next_report <= now {
                    next_report += Duration::from_secs(1);
                }
            }
            let mut wake = next_report.min(self.time_limit);
            match self.phase {
                Phase::Joining if self.can_open_more() => {
                    wake = wake.min(self.connect_pacer.next_due().unwrap_or(now));
                }
                Phase::Sending if self.voice.issued < self.messages => {
                    wake = wake.min(self.voice.pacer.next_due().unwrap_or(now + MAX_POLL_WAIT));
                }
                Phase::Draining { until } => wake = wake.min(until),
                _ => {}
            }
            let timeout = wake.saturating_duration_since(now).min(MAX_POLL_WAIT);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if super::interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                self.handle(event.token().0, readable, event.is_writable());
            }
        }
        for member in &mut self.members {
            member.link = Link::Closed;
        }
        let _ = self.progress.send(self.interval.take());
        Ok(self.outcome())
    }

    fn can_open_more(&self) -> bool {
        // Everyone else waits for the sender's welcome, so that the sender
        // sees every other member's join notice.
        let sender_ready = self.next_to_open == 0 || self.members[SENDER].nick.is_some();
        sender_ready
            && self.next_to_open < self.members.len()
            && self.pending_connects < MAX_PENDING_CONNECTS
    }

    fn advance_phase(&mut self, now: Instant) {
        let stopped = self.stop.load(Ordering::Relaxed);
        match self.phase {
            Phase::Joining => {
                if !self.failures.is_empty() {
                    // A member lost while joining: the room can never be
                    // complete, so there is nothing to measure.
                    self.phase = Phase::Done;
                } else if self.room_complete() {
                    self.join_s = now.duration_since(self.start).as_secs_f64();
                    self.sending_since = Some(now);
                    // The sender's schedule starts now, not when joining
                    // began: lines are not due before there is a room.
                    self.voice.pacer = Pacer::new(now, self.rate);
                    self.phase = Phase::Sending;
                } else if now >= self.time_limit || stopped {
                    self.failures.push(Failure::run(format!(
                        "only {} of {} members joined (welcomed and announced to the sender) in time",
                        self.welcomed,
                        self.members.len()
                    )));
                    self.phase = Phase::Done;
                }
            }
            Phase::Sending => {
                let all_said = self.voice.issued == self.messages;
                if all_said || now >= self.time_limit || stopped || self.open == 0 {
                    self.phase = Phase::Draining {
                        until: now + self.drain_timeout,
                    };
                }
            }
            Phase::Draining { until } => {
                let issued = self.voice.issued;
                let all_in = self
                    .members
                    .iter()
                    .all(|m| !m.link.is_open() || m.next_seq == issued);
                if all_in {
                    self.phase = Phase::Done;
                } else if now >= until {
                    for index in 0..self.members.len() {
                        let m = &self.members[index];
                        if m.link.is_open() && m.next_seq < issued {
                            let error = format!(
                                "{} never arrived within {:?} (lost)",
                                lines(m.next_seq, issued - 1),
                                self.drain_timeout
                            );
                            self.fail(index, error);
                        }
                    }
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// Every member welcomed, and the sender has seen each one join.
    fn room_complete(&self) -> bool {
        self.welcomed == self.members.len() as u64
            && self.voice.seen_joining.len() >= self.members.len()
            && self.members.iter().all(|m| {
                m.nick
                    .as_ref()
                    .is_some_and(|n| self.voice.seen_joining.contains(n))
            })
    }

    fn open_members(&mut self, now: Instant) {
        while self.can_open_more() && self.connect_pacer.take(now).is_some() {
            let index = self.next_to_open;
            self.next_to_open += 1;
            let connect = TcpStream::connect(self.addr).and_then(|mut stream| {
                self.poll.registry().register(
                    &mut stream,
                    Token(index),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(stream)
            });
            match connect {
                Ok(stream) => {
                    self.members[index].link = Link::Connecting { stream, since: now };
                    self.pending_connects += 1;
                }
                Err(e) => self.fail(index, super::connect_failed(&e)),
            }
        }
    }

    /// The sender issues lines while the window, the pacer and the count
    /// allow, then writes what it can.
    fn say(&mut self, now: Instant) {
        if !self.members[SENDER].link.is_open() {
            return;
        }
        // The slowest member still connected sets the window.
        let slowest = self
            .members
            .iter()
            .filter(|m| m.link.is_open())
            .map(|m| m.next_seq)
            .min()
            .unwrap_or(self.voice.issued);
        while self.voice.issued < self.messages && self.voice.issued - slowest < self.window {
            let Some(due) = self.voice.pacer.take(now) else {
                break;
            };
            let sent_ns = due.saturating_duration_since(self.start).as_nanos() as u64;
            write_probe(
                self.voice.issued,
                sent_ns,
                self.size,
                &mut self.voice.outbox,
            );
            self.voice.issued += 1;
        }
        self.flush_sender();
    }

    fn flush_sender(&mut self) {
        let outbox = &mut self.voice.outbox;
        let Link::Open(stream) = &mut self.members[SENDER].link else {
            return;
        };
        let mut written = 0;
        let error = loop {
            if written == outbox.len() {
                break None;
            }
            match stream.write(&outbox[written..]) {
                Ok(n) => written += n,
                Err(e) if super::would_block(&e) => break None,
                Err(e) if super::interrupted(&e) => {}
                Err(e) => break Some(e),
            }
        };
        outbox.drain(..written);
        if let Some(e) = error {
            self.fail(SENDER, format!("the sender's write failed: {e}"));
        }
    }

    fn handle(&mut self, index: usize, readable: bool, writable: bool) {
        let Some(member) = self.members.get_mut(index) else {
            return;
        };
        if let Link::Connecting { stream, .. } = &member.link {
            match connect_result(stream) {
                ConnectResult::Pending => return,
                ConnectResult::Failed(e) => {
                    self.fail(index, super::connect_failed(&e));
                    return;
                }
                ConnectResult::Connected => {
                    if let Some(stream) = promote(&mut member.link) {
                        let _ = stream.set_nodelay(true);
                    }
                    self.pending_connects -= 1;
                    self.open += 1;
                }
            }
        }
        if readable {
            self.receive(index);
        }
        if writable && index == SENDER {
            self.flush_sender();
        }
    }

    /// Reads what member `index` received and handles each complete line.
    fn receive(&mut self, index: usize) {
        loop {
            let Link::Open(stream) = &mut self.members[index].link else {
                return;
            };
            let result = stream.read(&mut self.scratch);
            let now = Instant::now();
            let n = match result {
                Ok(0) => {
                    self.fail(index, "the server closed the connection".into());
                    return;
                }
                Ok(n) => n,
                Err(e) if super::would_block(&e) => return,
                Err(e) if super::interrupted(&e) => continue,
                Err(e) => {
                    self.fail(index, format!("read failed: {e}"));
                    return;
                }
            };
            self.interval.bytes += n as u64;
            let mut inbox = std::mem::take(&mut self.members[index].inbox);
            inbox.extend_from_slice(&self.scratch[..n]);
            let mut consumed = 0;
            while let Some(end) = inbox[consumed..].iter().position(|&b| b == b'\n') {
                let line = &inbox[consumed..consumed + end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                consumed += end + 1;
                if let Err(error) = self.on_line(index, line, now) {
                    self.fail(index, error);
                    return;
                }
            }
            inbox.drain(..consumed);
            self.members[index].inbox = inbox;
            if n < self.scratch.len() {
                return; // A short read empties the receive buffer.
            }
        }
    }

    /// Handles one line received by member `index`; an error fails it.
    fn on_line(&mut self, index: usize, line: &[u8], now: Instant) -> Result<(), String> {
        let line = std::str::from_utf8(line).map_err(|_| "received a line that is not UTF-8")?;
        match classify(line) {
            ChatLine::Welcome { nick } => {
                let member = &mut self.members[index];
                if member.nick.is_none() {
                    member.nick = Some(nick.to_string());
                    self.welcomed += 1;
                }
            }
            ChatLine::Joined { nick } => {
                if index == SENDER && self.phase == Phase::Joining {
                    self.voice.seen_joining.insert(nick.to_string());
                }
            }
            ChatLine::Notice | ChatLine::Unknown => {}
            ChatLine::Error(reason) => return Err(format!("the server said `! {reason}`")),
            ChatLine::Said { nick, text } => {
                if self.members[SENDER].nick.as_deref() != Some(nick) {
                    self.foreign_lines += 1;
                    return Ok(());
                }
                let probe = read_probe(text, self.size)
                    .map_err(|e| format!("line after {}: {e}", self.members[index].next_seq))?;
                let expected = self.members[index].next_seq;
                if probe.seq > expected {
                    return Err(format!(
                        "{} missing: line {} came next (lost)",
                        lines(expected, probe.seq - 1),
                        probe.seq
                    ));
                }
                if probe.seq < expected {
                    return Err(format!(
                        "line {} arrived again after line {} (duplicated or reordered)",
                        probe.seq,
                        expected - 1
                    ));
                }
                self.members[index].next_seq += 1;
                let sent = self.start + Duration::from_nanos(probe.sent_ns);
                let latency = now.saturating_duration_since(sent);
                self.latency.record(latency);
                self.interval.latency.record(latency);
                self.interval.completed += 1;
                self.deliveries += 1;
                self.last_delivery = Some(now);
            }
        }
        Ok(())
    }

    fn fail(&mut self, index: usize, error: String) {
        let member = &mut self.members[index];
        match std::mem::replace(&mut member.link, Link::Closed) {
            Link::Open(mut stream) => {
                let _ = self.poll.registry().deregister(&mut stream);
                self.open -= 1;
            }
            Link::Connecting { mut stream, .. } => {
                let _ = self.poll.registry().deregister(&mut stream);
                self.pending_connects -= 1;
            }
            Link::Closed => {}
        }
        self.interval.errors += 1;
        self.failures.push(Failure::on(index as u64, error));
    }

    fn outcome(self) -> Outcome<ChatFigures> {
        let (send_s, elapsed) = match self.sending_since {
            Some(since) => {
                let end = self.last_delivery.unwrap_or(since).max(since);
                (
                    end.duration_since(since).as_secs_f64(),
                    end.duration_since(self.start),
                )
            }
            None => (0.0, Instant::now().duration_since(self.start)),
        };
        let members = self.members.len() as u64;
        let figures = ChatFigures {
            members,
            joined: self.welcomed,
            join_s: self.join_s,
            sender_nick: self.members[SENDER].nick.clone(),
            messages: self.messages,
            size: self.size,
            lines_sent: self.voice.issued,
            deliveries: self.deliveries,
            deliveries_expected: self.voice.issued * members,
            deliveries_per_s: self.deliveries as f64 / send_s.max(1e-9),
            send_s,
            latency: self.latency.summary(),
            foreign_lines: self.foreign_lines,
        };
        Outcome {
            completed: self.deliveries,
            figures,
            elapsed,
            failures: self.failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_reads_back_as_written() {
        let mut out = Vec::new();
        write_probe(42, 1_234_567, 64, &mut out);
        assert_eq!(out.len(), 65);
        assert_eq!(out.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&out[..64]).unwrap();
        assert!(text.starts_with("0000000042 000000001234567 "), "{text}");
        assert_eq!(
            read_probe(text, 64),
            Ok(Probe {
                seq: 42,
                sent_ns: 1_234_567
            })
        );
    }

    #[test]
    fn the_smallest_probe_has_no_padding() {
        let mut out = Vec::new();
        write_probe(7, 8, PROBE_HEADER, &mut out);
        let text = std::str::from_utf8(&out[..PROBE_HEADER]).unwrap();
        assert_eq!(
            read_probe(text, PROBE_HEADER),
            Ok(Probe { seq: 7, sent_ns: 8 })
        );
    }

    #[test]
    fn damaged_probes_are_caught() {
        let mut out = Vec::new();
        write_probe(5, 6, 40, &mut out);
        let good = std::str::from_utf8(&out[..40]).unwrap().to_string();
        assert_eq!(
            read_probe(&good[..39], 40),
            Err(ProbeError::Length {
                expected: 40,
                found: 39
            })
        );
        let mut flipped = good.clone().into_bytes();
        flipped[33] = b'!';
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            read_probe(&flipped, 40),
            Err(ProbeError::Padding { at: 33 })
        );
        let garbled = good.replacen("0000000005", "00000000x5", 1);
        assert_eq!(read_probe(&garbled, 40), Err(ProbeError::Header));
    }

    #[test]
    fn padding_differs_between_lines() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_probe(1, 0, 40, &mut a);
        write_probe(2, 0, 40, &mut b);
        assert_ne!(a[PROBE_HEADER..], b[PROBE_HEADER..]);
    }

    #[test]
    fn chat_lines_are_classified_as_protocol_section_4_says() {
        assert_eq!(
            classify("* welcome guest3; room lobby; 4 online; /help for commands"),
            ChatLine::Welcome { nick: "guest3" }
        );
        assert_eq!(
            classify("* guest3 joined lobby"),
            ChatLine::Joined { nick: "guest3" }
        );
        assert_eq!(classify("* guest3 left lobby"), ChatLine::Notice);
        assert_eq!(classify("* guest3 left lobby (too slow)"), ChatLine::Notice);
        assert_eq!(
            classify("! error: line too long"),
            ChatLine::Error("error: line too long")
        );
        assert_eq!(
            classify("2026-11-03 09:05:01 guest3: hello: world"),
            ChatLine::Said {
                nick: "guest3",
                text: "hello: world"
            }
        );
        assert_eq!(
            classify("2026-11-03 09:05:01 ann -> bob: psst"),
            ChatLine::Unknown
        );
        assert_eq!(classify("garbage"), ChatLine::Unknown);
    }
}
