//! Experiment 5: `recv()` with a timeout, two ways that look alike in
//! Python and are not the same thing underneath.
//!
//! Between "sleep forever" and "never sleep" sits the timeout.
//!
//! # `SO_RCVTIMEO`: the kernel's timeout on a blocking socket
//!
//! Set with `setsockopt(SOL_SOCKET, SO_RCVTIMEO, ...)`, it makes a blocking
//! `recv` sleep for at most that long. When the time runs out, Linux returns
//! the very same `EAGAIN` a non-blocking socket returns at once. Rust's
//! `set_read_timeout` is exactly this, and reports `ErrorKind::WouldBlock`.
//! In Python, set with `sock.setsockopt(...)` on a blocking socket, the
//! `recv` raises `BlockingIOError` (errno `EAGAIN`), not `TimeoutError`.
//!
//! # Python's `settimeout()`: non-blocking plus `poll()`
//!
//! CPython's `sock.settimeout(0.2)` does not touch `SO_RCVTIMEO`. It puts
//! the descriptor in non-blocking mode (`O_NONBLOCK`) and, before each call,
//! waits for readiness with `poll()` for at most the timeout; when `poll`
//! times out, it raises `TimeoutError` ("timed out") without calling `recv`
//! at all. So after `settimeout`, `fcntl(fd, F_GETFL)` shows `O_NONBLOCK`,
//! and a descriptor handed to other code is non-blocking. This experiment
//! does the same by hand (set `O_NONBLOCK`, `poll`, then `recv` only if
//! ready) so the two can be set side by side.
//!
//! Either way a timeout is the right tool for a client waiting on one
//! connection. For a server it is no fix: while one thread sleeps out one
//! client's timeout, every other client waits too.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::demo::report::{Finding, Mode, Observation, Outcome, millis};
use crate::demo::sys::{self, Readiness};

/// What experiment 5 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The timeout used both ways.
    pub timeout_ms: u64,
    /// `SO_RCVTIMEO`: the errno `recv()` returned when it ran out (`EAGAIN`
    /// on Linux).
    pub errno: Option<&'static str>,
    /// `SO_RCVTIMEO`: Rust's `io::ErrorKind` for that error, as its `Debug`
    /// name.
    pub error_kind: Option<String>,
    /// `SO_RCVTIMEO`: how long `recv` slept before returning.
    pub elapsed_ms: f64,
    /// The way Python's `settimeout()` works, done by hand.
    pub settimeout: SettimeoutFacts,
}

/// What the `settimeout()`-style wait observed.
#[derive(Debug, Clone, Serialize)]
pub struct SettimeoutFacts {
    /// Whether the descriptor had `O_NONBLOCK` set during the wait, read
    /// back with `fcntl(F_GETFL)`: it does, as after CPython's `settimeout`.
    pub o_nonblock: bool,
    /// Whether `poll()` ran out before the socket became readable; CPython
    /// then raises `TimeoutError`.
    pub poll_timed_out: bool,
    /// Whether `recv` was called at all (it is not, when `poll` timed out).
    pub recv_called: bool,
    /// How long the `poll` waited.
    pub elapsed_ms: f64,
}

/// Long enough to see on a terminal, short enough not to slow the demo.
const TIMEOUT: Duration = Duration::from_millis(200);

pub fn run() -> io::Result<Finding<Facts>> {
    let (so_rcvtimeo, errno, error_kind, elapsed) = with_so_rcvtimeo()?;
    let (like_python, settimeout) = like_settimeout()?;

    Ok(Finding {
        observations: vec![so_rcvtimeo, like_python],
        summary: format!(
            "In short: both bound how long one call may sleep ({} ms asked; {:.1} ms and \
             {:.1} ms measured). SO_RCVTIMEO sleeps inside recv() and ends with EAGAIN \
             (Python: BlockingIOError); Python's settimeout() makes the socket non-blocking \
             and sleeps in poll(), raising TimeoutError. Either way the thread is stuck for \
             that long and can serve no one else meanwhile.",
            TIMEOUT.as_millis(),
            millis(elapsed),
            settimeout.elapsed_ms,
        ),
        facts: Facts {
            timeout_ms: u64::try_from(TIMEOUT.as_millis()).unwrap_or(u64::MAX),
            errno,
            error_kind,
            elapsed_ms: millis(elapsed),
            settimeout,
        },
    })
}

/// A blocking `recv` on a socket with `SO_RCVTIMEO` and a silent peer.
fn with_so_rcvtimeo() -> io::Result<(Observation, Option<&'static str>, Option<String>, Duration)> {
    // The peer stays connected and silent for the whole call.
    let (_peer, mut server) = sys::connected_pair()?;
    // `set_read_timeout` is `setsockopt(SOL_SOCKET, SO_RCVTIMEO)`.
    server.set_read_timeout(Some(TIMEOUT))?;

    let mut buf = [0u8; 64];
    let started = Instant::now();
    let result = server.read(&mut buf);
    let elapsed = started.elapsed();

    let outcome = Outcome::received(&result, &buf);
    let errno = outcome.errno();
    let error_kind = result
        .as_ref()
        .err()
        .map(|error| format!("{:?}", error.kind()));
    let observation = Observation::new(
        "setsockopt(SO_RCVTIMEO), then recv(server, 64-byte buffer)",
        Mode::timeout(TIMEOUT),
        outcome,
        format!(
            "The peer is silent, so recv slept until SO_RCVTIMEO ran out and returned after \
             {:.1} ms. The error is EAGAIN, the same errno a non-blocking recv gives at once; \
             Rust reports it as {}, and Python, with the option set by setsockopt on a \
             blocking socket, raises BlockingIOError.",
            millis(elapsed),
            error_kind.as_deref().unwrap_or("no error"),
        ),
    );
    Ok((observation, errno, error_kind, elapsed))
}

/// What CPython's `settimeout()` does, by hand: `O_NONBLOCK`, then `poll`
/// for at most the timeout, and `recv` only if the socket became readable.
fn like_settimeout() -> io::Result<(Observation, SettimeoutFacts)> {
    let (_peer, mut server) = sys::connected_pair()?;
    server.set_nonblocking(true)?;
    let o_nonblock = has_o_nonblock(&server)?;

    let started = Instant::now();
    let waited = sys::wait_for(&server, Readiness::Readable, TIMEOUT)?;
    let (outcome, elapsed_ms, recv_called) = match waited {
        None => {
            let after_ms = millis(started.elapsed());
            (Outcome::TimedOut { after_ms }, after_ms, false)
        }
        // The peer sends nothing, so this arm only runs if something else
        // wrote to the socket; recv then reads it, as Python would.
        Some(after) => {
            let mut buf = [0u8; 64];
            let result = server.read(&mut buf);
            (Outcome::received(&result, &buf), millis(after), true)
        }
    };
    let poll_timed_out = waited.is_none();
    let observation = Observation::new(
        "like Python's settimeout(): O_NONBLOCK, poll(POLLIN), recv only if ready",
        Mode::wait(TIMEOUT),
        outcome,
        format!(
            "fcntl(F_GETFL) shows O_NONBLOCK {}: settimeout() makes the socket non-blocking. \
             The thread slept in poll() for {:.1} ms, not in recv(); poll ran out, so recv was \
             {} and Python raises TimeoutError (\"timed out\").",
            if o_nonblock { "set" } else { "clear" },
            elapsed_ms,
            if recv_called {
                "called"
            } else {
                "never called"
            },
        ),
    );
    Ok((
        observation,
        SettimeoutFacts {
            o_nonblock,
            poll_timed_out,
            recv_called,
            elapsed_ms,
        },
    ))
}

/// Whether the descriptor's file status flags include `O_NONBLOCK`.
fn has_o_nonblock(socket: &impl AsRawFd) -> io::Result<bool> {
    // SAFETY: F_GETFL on a descriptor we own; no pointers are passed.
    let flags = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFL) };
    if flags == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}
