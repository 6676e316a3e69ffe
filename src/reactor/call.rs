//! Calling sessions, and the mail they send each other.

use super::connection::Phase;
use super::trace::trace_write;
use super::{CloseReason, Closing, Cx, Reactor, Session, Source, WRITE_BUDGET};

impl Reactor {
    /// Step 7 of a turn: connections that other connections gave output
    /// to (a chat line for a room) are flushed, once each, however many
    /// letters they got.
    pub(super) fn flush_mailed(&mut self) {
        for key in std::mem::take(&mut self.core.to_flush) {
            if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
                conn.flush_listed = false;
            }
            self.pump(key);
        }
    }

    /// Calls one of a connection's session methods with a context, then
    /// settles the consequences: staged output, close requests, mail.
    /// `serial`, when given, must match (events for owned sources and
    /// jobs may outlive their connection). Returns the callback's value, or
    /// `None` when there was no such live connection.
    pub(super) fn call<R>(
        &mut self,
        key: usize,
        serial: Option<u64>,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        self.call_with(key, serial, CloseReason::Requested, f)
    }

    /// [`Reactor::call`], naming the reason a close requested in the
    /// callback is reported with.
    pub(super) fn call_closing_as<R>(
        &mut self,
        key: usize,
        reason: CloseReason,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        self.call_with(key, None, reason, f)
    }

    pub(super) fn call_with<R>(
        &mut self,
        key: usize,
        serial: Option<u64>,
        close_reason: CloseReason,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            return None;
        };
        if serial.is_some_and(|s| s != conn.serial) || conn.phase == Phase::Dead {
            return None;
        }
        let mut session = conn.session.take()?;
        let service = conn.service;
        let serial = conn.serial;
        let mut cx = Cx {
            core: &mut self.core,
            sources: &mut self.sources,
            key,
            service,
            serial,
            close: None,
        };
        let r = f(session.as_mut(), &mut cx);
        let close = cx.close;
        if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
            conn.session = Some(session);
        }
        self.settle(key, close, close_reason);
        if self.core.mail.is_empty() {
            return Some(r);
        }
        self.deliver_mail();
        Some(r)
    }

    /// After a callback: moves staged output into the connection (writing
    /// it directly when nothing is queued before it), applies backpressure,
    /// and begins a requested close.
    pub(super) fn settle(&mut self, key: usize, close: Option<Closing>, reason: CloseReason) {
        let core = &mut self.core;
        let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
            core.staged.discard();
            return;
        };
        if close == Some(Closing::Abort) || conn.phase == Phase::Dead {
            core.staged.discard();
            conn.outbox = None;
        }
        let mut direct = 0;
        if !core.staged.is_empty() && conn.outbox.is_none() && !conn.write_blocked {
            // Nothing is queued before this output, so it goes straight to
            // the socket from the staging buffer: in the common case (an
            // echo) the connection never owns a buffer at all.
            match core.staged.flush_to(&mut conn.stream, WRITE_BUDGET) {
                Ok(f) => {
                    direct = f.bytes;
                    conn.write_blocked = f.blocked;
                    if f.bytes > 0 {
                        conn.last_active = core.now;
                        core.metrics.service_mut(conn.service).bytes_sent += f.bytes as u64;
                    }
                    if core.trace {
                        trace_write(key, conn.service, f);
                    }
                }
                Err(e) => {
                    core.staged.discard();
                    if core.trace {
                        eprintln!("trace #{key} {} write error: {e}", conn.service);
                    }
                    self.fail(key, &e);
                    return;
                }
            }
        }
        if !core.staged.is_empty() {
            // The socket would not take it all: the rest is the connection's.
            conn.outbox
                .get_or_insert_with(Default::default)
                .append_outbox(&mut core.staged);
        }
        let high_water = core.limits[conn.service as usize].high_water;
        let full = conn.pause_if_full(key, high_water, core.trace);
        if close.is_some() {
            self.begin_close(key, reason);
        }
        if full {
            self.call(key, None, |s, cx| s.on_output_full(cx));
        }
        if self.core.pumping == Some(key) {
            self.core.pump_credit += direct;
        } else {
            self.pump_after(key, direct);
        }
    }

    /// Delivers output that sessions addressed to other connections.
    /// Delivery may cause more (a member cut off for being too slow makes
    /// its room hear about it), so it loops until the mailbox is empty.
    pub(super) fn deliver_mail(&mut self) {
        if self.core.delivering {
            return; // Called from within a delivery: its next round does it.
        }
        self.core.delivering = true;
        // Bounded: every round delivers at least one letter; a session that
        // answers every letter with another would be a bug, so the rounds
        // are capped generously.
        for _ in 0..1_000 {
            // Swap in the spare list, so that letters sent while this batch
            // is delivered go there, and both lists keep their capacity: a
            // broadcast to a thousand members does not regrow a Vec each time.
            let mut batch = std::mem::take(&mut self.core.mail_spare);
            std::mem::swap(&mut batch, &mut self.core.mail);
            if batch.is_empty() {
                self.core.mail_spare = batch;
                self.core.delivering = false;
                return;
            }
            for (key, serial, bytes) in batch.drain(..) {
                let core = &mut self.core;
                let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                    continue;
                };
                if conn.serial != serial || conn.phase != Phase::Open {
                    continue;
                }
                conn.outbox
                    .get_or_insert_with(Default::default)
                    .push_shared(bytes);
                if !conn.flush_listed {
                    conn.flush_listed = true;
                    core.to_flush.push(key);
                }
                let high_water = core.limits[conn.service as usize].high_water;
                if conn.pause_if_full(key, high_water, core.trace) {
                    self.call(key, None, |s, cx| s.on_output_full(cx));
                }
            }
            self.core.mail_spare = batch;
        }
        log::error!("mail kept producing mail for 1000 rounds; dropping the rest");
        self.core.mail.clear();
        self.core.delivering = false;
    }
}
