//! `Cx`: what a session may do during one callback.

use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use mio::{Interest, Token};

use super::Services;
use super::timers::Wake;
use super::{Back, Closing, Cx, Metrics, Source};
use crate::service_id::ServiceId;

impl<'a> Cx<'a> {
    /// A context over a test harness's data instead of a reactor's.
    #[cfg(test)]
    pub(super) fn for_test(
        env: &'a mut super::testing::Env,
        slot: &'a mut super::testing::Slot,
        key: usize,
        service: ServiceId,
        serial: u64,
    ) -> Cx<'a> {
        Cx {
            back: Back::Test { env, slot },
            key,
            service,
            serial,
            close: None,
        }
    }
}

impl Cx<'_> {
    /// The time of this loop turn.
    pub fn now(&self) -> Instant {
        match &self.back {
            Back::Reactor { core, .. } => core.now,
            #[cfg(test)]
            Back::Test { env, .. } => env.now,
        }
    }

    /// The wall-clock time of this loop turn.
    pub fn wall_time(&self) -> SystemTime {
        match &self.back {
            Back::Reactor { core, .. } => core.wall,
            #[cfg(test)]
            Back::Test { env, .. } => env.wall,
        }
    }

    /// This connection's token.
    pub fn token(&self) -> usize {
        self.key
    }

    /// This connection's serial number (unique over the daemon's life).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn service(&self) -> ServiceId {
        self.service
    }

    /// The client's address, asked of the kernel (`None` on a Unix socket).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.back {
            Back::Reactor { sources, .. } => match sources.get(self.key) {
                Some(Source::Conn(c)) => c.stream.peer_addr(),
                _ => None,
            },
            #[cfg(test)]
            Back::Test { slot, .. } => slot.peer,
        }
    }

    /// The services hosted, as the reactor knows them. Services reach
    /// their own shared state through `Cx::shared`, which is built on this.
    pub fn services(&mut self) -> &mut dyn Services {
        match &mut self.back {
            Back::Reactor { core, .. } => core.shared.as_mut(),
            #[cfg(test)]
            Back::Test { env, .. } => env.services.as_mut(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        match &self.back {
            Back::Reactor { core, .. } => &core.metrics,
            #[cfg(test)]
            Back::Test { env, .. } => &env.metrics,
        }
    }

    /// Connections open over all services and every reactor.
    pub fn open_connections(&self) -> usize {
        match &self.back {
            Back::Reactor { core, .. } => core.group.open(),
            #[cfg(test)]
            Back::Test { env, .. } => env.open,
        }
    }

    /// Each reactor's figures, by index: this reactor's as they are now,
    /// the others' as of the end of their latest turn. One entry when the
    /// daemon runs one reactor (and in the test harness).
    pub fn reactor_metrics(&self) -> Vec<Metrics> {
        let core = match &self.back {
            Back::Reactor { core, .. } => core,
            #[cfg(test)]
            Back::Test { env, .. } => return vec![env.metrics.clone()],
        };
        let mut all: Vec<Metrics> = core
            .group
            .published()
            .into_iter()
            .map(|m| m.unwrap_or_else(|| Metrics::new(core.metrics.started)))
            .collect();
        if let Some(own) = all.get_mut(core.index) {
            *own = core.metrics.clone();
        }
        all
    }

    /// Whether `--trace` is on, for services that trace their own steps.
    pub fn tracing(&self) -> bool {
        match &self.back {
            Back::Reactor { core, .. } => core.trace.on(),
            #[cfg(test)]
            Back::Test { .. } => false,
        }
    }

    /// Prints one `--trace` line for this connection's service, stamped
    /// like the reactor's own; formatted only when tracing is on. Call it
    /// as `cx.trace(format_args!(...))`.
    pub fn trace(&self, args: std::fmt::Arguments<'_>) {
        if let Back::Reactor { core, .. } = &self.back
            && core.trace.on()
        {
            core.trace.line(args);
        }
    }

    /// Queues bytes for this connection (copied).
    pub fn write(&mut self, bytes: &[u8]) {
        self.staged().write(bytes);
    }

    /// Queues a shared chunk for this connection, without copying it.
    pub fn write_shared(&mut self, bytes: Bytes) {
        self.staged().push_shared(bytes);
    }

    /// Lets an encoder serialise straight into this connection's output.
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut bytes::BytesMut) -> R) -> R {
        self.staged().append_with(f)
    }

    /// Bytes queued for this connection and not yet accepted by the kernel.
    pub fn pending_output(&self) -> usize {
        match &self.back {
            Back::Reactor { core, sources } => {
                let own = match sources.get(self.key) {
                    Some(Source::Conn(c)) => c.pending_output(),
                    _ => 0,
                };
                own + core.staged.len()
            }
            #[cfg(test)]
            Back::Test { slot, .. } => slot.pending + slot.staged.len(),
        }
    }

    /// This service's `max_pending_output`.
    pub fn output_limit(&self) -> usize {
        match &self.back {
            Back::Reactor { core, .. } => core.limits[self.service as usize].high_water,
            #[cfg(test)]
            Back::Test { slot, .. } => slot.limit,
        }
    }

    /// Queues a shared chunk for another connection, identified by token
    /// and serial. Delivered when this callback returns; silently dropped
    /// if that connection is gone or closing by then.
    pub fn send_to(&mut self, token: usize, serial: u64, bytes: Bytes) {
        match &mut self.back {
            Back::Reactor { core, .. } => core.mail.push((token, serial, bytes)),
            #[cfg(test)]
            Back::Test { env, .. } => env.mail.push((token, serial, bytes)),
        }
    }

    /// Announces `n` letters this callback caused that will be delivered
    /// later, not through [`Cx::send_to`] (a chat line left in the
    /// reactors' inboxes, which their drain step fans out). The turn's
    /// letter budget counts them, so a burst of newcomers to a big room
    /// is accepted over several turns however the lines travel.
    pub fn owe_letters(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match &mut self.back {
            Back::Reactor { core, .. } => core.turn.owed = core.turn.owed.saturating_add(n),
            // A test has no turn budget.
            #[cfg(test)]
            Back::Test { .. } => {}
        }
    }

    /// Ends the connection after the pending output is flushed (FIN, not RST).
    pub fn close(&mut self) {
        self.close.get_or_insert(Closing::Graceful);
    }

    /// Ends the connection at once, dropping pending output.
    pub fn abort(&mut self) {
        self.close = Some(Closing::Abort);
    }

    /// Stops (`true`) or resumes (`false`) handing this session input,
    /// independently of backpressure. A session whose consumer is slow (a
    /// child's stdin pipe) uses it to push back on its client. Input it
    /// left unconsumed while held is offered again, from the ready queue,
    /// when the hold lifts: a client that sent everything and now waits is
    /// not left waiting for bytes it will never send.
    pub fn hold_input(&mut self, hold: bool) {
        let key = self.key;
        match &mut self.back {
            Back::Reactor { core, sources } => {
                if let Some(Source::Conn(c)) = sources.get_mut(key) {
                    let was = c.held;
                    c.held = hold;
                    if was && !hold {
                        c.reoffer = true;
                        if !c.queued {
                            c.queued = true;
                            core.ready.push_back(key);
                        }
                    }
                }
            }
            #[cfg(test)]
            Back::Test { slot, .. } => {
                if slot.rec.held && !hold {
                    slot.reoffer = true;
                }
                slot.rec.held = hold;
            }
        }
    }

    /// Asks the reactor to offer the input this callback leaves unconsumed
    /// again at the next turn, without waiting for new bytes; nothing more
    /// is read from the client until then. For a session that stops early
    /// on purpose (chat's fan-out budget) and can take more right away. In
    /// `on_peer_closed` it means the session took none of its `input`,
    /// which then comes back through `on_input`. Ask only when more can be
    /// taken: a session that asks and consumes nothing is offered the same
    /// bytes every turn.
    pub fn offer_input_again(&mut self) {
        let key = self.key;
        match &mut self.back {
            Back::Reactor { core, sources } => {
                if let Some(Source::Conn(c)) = sources.get_mut(key) {
                    c.reoffer = true;
                    if !c.queued {
                        c.queued = true;
                        core.ready.push_back(key);
                    }
                }
            }
            #[cfg(test)]
            Back::Test { slot, .. } => slot.reoffer = true,
        }
    }

    /// Asks for an `on_timer` call at `at` (or soon after). Ask only when
    /// the deadline moves earlier: wake-ups are not cancelled one by one
    /// (those of a connection that has gone are swept in bulk), and a stale
    /// one simply finds nothing due.
    pub fn set_timer(&mut self, at: Instant) {
        match &mut self.back {
            Back::Reactor { core, .. } => {
                core.timers
                    .schedule(at, self.key, self.serial, Wake::Session)
            }
            #[cfg(test)]
            Back::Test { slot, .. } => slot.rec.timers.push(at),
        }
    }

    /// Registers a source this connection owns (a pipe, a pidfd): its
    /// events arrive as [`SourceEvent::Ready`](super::SourceEvent::Ready) with the returned token.
    /// Deregister it with [`Cx::deregister`] before dropping it.
    pub fn register(
        &mut self,
        source: &mut dyn mio::event::Source,
        interest: Interest,
    ) -> io::Result<usize> {
        match &mut self.back {
            Back::Reactor { core, sources } => {
                let entry = sources.vacant_entry();
                let token = entry.key();
                core.registry.register(source, Token(token), interest)?;
                entry.insert(Source::Owned {
                    owner: self.key,
                    serial: self.serial,
                });
                if let Some(Source::Conn(c)) = sources.get_mut(self.key) {
                    c.owned_sources = c.owned_sources.saturating_add(1);
                }
                Ok(token)
            }
            // A test has no poll: the source is counted, and its events
            // are whatever the test delivers with that token.
            #[cfg(test)]
            Back::Test { env, slot } => {
                let _ = (source, interest);
                env.next_source += 1;
                slot.rec.registered += 1;
                Ok(env.next_source)
            }
        }
    }

    /// Deregisters a source registered with [`Cx::register`].
    pub fn deregister(&mut self, source: &mut dyn mio::event::Source, token: usize) {
        match &mut self.back {
            Back::Reactor { core, sources } => {
                let _ = core.registry.deregister(source);
                if let Some(entry @ Source::Owned { .. }) = sources.get_mut(token) {
                    *entry = Source::Vacated;
                    core.dead.push(token);
                }
                if let Some(Source::Conn(c)) = sources.get_mut(self.key) {
                    c.owned_sources = c.owned_sources.saturating_sub(1);
                }
            }
            #[cfg(test)]
            Back::Test { slot, .. } => {
                let _ = (source, token);
                slot.rec.registered = slot.rec.registered.saturating_sub(1);
            }
        }
    }

    /// Where this callback's output is staged.
    pub(super) fn staged(&mut self) -> &mut super::Outbox {
        match &mut self.back {
            Back::Reactor { core, .. } => &mut core.staged,
            #[cfg(test)]
            Back::Test { slot, .. } => &mut slot.staged,
        }
    }
}
