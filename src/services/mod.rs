//! The services: one module per protocol, each a per-connection state machine.
//!
//! # The one trait
//!
//! A service is mostly a [`Session`]: the state of one connection and how it
//! reacts to what the reactor tells it. The reactor owns the socket; the
//! session never sees it. It is handed the bytes that arrived and answers by
//! writing into its context ([`Cx`]), which the reactor then flushes. Time
//! comes in as `cx.now()`, read once per loop turn. So a session is plain
//! code over bytes, testable without a network (`testing`, in test builds:
//! a harness that drives sessions over a `Shared` built from a `Config`),
//! and the reactor alone decides when to read, when to write and when to
//! stop reading.
//!
//! What services share (chat rooms, the exec key, the running-program
//! count) lives in [`Shared`], reached through `cx.shared()`, and
//! datagram services answer through [`answer_datagram`]. Each reactor
//! owns one `Shared`; what must be the daemon's rather than a loop's
//! (PROTOCOL.md §8: the throttle, exec's key and running count, the files
//! service's books) is built once, as a [`Common`], and every reactor's
//! `Shared` holds it through `Arc`s, each behind a lock or an atomic taken
//! per handshake or per request, never per message.
//!
//! The trait itself, with the order of the calls a session receives, lives
//! with the reactor (`reactor::session`), because the reactor is the one
//! that calls it: services depend on the reactor, never the reverse. The
//! reactor learns about the services through one small trait,
//! [`Services`], which [`Shared`] implements.

use std::any::Any;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::auth::SharedThrottle;
use crate::config::Config;
pub use crate::reactor::{CloseReason, Cx, Session, SourceEvent};
use crate::reactor::{Post, ServiceLimits, Services};
pub use crate::service_id::{ServiceId, rejection};

/// State the services share across connections, owned by the reactor and
/// reached through [`Cx::shared`]. Each service keeps its part in a field.
pub struct Shared {
    pub config: Config,
    /// This reactor's part of the chat, and through it the daemon's
    /// members, nicks and rooms (`chat::Hub`).
    pub chat: chat::Hosted,
    /// Failed handshakes per client address, the daemon's one table; exec
    /// and files count into it, so a client cannot try twice as often by
    /// using both, nor by landing on several reactors.
    pub throttle: Arc<SharedThrottle>,
    /// The exec service's key and running count (the daemon's) and this
    /// reactor's reaper.
    pub exec: exec::ExecShared,
    /// The files service's users, quota books and digest cache, the
    /// daemon's one copy behind a lock.
    pub files: Arc<files::FilesDaemon>,
    /// The daemon's link to the other daemons of the chat
    /// (`chat.cluster`), shared by every reactor: started by the first
    /// reactor built once it hands over its nudge (`Services::attach`),
    /// and found there by the others.
    pub chat_cluster: Option<Arc<chat::Cluster>>,
    /// True on the reactor that started the link: the one that drains its
    /// events (`drain_inbox`).
    drives_cluster: bool,
    /// That link's figures, which every reactor's admin endpoint reports.
    pub chat_cluster_stats: Option<Arc<chat::cluster::Stats>>,
    /// The daemon's one link, once the first reactor has started it (or
    /// failed to: `None`).
    chat_cluster_link: ClusterSlot,
}

/// Where the first reactor leaves the daemon's cluster link for the others.
type ClusterSlot = Arc<OnceLock<Option<Arc<chat::Cluster>>>>;

/// What the services of every reactor share: built once per daemon, before
/// any reactor, and handed to each reactor's [`Shared::joined`]. See
/// ARCHITECTURE.md ("Several reactors") for how each part is synchronised.
#[derive(Clone)]
pub struct Common {
    throttle: Arc<SharedThrottle>,
    exec: Arc<exec::ExecDaemon>,
    files: Arc<files::FilesDaemon>,
    /// The chat cluster link's figures, when `chat.cluster` is set.
    chat_cluster_stats: Option<Arc<chat::cluster::Stats>>,
    /// Set by the first reactor to start the cluster link: a daemon has
    /// one link, whatever its number of reactors.
    chat_cluster_link: ClusterSlot,
}

impl Common {
    /// With exec enabled this loads (or creates) the key file and the exec
    /// working directory, with files enabled the user store, and fails if
    /// it cannot; a disabled service touches nothing on disk.
    pub fn new(config: &Config) -> io::Result<Common> {
        Ok(Common {
            throttle: Arc::new(SharedThrottle::from_config(&config.auth)),
            exec: Arc::new(exec::ExecDaemon::new(config)?),
            files: Arc::new(files::FilesDaemon::new(config)?),
            chat_cluster_stats: config.chat.cluster.as_ref().map(|_| Arc::default()),
            chat_cluster_link: Arc::default(),
        })
    }

    /// Where exec's programs get no cgroup, makes this process the child
    /// subreaper of their descendants (exec/subreaper.rs). The daemon calls
    /// it once, at start; a process that only hosts sessions (a unit
    /// test's) must not adopt and kill children it did not start.
    pub fn become_subreaper(&self) {
        self.exec.become_subreaper();
    }
}

impl Shared {
    /// Builds shared state with a [`Common`] of its own, for a reactor
    /// that shares with no other (the test harness).
    pub fn new(config: Config) -> io::Result<Shared> {
        let common = Common::new(&config)?;
        Ok(Shared::joined(config, &common))
    }

    /// One reactor's shared state, joined to the daemon's `common`. Loads
    /// nothing: what comes from disk is in `common` already.
    pub fn joined(config: Config, common: &Common) -> Shared {
        Shared {
            chat: chat::Hosted::new(Arc::new(chat::Hub::local(&config.chat)), 0),
            throttle: Arc::clone(&common.throttle),
            exec: exec::ExecShared::joined(Arc::clone(&common.exec)),
            files: Arc::clone(&common.files),
            chat_cluster: None,
            drives_cluster: false,
            chat_cluster_stats: common.chat_cluster_stats.clone(),
            chat_cluster_link: Arc::clone(&common.chat_cluster_link),
            config,
        }
    }

    /// Makes this reactor's chat the `index`th part of the chat held in
    /// `hub`, which the daemon's reactors share (with one reactor the
    /// chat built by [`Shared::new`] is already whole).
    pub fn with_chat(mut self, hub: Arc<chat::Hub>, index: usize) -> Shared {
        self.chat = chat::Hosted::new(hub, index);
        self
    }

    /// Called once per loop turn with the turn's time, for state that
    /// needs attention without any connection's event (children being
    /// reaped after their connection left, say). Returns when it next
    /// needs a turn, so the reactor can bound its sleep.
    pub fn poll(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.exec.poll(now)
    }

    /// True while shared state still has work that must finish before the
    /// daemon may exit (children not yet reaped).
    pub fn is_busy(&self) -> bool {
        self.exec.is_busy()
    }
}

/// How the reactor reaches the services: `Reactor::new` is handed the one
/// `Shared`, and asks it for sessions, datagram answers and limits.
impl Services for Shared {
    fn open_session(&mut self, service: ServiceId) -> Box<dyn Session> {
        open_session(service, self)
    }

    fn answer_datagram(
        &self,
        service: ServiceId,
        datagram: &[u8],
        wall: SystemTime,
        reply: &mut Vec<u8>,
    ) -> bool {
        answer_datagram(service, datagram, self, wall, reply)
    }

    fn limits(&self, service: ServiceId) -> ServiceLimits {
        let c = self.config.service(service);
        ServiceLimits {
            max_connections: c.max_connections,
            idle_timeout: (c.idle_timeout_s > 0).then(|| Duration::from_secs(c.idle_timeout_s)),
            max_pending_output: c.max_pending_output,
        }
    }

    fn max_connections_per_ip(&self) -> usize {
        self.config.limits.max_connections_per_ip
    }

    fn poll(&mut self, now: Instant) -> Option<Instant> {
        Shared::poll(self, now)
    }

    fn is_busy(&self) -> bool {
        Shared::is_busy(self)
    }

    /// Starts the chat's cluster link, which needs a nudge to wake the
    /// loop that drains it, on the first reactor built (the daemon builds
    /// reactor 0 before the others, daemon.rs); every later reactor finds
    /// the same link and shares it.
    fn attach(&mut self, nudge: crate::reactor::Nudge) {
        let chat = &self.config.chat;
        let (Some(address), Some(stats), true) = (
            &chat.cluster,
            &self.chat_cluster_stats,
            chat.service.enabled,
        ) else {
            return;
        };
        let mut started = false;
        let link = self.chat_cluster_link.get_or_init(|| {
            started = true;
            let ttl = Duration::from_secs(chat.cluster_nick_ttl_s);
            match chat::Cluster::start(address, ttl, nudge, Arc::clone(stats)) {
                Ok(cluster) => Some(Arc::new(cluster)),
                Err(e) => {
                    log::error!("chat cluster: cannot start, chat stays local: {e}");
                    None
                }
            }
        });
        self.chat_cluster = link.clone();
        self.drives_cluster = started;
    }

    /// The cluster's lines first (on the reactor that drives the link), so
    /// those it leaves in this reactor's own inbox go out in this turn.
    fn drain_inbox(&mut self, post: &mut Post<'_>) {
        if self.drives_cluster
            && let Some(cluster) = &self.chat_cluster
        {
            cluster.deliver(self.chat.hub(), post);
        }
        self.chat.drain(post);
    }
}

impl Cx<'_> {
    /// What the services share (chat rooms, the exec key, the throttle).
    pub fn shared(&mut self) -> &mut Shared {
        let services: &mut dyn Any = self.services();
        // The daemon builds its reactor with `Shared`, so this holds for
        // every session it runs.
        services
            .downcast_mut::<Shared>()
            .expect("the reactor hosts services::Shared")
    }
}

/// Creates the session for a connection just accepted on `service`.
pub fn open_session(service: ServiceId, shared: &mut Shared) -> Box<dyn Session> {
    match service {
        ServiceId::Echo => echo::session(shared.config.echo.mode),
        ServiceId::Discard => Box::new(discard::Session),
        ServiceId::Chargen => Box::new(chargen::Session::default()),
        ServiceId::Daytime => Box::new(daytime::Session),
        ServiceId::Admin => Box::new(admin::Session::default()),
        ServiceId::Chat => Box::new(chat::Session::new(
            shared.config.chat.max_line,
            shared.chat.hub().clone(),
        )),
        ServiceId::Exec => Box::new(exec::Session::new(shared.config.frames.max_header)),
        ServiceId::Files => Box::new(files::Session::new(shared.config.frames.max_header)),
    }
}

/// Whether the daemon hosts this service yet; unimplemented services are
/// not bound and do not appear in the ready file.
pub fn is_implemented(service: ServiceId) -> bool {
    matches!(
        service,
        ServiceId::Admin
            | ServiceId::Echo
            | ServiceId::Discard
            | ServiceId::Chargen
            | ServiceId::Daytime
            | ServiceId::Chat
            | ServiceId::Exec
            | ServiceId::Files
    )
}

/// Answers one datagram for a UDP service. Writes the reply into `reply`
/// and returns true when there is one (discard never answers).
pub fn answer_datagram(
    service: ServiceId,
    datagram: &[u8],
    shared: &Shared,
    wall: std::time::SystemTime,
    reply: &mut Vec<u8>,
) -> bool {
    match service {
        ServiceId::Echo => echo::answer_datagram(shared.config.echo.mode, datagram, wall, reply),
        ServiceId::Daytime => daytime::answer_datagram(datagram, wall, reply),
        _ => false,
    }
}

pub mod admin;
pub mod chargen;
pub mod chat;
pub mod clock;
pub mod daytime;
pub mod discard;
pub mod echo;
pub mod exec;
pub mod files;
#[cfg(test)]
pub mod testing;
