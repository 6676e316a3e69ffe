//! `socketlab demo blocking-vs-reactor`: the same slow clients, three servers.
//!
//! Tutorials usually show a blocking server that serves one client at a
//! time, then fix it with a thread per client. There is a third way, the
//! one socketlab's daemon takes: one thread that never blocks on any single
//! client, driven by readiness events. This demo runs all three against the
//! same workload and times them, so the difference is measured, not claimed.
//!
//! The workload: N clients connect at once. Each is greeted by the server,
//! then "thinks" for a fixed delay (a person typing, a slow phone network)
//! before sending one request line, reads the reply, and is done. See
//! [`protocol`] for the bytes.
//!
//! - [`blocking`]: one client at a time. Each client's thinking time is
//!   spent by the server too, so N clients take at least N x delay.
//! - [`threaded`]: the same code on a thread per client. The waits overlap,
//!   so the total is close to one delay, at the cost of N threads.
//! - [`reactor`]: one thread and `mio`. The waits overlap as well, since
//!   the thread only ever does work that is ready.
//!
//! The clients are threads of this process, standing for N separate
//! people; each checks that it got the right reply, so a fast but wrong
//! server would show up as clients not served.

pub mod blocking;
pub mod protocol;
pub mod reactor;
pub mod threaded;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Socket, Type};

use crate::demo::report::{millis, wrap};

/// `socketlab demo blocking-vs-reactor [--clients N] [--delay-ms MS] [--json]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many clients connect at once (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub clients: u16,
    /// How long each client thinks, once greeted, before it sends its request (0 to 1000 ms).
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub delay_ms: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The longest the blocking server may be expected to take, in total. The
/// demo refuses workloads beyond it rather than run for minutes.
pub const MAX_SERIAL_TIME: Duration = Duration::from_secs(60);

/// What every server is asked to handle.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Workload {
    /// Clients connecting at once.
    pub clients: usize,
    /// Each client's thinking time between greeting and request.
    #[serde(rename = "delay_ms", serialize_with = "serialize_ms")]
    pub delay: Duration,
}

impl Workload {
    /// A point after which every server and client gives up: twice what the
    /// one-at-a-time server should need, plus slack for a loaded machine.
    fn deadline(&self, start: Instant) -> Instant {
        let serial = self
            .delay
            .saturating_mul(u32::try_from(self.clients).unwrap_or(u32::MAX));
        start + serial.saturating_mul(2) + Duration::from_secs(10)
    }
}

/// The three ways to serve many clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Blocking,
    ThreadPerClient,
    Reactor,
}

impl ServerKind {
    pub const ALL: [ServerKind; 3] = [
        ServerKind::Blocking,
        ServerKind::ThreadPerClient,
        ServerKind::Reactor,
    ];

    pub fn description(self) -> &'static str {
        match self {
            ServerKind::Blocking => "one at a time (blocking)",
            ServerKind::ThreadPerClient => "thread per client (blocking)",
            ServerKind::Reactor => "reactor (one thread, mio)",
        }
    }

    fn serve(self, listener: TcpListener, clients: usize, deadline: Instant) -> io::Result<Served> {
        match self {
            ServerKind::Blocking => blocking::serve(listener, clients, deadline),
            ServerKind::ThreadPerClient => threaded::serve(listener, clients, deadline),
            ServerKind::Reactor => reactor::serve(listener, clients, deadline),
        }
    }
}

/// What a server reports when it is done.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// Connections it carried through to a sent reply.
    pub served: usize,
    /// Threads it used, its own included.
    pub threads: usize,
}

/// One server's run against the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub server: ServerKind,
    pub clients: usize,
    /// Clients that got the right reply, as the clients themselves checked.
    pub clients_served: usize,
    /// Connections the server says it carried through.
    pub server_served: usize,
    /// Threads the server used, its own included.
    pub server_threads: usize,
    /// From the moment all clients start to the moment the last one is done.
    pub elapsed_ms: f64,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct RaceReport<'a> {
    demo: &'static str,
    workload: Workload,
    runs: &'a [Run],
}

/// Runs each server in [`ServerKind::ALL`] against the same workload.
pub fn race(workload: Workload) -> io::Result<Vec<Run>> {
    ServerKind::ALL
        .iter()
        .map(|&kind| run_server(kind, workload))
        .collect()
}

/// Starts `kind` on a fresh loopback listener, lets `workload.clients`
/// clients loose on it at once, and times them.
pub fn run_server(kind: ServerKind, workload: Workload) -> io::Result<Run> {
    let listener = listener_for(workload.clients)?;
    let address = listener.local_addr()?;
    let deadline = workload.deadline(Instant::now());

    thread::scope(|scope| {
        let server = scope.spawn(move || kind.serve(listener, workload.clients, deadline));
        let (clients_served, elapsed) = drive_clients(address, workload, deadline);
        let served = server
            .join()
            .map_err(|_| io::Error::other("the server thread panicked"))??;
        Ok(Run {
            server: kind,
            clients: workload.clients,
            clients_served,
            server_served: served.served,
            server_threads: served.threads,
            elapsed_ms: millis(elapsed),
        })
    })
}

/// Entry point for `socketlab demo blocking-vs-reactor`.
pub fn run(args: Args) -> ExitCode {
    let workload = Workload {
        clients: usize::from(args.clients),
        delay: Duration::from_millis(args.delay_ms),
    };
    let serial = workload.delay.saturating_mul(u32::from(args.clients));
    if serial > MAX_SERIAL_TIME {
        eprintln!(
            "{} clients x {} ms would keep the blocking server busy for {} s; \
             keep --clients x --delay-ms under {} s",
            args.clients,
            args.delay_ms,
            serial.as_secs(),
            MAX_SERIAL_TIME.as_secs()
        );
        return ExitCode::from(2);
    }

    if !args.json {
        println!(
            "{} clients connect at once. Each is greeted, thinks for {} ms, sends one line,",
            workload.clients, args.delay_ms
        );
        println!("reads the reply and leaves. Each server below serves all of them:");
        println!();
    }
    let mut runs = Vec::new();
    for kind in ServerKind::ALL {
        match run_server(kind, workload) {
            Ok(run) => {
                if !args.json {
                    print_row(&run, runs.is_empty());
                }
                runs.push(run);
            }
            Err(error) => {
                eprintln!("the {} server failed: {error}", kind.description());
                return ExitCode::FAILURE;
            }
        }
    }

    if args.json {
        let report = RaceReport {
            demo: "blocking-vs-reactor",
            workload,
            runs: &runs,
        };
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("cannot encode the results as JSON: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!();
        for line in wrap(&explanation(workload, &runs), 78) {
            println!("{line}");
        }
    }
    if runs.iter().all(|run| run.clients_served == run.clients) {
        ExitCode::SUCCESS
    } else {
        eprintln!("some clients were not served; see the table");
        ExitCode::FAILURE
    }
}

fn print_row(run: &Run, first: bool) {
    if first {
        println!(
            "  {:<30} {:>7}  {:>9}  {:>10}",
            "server", "threads", "served", "time"
        );
    }
    println!(
        "  {:<30} {:>7}  {:>9}  {:>7.1} ms",
        run.server.description(),
        run.server_threads,
        format!("{}/{}", run.clients_served, run.clients),
        run.elapsed_ms
    );
}

/// The paragraph under the table, with this run's figures.
fn explanation(workload: Workload, runs: &[Run]) -> String {
    let time_of = |kind| {
        runs.iter()
            .find(|run| run.server == kind)
            .map_or(0.0, |run| run.elapsed_ms)
    };
    let delay_ms = millis(workload.delay);
    format!(
        "The blocking server waits out each client's {delay_ms:.0} ms in turn, so its time \
         is at least {} x {delay_ms:.0} ms = {:.0} ms (measured: {:.0} ms). The thread per \
         client server overlaps the waits ({:.1} ms) by giving every client a thread of \
         its own. The reactor overlaps them too ({:.1} ms) with a single thread: it never \
         waits on one socket, it asks the kernel which sockets are ready and does only \
         the work that will not block. That is how one thread serves thousands of mostly \
         idle connections.",
        workload.clients,
        delay_ms * workload.clients as f64,
        time_of(ServerKind::Blocking),
        time_of(ServerKind::ThreadPerClient),
        time_of(ServerKind::Reactor),
    )
}

/// A loopback listener whose accept queue can hold every client at once,
/// so none is turned away while a blocking server is busy. (`std` always
/// asks for 128; the kernel caps the request at `net.core.somaxconn`.)
fn listener_for(clients: usize) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let address: SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&address.into())?;
    socket.listen(i32::try_from(clients.max(128)).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Time until `deadline`, or a `TimedOut` error if it has passed. Every
/// blocking call in this demo is bounded by it.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the demo's deadline passed",
        ))
    } else {
        Ok(left)
    }
}

/// Starts `workload.clients` client threads together and waits for all of
/// them. Returns how many got the right reply, and the time from their
/// common start to the last one finishing.
fn drive_clients(address: SocketAddr, workload: Workload, deadline: Instant) -> (usize, Duration) {
    let start = Arc::new(Barrier::new(workload.clients + 1));
    let clients: Vec<_> = (0..workload.clients)
        .map(|number| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                client(number, address, workload.delay, deadline)
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let served = clients
        .into_iter()
        .map(|client| client.join())
        .filter(|result| matches!(result, Ok(Ok(()))))
        .count();
    (served, started.elapsed())
}

/// One slow client: connect, read the greeting, think, send the request,
/// check the reply and that the server then closes.
fn client(
    number: usize,
    address: SocketAddr,
    delay: Duration,
    deadline: Instant,
) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, time_left(deadline)?)?;
    stream.set_read_timeout(Some(time_left(deadline)?))?;
    let mut reader = BufReader::new(stream.try_clone()?);

    let mut greeting = Vec::new();
    reader.read_until(b'\n', &mut greeting)?;
    if greeting != protocol::GREETING {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected greeting",
        ));
    }

    // The slowness the demo is about: the client holds the connection open
    // while it thinks. A one-at-a-time server can do nothing else meanwhile.
    thread::sleep(delay);

    let request = protocol::request(number);
    stream.write_all(&request)?;
    let mut reply = Vec::new();
    reader.read_to_end(&mut reply)?;
    if reply != protocol::reply_to(&request) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected reply",
        ));
    }
    Ok(())
}

fn serialize_ms<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(millis(*duration))
}
