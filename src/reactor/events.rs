//! Events, the ready queue and timers: every way a source is woken.
//!
//! All three lead to [`Reactor::drive`], the single entry point for "do what
//! this source can do now". An event first notes what the kernel reported
//! (readable, writable, the peer's FIN) on the source itself, because
//! edge-triggered readiness is reported once and must be remembered; the
//! ready queue holds sources that stopped early on purpose (a budget used
//! up) and would otherwise wait for an edge that never comes; a timer is a
//! wake-up call whose reason ([`Wake`]) says what to check.

use std::io;
use std::time::{Duration, Instant, SystemTime};

use mio::Events;

use super::connection::Phase;
use super::timers::Wake;
use super::trace::trace_event;
use super::{
    CloseReason, LINGER, MAIL_PER_TURN, Reactor, SHUTDOWN_POLL, Source, SourceEvent,
    WRITES_PER_TURN,
};

use super::trace::trace;

impl Reactor {
    /// Step 1 of a turn: sleeps in `poll()` until an event arrives
    /// or the earliest deadline is due, then reads the clock once for the
    /// whole turn. Returns false when a signal cut the wait short.
    pub(super) fn wait(&mut self) -> io::Result<bool> {
        let timeout = self.timeout();
        let turn_end = Instant::now();
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        let now = Instant::now();
        self.core.now = now;
        self.core.wall = SystemTime::now();
        let m = &mut self.core.metrics;
        m.iterations += 1;
        m.last_turn_events = self.events.iter().count() as u64;
        m.events += m.last_turn_events;
        self.core.turn.begin(m);
        // A turn with nothing to do (a wake-up only to check the shutdown)
        // prints no header; one woken by a due timer does, so the lines
        // its timer prints are not taken for the previous turn's.
        let timer_due = self.core.timers.timeout(now) == Some(Duration::ZERO)
            || self.core.shared_wake.is_some_and(|at| at <= now);
        if m.last_turn_events > 0 || !self.core.ready.is_empty() || timer_due {
            trace!(
                self.core.trace,
                "-- turn {}: {} event(s), {} ready, {}slept {:?}",
                m.iterations,
                m.last_turn_events,
                self.core.ready.len(),
                if timer_due { "timer due, " } else { "" },
                now - turn_end
            );
        }
        Ok(true)
    }

    /// How long `poll()` may sleep: not at all while the ready queue has
    /// work, else until the earliest timer or the services' next wake-up.
    fn timeout(&mut self) -> Option<Duration> {
        if !self.core.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout = self.core.timers.timeout(now);
        if let Some(at) = self.core.shared_wake {
            let d = at.saturating_duration_since(now);
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        }
        if self.core.shutdown.is_some() {
            // Check the exit condition at least every few milliseconds.
            let d = SHUTDOWN_POLL;
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        }
        timeout
    }

    /// Step 2: work left from the last turn goes first. Tokens requeued
    /// during this step wait for the next turn, behind the others.
    /// Like events, it stops once the turn's letters are spent: what is
    /// left stays queued, in order, for the next turn.
    pub(super) fn serve_ready_queue(&mut self) {
        for _ in 0..self.core.ready.len() {
            if self.turn_spent() {
                return;
            }
            if let Some(key) = self.core.ready.pop_front() {
                self.clear_queued(key);
                self.drive(key);
                self.deliver_mail();
            }
        }
    }

    /// Step 3: this turn's events, in the order the kernel gave them.
    ///
    /// Each event is first noted on its source (edge-triggered readiness
    /// comes once and must be remembered), then acted on. Once the turn
    /// has delivered `MAIL_PER_TURN` letters, the remaining events are
    /// only noted, and their sources go on the ready queue for the next
    /// turn: a hundred chat members hanging up at once would otherwise
    /// each tell the whole room in one turn (150 ms for 192 leaves from a
    /// room of 1,000, before this rule).
    pub(super) fn dispatch_events(&mut self) {
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            let Some(key) = self.note(event) else {
                continue;
            };
            if self.turn_spent() {
                self.requeue(key);
            } else {
                self.drive(key);
                self.deliver_mail();
            }
        }
        self.events = events;
    }

    /// Whether this turn has done its share of work: delivered
    /// `MAIL_PER_TURN` letters (those still waiting in `mail` count too,
    /// and so do those a callback announced for later, `TurnTally::owed`),
    /// or written to `WRITES_PER_TURN` connections. Past it, the loop
    /// stops taking on new work (events, the ready queue, accepting, the
    /// flush of mailed connections) and comes back to it in the next turn.
    pub(super) fn turn_spent(&self) -> bool {
        let turn = &self.core.turn;
        turn.writes >= WRITES_PER_TURN
            || turn.letters as usize + turn.owed as usize + self.core.mail.len()
                >= MAIL_PER_TURN as usize
    }

    /// Step 4: the wake-ups that are due.
    pub(super) fn fire_timers(&mut self) {
        while let Some((key, serial, wake)) = self.core.timers.pop_due(self.core.now) {
            self.core.turn.timers += 1;
            self.fire(key, serial, wake);
            self.deliver_mail();
        }
    }

    /// Step 5: state the services share gets its turn without any
    /// connection's event (the exec reaper signals and reaps children whose
    /// connection is gone), and says when it next wants one.
    pub(super) fn poll_services(&mut self) {
        self.core.shared_wake = self.core.shared.poll(self.core.now);
    }

    /// The turn's figures for the admin endpoint, and a log line if the
    /// turn was slow, saying what it did (Redis's latency monitor keeps
    /// such samples; one line per slow turn is enough here).
    pub(super) fn end_turn(&mut self) {
        let m = &mut self.core.metrics;
        m.last_turn = self.core.now.elapsed();
        m.max_turn = m.max_turn.max(m.last_turn);
        m.busy += m.last_turn;
        m.turn_histogram.record(m.last_turn);
        m.timers_queued = self.core.timers.len() as u64;
        if self.core.group.reactors() > 1 {
            self.core.group.publish(self.core.index, m);
        }
        if m.last_turn > self.core.slow_turn {
            log::warn!(
                "slow turn {}: {:.3} ms (limits.slow_turn_ms = {}): {}",
                m.iterations,
                m.last_turn.as_secs_f64() * 1e3,
                self.core.slow_turn.as_millis(),
                self.core
                    .turn
                    .describe(m, m.last_turn_events, self.core.ready.len())
            );
        }
    }

    /// Notes what an event reports on its source and returns the source's
    /// key when there is work to drive (reading, writing, accepting).
    /// Events that carry their own work (another thread's wake-up, a
    /// signal, a session's extra descriptor) are handled here and need no
    /// driving.
    fn note(&mut self, event: &mio::event::Event) -> Option<usize> {
        let key = event.token().0;
        // Sporadic events happen: a token may already be gone, or be
        // waiting for removal. Such an event is ignored.
        let source = self.sources.get_mut(key)?;
        match source {
            Source::Conn(conn) => {
                trace_event(self.core.trace, key, conn, event);
                if event.is_writable() {
                    conn.write_blocked = false;
                }
                // After the client's FIN there is nothing left to read; every
                // later event reports read-closed again and must not cause
                // another read (and another `on_peer_closed`).
                if (event.is_readable() || event.is_read_closed() || event.is_error())
                    && !conn.peer_eof
                {
                    conn.read_ready = true;
                }
                if event.is_read_closed() {
                    conn.fin_seen = true;
                }
                Some(key)
            }
            Source::Listener(l) => {
                trace!(self.core.trace, "#{key} {} listener readable", l.service);
                Some(key)
            }
            Source::Datagram(u) => {
                trace!(
                    self.core.trace,
                    "#{key} {} udp{}{}",
                    u.service,
                    if event.is_readable() { " readable" } else { "" },
                    if event.is_writable() { " writable" } else { "" }
                );
                if event.is_readable() {
                    u.read_ready = true;
                }
                if event.is_writable() {
                    u.write_blocked = false;
                }
                Some(key)
            }
            Source::Owned { owner, serial } => {
                let (owner, serial) = (*owner, *serial);
                let ev = SourceEvent::Ready {
                    token: key,
                    readable: event.is_readable(),
                    writable: event.is_writable(),
                    closed: event.is_read_closed() || event.is_write_closed() || event.is_error(),
                };
                trace!(self.core.trace, "#{key} source of #{owner} ready");
                self.call(owner, Some(serial), |s, cx| s.on_source(ev, cx));
                self.deliver_mail();
                None
            }
            Source::Signals(signals) => {
                let stop = signals.pending().any(|sig| {
                    sig == signal_hook::consts::SIGINT || sig == signal_hook::consts::SIGTERM
                });
                if stop {
                    self.begin_shutdown();
                }
                None
            }
            Source::Waker => {
                self.deliver_jobs();
                self.deliver_mail();
                None
            }
            Source::Vacated => None,
        }
    }

    /// Does whatever work a source has: the single entry point used by
    /// events, the ready queue and timers alike.
    pub(super) fn drive(&mut self, key: usize) {
        match self.sources.get(key) {
            Some(Source::Conn(_)) => {
                // Output first: it may lift backpressure and allow a read.
                self.pump(key);
                self.offer_held(key);
                self.read(key);
            }
            Some(Source::Listener(_)) => self.accept(key),
            Some(Source::Datagram(_)) => self.serve_datagrams(key),
            _ => {}
        }
    }

    pub(super) fn clear_queued(&mut self, key: usize) {
        match self.sources.get_mut(key) {
            Some(Source::Conn(c)) => c.queued = false,
            Some(Source::Listener(l)) => l.queued = false,
            Some(Source::Datagram(u)) => u.queued = false,
            _ => {}
        }
    }

    /// Puts a token on the ready queue, once.
    pub(super) fn requeue(&mut self, key: usize) {
        let queued = match self.sources.get_mut(key) {
            Some(Source::Conn(c)) => &mut c.queued,
            Some(Source::Listener(l)) => &mut l.queued,
            Some(Source::Datagram(u)) => &mut u.queued,
            _ => return,
        };
        if !*queued {
            *queued = true;
            self.core.ready.push_back(key);
        }
    }

    /// Whether a wake-up set for `serial` on `key` still means the source
    /// there: the same connection, or a listener (serial 0).
    pub(super) fn wake_up_is_live(&self, key: usize, serial: u64) -> bool {
        match self.sources.get(key) {
            Some(Source::Conn(c)) => c.serial == serial,
            Some(Source::Listener(_) | Source::Datagram(_)) => serial == 0,
            _ => false,
        }
    }

    pub(super) fn arm_idle(&mut self, key: usize, at: Instant) {
        if let Some(Source::Conn(conn)) = self.sources.get_mut(key) {
            conn.idle_wake = Some(at);
            self.core.timers.schedule(at, key, conn.serial, Wake::Idle);
        }
    }

    /// Acts on a wake-up that is due, unless it was set for a connection
    /// that has gone since (another may have its token now).
    pub(super) fn fire(&mut self, key: usize, serial: u64, wake: Wake) {
        if !self.wake_up_is_live(key, serial) {
            return;
        }
        match wake {
            Wake::Accept => {
                trace!(self.core.trace, "#{key} timer fired: accept retry");
                self.drive(key);
            }
            Wake::Session => {
                trace!(self.core.trace, "#{key} timer fired: session");
                self.call(key, Some(serial), |s, cx| s.on_timer(cx));
            }
            Wake::Linger => {
                if let Some(Source::Conn(conn)) = self.sources.get(key) {
                    if matches!(conn.phase, Phase::Closing | Phase::Lingering)
                        && conn.last_active + LINGER <= self.core.now
                    {
                        trace!(self.core.trace, "#{key} timer fired: linger over");
                        self.kill(key);
                    } else if matches!(conn.phase, Phase::Closing | Phase::Lingering) {
                        let at = conn.last_active + LINGER;
                        self.core.timers.schedule(at, key, serial, Wake::Linger);
                    }
                }
            }
            Wake::Stall(stall) => {
                let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                    return;
                };
                let high_water = self.core.limits[conn.service as usize].high_water;
                // Stale unless the stall that scheduled it is still under
                // way, so it has lasted the whole grace: a stall that ended
                // and began again has a wake-up of its own, later. (A new
                // connection on this key counts from 0 again: a stale
                // wake-up whose count it matches ends a stall that is
                // really under way, only early.)
                if conn.stall == stall
                    && conn.phase == Phase::Open
                    && conn.pending_output() >= high_water
                {
                    conn.stall = conn.stall.wrapping_add(1);
                    trace!(
                        self.core.trace,
                        "#{key} {} timer fired: output stalled over the limit", conn.service
                    );
                    self.call(key, None, |s, cx| s.on_output_full(cx));
                }
            }
            Wake::Idle => {
                let Some(Source::Conn(conn)) = self.sources.get_mut(key) else {
                    return;
                };
                let Some(idle) = self.core.limits[conn.service as usize].idle_timeout else {
                    return;
                };
                if conn.phase != Phase::Open || conn.idle_wake.is_none_or(|at| at > self.core.now) {
                    return; // Stale: a wake-up of an older connection.
                }
                conn.idle_wake = None;
                let deadline = conn.last_active + idle;
                let busy = conn.session.as_ref().is_some_and(|s| s.is_busy());
                if deadline > self.core.now || busy {
                    let at = if busy { self.core.now + idle } else { deadline };
                    self.arm_idle(key, at);
                } else {
                    trace!(self.core.trace, "#{key} {} timer fired: idle", conn.service);
                    self.begin_close(key, CloseReason::Idle);
                    self.pump(key);
                }
            }
        }
    }
}
