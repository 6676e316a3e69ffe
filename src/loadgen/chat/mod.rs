//! `bench chat`: fan-out through a chat room (PROTOCOL.md §4), every line
//! accounted for.
//!
//! ```text
//! socketlab bench chat --addr A[,B...] --members N --messages M --size S
//!                      [--rate R] [--window W] [--time-limit T]
//! ```
//!
//! With several addresses (daemons sharing one chat, `chat.cluster`,
//! PROTOCOL.md §8), member `i` joins the `i mod K`th of the `K`
//! addresses: the sender is on the first, and every line must cross the
//! cluster to reach the members of the others.
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
//!
//! # Where things are
//!
//! - `mod.rs`: the arguments, the figures, `run` and the checks of the
//!   arguments;
//! - `lines.rs`: the lines themselves, as pure functions: writing and
//!   reading back a probe line, and classifying what the service sends;
//! - `member.rs`: one member of the room, and the sender's side of it;
//! - `worker.rs`: the room, its phases and its loop: opening members,
//!   saying lines, reading and checking every line each member receives;
//! - `tests.rs`: the tests of the lines.

mod lines;
mod member;
#[cfg(test)]
mod tests;
mod worker;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use super::report::Figures;
use super::stats::{Latency, LatencySummary};
use super::units::{self, parse_duration, parse_size};
use super::{Common, UsageError};
use lines::PROBE_HEADER;
use worker::Room;

/// Arguments of `socketlab bench chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The chat server's address; several, comma-separated, spread the
    /// members over daemons that share one chat (the sender on the first).
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
    let addrs = match validate(&args) {
        Ok(addrs) => addrs,
        Err(e) => return super::usage_error(e),
    };
    let addr = addrs[0];
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
            let room = Room::new(&args, addrs, session, progress_tx);
            session.run_worker(
                "bench-chat",
                progress_rx,
                move || room.and_then(Room::run),
                || ChatFigures::empty(&args),
            )
        },
    )
}

fn validate(args: &ChatArgs) -> Result<Vec<SocketAddr>, UsageError> {
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
    args.addr
        .split(',')
        .map(|a| super::resolve(a.trim()))
        .collect()
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
