//! `socketlab bench`: a load generator for the daemon's services, and for
//! any other server speaking the same protocols.
//!
//! # What a load generator must get right
//!
//! A load generator is itself a network program under stress, and its
//! figures are only as good as its own design:
//!
//! - **It must not be the bottleneck by accident.** Each worker thread owns
//!   one `mio::Poll` and a share of the connections (`--threads`), and does
//!   nothing per message but the system calls, a comparison of the echoed
//!   bytes, and a histogram update. Nothing is shared between workers while
//!   they run: each keeps its own counters and sends them to the main
//!   thread once a second.
//! - **It must check what comes back.** A fast wrong server is not fast.
//!   Every echoed byte is compared with what was sent (see [`pattern`]),
//!   every chat line carries a sequence number, every datagram a number and
//!   a checksum-like body. A failed check is reported with the connection
//!   and the offset, and the run exits with status 1.
//! - **It must measure latency honestly.** Latencies go into HDR
//!   histograms (see [`stats`]); with `--rate`, the clock of each message
//!   starts when it was due, not when it was sent (see [`pacing`]).
//! - **It must end.** Every run is bounded in time and in count, every wait
//!   has a deadline, and Ctrl-C stops sending, collects the replies in
//!   flight for a bounded time, prints the summary so far, and exits 130
//!   (128 + SIGINT) unless something failed (1).
//!
//! # The workloads
//!
//! | command | module | measures |
//! |---|---|---|
//! | `bench echo` | [`echo`] | echoed messages per second, round-trip latency |
//! | `bench conns` | [`conns`] | connect rate, failures, server memory per connection |
//! | `bench chat` | [`chat`] | chat deliveries per second, delivery latency, loss |
//! | `bench udp` | [`udp`] | datagram round trips per second, loss, latency |
//! | `bench mixed` | [`mixed`] | a soak: every service at once; the daemon's memory, descriptors, loop turns |
//! | `bench files` | [`files`] | upload and download MiB/s, transfer latency, every byte verified |
//!
//! Each workload runs its worker threads and hands back an [`Outcome`];
//! this module does what is common to all: signals, the status line each
//! second ([`Session::supervise`]), the server's side (`--admin`, `--pid`),
//! and the summary ([`report`]).
//!
//! # Exit status
//!
//! 0: the run was clean (interrupted or not). 1: something failed: data
//! corrupted, lost, duplicated or reordered, a connection refused, reset or
//! closed early. 2: a usage error (bad flags, an address that does not
//! resolve, a `--pid` that does not exist).

pub mod admin;
pub mod chat;
pub mod conns;
pub mod echo;
pub mod files;
pub mod link;
pub mod mixed;
pub mod pacing;
pub mod pattern;
pub mod process;
pub mod report;
pub mod stats;
pub mod udp;
pub use crate::units;

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use report::{Failure, Figures, Report};
use stats::Interval;

/// `socketlab bench`: pick a workload.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub workload: Workload,
}

/// The workloads `socketlab bench` can run.
#[derive(Debug, clap::Subcommand)]
pub enum Workload {
    /// Echo round trips: N connections, D messages of S bytes in flight on
    /// each, every echoed byte verified.
    Echo(echo::EchoArgs),
    /// Open N connections at a bounded rate and hold them: connect rate,
    /// failures, and with --pid the server's memory per connection.
    Conns(conns::ConnsArgs),
    /// Chat fan-out: N members in one room, one of them sends M lines;
    /// deliveries per second, delivery latency, loss and reordering.
    Chat(chat::ChatArgs),
    /// UDP echo: datagram round trips per second, loss and latency.
    Udp(udp::UdpArgs),
    /// A soak: every service under load at once for --duration, while the
    /// daemon's memory, descriptors, CPU and loop turns are sampled each
    /// second; fails unless they return near their baseline.
    Mixed(mixed::MixedArgs),
    /// File transfers: N clients putting and getting files of a given size,
    /// every byte verified by SHA-256; MiB/s and transfer latency.
    Files(files::FilesArgs),
}

/// Options every workload takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Print the result as one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the status line each second even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// The daemon's admin address (host:port): sample its GET /stats at the
    /// start and the end, and show the server's side next to the client's.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// The server's process id: report its CPU time per message and its
    /// memory, from /proc.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

/// Runs `socketlab bench`.
pub fn run(args: Args) -> ExitCode {
    let stop = match install_stop_signals() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::from(2);
        }
    };
    // Many connections need many descriptors; the soft limit is often 1024
    // while the hard limit allows far more.
    raise_open_file_limit();
    match args.workload {
        Workload::Echo(a) => echo::run(a, stop),
        Workload::Conns(a) => conns::run(a, stop),
        Workload::Chat(a) => chat::run(a, stop),
        Workload::Udp(a) => udp::run(a, stop),
        Workload::Mixed(a) => mixed::run(a, stop),
        Workload::Files(a) => files::run(a, stop),
    }
}

/// What a workload hands back when its workers are done.
pub struct Outcome<T> {
    /// The workload's own figures (its part of the table and the JSON).
    pub figures: T,
    /// Units of work completed (messages, deliveries, datagrams,
    /// connections), for the server's cost per unit.
    pub completed: u64,
    /// From the start until sending stopped (the replies collected after
    /// that are counted, but the time spent collecting them is not).
    pub elapsed: Duration,
    /// Everything that went wrong; empty for a clean run.
    pub failures: Vec<Failure>,
}

/// A usage error: a message for stderr and exit status 2.
pub struct UsageError(pub String);

/// What a running workload shares with this module: the stop flag, where
/// status lines go, and the server's side to sample.
pub struct Session {
    /// Set by SIGINT or SIGTERM; workers poll it each loop turn.
    pub stop: Arc<AtomicBool>,
    /// When the run started; every worker's clock is relative to it.
    pub start: Instant,
    /// Print a status line each second.
    show_progress: bool,
    /// What the status line calls a unit of work, e.g. `msg/s`.
    unit: &'static str,
}

impl Session {
    /// Whether Ctrl-C (or SIGTERM) asked the run to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A channel for workers' per-second progress reports.
    pub fn progress_channel(&self) -> (Sender<Interval>, Receiver<Interval>) {
        mpsc::channel()
    }

    /// Runs one worker on a thread of its own and supervises it (the
    /// workloads that drive everything from one poll loop: chat, udp,
    /// conns). A worker that cannot start, or fails, becomes an outcome
    /// with `empty` figures and that failure.
    pub fn run_worker<T: Send + 'static>(
        &self,
        name: &str,
        progress: Receiver<Interval>,
        worker: impl FnOnce() -> std::io::Result<Outcome<T>> + Send + 'static,
        empty: impl FnOnce() -> T,
    ) -> Outcome<T> {
        let result = match std::thread::Builder::new().name(name.into()).spawn(worker) {
            Ok(handle) => self.supervise(vec![handle], progress).pop(),
            Err(e) => Some(Err(e)),
        };
        let failure = match result {
            Some(Ok(outcome)) => return outcome,
            Some(Err(e)) => format!("worker failed: {e}"),
            None => "no worker ran".to_string(),
        };
        Outcome {
            figures: empty(),
            completed: 0,
            elapsed: Duration::ZERO,
            failures: vec![Failure::run(failure)],
        }
    }

    /// Waits for the worker threads, printing a status line each second
    /// from their progress reports, and returns what they returned. Returns
    /// when every worker has dropped its progress sender and finished.
    pub fn supervise<R>(
        &self,
        workers: Vec<JoinHandle<R>>,
        progress: Receiver<Interval>,
    ) -> Vec<R> {
        let mut second = 1u32;
        let mut pending = Interval::default();
        let mut errors_total = 0;
        loop {
            // Workers report at start + k seconds; print a little after, so
            // every worker's report for second k has arrived.
            let print_at =
                self.start + Duration::from_secs(second.into()) + Duration::from_millis(200);
            let timeout = print_at.saturating_duration_since(Instant::now());
            match progress.recv_timeout(timeout) {
                Ok(interval) => pending.merge(&interval),
                Err(RecvTimeoutError::Timeout) => {
                    errors_total += pending.errors;
                    if self.show_progress {
                        eprintln!("{}", self.status_line(second, &pending, errors_total));
                    }
                    pending = Interval {
                        open: 0,
                        ..Interval::default()
                    };
                    second += 1;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        workers
            .into_iter()
            .map(|w| w.join().expect("a load generator worker panicked"))
            .collect()
    }

    fn status_line(&self, second: u32, interval: &Interval, errors_total: u64) -> String {
        format!(
            "{second:>4}s  {:>11} {}  {:>10}/s in  p99 {:>8}  open {:>6}  errors {}",
            units::count(interval.completed),
            self.unit,
            units::bytes(interval.bytes as f64),
            units::nanos(interval.latency.quantile_ns(0.99)),
            units::count(interval.open),
            units::count(errors_total),
        )
    }
}

/// Runs one workload from start to summary: samples the server's side
/// before and after `body`, prints the report, and turns the outcome into
/// the exit status.
///
/// `service` names the daemon service whose `/stats` counters belong to
/// this workload (`None` sums all services).
pub fn measure<T: Figures>(
    workload: &'static str,
    addr: SocketAddr,
    common: &Common,
    service: Option<&str>,
    unit: &'static str,
    stop: Arc<AtomicBool>,
    body: impl FnOnce(&Session) -> Outcome<T>,
) -> ExitCode {
    // The server's side first: a --pid that does not exist is a usage
    // error, while a missing admin endpoint only loses the server's view.
    let process_start = match common.pid.map(process::sample).transpose() {
        Ok(sample) => sample,
        Err(e) => {
            eprintln!("error: --pid: {e}");
            return ExitCode::from(2);
        }
    };
    let mut server_note = None;
    let admin_start = common
        .admin
        .as_deref()
        .and_then(|a| match admin::fetch_stats(a) {
            Ok(sample) => Some(sample),
            Err(e) => {
                let note =
                    format!("no admin endpoint at {a} ({e}); going on without the server's side");
                eprintln!("note: {note}");
                server_note = Some(note);
                None
            }
        });

    let session = Session {
        stop,
        start: Instant::now(),
        show_progress: common.progress || std::io::stderr().is_terminal(),
        unit,
    };
    let outcome = body(&session);

    let server = admin_start.as_ref().and_then(|start| {
        let admin = common.admin.as_deref()?;
        match admin::fetch_stats(admin) {
            Ok(end) => Some(admin::ServerReport::between(
                start,
                &end,
                service,
                outcome.completed,
            )),
            Err(e) => {
                let note = format!("the admin endpoint stopped answering ({e})");
                eprintln!("note: {note}");
                server_note = Some(note);
                None
            }
        }
    });
    let process = match (common.pid, process_start) {
        (Some(pid), Some(start)) => match process::sample(pid) {
            Ok(end) => Some(process::ProcessReport::between(
                pid,
                start,
                end,
                outcome.completed,
            )),
            Err(e) => {
                eprintln!("note: --pid: {e}");
                None
            }
        },
        _ => None,
    };

    let report = Report {
        workload,
        addr: addr.to_string(),
        clean: outcome.failures.is_empty(),
        interrupted: session.stopped(),
        elapsed_s: outcome.elapsed.as_secs_f64(),
        figures: outcome.figures,
        failures_total: outcome.failures.len(),
        failures: outcome.failures,
        server,
        server_note,
        process,
    };
    let clean = report.clean;
    let interrupted = report.interrupted;
    report.print(common.json);
    exit_status(clean, interrupted)
}

/// The exit status of a run, once its summary is printed: a failure wins
/// (1: the server got something wrong, whether or not the run was cut
/// short); otherwise a run stopped by Ctrl-C exits 130 (128 + SIGINT), as
/// shells expect of an interrupted program, so a script can tell a full
/// run from a partial one; a full clean run exits 0.
fn exit_status(clean: bool, interrupted: bool) -> ExitCode {
    match (clean, interrupted) {
        (false, _) => ExitCode::from(1),
        (true, true) => ExitCode::from(INTERRUPTED),
        (true, false) => ExitCode::SUCCESS,
    }
}

/// The exit status of a run that Ctrl-C (SIGINT) or SIGTERM cut short.
pub const INTERRUPTED: u8 = 128 + 2;

/// Resolves `--addr` to one socket address, or explains why not.
pub fn resolve(addr: &str) -> Result<SocketAddr, UsageError> {
    addr.to_socket_addrs()
        .map_err(|e| UsageError(format!("--addr {addr}: {e}")))?
        .next()
        .ok_or_else(|| UsageError(format!("--addr {addr}: no address")))
}

/// Prints a usage error and returns exit status 2.
pub fn usage_error(e: UsageError) -> ExitCode {
    eprintln!("error: {}", e.0);
    ExitCode::from(2)
}

/// The first SIGINT or SIGTERM sets the returned flag, which asks the run
/// to stop and print its summary; a second one exits at once (status 130),
/// in case collecting the last replies is what hangs.
fn install_stop_signals() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // The order matters: the exit is armed by the flag the second
        // registration sets, so it must run first.
        flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Raises the soft limit on open files to the hard limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The current soft limit on open files, to warn before a run that would
/// exceed it.
pub fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    }
}

/// The `would block` outcome of a non-blocking call: not an error, only
/// "not now".
pub(crate) fn would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

/// An `interrupted` outcome: a signal arrived during the call; retry it.
pub(crate) fn interrupted(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Interrupted
}

/// The hint every client gives when nothing listens at the address: the
/// usual cause is a daemon that is not running, or runs elsewhere.
pub const NOT_RUNNING_HINT: &str = "is `socketlab serve` running there?";

/// The failure text for a connection that could not be made, with the
/// hint when the address refused it.
pub fn connect_failed(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        format!("connect failed: {e} ({NOT_RUNNING_HINT})")
    } else {
        format!("connect failed: {e}")
    }
}
