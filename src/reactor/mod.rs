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
//! 64 KiB, the same as our `WRITE_BUDGET`).
//!
//! The turn itself is bounded too: one `poll()` returns at most
//! [`EVENTS_PER_TURN`] events. The others stay at the front of the
//! kernel's ready list, ahead of anything that becomes ready later, and
//! come with the next `poll()`, so no connection is skipped; but timers, the ready queue and
//! the end-of-turn steps get their turn every 128 events instead of after
//! a thousand. That does not make a saturated loop faster, and a client
//! whose event is behind a thousand others still waits for all of them:
//! what it bounds is the longest stretch between two looks at the clock.
//!
//! # Backpressure
//!
//! A client that sends without reading would make an echo server buffer
//! without bound. Each connection's unsent output is limited by its
//! service's `max_pending_output`: above that *high watermark* the reactor
//! stops reading from the connection, so the client's own writes fill the
//! kernel buffers and block it. The mark is checked after each callback, so
//! the outbox may pass it by what one read's worth of input produces (for
//! echo, one [`READ_CHUNK`], 128 KiB), never more. Below the *low watermark* (a quarter of the
//! high one) reading resumes. Nothing is dropped; the client is simply not
//! served faster than it reads.
//!
//! # One turn of the loop
//!
//! [`Reactor::run`] reads off the page like Redis's `aeProcessEvents`; each
//! step is one method, named for what it does:
//!
//! 1. `wait`: compute the timeout (zero if the ready queue has work, else
//!    until the earliest timer), `poll()`, then read the clock once for the
//!    whole turn;
//! 2. `serve_ready_queue`: work left from the last turn goes first;
//! 3. `dispatch_events`: this turn's events;
//! 4. `fire_timers`: the wake-ups that are due;
//! 5. `poll_services`: state the services share gets its turn (the exec
//!    reaper), and says when it next wants one;
//! 6. `drain_inboxes`: what other threads left for the services (a chat
//!    line said on another reactor) is delivered, in the order it was
//!    left ([`Post`], `Services::drain_inbox`);
//! 7. `flush_mailed`: connections that others gave output to (a chat
//!    broadcast) are flushed;
//! 8. `free_dead`: the connections that closed during the turn leave the
//!    slab;
//! 9. `end_turn` and `shutdown_finished`: the turn's figures, and whether a
//!    shutdown under way is complete.
//!
//! # Where the rest lives
//!
//! This file holds the types and the loop. What the steps call lives next
//! to it, one file per concern: `events.rs` (dispatching, the ready queue,
//! timers firing), `accept.rs`, `read.rs`, `write.rs` (the write path and
//! backpressure), `call.rs` (calling sessions, and mail), `cx.rs` (what a
//! session may do), `post.rs` (waking the loop from another thread, and
//! what shared state may send in its turn), `close.rs` (closing and
//! shutdown), `datagram.rs` and `trace.rs`.
//!
//! # Testing a session without the loop
//!
//! A [`Cx`] is usually a loan of the reactor's state for one callback. In
//! test builds it can instead be backed by plain data: `testing::Harness`
//! owns sessions, feeds them input, moves the clock, and records what they
//! ask for (output, mail, wake-ups, holds, jobs, the close). The daemon's
//! build has only the first backing, so it pays nothing for the second
//! (testing.rs explains how).

mod accept;
mod call;
mod close;
mod connection;
mod cx;
mod datagram;
mod events;
mod group;
mod listener;
pub mod metrics;
mod outbox;
pub mod per_ip;
mod pool;
mod post;
mod read;
#[cfg(test)]
mod seam_tests;
mod sendfile;
mod session;
#[cfg(test)]
pub mod testing;
mod timers;
mod trace;
mod write;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::service_id::ServiceId;
pub use call::Post;
use connection::Connection;
pub use group::Group;
pub use listener::ListenSocket;
use listener::{Listener, Reserve, UdpEndpoint};
pub use metrics::Metrics;
pub use outbox::Outbox;
pub use pool::{ChildProcess, Job, JobError, JobOutput, QueueFull};
use pool::{POOL_THREADS, Pool};
pub use post::Nudge;
pub use session::{CloseReason, ServiceLimits, Services, Session, SourceEvent};
use timers::Timers;
use trace::Tracer;

/// Bytes one read may take; also the size of the shared read buffer. Larger
/// than the 64 KiB a client commonly writes at once, so such a message is
/// taken by one short read instead of filling the buffer exactly (which
/// would look like "maybe more" and cost a turn and a read).
pub const READ_CHUNK: usize = 128 * 1024;
/// Bytes one connection may write per loop turn before others get a turn.
pub const WRITE_BUDGET: usize = 64 * 1024;
/// Readiness events one `poll()` may return, so one turn's work is
/// bounded: an echo turn costs some 17 µs per event on a loaded machine,
/// and 1,024 events made 17 ms turns; at 256, one echo turn in some
/// 100,000 still took over 10 ms of CPU, at 128 none was seen, and the
/// extra `epoll_wait` calls did not show in the system calls per message
/// (BENCHMARKS.md, "The loop's longest turn"). The kernel keeps the events
/// not returned, in order, for the next `poll()` (see "Fairness").
const EVENTS_PER_TURN: usize = 128;
/// Connections one listener may accept per loop turn.
const ACCEPT_BATCH: usize = 128;
/// Letters delivered in one turn past which no more connections are
/// accepted in it (see `accept.rs`): a chat join costs a letter per member
/// of the room, so 128 joins to a room of 1,000 would be 128,000 letters
/// and their writes in one turn. The same figure as chat's fan-out budget
/// per callback.
const MAIL_PER_TURN: u32 = 16_384;
/// Connections one turn may write to before the rest of its work waits
/// for the next turn. A write to a socket whose reader sleeps also wakes
/// that reader: some 10 µs on the benchmark machine, so a chat line's
/// fan-out to 1,000 members is 10 ms of writes (BENCHMARKS.md, "The
/// loop's longest turn"). Echo at 1,000 connections writes at most
/// `EVENTS_PER_TURN` (128) a turn and never meets it.
const WRITES_PER_TURN: u32 = 512;
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
/// How often the loop wakes, during shutdown, to see whether it is over.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);
/// A turn longer than this is logged unless `Reactor::set_slow_turn` says
/// otherwise; the same as the default of `limits.slow_turn_ms`.
const DEFAULT_SLOW_TURN: Duration = Duration::from_millis(50);
/// How long a connection's unsent output may stay at or over its limit,
/// from a write the kernel refused, before the session hears
/// `on_output_full`: the client is then too slow, because it does not
/// read, not because a burst outran one turn's write budget.
pub const STALL_GRACE: Duration = Duration::from_secs(2);
/// Retry delay for a listener paused by descriptor exhaustion.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

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
    /// The helper pool pokes this when jobs finish, and so do threads of
    /// the services' own (a [`Nudge`]).
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
    /// The one read buffer: every connection and UDP socket reads into it,
    /// so an idle connection owns none. It lives beside `core` and
    /// `sources`, not in them, so a session can read from it while its
    /// callback borrows those two (read.rs).
    read_buf: Box<[u8]>,
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
    /// Output addressed to other connections, delivered at the end of the
    /// step whose callback sent it (`deliver_mail`): `(token, serial, bytes)`.
    mail: Vec<(usize, u64, Bytes)>,
    /// The mailbox's second list (see `deliver_mail`), empty between turns.
    mail_spare: Vec<(usize, u64, Bytes)>,
    /// Slab keys to free after this turn's events.
    dead: Vec<usize>,
    /// Output written by the session being called; moved into the
    /// connection's own outbox only if the socket would not take it all.
    staged: Outbox,
    /// Reply buffer for datagram services.
    reply_buf: Vec<u8>,
    /// The services hosted, as the reactor knows them (`Services`); what
    /// they share is in it. Lent to sessions through `Cx::services`.
    shared: Box<dyn Services>,
    metrics: Metrics,
    /// Per-service limits, indexed by `ServiceId as usize`.
    limits: [Limits; ServiceId::ALL.len()],
    /// What this reactor shares with the daemon's other reactors: the
    /// connection counts the limits are enforced on, and the published
    /// figures (group.rs). A reactor alone has a group of one.
    group: Arc<Group>,
    /// This reactor's place in its group, 0 for the first.
    index: usize,
    /// Connections open on this reactor, over all services.
    open: usize,
    /// Source of connection serial numbers.
    next_serial: u64,
    reserve: Reserve,
    pool: Pool,
    /// `--trace`: one line per readiness event and I/O outcome.
    trace: Tracer,
    /// When shared service state next wants a turn (`Shared::poll`).
    shared_wake: Option<Instant>,
    /// Set when SIGINT/SIGTERM arrived: when closing began.
    shutdown: Option<Instant>,
    /// What this turn did, for the line a slow turn logs; reset each turn.
    turn: metrics::TurnTally,
    /// A turn longer than this is logged with its tally
    /// (`limits.slow_turn_ms`; `Reactor::set_slow_turn`).
    slow_turn: Duration,
}

impl Reactor {
    /// Takes over bound sockets and prepares the loop. `max_connections` is
    /// the global limit, already resolved from the open-file limit.
    pub fn new(
        bound: Vec<Bound>,
        mut shared: impl Services,
        max_connections: usize,
        trace: bool,
    ) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let mut sources = Slab::with_capacity(64);

        let waker_key = sources.insert(Source::Waker);
        let waker = Arc::new(Waker::new(poll.registry(), Token(waker_key))?);
        shared.attach(Nudge::new(waker.clone()));

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
            let c = shared.limits(id);
            limits[id as usize] = Limits {
                max_connections: c.max_connections,
                idle_timeout: c.idle_timeout,
                high_water: c.max_pending_output,
                low_water: c.max_pending_output / 4,
            };
        }

        let per_ip_limit = shared.max_connections_per_ip();
        Ok(Reactor {
            poll,
            events: Events::with_capacity(EVENTS_PER_TURN),
            sources,
            read_buf: vec![0; READ_CHUNK.max(MAX_DATAGRAM + 1)].into_boxed_slice(),
            core: Core {
                registry,
                now: Instant::now(),
                wall: SystemTime::now(),
                timers: Timers::new(),
                ready: VecDeque::new(),
                to_flush: Vec::new(),
                mail: Vec::new(),
                mail_spare: Vec::new(),
                dead: Vec::new(),
                staged: Outbox::new(),
                reply_buf: Vec::new(),
                shared: Box::new(shared),
                metrics: Metrics::new(Instant::now()),
                limits,
                group: Arc::new(Group::new(1, max_connections, per_ip_limit)),
                index: 0,
                open: 0,
                next_serial: 1,
                reserve: Reserve::new(),
                pool: Pool::new(waker, POOL_THREADS),
                trace: Tracer::new(trace),
                shared_wake: None,
                shutdown: None,
                turn: metrics::TurnTally::default(),
                slow_turn: DEFAULT_SLOW_TURN,
            },
        })
    }

    /// Runs until SIGINT or SIGTERM, then closes every connection cleanly
    /// and returns. One turn of the loop is the steps below, in this order
    /// (the module docs say why each comes where it does).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            if !self.wait()? {
                continue; // A signal interrupted the wait; its event follows.
            }
            self.serve_ready_queue();
            self.dispatch_events();
            self.fire_timers();
            self.poll_services();
            self.drain_inboxes();
            self.flush_mailed();
            self.free_dead();
            self.end_turn();
            if self.shutdown_finished() {
                self.discard_unread_input();
                log::info!("stopped{}", self.core.naming());
                return Ok(());
            }
        }
    }

    /// Makes this reactor the `index`th of `group`, whose connection limits
    /// it then shares; with more than one, its `--trace` lines name it.
    pub fn join(mut self, group: Arc<Group>, index: usize) -> Reactor {
        if group.reactors() > 1 {
            self.core.trace = self.core.trace.naming(index);
        }
        group.set_waker(index, self.core.pool.waker());
        self.core.group = group;
        self.core.index = index;
        self
    }

    /// Sets how long a turn may take before it is logged as slow, with what
    /// it did (`limits.slow_turn_ms`).
    pub fn set_slow_turn(&mut self, limit: Duration) {
        self.core.slow_turn = limit;
    }

    /// The counters, for tests that drive a reactor directly.
    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }
}

impl Core {
    /// `" (reactor <i>)"` for log lines when the daemon runs several
    /// reactors, so each one's shutdown can be told apart; empty with one.
    fn naming(&self) -> String {
        if self.group.reactors() > 1 {
            format!(" (reactor {})", self.index)
        } else {
            String::new()
        }
    }
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
    /// Where the context's state lives: the reactor's, or a test's.
    back: Back<'a>,
    key: usize,
    service: ServiceId,
    serial: u64,
    close: Option<Closing>,
}

/// What a [`Cx`] is backed by, chosen when it is built. In the daemon
/// this enum has one variant, so matching on it costs nothing; test builds
/// add a second, plain-data store (testing.rs), so sessions can be driven
/// without a reactor.
enum Back<'a> {
    /// Inside a loop turn: the reactor's state, lent for one callback.
    Reactor {
        core: &'a mut Core,
        sources: &'a mut Slab<Source>,
    },
    /// In a unit test: the harness's data, which records what is asked.
    #[cfg(test)]
    Test {
        env: &'a mut testing::Env,
        slot: &'a mut testing::Slot,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's whole cost is its slab entry (docs/nonblocking-io.md,
    /// section 16, quotes this size); a field added to `Connection` that
    /// grows it should be a decision, not an accident.
    #[test]
    fn a_slab_entry_stays_within_128_bytes() {
        assert!(
            std::mem::size_of::<Source>() <= 128,
            "Source is {} bytes",
            std::mem::size_of::<Source>()
        );
    }
}
