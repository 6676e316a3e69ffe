//! Experiment 5: a blocking `recv()` with a timeout.
//!
//! Between "sleep forever" and "never sleep" sits the timeout: a blocking
//! socket with `SO_RCVTIMEO` set sleeps in `recv` for at most that long.
//! This is what Python's `sock.settimeout(0.2)` and Rust's
//! `set_read_timeout` do. When the time runs out, Linux returns the very same
//! `EAGAIN` a non-blocking socket returns at once; Python turns it into
//! `TimeoutError`, Rust into `ErrorKind::WouldBlock`.
//!
//! A timeout is the right tool for a client waiting on one connection. For a
//! server it is no fix: while one thread sleeps out one client's timeout,
//! every other client waits too.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::demo::report::{Finding, Mode, Observation, Outcome, millis};
use crate::demo::sys;

/// What experiment 5 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The timeout set with `SO_RCVTIMEO`.
    pub timeout_ms: u64,
    /// The errno `recv()` returned when it ran out: `EAGAIN` on Linux.
    pub errno: Option<&'static str>,
    /// Rust's `io::ErrorKind` for that error, as its `Debug` name.
    pub error_kind: Option<String>,
    /// How long the call slept before returning, measured around it.
    pub elapsed_ms: f64,
}

/// Long enough to see on a terminal, short enough not to slow the demo.
const TIMEOUT: Duration = Duration::from_millis(200);

pub fn run() -> io::Result<Finding<Facts>> {
    // The peer stays connected and silent for the whole call.
    let (_peer, mut server) = sys::connected_pair()?;
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
        "recv(server, 64-byte buffer)",
        Mode::timeout(TIMEOUT),
        outcome,
        format!(
            "The peer is silent, so the call slept until SO_RCVTIMEO ran out and returned \
             after {:.1} ms. The error is EAGAIN, the same errno a non-blocking recv gives \
             at once; Rust reports it as {}, Python raises TimeoutError.",
            millis(elapsed),
            error_kind.as_deref().unwrap_or("no error"),
        ),
    );

    Ok(Finding {
        observations: vec![observation],
        summary: format!(
            "In short: a timeout bounds how long one call may sleep ({} ms asked, {:.1} ms \
             measured), but the thread is still stuck for that long and can serve no one else \
             meanwhile.",
            TIMEOUT.as_millis(),
            millis(elapsed),
        ),
        facts: Facts {
            timeout_ms: u64::try_from(TIMEOUT.as_millis()).unwrap_or(u64::MAX),
            errno,
            error_kind,
            elapsed_ms: millis(elapsed),
        },
    })
}
