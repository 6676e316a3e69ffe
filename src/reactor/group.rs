//! Several reactors side by side: what they share, and how cheaply.
//!
//! # One loop per core, sharing nothing per message
//!
//! One reactor is one thread, and a load that saturates one core
//! saturates it. nginx answers with worker processes, Seastar with one
//! reactor per core ("shared nothing"); both let the kernel spread new
//! connections over the workers with `SO_REUSEPORT`: each worker binds its
//! own socket to the same port, and the kernel hashes each new connection
//! (each datagram's 4-tuple, for UDP) to one of them. We do the same with
//! threads. Each reactor keeps its own `Poll`, slab, timers, buffers and
//! helper pool, and a connection lives and dies on the reactor that
//! accepted it, so the per-message path (read, callback, write) touches
//! nothing another thread touches.
//!
//! # What is shared, and why it is not on the per-message path
//!
//! A [`Group`] is what every reactor of a daemon holds for the reactor's
//! own business (what the services share, the throttle and the exec and
//! files state, is `services::Common`, built beside it):
//!
//! - the global and per-service connection counts, as atomics. They change
//!   once per accepted and once per closed connection, never per message;
//!   a `fetch_add` on an uncontended line costs a few nanoseconds next to
//!   the `accept()` that precedes it;
//! - the per-client counts of `limits.max_connections_per_ip` (per_ip.rs),
//!   behind a `Mutex`: taken once per accept and once per close, and not
//!   at all while the cap is off (0);
//! - each reactor's published figures, a `Mutex<Metrics>` per reactor,
//!   copied in at the end of every turn and read by the admin endpoint
//!   (on whichever reactor answers). A turn takes only its own lock,
//!   which nobody else holds except for the moment an admin request copies
//!   it out: an uncontended lock and a copy of a few hundred bytes, once
//!   per turn, not per message. Publishing less often (every 100 ms, say)
//!   would be cheaper still, but an idle reactor has no turn to publish
//!   in, and its last figures would stay stale until its next event. With
//!   one reactor nothing is published: the admin endpoint reads the live
//!   figures of the loop it runs on.
//!
//! Admission counts first and checks after (`fetch_add`, then compare), so
//! two reactors racing for the last place can both be turned away, but
//! never both admitted: a limit is never exceeded. A spurious refusal at
//! the exact limit is the price of not taking a lock per accept.
//!
//! With one reactor (the default, and the shape the guide teaches) the
//! group is the same code with nobody to contend with: no extra thread, no
//! `SO_REUSEPORT`.
//!
//! # Waking another reactor
//!
//! A reactor asleep in `poll()` hears only its own sockets. Services whose
//! state spans reactors (chat rooms) leave work for another reactor in an
//! inbox of their own and then ring it with [`Group::wake`], which pokes
//! that reactor's [`mio::Waker`] (the one its helper pool uses too). The
//! woken reactor runs a turn, and every turn gives its services a step to
//! drain what was left for them (`Services::drain_inbox`). The group only
//! hands out the bell: what the inbox holds, and when it is worth ringing
//! (once when it goes from empty to not empty, not per item), is the
//! service's business.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use std::net::IpAddr;

use super::Metrics;
use super::per_ip::PerIp;
use crate::service_id::ServiceId;

/// What the reactors of one daemon share.
pub struct Group {
    /// The global limit on open connections, over all services and
    /// reactors (`limits.max_connections`).
    max_connections: usize,
    /// Connections open now, over all services and reactors.
    open: AtomicUsize,
    /// Connections open now per service, over all reactors, indexed by
    /// `ServiceId as usize`.
    per_service: [AtomicUsize; ServiceId::ALL.len()],
    /// Each reactor's figures as last published, by reactor index.
    published: Box<[Mutex<Option<Metrics>>]>,
    /// `limits.max_connections_per_ip`; 0 = off, and `per_ip` untouched.
    per_ip_limit: usize,
    /// Connections open per client over every reactor, each counted under
    /// its reactor and token (see `client_key`).
    per_ip: Mutex<PerIp>,
    /// Each reactor's waker, by index, set once when the reactor joins
    /// (`Reactor::join`); [`Group::wake`] rings it.
    wakers: Box<[OnceLock<Arc<mio::Waker>>]>,
}

impl Group {
    /// A group of `reactors` reactors sharing one global connection limit
    /// and one per-client cap (0 = off).
    pub fn new(reactors: usize, max_connections: usize, per_ip_limit: usize) -> Group {
        Group {
            max_connections,
            open: AtomicUsize::new(0),
            per_service: std::array::from_fn(|_| AtomicUsize::new(0)),
            published: (0..reactors.max(1)).map(|_| Mutex::new(None)).collect(),
            per_ip_limit,
            per_ip: Mutex::new(PerIp::new(per_ip_limit)),
            wakers: (0..reactors.max(1)).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Wakes reactor `index` from its `poll()`, so it runs a turn and its
    /// services drain their inboxes. A reactor that has not joined yet has
    /// no bell; it drains at its first turn anyway. Costs a syscall (an
    /// `eventfd` write), so a caller rings once per batch, not per item.
    pub fn wake(&self, index: usize) {
        if let Some(waker) = self.wakers.get(index).and_then(OnceLock::get)
            && let Err(e) = waker.wake()
        {
            log::warn!("cannot wake reactor {index}: {e}");
        }
    }

    /// Records reactor `index`'s waker (called by `Reactor::join`).
    pub(super) fn set_waker(&self, index: usize, waker: Arc<mio::Waker>) {
        if let Some(slot) = self.wakers.get(index) {
            let _ = slot.set(waker);
        }
    }

    /// Counts connection `token` of reactor `index` under its client `ip`,
    /// or refuses it, counting nothing, when the client is at
    /// `limits.max_connections_per_ip`. Given back with
    /// [`Group::release_client`].
    pub fn admit_client(&self, index: usize, token: usize, ip: IpAddr) -> bool {
        if self.per_ip_limit == 0 {
            return true;
        }
        self.per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(client_key(index, token), ip)
    }

    /// Uncounts connection `token` of reactor `index`, if it was counted.
    pub fn release_client(&self, index: usize, token: usize) {
        if self.per_ip_limit == 0 {
            return;
        }
        self.per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(client_key(index, token));
    }

    /// How many reactors the group has.
    pub fn reactors(&self) -> usize {
        self.published.len()
    }

    /// Takes a place for a new connection on `service`, or refuses when the
    /// global limit or the service's own (`service_max`, 0 for none) is
    /// reached. A place taken is given back with [`Group::release`].
    pub fn try_admit(&self, service: ServiceId, service_max: usize) -> bool {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let count = &self.per_service[service as usize];
        if count.fetch_add(1, Ordering::Relaxed) >= service_max && service_max > 0 {
            count.fetch_sub(1, Ordering::Relaxed);
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back the place a closed connection held.
    pub fn release(&self, service: ServiceId) {
        self.per_service[service as usize].fetch_sub(1, Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now, over all services and reactors.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stores reactor `index`'s figures for readers on other threads.
    pub fn publish(&self, index: usize, metrics: &Metrics) {
        if let Some(slot) = self.published.get(index) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(metrics.clone());
        }
    }

    /// Every reactor's figures as last published, by index; a reactor
    /// that has not published yet (it has just started) is `None`.
    pub fn published(&self) -> Vec<Option<Metrics>> {
        self.published
            .iter()
            .map(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect()
    }
}

/// One key per connection of the daemon for `PerIp`, which knows one
/// reactor's tokens: the reactor's index in the high bits. A slab holds
/// far fewer than 2^40 entries, so keys of different reactors never meet.
fn client_key(index: usize, token: usize) -> usize {
    (index << 40) | token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_limit_holds_over_all_services() {
        let g = Group::new(2, 2, 0);
        assert!(g.try_admit(ServiceId::Echo, 0));
        assert!(g.try_admit(ServiceId::Chat, 0));
        assert!(!g.try_admit(ServiceId::Echo, 0));
        assert_eq!(g.open(), 2);
        g.release(ServiceId::Echo);
        assert!(g.try_admit(ServiceId::Discard, 0));
    }

    #[test]
    fn a_service_limit_refuses_without_holding_a_global_place() {
        let g = Group::new(1, 10, 0);
        assert!(g.try_admit(ServiceId::Echo, 1));
        assert!(!g.try_admit(ServiceId::Echo, 1));
        assert_eq!(g.open(), 1, "the refused connection gave its place back");
        assert!(g.try_admit(ServiceId::Chat, 1), "other services unaffected");
    }

    #[test]
    fn threads_racing_for_places_never_exceed_the_limit() {
        let g = std::sync::Arc::new(Group::new(4, 100, 0));
        let admitted: usize = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| g.try_admit(ServiceId::Echo, 0))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 100);
        assert_eq!(g.open(), 100);
    }

    #[test]
    fn a_client_is_counted_over_every_reactor() {
        let g = Group::new(2, 100, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(g.admit_client(0, 5, ip));
        assert!(
            g.admit_client(1, 5, ip),
            "the same token on another reactor"
        );
        assert!(!g.admit_client(1, 6, ip), "two open, on two reactors");
        g.release_client(0, 5);
        assert!(g.admit_client(1, 6, ip));
    }

    #[test]
    fn published_figures_are_read_back_by_index() {
        let g = Group::new(2, 10, 0);
        let mut m = Metrics::new(std::time::Instant::now());
        m.iterations = 7;
        g.publish(1, &m);
        let all = g.published();
        assert!(all[0].is_none());
        assert_eq!(all[1].as_ref().unwrap().iterations, 7);
    }
}
