//! The chat cluster: daemons that share one Redis form one chat
//! (`chat.cluster`, PROTOCOL.md §8).
//!
//! # One order per room, given by Redis
//!
//! Two daemons each have members in `lobby`. If each delivered its own
//! members' lines at once and forwarded them to the other, members on
//! different daemons could see two lines in different orders: each sees
//! its own daemon's line first. So a daemon that shares its chat does not
//! deliver a line when it is said. It publishes it to Redis, and delivers
//! it to its own members of the room when it comes back from its
//! subscription, like every other daemon. Redis handles one command at a
//! time, so the order in which it relays the lines is the one order every
//! member sees. The price is a round trip to Redis before the sender sees
//! its own line (a fraction of a millisecond on one machine; see
//! BENCHMARKS.md).
//!
//! # Channels: one for the chat, one per daemon
//!
//! Every room message (said lines, joins, departures, renames) goes on one
//! channel, `chat:events`, to which every daemon subscribes. One channel
//! per room would spare a daemon the lines of rooms where it has nobody,
//! but a daemon would then have to subscribe when a member enters a room
//! and unsubscribe when the last one leaves, and a line said just before
//! the subscription took effect would be lost to the newcomer: a race that
//! one channel does not have. A daemon also needs every join and departure
//! anyway, for `/who`, `/rooms` and `/msg`. A chat of a few daemons is far
//! from the load where the extra lines matter (BENCHMARKS.md gives Redis's
//! own pub/sub throughput, the ceiling here). Private messages go on the
//! addressee's daemon's channel, `chat:daemon:<id>`, so they reach no other
//! daemon.
//!
//! # At most once
//!
//! Redis pub/sub forgets a message once it has handed it to the
//! subscribers connected at that moment. A daemon that is disconnected, or
//! so slow that Redis drops it over its pubsub output-buffer limit, misses
//! what was published meanwhile, and nothing resends it. Each message
//! carries its sender's sequence number, so a receiver counts the gaps it
//! sees (the `dropped` figure, and a log line); a subscription that Redis
//! closes is reported like an outage. Delivery that survives that needs a
//! log, not a relay: Redis Streams with consumer groups, or a broker such
//! as NATS JetStream or Kafka (docs/protocol-notes.md).
//!
//! # Local only, and shared again
//!
//! ```text
//!   Starting --link up------------------------------------> Shared
//!      |                                                  |    ^
//!      '--link down--> Local  <--link down: "* chat is ---'    |
//!                        |       local only: <reason>"         |
//!                        '--link up: "* chat is shared again"--'
//! ```
//!
//! While the link is down (Redis unreachable, or the subscription lost),
//! a daemon's rooms are its own: lines are delivered at once, as without a
//! cluster, and its members are told once (a member arriving meanwhile, after
//! its welcome: `Mode::newcomer_notice`). A line in flight when the link
//! failed comes back unpublished and is delivered here only. When the link
//! is back, the daemon claims its members' nicks again and publishes its
//! presence again; members are told the chat is shared again.
//!
//! # Nicks
//!
//! A nick is the cluster's: a daemon claims it in Redis
//! (`SET chat:nick:<n> <daemon> NX EX <ttl>`) before giving it to a
//! member, refreshes its claims every third of `chat.cluster_nick_ttl_s`,
//! and gives them back when a member leaves or renames. A daemon that dies
//! loses its nicks when their TTL runs out. A claim is a round trip, so
//! the session waits for it (its input held) without blocking the loop;
//! see `session.rs` for what it does when the answer does not come.
//!
//! # Who is where
//!
//! Each daemon keeps its members in a Redis hash (`chat:members:<id>`) and
//! beats a heartbeat (`chat:alive:<id>`, with the same TTL). Other daemons
//! keep a view of it, updated by every join, departure and rename they
//! receive and replaced by a fresh read at each heartbeat, when daemons
//! whose heartbeat expired are cleared away. `/who`, `/rooms` and `/msg`
//! read that view, so they cost no round trip; the view may lag a
//! departure by one heartbeat when a daemon dies.
//!
//! # Several reactors
//!
//! A daemon has one link and one [`Cluster`], whatever its number of
//! reactors: every reactor's sessions publish through it, claim through
//! it and read its view, and the reactor that started it (the first one
//! built) drains what the link received. It hands lines out through the
//! hub (`Hub::hand_to_room`, hub.rs "Lines put in order elsewhere"): to
//! its own members directly when it is the daemon's only reactor, else
//! into the inbox of every reactor hosting the room, so each reactor's
//! members get the room's lines in the order Redis relayed them. A claim's
//! answer wakes the member on its own reactor (`Hub::wake`).

mod calls;
mod link;
mod subscriber;
mod view;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use super::hub::Hub;
use super::rooms::MemberId;
use crate::reactor::{Nudge, Post};
pub use link::{BACKOFF_MAX, COMMAND_TIMEOUT, Claim, EVENT_QUEUE, REQUEST_QUEUE, Stats};
use link::{Event, Link, LinkConfig, Request};
pub use view::View;
use wire::Body;

/// How long a member waits for a nick claim before the session falls back
/// (`session.rs`): as long as the link waits for one command, and a bit.
pub const CLAIM_TIMEOUT: Duration = Duration::from_millis(2_500);

/// Letters one turn may deliver from the cluster before the rest waits
/// for the next turn, so a burst from Redis cannot monopolise the loop
/// (the same budget as a session's callback).
const DELIVERY_BUDGET: usize = super::FANOUT_BUDGET;

/// Whether this daemon's chat is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Not yet connected: local, and nobody told.
    Starting,
    /// Lines go through Redis.
    Shared,
    /// Redis unreachable: lines stay here. The reason members were given.
    Local(String),
}

impl Mode {
    /// The link came up; returns the notice for every member, if any.
    pub fn up(&mut self) -> Option<String> {
        match std::mem::replace(self, Mode::Shared) {
            Mode::Local(_) => Some("* chat is shared again\n".to_string()),
            Mode::Starting | Mode::Shared => None,
        }
    }

    /// The notice for a member arriving now: while the chat is local only
    /// it is told so, as the members already here were.
    pub fn newcomer_notice(&self) -> Option<String> {
        match self {
            Mode::Local(reason) => Some(format!("* chat is local only: {reason}\n")),
            Mode::Starting | Mode::Shared => None,
        }
    }

    /// The link went down; returns the notice for every member, if any.
    pub fn down(&mut self, reason: &str) -> Option<String> {
        match self {
            Mode::Local(_) => None,
            Mode::Starting | Mode::Shared => {
                *self = Mode::Local(reason.to_string());
                Some(format!("* chat is local only: {reason}\n"))
            }
        }
    }
}

/// The request queue is full: the sender waits (see "Bursts" in the chat
/// module: this is the cluster's form of a congested room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Congested;

/// The daemon's side of the cluster: one per daemon, shared by every
/// reactor (`Arc<Cluster>` in each reactor's `services::Shared`).
///
/// Every reactor's sessions publish through it, claim nicks through it
/// and read its view; the reactor that started the link (the first one
/// built) is the only one that drains the link's events, with
/// [`Cluster::deliver`]. What a session touches per line is the request
/// channel and two atomics; the locks (mode, view, claims) are taken for
/// a claim, a `/who`, a `/rooms`, a `/msg`, and by the draining reactor,
/// and never while another lock is held, so they cannot deadlock with the
/// hub's directory.
pub struct Cluster {
    /// This daemon's id in the cluster, random per start.
    me: String,
    link: Link,
    /// Whether lines go through Redis now: `mode == Shared`, read once per
    /// line said, so it is an atomic of its own.
    shared: AtomicBool,
    mode: Mutex<Mode>,
    /// The other daemons' members.
    view: Mutex<View>,
    /// The next claim's id.
    next_claim: AtomicU64,
    /// Claims sent and not yet answered, and answers not yet taken.
    claims: Mutex<Claims>,
    /// Wakes the reactor that drives the link again when a turn leaves
    /// events behind: the drain step runs after the turn's sleep was
    /// decided, so asking for a turn through `Services::poll` would come
    /// a turn late.
    nudge: Nudge,
}

/// Nick claims in flight, whoever's reactor their member is on.
#[derive(Default)]
struct Claims {
    /// Claims sent and not yet answered, by id.
    sent: HashMap<u64, MemberId>,
    /// Answers waiting for their session's `on_timer`.
    outcomes: HashMap<MemberId, Claim>,
}

impl Cluster {
    /// Starts the link to `address`; the chat is local until it is up.
    /// `nudge` wakes the reactor that will drain the link.
    pub fn start(
        address: &str,
        nick_ttl: Duration,
        nudge: Nudge,
        stats: std::sync::Arc<Stats>,
    ) -> Result<Cluster, String> {
        let me = daemon_id();
        let config = LinkConfig {
            address: address.to_string(),
            daemon: me.clone(),
            nick_ttl,
        };
        let waker = nudge.clone();
        let link = Link::start(config, std::sync::Arc::new(move || waker.wake()), stats)?;
        log::info!("chat cluster: this daemon is {me}, on {address}");
        Ok(Cluster {
            me,
            link,
            shared: AtomicBool::new(false),
            mode: Mutex::new(Mode::Starting),
            view: Mutex::new(View::default()),
            next_claim: AtomicU64::new(1),
            claims: Mutex::new(Claims::default()),
            nudge,
        })
    }

    /// True while lines go through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    /// What a member arriving now is told of the chat's mode, if anything
    /// ([`Mode::newcomer_notice`]).
    pub fn newcomer_notice(&self) -> Option<String> {
        lock(&self.mode).newcomer_notice()
    }

    /// The link's figures.
    pub fn stats(&self) -> &Stats {
        &self.link.stats
    }

    /// Whether the link's queue can take a line now.
    pub fn has_room(&self) -> bool {
        self.link.queued.load(Ordering::Acquire) < REQUEST_QUEUE
    }

    /// Publishes a room message; it is delivered here when it comes back.
    pub fn publish(&self, body: Body) -> Result<(), Congested> {
        self.send(Request::Publish(body)).map_err(|_| Congested)
    }

    /// Sends a private line to `to`, a member of `daemon`.
    pub fn direct(&self, daemon: &str, to: &str, line: String) -> Result<(), Congested> {
        let body = Body::Msg {
            to: to.to_string(),
            line,
        };
        self.send(Request::Direct {
            daemon: daemon.to_string(),
            body,
        })
        .map_err(|_| Congested)
    }

    /// Asks for `nick` (a fresh guest nick when `None`) for `member`; false
    /// when the request could not even be queued.
    pub fn claim(&self, member: MemberId, nick: Option<&str>) -> bool {
        let id = self.next_claim.fetch_add(1, Ordering::Relaxed);
        // On the books before it is sent: the answer may be handed out by
        // another reactor before this call returns.
        lock(&self.claims).sent.insert(id, member);
        let request = Request::Claim {
            id,
            nick: nick.map(str::to_string),
        };
        if self.send(request).is_err() {
            lock(&self.claims).sent.remove(&id);
            return false;
        }
        true
    }

    /// The answer to `member`'s claim, once it has come.
    pub fn take_outcome(&self, member: MemberId) -> Option<Claim> {
        lock(&self.claims).outcomes.remove(&member)
    }

    /// `member` stopped waiting (it timed out, or left): a late grant is
    /// given back.
    pub fn abandon(&self, member: MemberId) {
        let late = {
            let mut claims = lock(&self.claims);
            claims.sent.retain(|_, m| *m != member);
            claims.outcomes.remove(&member)
        };
        if let Some(Claim::Granted(nick)) = late {
            self.release(&nick);
        }
    }

    /// Gives a nick back. A full queue loses the release: the claim then
    /// lapses with its TTL.
    pub fn release(&self, nick: &str) {
        let _ = self.send(Request::Release(nick.to_string()));
    }

    /// The other daemons' members, locked for one look.
    pub fn view(&self) -> MutexGuard<'_, View> {
        lock(&self.view)
    }

    /// Hands out what the link received: lines to this daemon's members of
    /// their room, claims' answers to their sessions, and the notices of
    /// the link going down or up to everyone, through the hub, which
    /// reaches members on every reactor (`Hub::hand_to_room`). At most
    /// `DELIVERY_BUDGET` letters a turn. Runs on the reactor that started
    /// the link, the only one that calls it.
    pub fn deliver(&self, hub: &Hub, post: &mut Post<'_>) {
        self.link.pending.store(false, Ordering::Release);
        let events = lock(&self.link.events);
        let mut letters = 0;
        while letters < DELIVERY_BUDGET {
            let Ok(event) = events.try_recv() else {
                return;
            };
            letters += match event {
                Event::Up => {
                    let notice = lock(&self.mode).up();
                    self.shared.store(true, Ordering::Release);
                    let present = hub
                        .directory()
                        .members()
                        .map(|m| (m.nick.clone(), m.room.clone()))
                        .collect();
                    let _ = self.send(Request::Present(present));
                    notice.map_or(0, |n| hub.hand_to_everyone(post, Bytes::from(n)))
                }
                Event::Down(reason) => {
                    *lock(&self.view) = View::default();
                    self.shared.store(false, Ordering::Release);
                    let notice = lock(&self.mode).down(&reason);
                    notice.map_or(0, |n| hub.hand_to_everyone(post, Bytes::from(n)))
                }
                Event::Received(envelope) => {
                    if envelope.from != self.me {
                        lock(&self.view).apply(&envelope.from, &envelope.body);
                    }
                    hand_out(hub, post, &envelope.body)
                }
                Event::Bounced(body) => hand_out(hub, post, &body),
                Event::Claimed { id, outcome } => {
                    let mut claims = lock(&self.claims);
                    match claims.sent.remove(&id) {
                        Some(member) => {
                            claims.outcomes.insert(member, outcome);
                            drop(claims);
                            hub.wake(post, member);
                        }
                        None => {
                            drop(claims);
                            if let Claim::Granted(nick) = outcome {
                                self.release(&nick);
                            }
                        }
                    }
                    0
                }
                Event::Snapshot(others) => {
                    if self.is_shared() {
                        lock(&self.view).replace(others);
                    }
                    0
                }
            };
        }
        // Events left for the next turn, which this makes come at once.
        self.nudge.wake();
    }

    fn send(&self, request: Request) -> Result<(), ()> {
        self.link.queued.fetch_add(1, Ordering::AcqRel);
        match self.link.requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.link.queued.fetch_sub(1, Ordering::AcqRel);
                Err(())
            }
        }
    }
}

/// Locks one of the cluster's tables. Nothing panics while one is held;
/// a poisoned lock still holds a consistent table.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands a message's line to its recipients in this daemon: the members
/// of its room, or the addressee of a private line, on whichever reactor
/// each is. Returns the letters it makes.
fn hand_out(hub: &Hub, post: &mut Post<'_>, body: &Body) -> usize {
    let Some(line) = body.line() else {
        return 0;
    };
    let line = Bytes::copy_from_slice(line.as_bytes());
    match body {
        Body::Msg { to, .. } => {
            let found = hub.directory().find(to);
            found.map_or(0, |id| {
                hub.hand_to(post, id, line);
                1
            })
        }
        _ => body
            .room()
            .map_or(0, |room| hub.hand_to_room(post, room, line)),
    }
}

/// A fresh id for this daemon: `d-` and 16 hex digits of randomness, so
/// two starts never share one (a restarted daemon must not inherit the
/// claims its previous life left to expire).
fn daemon_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: the process id and the time still tell starts apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_be_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("d-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_told_once_per_outage_and_once_when_it_ends() {
        let mut mode = Mode::Starting;
        assert_eq!(mode.up(), None, "the first connection is not news");
        assert_eq!(
            mode.down("connection refused").as_deref(),
            Some("* chat is local only: connection refused\n")
        );
        assert_eq!(mode.down("still refused"), None, "told once");
        assert_eq!(mode.up().as_deref(), Some("* chat is shared again\n"));
        assert_eq!(mode.up(), None);
    }

    #[test]
    fn a_newcomer_is_told_only_while_the_chat_is_local() {
        let mut mode = Mode::Starting;
        assert_eq!(mode.newcomer_notice(), None, "nobody is told yet");
        mode.down("refused");
        assert_eq!(
            mode.newcomer_notice().as_deref(),
            Some("* chat is local only: refused\n")
        );
        mode.up();
        assert_eq!(mode.newcomer_notice(), None);
    }

    #[test]
    fn a_daemon_that_never_connects_tells_its_members_once() {
        let mut mode = Mode::Starting;
        assert!(mode.down("refused").is_some());
        assert_eq!(mode, Mode::Local("refused".into()));
    }

    #[test]
    fn daemon_ids_differ_between_starts() {
        let (a, b) = (daemon_id(), daemon_id());
        assert_ne!(a, b);
        assert!(a.starts_with("d-") && a.len() == 18, "{a}");
    }
}
