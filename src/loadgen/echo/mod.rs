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
//! # Where things are
//!
//! - `mod.rs`: the arguments, the figures, and `run`, which splits the
//!   connections among worker threads and adds up what they hand back;
//! - `worker.rs`: one worker thread, its phases and its loop;
//! - `connection.rs`: one connection's stream offsets, and how its connect
//!   completes, how it issues and writes messages, and how it closes;
//! - `verify.rs`: reading the echo back and checking every byte of it.

mod connection;
mod verify;
mod worker;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::{Failure, Figures};
use super::stats::{Latency, LatencySummary};
use super::units::{self, parse_duration, parse_size};
use super::{Common, Outcome, Session, UsageError};
use worker::Worker;

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
