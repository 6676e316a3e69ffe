//! One echo connection: the four offsets into its seeded stream that
//! describe it (pictured in [`super`]), and what the worker does to it:
//! finish its connect, issue messages up to the depth, write them, and
//! close it, on error with the failure recorded against its number.
//!
//! Its link goes `Connecting` → `Open` → `Closed` (see
//! [`crate::loadgen::link`]); reading the echo back is in [`super::verify`].

use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use super::worker::{CHUNK, Phase, Worker};
use crate::loadgen::link::{ConnectResult, Link, connect_result, promote};
use crate::loadgen::pattern::Pattern;
use crate::loadgen::report::Failure;

/// One echo connection: its stream offsets and the due times of the
/// messages in flight (see the picture in [`super`]).
pub(super) struct Connection {
    /// Its number in the run, naming it in reports.
    pub(super) number: u64,
    pub(super) pattern: Pattern,
    pub(super) link: Link,
    /// Stream bytes of all messages issued so far.
    pub(super) issued: u64,
    /// Stream bytes the kernel has accepted.
    pub(super) written: u64,
    /// Stream bytes echoed back and checked.
    pub(super) verified: u64,
    /// When each message in flight was due, oldest first.
    pub(super) due: VecDeque<Instant>,
    /// True while the connection is in the worker's queue for the pacer.
    pub(super) waiting_for_pacer: bool,
}

impl Connection {
    pub(super) fn in_flight(&self) -> usize {
        self.due.len()
    }

    /// Whether everything sent has come back (or the connection is gone).
    pub(super) fn settled(&self) -> bool {
        match self.link {
            Link::Open(_) => self.verified == self.issued,
            Link::Connecting { .. } | Link::Closed => true,
        }
    }
}

impl Worker {
    /// Handles readiness on connection `index`.
    pub(super) fn handle(&mut self, index: usize, readable: bool, writable: bool) {
        let Some(connection) = self.connections.get_mut(index) else {
            return; // Not ours; spurious events happen.
        };
        if let Link::Connecting { stream, .. } = &connection.link {
            match connect_result(stream) {
                ConnectResult::Pending => return,
                ConnectResult::Failed(e) => {
                    self.connect_failed += 1;
                    self.fail(index, crate::loadgen::connect_failed(&e));
                    return;
                }
                ConnectResult::Connected => {
                    // Nagle's algorithm would hold small messages back
                    // while earlier ones are unacknowledged: at depth > 1
                    // that measures the delayed-ACK timer, not the server.
                    if let Some(stream) = promote(&mut connection.link) {
                        let _ = stream.set_nodelay(true);
                    }
                    self.pending_connects -= 1;
                    self.connected += 1;
                    self.open += 1;
                    if self.phase == Phase::Sending {
                        self.issue(index, Instant::now());
                    }
                    self.flush(index);
                    return;
                }
            }
        }
        if readable {
            self.receive(index);
        }
        if writable {
            self.flush(index);
        }
    }

    /// Issues messages on connection `index` up to the depth, as far as the
    /// pacer and the budget allow.
    pub(super) fn issue(&mut self, index: usize, now: Instant) {
        let c = &mut self.connections[index];
        if !c.link.is_open() || self.phase != Phase::Sending {
            return;
        }
        while c.in_flight() < self.plan.depth && self.budget != Some(0) {
            match self.message_pacer.take(now) {
                Some(due) => {
                    c.issued += self.plan.size;
                    c.due.push_back(due);
                    if let Some(budget) = &mut self.budget {
                        *budget -= 1;
                    }
                }
                None => {
                    if !c.waiting_for_pacer {
                        c.waiting_for_pacer = true;
                        self.waiting.push_back(index);
                    }
                    break;
                }
            }
        }
    }

    /// Writes issued bytes until they are all written or the socket is full.
    pub(super) fn flush(&mut self, index: usize) {
        let c = &mut self.connections[index];
        while c.written < c.issued {
            let Link::Open(stream) = &mut c.link else {
                return;
            };
            let len = (c.issued - c.written).min(CHUNK as u64) as usize;
            let chunk = &mut self.scratch[..len];
            c.pattern.fill(c.written, chunk);
            match stream.write(chunk) {
                Ok(n) => {
                    c.written += n as u64;
                    if n < len {
                        // The socket buffer is full; WRITABLE will follow.
                        return;
                    }
                }
                Err(e) if crate::loadgen::would_block(&e) => return,
                Err(e) if crate::loadgen::interrupted(&e) => {}
                Err(e) => {
                    let msg = format!("write failed after {} bytes: {e}", c.written);
                    self.fail(index, msg);
                    return;
                }
            }
        }
    }

    /// Records a failure on connection `index` and closes it.
    pub(super) fn fail(&mut self, index: usize, error: String) {
        let number = self.connections[index].number;
        self.failures.push(Failure::on(number, error));
        self.interval.errors += 1;
        self.close(index);
    }

    pub(super) fn close(&mut self, index: usize) {
        let c = &mut self.connections[index];
        if let Some(stream) = c.link.stream() {
            let _ = self.poll.registry().deregister(stream);
        }
        match std::mem::replace(&mut c.link, Link::Closed) {
            Link::Open(_) => self.open -= 1,
            Link::Connecting { .. } => self.pending_connects -= 1,
            Link::Closed => {}
        }
        c.due.clear();
    }
}
