//! Experiment 7: readiness is not completion, and edges fire once.
//!
//! Two families of event APIs exist. *Completion* APIs (Windows IOCP,
//! `io_uring`) say "your read finished, here are the bytes". *Readiness*
//! APIs (`poll`, `epoll`, `kqueue`, and mio over them) say only "a read
//! would not block now"; the program still has to make the call, and the
//! call may return less than everything.
//!
//! Readiness comes in two flavours. `poll(2)` is *level-triggered*: it
//! reports a socket readable for as long as data is queued, at every call.
//! mio registers sockets *edge-triggered* (`EPOLLET`): it reports a change,
//! once, when new data arrives. If the program reads only part of the queue
//! and goes back to waiting, no new event comes for the bytes already there,
//! however long it waits; only *new* data makes a new edge. Hence the rule
//! every mio program follows: after a readable event, read until `EAGAIN`.
//!
//! This experiment shows it live, with a `mio::Poll` and bounded timeouts.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::demo::report::{Finding, Mode, Observation, Outcome, millis};
use crate::demo::sys::{self, Readiness, SETUP_TIMEOUT};

/// What experiment 7 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// Bytes the peer sent first.
    pub first_message_len: usize,
    /// Whether the first `Poll::poll` reported the socket readable.
    pub first_event_readable: bool,
    /// Bytes read after that event: deliberately fewer than were sent.
    pub first_read: usize,
    /// Bytes left unread in the receive queue (`FIONREAD`).
    pub left_unread: usize,
    /// Events the second `Poll::poll` returned in its timeout: 0.
    pub events_while_undrained: usize,
    /// How long that silent wait lasted.
    pub silent_wait_ms: f64,
    /// Whether level-triggered `poll(2)` called on the same socket at that
    /// moment reported it readable (the data is there).
    pub level_triggered_readable: bool,
    /// Bytes the peer sent next.
    pub second_message_len: usize,
    /// Whether new data produced a new readable event.
    pub new_data_event_readable: bool,
    /// Bytes read when reading until `EAGAIN`: everything left.
    pub drained: usize,
    /// The errno that ended the draining loop: `EAGAIN`.
    pub drain_errno: Option<&'static str>,
}

/// The token the demo's one connection is registered under.
const CONNECTION: Token = Token(0);
/// How long to wait for an event that should not come. Long enough to be
/// convincing on a terminal, short enough to keep the demo quick.
const SILENCE: Duration = Duration::from_millis(300);
const FIRST_MESSAGE: &[u8] =
    b"a message of which only the first ten bytes are read at once; the rest stays queued in the kernel";
const SECOND_MESSAGE: &[u8] = b"twenty more bytes!!!";
/// How much the first read takes: less than the first message.
const FIRST_READ: usize = 10;

pub fn run() -> io::Result<Finding<Facts>> {
    let mut observations = Vec::new();
    let (mut peer, server) = sys::connected_pair()?;
    server.set_nonblocking(true)?;
    let mut server = TcpStream::from_std(server);

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(8);
    poll.registry()
        .register(&mut server, CONNECTION, Interest::READABLE)?;

    // 1. Data arrives: one edge, one event.
    peer.write_all(FIRST_MESSAGE)?;
    let first = wait_for_event(&mut poll, &mut events, SETUP_TIMEOUT)?;
    observations.push(Observation::new(
        format!(
            "Poll::poll() after the peer sent {} bytes",
            FIRST_MESSAGE.len()
        ),
        Mode::wait(SETUP_TIMEOUT),
        first.outcome(),
        "New data arrived, so the edge-triggered registration fired once.",
    ));

    // 2. Read only part of it, as a careless handler would.
    let mut buf = [0u8; FIRST_READ];
    let partial = server.read(&mut buf);
    let first_read = *partial.as_ref().unwrap_or(&0);
    observations.push(Observation::new(
        format!("recv(server, {FIRST_READ}-byte buffer), once"),
        Mode::NonBlocking,
        Outcome::received(&partial, &buf),
        "The handler reads once and goes back to waiting, leaving the rest queued.",
    ));
    let left_unread = sys::bytes_waiting(&server)?;

    // 3. Wait again: the old data does not fire again.
    let silent = wait_for_event(&mut poll, &mut events, SILENCE)?;
    observations.push(Observation::new(
        "Poll::poll() again, with the rest still unread",
        Mode::wait(SILENCE),
        silent.outcome(),
        format!(
            "{left_unread} bytes are still queued, yet no event comes: the edge was the \
             arrival, and it was already reported. A server written this way would wait \
             forever for data it already has."
        ),
    ));

    // The same question asked of level-triggered poll(2).
    let level = sys::wait_for(&server, Readiness::Readable, Duration::ZERO)?;
    observations.push(Observation::new(
        "poll(server, POLLIN), level-triggered, at the same moment",
        Mode::wait(Duration::ZERO),
        match level {
            Some(_) => Outcome::done("readable"),
            None => Outcome::TimedOut { after_ms: 0.0 },
        },
        "Level-triggered poll(2) looks at the queue as it is now and says readable. \
         Edge-triggered epoll, which mio uses, reports changes, not states.",
    ));

    // 4. New data is a new edge.
    peer.write_all(SECOND_MESSAGE)?;
    let renewed = wait_for_event(&mut poll, &mut events, SETUP_TIMEOUT)?;
    observations.push(Observation::new(
        format!(
            "Poll::poll() after the peer sent {} more bytes",
            SECOND_MESSAGE.len()
        ),
        Mode::wait(SETUP_TIMEOUT),
        renewed.outcome(),
        "More data arrived: a new edge, so a new event. The old bytes were only found \
         because new ones came after them.",
    ));

    // 5. The right way: read until EAGAIN.
    let (drained, drain_end) = drain(&mut server);
    let drain_errno = drain_end.errno();
    observations.push(Observation::new(
        "recv(server, 64-byte buffer) in a loop until it fails",
        Mode::NonBlocking,
        drain_end,
        format!(
            "Reading until EAGAIN took all {drained} remaining bytes. Now the queue is empty, \
             and the next event will mean new data."
        ),
    ));

    poll.registry().deregister(&mut server)?;
    Ok(Finding {
        observations,
        summary: "In short: a readiness event is a hint to try, not a delivery; with \
                  edge-triggered registration it comes once per change. After each readable \
                  event, read until EAGAIN (and write until EAGAIN after writable), or \
                  bytes can sit unnoticed."
            .to_string(),
        facts: Facts {
            first_message_len: FIRST_MESSAGE.len(),
            first_event_readable: first.readable,
            first_read,
            left_unread,
            events_while_undrained: silent.count,
            silent_wait_ms: millis(silent.waited),
            level_triggered_readable: level.is_some(),
            second_message_len: SECOND_MESSAGE.len(),
            new_data_event_readable: renewed.readable,
            drained,
            drain_errno,
        },
    })
}

/// What one `Poll::poll` call returned.
struct Wakeup {
    /// Events returned for our token.
    count: usize,
    /// Whether one of them was readable.
    readable: bool,
    /// How long the call took.
    waited: Duration,
}

impl Wakeup {
    fn outcome(&self) -> Outcome {
        if self.count == 0 {
            Outcome::TimedOut {
                after_ms: millis(self.waited),
            }
        } else {
            Outcome::done(format!(
                "{} event(s) for token 0{} after {:.3} ms",
                self.count,
                if self.readable { ", readable" } else { "" },
                millis(self.waited),
            ))
        }
    }
}

/// One `poll` with `timeout`, counting our events. `poll` may return early
/// with no events (a signal, for instance), so the call is repeated until an
/// event arrives or the whole timeout has passed.
fn wait_for_event(poll: &mut Poll, events: &mut Events, timeout: Duration) -> io::Result<Wakeup> {
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match poll.poll(events, Some(left)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        let ours: Vec<_> = events
            .iter()
            .filter(|event| event.token() == CONNECTION)
            .collect();
        if !ours.is_empty() || left.is_zero() || started.elapsed() >= timeout {
            return Ok(Wakeup {
                count: ours.len(),
                readable: ours.iter().any(|event| event.is_readable()),
                waited: started.elapsed(),
            });
        }
    }
}

/// Reads until the socket says `EAGAIN` (or fails, or ends). Returns the bytes
/// read and the outcome of the call that ended the loop.
fn drain(server: &mut TcpStream) -> (usize, Outcome) {
    let mut buf = [0u8; 64];
    let mut total = 0;
    loop {
        match server.read(&mut buf) {
            Ok(0) => return (total, Outcome::Eof),
            Ok(n) => total += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return (total, Outcome::error(&error)),
        }
    }
}
