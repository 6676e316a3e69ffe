//! The session's side of the cluster (cluster/mod.rs): saying a line to a
//! room through Redis, and waiting for a nick's claim.
//!
//! # Waiting for a claim
//!
//! ```text
//!   Arriving --shared: claim guest<K>--> Claiming(Arrival) --answer--> Present
//!   Present  --shared /nick N: claim N--> Claiming(Rename) --answer--> Present
//! ```
//!
//! While a claim is out, the member's input is held (`Cx::hold_input`),
//! so its later lines wait, in order, behind the `/nick`. The answer wakes
//! the session (`on_timer`); so does [`CLAIM_TIMEOUT`] if none comes.
//!
//! What happens without an answer (Redis went away, or is too slow) is a
//! choice between availability and uniqueness, and this daemon picks
//! availability, as it does for lines: the nick is given locally, unique
//! on this daemon, exactly as in local-only mode. When the link is back
//! the daemon claims its members' nicks again; one that another daemon
//! took meanwhile is logged as held twice, and both members keep it until
//! one of them leaves or renames. A nick another daemon's member holds
//! (`Taken`) is refused as `nick in use`, as a local one is.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use super::cluster::{CLAIM_TIMEOUT, Claim, wire::Body};
use super::fanout::tell;
use super::{
    Change, ChatError, Hub, Member, MemberId, Presence, Renamed, Rooms, Sequencer, Session, notice,
    reply_error,
};
use crate::services::Cx;

/// What a room line is, for the other daemons' view of who is where.
pub(super) enum Said<'a> {
    Line,
    Joined { nick: &'a str },
    Left { nick: &'a str },
    Renamed { old: &'a str, nick: &'a str },
}

/// A claim the session waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    pub what: Claiming,
    /// When the session stops waiting and falls back.
    pub deadline: Instant,
}

/// What the claim is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claiming {
    /// A guest nick for a newcomer, not yet welcomed.
    Arrival,
    /// `/nick to`, for a member present under its old nick.
    Rename { to: String },
}

impl Session {
    /// Acts on a claim's answer, or its fallback once the wait is over,
    /// and lets the held input flow again.
    pub(super) fn settle(&mut self, pending: Pending, cx: &mut Cx<'_>) {
        let Some(outcome) = answer(cx, &pending) else {
            return; // A stale wake-up: still waiting.
        };
        self.presence = Presence::Present;
        match pending.what {
            Claiming::Arrival => match outcome {
                Claim::Granted(nick) => {
                    if !self.welcome(Some(nick.clone()), cx) {
                        release(cx, &nick);
                    }
                }
                Claim::Taken | Claim::Unavailable(_) => {
                    self.welcome(None, cx);
                }
            },
            Claiming::Rename { to } => match outcome {
                Claim::Granted(_) => {
                    self.rename(cx, &to, true);
                }
                Claim::Taken => refuse_taken(cx),
                Claim::Unavailable(_) => {
                    self.rename(cx, &to, false);
                }
            },
        }
        cx.hold_input(false);
    }

    /// Renames the member to `new`, whose claim (if any) is settled, and
    /// tells the room. `claimed` says whether the cluster granted `new`,
    /// so it is given back if the rename fails here (unless a member here
    /// holds it: two members of this daemon may both have been granted it,
    /// since a claim this daemon already holds counts as won).
    pub(super) fn rename(&mut self, cx: &mut Cx<'_>, new: &str, claimed: bool) -> usize {
        let me = MemberId::of(cx);
        let posted = &mut self.posted;
        self.hub.locked(|dir, seq| {
            let Some(Member { nick, room }) = dir.member(me).cloned() else {
                return 0;
            };
            match dir.rename(me, new) {
                Ok(Renamed::Unchanged) => {
                    cx.write_shared(notice(format_args!("{nick} is now {nick}")));
                    1
                }
                Ok(Renamed::From { old }) => {
                    release(cx, &old);
                    let line = Some(notice(format_args!("{old} is now {new}")));
                    let said = Said::Renamed {
                        old: &old,
                        nick: new,
                    };
                    say(cx, seq, dir, &room, Change::None, line, posted, said)
                }
                Err(e) => {
                    if claimed && dir.find(new).is_none() {
                        release(cx, new);
                    }
                    reply_error(cx, e);
                    1
                }
            }
        })
    }
}

/// True when this daemon's chat is shared with others right now.
pub(super) fn is_shared(cx: &mut Cx<'_>) -> bool {
    cx.shared()
        .chat_cluster
        .as_ref()
        .is_some_and(|c| c.is_shared())
}

/// What a member arriving now must be told of the cluster, if anything:
/// that the chat is local only, while it is.
pub(super) fn newcomer_notice(cx: &mut Cx<'_>) -> Option<String> {
    cx.shared()
        .chat_cluster
        .as_ref()
        .and_then(|c| c.newcomer_notice())
}

/// False when the cluster's queue is full: the sender waits, as for a
/// congested room.
pub(super) fn has_room(cx: &mut Cx<'_>) -> bool {
    match &cx.shared().chat_cluster {
        Some(c) if c.is_shared() => c.has_room(),
        _ => true,
    }
}

/// Says `line` to `room` with the membership `change` it carries:
/// published when the chat is shared (and so delivered here when it comes
/// back, in Redis's order), else told as chat always does (fanout.rs).
/// Returns the letters queued here (1 for a publish).
#[allow(clippy::too_many_arguments)]
pub(super) fn say(
    cx: &mut Cx<'_>,
    seq: &Sequencer,
    dir: &Rooms,
    room: &str,
    change: Change,
    line: Option<Bytes>,
    posted: &mut usize,
    said: Said<'_>,
) -> usize {
    if let (true, Some(text)) = (is_shared(cx), &line) {
        let line = String::from_utf8_lossy(text).into_owned();
        let name = room.to_string();
        let body = match said {
            Said::Line => Body::Say { room: name, line },
            Said::Joined { nick } => Body::Joined {
                room: name,
                nick: nick.to_string(),
                line,
            },
            Said::Left { nick } => Body::Left {
                room: name,
                nick: nick.to_string(),
                line,
            },
            Said::Renamed { old, nick } => Body::Renamed {
                room: name,
                old: old.to_string(),
                nick: nick.to_string(),
                line,
            },
        };
        let published = cx
            .shared()
            .chat_cluster
            .as_ref()
            .is_some_and(|c| c.publish(body).is_ok());
        if published {
            // With several reactors, whose lists of the members they
            // host follow the inboxes, the change goes there now,
            // without its line (that comes back from Redis).
            if let (Sequencer::Inboxes(_), false) = (seq, change == Change::None) {
                tell(cx, seq, dir, room, change, None, posted);
            }
            return 1;
        }
        // Only a notice can get here (lines wait for room, `has_room`):
        // it is told here rather than lost.
        log::debug!("chat cluster: queue full, a notice to {room} stays local");
    }
    tell(cx, seq, dir, room, change, line, posted)
}

/// Sends a claim for `member`: `nick`, or a fresh guest nick. Returns the
/// pending state to wait in, or `None` if it could not be sent (the caller
/// then proceeds locally).
pub(super) fn claim(cx: &mut Cx<'_>, nick: Option<&str>, what: Claiming) -> Option<Pending> {
    let me = MemberId::of(cx);
    let deadline = cx.now() + CLAIM_TIMEOUT;
    let sent = cx
        .shared()
        .chat_cluster
        .as_mut()
        .is_some_and(|c| c.claim(me, nick));
    if !sent {
        return None;
    }
    cx.hold_input(true);
    cx.set_timer(deadline);
    Some(Pending { what, deadline })
}

/// The claim's answer, if it came, or a fallback if the wait is over;
/// `None` while still waiting (a stale wake-up).
pub(super) fn answer(cx: &mut Cx<'_>, pending: &Pending) -> Option<Claim> {
    let me = MemberId::of(cx);
    let now = cx.now();
    let cluster = cx.shared().chat_cluster.as_ref()?;
    if let Some(outcome) = cluster.take_outcome(me) {
        return Some(outcome);
    }
    if now < pending.deadline {
        return None;
    }
    cluster.abandon(me);
    log::warn!("chat cluster: no answer to a nick claim; given locally");
    Some(Claim::Unavailable("no answer".into()))
}

/// The member no longer waits (it left): a late grant is given back.
pub(super) fn abandon(cx: &mut Cx<'_>) {
    let me = MemberId::of(cx);
    if let Some(c) = cx.shared().chat_cluster.as_ref() {
        c.abandon(me);
    }
}

/// Gives a nick back to the cluster (nothing without one).
pub(super) fn release(cx: &mut Cx<'_>, nick: &str) {
    if let Some(c) = cx.shared().chat_cluster.as_ref() {
        c.release(nick);
    }
}

/// Whether a member of another daemon holds `nick`, as far as this daemon
/// knows: a `/nick` to it is refused at once.
pub(super) fn held_elsewhere(cx: &mut Cx<'_>, nick: &str) -> bool {
    cx.shared()
        .chat_cluster
        .as_ref()
        .is_some_and(|c| c.is_shared() && c.view().find(nick).is_some())
}

/// The nicks in `room` over the cluster, sorted in byte order.
pub(super) fn who(cx: &mut Cx<'_>, hub: &Hub, room: &str) -> String {
    let mut nicks: Vec<String> = hub
        .directory()
        .who(room)
        .into_iter()
        .map(str::to_string)
        .collect();
    if let Some(c) = cx.shared().chat_cluster.as_ref().filter(|c| c.is_shared()) {
        nicks.extend(c.view().who(room).map(str::to_string));
    }
    nicks.sort_unstable();
    nicks.join(" ")
}

/// Every room over the cluster with its member count, sorted by name.
pub(super) fn listing(cx: &mut Cx<'_>, hub: &Hub) -> BTreeMap<String, usize> {
    let mut rooms: BTreeMap<String, usize> = hub
        .directory()
        .listing()
        .map(|(name, n)| (name.to_string(), n))
        .collect();
    if let Some(c) = cx.shared().chat_cluster.as_ref().filter(|c| c.is_shared()) {
        for (name, n) in c.view().counts() {
            *rooms.entry(name.to_string()).or_insert(0) += n;
        }
    }
    rooms
}

/// Sends a private line to `to` on another daemon; returns false when no
/// member of the cluster has that nick.
pub(super) fn msg_elsewhere(cx: &mut Cx<'_>, to: &str, line: &Bytes) -> bool {
    let Some(cluster) = cx.shared().chat_cluster.as_ref().filter(|c| c.is_shared()) else {
        return false;
    };
    let Some(daemon) = cluster.view().find(to).map(str::to_string) else {
        return false;
    };
    let text = String::from_utf8_lossy(line).into_owned();
    if cluster.direct(&daemon, to, text).is_err() {
        log::debug!("chat cluster: queue full, a private line to {to} was dropped");
    }
    true
}

/// Refuses a claim whose nick another daemon's member holds.
pub(super) fn refuse_taken(cx: &mut Cx<'_>) {
    reply_error(cx, ChatError::NickInUse);
}
