//! The services: one module per protocol, each a per-connection state machine.
//!
//! # The one trait
//!
//! A service is mostly a [`Session`]: the state of one connection and how it
//! reacts to what the reactor tells it. The reactor owns the socket; the
//! session never sees it. It is handed the bytes that arrived and answers by
//! writing into its context ([`Cx`]), which the reactor then flushes. Time
//! comes in as `cx.now()`, read once per loop turn. So a session is plain
//! code over bytes, testable without a network, and the reactor alone
//! decides when to read, when to write and when to stop reading.
//!
//! What services share (chat rooms, the exec key, the running-program
//! count) lives in [`Shared`], reached through `cx.shared()`, and
//! datagram services answer through [`answer_datagram`].
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

use std::fmt;
use std::io;

use crate::auth::Throttle;
use crate::config::Config;
pub use crate::reactor::{CloseReason, Cx, SourceEvent};

/// Every service the daemon knows, in the order of PROTOCOL.md §1's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceId {
    Admin,
    Echo,
    Discard,
    Daytime,
    Chargen,
    Files,
    Chat,
    Exec,
}

impl ServiceId {
    pub const ALL: [ServiceId; 8] = [
        ServiceId::Admin,
        ServiceId::Echo,
        ServiceId::Discard,
        ServiceId::Daytime,
        ServiceId::Chargen,
        ServiceId::Files,
        ServiceId::Chat,
        ServiceId::Exec,
    ];

    /// The name used in config keys, the ready file, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ServiceId::Admin => "admin",
            ServiceId::Echo => "echo",
            ServiceId::Discard => "discard",
            ServiceId::Daytime => "daytime",
            ServiceId::Chargen => "chargen",
            ServiceId::Files => "files",
            ServiceId::Chat => "chat",
            ServiceId::Exec => "exec",
        }
    }

    pub fn from_name(name: &str) -> Option<ServiceId> {
        ServiceId::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Port offset from `port_base` (PROTOCOL.md §1).
    pub fn port_offset(self) -> u16 {
        match self {
            ServiceId::Admin => 0,
            ServiceId::Echo => 7,
            ServiceId::Discard => 9,
            ServiceId::Daytime => 13,
            ServiceId::Chargen => 19,
            ServiceId::Files => 21,
            ServiceId::Chat => 194,
            ServiceId::Exec => 512,
        }
    }

    /// Whether the service also answers datagrams on the same port number.
    pub fn has_udp(self) -> bool {
        matches!(
            self,
            ServiceId::Echo | ServiceId::Discard | ServiceId::Daytime
        )
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    /// it back, with what arrives next, on the next call.
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

    /// The unsent output passed the service's limit (`max_pending_output`).
    /// The reactor has already stopped reading this connection (that is
    /// backpressure); a service may go further and cut the client off.
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

/// State the services share across connections, owned by the reactor and
/// reached through [`Cx::shared`]. Each service keeps its part in a field.
pub struct Shared {
    pub config: Config,
    /// Chat members, nicks and rooms.
    pub chat: chat::Rooms,
    /// Failed handshakes per client address; exec and files count into the
    /// same table, so a client cannot try twice as often by using both.
    pub throttle: Throttle,
    /// The exec service's key, running-program count and reaper.
    pub exec: exec::ExecShared,
    /// The files service's users, quota books and digest cache.
    pub files: files::FilesShared,
}

impl Shared {
    /// Builds the shared state; with exec enabled this loads (or creates)
    /// the key file and the exec working directory, and fails if it cannot.
    pub fn new(config: Config) -> io::Result<Shared> {
        Ok(Shared {
            chat: chat::Rooms::new(&config.chat),
            throttle: Throttle::from_config(&config.auth),
            exec: exec::ExecShared::new(&config)?,
            files: files::FilesShared::new(&config)?,
            config,
        })
    }

    /// Called once per loop turn with the turn's time, for state that
    /// needs attention without any connection's event (children being
    /// reaped after their connection left, say). Returns when it next
    /// needs a turn, so the reactor can bound its sleep.
    pub fn poll(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.exec.poll(now)
    }

    /// True while shared state still has work that must finish before the
    /// daemon may exit (children not yet reaped).
    pub fn is_busy(&self) -> bool {
        self.exec.dying() > 0
    }
}

/// Creates the session for a connection just accepted on `service`.
pub fn open_session(service: ServiceId, shared: &mut Shared) -> Box<dyn Session> {
    match service {
        ServiceId::Echo => echo::session(shared.config.echo.mode),
        ServiceId::Discard => Box::new(discard::Session),
        ServiceId::Chargen => Box::new(chargen::Session::default()),
        ServiceId::Daytime => Box::new(daytime::Session),
        ServiceId::Admin => Box::new(admin::Session::default()),
        ServiceId::Chat => Box::new(chat::Session::new(shared.config.chat.max_line)),
        ServiceId::Exec => Box::new(exec::Session::new(shared.config.frames.max_header)),
        ServiceId::Files => Box::new(files::Session::new(shared.config.frames.max_header)),
    }
}

/// Whether the daemon hosts this service yet; unimplemented services are
/// not bound and do not appear in the ready file.
pub fn is_implemented(service: ServiceId) -> bool {
    matches!(
        service,
        ServiceId::Admin
            | ServiceId::Echo
            | ServiceId::Discard
            | ServiceId::Chargen
            | ServiceId::Daytime
            | ServiceId::Chat
            | ServiceId::Exec
            | ServiceId::Files
    )
}

/// What a service sends to a client turned away by a connection limit,
/// before the daemon closes the connection (PROTOCOL.md §6).
pub fn rejection(service: ServiceId) -> &'static [u8] {
    match service {
        ServiceId::Chat => b"! error: too many connections\n",
        ServiceId::Exec | ServiceId::Files => {
            b"\x00\x00\x00\x3d{\"type\":\"error\",\"code\":\"busy\",\"error\":\"too many connections\"}"
        }
        ServiceId::Admin => {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"
        }
        _ => b"",
    }
}

/// Answers one datagram for a UDP service. Writes the reply into `reply`
/// and returns true when there is one (discard never answers).
pub fn answer_datagram(
    service: ServiceId,
    datagram: &[u8],
    shared: &Shared,
    wall: std::time::SystemTime,
    reply: &mut Vec<u8>,
) -> bool {
    match service {
        ServiceId::Echo => echo::answer_datagram(shared.config.echo.mode, datagram, wall, reply),
        ServiceId::Daytime => daytime::answer_datagram(datagram, wall, reply),
        _ => false,
    }
}

pub mod admin;
pub mod chargen;
pub mod chat;
pub mod clock;
pub mod daytime;
pub mod discard;
pub mod echo;
pub mod exec;
pub mod files;
