//! Sessions without a network: a [`Harness`] that owns sessions, calls
//! them the way the reactor would, and records what they ask for.
//!
//! # Why a second backing for `Cx`
//!
//! In the daemon a [`Cx`] borrows the reactor's state (its `Core` and its
//! slab), so it exists only inside a loop turn, around a real socket. A
//! session's logic, though, is bytes and `now` in, bytes and deadlines out
//! (STYLE.md, habit 6), and should be testable as such: feed it input,
//! move the clock, look at what it wrote. So `Cx` is backed by one of two
//! stores, chosen when it is built: the reactor's, or a test's plain data
//! (this module). The test store exists only in test builds (`cfg(test)`),
//! so in the daemon the choice is an enum of one variant, which the
//! compiler removes: the production path pays nothing for it.
//!
//! # What is recorded
//!
//! For each connection the harness keeps a [`Recorded`]: the output it was
//! given (its own writes, then mail from others, in order of arrival),
//! files it queued, the wake-ups it asked for, whether its input is held,
//! jobs it submitted, and how it ended. Mail between connections is
//! delivered when the callback that sent it returns, as the reactor does,
//! so a chat broadcast shows up in every member's output.
//!
//! # How a test reads
//!
//! ```text
//! let mut h = Harness::new(shared);
//! let a = h.open(ServiceId::Chat);         // on_open
//! h.input(a, b"/nick ada\n");              // on_input, unconsumed bytes kept
//! assert_eq!(h.text(a), "* guest1 is now ada\n");
//! h.advance(Duration::from_secs(5));       // on_timer for wake-ups now due
//! h.peer_closed(a);                        // on_peer_closed, then on_close
//! ```
//!
//! What the harness does not model: sockets, partial writes, the fairness
//! budgets and the idle timeout. Output counts as sent the moment it is
//! written unless a test stalls the connection ([`Harness::stall`]); then
//! it counts as pending, and passing the limit calls `on_output_full` the
//! way the reactor's backpressure does. Tests of those mechanisms drive a
//! real reactor (seam_tests.rs) or a whole daemon (tests/).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::sendfile::FileSink;
use super::{CloseReason, Closing, Cx, Job, Metrics, Outbox, Services, Session, SourceEvent};
use crate::service_id::ServiceId;

/// The output limit a connection starts with, when the services do not
/// name one (a `max_pending_output` of 0).
const DEFAULT_LIMIT: usize = 1 << 20;
/// How many times in a row [`Harness::input`] serves a session that asks
/// for its input again before it gives up (a session that asks and takes
/// nothing would otherwise loop for ever).
const MAX_REOFFERS: usize = 10_000;

/// How a connection ended, as its session asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// [`Cx::close`]: output flushed, then FIN.
    Closed,
    /// [`Cx::abort`]: pending output dropped.
    Aborted,
}

/// A file range queued with [`Cx::send_file`].
#[derive(Debug, Clone)]
pub struct SentFile {
    pub file: Arc<std::fs::File>,
    pub offset: u64,
    pub len: u64,
    /// Where in the output the range falls: after this many bytes.
    pub at: usize,
}

/// What one connection's session asked for so far.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Bytes written to this connection (its own and mail), in order.
    pub output: Vec<u8>,
    /// File ranges queued, with their place in `output`.
    pub files: Vec<SentFile>,
    /// Wake-ups asked for and not yet due.
    pub timers: Vec<Instant>,
    /// Whether input is held ([`Cx::hold_input`]).
    pub held: bool,
    /// Jobs submitted to the helper pool, not yet answered by the test.
    pub jobs: Vec<Job>,
    /// Sources registered and not yet deregistered.
    pub registered: usize,
    /// How the session asked to end, if it did.
    pub ending: Option<Ending>,
    /// The reason `on_close` was called with, once it was.
    pub closed: Option<CloseReason>,
    /// Times `on_output_full` was called.
    pub output_full: usize,
}

/// The test's side of a `Cx`: what the whole harness shares.
pub(super) struct Env {
    pub(super) now: Instant,
    pub(super) wall: SystemTime,
    pub(super) services: Box<dyn Services>,
    pub(super) metrics: Metrics,
    /// Letters sent during the current callback: `(token, serial, bytes)`.
    pub(super) mail: Vec<(usize, u64, Bytes)>,
    pub(super) open: usize,
    /// Whether `Cx::submit` accepts jobs (a test may fill the "queue").
    pub(super) pool_room: bool,
    /// Source tokens handed out by `Cx::register`, above any connection's.
    pub(super) next_source: usize,
}

/// The test's side of a `Cx`: what belongs to one connection.
pub(super) struct Slot {
    /// Output of the callback under way, moved to `rec.output` after it.
    pub(super) staged: Outbox,
    pub(super) rec: Recorded,
    /// Set by `offer_input_again` (or a lifted hold) during a callback.
    pub(super) reoffer: bool,
    /// Output the test says the kernel has not taken yet.
    pub(super) pending: usize,
    pub(super) limit: usize,
    pub(super) peer: Option<SocketAddr>,
}

/// One connection: its session and what it recorded.
struct Conn {
    /// Taken out while the session is called (like the reactor's slab).
    session: Option<Box<dyn Session>>,
    service: ServiceId,
    serial: u64,
    slot: Slot,
    /// Input the session left unconsumed, offered again with the next.
    unconsumed: Vec<u8>,
    wants_drained: bool,
    /// While true, output counts as pending instead of sent.
    stalled: bool,
}

/// Sessions driven by a test: see the module docs.
pub struct Harness {
    env: Env,
    conns: BTreeMap<usize, Conn>,
    next_serial: u64,
}

impl Harness {
    /// A harness over these services, with the clock at an arbitrary
    /// instant and the wall clock at 2026-11-03 09:05:01 UTC.
    pub fn new(services: impl Services) -> Harness {
        let now = Instant::now();
        Harness {
            env: Env {
                now,
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_793_696_701),
                services: Box::new(services),
                metrics: Metrics::new(now),
                mail: Vec::new(),
                open: 0,
                pool_room: true,
                next_source: 1 << 20,
            },
            conns: BTreeMap::new(),
            next_serial: 1,
        }
    }

    /// Sets the wall-clock time sessions see.
    pub fn set_wall(&mut self, wall: SystemTime) {
        self.env.wall = wall;
    }

    /// The monotonic time sessions see.
    pub fn now(&self) -> Instant {
        self.env.now
    }

    /// The services, for a test that looks at what they share.
    pub fn services(&mut self) -> &mut dyn Services {
        self.env.services.as_mut()
    }

    /// Accepts a connection on `service`: its session comes from the
    /// services, as in the daemon, and hears `on_open`. Returns its token.
    pub fn open(&mut self, service: ServiceId) -> usize {
        let session = self.env.services.open_session(service);
        self.open_with(service, session)
    }

    /// Accepts a connection served by the given session.
    pub fn open_with(&mut self, service: ServiceId, session: Box<dyn Session>) -> usize {
        let token = self.conns.keys().next_back().map_or(1, |k| k + 1);
        let serial = self.next_serial;
        self.next_serial += 1;
        let limit = match self.env.services.limits(service).max_pending_output {
            0 => DEFAULT_LIMIT,
            n => n,
        };
        let wants_drained = session.wants_output_drained();
        self.conns.insert(
            token,
            Conn {
                session: Some(session),
                service,
                serial,
                slot: Slot {
                    staged: Outbox::new(),
                    rec: Recorded::default(),
                    reoffer: false,
                    pending: 0,
                    limit,
                    peer: Some(SocketAddr::from(([127, 0, 0, 1], peer_port(token)))),
                },
                unconsumed: Vec::new(),
                wants_drained,
                stalled: false,
            },
        );
        self.env.open += 1;
        self.call(token, |s, cx| s.on_open(cx));
        token
    }

    /// Bytes arrive from the client. They are appended to what the session
    /// left unconsumed and offered to `on_input`, unless input is held;
    /// offered again (without new bytes) while the session asks for it.
    pub fn input(&mut self, token: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.unconsumed.extend_from_slice(bytes);
        self.offer(token);
    }

    /// The client shut down its sending side: `on_peer_closed` gets the
    /// unconsumed rest, and a close it asks for is reported as
    /// [`CloseReason::PeerClosed`].
    pub fn peer_closed(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let rest = std::mem::take(&mut conn.unconsumed);
        self.call_closing_as(token, CloseReason::PeerClosed, |s, cx| {
            s.on_peer_closed(&rest, cx)
        });
        // What the session did not take stays unconsumed: it comes back
        // through `on_input` if the session asked for it.
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.unconsumed = rest;
        }
        self.reoffer_if_asked(token);
    }

    /// Moves both clocks forward and calls `on_timer` once for every
    /// connection with a wake-up now due, in token order.
    pub fn advance(&mut self, by: Duration) {
        self.env.now += by;
        self.env.wall += by;
        let due: Vec<usize> = self
            .conns
            .iter_mut()
            .filter_map(|(&token, conn)| {
                let now = self.env.now;
                let before = conn.slot.rec.timers.len();
                conn.slot.rec.timers.retain(|&at| at > now);
                (conn.slot.rec.timers.len() < before).then_some(token)
            })
            .collect();
        for token in due {
            self.call(token, |s, cx| s.on_timer(cx));
        }
    }

    /// While stalled, the client reads nothing: output counts as pending,
    /// and passing the limit calls `on_output_full`.
    pub fn stall(&mut self, token: usize) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.stalled = true;
        }
    }

    /// The client reads everything pending: the stall ends, and a session
    /// that asked for it hears `on_output_drained`.
    pub fn drain(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.stalled = false;
        conn.slot.pending = 0;
        if conn.wants_drained {
            self.call(token, |s, cx| s.on_output_drained(cx));
        }
    }

    /// One of the connection's sources is ready, or one of its jobs ended.
    pub fn source(&mut self, token: usize, event: SourceEvent) {
        self.call(token, |s, cx| s.on_source(event, cx));
    }

    /// The reactor ends the connection for its own reason (idle, an
    /// error, shutdown): `on_close` is called, once.
    pub fn close(&mut self, token: usize, reason: CloseReason) {
        self.end(token, reason);
    }

    /// Calls any session method with a test `Cx`, then acts on what it
    /// asked for as the reactor would.
    pub fn call<R>(
        &mut self,
        token: usize,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let r = self.call_closing_as(token, CloseReason::Requested, f);
        self.reoffer_if_asked(token);
        r
    }

    /// Takes the output recorded for a connection so far.
    pub fn output(&mut self, token: usize) -> Vec<u8> {
        self.conns
            .get_mut(&token)
            .map(|c| std::mem::take(&mut c.slot.rec.output))
            .unwrap_or_default()
    }

    /// [`Harness::output`] as text (lossy), for line protocols.
    pub fn text(&mut self, token: usize) -> String {
        String::from_utf8_lossy(&self.output(token)).into_owned()
    }

    /// Everything recorded for a connection (output not yet taken included).
    pub fn recorded(&mut self, token: usize) -> &mut Recorded {
        &mut self
            .conns
            .get_mut(&token)
            .expect("no such connection")
            .slot
            .rec
    }

    /// Whether the connection is still open (`on_close` not yet called).
    pub fn is_open(&self, token: usize) -> bool {
        self.conns
            .get(&token)
            .is_some_and(|c| c.slot.rec.closed.is_none())
    }

    /// Input the session left unconsumed.
    pub fn unconsumed(&self, token: usize) -> &[u8] {
        self.conns.get(&token).map_or(&[], |c| &c.unconsumed)
    }

    /// Sets the connection's output limit (`Cx::output_limit`).
    pub fn set_output_limit(&mut self, token: usize, limit: usize) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.slot.limit = limit;
        }
    }

    /// Sets the client's address (`Cx::peer_addr`); `None` for a Unix socket.
    pub fn set_peer(&mut self, token: usize, peer: Option<SocketAddr>) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.slot.peer = peer;
        }
    }

    /// Whether `Cx::submit` accepts jobs (false: the queue is full).
    pub fn set_pool_room(&mut self, room: bool) {
        self.env.pool_room = room;
    }

    // ----- What a callback's requests become ----------------------------

    fn call_closing_as<R>(
        &mut self,
        token: usize,
        reason: CloseReason,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let (r, close) = self.invoke(token, f)?;
        if let Some(close) = close {
            let conn = self.conns.get_mut(&token)?;
            if conn.slot.rec.ending.is_none() {
                conn.slot.rec.ending = Some(match close {
                    Closing::Graceful => Ending::Closed,
                    Closing::Abort => Ending::Aborted,
                });
            }
            self.end(token, reason);
        }
        Some(r)
    }

    /// Runs one session method with a test `Cx`, then moves its output
    /// into the record and delivers its mail.
    fn invoke<R>(
        &mut self,
        token: usize,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<(R, Option<Closing>)> {
        let conn = self.conns.get_mut(&token)?;
        if conn.slot.rec.closed.is_some() {
            return None;
        }
        let mut session = conn.session.take()?;
        let mut cx = Cx::for_test(
            &mut self.env,
            &mut conn.slot,
            token,
            conn.service,
            conn.serial,
        );
        let r = f(session.as_mut(), &mut cx);
        let close = cx.close;
        conn.session = Some(session);
        if close == Some(Closing::Abort) {
            conn.slot.staged.discard();
        }
        self.settle(token);
        Some((r, close))
    }

    /// Moves a callback's staged output into its connection's record, then
    /// delivers the mail it sent, and reports output over the limit.
    fn settle(&mut self, token: usize) {
        let mut full = Vec::new();
        if let Some(conn) = self.conns.get_mut(&token)
            && conn.commit_staged()
        {
            full.push(token);
        }
        for (to, serial, bytes) in std::mem::take(&mut self.env.mail) {
            let Some(conn) = self.conns.get_mut(&to) else {
                continue;
            };
            if conn.serial != serial || conn.slot.rec.closed.is_some() {
                continue;
            }
            conn.slot.staged.push_shared(bytes);
            if conn.commit_staged() && !full.contains(&to) {
                full.push(to);
            }
        }
        for to in full {
            if let Some(conn) = self.conns.get_mut(&to) {
                conn.slot.rec.output_full += 1;
            }
            self.call_closing_as(to, CloseReason::Requested, |s, cx| s.on_output_full(cx));
        }
    }

    /// Serves the unconsumed input while the session takes some and asks
    /// for more, as the reactor's ready queue would.
    fn offer(&mut self, token: usize) {
        for _ in 0..MAX_REOFFERS {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if conn.slot.rec.held || conn.unconsumed.is_empty() {
                return;
            }
            let input = std::mem::take(&mut conn.unconsumed);
            let Some(consumed) = self.call_closing_as(token, CloseReason::Requested, |s, cx| {
                s.on_input(&input, cx)
            }) else {
                return;
            };
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            let mut rest = input[consumed.min(input.len())..].to_vec();
            rest.extend_from_slice(&conn.unconsumed);
            conn.unconsumed = rest;
            let again = std::mem::take(&mut conn.slot.reoffer);
            if !again || consumed == 0 {
                return;
            }
        }
    }

    /// After a callback from outside `on_input` (a source, a timer): input
    /// the session asked to be offered again, or left unconsumed under a
    /// hold it has now lifted, is offered, as the reactor's ready queue
    /// would at the next turn.
    fn reoffer_if_asked(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if std::mem::take(&mut conn.slot.reoffer) {
            self.offer(token);
        }
    }

    /// Calls `on_close` once, as the reactor does when a connection ends.
    fn end(&mut self, token: usize, reason: CloseReason) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        if conn.slot.rec.closed.is_some() {
            return;
        }
        self.invoke(token, |s, cx| s.on_close(reason, cx));
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.slot.rec.closed = Some(reason);
            self.env.open -= 1;
        }
    }
}

impl Conn {
    /// Moves staged output to the record; returns true when this made the
    /// pending output of a stalled connection pass its limit.
    fn commit_staged(&mut self) -> bool {
        let mut sink = Sink(&mut self.slot.rec.output);
        let before = self.slot.staged.len();
        // Writing to a Vec cannot fail or block, so one flush empties it.
        let _ = self.slot.staged.flush_to(&mut sink, usize::MAX);
        debug_assert!(self.slot.staged.is_empty());
        self.slot.staged.clear_if_empty();
        if !self.stalled {
            return false;
        }
        let was_below = self.slot.pending < self.slot.limit;
        self.slot.pending += before;
        was_below && self.slot.pending >= self.slot.limit
    }
}

/// A distinct client port for each connection, as the kernel would give.
fn peer_port(token: usize) -> u16 {
    40_000 + (token % 20_000) as u16
}

/// A `Vec` as a `FileSink`, taking the copying path for files.
struct Sink<'a>(&'a mut Vec<u8>);

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    /// Takes every buffer, as a socket with room would (std's default
    /// takes only the first, which the outbox would read as a full socket).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            self.0.extend_from_slice(b);
            n += b.len();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileSink for Sink<'_> {}

// The whole module is test-only; so are its own tests.
mod tests;
