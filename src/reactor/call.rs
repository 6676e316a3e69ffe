//! Calling sessions, and the mail they send each other.

use std::time::Instant;

use super::connection::Phase;
use bytes::Bytes;
use slab::Slab;

use super::{CloseReason, Closing, Core, Cx, Reactor, Session, Source};

/// What the services may do while draining their inbox
/// ([`Services::drain_inbox`](super::Services::drain_inbox)): mail this
/// reactor's connections, and look at how full their output is. It is
/// [`Cx::send_to`] and [`Cx::pending_output_of`] without a connection of
/// its own: the letters go through the same mailbox, delivered when the
/// step ends, and are flushed by the step after it.
pub struct Post<'a> {
    mail: &'a mut Vec<(usize, u64, Bytes)>,
    sources: &'a Slab<Source>,
    timers: &'a mut super::timers::Timers,
    now: Instant,
}

impl Post<'_> {
    /// Queues a shared chunk for the connection `token`/`serial`; dropped
    /// silently if it is gone or closing by the time the step ends.
    pub fn send_to(&mut self, token: usize, serial: u64, bytes: Bytes) {
        self.mail.push((token, serial, bytes));
    }

    /// Bytes queued for the connection `token`/`serial` and not yet taken
    /// by the kernel (0 if it is gone).
    pub fn pending_output_of(&self, token: usize, serial: u64) -> usize {
        match self.sources.get(token) {
            Some(Source::Conn(c)) if c.serial == serial => c.pending_output(),
            _ => 0,
        }
    }

    /// The time of this loop turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Calls the session on connection `token`/`serial` back (`on_timer`)
    /// at the start of the next turn, for an answer it waits for that
    /// another thread brought (a chat nick's claim); nothing if the
    /// connection is gone by then.
    pub fn wake(&mut self, token: usize, serial: u64) {
        self.timers
            .schedule(self.now, token, serial, super::timers::Wake::Session);
    }
}

impl Reactor {
    /// Step 6 of a turn: the services drain what other threads left in
    /// their inboxes (`Services::drain_inbox`), and the letters that makes
    /// are delivered, so the next step flushes them. It runs every turn:
    /// a reactor that left something in its own inbox during this turn
    /// (a chat line said here, sequenced with the other reactors' lines)
    /// delivers it now without ringing itself; an empty inbox costs one
    /// look.
    pub(super) fn drain_inboxes(&mut self) {
        let core = &mut self.core;
        let mut post = Post {
            mail: &mut core.mail,
            sources: &self.sources,
            timers: &mut core.timers,
            now: core.now,
        };
        core.shared.drain_inbox(&mut post);
        self.deliver_mail();
    }

    /// Step 7 of a turn: connections that other connections gave output
    /// to (a chat line for a room) are flushed, once each, however many
    /// letters they got.
    pub(super) fn flush_mailed(&mut self) {
        // Bounded: a pass here may call a session that mails others, who
        // are then flushed in the next round; a chain longer than this
        // waits for the next turn, which it is queued for.
        for _ in 0..16 {
            if self.core.to_flush.is_empty() {
                return;
            }
            for key in std::mem::take(&mut self.core.to_flush) {
                if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
                    conn.flush_listed = false;
                }
                if self.turn_spent() {
                    // The rest are written first thing next turn.
                    self.requeue(key);
                    continue;
                }
                self.pump(key);
                self.deliver_mail();
            }
        }
        for key in std::mem::take(&mut self.core.to_flush) {
            if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
                conn.flush_listed = false;
            }
            self.requeue(key);
        }
    }

    /// Calls one of a connection's session methods with a context, then
    /// acts on what it recorded: a close it asked for is begun, and its
    /// output is written by one write pass ([`Reactor::pump`]). Mail it
    /// sent waits in the mailbox for the end of the current step
    /// ([`Reactor::deliver_mail`]). `serial`, when given, must match
    /// (events for owned sources and jobs may outlive their connection).
    /// Returns the callback's value, or `None` when there was no such live
    /// connection.
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

    fn call_with<R>(
        &mut self,
        key: usize,
        serial: Option<u64>,
        reason: CloseReason,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let (r, close) = self.invoke(key, serial, f)?;
        self.close_if_asked(key, close, reason);
        self.pump(key);
        Some(r)
    }

    /// Runs one session method, and nothing else: the callback only
    /// records what it asks for (output in `Core::staged`, mail, wake-ups),
    /// and the close it asked for is returned. The session is taken out of
    /// its slab entry for the call, so the callback can borrow the rest of
    /// the reactor through its `Cx`.
    pub(super) fn invoke<R>(
        &mut self,
        key: usize,
        serial: Option<u64>,
        f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
    ) -> Option<(R, Option<Closing>)> {
        invoke(&mut self.core, &mut self.sources, key, serial, f)
    }

    /// Begins the close a callback asked for. An abort drops the output
    /// first, both what the callback staged and what the connection held;
    /// what `on_close` writes after that is still sent.
    pub(super) fn close_if_asked(
        &mut self,
        key: usize,
        close: Option<Closing>,
        reason: CloseReason,
    ) {
        let Some(close) = close else {
            return;
        };
        if close == Closing::Abort {
            self.core.staged.discard();
            if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
                conn.outbox = None;
            }
        }
        self.begin_close(key, reason);
    }

    /// Delivers output that sessions addressed to other connections, after
    /// the step that sent it (one event, one ready token, one timer).
    /// Mail sent while a batch is delivered goes to the mailbox's other
    /// list and waits for the next round, so every recipient sees the
    /// letters in the order they were sent. It loops until the mailbox is
    /// empty.
    pub(super) fn deliver_mail(&mut self) {
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
                core.turn.letters = core.turn.letters.saturating_add(1);
                if !conn.flush_listed {
                    conn.flush_listed = true;
                    core.to_flush.push(key);
                }
                // Over the limit, reading stops; whether the client is too
                // slow is judged by the write pass that follows (`pump`),
                // by what the kernel refuses over time.
                let high_water = core.limits[conn.service as usize].high_water;
                conn.pause_if_full(key, high_water, core.trace);
            }
            self.core.mail_spare = batch;
        }
        log::error!("mail kept producing mail for 1000 rounds; dropping the rest");
        self.core.mail.clear();
    }
}

/// [`Reactor::invoke`] over the two parts of the reactor a callback may
/// borrow, so a caller can lend it something else of the reactor's at the
/// same time (the read buffer).
pub(super) fn invoke<R>(
    core: &mut Core,
    sources: &mut Slab<Source>,
    key: usize,
    serial: Option<u64>,
    f: impl FnOnce(&mut dyn Session, &mut Cx<'_>) -> R,
) -> Option<(R, Option<Closing>)> {
    let Some(Source::Conn(conn)) = sources.get_mut(key) else {
        return None;
    };
    if serial.is_some_and(|s| s != conn.serial) || conn.phase == Phase::Dead {
        return None;
    }
    let mut session = conn.session.take()?;
    let service = conn.service;
    core.turn.callbacks[service as usize] += 1;
    let serial = conn.serial;
    let mut cx = Cx {
        back: super::Back::Reactor { core, sources },
        key,
        service,
        serial,
        close: None,
    };
    let r = f(session.as_mut(), &mut cx);
    let close = cx.close;
    if let Some(Source::Conn(conn)) = sources.get_mut(key) {
        conn.session = Some(session);
    }
    Some((r, close))
}
