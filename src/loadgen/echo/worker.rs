//! One worker thread of `bench echo`: a `Poll`, its share of the
//! connections, and the loop that drives them.
//!
//! The loop's order can be read off `Worker::run`: advance the phase, open
//! connections, let paced connections issue, report progress, then wait for
//! readiness and hand each event to its connection (see [`super::connection`]
//! and [`super::verify`], which add their methods to `Worker`). The phases,
//! `Sending`, `Draining` and `Done`, are described in [`super`].
//!
//! `Worker`'s methods are spread over three files, each named for what it
//! does, so the fields the other two use are `pub(super)`; the rest (the
//! loop's own bookkeeping) stay private to this file.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::connection::Connection;
use super::{Plan, Share, WorkerResult};
use crate::loadgen::Session;
use crate::loadgen::link::Link;
use crate::loadgen::pacing::Pacer;
use crate::loadgen::pattern::Pattern;
use crate::loadgen::report::Failure;
use crate::loadgen::stats::{Interval, Latency};

/// How many connects a worker keeps pending at once without `--connect-rate`:
/// enough to open thousands of connections per second, few enough not to
/// overflow a server's listen backlog (a dropped SYN costs a one-second
/// retransmission, which would distort the connect figures).
const MAX_PENDING_CONNECTS: usize = 128;

/// The longest a worker sleeps in `poll`, so that it notices Ctrl-C soon.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// Read and write chunk: large enough for 64 KiB messages in one call.
pub(super) const CHUNK: usize = 64 * 1024;

/// The phases of a worker, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Opening connections and issuing messages.
    Sending,
    /// No new messages; waiting until the deadline for those in flight.
    Draining { until: Instant },
    /// Finished; the loop exits.
    Done,
}

/// One readiness event, copied out of mio's `Events`.
struct Readiness {
    index: usize,
    readable: bool,
    writable: bool,
}

/// One worker thread: a poll, its connections, and its counters.
pub(super) struct Worker {
    pub(super) plan: Plan,
    pub(super) poll: Poll,
    events: Events,
    /// Indexed by token.
    pub(super) connections: Vec<Connection>,
    /// The next connection (index into `connections`) to open.
    next_to_open: usize,
    /// Connections in `Connecting`.
    pub(super) pending_connects: usize,
    connect_pacer: Pacer,
    pub(super) message_pacer: Pacer,
    /// Connections that want to issue a message the pacer has not allowed yet.
    pub(super) waiting: VecDeque<usize>,
    /// Messages this worker may still issue, if bounded by `--messages`.
    pub(super) budget: Option<u64>,
    pub(super) phase: Phase,
    stopped_at: Option<Instant>,
    stop: Arc<AtomicBool>,
    /// Read and write buffer, shared by all connections of the worker.
    pub(super) scratch: Vec<u8>,
    /// The last poll's events, copied out; kept to reuse its allocation.
    ready: Vec<Readiness>,
    /// Connections that stopped reading at their budget with bytes left;
    /// served again on the next turn without waiting for an event, since
    /// edge-triggered readiness will not report those bytes again. A
    /// connection may appear twice; the second visit finds less to read.
    pub(super) unfinished: Vec<usize>,
    // Counters.
    pub(super) latency: Latency,
    pub(super) interval: Interval,
    next_report: Instant,
    progress: Sender<Interval>,
    pub(super) connected: u64,
    pub(super) connect_failed: u64,
    pub(super) messages: u64,
    pub(super) open: u64,
    pub(super) failures: Vec<Failure>,
}

impl Worker {
    pub(super) fn new(
        plan: Plan,
        share: Share,
        session: &Session,
        progress: Sender<Interval>,
    ) -> io::Result<Worker> {
        let start = session.start;
        let connections = share
            .numbers
            .into_iter()
            .map(|number| Connection {
                number,
                pattern: Pattern::for_connection(plan.run_seed, number),
                link: Link::Closed,
                issued: 0,
                written: 0,
                verified: 0,
                due: VecDeque::with_capacity(plan.depth.min(64)),
                waiting_for_pacer: false,
            })
            .collect();
        Ok(Worker {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            connections,
            next_to_open: 0,
            pending_connects: 0,
            connect_pacer: Pacer::new(start, share.connect_rate),
            message_pacer: Pacer::new(start, share.rate),
            waiting: VecDeque::new(),
            budget: share.budget,
            phase: Phase::Sending,
            stopped_at: None,
            stop: Arc::clone(&session.stop),
            scratch: vec![0; CHUNK],
            ready: Vec::with_capacity(1024),
            unfinished: Vec::new(),
            latency: Latency::new(),
            interval: Interval::default(),
            next_report: start + Duration::from_secs(1),
            progress,
            connected: 0,
            connect_failed: 0,
            messages: 0,
            open: 0,
            failures: Vec::new(),
            plan,
        })
    }

    /// The worker's loop: advance the phase, open connections, let paced
    /// connections issue, report progress, then wait for readiness and
    /// handle it.
    pub(super) fn run(mut self) -> io::Result<WorkerResult> {
        loop {
            let now = Instant::now();
            self.advance_phase(now);
            if self.phase == Phase::Done {
                break;
            }
            if self.phase == Phase::Sending {
                self.open_connections(now);
                self.serve_waiting(now);
            }
            if now >= self.next_report {
                self.report(now);
            }
            let timeout = if self.unfinished.is_empty() {
                self.next_wakeup(now).saturating_duration_since(now)
            } else {
                Duration::ZERO // Connections with bytes left to read go on at once.
            };
            match self
                .poll
                .poll(&mut self.events, Some(timeout.min(MAX_POLL_WAIT)))
            {
                Ok(()) => {}
                Err(e) if crate::loadgen::interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            // Copy the events out first: handling one needs `&mut self`.
            let mut ready = std::mem::take(&mut self.ready);
            ready.extend(self.events.iter().map(|e| Readiness {
                index: e.token().0,
                // Errors and hang-ups surface as the read's result.
                readable: e.is_readable() || e.is_read_closed() || e.is_error(),
                writable: e.is_writable(),
            }));
            for r in ready.drain(..) {
                self.handle(r.index, r.readable, r.writable);
            }
            self.ready = ready;
            // Then the connections whose read budget ran out last turn.
            let mut unfinished = std::mem::take(&mut self.unfinished);
            for index in unfinished.drain(..) {
                self.receive(index);
            }
            self.unfinished = unfinished;
        }
        // Close every socket before returning, so the server sees the end.
        for c in &mut self.connections {
            c.link = Link::Closed;
        }
        self.interval.open = 0;
        let _ = self.progress.send(self.interval.take());
        let bytes_sent = self.connections.iter().map(|c| c.written).sum();
        let bytes_received = self.connections.iter().map(|c| c.verified).sum();
        Ok(WorkerResult {
            latency: self.latency,
            connected: self.connected,
            connect_failed: self.connect_failed,
            messages: self.messages,
            bytes_sent,
            bytes_received,
            failures: self.failures,
            stopped_at: self.stopped_at.unwrap_or_else(Instant::now),
        })
    }

    /// Moves the worker to the next phase when its condition is met.
    fn advance_phase(&mut self, now: Instant) {
        match self.phase {
            Phase::Sending => {
                let budget_spent = self.budget == Some(0);
                let nothing_left = self.next_to_open == self.connections.len()
                    && self.open == 0
                    && self.pending_connects == 0;
                if now >= self.plan.send_until
                    || self.stop.load(Ordering::Relaxed)
                    || budget_spent
                    || nothing_left
                {
                    self.stopped_at = Some(now);
                    self.waiting.clear();
                    // Connects still pending are abandoned: they never
                    // carried a message, so nothing is lost with them.
                    for index in 0..self.next_to_open {
                        if self.connections[index].link.is_connecting() {
                            self.close(index);
                        }
                    }
                    self.phase = Phase::Draining {
                        until: now + self.plan.drain_timeout,
                    };
                }
            }
            Phase::Draining { until } => {
                if self.connections.iter().all(Connection::settled) {
                    self.phase = Phase::Done;
                } else if now >= until {
                    for i in 0..self.connections.len() {
                        let c = &self.connections[i];
                        if !c.settled() {
                            let missing = c.issued - c.verified;
                            self.fail(
                                i,
                                format!(
                                    "{missing} bytes sent never came back within {:?} (lost data)",
                                    self.plan.drain_timeout
                                ),
                            );
                        }
                    }
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// Starts connects while the connect pacer and the pending limit allow.
    fn open_connections(&mut self, now: Instant) {
        while self.next_to_open < self.connections.len()
            && self.pending_connects < MAX_PENDING_CONNECTS
            && self.connect_pacer.take(now).is_some()
        {
            let index = self.next_to_open;
            self.next_to_open += 1;
            match self.start_connect(index) {
                Ok(stream) => {
                    self.connections[index].link = Link::Connecting { stream, since: now };
                    self.pending_connects += 1;
                }
                Err(e) => {
                    self.connect_failed += 1;
                    self.fail(index, crate::loadgen::connect_failed(&e));
                }
            }
        }
    }

    /// Fails connects that hang (a SYN dropped again and again). Called
    /// once a second: a scan of every connection is too slow for each turn.
    fn expire_connects(&mut self, now: Instant) {
        if self.pending_connects == 0 {
            return;
        }
        for index in 0..self.next_to_open {
            if let Link::Connecting { since, .. } = self.connections[index].link
                && now.duration_since(since) > self.plan.connect_timeout
            {
                self.connect_failed += 1;
                let timeout = self.plan.connect_timeout;
                self.fail(index, format!("connect timed out after {timeout:?}"));
            }
        }
    }

    fn start_connect(&mut self, index: usize) -> io::Result<TcpStream> {
        let mut stream = TcpStream::connect(self.plan.addr)?;
        // Both interests stay registered for the connection's life: with
        // edge-triggered readiness an unneeded WRITABLE costs nothing until
        // the socket buffer fills and drains again.
        self.poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(stream)
    }

    /// Lets connections waiting for the pacer issue, oldest first.
    fn serve_waiting(&mut self, now: Instant) {
        while let Some(&index) = self.waiting.front() {
            if self.message_pacer.next_due().is_some_and(|due| due > now) {
                break;
            }
            self.waiting.pop_front();
            self.connections[index].waiting_for_pacer = false;
            self.issue(index, now);
            self.flush(index);
        }
    }

    /// The earliest moment the loop has something to do without an event.
    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut at = self.next_report;
        if let Phase::Draining { until } = self.phase {
            at = at.min(until);
        }
        if self.phase == Phase::Sending {
            at = at.min(self.plan.send_until);
            if !self.waiting.is_empty() {
                at = at.min(self.message_pacer.next_due().unwrap_or(now));
            }
            if self.next_to_open < self.connections.len()
                && self.pending_connects < MAX_PENDING_CONNECTS
            {
                at = at.min(self.connect_pacer.next_due().unwrap_or(now));
            }
        }
        at
    }

    /// Sends this second's figures to the main thread.
    fn report(&mut self, now: Instant) {
        self.expire_connects(now);
        self.interval.open = self.open;
        let _ = self.progress.send(self.interval.take());
        while self.next_report <= now {
            self.next_report += Duration::from_secs(1);
        }
    }
}
