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
//! the pass (`on_output_drained`, `on_close`) records its
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
//! (the *high watermark*) the connection stops being read; at or below a
//! quarter of it (the *low watermark*) reading resumes.
//!
//! # Too slow is judged by the kernel, over time
//!
//! Output over the limit does not by itself mean a slow client: one read
//! of a chat sender can queue many times its size for every member of the
//! room, while a pass writes at most `WRITE_BUDGET`, so a burst puts a
//! client that reads at full speed over the limit with the kernel still
//! taking every byte offered. What marks a client too slow is the kernel
//! refusing bytes (`WouldBlock`) and the output staying over the limit
//! from then on: the *stall* starts at such a write
//! (`Connection::stalled_since`) and ends as soon as the output falls
//! under the limit. A stall that lasts [`STALL_GRACE`] makes the session
//! hear `on_output_full` (from a `Wake::Stall` wake-up), and chat cuts the
//! member off there. Memory stays bounded because sessions that produce
//! output for others stop producing while a recipient is over the limit
//! (chat holds its sender's input), and reading stops for a connection
//! whose own output is over it. A session that produces output as room
//! appears (chargen) is asked for more with `on_output_drained` while
//! budget is left; when the budget runs out first, that call is owed to
//! the next turn (`Connection::drain_owed`).

use super::connection::Phase;
use super::outbox::Outbox;
use super::timers::Wake;
use super::trace::trace_write;
use super::{Back, CloseReason, Cx, Reactor, STALL_GRACE, Session, Source, WRITE_BUDGET};

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

            // Backpressure on: reading stops. The session hears of it only
            // if the client then takes nothing for `STALL_GRACE` (module
            // docs), through the wake-up scheduled here.
            conn.pause_if_full(key, limits.high_water, core.trace);
            if let Some(stall) = conn.note_stall(limits.high_water) {
                trace!(
                    core.trace,
                    "#{key} {} output stalled over the limit ({pending} bytes pending)",
                    conn.service
                );
                core.timers
                    .schedule(core.now + STALL_GRACE, key, conn.serial, Wake::Stall(stall));
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
            core.turn.writes = core.turn.writes.saturating_add(1);
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

impl Cx<'_> {
    /// Bytes queued for another connection (token and serial, as for
    /// [`Cx::send_to`]) and not yet accepted by the kernel; 0 if it is
    /// gone. Letters sent in this callback are not counted yet: they are
    /// delivered when it returns. A session that produces output for
    /// others asks this to stop while a recipient is over its limit.
    pub fn pending_output_of(&self, token: usize, serial: u64) -> usize {
        match &self.back {
            Back::Reactor { sources, .. } => match sources.get(token) {
                Some(Source::Conn(c)) if c.serial == serial => c.pending_output(),
                _ => 0,
            },
            // The harness models one connection's kernel at a time; the
            // others have taken everything.
            #[cfg(test)]
            Back::Test { .. } => 0,
        }
    }
}
