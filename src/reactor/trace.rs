//! `--trace`: one line per readiness event and I/O outcome.
//!
//! Every line goes through one macro, [`trace!`], which costs a branch when
//! tracing is off and stamps each line with the seconds since the daemon
//! started, to the microsecond, when it is on:
//!
//! ```text
//! trace 12.345678 #12 echo read 5 bytes
//! ```
//!
//! The stamp is read from the clock per line, not from the turn's `now`,
//! so lines within one turn show how long its steps took. Lines go to
//! stderr unbuffered, which is slow; that is acceptable for a teaching
//! aid, and a production tracer would buffer and write once per turn.

use std::fmt;
use std::time::Instant;

use super::connection::Connection;
use super::outbox;
use crate::service_id::ServiceId;

/// Whether `--trace` is on, and since when the daemon runs.
#[derive(Debug, Clone, Copy)]
pub struct Tracer {
    on: bool,
    start: Instant,
    /// The reactor's index, printed when the daemon runs several.
    reactor: Option<usize>,
}

impl Tracer {
    pub fn new(on: bool) -> Tracer {
        Tracer {
            on,
            start: Instant::now(),
            reactor: None,
        }
    }

    /// The same tracer, its lines naming reactor `index` (`r1`).
    pub fn naming(self, index: usize) -> Tracer {
        Tracer {
            reactor: Some(index),
            ..self
        }
    }

    /// Whether lines are printed; the macro checks it before formatting.
    pub fn on(&self) -> bool {
        self.on
    }

    /// Prints one line, stamped. Called through [`trace!`].
    pub fn line(&self, args: fmt::Arguments<'_>) {
        let t = self.start.elapsed();
        match self.reactor {
            Some(r) => eprintln!("trace {}.{:06} r{r} {args}", t.as_secs(), t.subsec_micros()),
            None => eprintln!("trace {}.{:06} {args}", t.as_secs(), t.subsec_micros()),
        }
    }
}

/// `trace!(tracer, "format", args...)`: one trace line, formatted only
/// when tracing is on.
macro_rules! trace {
    ($tracer:expr, $($arg:tt)+) => {
        if $tracer.on() {
            $tracer.line(format_args!($($arg)+));
        }
    };
}
pub(crate) use trace;

/// What one flush wrote: `wrote 13 bytes`, with `, WouldBlock` when the
/// socket refused the rest.
pub(super) fn trace_write(tracer: Tracer, key: usize, service: ServiceId, f: outbox::Flushed) {
    trace!(
        tracer,
        "#{key} {service} wrote {} bytes{}",
        f.bytes,
        if f.blocked { ", WouldBlock" } else { "" }
    );
}

/// What an event reported for a connection: `readable writable read-closed`.
pub(super) fn trace_event(
    tracer: Tracer,
    key: usize,
    conn: &Connection,
    event: &mio::event::Event,
) {
    trace!(
        tracer,
        "#{key} {} {}{}{}{}{}",
        conn.service,
        conn.stream.peer(),
        if event.is_readable() { " readable" } else { "" },
        if event.is_writable() { " writable" } else { "" },
        if event.is_read_closed() {
            " read-closed"
        } else {
            ""
        },
        if event.is_error() { " error" } else { "" },
    );
}
