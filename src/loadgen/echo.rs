//! `bench echo`: round trips through an echo server, every byte verified.
//!
//! ```text
//! socketlab bench echo --addr A --conns N --size S --depth D --duration T
//!                      [--rate R] [--connect-rate C] [--threads K] [--messages M]
//! ```
//!
//! # How a connection runs
//!
//! Each connection keeps `D` messages of `S` bytes *in flight*: sent, and
//! not yet fully echoed. The bytes are the connection's seeded stream (see
//! [`super::pattern`]), so a message is simply the next `S` bytes of it.
//! Four offsets into that stream describe a connection completely:
//!
//! ```text
//!   0        verified          written       issued
//!   |------------|-----------------|-------------|
//!    echoed and    sent, awaiting    due, not yet
//!    checked       their echo        written (socket full)
//! ```
//!
//! A message is *issued* when the connection has fewer than `D` in flight
//! (and, with `--rate`, when the pacer says one is due); its due time goes
//! into a queue. Writing moves `written` forward as the kernel accepts
//! bytes; reading checks the received bytes against the stream at
//! `verified` and moves it forward. Each time `verified` passes the end of
//! a message, that message's due time comes off the queue and its latency
//! is recorded: a message counts as echoed when its *last* byte is back.
//!
//! ```text
//!   Connecting ──connected──▶ Open ──error, EOF, bad byte──▶ Closed
//!        └──refused, timeout──────────────────────────────────▲
//! ```
//!
//! # The run
//!
//! A worker is in one of three phases: `Sending` until `--duration` has
//! passed (or `--messages` have been issued, or Ctrl-C), then `Draining`
//! until every byte in flight is back (at most `--drain-timeout`), then
//! `Done`. Bytes not back by then are reported as lost.
//!
//! # Reading less
//!
//! mio's guide says to read until `WouldBlock` after a readiness event. On
//! a stream socket, a read that returns fewer bytes than asked for has
//! emptied the receive buffer, and any byte that arrives later raises a new
//! edge; so after a short read the worker stops reading, saving one system
//! call per round trip. The CPU saved goes to the server under test, which
//! on a small machine shares the cores with the generator.

use std::collections::VecDeque;
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
use super::pattern::Pattern;
use super::report::{Failure, Figures};
use super::stats::{Interval, Latency, LatencySummary};
use super::units::{self, parse_duration, parse_size};
use super::{Common, Outcome, Session, UsageError};

/// Arguments of `socketlab bench echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// The echo server's address.
    #[arg(long, default_value = "127.0.0.1:7007")]
    pub addr: String,
    /// How many connections to open.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns: u64,
    /// Bytes per message (K, M suffixes: powers of 1024).
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub depth: u32,
    /// How long to send (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop sending after this many messages in all, if that comes first.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Messages per second in all (open loop; latency counted from when
    /// each message was due). Default: each connection sends as soon as a
    /// reply frees a slot.
    #[arg(long)]
    pub rate: Option<f64>,
    /// New connections per second in all. Default: no limit, with at most
    /// 128 connects pending per thread.
    #[arg(long)]
    pub connect_rate: Option<f64>,
    /// Worker threads, each with its own poll and a share of the connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// How long to wait for the replies in flight once sending stops.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How long a connect may take before it counts as failed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// The figures of an echo run.
#[derive(Debug, Serialize)]
pub struct EchoFigures {
    pub connections: u64,
    pub connected: u64,
    pub connect_failed: u64,
    pub threads: u32,
    pub size: usize,
    pub depth: u32,
    pub rate_target: Option<f64>,
    /// Messages whose every byte came back and checked.
    pub messages: u64,
    pub messages_per_s: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_per_s: f64,
    pub latency: LatencySummary,
}

impl Figures for EchoFigures {
    fn rows(&self) -> Vec<(&'static str, String)> {
        let rate = self
            .rate_target
            .map(|r| format!(", paced at {} msg/s", units::rate(r)))
            .unwrap_or_default();
        vec![
            (
                "connections",
                format!(
                    "{} connected of {}, {} failed, {} thread{}",
                    units::count(self.connected),
                    units::count(self.connections),
                    units::count(self.connect_failed),
                    self.threads,
                    if self.threads == 1 { "" } else { "s" }
                ),
            ),
            (
                "messages",
                format!(
                    "{} echoed = {} msg/s ({} B each, depth {}{rate})",
                    units::count(self.messages),
                    units::rate(self.messages_per_s),
                    self.size,
                    self.depth
                ),
            ),
            (
                "bytes",
                format!(
                    "{} sent, {} back = {}/s each way",
                    units::bytes(self.bytes_sent as f64),
                    units::bytes(self.bytes_received as f64),
                    units::bytes(self.bytes_per_s)
                ),
            ),
            ("latency", self.latency.line()),
        ]
    }
}

/// Runs `bench echo`.
pub fn run(args: EchoArgs, stop: Arc<AtomicBool>) -> ExitCode {
    let addr = match validate(&args) {
        Ok(addr) => addr,
        Err(e) => return super::usage_error(e),
    };
    let common = args.common.clone();
    super::measure(
        "echo",
        addr,
        &common,
        Some("echo"),
        "msg/s",
        stop,
        |session| run_workers(&args, addr, session),
    )
}

fn validate(args: &EchoArgs) -> Result<SocketAddr, UsageError> {
    if args.size == 0 || args.size > 64 << 20 {
        return Err(UsageError("--size must be 1 byte to 64M".into()));
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(UsageError("--rate must be a positive number".into()));
    }
    if args
        .connect_rate
        .is_some_and(|r| !(r > 0.0 && r.is_finite()))
    {
        return Err(UsageError(
            "--connect-rate must be a positive number".into(),
        ));
    }
    let limit = super::open_file_limit();
    if args.conns + 64 > limit {
        return Err(UsageError(format!(
            "--conns {} needs more open files than this process may have ({limit}); raise `ulimit -n`",
            args.conns
        )));
    }
    super::resolve(&args.addr)
}

/// The parts of the arguments every worker needs.
#[derive(Debug, Clone)]
struct Plan {
    addr: SocketAddr,
    size: u64,
    depth: usize,
    send_until: Instant,
    drain_timeout: Duration,
    connect_timeout: Duration,
    run_seed: u64,
}

fn run_workers(args: &EchoArgs, addr: SocketAddr, session: &Session) -> Outcome<EchoFigures> {
    let threads = u64::from(args.threads).min(args.conns);
    let plan = Plan {
        addr,
        size: args.size as u64,
        depth: args.depth as usize,
        send_until: session.start + args.duration,
        drain_timeout: args.drain_timeout,
        connect_timeout: args.connect_timeout,
        // A fixed seed makes runs repeatable; streams still differ per
        // connection, which is what catches crossed buffers.
        run_seed: 0x736f_636b_6574_6c61,
    };
    let (progress_tx, progress_rx) = session.progress_channel();
    let mut handles = Vec::new();
    for t in 0..threads {
        // Connection i belongs to thread i % threads; rates and the message
        // budget are split evenly.
        let split = |total: u64| total / threads + u64::from(t < total % threads);
        let share = Share {
            numbers: (t..args.conns).step_by(threads as usize).collect(),
            rate: args.rate.map(|r| r / threads as f64),
            connect_rate: args.connect_rate.map(|r| r / threads as f64),
            budget: args.messages.map(split),
        };
        let worker = Worker::new(plan.clone(), share, session, progress_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-echo-{t}"))
            .spawn(move || worker.and_then(Worker::run));
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                session.stop.store(true, Ordering::Relaxed);
                eprintln!("error: cannot start a worker thread: {e}");
                break;
            }
        }
    }
    drop(progress_tx);
    let results = session.supervise(handles, progress_rx);

    let mut latency = Latency::new();
    let mut figures = EchoFigures {
        connections: args.conns,
        connected: 0,
        connect_failed: 0,
        threads: threads as u32,
        size: args.size,
        depth: args.depth,
        rate_target: args.rate,
        messages: 0,
        messages_per_s: 0.0,
        bytes_sent: 0,
        bytes_received: 0,
        bytes_per_s: 0.0,
        latency: latency.summary(),
    };
    let mut failures = Vec::new();
    let mut stopped_at = session.start;
    for result in results {
        match result {
            Ok(r) => {
                latency.merge(&r.latency);
                figures.connected += r.connected;
                figures.connect_failed += r.connect_failed;
                figures.messages += r.messages;
                figures.bytes_sent += r.bytes_sent;
                figures.bytes_received += r.bytes_received;
                failures.extend(r.failures);
                stopped_at = stopped_at.max(r.stopped_at);
            }
            Err(e) => failures.push(Failure::run(format!("worker failed: {e}"))),
        }
    }
    if figures.connected == 0 && failures.is_empty() {
        failures.push(Failure::run("no connection was established"));
    }
    let elapsed = stopped_at.duration_since(session.start);
    let secs = elapsed.as_secs_f64().max(1e-9);
    figures.messages_per_s = figures.messages as f64 / secs;
    figures.bytes_per_s = figures.bytes_received as f64 / secs;
    figures.latency = latency.summary();
    Outcome {
        completed: figures.messages,
        figures,
        elapsed,
        failures,
    }
}

/// One worker's share of the run.
struct Share {
    /// The numbers of its connections.
    numbers: Vec<u64>,
    /// Its share of `--rate` and `--connect-rate`.
    rate: Option<f64>,
    connect_rate: Option<f64>,
    /// Its share of `--messages`.
    budget: Option<u64>,
}

/// What one worker hands back.
struct WorkerResult {
    latency: Latency,
    connected: u64,
    connect_failed: u64,
    messages: u64,
    bytes_sent: u64,
    bytes_received: u64,
    failures: Vec<Failure>,
    /// When this worker stopped issuing messages.
    stopped_at: Instant,
}

/// How many connects a worker keeps pending at once without `--connect-rate`:
/// enough to open thousands of connections per second, few enough not to
/// overflow a server's listen backlog (a dropped SYN costs a one-second
/// retransmission, which would distort the connect figures).
const MAX_PENDING_CONNECTS: usize = 128;

/// The longest a worker sleeps in `poll`, so that it notices Ctrl-C soon.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// Read and write chunk: large enough for 64 KiB messages in one call.
const CHUNK: usize = 64 * 1024;

/// Full reads one connection may do per turn before the others get theirs:
/// with large messages and a fast server, a connection's bytes could
/// otherwise keep arriving as fast as it reads them, and one connection
/// would have the worker to itself.
const READ_BUDGET: usize = 16;

/// The phases of a worker, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opening connections and issuing messages.
    Sending,
    /// No new messages; waiting until the deadline for those in flight.
    Draining { until: Instant },
    /// Finished; the loop exits.
    Done,
}

/// One readiness event, copied out of mio's `Events`.
struct Readiness {
    index: usize,
    readable: bool,
    writable: bool,
}

/// One echo connection: its stream offsets and the due times of the
/// messages in flight (see the module documentation for the picture).
struct Connection {
    /// Its number in the run, naming it in reports.
    number: u64,
    pattern: Pattern,
    link: Link,
    /// Stream bytes of all messages issued so far.
    issued: u64,
    /// Stream bytes the kernel has accepted.
    written: u64,
    /// Stream bytes echoed back and checked.
    verified: u64,
    /// When each message in flight was due, oldest first.
    due: VecDeque<Instant>,
    /// True while the connection is in the worker's queue for the pacer.
    waiting_for_pacer: bool,
}

impl Connection {
    fn in_flight(&self) -> usize {
        self.due.len()
    }

    /// Whether everything sent has come back (or the connection is gone).
    fn settled(&self) -> bool {
        match self.link {
            Link::Open(_) => self.verified == self.issued,
            Link::Connecting { .. } | Link::Closed => true,
        }
    }
}

/// One worker thread: a poll, its connections, and its counters.
struct Worker {
    plan: Plan,
    poll: Poll,
    events: Events,
    /// Indexed by token.
    connections: Vec<Connection>,
    /// The next connection (index into `connections`) to open.
    next_to_open: usize,
    /// Connections in `Connecting`.
    pending_connects: usize,
    connect_pacer: Pacer,
    message_pacer: Pacer,
    /// Connections that want to issue a message the pacer has not allowed yet.
    waiting: VecDeque<usize>,
    /// Messages this worker may still issue, if bounded by `--messages`.
    budget: Option<u64>,
    phase: Phase,
    stopped_at: Option<Instant>,
    stop: Arc<AtomicBool>,
    /// Read and write buffer, shared by all connections of the worker.
    scratch: Vec<u8>,
    /// The last poll's events, copied out; kept to reuse its allocation.
    ready: Vec<Readiness>,
    /// Connections that stopped reading at their budget with bytes left;
    /// served again on the next turn without waiting for an event, since
    /// edge-triggered readiness will not report those bytes again. A
    /// connection may appear twice; the second visit finds less to read.
    unfinished: Vec<usize>,
    // Counters.
    latency: Latency,
    interval: Interval,
    next_report: Instant,
    progress: Sender<Interval>,
    connected: u64,
    connect_failed: u64,
    messages: u64,
    open: u64,
    failures: Vec<Failure>,
}

impl Worker {
    fn new(
        plan: Plan,
        share: Share,
        session: &Session,
        progress: Sender<Interval>,
    ) -> io::Result<Worker> {
        let start = session.start;
        let connections = share
            .numbers
            .into_iter()
            .map(|number| Connection {
                number,
                pattern: Pattern::for_connection(plan.run_seed, number),
                link: Link::Closed,
                issued: 0,
                written: 0,
                verified: 0,
                due: VecDeque::with_capacity(plan.depth.min(64)),
                waiting_for_pacer: false,
            })
            .collect();
        Ok(Worker {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            connections,
            next_to_open: 0,
            pending_connects: 0,
            connect_pacer: Pacer::new(start, share.connect_rate),
            message_pacer: Pacer::new(start, share.rate),
            waiting: VecDeque::new(),
            budget: share.budget,
            phase: Phase::Sending,
            stopped_at: None,
            stop: Arc::clone(&session.stop),
            scratch: vec![0; CHUNK],
            ready: Vec::with_capacity(1024),
            unfinished: Vec::new(),
            latency: Latency::new(),
            interval: Interval::default(),
            next_report: start + Duration::from_secs(1),
            progress,
            connected: 0,
            connect_failed: 0,
            messages: 0,
            open: 0,
            failures: Vec::new(),
            plan,
        })
    }

    /// The worker's loop: advance the phase, open connections, let paced
    /// connections issue, report progress, then wait for readiness and
    /// handle it.
    fn run(mut self) -> io::Result<WorkerResult> {
        loop {
            let now = Instant::now();
            self.advance_phase(now);
            if self.phase == Phase::Done {
                break;
            }
            if self.phase == Phase::Sending {
                self.open_connections(now);
                self.serve_waiting(now);
            }
            if now >= self.next_report {
                self.report(now);
            }
            let timeout = if self.unfinished.is_empty() {
                self.next_wakeup(now).saturating_duration_since(now)
            } else {
                Duration::ZERO // Connections with bytes left to read go on at once.
            };
            match self
                .poll
                .poll(&mut self.events, Some(timeout.min(MAX_POLL_WAIT)))
            {
                Ok(()) => {}
                Err(e) if super::interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            // Copy the events out first: handling one needs `&mut self`.
            let mut ready = std::mem::take(&mut self.ready);
            ready.extend(self.events.iter().map(|e| Readiness {
                index: e.token().0,
                // Errors and hang-ups surface as the read's result.
                readable: e.is_readable() || e.is_read_closed() || e.is_error(),
                writable: e.is_writable(),
            }));
            for r in ready.drain(..) {
                self.handle(r.index, r.readable, r.writable);
            }
            self.ready = ready;
            // Then the connections whose read budget ran out last turn.
            let mut unfinished = std::mem::take(&mut self.unfinished);
            for index in unfinished.drain(..) {
                self.receive(index);
            }
            self.unfinished = unfinished;
        }
        // Close every socket before returning, so the server sees the end.
        for c in &mut self.connections {
            c.link = Link::Closed;
        }
        self.interval.open = 0;
        let _ = self.progress.send(self.interval.take());
        let bytes_sent = self.connections.iter().map(|c| c.written).sum();
        let bytes_received = self.connections.iter().map(|c| c.verified).sum();
        Ok(WorkerResult {
            latency: self.latency,
            connected: self.connected,
            connect_failed: self.connect_failed,
            messages: self.messages,
            bytes_sent,
            bytes_received,
            failures: self.failures,
            stopped_at: self.stopped_at.unwrap_or_else(Instant::now),
        })
    }

    /// Moves the worker to the next phase when its condition is met.
    fn advance_phase(&mut self, now: Instant) {
        match self.phase {
            Phase::Sending => {
                let budget_spent = self.budget == Some(0);
                let nothing_left = self.next_to_open == self.connections.len()
                    && self.open == 0
                    && self.pending_connects == 0;
                if now >= self.plan.send_until
                    || self.stop.load(Ordering::Relaxed)
                    || budget_spent
                    || nothing_left
                {
                    self.stopped_at = Some(now);
                    self.waiting.clear();
                    // Connects still pending are abandoned: they never
                    // carried a message, so nothing is lost with them.
                    for index in 0..self.next_to_open {
                        if self.connections[index].link.is_connecting() {
                            self.close(index);
                        }
                    }
                    self.phase = Phase::Draining {
                        until: now + self.plan.drain_timeout,
                    };
                }
            }
            Phase::Draining { until } => {
                if self.connections.iter().all(Connection::settled) {
                    self.phase = Phase::Done;
                } else if now >= until {
                    for i in 0..self.connections.len() {
                        let c = &self.connections[i];
                        if !c.settled() {
                            let missing = c.issued - c.verified;
                            self.fail(
                                i,
                                format!(
                                    "{missing} bytes sent never came back within {:?} (lost data)",
                                    self.plan.drain_timeout
                                ),
                            );
                        }
                    }
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// Starts connects while the connect pacer and the pending limit allow.
    fn open_connections(&mut self, now: Instant) {
        while self.next_to_open < self.connections.len()
            && self.pending_connects < MAX_PENDING_CONNECTS
            && self.connect_pacer.take(now).is_some()
        {
            let index = self.next_to_open;
            self.next_to_open += 1;
            match self.start_connect(index) {
                Ok(stream) => {
                    self.connections[index].link = Link::Connecting { stream, since: now };
                    self.pending_connects += 1;
                }
                Err(e) => {
                    self.connect_failed += 1;
                    self.fail(index, super::connect_failed(&e));
                }
            }
        }
    }

    /// Fails connects that hang (a SYN dropped again and again). Called
    /// once a second: a scan of every connection is too slow for each turn.
    fn expire_connects(&mut self, now: Instant) {
        if self.pending_connects == 0 {
            return;
        }
        for index in 0..self.next_to_open {
            if let Link::Connecting { since, .. } = self.connections[index].link
                && now.duration_since(since) > self.plan.connect_timeout
            {
                self.connect_failed += 1;
                let timeout = self.plan.connect_timeout;
                self.fail(index, format!("connect timed out after {timeout:?}"));
            }
        }
    }

    fn start_connect(&mut self, index: usize) -> io::Result<TcpStream> {
        let mut stream = TcpStream::connect(self.plan.addr)?;
        // Both interests stay registered for the connection's life: with
        // edge-triggered readiness an unneeded WRITABLE costs nothing until
        // the socket buffer fills and drains again.
        self.poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(stream)
    }

    /// Lets connections waiting for the pacer issue, oldest first.
    fn serve_waiting(&mut self, now: Instant) {
        while let Some(&index) = self.waiting.front() {
            if self.message_pacer.next_due().is_some_and(|due| due > now) {
                break;
            }
            self.waiting.pop_front();
            self.connections[index].waiting_for_pacer = false;
            self.issue(index, now);
            self.flush(index);
        }
    }

    /// The earliest moment the loop has something to do without an event.
    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut at = self.next_report;
        if let Phase::Draining { until } = self.phase {
            at = at.min(until);
        }
        if self.phase == Phase::Sending {
            at = at.min(self.plan.send_until);
            if !self.waiting.is_empty() {
                at = at.min(self.message_pacer.next_due().unwrap_or(now));
            }
            if self.next_to_open < self.connections.len()
                && self.pending_connects < MAX_PENDING_CONNECTS
            {
                at = at.min(self.connect_pacer.next_due().unwrap_or(now));
            }
        }
        at
    }

    /// Sends this second's figures to the main thread.
    fn report(&mut self, now: Instant) {
        self.expire_connects(now);
        self.interval.open = self.open;
        let _ = self.progress.send(self.interval.take());
        while self.next_report <= now {
            self.next_report += Duration::from_secs(1);
        }
    }

    /// Handles readiness on connection `index`.
    fn handle(&mut self, index: usize, readable: bool, writable: bool) {
        let Some(connection) = self.connections.get_mut(index) else {
            return; // Not ours; spurious events happen.
        };
        if let Link::Connecting { stream, .. } = &connection.link {
            match connect_result(stream) {
                ConnectResult::Pending => return,
                ConnectResult::Failed(e) => {
                    self.connect_failed += 1;
                    self.fail(index, super::connect_failed(&e));
                    return;
                }
                ConnectResult::Connected => {
                    // Nagle's algorithm would hold small messages back
                    // while earlier ones are unacknowledged: at depth > 1
                    // that measures the delayed-ACK timer, not the server.
                    if let Some(stream) = promote(&mut connection.link) {
                        let _ = stream.set_nodelay(true);
                    }
                    self.pending_connects -= 1;
                    self.connected += 1;
                    self.open += 1;
                    if self.phase == Phase::Sending {
                        self.issue(index, Instant::now());
                    }
                    self.flush(index);
                    return;
                }
            }
        }
        if readable {
            self.receive(index);
        }
        if writable {
            self.flush(index);
        }
    }

    /// Issues messages on connection `index` up to the depth, as far as the
    /// pacer and the budget allow.
    fn issue(&mut self, index: usize, now: Instant) {
        let c = &mut self.connections[index];
        if !c.link.is_open() || self.phase != Phase::Sending {
            return;
        }
        while c.in_flight() < self.plan.depth && self.budget != Some(0) {
            match self.message_pacer.take(now) {
                Some(due) => {
                    c.issued += self.plan.size;
                    c.due.push_back(due);
                    if let Some(budget) = &mut self.budget {
                        *budget -= 1;
                    }
                }
                None => {
                    if !c.waiting_for_pacer {
                        c.waiting_for_pacer = true;
                        self.waiting.push_back(index);
                    }
                    break;
                }
            }
        }
    }

    /// Writes issued bytes until they are all written or the socket is full.
    fn flush(&mut self, index: usize) {
        let c = &mut self.connections[index];
        while c.written < c.issued {
            let Link::Open(stream) = &mut c.link else {
                return;
            };
            let len = (c.issued - c.written).min(CHUNK as u64) as usize;
            let chunk = &mut self.scratch[..len];
            c.pattern.fill(c.written, chunk);
            match stream.write(chunk) {
                Ok(n) => {
                    c.written += n as u64;
                    if n < len {
                        // The socket buffer is full; WRITABLE will follow.
                        return;
                    }
                }
                Err(e) if super::would_block(&e) => return,
                Err(e) if super::interrupted(&e) => {}
                Err(e) => {
                    let msg = format!("write failed after {} bytes: {e}", c.written);
                    self.fail(index, msg);
                    return;
                }
            }
        }
    }

    /// Reads and checks echoed bytes, completing messages as their last
    /// byte arrives, then issues new messages in their place.
    fn receive(&mut self, index: usize) {
        for _ in 0..READ_BUDGET {
            let c = &mut self.connections[index];
            let Link::Open(stream) = &mut c.link else {
                return;
            };
            let result = stream.read(&mut self.scratch);
            let now = Instant::now();
            match result {
                Ok(0) => {
                    let outstanding = c.issued - c.verified;
                    if outstanding > 0 || self.phase == Phase::Sending {
                        let msg = format!(
                            "the server closed the connection after echoing {} bytes, \
                             with {outstanding} bytes not echoed",
                            c.verified
                        );
                        self.fail(index, msg);
                    } else {
                        self.close(index);
                    }
                    return;
                }
                Ok(n) => {
                    let received = &self.scratch[..n];
                    if c.verified + n as u64 > c.written {
                        let excess = c.verified + n as u64 - c.written;
                        let msg = format!(
                            "received {excess} bytes more than were sent (duplicated or foreign data)"
                        );
                        self.fail(index, msg);
                        return;
                    }
                    if let Err(mismatch) = c.pattern.check(c.verified, received) {
                        let message = mismatch.offset / self.plan.size;
                        let msg = format!("message {message}: {mismatch}");
                        self.fail(index, msg);
                        return;
                    }
                    c.verified += n as u64;
                    self.interval.bytes += n as u64;
                    // Each message whose last byte is now back is complete.
                    let completed_bytes = c.issued - c.due.len() as u64 * self.plan.size;
                    let mut complete_through = completed_bytes + self.plan.size;
                    while complete_through <= c.verified {
                        let Some(due) = c.due.pop_front() else { break };
                        let latency = now.saturating_duration_since(due);
                        self.latency.record(latency);
                        self.interval.latency.record(latency);
                        self.interval.completed += 1;
                        self.messages += 1;
                        complete_through += self.plan.size;
                    }
                    let short_read = n < self.scratch.len();
                    self.issue(index, now);
                    self.flush(index);
                    if short_read {
                        return; // The receive buffer is empty (see module docs).
                    }
                }
                Err(e) if super::would_block(&e) => return,
                Err(e) if super::interrupted(&e) => {}
                Err(e) => {
                    let msg = format!("read failed after {} bytes echoed: {e}", c.verified);
                    self.fail(index, msg);
                    return;
                }
            }
        }
        // The budget ran out with bytes perhaps left: come back next turn.
        self.unfinished.push(index);
    }

    /// Records a failure on connection `index` and closes it.
    fn fail(&mut self, index: usize, error: String) {
        let number = self.connections[index].number;
        self.failures.push(Failure::on(number, error));
        self.interval.errors += 1;
        self.close(index);
    }

    fn close(&mut self, index: usize) {
        let c = &mut self.connections[index];
        if let Some(stream) = c.link.stream() {
            let _ = self.poll.registry().deregister(stream);
        }
        match std::mem::replace(&mut c.link, Link::Closed) {
            Link::Open(_) => self.open -= 1,
            Link::Connecting { .. } => self.pending_connects -= 1,
            Link::Closed => {}
        }
        c.due.clear();
    }
}
