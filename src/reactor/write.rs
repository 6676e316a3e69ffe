//! The write path: flushing output within the turn's budget, and the
//! backpressure that follows from what is left.

use super::connection::Phase;
use super::trace::trace_write;
use super::{Reactor, Source, WRITE_BUDGET};

impl Reactor {
    /// Writes a connection's pending output within the turn's budget, keeps
    /// the backpressure state in step, asks the session for more when it
    /// has room, and moves a closing connection along once it is flushed.
    pub(super) fn pump(&mut self, key: usize) {
        self.pump_after(key, 0);
    }

    /// [`Reactor::pump`] after `credit` bytes were already written this
    /// turn (by [`Reactor::settle`]'s direct write): they count against the
    /// budget and as progress for the "room for more" check.
    pub(super) fn pump_after(&mut self, key: usize, credit: usize) {
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
    pub(super) fn finish_writing(&mut self, key: usize) {
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
}
