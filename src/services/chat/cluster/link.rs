//! The link: two threads that talk to Redis in blocking calls, so the
//! loop never does.
//!
//! ```text
//!   loop thread                link thread                 Redis
//!   (Cluster) --requests-->    commands connection  <--->  PUBLISH, SET NX, ...
//!       ^                          | starts, per connection
//!       |                          v
//!       '--events, nudge----   subscriber thread    <----  SUBSCRIBE chat:events,
//!                                                           chat:daemon:<id>
//! ```
//!
//! The loop hands requests over a bounded channel (`try_send`: a full
//! queue is the loop's business, never a wait), and the threads hand
//! events back over another, waking the loop with the nudge it gave them.
//! A subscribed Redis connection can do nothing but receive, hence two
//! connections and two threads; a crate such as `redis` in its blocking
//! mode on helper threads keeps RESP and reconnection details out of the
//! loop, at the price of two threads per daemon.
//!
//! # States
//!
//! ```text
//!    Connecting --both connections up--> Up --any command fails,---.
//!        ^  |                            |  or the subscription    |
//!        |  '--fails--.                  |  ends (Redis closed it) |
//!        |            v                  v                         |
//!        '--backoff-- Waiting <--------- Down (told once) <--------'
//! ```
//!
//! While Waiting, requests are answered at once: a room message comes back
//! as [`Event::Bounced`] (the loop delivers it locally: it was never
//! published) and a claim as unavailable. The wait doubles from
//! [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], so a dead Redis costs a
//! connection attempt every two seconds, not a busy loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Client, Connection};

use super::subscriber::Subscriber;
use super::wire::{Body, EVENTS_CHANNEL, Envelope, daemon_channel};

/// The first wait before connecting again after a failure.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long connecting, or any one command, may take before Redis counts
/// as unreachable. Longer would leave members waiting on a hung Redis.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscriber looks up from a quiet subscription: to see
/// whether it should stop, and to ping Redis so a dead peer is noticed.
pub(super) const SUBSCRIBER_POLL: Duration = Duration::from_millis(500);
/// Requests the loop may have waiting for the link thread; beyond this
/// `Cluster` holds the sender back (congestion) rather than queue more.
pub const REQUEST_QUEUE: usize = 4096;
/// Events waiting for the loop. When it is full the subscriber stops
/// reading, Redis's output buffer for it grows, and Redis's own limit
/// (`client-output-buffer-limit pubsub`) decides: that shows as a
/// subscription closed, reported like any outage.
pub const EVENT_QUEUE: usize = 16 * 1024;
/// Room messages published in one pipeline.
const PUBLISH_BATCH: usize = 512;
/// Guest numbers tried for one arrival before giving up (each one is
/// taken only if a member chose that nick with `/nick`).
pub(super) const GUEST_TRIES: usize = 16;
/// Deletes a nick's key only if this daemon holds it (`KEYS[1]` the key,
/// `ARGV[1]` our id): a release after the claim expired and another daemon
/// took the nick must not free it.
pub(super) const RELEASE_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// What the loop asks of the link.
#[derive(Debug)]
pub enum Request {
    /// Publish a room message (or `bye`) on the events channel.
    Publish(Body),
    /// Publish a private message on another daemon's channel.
    Direct { daemon: String, body: Body },
    /// Claim `nick` for a member, or a fresh `guest<K>` when `None`.
    Claim { id: u64, nick: Option<String> },
    /// Give a nick back.
    Release(String),
    /// This daemon's members, `(nick, room)`: claimed again and published
    /// as its presence (sent when the link comes up).
    Present(Vec<(String, String)>),
    /// The subscriber of connection `epoch` lost its subscription.
    Lost { epoch: u64, reason: String },
    /// The daemon is stopping: give everything back and end.
    Stop,
}

/// What the link tells the loop.
#[derive(Debug)]
pub enum Event {
    /// Both connections are up: the chat is shared.
    Up,
    /// Redis is unreachable, or the subscription ended; sent once per
    /// outage.
    Down(String),
    /// A message from the subscription (our own ones included).
    Received(Envelope),
    /// A room message that could not be published: deliver it locally.
    Bounced(Body),
    /// The answer to a claim.
    Claimed { id: u64, outcome: Claim },
    /// The other live daemons and their members `(nick, room)`.
    Snapshot(Vec<(String, Vec<(String, String)>)>),
}

/// How a claim went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The nick is this daemon's member's.
    Granted(String),
    /// Another daemon's member holds it.
    Taken,
    /// Redis could not be asked; the reason.
    Unavailable(String),
}

/// The link's figures, read by the admin endpoint's table.
#[derive(Debug, Default)]
pub struct Stats {
    /// 1 while the chat is shared, else 0.
    pub connected: AtomicU64,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
    /// Messages published.
    pub published: AtomicU64,
    /// Messages received from the subscription.
    pub received: AtomicU64,
    /// Messages known lost: sequence gaps, and room messages that could
    /// not be published (delivered locally only).
    pub dropped: AtomicU64,
    /// Subscriptions that ended while the link was up (Redis went away, or
    /// closed the subscriber over its output-buffer limit).
    pub subscriptions_lost: AtomicU64,
}

/// Wakes the loop; called after every event sent (coalesced by `Wake`).
pub type WakeFn = Arc<dyn Fn() + Send + Sync>;

/// Sends events to the loop and wakes it once per batch: the loop clears
/// `pending` before it drains, so only the first event after that wakes.
#[derive(Clone)]
pub struct Wake {
    pub(super) pending: Arc<AtomicBool>,
    wake: WakeFn,
    events: SyncSender<Event>,
}

impl Wake {
    /// False when the loop is gone.
    pub(super) fn send(&self, event: Event) -> bool {
        if self.events.send(event).is_err() {
            return false;
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            (self.wake)();
        }
        true
    }
}

/// The loop's end of the link.
pub struct Link {
    pub requests: SyncSender<Request>,
    /// Requests sent and not yet taken by the link thread: the loop
    /// counts up when it sends, the link down when it takes one.
    pub queued: Arc<AtomicUsize>,
    /// The link's events, taken only by the reactor that drives the link
    /// (a `Receiver` is not `Sync`, so every reactor's `Arc<Cluster>`
    /// needs the lock; it is never contended).
    pub events: std::sync::Mutex<Receiver<Event>>,
    /// Set by the link when it wakes the loop, cleared by the loop before
    /// it drains `events`.
    pub pending: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

/// What the link needs to know.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `redis://HOST:PORT` or `unix:/path`, as configured.
    pub address: String,
    /// This daemon's id.
    pub daemon: String,
    /// `chat.cluster_nick_ttl_s`.
    pub nick_ttl: Duration,
}

impl Link {
    /// Starts the link thread, which connects at once and counts into
    /// `stats`.
    pub fn start(config: LinkConfig, wake: WakeFn, stats: Arc<Stats>) -> Result<Link, String> {
        let client = Client::open(url_of(&config.address)).map_err(|e| e.to_string())?;
        let (requests, requests_rx) = sync_channel(REQUEST_QUEUE);
        let (events_tx, events) = sync_channel(EVENT_QUEUE);
        let pending = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let thread = LinkThread {
            client,
            config,
            requests: Requests {
                rx: requests_rx,
                queued: queued.clone(),
            },
            lost_tx: requests.clone(),
            wake: Wake {
                pending: pending.clone(),
                wake,
                events: events_tx,
            },
            stats: stats.clone(),
            claimed: Default::default(),
            seq: 0,
            epoch: 0,
        };
        let thread = std::thread::Builder::new()
            .name("chat-cluster".into())
            .spawn(move || thread.run())
            .map_err(|e| format!("cannot start the cluster link: {e}"))?;
        Ok(Link {
            requests,
            queued,
            events: std::sync::Mutex::new(events),
            pending,
            stats,
            thread: Some(thread),
        })
    }
}

impl Drop for Link {
    /// Asks the link to give back this daemon's nicks and presence, and
    /// waits for it a bounded time: a hung Redis must not hold the exit.
    fn drop(&mut self) {
        if self.requests.try_send(Request::Stop).is_err() {
            return;
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The delay before connection attempt `attempt + 1`, doubling.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = BACKOFF_FIRST
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Whether the loop has been told about the current outage: the link says
/// `Down` once per outage, however many attempts fail.
#[derive(Debug, Default)]
pub struct Outage {
    told: bool,
}

impl Outage {
    /// A failure: returns true when this one must be told.
    pub fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.told, true)
    }

    /// Connected: the next failure starts a new outage.
    pub fn over(&mut self) {
        self.told = false;
    }
}

/// `unix:/path` as the `redis` crate spells it.
pub fn url_of(address: &str) -> String {
    match address.strip_prefix("unix:") {
        Some(path) => format!("unix://{path}"),
        None => address.to_string(),
    }
}

/// Why serving a connection ended.
enum Ended {
    Stopped,
    Failed(String),
}

/// The link's end of the request queue, which keeps `Link::queued` true.
struct Requests {
    rx: Receiver<Request>,
    queued: Arc<AtomicUsize>,
}

impl Requests {
    fn recv_timeout(&self, timeout: Duration) -> Result<Request, RecvTimeoutError> {
        let r = self.rx.recv_timeout(timeout)?;
        self.taken(&r);
        Ok(r)
    }

    fn try_recv(&self) -> Option<Request> {
        let r = self.rx.try_recv().ok()?;
        self.taken(&r);
        Some(r)
    }

    /// Counts a request taken, unless the subscriber sent it (it does not
    /// count its reports in). Saturating: `Stop` is not counted either.
    fn taken(&self, r: &Request) {
        if !matches!(r, Request::Lost { .. }) {
            let _ = self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

pub(super) struct LinkThread {
    pub(super) client: Client,
    pub(super) config: LinkConfig,
    requests: Requests,
    /// Handed to each subscriber, to report its end.
    pub(super) lost_tx: SyncSender<Request>,
    pub(super) wake: Wake,
    pub(super) stats: Arc<Stats>,
    /// The nicks this daemon holds in Redis, refreshed with each heartbeat.
    pub(super) claimed: std::collections::BTreeSet<String>,
    /// The last sequence number published.
    pub(super) seq: u64,
    /// Which connection this is, so a subscriber of an older one cannot
    /// end a newer one.
    pub(super) epoch: u64,
}

impl LinkThread {
    fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut outage = Outage::default();
        loop {
            self.epoch += 1;
            let failed = match self.connect() {
                Ok((conn, stop)) => {
                    if self.epoch > 1 {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    self.stats.connected.store(1, Ordering::Relaxed);
                    log::info!("chat cluster: connected to {}", self.config.address);
                    outage.over();
                    backoff.reset();
                    if !self.wake.send(Event::Up) {
                        return;
                    }
                    let ended = self.serve(conn);
                    stop.store(true, Ordering::Release);
                    self.stats.connected.store(0, Ordering::Relaxed);
                    match ended {
                        Ended::Stopped => return,
                        Ended::Failed(reason) => reason,
                    }
                }
                Err(reason) => reason,
            };
            if outage.failed() {
                log::warn!("chat cluster: local only: {failed}");
                if !self.wake.send(Event::Down(failed)) {
                    return;
                }
            } else {
                log::debug!("chat cluster: still unreachable: {failed}");
            }
            if !self.wait(backoff.next_delay()) {
                return;
            }
        }
    }

    /// Connects the command connection and starts a subscriber on a
    /// connection of its own; returns once both are up.
    fn connect(&mut self) -> Result<(Connection, Arc<AtomicBool>), String> {
        let conn = self.command_connection()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = sync_channel(1);
        let subscriber = Subscriber {
            client: self.client.clone(),
            channels: vec![
                EVENTS_CHANNEL.to_string(),
                daemon_channel(&self.config.daemon),
            ],
            wake: self.wake.clone(),
            lost: self.lost_tx.clone(),
            stop: stop.clone(),
            stats: self.stats.clone(),
            epoch: self.epoch,
        };
        std::thread::Builder::new()
            .name("chat-cluster-sub".into())
            .spawn(move || subscriber.run(ready_tx))
            .map_err(|e| format!("cannot start the subscriber: {e}"))?;
        match ready_rx.recv_timeout(COMMAND_TIMEOUT * 2) {
            Ok(Ok(())) => Ok((conn, stop)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                stop.store(true, Ordering::Release);
                Err("subscribing timed out".into())
            }
        }
    }

    fn command_connection(&self) -> Result<Connection, String> {
        let conn = self
            .client
            .get_connection_with_timeout(COMMAND_TIMEOUT)
            .map_err(|e| describe(&e))?;
        conn.set_read_timeout(Some(COMMAND_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(COMMAND_TIMEOUT)))
            .map_err(|e| describe(&e))?;
        Ok(conn)
    }

    /// Serves requests until a command fails, the subscription ends, or
    /// the daemon stops; beats the heartbeat every third of the nick TTL.
    fn serve(&mut self, mut conn: Connection) -> Ended {
        let beat = self.config.nick_ttl / 3;
        let mut next_beat = Instant::now();
        let mut carried: Option<Request> = None;
        loop {
            if Instant::now() >= next_beat {
                if let Err(e) = self.heartbeat(&mut conn) {
                    return Ended::Failed(e);
                }
                next_beat = Instant::now() + beat;
            }
            let request = match carried.take() {
                Some(r) => r,
                None => match self
                    .requests
                    .recv_timeout(next_beat.saturating_duration_since(Instant::now()))
                {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Ended::Stopped,
                },
            };
            let result = match request {
                Request::Publish(_) | Request::Direct { .. } => {
                    let (batch, next) = self.gather(request);
                    carried = next;
                    self.publish(&mut conn, batch)
                }
                Request::Claim { id, nick } => {
                    let outcome = self.claim(&mut conn, nick.as_deref());
                    let failed = match &outcome {
                        Claim::Unavailable(e) => Some(e.clone()),
                        _ => None,
                    };
                    if !self.wake.send(Event::Claimed { id, outcome }) {
                        return Ended::Stopped;
                    }
                    failed.map_or(Ok(()), Err)
                }
                Request::Release(nick) => self.release(&mut conn, &nick),
                Request::Present(members) => self.present(&mut conn, members),
                Request::Lost { epoch, reason } if epoch == self.epoch => {
                    self.stats
                        .subscriptions_lost
                        .fetch_add(1, Ordering::Relaxed);
                    Err(reason)
                }
                Request::Lost { .. } => Ok(()),
                Request::Stop => {
                    self.give_back(&mut conn);
                    return Ended::Stopped;
                }
            };
            if let Err(e) = result {
                return Ended::Failed(e);
            }
        }
    }

    /// Takes the publishes queued behind `first`, up to a batch; returns
    /// them and the first other request, which must wait its turn.
    fn gather(&self, first: Request) -> (Vec<(String, Body)>, Option<Request>) {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Publish(body) => batch.push((EVENTS_CHANNEL.to_string(), body)),
                Request::Direct { daemon, body } => batch.push((daemon_channel(&daemon), body)),
                other => return (batch, Some(other)),
            }
            if batch.len() < PUBLISH_BATCH {
                next = self.requests.try_recv();
            }
        }
        (batch, None)
    }

    /// Waits out a backoff delay, answering requests meanwhile: nothing
    /// can be published or claimed. Returns false when the daemon stops.
    fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match self.requests.recv_timeout(left) {
                Ok(Request::Publish(body)) | Ok(Request::Direct { body, .. }) => self.bounce(body),
                Ok(Request::Claim { id, .. }) => {
                    let outcome = Claim::Unavailable("Redis is unreachable".into());
                    if !self.wake.send(Event::Claimed { id, outcome }) {
                        return false;
                    }
                }
                Ok(Request::Release(nick)) => {
                    // Expires with its TTL.
                    self.claimed.remove(&nick);
                }
                Ok(Request::Present(_)) | Ok(Request::Lost { .. }) => {}
                Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => return true,
            }
        }
    }
}

/// A Redis error as one short line.
pub(super) fn describe(e: &redis::RedisError) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or("error").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over_when_reset() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], BACKOFF_FIRST);
        assert_eq!(delays[1], BACKOFF_FIRST * 2);
        assert_eq!(delays[2], BACKOFF_FIRST * 4);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert_eq!(delays[6], BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_FIRST);
    }

    #[test]
    fn an_outage_is_told_once_however_many_attempts_fail() {
        let mut o = Outage::default();
        assert!(o.failed());
        assert!(!o.failed());
        assert!(!o.failed());
        o.over();
        assert!(o.failed(), "a new outage is told again");
    }

    #[test]
    fn unix_addresses_are_spelled_for_the_client() {
        assert_eq!(url_of("unix:/run/redis.sock"), "unix:///run/redis.sock");
        assert_eq!(url_of("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_link_to_nowhere_reports_down_once_and_bounces_room_messages() {
        // Port 1 on loopback refuses at once: no Redis needed.
        let config = LinkConfig {
            address: "redis://127.0.0.1:1".into(),
            daemon: "d-test".into(),
            nick_ttl: Duration::from_secs(3),
        };
        let link = Link::start(config, Arc::new(|| {}), Arc::default()).unwrap();
        let first = link
            .events
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(10))
            .unwrap();
        assert!(matches!(first, Event::Down(_)), "{first:?}");
        let body = Body::Say {
            room: "lobby".into(),
            line: "x\n".into(),
        };
        link.requests.send(Request::Publish(body.clone())).unwrap();
        link.requests
            .send(Request::Claim { id: 9, nick: None })
            .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match link
                .events
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
            {
                Event::Down(e) => panic!("told twice: {e}"),
                e => seen.push(e),
            }
        }
        assert!(
            matches!(&seen[0], Event::Bounced(b) if *b == body),
            "{seen:?}"
        );
        assert!(
            matches!(
                &seen[1],
                Event::Claimed {
                    id: 9,
                    outcome: Claim::Unavailable(_)
                }
            ),
            "{seen:?}"
        );
    }
}
