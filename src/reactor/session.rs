//! The seam between the reactor and the services: the [`Session`] trait a
//! connection's state machine implements, and the [`Services`] trait
//! through which the reactor learns about the services it hosts.
//!
//! # Which way the layers point
//!
//! Services depend on the reactor, never the reverse. The reactor does not
//! name a single service: when a connection is accepted it asks its
//! [`Services`] for a session, when a datagram arrives it asks it for the
//! answer, and once per turn it gives it a turn of its own
//! ([`Services::poll`]). The daemon builds the one implementation
//! (`services::Shared`) and hands it to [`Reactor::new`](super::Reactor::new).
//! So the reactor can be read, and changed, without the services, and a
//! test could drive it with a services table of its own.
//!
//! # The calls a session receives
//!
//! ```text
//!          accept
//!            |
//!         on_open ----------------------------.
//!            |                                |
//!   +--> on_input (bytes arrived)             |
//!   |    on_output_drained (room to write)    |   any time:
//!   |    on_timer (a wake-up it asked for)    |   on_output_full
//!   |    on_source (its pipe, its job)        |
//!   +----'   |                                |
//!       on_peer_closed (read gave EOF)        |
//!            |                                |
//!         on_close (exactly once) <-----------'
//! ```
//!
//! A callback only records what it asks for, through its [`Cx`]: output,
//! mail for other connections, wake-ups, a close. The reactor acts on it
//! when the callback returns (write.rs).

use std::any::Any;
use std::time::{Duration, Instant, SystemTime};

use super::{Cx, JobError, JobOutput, Nudge, Post};
use crate::service_id::ServiceId;

/// One connection's state machine. Every method has a default, so a
/// service implements only what its protocol needs.
pub trait Session {
    /// The connection was just accepted. Greet the client here.
    fn on_open(&mut self, cx: &mut Cx<'_>) {
        let _ = cx;
    }

    /// Bytes arrived. `input` holds what arrived now after whatever earlier
    /// input was left unconsumed. Return how many bytes were consumed; the
    /// reactor keeps the rest (a partial line, a partial frame) and hands
    /// it back, with what arrives next, on the next call; or sooner, without
    /// new bytes, when the session lifts a hold ([`Cx::hold_input`]) or asks
    /// for it ([`Cx::offer_input_again`]). A session therefore keeps no
    /// copy of its input.
    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize;

    /// The client shut down its sending side (a read returned 0 bytes).
    /// `input` is the unconsumed rest, which will never be completed. The
    /// default closes once the pending output is flushed.
    fn on_peer_closed(&mut self, input: &[u8], cx: &mut Cx<'_>) {
        let _ = input;
        cx.close();
    }

    /// The unsent output fell below the low watermark: there is room to
    /// produce more (chargen refills here, exec resumes reading its pipes).
    /// Called only for sessions whose [`Session::wants_output_drained`] is
    /// true.
    fn on_output_drained(&mut self, cx: &mut Cx<'_>) {
        let _ = cx;
    }

    /// Whether the session produces output on its own and so needs
    /// `on_output_drained`. Asked once, when the connection opens: a
    /// session that only answers input (echo) is then spared a call per
    /// message.
    fn wants_output_drained(&self) -> bool {
        false
    }

    /// The unsent output has stayed at or over the service's limit
    /// (`max_pending_output`) for `STALL_GRACE` since the kernel refused
    /// bytes: the client does not read. The reactor stopped reading this
    /// connection when the limit was reached (that is backpressure); a
    /// service may go further and cut the client off.
    fn on_output_full(&mut self, cx: &mut Cx<'_>) {
        let _ = cx;
    }

    /// A wake-up asked for with [`Cx::set_timer`] is due. Wake-ups can be
    /// stale: check your own deadline against `cx.now()`.
    fn on_timer(&mut self, cx: &mut Cx<'_>) {
        let _ = cx;
    }

    /// A source this connection registered (a pipe, a pidfd) is ready, or
    /// a job it submitted to the helper pool finished.
    fn on_source(&mut self, event: SourceEvent, cx: &mut Cx<'_>) {
        let _ = (event, cx);
    }

    /// True while the session works on its own (a program running), so an
    /// idle timeout must not end it even though no byte moves.
    fn is_busy(&self) -> bool {
        false
    }

    /// The connection is ending, for the given reason; called exactly once,
    /// and nothing is delivered after it. Output written now is still
    /// flushed (unless the reason is an error) before the FIN.
    fn on_close(&mut self, reason: CloseReason, cx: &mut Cx<'_>) {
        let _ = (reason, cx);
    }
}

/// Why a connection ends, as told to its session's `on_close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The session called [`Cx::close`] or [`Cx::abort`].
    Requested,
    /// The client shut down its side and the session closed in turn.
    PeerClosed,
    /// A read or write failed (reset by the client, usually).
    Error,
    /// No byte in either direction for `idle_timeout_s`.
    Idle,
    /// The daemon is shutting down.
    Shutdown,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::Requested => "requested",
            CloseReason::PeerClosed => "peer closed",
            CloseReason::Error => "error",
            CloseReason::Idle => "idle",
            CloseReason::Shutdown => "shutdown",
        })
    }
}

/// What a connection's own source or job reports to its session.
pub enum SourceEvent {
    /// A source registered with [`Cx::register`] is ready.
    Ready {
        token: usize,
        readable: bool,
        writable: bool,
        /// The other end hung up (a pipe's writer closed, say).
        closed: bool,
    },
    /// A job submitted with [`Cx::submit`] finished (or was cancelled
    /// because the daemon is stopping).
    Job {
        /// The tag the job was created with.
        tag: u64,
        result: Result<JobOutput, JobError>,
    },
}

/// What the reactor needs from the services it hosts. Implemented once,
/// by `services::Shared`, which owns what the services share; the reactor
/// keeps it for the daemon's life and lends it to sessions
/// ([`Cx::services`], and `Cx::shared` on the services' side).
pub trait Services: Any {
    /// The state machine for a connection just accepted on `service`.
    fn open_session(&mut self, service: ServiceId) -> Box<dyn Session>;

    /// Answers one datagram for a UDP service: writes the reply into
    /// `reply` and returns true when there is one (discard never answers).
    fn answer_datagram(
        &self,
        service: ServiceId,
        datagram: &[u8],
        wall: SystemTime,
        reply: &mut Vec<u8>,
    ) -> bool;

    /// The limits the reactor enforces on a service's connections, read
    /// once, when the reactor is built.
    fn limits(&self, service: ServiceId) -> ServiceLimits;

    /// Connections one client (an IPv4 address, an IPv6 /64) may have open
    /// at once over all services; 0 for no limit. Read once, when the
    /// reactor is built.
    fn max_connections_per_ip(&self) -> usize {
        0
    }

    /// Called once per loop turn with the turn's time, for state that
    /// needs attention without any connection's event (children being
    /// reaped after their connection left, say). Returns when it next
    /// needs a turn, so the reactor can bound its sleep.
    fn poll(&mut self, now: Instant) -> Option<Instant>;

    /// True while shared state still has work that must finish before the
    /// daemon may exit (children not yet reaped).
    fn is_busy(&self) -> bool;

    /// Hands over, once, when the reactor is built, the way a thread of the
    /// services' own wakes this loop (post.rs). The default ignores it.
    fn attach(&mut self, nudge: Nudge) {
        let _ = nudge;
    }

    /// Called once per loop turn, after [`Services::poll`]: delivers what
    /// other threads left in the services' own inboxes (a chat line said
    /// on another reactor) to this reactor's connections, through `post`.
    /// Those threads wake the reactor with `Group::wake` when they leave
    /// something. The default has no inbox.
    fn drain_inbox(&mut self, post: &mut Post<'_>) {
        let _ = post;
    }
}

/// A service's connection limits, as the reactor enforces them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Connections open at once on this service; 0 for no limit of its own
    /// (the global limit still applies).
    pub max_connections: usize,
    /// No byte in either direction for this long ends a connection.
    pub idle_timeout: Option<Duration>,
    /// Unsent output at which the reactor stops reading (the high
    /// watermark; reading resumes at a quarter of it).
    pub max_pending_output: usize,
}
