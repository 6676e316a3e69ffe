//! `bench files`: uploads and downloads through the files service, every
//! byte verified both ways.
//!
//! ```text
//! socketlab bench files --addr A --clients N --size S [--duration T] [--count M]
//!                       [--user U] [--password-stdin] [--data-dir D] [--json]
//! ```
//!
//! # How a client runs
//!
//! Each of the N clients is a thread with one logged-in connection (the
//! same [`Session`] that `socketlab files` uses), and repeats a round:
//!
//! ```text
//!   put bench-<pid>-<client>.bin (S bytes, sha256 H)  ──▶ ok with sha256 H ?
//!   get it back                                       ──▶ every byte hashes to H ?
//! ```
//!
//! The contents change every round (the round number is written into the
//! first bytes), so a round cannot pass by finding last round's file.
//! Both checks are SHA-256 over the whole file: the daemon's confirmation
//! of the upload, and the client's own hash of the download, which must
//! equal the hash it uploaded. A mismatch is a failure of the run (exit
//! status 1), reported with the client's number.
//!
//! The load generator's other workloads drive thousands of sockets from a
//! poll loop; here a blocking thread per client is the simpler design and
//! costs nothing that matters, because each client moves megabytes per
//! request and the clients are few.
//!
//! # Figures
//!
//! Throughput in MiB/s each way, and the latency of whole transfers in HDR
//! histograms, one for puts (from the request to the daemon's `ok`, which
//! it sends once the file is durable) and one for gets (from the request
//! to the last byte). The clients log in before the clock starts: a login
//! runs PBKDF2 with the daemon's iteration count, slow on purpose, and is
//! not what this workload measures. Each client removes its file at the
//! end.

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::report::{Failure, Figures};
use super::stats::{Interval, Latency, LatencySummary};
use super::units::{self, parse_duration, parse_size};
use super::{Common, Outcome, Session, UsageError};
use crate::client::Endpoint;
use crate::client::files::progress::{self, Meter};
use crate::client::files::session::Session as FilesSession;
use crate::client::files::{FilesError, password, transfer};
use crate::codec::hex;

/// The largest `--size`: the contents of a round are held in memory.
const MAX_SIZE: usize = 4 << 30;
/// Bytes in a mebibyte, the unit of the throughput.
const MIB: f64 = (1u64 << 20) as f64;

/// Arguments of `socketlab bench files`.
#[derive(Debug, clap::Args)]
pub struct FilesArgs {
    /// The files service's address.
    #[arg(long, default_value = crate::client::files::DEFAULT_ADDR)]
    pub addr: String,
    /// How many clients, each with its own connection and thread.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Bytes per file (K, M, G suffixes: powers of 1024).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub size: usize,
    /// How long to run (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many rounds (a put and a get) in all, if that comes
    /// first.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// The user the clients log in as.
    #[arg(long, default_value = password::DEMO_USER)]
    pub user: String,
    /// Read the password from the first line of stdin (else
    /// $SOCKETLAB_PASSWORD, else <DATA_DIR>/demo.password for demo).
    #[arg(long)]
    pub password_stdin: bool,
    /// The daemon's data directory, where the demo user's password is.
    #[arg(long, value_name = "DIR", default_value = "socketlab-data")]
    pub data_dir: PathBuf,
    /// How long any one wait for the daemon may take.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// The figures of a files run.
#[derive(Debug, Serialize)]
pub struct FilesFigures {
    pub clients: u32,
    /// Clients that logged in.
    pub logged_in: u32,
    pub size: usize,
    /// Rounds whose put and get both completed and verified.
    pub rounds: u64,
    pub puts: u64,
    pub gets: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub up_mib_per_s: f64,
    pub down_mib_per_s: f64,
    pub put_latency: LatencySummary,
    pub get_latency: LatencySummary,
}

impl Figures for FilesFigures {
    fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "clients",
                format!("{} logged in of {}", self.logged_in, self.clients),
            ),
            (
                "rounds",
                format!(
                    "{} verified ({} puts, {} gets of {} each)",
                    units::count(self.rounds),
                    units::count(self.puts),
                    units::count(self.gets),
                    progress::size(self.size as u64)
                ),
            ),
            (
                "throughput",
                format!(
                    "{:.1} MiB/s up, {:.1} MiB/s down",
                    self.up_mib_per_s, self.down_mib_per_s
                ),
            ),
            ("put latency", self.put_latency.line()),
            ("get latency", self.get_latency.line()),
        ]
    }
}

/// Runs `bench files`.
pub fn run(args: FilesArgs, stop: Arc<AtomicBool>) -> ExitCode {
    let addr = match validate(&args) {
        Ok(addr) => addr,
        Err(e) => return super::usage_error(e),
    };
    let password = match password::find(&password::Sources {
        user: &args.user,
        from_stdin: args.password_stdin,
        data_dir: &args.data_dir,
    }) {
        Ok(password) => password,
        Err(e) => return super::usage_error(UsageError(e.to_string())),
    };
    // Logging in runs PBKDF2 with the daemon's iteration count, which is
    // slow on purpose; it happens before the clock starts, so that the
    // figures are the transfers' alone.
    let sessions = log_in_all(&args, addr, &password);
    let common = args.common.clone();
    super::measure(
        "files",
        addr,
        &common,
        Some("files"),
        "transfers/s",
        stop,
        |session| run_clients(&args, sessions, session),
    )
}

/// Logs every client in, all at once, each on a thread of its own.
fn log_in_all(
    args: &FilesArgs,
    addr: SocketAddr,
    password: &str,
) -> Vec<Result<FilesSession, FilesError>> {
    let endpoint = Endpoint::from(addr);
    std::thread::scope(|scope| {
        let logins: Vec<_> = (0..args.clients)
            .map(|_| {
                scope.spawn(|| FilesSession::open(&endpoint, &args.user, password, args.timeout))
            })
            .collect();
        logins
            .into_iter()
            .map(|login| {
                login.join().unwrap_or_else(|_| {
                    Err(FilesError::Connection("a login thread panicked".into()))
                })
            })
            .collect()
    })
}

fn validate(args: &FilesArgs) -> Result<SocketAddr, UsageError> {
    if args.size > MAX_SIZE {
        return Err(UsageError("--size must be at most 4G".into()));
    }
    super::resolve(&args.addr)
}

/// What every client needs to know.
#[derive(Clone)]
struct Plan {
    size: usize,
    start: Instant,
    run_until: Instant,
    stop: Arc<AtomicBool>,
    /// Rounds started so far, by all clients, against `--count`.
    rounds_started: Arc<AtomicU64>,
    count: Option<u64>,
}

/// What one client did.
struct ClientResult {
    logged_in: bool,
    rounds: u64,
    puts: u64,
    gets: u64,
    bytes_up: u64,
    bytes_down: u64,
    put_latency: Latency,
    get_latency: Latency,
    failures: Vec<Failure>,
    stopped_at: Instant,
}

fn run_clients(
    args: &FilesArgs,
    logins: Vec<Result<FilesSession, FilesError>>,
    session: &Session,
) -> Outcome<FilesFigures> {
    let plan = Plan {
        size: args.size,
        start: session.start,
        run_until: session.start + args.duration,
        stop: Arc::clone(&session.stop),
        rounds_started: Arc::new(AtomicU64::new(0)),
        count: args.count,
    };
    let (progress_tx, progress_rx) = session.progress_channel();
    let mut handles = Vec::new();
    for (number, login) in (0u64..).zip(logins) {
        let plan = plan.clone();
        let progress = progress_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("bench-files-{number}"))
            .spawn(move || run_client(number, login, &plan, &progress));
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                session.stop.store(true, Ordering::Relaxed);
                eprintln!("error: cannot start a client thread: {e}");
                break;
            }
        }
    }
    drop(progress_tx);
    let results = session.supervise(handles, progress_rx);

    let mut put_latency = Latency::new();
    let mut get_latency = Latency::new();
    let mut figures = FilesFigures {
        clients: args.clients,
        logged_in: 0,
        size: args.size,
        rounds: 0,
        puts: 0,
        gets: 0,
        bytes_up: 0,
        bytes_down: 0,
        up_mib_per_s: 0.0,
        down_mib_per_s: 0.0,
        put_latency: put_latency.summary(),
        get_latency: get_latency.summary(),
    };
    let mut failures = Vec::new();
    let mut stopped_at = session.start;
    for r in results {
        figures.logged_in += u32::from(r.logged_in);
        figures.rounds += r.rounds;
        figures.puts += r.puts;
        figures.gets += r.gets;
        figures.bytes_up += r.bytes_up;
        figures.bytes_down += r.bytes_down;
        put_latency.merge(&r.put_latency);
        get_latency.merge(&r.get_latency);
        failures.extend(r.failures);
        stopped_at = stopped_at.max(r.stopped_at);
    }
    if figures.rounds == 0 && failures.is_empty() && !session.stopped() {
        failures.push(Failure::run("no round completed within --duration"));
    }
    let elapsed = stopped_at.duration_since(session.start);
    let secs = elapsed.as_secs_f64().max(1e-9);
    figures.up_mib_per_s = figures.bytes_up as f64 / MIB / secs;
    figures.down_mib_per_s = figures.bytes_down as f64 / MIB / secs;
    figures.put_latency = put_latency.summary();
    figures.get_latency = get_latency.summary();
    Outcome {
        completed: figures.puts + figures.gets,
        figures,
        elapsed,
        failures,
    }
}

/// One client: run rounds on its logged-in session until told to stop,
/// then clean up.
fn run_client(
    number: u64,
    login: Result<FilesSession, FilesError>,
    plan: &Plan,
    progress: &Sender<Interval>,
) -> ClientResult {
    let mut result = ClientResult {
        logged_in: false,
        rounds: 0,
        puts: 0,
        gets: 0,
        bytes_up: 0,
        bytes_down: 0,
        put_latency: Latency::new(),
        get_latency: Latency::new(),
        failures: Vec::new(),
        stopped_at: plan.start,
    };
    let mut session = match login {
        Ok(session) => session,
        Err(e) => {
            result.failures.push(Failure::on(number, e.to_string()));
            result.stopped_at = Instant::now();
            return result;
        }
    };
    result.logged_in = true;
    let remote = format!("bench-{}-{number}.bin", std::process::id());
    let mut data = contents(number, plan.size);
    let mut interval = Interval {
        open: 1,
        ..Interval::default()
    };
    let mut reported_second = 0;
    let mut round = 0u64;
    while may_start_round(plan) {
        // A new round's contents: the round number in the first bytes.
        let stamp = round.to_be_bytes();
        let n = stamp.len().min(data.len());
        data[..n].copy_from_slice(&stamp[..n]);
        match one_round(&mut session, &remote, &data, &mut result, &mut interval) {
            Ok(()) => result.rounds += 1,
            Err(e) => {
                result.failures.push(Failure::on(number, e.to_string()));
                interval.errors += 1;
                break;
            }
        }
        round += 1;
        let second = plan.start.elapsed().as_secs();
        if second > reported_second {
            reported_second = second;
            let _ = progress.send(interval.take());
        }
    }
    result.stopped_at = Instant::now();
    interval.open = 0;
    let _ = progress.send(interval.take());
    if session.is_usable() {
        let _ = session.request(&json!({"type": "rm", "path": remote}));
        session.close();
    }
    result
}

/// Whether another round may start: not stopped, within the duration, and
/// within `--count` (counting this one).
fn may_start_round(plan: &Plan) -> bool {
    if plan.stop.load(Ordering::Relaxed) || Instant::now() >= plan.run_until {
        return false;
    }
    match plan.count {
        Some(count) => plan.rounds_started.fetch_add(1, Ordering::Relaxed) < count,
        None => true,
    }
}

/// Puts `data` and gets it back, each checked against its SHA-256.
fn one_round(
    session: &mut FilesSession,
    remote: &str,
    data: &[u8],
    result: &mut ClientResult,
    interval: &mut Interval,
) -> Result<(), FilesError> {
    let sha256 = hex::encode(&Sha256::digest(data));
    let size = data.len() as u64;

    let started = Instant::now();
    let (offset, _) = transfer::upload(
        session,
        remote,
        size,
        &sha256,
        &mut Cursor::new(data),
        |_| Meter::hidden(),
    )?;
    let took = started.elapsed();
    result.put_latency.record(took);
    result.puts += 1;
    result.bytes_up += size - offset;
    interval.latency.record(took);
    interval.completed += 1;

    let started = Instant::now();
    let ready = transfer::download(
        session,
        remote,
        0,
        Sha256::new(),
        &mut std::io::sink(),
        |_| Meter::hidden(),
    )?;
    if ready.sha256 != sha256 || ready.size != size {
        return Err(FilesError::Checksum(format!(
            "downloaded {} bytes with sha256 {}, uploaded {size} bytes with sha256 {sha256}",
            ready.size, ready.sha256
        )));
    }
    let took = started.elapsed();
    result.get_latency.record(took);
    result.gets += 1;
    result.bytes_down += size;
    interval.latency.record(took);
    interval.completed += 1;
    interval.bytes += size;
    Ok(())
}

/// A client's file contents: bytes that differ along the file and between
/// clients, so a block delivered to the wrong place or the wrong client
/// changes the hash.
fn contents(client: u64, size: usize) -> Vec<u8> {
    let mut state = client.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FilesArgs,
    }

    fn parse(argv: &[&str]) -> Result<FilesArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("files").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn arguments_take_sizes_with_suffixes_and_default_to_the_files_port() {
        let args = parse(&["--size", "16M", "--clients", "8", "--count", "3"]).unwrap();
        assert_eq!(args.size, 16 << 20);
        assert_eq!(args.clients, 8);
        assert_eq!(args.count, Some(3));
        assert_eq!(args.addr, "127.0.0.1:7021");
        assert_eq!(args.user, "demo");
        for bad in [
            &["--clients", "0"][..],
            &["--count", "0"],
            &["--size", "lots"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn contents_differ_between_clients_and_along_the_file() {
        let a = contents(0, 4096);
        let b = contents(1, 4096);
        assert_ne!(a, b);
        assert_ne!(a[..2048], a[2048..]);
        assert_eq!(a, contents(0, 4096));
    }
}
