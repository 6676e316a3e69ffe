//! `bench conns`: how fast a server accepts connections, and what an idle
//! connection costs it.
//!
//! ```text
//! socketlab bench conns --addr A --count N --hold T [--connect-rate C] [--pid P]
//! ```
//!
//! The worker opens `N` connections, at most `C` per second and at most
//! 256 pending at once, then holds them all open for `T`, reading (and
//! discarding) whatever the server sends, such as a chat welcome line. A
//! connection the server closes or resets during the hold is a failure.
//!
//! # Memory per connection
//!
//! With `--pid`, the server's resident memory (`VmRSS`) is read before the
//! first connect, once all connects have finished, and at the end of the
//! hold. The figure reported is `(at end of hold − before) / connected`:
//! taken at the end of the hold because a server accepts its backlog a
//! little after the client's connects complete, and the kernel's socket
//! buffers are not part of it. It is what a connection costs the server in
//! user space: its per-connection state and buffers, and the allocator's
//! overhead around them.

use std::io::{self, Read};
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
use super::process;
use super::report::{Failure, Figures};
use super::stats::{Interval, Latency, LatencySummary};
use super::units::{self, parse_duration};
use super::{Common, Outcome, UsageError};

/// Arguments of `socketlab bench conns`.
#[derive(Debug, clap::Args)]
pub struct ConnsArgs {
    /// The server's address (any TCP service).
    #[arg(long, default_value = "127.0.0.1:7007")]
    pub addr: String,
    /// How many connections to open.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    /// How long to hold them once all connects have finished.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    /// New connections per second.
    #[arg(long, default_value_t = 5000.0)]
    pub connect_rate: f64,
    /// How long a connect may take before it counts as failed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// The server's memory as the connections came and stayed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    pub rss_before_bytes: u64,
    pub rss_connected_bytes: u64,
    pub rss_held_bytes: u64,
    /// `(rss_held − rss_before) / connected`; negative if the server
    /// returned memory to the system meanwhile.
    pub bytes_per_connection: Option<f64>,
}

/// The figures of a `conns` run.
#[derive(Debug, Serialize)]
pub struct ConnsFigures {
    pub count: u64,
    pub connected: u64,
    pub connect_failed: u64,
    /// Connections the server closed or reset while they were held.
    pub closed_by_server: u64,
    /// From the first connect to the last one finishing.
    pub connect_s: f64,
    pub connects_per_s: f64,
    /// From `connect()` to the socket being writable.
    pub connect_latency: LatencySummary,
    pub hold_s: f64,
    /// Bytes the server sent on the held connections (e.g. greetings).
    pub bytes_received: u64,
    pub memory: Option<Memory>,
}

impl Figures for ConnsFigures {
    fn rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            (
                "connections",
                format!(
                    "{} connected of {}, {} failed, {} closed by the server",
                    units::count(self.connected),
                    units::count(self.count),
                    units::count(self.connect_failed),
                    units::count(self.closed_by_server)
                ),
            ),
            (
                "connect rate",
                format!(
                    "{} conn/s ({:.2} s for all)",
                    units::rate(self.connects_per_s),
                    self.connect_s
                ),
            ),
            ("connect time", self.connect_latency.line()),
            (
                "hold",
                format!(
                    "{:.2} s, {} received from the server",
                    self.hold_s,
                    units::bytes(self.bytes_received as f64)
                ),
            ),
        ];
        if let Some(m) = self.memory {
            rows.push((
                "server memory",
                format!(
                    "{} before, {} connected, {} at the end of the hold",
                    units::bytes(m.rss_before_bytes as f64),
                    units::bytes(m.rss_connected_bytes as f64),
                    units::bytes(m.rss_held_bytes as f64)
                ),
            ));
            rows.push((
                "per connection",
                m.bytes_per_connection
                    .map_or_else(|| "-".into(), |b| format!("{b:.0} bytes of server RSS")),
            ));
        }
        rows
    }
}

/// Runs `bench conns`.
pub fn run(args: ConnsArgs, stop: Arc<AtomicBool>) -> ExitCode {
    let addr = match validate(&args) {
        Ok(addr) => addr,
        Err(e) => return super::usage_error(e),
    };
    let common = args.common.clone();
    // `None`: the connections may go to any service, so the server's side
    // sums them all.
    super::measure("conns", addr, &common, None, "conn/s", stop, |session| {
        let (progress_tx, progress_rx) = session.progress_channel();
        let worker = Holder {
            addr,
            count: args.count as usize,
            hold: args.hold,
            connect_rate: args.connect_rate,
            connect_timeout: args.connect_timeout,
            pid: args.common.pid,
            start: session.start,
            stop: Arc::clone(&session.stop),
            progress: progress_tx,
        };
        session.run_worker(
            "bench-conns",
            progress_rx,
            move || worker.run(),
            || ConnsFigures::empty(&args),
        )
    })
}

fn validate(args: &ConnsArgs) -> Result<SocketAddr, UsageError> {
    if !(args.connect_rate > 0.0 && args.connect_rate.is_finite()) {
        return Err(UsageError(
            "--connect-rate must be a positive number".into(),
        ));
    }
    let limit = super::open_file_limit();
    if args.count + 64 > limit {
        return Err(UsageError(format!(
            "--count {} needs more open files than this process may have ({limit}); raise `ulimit -n`",
            args.count
        )));
    }
    super::resolve(&args.addr)
}

impl ConnsFigures {
    /// The figures of a run in which no connection was made.
    fn empty(args: &ConnsArgs) -> ConnsFigures {
        ConnsFigures {
            count: args.count,
            connected: 0,
            connect_failed: 0,
            closed_by_server: 0,
            connect_s: 0.0,
            connects_per_s: 0.0,
            connect_latency: Latency::new().summary(),
            hold_s: 0.0,
            bytes_received: 0,
            memory: None,
        }
    }
}

/// At most this many connects pending at once: far below common listen
/// backlogs, so no SYN is dropped for lack of room.
const MAX_PENDING_CONNECTS: usize = 256;

const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// The phases of a `conns` run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opening connections.
    Connecting,
    /// All connects finished; holding the connections until `until`.
    Holding {
        until: Instant,
    },
    Done,
}

/// The worker: opens the connections and holds them.
struct Holder {
    addr: SocketAddr,
    count: usize,
    hold: Duration,
    connect_rate: f64,
    connect_timeout: Duration,
    pid: Option<u32>,
    start: Instant,
    stop: Arc<AtomicBool>,
    progress: Sender<Interval>,
}

impl Holder {
    fn run(self) -> io::Result<Outcome<ConnsFigures>> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let mut links: Vec<Link> = (0..self.count).map(|_| Link::Closed).collect();
        let mut pacer = Pacer::new(self.start, Some(self.connect_rate));
        let mut next_to_open = 0;
        let mut pending = 0usize;
        let mut open = 0u64;
        let mut connected = 0u64;
        let mut connect_failed = 0u64;
        let mut closed_by_server = 0u64;
        let mut bytes_received = 0u64;
        let mut failures = Vec::new();
        let mut latency = Latency::new();
        let mut interval = Interval::default();
        let mut next_report = self.start + Duration::from_secs(1);
        let mut phase = Phase::Connecting;
        let mut connect_done_at = self.start;
        let mut hold_started = self.start;
        let mut hold_ended = self.start;
        let mut scratch = vec![0u8; 16 * 1024];

        let rss = |what: &str| {
            self.pid.and_then(|pid| match process::sample(pid) {
                Ok(s) => Some(s.rss_bytes),
                Err(e) => {
                    eprintln!("note: --pid {what}: {e}");
                    None
                }
            })
        };
        let rss_before = rss("before");
        let mut rss_connected = None;

        loop {
            let now = Instant::now();
            let stopped = self.stop.load(Ordering::Relaxed);
            match phase {
                Phase::Connecting => {
                    if stopped || (next_to_open == self.count && pending == 0) {
                        connect_done_at = now;
                        rss_connected = rss("after connecting");
                        hold_started = Instant::now();
                        phase = Phase::Holding {
                            until: if stopped {
                                hold_started
                            } else {
                                hold_started + self.hold
                            },
                        };
                        continue;
                    }
                    while next_to_open < self.count
                        && pending < MAX_PENDING_CONNECTS
                        && pacer.take(now).is_some()
                    {
                        let index = next_to_open;
                        next_to_open += 1;
                        let connect = TcpStream::connect(self.addr).and_then(|mut stream| {
                            poll.registry().register(
                                &mut stream,
                                Token(index),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            Ok(stream)
                        });
                        match connect {
                            Ok(stream) => {
                                links[index] = Link::Connecting { stream, since: now };
                                pending += 1;
                            }
                            Err(e) => {
                                connect_failed += 1;
                                interval.errors += 1;
                                failures.push(Failure::on(index as u64, super::connect_failed(&e)));
                            }
                        }
                    }
                }
                Phase::Holding { until } => {
                    if now >= until || stopped || open == 0 {
                        hold_ended = now;
                        phase = Phase::Done;
                    }
                }
                Phase::Done => break,
            }
            if now >= next_report {
                // Connects that hang fail here, once a second.
                for (index, link) in links.iter_mut().enumerate().take(next_to_open) {
                    if let Link::Connecting { since, .. } = link
                        && now.duration_since(*since) > self.connect_timeout
                    {
                        *link = Link::Closed;
                        pending -= 1;
                        connect_failed += 1;
                        interval.errors += 1;
                        failures.push(Failure::on(
                            index as u64,
                            format!("connect timed out after {:?}", self.connect_timeout),
                        ));
                    }
                }
                interval.open = open;
                let _ = self.progress.send(interval.take());
                while next_report <= now {
                    next_report += Duration::from_secs(1);
                }
            }

            let mut wake = next_report;
            match phase {
                Phase::Connecting
                    if next_to_open < self.count && pending < MAX_PENDING_CONNECTS =>
                {
                    wake = wake.min(pacer.next_due().unwrap_or(now));
                }
                Phase::Holding { until } => wake = wake.min(until),
                _ => {}
            }
            let timeout = wake.saturating_duration_since(now).min(MAX_POLL_WAIT);
            match poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if super::interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                let index = event.token().0;
                let Some(link) = links.get_mut(index) else {
                    continue;
                };
                if let Link::Connecting { stream, since } = link {
                    match connect_result(stream) {
                        ConnectResult::Pending => continue,
                        ConnectResult::Failed(e) => {
                            let _ = poll.registry().deregister(stream);
                            *link = Link::Closed;
                            pending -= 1;
                            connect_failed += 1;
                            interval.errors += 1;
                            failures.push(Failure::on(index as u64, super::connect_failed(&e)));
                            continue;
                        }
                        ConnectResult::Connected => {
                            let took = Instant::now().saturating_duration_since(*since);
                            latency.record(took);
                            interval.latency.record(took);
                            interval.completed += 1;
                            promote(link);
                            pending -= 1;
                            connected += 1;
                            open += 1;
                        }
                    }
                }
                if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
                    continue;
                }
                // Read whatever the server sends; an end or an error on a
                // connection that should stay open is a failure.
                let Link::Open(stream) = link else { continue };
                // A budget of reads, so a server that sends without end
                // (chargen) cannot keep the worker on one connection; bytes
                // left unread do no harm to a held connection.
                let mut budget = 16;
                let ended = loop {
                    budget -= 1;
                    if budget == 0 {
                        break None;
                    }
                    match stream.read(&mut scratch) {
                        Ok(0) => break Some("the server closed the connection".to_string()),
                        Ok(n) => {
                            bytes_received += n as u64;
                            interval.bytes += n as u64;
                        }
                        Err(e) if super::would_block(&e) => break None,
                        Err(e) if super::interrupted(&e) => {}
                        Err(e) => break Some(format!("connection failed: {e}")),
                    }
                };
                if let Some(error) = ended {
                    let _ = poll.registry().deregister(stream);
                    *link = Link::Closed;
                    open -= 1;
                    closed_by_server += 1;
                    interval.errors += 1;
                    let held = if matches!(phase, Phase::Holding { .. }) {
                        " while held"
                    } else {
                        " while others were connecting"
                    };
                    failures.push(Failure::on(index as u64, format!("{error}{held}")));
                }
            }
        }

        let rss_held = rss("at the end of the hold");
        let held_for = hold_ended.saturating_duration_since(hold_started);
        // Closing 10,000 sockets takes a moment; it is not part of the hold.
        drop(links);
        let _ = self.progress.send(interval.take());

        let connect_s = connect_done_at.duration_since(self.start).as_secs_f64();
        let memory = match (rss_before, rss_connected, rss_held) {
            (Some(before), Some(connected_rss), Some(held)) => Some(Memory {
                rss_before_bytes: before,
                rss_connected_bytes: connected_rss,
                rss_held_bytes: held,
                bytes_per_connection: (connected > 0)
                    .then(|| (held as f64 - before as f64) / connected as f64),
            }),
            _ => None,
        };
        if connected == 0 && failures.is_empty() {
            failures.push(Failure::run("no connection was established"));
        }
        Ok(Outcome {
            figures: ConnsFigures {
                count: self.count as u64,
                connected,
                connect_failed,
                closed_by_server,
                connect_s,
                connects_per_s: connected as f64 / connect_s.max(1e-9),
                connect_latency: latency.summary(),
                hold_s: held_for.as_secs_f64(),
                bytes_received,
                memory,
            },
            completed: connected,
            elapsed: Instant::now().duration_since(self.start),
            failures,
        })
    }
}
