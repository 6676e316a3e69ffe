//! Reading: one read per connection per turn, and handing it to the session.

use std::io::{self, Read};

use super::connection::Phase;
use super::{CloseReason, READ_CHUNK, Reactor, Source};

use super::trace::trace;

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
                trace!(core.trace, "#{key} {} read EOF", conn.service);
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
                trace!(self.core.trace, "#{key} {} read {n} bytes", conn.service);
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
                trace!(core.trace, "#{key} {} read WouldBlock", conn.service);
                core.read_buf = buf;
            }
            Err(e) => {
                core.read_buf = buf;
                trace!(core.trace, "#{key} {} read error: {e}", conn.service);
                self.fail(key, &e);
            }
        }
    }
}
