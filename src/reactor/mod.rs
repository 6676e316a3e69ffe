//! The reactor: one thread, one `mio::Poll`, every socket of the daemon.
//!
//! # Non-blocking sockets and readiness
//!
//! A socket in blocking mode makes its caller wait: `accept()` until a
//! client arrives, `recv()` until bytes arrive, `send()` until the kernel
//! has room. One thread can then serve one client at a time. Put the socket
//! in non-blocking mode (`O_NONBLOCK`; Python's `setblocking(False)`) and
//! those calls return at once; when they would have waited they fail with
//! `EAGAIN`, which Rust names [`std::io::ErrorKind::WouldBlock`]. That is
//! not an error but an answer: "nothing to do right now".
//!
//! Trying every socket in turn until one has something would burn the CPU.
//! Instead the loop asks the kernel (`epoll_wait`, through `mio::Poll`)
//! which sockets became *ready*: readable (bytes or a FIN arrived, or a
//! client waits to be accepted) or writable (room in the send buffer).
//! Readiness is a hint, not a promise: the call that follows may still say
//! `WouldBlock` (a *spurious* wake-up), and the loop treats that as normal.
//!
//! # Tokens and the slab
//!
//! Every registered socket carries a [`mio::Token`], a number the kernel
//! hands back with each event. Here that number is the socket's key in one
//! [`slab::Slab`] of `Source`s: listeners, connections, UDP sockets,
//! sources owned by a connection (a child's pipes), the signal pipe and the
//! waker. A lookup is an array index. A key freed by a closed connection is
//! reused by a later one, so entries are removed only after the whole event
//! batch is handled: a stale event in the same batch must not reach a new
//! connection.
//!
//! # Edge-triggered readiness, and draining it
//!
//! mio registers sockets edge-triggered (`EPOLLET`): the kernel reports a
//! socket when it *becomes* ready, not while it *is* ready. Each connection
//! is registered once, for readable and writable, and never re-registered:
//! no `epoll_ctl` per message. The price is a duty: readiness that is not
//! used up will not be reported again, so the loop remembers it itself
//! (`Connection::read_ready`) until a read shows the socket is empty.
//!
//! A read shows that in two ways. `WouldBlock` is the obvious one, but it
//! costs a syscall that moves no data: a server that reads until
//! `WouldBlock` makes three syscalls per echoed message instead of two.
//! The other is a *short read*: when `read()` returns fewer bytes than the
//! buffer could hold, the socket's receive queue was emptied by that read,
//! and any byte arriving later raises a fresh edge. So the loop stops after
//! a short read. Only when an event also reported the peer's FIN
//! (`is_read_closed`) does it read on, to see the end of the stream.
//!
//! # Fairness
//!
//! One client flooding the daemon must not starve the others. Each time a
//! connection is served (for an event, or from the ready queue) it gets one
//! read of at most [`READ_CHUNK`] bytes, and each write pass
//! (`Reactor::pump`) writes at most [`WRITE_BUDGET`] bytes, plus the one
//! batch a session may produce when room appears. A connection served
//! twice in a turn (from the ready queue, then for a new event) gets two
//! shares, which is harmless: the event proves the kernel had more for it.
//! If a connection had more to do, its token goes on the *ready queue*,
//! which the next turn serves first, polling with a zero timeout so nothing
//! waits. Redis caps writes the same way (`NET_MAX_WRITES_PER_EVENT`,
//! 64 KiB).
//!
//! # Backpressure
//!
//! A client that sends without reading would make an echo server buffer
//! without bound. Each connection's unsent output is limited by its
//! service's `max_pending_output`: above that *high watermark* the reactor
//! stops reading from the connection, so the client's own writes fill the
//! kernel buffers and block it. The mark is checked after each callback, so
//! the outbox may pass it by what one read's worth of input produces (64
//! KiB for echo), never more. Below the *low watermark* (a quarter of the
//! high one) reading resumes. Nothing is dropped; the client is simply not
//! served faster than it reads.
//!
//! # One turn of the loop
//!
//! [`Reactor::run`] reads off the page like Redis's `aeProcessEvents`:
//!
//! 1. compute the timeout: zero if the ready queue has work, else until the
//!    earliest timer;
//! 2. `poll()`, then read the clock once for the whole turn;
//! 3. serve the ready queue (work left from the last turn);
//! 4. dispatch the events;
//! 5. fire the timers that are due;
//! 6. flush connections that others gave output to (a chat broadcast);
//! 7. remove the connections that closed during the turn.

mod connection;
mod listener;
pub mod metrics;
mod outbox;
pub mod per_ip;
mod pool;
mod timers;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::services::{self, ServiceId, Session, Shared};
use connection::{Connection, Phase, Stream};
pub use listener::ListenSocket;
use listener::{Listener, Reserve, UdpEndpoint};
pub use metrics::Metrics;
pub use outbox::Outbox;
use pool::Pool;
pub use pool::{Job, JobResult};
use timers::{Timers, Wake};

/// Bytes one read may take; also the size of the shared read buffer. Larger
/// than the 64 KiB a client commonly writes at once, so such a message is
/// taken by one short read instead of filling the buffer exactly (which
/// would look like "maybe more" and cost a turn and a read).
pub const READ_CHUNK: usize = 128 * 1024;
/// Bytes one connection may write per loop turn before others get a turn.
pub const WRITE_BUDGET: usize = 64 * 1024;
/// Connections one listener may accept per loop turn.
const ACCEPT_BATCH: usize = 128;
/// Datagrams one UDP socket may receive per loop turn.
const DATAGRAM_BATCH: usize = 64;
/// The largest UDP payload over IPv4 (65,535 - 8 UDP - 20 IP header bytes);
/// the receive buffer is one byte larger so truncation would be visible.
pub const MAX_DATAGRAM: usize = 65_507;
/// How long a closing connection may take to flush its output and see the
/// client's FIN before it is dropped anyway.
const LINGER: Duration = Duration::from_secs(5);
/// How long the daemon waits for connections to finish closing on SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long, during shutdown, connections that sent their FIN wait for the
/// client's before the daemon exits.
const LINGER_ON_SHUTDOWN: Duration = Duration::from_secs(1);
/// Retry delay for a listener paused by descriptor exhaustion.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Helper threads for blocking work, started on first use.
const POOL_THREADS: usize = 2;

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
    /// A job submitted with [`Cx::submit`] finished.
    Job(JobResult),
}

/// A bound socket handed to the reactor by the daemon.
pub enum Bound {
    Stream(ServiceId, ListenSocket),
    Datagram(ServiceId, mio::net::UdpSocket),
}

/// Everything registered in the poll, by token.
enum Source {
    Listener(Box<Listener>),
    Datagram(Box<UdpEndpoint>),
    Conn(Connection),
    /// A source a connection registered (a child's pipe); the connection
    /// owns the descriptor, this entry only routes events to it.
    Owned {
        owner: usize,
        serial: u64,
    },
    /// SIGINT and SIGTERM arrive here as readable events (signal-hook's
    /// self-pipe). Children are watched through pidfds instead.
    Signals(Box<signal_hook_mio::v1_0::Signals>),
    /// The helper pool pokes this when jobs finish.
    Waker,
    /// A retired entry waiting to be removed after the event batch.
    Vacated,
}

/// Settings the reactor needs from the configuration, per service.
#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    max_connections: usize,
    idle_timeout: Option<Duration>,
    high_water: usize,
    low_water: usize,
}

/// The event loop.
pub struct Reactor {
    /// The kernel's readiness queue (epoll on Linux).
    poll: Poll,
    /// Reused buffer the kernel fills with events on each `poll()`.
    events: Events,
    /// Everything registered, keyed by token.
    sources: Slab<Source>,
    /// All other loop state, split off so a session callback can borrow it
    /// together with the slab.
    core: Core,
}

/// The reactor's state apart from the poll and the slab.
struct Core {
    /// For registering sources from inside callbacks.
    registry: Registry,
    /// This turn's time: read once after `poll()` returns.
    now: Instant,
    /// This turn's wall-clock time, for services that tell the time.
    wall: SystemTime,
    timers: Timers,
    /// Tokens with work left over from their last turn (unread input,
    /// unflushed output, more connections to accept), served first.
    ready: VecDeque<usize>,
    /// Connections given output by another connection this turn.
    to_flush: Vec<usize>,
    /// Output addressed to other connections, delivered after the callback
    /// that sent it returns: `(token, serial, bytes)`.
    mail: Vec<(usize, u64, Bytes)>,
    /// The mailbox's second list (see `deliver_mail`), empty between turns.
    mail_spare: Vec<(usize, u64, Bytes)>,
    /// Set while `deliver_mail` runs. Mail sent by a session it calls (a
    /// member cut off mid-batch tells its room) then waits for that loop's
    /// next round instead of overtaking the rest of the batch, so every
    /// recipient sees the letters in the same order.
    delivering: bool,
    /// Slab keys to free after this turn's events.
    dead: Vec<usize>,
    /// The shared read buffer: every connection reads into it, so an idle
    /// connection owns none. Taken out while a session looks at it.
    read_buf: Vec<u8>,
    /// Output written by the session being called; moved into the
    /// connection's own outbox only if the socket would not take it all.
    staged: Outbox,
    /// Reply buffer for datagram services.
    reply_buf: Vec<u8>,
    /// What services share.
    shared: Shared,
    metrics: Metrics,
    /// Per-service limits, indexed by `ServiceId as usize`.
    limits: [Limits; ServiceId::ALL.len()],
    max_connections: usize,
    /// Connections open over all services.
    open: usize,
    /// Connections open per client, for `limits.max_connections_per_ip`.
    per_ip: per_ip::PerIp,
    /// Source of connection serial numbers.
    next_serial: u64,
    reserve: Reserve,
    pool: Pool,
    /// `--trace`: one line per readiness event and I/O outcome.
    trace: bool,
    /// The connection whose `pump` is asking its session for more output:
    /// what that session writes is counted by that pump (`pump_credit`)
    /// rather than pumped again from inside it.
    pumping: Option<usize>,
    pump_credit: usize,
    /// When shared service state next wants a turn (`Shared::poll`).
    shared_wake: Option<Instant>,
    /// Set when SIGINT/SIGTERM arrived: when closing began.
    shutdown: Option<Instant>,
}

impl Reactor {
    /// Takes over bound sockets and prepares the loop. `max_connections` is
    /// the global limit, already resolved from the open-file limit.
    pub fn new(
        bound: Vec<Bound>,
        shared: Shared,
        max_connections: usize,
        trace: bool,
    ) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let mut sources = Slab::with_capacity(64);

        let waker_key = sources.insert(Source::Waker);
        let waker = Arc::new(Waker::new(poll.registry(), Token(waker_key))?);

        let mut signals = Box::new(signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?);
        let entry = sources.vacant_entry();
        registry.register(signals.as_mut(), Token(entry.key()), Interest::READABLE)?;
        entry.insert(Source::Signals(signals));

        for b in bound {
            let entry = sources.vacant_entry();
            let token = Token(entry.key());
            match b {
                Bound::Stream(service, mut socket) => {
                    registry.register(socket.source(), token, Interest::READABLE)?;
                    entry.insert(Source::Listener(Box::new(Listener {
                        socket,
                        service,
                        queued: false,
                    })));
                }
                Bound::Datagram(service, mut socket) => {
                    registry.register(
                        &mut socket,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    entry.insert(Source::Datagram(Box::new(UdpEndpoint {
                        socket,
                        service,
                        backlog: VecDeque::new(),
                        backlog_bytes: 0,
                        read_ready: false,
                        write_blocked: false,
                        queued: false,
                    })));
                }
            }
        }

        let mut limits = [Limits::default(); ServiceId::ALL.len()];
        for id in ServiceId::ALL {
            let c = shared.config.service(id);
            limits[id as usize] = Limits {
                max_connections: c.max_connections,
                idle_timeout: (c.idle_timeout_s > 0).then(|| Duration::from_secs(c.idle_timeout_s)),
                high_water: c.max_pending_output,
                low_water: c.max_pending_output / 4,
            };
        }

        Ok(Reactor {
            poll,
            events: Events::with_capacity(1024),
            sources,
            core: Core {
                registry,
                now: Instant::now(),
                wall: SystemTime::now(),
                timers: Timers::new(),
                ready: VecDeque::new(),
                to_flush: Vec::new(),
                mail: Vec::new(),
                mail_spare: Vec::new(),
                delivering: false,
                dead: Vec::new(),
                read_buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM + 1)],
                staged: Outbox::new(),
                reply_buf: Vec::new(),
                per_ip: per_ip::PerIp::new(shared.config.limits.max_connections_per_ip),
                shared,
                metrics: Metrics::new(Instant::now()),
                limits,
                max_connections,
                open: 0,
                next_serial: 1,
                reserve: Reserve::new(),
                pool: Pool::new(waker, POOL_THREADS),
                trace,
                pumping: None,
                pump_credit: 0,
                shared_wake: None,
                shutdown: None,
            },
        })
    }

    /// Runs until SIGINT or SIGTERM, then closes every connection cleanly
    /// and returns.
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            // 1. How long may we sleep?
            let timeout = self.timeout();

            // 2. Wait for readiness.
            let turn_end = Instant::now();
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue; // A signal arrived; its own event follows.
                }
                return Err(e);
            }
            let now = Instant::now();
            self.core.now = now;
            self.core.wall = SystemTime::now();
            let m = &mut self.core.metrics;
            m.iterations += 1;
            m.last_turn_events = self.events.iter().count() as u64;
            m.events += m.last_turn_events;
            if self.core.trace && (m.last_turn_events > 0 || !self.core.ready.is_empty()) {
                eprintln!(
                    "trace -- turn {}: {} event(s), {} ready, slept {:?}",
                    m.iterations,
                    m.last_turn_events,
                    self.core.ready.len(),
                    now - turn_end
                );
            }

            // 3. Work left from the last turn goes first.
            for _ in 0..self.core.ready.len() {
                if let Some(key) = self.core.ready.pop_front() {
                    self.clear_queued(key);
                    self.drive(key);
                }
            }

            // 4. Dispatch this turn's events.
            let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            for event in events.iter() {
                self.dispatch(event);
            }
            self.events = events;

            // 5. Timers that are due.
            while let Some((key, wake)) = self.core.timers.pop_due(self.core.now) {
                self.fire(key, wake);
            }
            self.core.shared_wake = self.core.shared.poll(self.core.now);

            // 6. Connections that others wrote to.
            for key in std::mem::take(&mut self.core.to_flush) {
                if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
                    conn.flush_listed = false;
                }
                self.pump(key);
            }

            // 7. Free the slab entries of connections that ended.
            for key in self.core.dead.drain(..) {
                self.sources.remove(key);
            }

            let m = &mut self.core.metrics;
            m.last_turn = now.elapsed();
            m.max_turn = m.max_turn.max(m.last_turn);
            m.busy += m.last_turn;

            if let Some(began) = self.core.shutdown
                && self.shutdown_finished(began)
            {
                log::info!("stopped");
                return Ok(());
            }
        }
    }

    /// Shutdown is over when every connection has flushed its output and
    /// sent its FIN, and shared state has nothing running (children
    /// reaped). Connections still lingering for their client's FIN get a
    /// second to see it; after [`SHUTDOWN_GRACE`] the daemon stops anyway.
    fn shutdown_finished(&self, began: Instant) -> bool {
        let now = Instant::now();
        if now >= began + SHUTDOWN_GRACE {
            return true;
        }
        if self.core.shared.is_busy() {
            return false;
        }
        let mut lingering = false;
        for (_, source) in self.sources.iter() {
            if let Source::Conn(c) = source {
                match c.phase {
                    Phase::Open | Phase::Closing => return false,
                    Phase::Lingering => lingering = true,
                    Phase::Dead => {}
                }
            }
        }
        !lingering || now >= began + LINGER_ON_SHUTDOWN
    }

    /// The counters, for tests that drive a reactor directly.
    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }

    fn timeout(&mut self) -> Option<Duration> {
        if !self.core.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout = self.core.timers.timeout(now);
        if let Some(at) = self.core.shared_wake {
            let d = at.saturating_duration_since(now);
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        }
        if self.core.shutdown.is_some() {
            // Check the exit condition at least every few milliseconds.
            let d = Duration::from_millis(20);
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        }
        timeout
    }

    // ----- Dispatching events -------------------------------------------

    fn dispatch(&mut self, event: &mio::event::Event) {
        let key = event.token().0;
        // Sporadic events happen: a token may already be gone, or be
        // waiting for removal. Such an event is ignored.
        let Some(source) = self.sources.get_mut(key) else {
            return;
        };
        match source {
            Source::Conn(conn) => {
                if self.core.trace {
                    trace_event(key, conn, event);
                }
                if event.is_writable() {
                    conn.write_blocked = false;
                }
                // After the client's FIN there is nothing left to read; every
                // later event reports read-closed again and must not cause
                // another read (and another `on_peer_closed`).
                if (event.is_readable() || event.is_read_closed() || event.is_error())
                    && !conn.peer_eof
                {
                    conn.read_ready = true;
                }
                if event.is_read_closed() {
                    conn.fin_seen = true;
                }
                self.drive(key);
            }
            Source::Listener(l) => {
                if self.core.trace {
                    eprintln!("trace #{key} {} listener readable", l.service);
                }
                self.drive(key);
            }
            Source::Datagram(u) => {
                if self.core.trace {
                    eprintln!(
                        "trace #{key} {} udp{}{}",
                        u.service,
                        if event.is_readable() { " readable" } else { "" },
                        if event.is_writable() { " writable" } else { "" }
                    );
                }
                if event.is_readable() {
                    u.read_ready = true;
                }
                if event.is_writable() {
                    u.write_blocked = false;
                }
                self.drive(key);
            }
            Source::Owned { owner, serial } => {
                let (owner, serial) = (*owner, *serial);
                let ev = SourceEvent::Ready {
                    token: key,
                    readable: event.is_readable(),
                    writable: event.is_writable(),
                    closed: event.is_read_closed() || event.is_write_closed() || event.is_error(),
                };
                if self.core.trace {
                    eprintln!("trace #{key} source of #{owner} ready");
                }
                self.call(owner, Some(serial), |s, cx| s.on_source(ev, cx));
            }
            Source::Signals(signals) => {
                let stop = signals.pending().any(|sig| {
                    sig == signal_hook::consts::SIGINT || sig == signal_hook::consts::SIGTERM
                });
                if stop {
                    self.begin_shutdown();
                }
            }
            Source::Waker => {
                for done in self.core.pool.take_completed() {
                    self.call(done.token, Some(done.serial), |s, cx| {
                        s.on_source(SourceEvent::Job(done.result), cx)
                    });
                }
            }
            Source::Vacated => {}
        }
    }

    /// Does whatever work a source has: the single entry point used by
    /// events, the ready queue and timers alike.
    fn drive(&mut self, key: usize) {
        match self.sources.get(key) {
            Some(Source::Conn(_)) => {
                // Output first: it may lift backpressure and allow a read.
                self.pump(key);
                self.read(key);
            }
            Some(Source::Listener(_)) => self.accept(key),
            Some(Source::Datagram(_)) => self.serve_datagrams(key),
            _ => {}
        }
    }

    fn clear_queued(&mut self, key: usize) {
        match self.sources.get_mut(key) {
            Some(Source::Conn(c)) => c.queued = false,
            Some(Source::Listener(l)) => l.queued = false,
            Some(Source::Datagram(u)) => u.queued = false,
            _ => {}
        }
    }

    /// Puts a token on the ready queue, once.
    fn requeue(&mut self, key: usize) {
        let queued = match self.sources.get_mut(key) {
            Some(Source::Conn(c)) => &mut c.queued,
            Some(Source::Listener(l)) => &mut l.queued,
            Some(Source::Datagram(u)) => &mut u.queued,
            _ => return,
        };
        if !*queued {
            *queued = true;
            self.core.ready.push_back(key);
        }
    }

    // ----- Accepting ----------------------------------------------------

    fn accept(&mut self, key: usize) {
        if self.core.shutdown.is_some() {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some(Source::Listener(l)) = self.sources.get(key) else {
                return;
            };
            let service = l.service;
            match l.socket.accept() {
                Ok((stream, peer)) => {
                    self.core.reserve.replenish();
                    self.admit(service, stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if listener::connection_gone(&e) => continue,
                Err(e) if listener::out_of_descriptors(&e) => {
                    self.out_of_descriptors(key, e);
                    return;
                }
                Err(e) => {
                    log::warn!("accept on {service} failed: {e}");
                    self.core
                        .timers
                        .schedule(self.core.now + ACCEPT_RETRY, key, Wake::Accept);
                    return;
                }
            }
        }
        // The batch is used up; more clients may be waiting. Edge-triggered
        // epoll will not say so again, so remember it ourselves.
        self.requeue(key);
    }

    fn out_of_descriptors(&mut self, key: usize, e: io::Error) {
        let Some(Source::Listener(l)) = self.sources.get(key) else {
            return;
        };
        let service = l.service;
        match self.core.reserve.shed(&l.socket) {
            Some(shed) => {
                log::warn!(
                    "accept on {service}: {e}; closed {shed} waiting connection(s) with the spare descriptor"
                );
                let m = self.core.metrics.service_mut(service);
                m.connections_total += shed;
                m.connections_rejected += shed;
            }
            None => {
                log::warn!("accept on {service}: {e}; pausing this listener for {ACCEPT_RETRY:?}");
                self.core
                    .timers
                    .schedule(self.core.now + ACCEPT_RETRY, key, Wake::Accept);
            }
        }
    }

    /// Takes in a freshly accepted connection, or turns it away at a limit.
    fn admit(&mut self, service: ServiceId, mut stream: Stream, peer: Option<SocketAddr>) {
        let limits = self.core.limits[service as usize];
        let counters = self.core.metrics.service_mut(service);
        counters.connections_total += 1;
        let over_global = self.core.open >= self.core.max_connections;
        let over_service = limits.max_connections > 0
            && counters.connections_open >= limits.max_connections as u64;
        // Counted last, so a connection turned away by another limit is
        // not counted against its client; released in `kill`.
        let token = self.sources.vacant_key();
        let over_per_ip = !(over_global || over_service)
            && peer.is_some_and(|p| !self.core.per_ip.admit(token, p.ip()));
        if over_global || over_service || over_per_ip {
            counters.connections_rejected += 1;
            // One best-effort write into an empty send buffer, then FIN.
            let _ = stream.write(services::rejection(service));
            let _ = stream.shutdown_write();
            if self.core.trace {
                eprintln!(
                    "trace {service} {} rejected: connection limit",
                    stream.peer()
                );
            }
            return;
        }
        counters.connections_open += 1;
        self.core.open += 1;

        if let Stream::Tcp(s) = &stream {
            // Small replies should leave at once, not wait for Nagle's
            // algorithm to gather more (see `socketlab demo`, step 8).
            let _ = s.set_nodelay(true);
        }

        let entry = self.sources.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.core.registry.register(
            stream.source(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("register {service} connection: {e}");
            self.core.per_ip.release(key);
            self.core.open -= 1;
            self.core.metrics.service_mut(service).connections_open -= 1;
            return;
        }
        let serial = self.core.next_serial;
        self.core.next_serial += 1;
        let session = services::open_session(service, &mut self.core.shared);
        if self.core.trace {
            eprintln!(
                "trace #{key} {service} {} accepted",
                peer.map_or_else(|| stream.peer(), |p| p.to_string())
            );
        }
        entry.insert(Source::Conn(Connection {
            stream,
            service,
            phase: Phase::Open,
            read_ready: false,
            write_blocked: false,
            peer_eof: false,
            paused: false,
            held: false,
            queued: false,
            flush_listed: false,
            drain_owed: false,
            wants_drain: session.wants_output_drained(),
            fin_seen: false,
            told_close: false,
            owned_sources: 0,
            input: Vec::new(),
            outbox: None,
            session: Some(session),
            serial,
            last_active: self.core.now,
            idle_wake: None,
        }));
        if let Some(idle) = limits.idle_timeout {
            self.arm_idle(key, self.core.now + idle);
        }
        self.call(key, None, |s, cx| s.on_open(cx));
    }

    // ----- Reading ------------------------------------------------------

    /// One read for one connection, if it wants one, handed to its session.
    fn read(&mut self, key: usize) {
        let core = &mut self.core;
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if !conn.wants_read() {
            return;
        }
        let mut buf = std::mem::take(&mut core.read_buf);
        let result = loop {
            match conn.stream.read(&mut buf[..READ_CHUNK]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                conn.read_ready = false;
                conn.peer_eof = true;
                if core.trace {
                    eprintln!("trace #{key} {} read EOF", conn.service);
                }
                core.read_buf = buf;
                match conn.phase {
                    Phase::Open => {
                        let input = std::mem::take(&mut conn.input);
                        // A close the session asks for now is the answer to
                        // the client's FIN.
                        self.call_closing_as(key, CloseReason::PeerClosed, |s, cx| {
                            s.on_peer_closed(&input, cx)
                        });
                        // The session may not have closed; either way there is
                        // nothing more to read, so only the write side is left.
                    }
                    Phase::Closing => {}
                    Phase::Lingering => self.kill(key),
                    Phase::Dead => {}
                }
            }
            Ok(n) => {
                core.metrics.service_mut(conn.service).bytes_received += n as u64;
                if conn.phase == Phase::Open {
                    conn.last_active = core.now;
                }
                // A short read drained the socket (module docs), unless the
                // client's FIN was reported: then the EOF still waits.
                let more = n == READ_CHUNK || conn.fin_seen;
                if !more {
                    conn.read_ready = false;
                }
                if more {
                    // Come back next turn, after the others had theirs.
                    self.requeue(key);
                }
                let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                    return;
                };
                if self.core.trace {
                    eprintln!("trace #{key} {} read {n} bytes", conn.service);
                }
                if conn.phase != Phase::Open {
                    // Closing: input is read only to find the client's FIN.
                    self.core.read_buf = buf;
                    return;
                }
                if conn.input.is_empty() {
                    // The common case: hand the session the shared buffer and
                    // keep only what it left unconsumed.
                    let consumed = self.call(key, None, |s, cx| s.on_input(&buf[..n], cx));
                    if let (Some(consumed), Some(Source::Conn(conn))) =
                        (consumed, self.sources.get_mut(key))
                        && consumed < n
                        && conn.phase == Phase::Open
                    {
                        conn.input.extend_from_slice(&buf[consumed..n]);
                    }
                } else {
                    conn.input.extend_from_slice(&buf[..n]);
                    let input = std::mem::take(&mut conn.input);
                    let consumed = self.call(key, None, |s, cx| s.on_input(&input, cx));
                    if let (Some(consumed), Some(Source::Conn(conn))) =
                        (consumed, self.sources.get_mut(key))
                        && consumed < input.len()
                        && conn.phase == Phase::Open
                    {
                        let mut rest = input;
                        rest.drain(..consumed);
                        conn.input = rest;
                    }
                }
                self.core.read_buf = buf;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A spurious wake-up, or the socket was drained exactly.
                conn.read_ready = false;
                if core.trace {
                    eprintln!("trace #{key} {} read WouldBlock", conn.service);
                }
                core.read_buf = buf;
            }
            Err(e) => {
                core.read_buf = buf;
                if core.trace {
                    eprintln!("trace #{key} {} read error: {e}", conn.service);
                }
                self.fail(key, &e);
            }
        }
    }

    // ----- Writing ------------------------------------------------------

    /// Writes a connection's pending output within the turn's budget, keeps
    /// the backpressure state in step, asks the session for more when it
    /// has room, and moves a closing connection along once it is flushed.
    fn pump(&mut self, key: usize) {
        self.pump_after(key, 0);
    }

    /// [`Reactor::pump`] after `credit` bytes were already written this
    /// turn (by [`Reactor::settle`]'s direct write): they count against the
    /// budget and as progress for the "room for more" check.
    fn pump_after(&mut self, key: usize, credit: usize) {
        let mut budget = WRITE_BUDGET.saturating_sub(credit);
        let mut wrote = credit;
        // Bounded: each round either writes within the budget or stops; a
        // session that keeps refilling is stopped by the budget.
        for _ in 0..64 {
            let core = &mut self.core;
            let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                return;
            };
            if conn.phase == Phase::Dead {
                return;
            }
            if let Some(out) = conn.outbox.as_mut()
                && !conn.write_blocked
                && budget > 0
            {
                match out.flush_to(&mut conn.stream, budget) {
                    Ok(f) => {
                        conn.write_blocked = f.blocked;
                        if f.bytes > 0 {
                            wrote += f.bytes;
                            budget = budget.saturating_sub(f.bytes);
                            conn.last_active = core.now;
                            core.metrics.service_mut(conn.service).bytes_sent += f.bytes as u64;
                        }
                        if core.trace {
                            trace_write(key, conn.service, f);
                        }
                    }
                    Err(e) => {
                        if core.trace {
                            eprintln!("trace #{key} {} write error: {e}", conn.service);
                        }
                        self.fail(key, &e);
                        return;
                    }
                }
                if out.is_empty() {
                    conn.outbox = None;
                }
            }
            let pending = conn.pending_output();
            let limits = core.limits[conn.service as usize];

            // Backpressure off: resume reading, from the ready queue because
            // the readable edge it missed will not come again.
            if conn.paused && pending <= limits.low_water {
                conn.paused = false;
                if core.trace {
                    eprintln!(
                        "trace #{key} {} backpressure off ({pending} bytes pending)",
                        conn.service
                    );
                }
                if conn.read_ready {
                    self.requeue(key);
                }
            }
            let Some(Source::Conn(conn)) = self.sources.get(key) else {
                return;
            };
            // The budget ran out with output left that the socket would
            // still take: no writable edge will announce that, so the
            // connection must come back next turn by itself.
            let stalled = budget == 0 && pending > 0 && !conn.write_blocked;
            match conn.phase {
                // Progress was made (now, or in a turn whose budget ran
                // out just as the output emptied) and there is room: let
                // the session produce more (chargen refills here).
                Phase::Open
                    if conn.wants_drain
                        && (wrote > 0 || conn.drain_owed)
                        && pending <= limits.low_water =>
                {
                    if budget == 0 {
                        // Its share of this turn is used; the call is owed
                        // to the next turn, which may have nothing to write.
                        if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
                            conn.drain_owed = true;
                        }
                        self.requeue(key);
                        return;
                    }
                    if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
                        conn.drain_owed = false;
                    }
                    // What the session writes now is flushed by `settle`,
                    // which reports it here instead of pumping again: one
                    // budget for the whole turn, and no recursion.
                    let outer = self.core.pumping.replace(key);
                    self.call(key, None, |s, cx| s.on_output_drained(cx));
                    self.core.pumping = outer;
                    let credit = std::mem::take(&mut self.core.pump_credit);
                    wrote = credit;
                    budget = budget.saturating_sub(credit);
                    match self.sources.get(key) {
                        Some(Source::Conn(c))
                            if credit > 0 || (c.pending_output() > 0 && !c.write_blocked) =>
                        {
                            continue;
                        }
                        _ => return,
                    }
                }
                Phase::Closing if pending == 0 => {
                    self.finish_writing(key);
                    return;
                }
                _ => {
                    if stalled {
                        self.requeue(key);
                    }
                    return;
                }
            }
        }
        self.requeue(key);
    }

    /// All output is out: send our FIN and linger for the client's.
    fn finish_writing(&mut self, key: usize) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        let _ = conn.stream.shutdown_write();
        if self.core.trace {
            eprintln!("trace #{key} {} FIN sent", conn.service);
        }
        if conn.peer_eof {
            self.kill(key);
        } else {
            conn.set_phase(key, Phase::Lingering, self.core.trace);
            // A read may already be pending; the client's FIN may be in it.
            if conn.read_ready {
                self.requeue(key);
            }
        }
    }

    // ----- Sessions -----------------------------------------------------

    /// Calls one of a connection's session methods with a context, then
    /// settles the consequences: staged output, close requests, mail.
    /// `serial`, when given, must match (events for owned sources and
    /// jobs may outlive their connection). Returns the callback's value, or
    /// `None` when there was no such live connection.
    fn call<R>(
        &mut self,
        key: usize,
        serial: Option<u64>,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        self.call_with(key, serial, CloseReason::Requested, f)
    }

    /// [`Reactor::call`], naming the reason a close requested in the
    /// callback is reported with.
    fn call_closing_as<R>(
        &mut self,
        key: usize,
        reason: CloseReason,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        self.call_with(key, None, reason, f)
    }

    fn call_with<R>(
        &mut self,
        key: usize,
        serial: Option<u64>,
        close_reason: CloseReason,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return None;
        };
        if serial.is_some_and(|s| s != conn.serial) || conn.phase == Phase::Dead {
            return None;
        }
        let mut session = conn.session.take()?;
        let service = conn.service;
        let serial = conn.serial;
        let mut cx = Cx {
            core: &mut self.core,
            sources: &mut self.sources,
            key,
            service,
            serial,
            close: None,
        };
        let r = f(session.as_mut(), &mut cx);
        let close = cx.close;
        if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
            conn.session = Some(session);
        }
        self.settle(key, close, close_reason);
        if self.core.mail.is_empty() {
            return Some(r);
        }
        self.deliver_mail();
        Some(r)
    }

    /// After a callback: moves staged output into the connection (writing
    /// it directly when nothing is queued before it), applies backpressure,
    /// and begins a requested close.
    fn settle(&mut self, key: usize, close: Option<Closing>, reason: CloseReason) {
        let core = &mut self.core;
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            core.staged.discard();
            return;
        };
        if close == Some(Closing::Abort) || conn.phase == Phase::Dead {
            core.staged.discard();
            conn.outbox = None;
        }
        let mut direct = 0;
        if !core.staged.is_empty() && conn.outbox.is_none() && !conn.write_blocked {
            // Nothing is queued before this output, so it goes straight to
            // the socket from the staging buffer: in the common case (an
            // echo) the connection never owns a buffer at all.
            match core.staged.flush_to(&mut conn.stream, WRITE_BUDGET) {
                Ok(f) => {
                    direct = f.bytes;
                    conn.write_blocked = f.blocked;
                    if f.bytes > 0 {
                        conn.last_active = core.now;
                        core.metrics.service_mut(conn.service).bytes_sent += f.bytes as u64;
                    }
                    if core.trace {
                        trace_write(key, conn.service, f);
                    }
                }
                Err(e) => {
                    core.staged.discard();
                    if core.trace {
                        eprintln!("trace #{key} {} write error: {e}", conn.service);
                    }
                    self.fail(key, &e);
                    return;
                }
            }
        }
        if !core.staged.is_empty() {
            // The socket would not take it all: the rest is the connection's.
            conn.outbox
                .get_or_insert_with(Default::default)
                .append_outbox(&mut core.staged);
        }
        let high_water = core.limits[conn.service as usize].high_water;
        let full = conn.pause_if_full(key, high_water, core.trace);
        if close.is_some() {
            self.begin_close(key, reason);
        }
        if full {
            self.call(key, None, |s, cx| s.on_output_full(cx));
        }
        if self.core.pumping == Some(key) {
            self.core.pump_credit += direct;
        } else {
            self.pump_after(key, direct);
        }
    }

    /// Delivers output that sessions addressed to other connections.
    /// Delivery may cause more (a member cut off for being too slow makes
    /// its room hear about it), so it loops until the mailbox is empty.
    fn deliver_mail(&mut self) {
        if self.core.delivering {
            return; // Called from within a delivery: its next round does it.
        }
        self.core.delivering = true;
        // Bounded: every round delivers at least one letter; a session that
        // answers every letter with another would be a bug, so the rounds
        // are capped generously.
        for _ in 0..1_000 {
            // Swap in the spare list, so that letters sent while this batch
            // is delivered go there, and both lists keep their capacity: a
            // broadcast to a thousand members does not regrow a Vec each time.
            let mut batch = std::mem::take(&mut self.core.mail_spare);
            std::mem::swap(&mut batch, &mut self.core.mail);
            if batch.is_empty() {
                self.core.mail_spare = batch;
                self.core.delivering = false;
                return;
            }
            for (key, serial, bytes) in batch.drain(..) {
                let core = &mut self.core;
                let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                    continue;
                };
                if conn.serial != serial || conn.phase != Phase::Open {
                    continue;
                }
                conn.outbox
                    .get_or_insert_with(Default::default)
                    .push_shared(bytes);
                if !conn.flush_listed {
                    conn.flush_listed = true;
                    core.to_flush.push(key);
                }
                let high_water = core.limits[conn.service as usize].high_water;
                if conn.pause_if_full(key, high_water, core.trace) {
                    self.call(key, None, |s, cx| s.on_output_full(cx));
                }
            }
            self.core.mail_spare = batch;
        }
        log::error!("mail kept producing mail for 1000 rounds; dropping the rest");
        self.core.mail.clear();
        self.core.delivering = false;
    }

    // ----- Closing ------------------------------------------------------

    /// Starts ending a connection: tells the session (once), then flushes
    /// what is pending and sends FIN.
    fn begin_close(&mut self, key: usize, reason: CloseReason) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        conn.set_phase(key, Phase::Closing, self.core.trace);
        conn.input = Vec::new();
        if self.core.trace {
            eprintln!("trace #{key} {} closing ({reason})", conn.service);
        }
        self.core
            .timers
            .schedule(self.core.now + LINGER, key, Wake::Linger);
        self.tell_close(key, reason);
        self.pump(key);
    }

    /// Calls `on_close` unless it was called already. What the session
    /// writes in it is settled like any callback's output: flushed, then
    /// the FIN.
    fn tell_close(&mut self, key: usize, reason: CloseReason) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if conn.told_close {
            return;
        }
        conn.told_close = true;
        self.call(key, None, |s, cx| s.on_close(reason, cx));
    }

    /// A read or write failed: the connection is beyond saving.
    fn fail(&mut self, key: usize, e: &io::Error) {
        if let Some(Source::Conn(conn)) = self.sources.get(key) {
            log::debug!("{} connection #{key}: {e}", conn.service);
        }
        self.tell_close(key, CloseReason::Error);
        self.kill(key);
    }

    /// Deregisters and frees a connection (the slab entry goes after the turn).
    fn kill(&mut self, key: usize) {
        self.tell_close(key, CloseReason::Error);
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Dead {
            return;
        }
        conn.set_phase(key, Phase::Dead, self.core.trace);
        let _ = self.core.registry.deregister(conn.stream.source());
        self.core.per_ip.release(key);
        self.core.open -= 1;
        self.core.metrics.service_mut(conn.service).connections_open -= 1;
        if self.core.trace {
            eprintln!("trace #{key} {} closed", conn.service);
        }
        let (owned, serial) = (conn.owned_sources, conn.serial);
        // Dropping the session now releases what it holds (pipes, files).
        conn.session = None;
        conn.outbox = None;
        conn.input = Vec::new();
        if owned > 0 {
            // The session forgot to deregister sources it registered; the
            // descriptors closed with it, only the routing entries remain.
            for (k, s) in self.sources.iter_mut() {
                if matches!(s, Source::Owned { owner, serial: sn } if *owner == key && *sn == serial)
                {
                    *s = Source::Vacated;
                    self.core.dead.push(k);
                }
            }
        }
        self.core.dead.push(key);
    }

    fn begin_shutdown(&mut self) {
        if self.core.shutdown.is_some() {
            return;
        }
        log::info!("shutting down: closing {} connection(s)", self.core.open);
        self.core.shutdown = Some(Instant::now());
        let keys: Vec<usize> = self.sources.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.sources.get_mut(key) {
                Some(Source::Listener(_)) | Some(Source::Datagram(_)) => {
                    // Stop accepting: dropping a listener closes it (and
                    // removes a Unix socket's path).
                    self.sources[key] = Source::Vacated;
                    self.core.dead.push(key);
                }
                Some(Source::Conn(_)) => self.begin_close(key, CloseReason::Shutdown),
                _ => {}
            }
        }
    }

    // ----- Timers -------------------------------------------------------

    fn arm_idle(&mut self, key: usize, at: Instant) {
        if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
            conn.idle_wake = Some(at);
            self.core.timers.schedule(at, key, Wake::Idle);
        }
    }

    fn fire(&mut self, key: usize, wake: Wake) {
        match wake {
            Wake::Accept => {
                if self.core.trace {
                    eprintln!("trace #{key} timer fired: accept retry");
                }
                self.drive(key);
            }
            Wake::Session => {
                if self.core.trace {
                    eprintln!("trace #{key} timer fired: session");
                }
                self.call(key, None, |s, cx| s.on_timer(cx));
            }
            Wake::Linger => {
                if let Some(Source::Conn(conn)) = self.sources.get(key) {
                    if matches!(conn.phase, Phase::Closing | Phase::Lingering)
                        && conn.last_active + LINGER <= self.core.now
                    {
                        if self.core.trace {
                            eprintln!("trace #{key} timer fired: linger over");
                        }
                        self.kill(key);
                    } else if matches!(conn.phase, Phase::Closing | Phase::Lingering) {
                        let at = conn.last_active + LINGER;
                        self.core.timers.schedule(at, key, Wake::Linger);
                    }
                }
            }
            Wake::Idle => {
                let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                    return;
                };
                let Some(idle) = self.core.limits[conn.service as usize].idle_timeout else {
                    return;
                };
                if conn.phase != Phase::Open || conn.idle_wake.is_none_or(|at| at > self.core.now) {
                    return; // Stale: a wake-up of an older connection.
                }
                conn.idle_wake = None;
                let deadline = conn.last_active + idle;
                let busy = conn.session.as_ref().is_some_and(|s| s.is_busy());
                if deadline > self.core.now || busy {
                    let at = if busy { self.core.now + idle } else { deadline };
                    self.arm_idle(key, at);
                } else {
                    if self.core.trace {
                        eprintln!("trace #{key} {} timer fired: idle", conn.service);
                    }
                    self.begin_close(key, CloseReason::Idle);
                }
            }
        }
    }

    // ----- Datagrams ----------------------------------------------------

    fn serve_datagrams(&mut self, key: usize) {
        let core = &mut self.core;
        let Some(Source::Datagram(u)) = self.sources.get_mut(key) else {
            return;
        };
        // Replies the kernel refused earlier go first, in order.
        while !u.write_blocked {
            let Some((to, reply)) = u.backlog.front() else {
                break;
            };
            match u.socket.send_to(reply, *to) {
                Ok(n) => {
                    core.metrics.service_mut(u.service).bytes_sent += n as u64;
                    u.backlog_bytes -= reply.len();
                    u.backlog.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.write_blocked = true,
                Err(_) => {
                    // The reply cannot be sent (an ICMP error for an earlier
                    // datagram, say); UDP gives no delivery promise.
                    u.backlog_bytes -= reply.len();
                    u.backlog.pop_front();
                }
            }
        }
        let limit = core.limits[u.service as usize].high_water;
        let mut served = 0;
        while u.read_ready && u.backlog_bytes < limit {
            if served == DATAGRAM_BATCH {
                self.requeue(key);
                return;
            }
            served += 1;
            let (n, from) = match u.socket.recv_from(&mut core.read_buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    u.read_ready = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // An ICMP error queued on the socket; nothing is lost by
                    // going on.
                    log::debug!("{} udp recv: {e}", u.service);
                    continue;
                }
            };
            core.metrics.service_mut(u.service).bytes_received += n as u64;
            if core.trace {
                eprintln!(
                    "trace #{key} {} udp {from} datagram of {n} bytes",
                    u.service
                );
            }
            core.reply_buf.clear();
            let datagram = &core.read_buf[..n];
            if !services::answer_datagram(
                u.service,
                datagram,
                &core.shared,
                core.wall,
                &mut core.reply_buf,
            ) {
                continue;
            }
            if u.write_blocked {
                u.backlog_bytes += core.reply_buf.len();
                u.backlog.push_back((from, core.reply_buf.clone()));
                continue;
            }
            match u.socket.send_to(&core.reply_buf, from) {
                Ok(n) => core.metrics.service_mut(u.service).bytes_sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    u.write_blocked = true;
                    u.backlog_bytes += core.reply_buf.len();
                    u.backlog.push_back((from, core.reply_buf.clone()));
                }
                Err(e) => log::debug!("{} udp send to {from}: {e}", u.service),
            }
        }
    }
}

fn trace_write(key: usize, service: ServiceId, f: outbox::Flushed) {
    eprintln!(
        "trace #{key} {service} wrote {} bytes{}",
        f.bytes,
        if f.blocked { ", WouldBlock" } else { "" }
    );
}

fn trace_event(key: usize, conn: &Connection, event: &mio::event::Event) {
    eprintln!(
        "trace #{key} {} {}{}{}{}{}",
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

/// How a session asked to end its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Flush pending output, then FIN.
    Graceful,
    /// Drop pending output, then FIN.
    Abort,
}

/// A session's view of the reactor during one callback: its connection's
/// output, the shared state, the clock, timers, and the other connections
/// (by token, through the mailbox).
pub struct Cx<'a> {
    core: &'a mut Core,
    sources: &'a mut Slab<Source>,
    key: usize,
    service: ServiceId,
    serial: u64,
    close: Option<Closing>,
}

impl Cx<'_> {
    /// The time of this loop turn.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// The wall-clock time of this loop turn.
    pub fn wall_time(&self) -> SystemTime {
        self.core.wall
    }

    /// This connection's token.
    pub fn token(&self) -> usize {
        self.key
    }

    /// This connection's serial number (unique over the daemon's life).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn service(&self) -> ServiceId {
        self.service
    }

    /// The client's address, asked of the kernel (`None` on a Unix socket).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self.sources.get(self.key) {
            Some(Source::Conn(c)) => c.stream.peer_addr(),
            _ => None,
        }
    }

    pub fn shared(&mut self) -> &mut Shared {
        &mut self.core.shared
    }

    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }

    /// Connections open over all services.
    pub fn open_connections(&self) -> usize {
        self.core.open
    }

    /// Whether `--trace` is on, for services that trace their own steps.
    pub fn tracing(&self) -> bool {
        self.core.trace
    }

    /// Queues bytes for this connection (copied).
    pub fn write(&mut self, bytes: &[u8]) {
        self.core.staged.write(bytes);
    }

    /// Queues a shared chunk for this connection, without copying it.
    pub fn write_shared(&mut self, bytes: Bytes) {
        self.core.staged.push_shared(bytes);
    }

    /// Lets an encoder serialise straight into this connection's output.
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut bytes::BytesMut) -> R) -> R {
        self.core.staged.append_with(f)
    }

    /// Bytes queued for this connection and not yet accepted by the kernel.
    pub fn pending_output(&self) -> usize {
        let own = match self.sources.get(self.key) {
            Some(Source::Conn(c)) => c.pending_output(),
            _ => 0,
        };
        own + self.core.staged.len()
    }

    /// This service's `max_pending_output`.
    pub fn output_limit(&self) -> usize {
        self.core.limits[self.service as usize].high_water
    }

    /// Queues a shared chunk for another connection, identified by token
    /// and serial. Delivered when this callback returns; silently dropped
    /// if that connection is gone or closing by then.
    pub fn send_to(&mut self, token: usize, serial: u64, bytes: Bytes) {
        self.core.mail.push((token, serial, bytes));
    }

    /// Ends the connection after the pending output is flushed (FIN, not RST).
    pub fn close(&mut self) {
        self.close.get_or_insert(Closing::Graceful);
    }

    /// Ends the connection at once, dropping pending output.
    pub fn abort(&mut self) {
        self.close = Some(Closing::Abort);
    }

    /// Stops (`true`) or resumes (`false`) handing this session input,
    /// independently of backpressure. A session whose consumer is slow (a
    /// child's stdin pipe) uses it to push back on its client.
    pub fn hold_input(&mut self, hold: bool) {
        let key = self.key;
        if let Some(Source::Conn(c)) = self.sources.get_mut(key) {
            let was = c.held;
            c.held = hold;
            if was && !hold && c.read_ready && !c.queued {
                c.queued = true;
                self.core.ready.push_back(key);
            }
        }
    }

    /// Asks for an `on_timer` call at `at` (or soon after). Ask only when
    /// the deadline moves earlier: wake-ups are not cancelled, and a stale
    /// one simply finds nothing due.
    pub fn set_timer(&mut self, at: Instant) {
        self.core.timers.schedule(at, self.key, Wake::Session);
    }

    /// Registers a source this connection owns (a pipe, a pidfd): its
    /// events arrive as [`SourceEvent::Ready`] with the returned token.
    /// Deregister it with [`Cx::deregister`] before dropping it.
    pub fn register(
        &mut self,
        source: &mut dyn mio::event::Source,
        interest: Interest,
    ) -> io::Result<usize> {
        let entry = self.sources.vacant_entry();
        let token = entry.key();
        self.core
            .registry
            .register(source, Token(token), interest)?;
        entry.insert(Source::Owned {
            owner: self.key,
            serial: self.serial,
        });
        if let Some(Source::Conn(c)) = self.sources.get_mut(self.key) {
            c.owned_sources = c.owned_sources.saturating_add(1);
        }
        Ok(token)
    }

    /// Deregisters a source registered with [`Cx::register`].
    pub fn deregister(&mut self, source: &mut dyn mio::event::Source, token: usize) {
        let _ = self.core.registry.deregister(source);
        if let Some(entry @ Source::Owned { .. }) = self.sources.get_mut(token) {
            *entry = Source::Vacated;
            self.core.dead.push(token);
        }
        if let Some(Source::Conn(c)) = self.sources.get_mut(self.key) {
            c.owned_sources = c.owned_sources.saturating_sub(1);
        }
    }

    /// Runs blocking work on the helper pool; the result comes back as
    /// [`SourceEvent::Job`].
    pub fn submit(&mut self, job: Job) {
        self.core.pool.submit(self.key, self.serial, job);
    }
}
