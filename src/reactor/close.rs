//! Closing: FIN after the output, lingering for the client's, and shutdown.
//!
//! # Unread input turns a FIN into a reset
//!
//! `close()` on a TCP socket whose receive queue still holds bytes makes
//! the kernel send RST instead of FIN, and a client that gets RST may lose
//! the last output it had not read yet (RFC 1122 4.2.2.13). So from the
//! moment a connection starts closing, its input is read and thrown away,
//! whatever backpressure said before: a client blocked writing into a full
//! window would otherwise wait for the daemon while the daemon waits for
//! it to read, until a deadline ends both with a reset. Just before a
//! socket is dropped, whatever arrived since the last read is discarded
//! too ([`discard_input`]), so the close finds the queue empty.

use std::io::{self, Read};
use std::time::Instant;

use super::connection::Phase;
use super::connection::Stream;
use super::timers::Wake;
use super::{CloseReason, LINGER, LINGER_ON_SHUTDOWN, READ_CHUNK, Reactor, SHUTDOWN_GRACE, Source};

/// Reads [`discard_input`] makes before a socket is dropped: enough for
/// every receive queue the kernel allows by default (8 MiB), and a bound
/// on the time one client sending without pause can take from the loop.
const DISCARD_READS: usize = 64;

use super::trace::trace;

impl Reactor {
    /// Step 8 of a turn: the slab entries of connections that ended go now,
    /// after the whole event batch, so no stale event of this batch can
    /// reach a new connection that reuses a key.
    ///
    /// The timer queue is swept here too, when it has doubled since its
    /// last sweep: wake-ups of connections that are gone are dropped in
    /// one pass instead of each waiting for its time (timers.rs).
    pub(super) fn free_dead(&mut self) {
        for key in self.core.dead.drain(..) {
            self.sources.remove(key);
        }
        if self.core.timers.sweep_due() {
            let mut timers = std::mem::take(&mut self.core.timers);
            let dropped = timers.sweep(|key, serial| self.wake_up_is_live(key, serial));
            self.core.timers = timers;
            trace!(
                self.core.trace,
                "timers swept: {dropped} stale wake-up(s) dropped, {} kept",
                self.core.timers.len()
            );
        }
    }

    /// Shutdown is over when every connection has flushed its output and
    /// sent its FIN, and shared state has nothing running (children
    /// reaped). Connections still lingering for their client's FIN get a
    /// second to see it; after [`SHUTDOWN_GRACE`] the daemon stops anyway.
    pub(super) fn shutdown_finished(&self) -> bool {
        let Some(began) = self.core.shutdown else {
            return false;
        };
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

    /// Starts ending a connection: tells the session (once). The caller
    /// then runs the write pass, which flushes what is pending and sends
    /// the FIN once everything is out.
    pub(super) fn begin_close(&mut self, key: usize, reason: CloseReason) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        conn.set_phase(key, Phase::Closing, self.core.trace);
        conn.input = Vec::new();
        let serial = conn.serial;
        trace!(
            self.core.trace,
            "#{key} {} closing ({reason})", conn.service
        );
        // Input is discarded from now on (module docs), backpressure or
        // not; a read that waited for backpressure to lift starts now.
        if conn.read_ready {
            self.requeue(key);
        }
        self.core
            .timers
            .schedule(self.core.now + LINGER, key, serial, Wake::Linger);
        self.tell_close(key, reason);
    }

    /// Calls `on_close` unless it was called already. What the session
    /// writes in it is staged like any callback's output, and written by
    /// the write pass that follows (then the FIN), unless the connection
    /// failed.
    pub(super) fn tell_close(&mut self, key: usize, reason: CloseReason) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if conn.told_close {
            return;
        }
        conn.told_close = true;
        if let Some(((), close)) = self.invoke(key, None, |s, cx| s.on_close(reason, cx)) {
            // The connection is closing already; only an abort changes
            // anything (it drops the output).
            self.close_if_asked(key, close, reason);
        }
    }

    /// A read or write failed: the connection is beyond saving.
    pub(super) fn fail(&mut self, key: usize, e: &io::Error) {
        if let Some(Source::Conn(conn)) = self.sources.get(key) {
            log::debug!("{} connection #{key}: {e}", conn.service);
        }
        self.tell_close(key, CloseReason::Error);
        self.kill(key);
    }

    /// Deregisters and frees a connection (the slab entry goes after the turn).
    pub(super) fn kill(&mut self, key: usize) {
        self.tell_close(key, CloseReason::Error);
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Dead {
            return;
        }
        if matches!(conn.phase, Phase::Closing | Phase::Lingering) {
            discard_input(&mut conn.stream, &mut self.read_buf);
        }
        conn.set_phase(key, Phase::Dead, self.core.trace);
        let _ = self.core.registry.deregister(conn.stream.source());
        self.core.group.release_client(self.core.index, key);
        self.core.open -= 1;
        self.core.group.release(conn.service);
        self.core.metrics.service_mut(conn.service).connections_open -= 1;
        trace!(self.core.trace, "#{key} {} closed", conn.service);
        let (owned, serial) = (conn.owned_sources, conn.serial);
        // What the session staged in `on_close` has nowhere to go.
        self.core.staged.discard();
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

    /// The daemon stops: input that arrived for the connections still
    /// lingering is discarded, so dropping them sends no reset.
    pub(super) fn discard_unread_input(&mut self) {
        for (_, source) in self.sources.iter_mut() {
            if let Source::Conn(c) = source
                && matches!(c.phase, Phase::Closing | Phase::Lingering)
            {
                discard_input(&mut c.stream, &mut self.read_buf);
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.core.shutdown.is_some() {
            return;
        }
        log::info!(
            "shutting down{}: closing {} connection(s)",
            self.core.naming(),
            self.core.open
        );
        self.core.shutdown = Some(Instant::now());
        self.cancel_jobs();
        let keys: Vec<usize> = self.sources.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.sources.get_mut(key) {
                Some(Source::Listener(_)) | Some(Source::Datagram(_)) => {
                    // Stop accepting: dropping a listener closes it (and
                    // removes a Unix socket's path).
                    self.sources[key] = Source::Vacated;
                    self.core.dead.push(key);
                }
                Some(Source::Conn(_)) => {
                    self.begin_close(key, CloseReason::Shutdown);
                    self.pump(key);
                }
                _ => {}
            }
        }
    }
}

/// Reads and throws away what the socket holds, until it is empty, the
/// client's FIN, an error, or [`DISCARD_READS`] reads; the last of these
/// leaves a client that never pauses to the kernel's reset.
fn discard_input(stream: &mut Stream, buf: &mut [u8]) {
    for _ in 0..DISCARD_READS {
        match stream.read(&mut buf[..READ_CHUNK]) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
