//! `socketlab demo`: narrated experiments on real sockets.
//!
//! Most tutorials explain non-blocking IO with diagrams. This module shows
//! it instead: every demo opens real sockets on 127.0.0.1, makes the system
//! calls a server makes, and reports exactly what the kernel answered, with
//! one or two sentences saying why. Nothing here is simulated; if a kernel
//! behaves differently from the textbook, the demo reports what it saw.
//!
//! # The demos
//!
//! - [`nonblocking`]: eight small experiments, one per idea a reader needs
//!   before writing an event loop: `accept`, `connect`, `recv` and `send`
//!   in non-blocking mode, timeouts (`SO_RCVTIMEO`, and Python's
//!   `settimeout()`, which is non-blocking mode plus `poll`), message boundaries
//!   (TCP "sticky packets" against UDP datagrams), edge-triggered readiness,
//!   and Nagle's algorithm.
//! - [`blocking_vs_reactor`]: the same slow clients served one at a time by
//!   a blocking server, by a thread per client, and by one thread running a
//!   small readiness loop, each timed.
//!
//! # How the code is laid out
//!
//! An experiment is a plain function that returns typed facts (which errno
//! came back, how many bytes moved) together with [`report::Observation`]s,
//! one per system call worth narrating. The same value is then rendered as
//! prose for a terminal or serialised as JSON for tests and notebooks, so
//! the narration can never claim something the code did not observe.
//! [`sys`] holds the few socket calls the standard library hides.

pub mod blocking_vs_reactor;
pub mod nonblocking;
pub mod report;
pub mod sys;

use std::process::ExitCode;

/// `socketlab demo [DEMO]`: with no demo named, list the demos.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The demo to run; leave it out to see the list.
    #[command(subcommand)]
    pub demo: Option<Demo>,
}

/// The demos `socketlab demo` can run.
#[derive(Debug, clap::Subcommand)]
pub enum Demo {
    /// Eight narrated experiments on non-blocking sockets over loopback.
    Nonblocking(nonblocking::Args),
    /// The same slow clients served by a blocking server, a thread per client and a reactor.
    BlockingVsReactor(blocking_vs_reactor::Args),
}

/// The demos as `socketlab demo` lists them: the subcommand and one line on
/// what it shows. Kept next to [`Demo`] so the two are edited together.
pub const DEMOS: [(&str, &str); 2] = [
    (
        "nonblocking",
        "eight experiments: accept, connect, recv and send in non-blocking mode, \
         timeouts, message boundaries, edge-triggered readiness, Nagle",
    ),
    (
        "blocking-vs-reactor",
        "100 slow clients served one at a time, by a thread each, and by one \
         thread running a reactor; each timed",
    ),
];

/// Runs the chosen demo, or lists the demos when none is named.
pub fn run(args: Args) -> ExitCode {
    match args.demo {
        None => {
            print_demo_list();
            ExitCode::SUCCESS
        }
        Some(Demo::Nonblocking(args)) => nonblocking::run(args),
        Some(Demo::BlockingVsReactor(args)) => blocking_vs_reactor::run(args),
    }
}

fn print_demo_list() {
    println!("Available demos (run one with `socketlab demo NAME`):");
    println!();
    for (name, what) in DEMOS {
        for (i, line) in report::wrap(what, 54).iter().enumerate() {
            let label = if i == 0 { name } else { "" };
            println!("  {label:<21} {line}");
        }
    }
    println!();
    println!("`socketlab demo nonblocking --list` lists its experiments; `--step N` runs one.");
}
