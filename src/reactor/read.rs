//! Reading: one read per connection per turn, and handing it to the session.
//!
//! # The one read buffer
//!
//! Every connection reads into the same buffer, [`Reactor`]'s `read_buf`,
//! so an idle connection owns none. It sits beside the state a session's
//! `Cx` borrows (`Core` and the slab), not inside it: the session reads the
//! fresh bytes straight from the buffer while its callback holds the rest
//! of the loop, and the buffer is never taken out and put back. Only what a
//! session leaves unconsumed (a partial line) is copied, into the
//! connection's own `input`.
//!
//! # How much, and when to stop
//!
//! One read takes at most [`READ_CHUNK`] bytes. A *short* read (fewer bytes
//! than that) emptied the socket's receive queue, so `read_ready` is
//! cleared without a second read to see `WouldBlock`; a full one requeues
//! the connection for the next turn, after the others had theirs.

use std::io::{self, Read};

use super::call::invoke;
use super::connection::Phase;
use super::trace::trace;
use super::{CloseReason, READ_CHUNK, Reactor, Source};

impl Reactor {
    /// One read for one connection, if it wants one, handed to its session.
    pub(super) fn read(&mut self, key: usize) {
        let core = &mut self.core;
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if !conn.wants_read() {
            return;
        }
        let result = loop {
            match conn.stream.read(&mut self.read_buf[..READ_CHUNK]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                conn.read_ready = false;
                conn.peer_eof = true;
                trace!(core.trace, "#{key} {} read EOF", conn.service);
                match conn.phase {
                    Phase::Open => {
                        let input = std::mem::take(&mut conn.input);
                        // A close the session asks for now is the answer to
                        // the client's FIN.
                        self.call_closing_as(key, CloseReason::PeerClosed, |s, cx| {
                            s.on_peer_closed(&input, cx)
                        });
                        // A session that asked for its input again took none
                        // of it: it comes back through `on_input`.
                        if let Some(Source::Conn(conn)) = self.sources.get_mut(key)
                            && conn.reoffer
                            && conn.phase == Phase::Open
                        {
                            conn.input = input;
                        }
                        // The session may not have closed; either way there is
                        // nothing more to read, so only the write side is left.
                    }
                    Phase::Closing => {}
                    Phase::Lingering => self.kill(key),
                    Phase::Dead => {}
                }
            }
            Ok(n) => {
                let counters = core.metrics.service_mut(conn.service);
                counters.bytes_received += n as u64;
                counters.messages_received += 1;
                trace!(core.trace, "#{key} {} read {n} bytes", conn.service);
                if conn.phase == Phase::Open {
                    conn.last_active = core.now;
                }
                // A short read drained the socket (module docs), unless the
                // client's FIN was reported: then the EOF still waits.
                let more = n == READ_CHUNK || conn.fin_seen;
                let open = conn.phase == Phase::Open;
                if more {
                    // Come back next turn, after the others had theirs.
                    self.requeue(key);
                } else {
                    conn.read_ready = false;
                }
                // Closing: input is read only to find the client's FIN.
                if open {
                    self.offer_input(key, n);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A spurious wake-up, or the socket was drained exactly.
                conn.read_ready = false;
                trace!(core.trace, "#{key} {} read WouldBlock", conn.service);
            }
            Err(e) => {
                trace!(core.trace, "#{key} {} read error: {e}", conn.service);
                self.fail(key, &e);
            }
        }
    }

    /// Offers a connection's unconsumed input again, without a read, when
    /// its session can take more (`Connection::reoffer`).
    pub(super) fn offer_held(&mut self, key: usize) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        if !conn.wants_reoffer() {
            // Still held or paused: the flag stays until that lifts. A
            // connection that is closing has no input to offer.
            if conn.phase != Phase::Open {
                conn.reoffer = false;
            }
            return;
        }
        conn.reoffer = false;
        if conn.input.is_empty() {
            return;
        }
        trace!(
            self.core.trace,
            "#{key} {} input offered again ({} bytes)",
            conn.service,
            conn.input.len()
        );
        self.offer_input(key, 0);
    }

    /// Hands the session its input: what it left unconsumed before, then
    /// the first `fresh` bytes of the read buffer. Keeps what it does not
    /// consume, then acts on what the callback asked for, like any call.
    pub(super) fn offer_input(&mut self, key: usize, fresh: usize) {
        let Reactor {
            core,
            sources,
            read_buf,
            ..
        } = self;
        let fresh = &read_buf[..fresh];
        let Some(Source::Conn(conn)) = sources.get_mut(key) else {
            return;
        };
        let asked = if conn.input.is_empty() {
            // The common case: the session reads the shared buffer, and only
            // what it leaves is copied.
            let asked = invoke(core, sources, key, None, |s, cx| s.on_input(fresh, cx));
            if let (Some((consumed, _)), Some(Source::Conn(conn))) = (&asked, sources.get_mut(key))
                && *consumed < fresh.len()
            {
                conn.input.extend_from_slice(&fresh[*consumed..]);
            }
            asked
        } else {
            conn.input.extend_from_slice(fresh);
            let input = std::mem::take(&mut conn.input);
            let asked = invoke(core, sources, key, None, |s, cx| s.on_input(&input, cx));
            if let (Some((consumed, _)), Some(Source::Conn(conn))) = (&asked, sources.get_mut(key))
                && *consumed < input.len()
            {
                let mut rest = input;
                rest.drain(..*consumed);
                conn.input = rest;
            }
            asked
        };
        if let Some((_, close)) = asked {
            self.close_if_asked(key, close, CloseReason::Requested);
            self.pump(key);
        }
    }
}
