//! The write path: one pass per connection, one routine that writes.
//!
//! # Record first, write once
//!
//! A session never writes to a socket, and its callbacks do not write
//! either: what a callback asks for is only *recorded* (output in the
//! loop's staging buffer, mail in the mailbox, wake-ups in the timer
//! queue, a close in its `Cx`). When the callback returns, the reactor runs
//! one *write pass* for the connection, [`Reactor::pump`], and all bytes
//! leave through one routine, [`Reactor::flush`], which also does the
//! accounting: the byte counters, `last_active`, `write_blocked` and the
//! trace line. Nothing here calls back into itself: a callback made during
//! the pass (`on_output_drained`, `on_output_full`, `on_close`) records its
//! output like any other, and the pass's next round writes it.
//!
//! # The direct write
//!
//! Output staged by a callback goes straight from the staging buffer to the
//! socket when the connection holds nothing from before: an echoed message
//! costs one `send()` and the connection never owns a buffer. Only what the
//! socket would not take moves into the connection's own `Outbox`; output
//! staged later queues behind it, so the order is kept.
//!
//! # Budget and backpressure
//!
//! One pass writes at most [`WRITE_BUDGET`] bytes (checked between
//! `writev` calls, so one call may pass it). After each write the pass
//! checks the watermarks: at or above the service's `max_pending_output`
//! (the *high watermark*) the connection stops being read and its session
//! hears `on_output_full`; at or below a quarter of it (the *low
//! watermark*) reading resumes. A session that produces output as room
//! appears (chargen) is asked for more with `on_output_drained` while
//! budget is left; when the budget runs out first, that call is owed to
//! the next turn (`Connection::drain_owed`).

use super::connection::Phase;
use super::outbox::Outbox;
use super::trace::trace_write;
use super::{CloseReason, Cx, Reactor, Session, Source, WRITE_BUDGET};

/// Rounds of one write pass: each round writes, or asks the session for
/// more, or ends the pass; a session that keeps refilling is stopped by the
/// budget long before this.
const PASS_ROUNDS: usize = 64;

use super::trace::trace;

impl Reactor {
    /// The write pass for one connection: writes its output within the
    /// turn's budget, keeps the backpressure state in step, asks the
    /// session for more when it has room, and moves a closing connection
    /// along once everything is out. Called after every callback (through
    /// [`Reactor::call`]) and whenever the connection is driven.
    pub(super) fn pump(&mut self, key: usize) {
        let mut budget = WRITE_BUDGET;
        for _ in 0..PASS_ROUNDS {
            let Some(wrote) = self.flush(key, budget) else {
                return; // Gone, or the write failed and killed it.
            };
            budget = budget.saturating_sub(wrote);
            let core = &mut self.core;
            let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                return;
            };
            let limits = core.limits[conn.service as usize];
            let pending = conn.pending_output();

            // Backpressure on: the session hears of it, and what it writes
            // or asks for in answer is handled by the next round.
            if conn.pause_if_full(key, limits.high_water, core.trace) {
                self.react(key, |s, cx| s.on_output_full(cx));
                continue;
            }
            // Backpressure off: resume reading, from the ready queue because
            // the readable edge it missed will not come again.
            if conn.paused && pending <= limits.low_water {
                conn.paused = false;
                trace!(
                    core.trace,
                    "#{key} {} backpressure off ({pending} bytes pending)", conn.service
                );
                if conn.read_ready || conn.reoffer {
                    self.requeue(key);
                }
            }
            let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                return;
            };
            match conn.phase {
                // Progress was made (now, or in a turn whose budget ran out
                // just as the output emptied) and there is room: let the
                // session produce more (chargen refills here).
                Phase::Open
                    if conn.wants_drain
                        && (wrote > 0 || conn.drain_owed)
                        && pending <= limits.low_water =>
                {
                    if budget == 0 {
                        // Its share of this turn is used; the call is owed
                        // to the next turn, which may have nothing to write.
                        conn.drain_owed = true;
                        self.requeue(key);
                        return;
                    }
                    conn.drain_owed = false;
                    self.react(key, |s, cx| s.on_output_drained(cx));
                }
                Phase::Closing if pending == 0 => {
                    self.finish_writing(key);
                    return;
                }
                _ => {
                    // The budget ran out with output left that the socket
                    // would still take: no writable edge will announce
                    // that, so the connection comes back next turn itself.
                    if budget == 0 && pending > 0 && !conn.write_blocked {
                        self.requeue(key);
                    }
                    return;
                }
            }
        }
        // The rounds ran out: whatever the last callback staged is kept for
        // the next turn, which this connection is queued for.
        self.flush(key, 0);
        self.requeue(key);
    }

    /// Writes, and the only place that does: the output the last callback
    /// staged goes behind what the connection already holds, or straight
    /// to the socket when it holds nothing (the direct write); at most
    /// `budget` bytes leave. Counts what left (metrics, `last_active`,
    /// trace), notes a refusal in `write_blocked`, and leaves what the
    /// socket would not take in the connection's outbox. Returns the bytes
    /// written, or `None` when the connection is gone, dead, or failed now.
    pub(super) fn flush(&mut self, key: usize, budget: usize) -> Option<usize> {
        let core = &mut self.core;
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            core.staged.discard();
            return None;
        };
        if conn.phase == Phase::Dead {
            core.staged.discard();
            conn.outbox = None;
            return None;
        }
        if let Some(own) = conn.outbox.as_mut() {
            own.append_outbox(&mut core.staged);
        }
        let out: &mut Outbox = match conn.outbox.as_deref_mut() {
            Some(own) => own,
            None => &mut core.staged,
        };
        let mut wrote = 0;
        if !out.is_empty() && !conn.write_blocked && budget > 0 {
            match out.flush_to(&mut conn.stream, budget) {
                Ok(f) => {
                    wrote = f.bytes;
                    conn.write_blocked = f.blocked;
                    if f.bytes > 0 {
                        conn.last_active = core.now;
                        core.metrics.service_mut(conn.service).bytes_sent += f.bytes as u64;
                    }
                    trace_write(core.trace, key, conn.service, f);
                }
                Err(e) => {
                    core.staged.discard();
                    trace!(core.trace, "#{key} {} write error: {e}", conn.service);
                    self.fail(key, &e);
                    return None;
                }
            }
        }
        // What the socket would not take is the connection's to keep.
        if !core.staged.is_empty() {
            conn.outbox
                .get_or_insert_with(Default::default)
                .append_outbox(&mut core.staged);
        }
        if conn.outbox.as_ref().is_some_and(|o| o.is_empty()) {
            conn.outbox = None;
        }
        Some(wrote)
    }

    /// A callback made during a write pass: only its close request is
    /// applied here; its output is written by the pass's next round.
    fn react(&mut self, key: usize, f: impl FnOnce(&mut dyn Session, &mut Cx<'_>)) {
        if let Some(((), close)) = self.invoke(key, None, f) {
            self.close_if_asked(key, close, CloseReason::Requested);
        }
    }

    /// All output is out: send our FIN and linger for the client's.
    pub(super) fn finish_writing(&mut self, key: usize) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return;
        };
        let _ = conn.stream.shutdown_write();
        trace!(self.core.trace, "#{key} {} FIN sent", conn.service);
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
}
