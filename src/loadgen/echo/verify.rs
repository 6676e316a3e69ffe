//! Reading the echo back and checking it. Every byte received is compared
//! with the connection's seeded stream at the offset where it belongs: a
//! byte that differs fails the connection and names its message, and bytes
//! beyond those sent fail it as duplicated or foreign data. A message
//! counts as echoed, and its latency is recorded, when its last byte is
//! back; bytes that never come back are counted as lost by the worker when
//! draining ends.
//!
//! # Reading less
//!
//! mio's guide says to read until `WouldBlock` after a readiness event. On
//! a stream socket, a read that returns fewer bytes than asked for has
//! emptied the receive buffer, and any byte that arrives later raises a new
//! edge; so after a short read the worker stops reading, saving one system
//! call per round trip. The CPU saved goes to the server under test, which
//! on a small machine shares the cores with the generator.

use std::io::Read;
use std::time::Instant;

use super::worker::{Phase, Worker};
use crate::loadgen::link::Link;

/// Full reads one connection may do per turn before the others get theirs:
/// with large messages and a fast server, a connection's bytes could
/// otherwise keep arriving as fast as it reads them, and one connection
/// would have the worker to itself.
const READ_BUDGET: usize = 16;

impl Worker {
    /// Reads and checks echoed bytes, completing messages as their last
    /// byte arrives, then issues new messages in their place.
    pub(super) fn receive(&mut self, index: usize) {
        for _ in 0..READ_BUDGET {
            let c = &mut self.connections[index];
            let Link::Open(stream) = &mut c.link else {
                return;
            };
            let result = stream.read(&mut self.scratch);
            let now = Instant::now();
            match result {
                Ok(0) => {
                    let outstanding = c.issued - c.verified;
                    if outstanding > 0 || self.phase == Phase::Sending {
                        let msg = format!(
                            "the server closed the connection after echoing {} bytes, \
                             with {outstanding} bytes not echoed",
                            c.verified
                        );
                        self.fail(index, msg);
                    } else {
                        self.close(index);
                    }
                    return;
                }
                Ok(n) => {
                    let received = &self.scratch[..n];
                    if c.verified + n as u64 > c.written {
                        let excess = c.verified + n as u64 - c.written;
                        let msg = format!(
                            "received {excess} bytes more than were sent (duplicated or foreign data)"
                        );
                        self.fail(index, msg);
                        return;
                    }
                    if let Err(mismatch) = c.pattern.check(c.verified, received) {
                        let message = mismatch.offset / self.plan.size;
                        let msg = format!("message {message}: {mismatch}");
                        self.fail(index, msg);
                        return;
                    }
                    c.verified += n as u64;
                    self.interval.bytes += n as u64;
                    // Each message whose last byte is now back is complete.
                    let completed_bytes = c.issued - c.due.len() as u64 * self.plan.size;
                    let mut complete_through = completed_bytes + self.plan.size;
                    while complete_through <= c.verified {
                        let Some(due) = c.due.pop_front() else { break };
                        let latency = now.saturating_duration_since(due);
                        self.latency.record(latency);
                        self.interval.latency.record(latency);
                        self.interval.completed += 1;
                        self.messages += 1;
                        complete_through += self.plan.size;
                    }
                    let short_read = n < self.scratch.len();
                    self.issue(index, now);
                    self.flush(index);
                    if short_read {
                        return; // The receive buffer is empty (see the module documentation).
                    }
                }
                Err(e) if crate::loadgen::would_block(&e) => return,
                Err(e) if crate::loadgen::interrupted(&e) => {}
                Err(e) => {
                    let msg = format!("read failed after {} bytes echoed: {e}", c.verified);
                    self.fail(index, msg);
                    return;
                }
            }
        }
        // The budget ran out with bytes perhaps left: come back next turn.
        self.unfinished.push(index);
    }
}
