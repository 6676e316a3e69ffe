//! `socketlab demo nonblocking`: eight experiments on what changes when a
//! socket stops blocking.
//!
//! A new socket is *blocking*: `accept`, `connect`, `recv` and `send` put the
//! calling thread to sleep until they can finish. That is simple, and it is
//! why a classic server serves one client at a time. Setting `O_NONBLOCK`
//! (Python's `setblocking(False)`, Rust's `set_nonblocking(true)`) changes one
//! thing: a call that would sleep returns at once with `EAGAIN` ("try again")
//! instead. Everything else in an event loop follows from that one change:
//! the program must learn *when* to try again (readiness: `poll`, `epoll`,
//! mio), and must be ready for calls that do only part of the work.
//!
//! The experiments, each in its own module, in the order a reader needs them:
//!
//! 1. [`accept`]: nothing pending gives `EAGAIN`, not a sleep.
//! 2. [`connect`]: `EINPROGRESS`, writable readiness, then `SO_ERROR`.
//! 3. [`recv`]: `EAGAIN`, bytes, 0 for end of stream, `ECONNRESET`.
//! 4. [`send`]: the kernel takes what fits in its buffers, then `EAGAIN`.
//! 5. [`timeout`]: a call with a deadline, two ways (`SO_RCVTIMEO`, and
//!    Python's `settimeout()`, which is `O_NONBLOCK` plus `poll`), and what
//!    it costs.
//! 6. [`framing`]: TCP is a byte stream, UDP keeps datagrams whole.
//! 7. [`edge`]: an edge-triggered event is a notice of change, not a state.
//! 8. [`nagle`]: small writes, delayed ACKs and `TCP_NODELAY`.
//!
//! Each module's `run` returns a [`Finding`] with that experiment's typed
//! facts. [`EXPERIMENTS`] lists them, and [`run_step`] wraps a finding into a
//! numbered [`Step`], which this module renders as text or JSON.

pub mod accept;
pub mod connect;
pub mod edge;
pub mod framing;
pub mod nagle;
pub mod recv;
pub mod send;
pub mod timeout;

use std::io;
use std::process::ExitCode;

use serde::Serialize;

use crate::demo::report::{self, Finding, Observation};

/// `socketlab demo nonblocking [--step N] [--list] [--json]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only experiment N (see --list).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub step: Option<u8>,
    /// List the experiments without running them.
    #[arg(long)]
    pub list: bool,
    /// Print the results as one JSON document instead of narration.
    #[arg(long)]
    pub json: bool,
}

/// One experiment in the table: its number, its title, and the function
/// that runs it.
pub struct Experiment {
    pub number: u8,
    pub title: &'static str,
    run: fn() -> io::Result<Finding<Facts>>,
}

impl Experiment {
    /// Runs the experiment on fresh sockets and numbers the result.
    pub fn run(&self) -> io::Result<Step> {
        let finding = (self.run)()?;
        Ok(Step {
            step: self.number,
            title: self.title,
            observations: finding.observations,
            summary: finding.summary,
            facts: finding.facts,
        })
    }
}

/// Every experiment, in the order they are narrated.
pub const EXPERIMENTS: [Experiment; 8] = [
    Experiment {
        number: 1,
        title: "accept() on a non-blocking listener with nothing pending",
        run: || Ok(accept::run()?.map(Facts::Accept)),
    },
    Experiment {
        number: 2,
        title: "Non-blocking connect(): EINPROGRESS, writable, then SO_ERROR",
        run: || Ok(connect::run()?.map(Facts::Connect)),
    },
    Experiment {
        number: 3,
        title: "recv(): no data, data, end of stream, reset",
        run: || Ok(recv::run()?.map(Facts::Recv)),
    },
    Experiment {
        number: 4,
        title: "send() until EAGAIN: how much the kernel buffers, and a partial write",
        run: || Ok(send::run()?.map(Facts::Send)),
    },
    Experiment {
        number: 5,
        title: "recv() with a timeout: SO_RCVTIMEO, and what Python's settimeout() really does",
        run: || Ok(timeout::run()?.map(Facts::Timeout)),
    },
    Experiment {
        number: 6,
        title: "Message boundaries: TCP \"sticky packets\", length prefixes, UDP datagrams",
        run: || Ok(framing::run()?.map(Facts::Framing)),
    },
    Experiment {
        number: 7,
        title: "Readiness is not completion: an undrained edge-triggered socket stays silent",
        run: || Ok(edge::run()?.map(Facts::Edge)),
    },
    Experiment {
        number: 8,
        title: "Nagle's algorithm and TCP_NODELAY: small writes measured",
        run: || Ok(nagle::run()?.map(Facts::Nagle)),
    },
];

/// Runs experiment `number` (1 to 8). `None` if there is no such experiment.
pub fn run_step(number: u8) -> Option<io::Result<Step>> {
    EXPERIMENTS
        .iter()
        .find(|experiment| experiment.number == number)
        .map(Experiment::run)
}

/// One experiment's result: what `--json` prints for it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The experiment's number, 1 to 8.
    pub step: u8,
    pub title: &'static str,
    /// The narrated calls, in order.
    pub observations: Vec<Observation>,
    /// The lesson, with the figures measured.
    pub summary: String,
    /// The results as typed fields, tagged with the experiment's name.
    pub facts: Facts,
}

/// Each experiment's typed facts; serialised as an object whose
/// `experiment` field names the variant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "experiment", rename_all = "snake_case")]
pub enum Facts {
    Accept(accept::Facts),
    Connect(connect::Facts),
    Recv(recv::Facts),
    Send(send::Facts),
    Timeout(timeout::Facts),
    Framing(framing::Facts),
    Edge(edge::Facts),
    Nagle(nagle::Facts),
}

/// The whole `--json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub demo: &'static str,
    /// The experiments that ran, in order.
    pub steps: Vec<Step>,
    /// Experiments that could not run (a setup call failed), with the error.
    pub failures: Vec<Failure>,
}

/// An experiment that could not be carried out, as opposed to one whose
/// calls returned errors: those errors are its results.
#[derive(Debug, Serialize)]
pub struct Failure {
    pub step: u8,
    pub title: &'static str,
    pub error: String,
}

/// Entry point for `socketlab demo nonblocking`.
pub fn run(args: Args) -> ExitCode {
    let chosen: Vec<&Experiment> = EXPERIMENTS
        .iter()
        .filter(|experiment| args.step.is_none_or(|step| step == experiment.number))
        .collect();

    if args.list {
        print_list(&chosen, args.json);
        return ExitCode::SUCCESS;
    }

    let mut report = Report {
        demo: "nonblocking",
        steps: Vec::new(),
        failures: Vec::new(),
    };
    if !args.json {
        print_preamble();
    }
    for experiment in chosen {
        match experiment.run() {
            Ok(step) => {
                if !args.json {
                    print!("{}", render_step(&step));
                }
                report.steps.push(step);
            }
            Err(error) => {
                eprintln!(
                    "experiment {} ({}) could not run: {error}",
                    experiment.number, experiment.title
                );
                report.failures.push(Failure {
                    step: experiment.number,
                    title: experiment.title,
                    error: error.to_string(),
                });
            }
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("cannot encode the results as JSON: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Renders one step as narration: a heading, each observation, the lesson.
pub fn render_step(step: &Step) -> String {
    let heading = format!("Experiment {}: {}", step.step, step.title);
    let mut text = format!("{heading}\n{}\n\n", "=".repeat(heading.chars().count()));
    for observation in &step.observations {
        text.push_str(&report::render_observation(observation));
        text.push('\n');
    }
    for line in report::wrap(&step.summary, 78) {
        text.push_str(&line);
        text.push('\n');
    }
    text.push('\n');
    text
}

fn print_preamble() {
    println!("Every experiment below opens fresh sockets on 127.0.0.1 and reports what the");
    println!("kernel really answered. \"mode\" says whether the call was allowed to sleep.");
    println!();
}

fn print_list(experiments: &[&Experiment], json: bool) {
    if json {
        let list: Vec<_> = experiments
            .iter()
            .map(|e| serde_json::json!({ "step": e.number, "title": e.title }))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "demo": "nonblocking", "experiments": list })
        );
        return;
    }
    for experiment in experiments {
        println!("{:>2}. {}", experiment.number, experiment.title);
    }
}
