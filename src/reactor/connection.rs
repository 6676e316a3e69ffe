//! One accepted client: its socket, its buffers, and where it stands.
//!
//! The struct is kept small on purpose, because ten thousand of them sit in
//! the slab of an idle daemon: no buffer is held while nothing is pending
//! (`input` and `outbox` are empty and own no heap memory then), the
//! session is a pointer, and the peer address is not stored (it is asked
//! of the kernel when a log line needs it).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use mio::net::{TcpStream, UnixStream};

use super::Session;
use super::outbox::Outbox;
use super::trace::{Tracer, trace};
use crate::service_id::ServiceId;

/// The most input a session may leave unconsumed before the reactor stops
/// reading from its connection. Sessions bound what they keep themselves
/// (a line limit, a frame header limit, both far below this); this is the
/// loop's own guarantee that no session, however written, can make a
/// connection's memory grow without bound.
pub const MAX_UNCONSUMED: usize = 1 << 20;

/// A stream socket of either family. Services never see which.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// The client's address as text, for logs and traces (`unix` for a
    /// Unix domain socket, whose clients are usually unnamed).
    pub fn peer(&self) -> String {
        match self {
            Stream::Tcp(s) => s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Stream::Unix(_) => "unix".into(),
        }
    }

    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a connection stands in its life. Every change goes through
/// [`Connection::set_phase`], which the trace reports (`open=>closing`).
///
/// ```text
///   Open --close decided--> Closing --output flushed, FIN sent--> Lingering
///     |                        |                                     |
///     |                        '--closing deadline------------------.|
///     '--error-------------------------------------------------> Dead <-- client's FIN,
///                                                                          or linger deadline
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and writing; the session receives input.
    Open,
    /// The end is decided and the session was told (`on_close`); what is
    /// still in the outbox is being flushed. Input is read and discarded.
    Closing,
    /// Our FIN is sent. Reading on and discarding until the client's FIN
    /// means closing will not reset the connection: `close()` on a socket
    /// with unread input sends RST, which may destroy our last bytes in
    /// flight. (Apache and nginx call this a lingering close.)
    Lingering,
    /// Deregistered and waiting to leave the slab after this event batch.
    Dead,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Open => "open",
            Phase::Closing => "closing",
            Phase::Lingering => "lingering",
            Phase::Dead => "dead",
        })
    }
}

/// An accepted client.
pub struct Connection {
    /// The socket, non-blocking, registered for readable and writable
    /// readiness (edge-triggered) once, at accept.
    pub stream: Stream,
    /// The protocol spoken here; indexes config and metrics.
    pub service: ServiceId,
    pub phase: Phase,
    /// Set by a readable event, cleared when a read shows the socket is
    /// empty (`WouldBlock`, or a short read). While set and not paused, the
    /// connection has input waiting that edge-triggered epoll will *not*
    /// report again.
    pub read_ready: bool,
    /// Set when a write hit `WouldBlock` or was partial; cleared by the next
    /// writable event. While set, writing is not even attempted.
    pub write_blocked: bool,
    /// The client shut down its side: a read returned 0.
    pub peer_eof: bool,
    /// Backpressure: unsent output passed the high watermark, so the
    /// reactor stopped reading. Cleared below the low watermark.
    pub paused: bool,
    /// The session asked not to be given input for now (`Cx::hold_input`).
    pub held: bool,
    /// The session can take more of its unconsumed `input` now (it lifted
    /// a hold, or asked with `Cx::offer_input_again`): the reactor offers
    /// it again from the ready queue, without waiting for new bytes, and
    /// reads nothing more from the socket until it has.
    pub reoffer: bool,
    /// The token is in the reactor's ready queue (avoids duplicates).
    pub queued: bool,
    /// The token is in the list of connections to flush this turn.
    pub flush_listed: bool,
    /// The output fell below the low watermark when the turn's write
    /// budget was spent, so `on_output_drained` was put off to the next
    /// turn. Remembered because by then there may be nothing left to
    /// write, and a turn that writes nothing would not notice the drain.
    pub drain_owed: bool,
    /// The session asked for `on_output_drained` (asked once, at accept).
    pub wants_drain: bool,
    /// An event reported the client's FIN (`EPOLLRDHUP`): a short read does
    /// not mean "drained" then, the EOF is still to be read.
    pub fin_seen: bool,
    /// `on_close` was called; it is called exactly once.
    pub told_close: bool,
    /// Sources this connection registered and has not deregistered.
    pub owned_sources: u8,
    /// Input received but not yet consumed by the session (a partial line
    /// or frame). Empty, with no capacity, in the common case.
    pub input: Vec<u8>,
    /// Output not yet accepted by the kernel; `None` while there is none.
    pub outbox: Option<Box<Outbox>>,
    /// The service's state machine. Taken out (`None`) while one of its
    /// callbacks runs, so the callback can borrow the rest of the reactor.
    pub session: Option<Box<dyn Session>>,
    /// A number unique over the daemon's life: tells this connection apart
    /// from a later one that reuses its token.
    pub serial: u64,
    /// When a byte was last received from or sent to the client.
    pub last_active: Instant,
    /// When the idle wake-up queued for this connection fires, if any.
    pub idle_wake: Option<Instant>,
    /// Counts stalls: a stall is under way (the unsent output has stayed
    /// at or over the limit since a write the kernel refused) while the
    /// count is odd. It goes up by one when a stall starts and by one when
    /// it ends, and a stall's `Wake::Stall` wake-up carries its odd count,
    /// so a wake-up left by an earlier stall is told apart. A byte, not an
    /// `Instant`, keeps the slab entry small; a stale wake-up would need
    /// 128 stalls within `STALL_GRACE` to be mistaken. A stall that lasts
    /// `STALL_GRACE` makes the session hear `on_output_full`.
    pub stall: u8,
}

impl Connection {
    /// Moves to a new phase, reporting the transition under `--trace`.
    pub fn set_phase(&mut self, key: usize, phase: Phase, tracer: Tracer) {
        trace!(tracer, "#{key} {} {}=>{}", self.service, self.phase, phase);
        self.phase = phase;
    }

    /// Backpressure on: if the unsent output has reached `high_water` and
    /// the connection is open and still reading, stop reading it. Returns
    /// true on that transition, when the session is to hear
    /// `on_output_full`.
    pub fn pause_if_full(&mut self, key: usize, high_water: usize, tracer: Tracer) -> bool {
        let pending = self.pending_output();
        if pending < high_water || self.paused || self.phase != Phase::Open {
            return false;
        }
        self.paused = true;
        trace!(
            tracer,
            "#{key} {} backpressure on ({pending} bytes pending)", self.service
        );
        true
    }

    /// Keeps the stall state after a write: a stall starts when the output
    /// is at or over `high_water` and the kernel refused bytes, and ends as
    /// soon as the output falls under `high_water`. Returns the new stall's
    /// number when one starts, for a wake-up `STALL_GRACE` later.
    pub fn note_stall(&mut self, high_water: usize) -> Option<u8> {
        let stalled = self.stall % 2 == 1;
        if self.pending_output() < high_water || self.phase != Phase::Open {
            if stalled {
                self.stall = self.stall.wrapping_add(1);
            }
            return None;
        }
        if !stalled && self.write_blocked {
            self.stall = self.stall.wrapping_add(1);
            return Some(self.stall);
        }
        None
    }

    /// The held input is to be offered again now: asked for, and neither
    /// backpressure nor a hold stands in the way.
    pub fn wants_reoffer(&self) -> bool {
        self.reoffer && self.phase == Phase::Open && !self.paused && !self.held
    }

    pub fn pending_output(&self) -> usize {
        self.outbox.as_ref().map_or(0, |o| o.len())
    }

    /// The reactor may read: input is waiting, and neither backpressure nor
    /// the session holds it back. A closing connection reads (to discard)
    /// so its client's FIN is seen.
    pub fn wants_read(&self) -> bool {
        self.read_ready
            && !self.peer_eof
            && match self.phase {
                Phase::Open => {
                    !self.paused && !self.held && !self.reoffer && self.input.len() < MAX_UNCONSUMED
                }
                Phase::Closing | Phase::Lingering => true,
                Phase::Dead => false,
            }
    }
}
