//! Accepting connections, turning them away at a limit, and surviving
//! descriptor exhaustion.
//!
//! A listener is drained up to [`ACCEPT_BATCH`] connections per turn, then
//! requeued: edge-triggered epoll does not report clients that were already
//! waiting. When `accept()` fails for lack of descriptors, the spare one
//! held by [`Reserve`](super::listener::Reserve) lets the waiting clients be
//! accepted and closed at once (listener.rs explains why libuv's trick was
//! chosen over nginx's pause).

use std::io::{self, Write};
use std::net::SocketAddr;

use mio::{Interest, Token};

use super::connection::{Connection, Phase, Stream};
use super::timers::Wake;
use super::{ACCEPT_BATCH, ACCEPT_RETRY, Reactor, Source, listener};
use crate::service_id::{self, ServiceId};

use super::trace::trace;

impl Reactor {
    pub(super) fn accept(&mut self, key: usize) {
        if self.core.shutdown.is_some() {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            // A newcomer may cost a broadcast to everyone already there (a
            // chat join tells the whole room). Past the turn's letters, the
            // rest wait for the next turn, so joins to a big room spread
            // out instead of making one turn long.
            if self.turn_spent() {
                self.requeue(key);
                return;
            }
            let Some(Source::Listener(l)) = self.sources.get(key) else {
                return;
            };
            let service = l.service;
            match l.socket.accept() {
                Ok((stream, peer)) => {
                    self.core.reserve.replenish();
                    self.admit(service, stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if listener::connection_gone(&e) => continue,
                Err(e) if listener::out_of_descriptors(&e) => {
                    self.out_of_descriptors(key, e);
                    return;
                }
                Err(e) => {
                    log::warn!("accept on {service} failed: {e}");
                    self.core
                        .timers
                        .schedule(self.core.now + ACCEPT_RETRY, key, 0, Wake::Accept);
                    return;
                }
            }
        }
        // The batch is used up; more clients may be waiting. Edge-triggered
        // epoll will not say so again, so remember it ourselves.
        self.requeue(key);
    }

    pub(super) fn out_of_descriptors(&mut self, key: usize, e: io::Error) {
        let Some(Source::Listener(l)) = self.sources.get(key) else {
            return;
        };
        let service = l.service;
        match self.core.reserve.shed(&l.socket) {
            Some(shed) => {
                log::warn!(
                    "accept on {service}: {e}; closed {shed} waiting connection(s) with the spare descriptor"
                );
                let m = self.core.metrics.service_mut(service);
                m.connections_total += shed;
                m.connections_rejected += shed;
            }
            None => {
                log::warn!("accept on {service}: {e}; pausing this listener for {ACCEPT_RETRY:?}");
                self.core
                    .timers
                    .schedule(self.core.now + ACCEPT_RETRY, key, 0, Wake::Accept);
            }
        }
    }

    /// Takes in a freshly accepted connection, or turns it away at a limit.
    pub(super) fn admit(
        &mut self,
        service: ServiceId,
        mut stream: Stream,
        peer: Option<SocketAddr>,
    ) {
        let limits = self.core.limits[service as usize];
        let counters = self.core.metrics.service_mut(service);
        counters.connections_total += 1;
        // The limits count connections on every reactor of the daemon. The
        // client's own count comes last, so a connection turned away by
        // another limit is not counted against its client; released in
        // `kill`.
        let token = self.sources.vacant_key();
        let admitted = self.core.group.try_admit(service, limits.max_connections);
        let over_per_ip = admitted
            && peer.is_some_and(|p| !self.core.group.admit_client(self.core.index, token, p.ip()));
        if over_per_ip {
            self.core.group.release(service);
        }
        if !admitted || over_per_ip {
            counters.connections_rejected += 1;
            // One best-effort write into an empty send buffer, then FIN.
            let _ = stream.write(service_id::rejection(service));
            let _ = stream.shutdown_write();
            trace!(
                self.core.trace,
                "{service} {} rejected: connection limit",
                stream.peer()
            );
            return;
        }
        counters.connections_open += 1;
        self.core.open += 1;

        if let Stream::Tcp(s) = &stream {
            // Small replies should leave at once, not wait for Nagle's
            // algorithm to gather more (see `socketlab demo`, step 8).
            let _ = s.set_nodelay(true);
        }

        let entry = self.sources.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.core.registry.register(
            stream.source(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("register {service} connection: {e}");
            self.core.group.release(service);
            self.core.group.release_client(self.core.index, key);
            self.core.open -= 1;
            self.core.metrics.service_mut(service).connections_open -= 1;
            return;
        }
        let serial = self.core.next_serial;
        self.core.next_serial += 1;
        let session = self.core.shared.open_session(service);
        trace!(
            self.core.trace,
            "#{key} {service} {} accepted",
            peer.map_or_else(|| stream.peer(), |p| p.to_string())
        );
        entry.insert(Source::Conn(Connection {
            stream,
            service,
            phase: Phase::Open,
            read_ready: false,
            write_blocked: false,
            peer_eof: false,
            paused: false,
            held: false,
            reoffer: false,
            queued: false,
            flush_listed: false,
            drain_owed: false,
            wants_drain: session.wants_output_drained(),
            fin_seen: false,
            told_close: false,
            owned_sources: 0,
            input: Vec::new(),
            outbox: None,
            session: Some(session),
            serial,
            last_active: self.core.now,
            idle_wake: None,
            stall: 0,
        }));
        if let Some(idle) = limits.idle_timeout {
            self.arm_idle(key, self.core.now + idle);
        }
        self.call(key, None, |s, cx| s.on_open(cx));
    }
}
