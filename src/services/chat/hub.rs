//! The hub: the chat state every reactor shares, and the one place where
//! a room's lines are put in order.
//!
//! # What is shared
//!
//! With `reactors = N` the kernel spreads chat connections over N event
//! loops, but a room, a nick and the member count in the welcome are the
//! daemon's (PROTOCOL.md §8). So the directory ([`Rooms`]: members, nicks,
//! rooms, per room the reactors that host its members) is one value behind
//! one `Mutex`, in a [`Hub`] every reactor's chat state points to. Each
//! reactor also owns an inbox in the hub, and keeps to itself the list of
//! the members *it* hosts per room ([`Hosted`]), which only its own
//! thread touches.
//!
//! # One order per room: the sequencer
//!
//! Where a room's lines are put in order is one enum, [`Sequencer`]:
//!
//! - [`Sequencer::Local`], one reactor: the poster's callback queues the
//!   line for every member at once, as chat always did. The order of the
//!   callbacks is the order of the lines, and nothing is locked for long
//!   or by anybody else (the directory's lock is uncontended).
//! - [`Sequencer::Inboxes`], several reactors: the poster takes the
//!   directory's lock and, under it, pushes the line (one [`Bytes`]) into
//!   the inbox of every reactor hosting a member of the room, its own
//!   included, then rings the reactors whose inbox it found empty
//!   ([`Group::wake`]). Each reactor drains its inbox at a named step of
//!   its turn (`drain_inboxes`, `Services::drain_inbox`) and queues each
//!   line for the members it hosts, through the same mailbox and write
//!   path as any chat line. Because every push for a room happens under
//!   the one lock, every inbox holds the room's lines in the same order,
//!   and every member on every reactor sees that order. The trap avoided:
//!   a poster that served its own reactor's members directly and the
//!   others through inboxes would let two reactors posting at once give
//!   their own members their own line first.
//!
//! Joins and departures travel the same way, as a [`Change`] riding with
//! their notice: a reactor adds a member to its own list of a room when it
//! drains the member's `Joined`, and removes it at its `Left`, so a member
//! hears exactly the lines sequenced between the two, whichever reactor
//! posted them.
//!
//! # Why this is not a cost per delivery
//!
//! Per line: one lock of the directory, and per hosting reactor one push
//! (a lock of that inbox, uncontended but for its own reactor's drain) and
//! at most one `eventfd` write, only when the inbox was empty. The fan-out
//! to members, one reference-count increment and one letter each, happens
//! on each member's own reactor without any lock. So N reactors cost N
//! pushes per line, not one per member, and a room of thousands costs
//! each reactor what it cost the single loop: its share of the letters.
//!
//! # Pacing across reactors
//!
//! A poster is paced by the fullest member of its room ("Bursts" in the
//! chat module docs). Members on other reactors it cannot see, so each
//! reactor publishes, at its drain step, the fullest output among the
//! members it hosts per room it served (`ChatRoom::fullest`), and keeps
//! publishing for a room until that figure is back to 0. Lines still
//! waiting in an inbox, the poster's own reactor's included, are counted
//! on top ([`Inboxes::fullest_elsewhere`], [`Inboxes::waiting`]).
//! A poster held by another reactor's figure rings that reactor
//! ([`Hub::nudge`]), so a reactor that went to sleep after writing
//! everything publishes a fresh, lower figure.
//!
//! The figure is published at the drain step, before that turn's writes,
//! so it overstates until the reactor's next turn, and a poster it holds
//! looks again only after `CONGESTION_RETRY` (5 ms). Publishing after the
//! turn's writes, and having a reactor whose figure fell wake the posters
//! it held, would hold posters less often and for less long; that is the
//! next step if two reactors' chat rates matter more than this
//! simplicity (BENCHMARKS.md, "Chat over reactors").
//!
//! # Lines put in order elsewhere
//!
//! A daemon in a chat cluster (chat/cluster) takes a room's order from
//! Redis: its sessions publish their lines instead of telling them, and
//! the reactor that drives the link hands each line that comes back to
//! the members with [`Hub::hand_to_room`]. With one reactor that is the
//! fan-out itself, from the draining loop; with several it is
//! [`Hub::deliver_sequenced`]: the line lands in the inbox of every
//! reactor hosting members of the room, which is rung, exactly like a
//! line said here, so the order Redis gave is the order of every inbox.
//! Membership changes keep going through [`Inboxes::post`] at once (their
//! notices come back from Redis like any line), since the members are
//! this daemon's. A private line goes to its one member
//! ([`Hub::hand_to`]), and the answer to a nick's claim wakes its session
//! on the member's own reactor ([`Hub::wake`], `Posted::Wake`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{MemberId, Rooms};
use crate::config::ChatConfig;
use crate::reactor::{Group, Post};

/// The chat state of the whole daemon: the directory, and where lines are
/// put in order. One per daemon, shared by every reactor's [`Hosted`] and
/// every chat session (an `Arc` each, cloned once per connection).
pub struct Hub {
    /// Every member, nick and room, on every reactor.
    directory: Mutex<Rooms>,
    sequencer: Sequencer,
}

/// Where a room's lines are put in one order (see the module docs).
pub enum Sequencer {
    /// One reactor: the poster queues the line for every member itself.
    Local,
    /// Several reactors: the poster pushes the line into the inbox of each
    /// reactor hosting the room, under the directory's lock.
    Inboxes(Inboxes),
}

/// One inbox per reactor, and the group whose wakers ring them.
pub struct Inboxes {
    boxes: Box<[Inbox]>,
    group: Arc<Group>,
}

/// What other threads (and this reactor's own sessions) left one reactor.
struct Inbox {
    /// Items in the order they were sequenced.
    queue: Mutex<Vec<Posted>>,
    /// Set by a push that found the queue empty; cleared by whoever rings
    /// the reactor for it, so a burst costs one wake-up, not one per line.
    ring: AtomicBool,
    /// Bytes of lines in `queue`, counted by a poster as already in every
    /// member's output on that reactor (see "Pacing across reactors").
    bytes: AtomicUsize,
}

/// One item of an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// A line for `room` (or none), with the membership change it carries.
    Room {
        room: String,
        change: Change,
        line: Option<Bytes>,
    },
    /// A line for one member this reactor hosts (a `/msg`).
    To { member: MemberId, line: Bytes },
    /// A wake-up for one member this reactor hosts: the answer to its
    /// nick's claim has come (chat/cluster).
    Wake { member: MemberId },
}

/// The membership change a room's line announces, applied by the member's
/// own reactor in the line's place in the room's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A line said, a rename: nobody comes or goes.
    None,
    /// The member is in the room from this line on (it hears the line).
    Joined(MemberId),
    /// The member is out of the room from this line on (it does not).
    Left(MemberId),
}

impl Hub {
    /// The hub of a daemon with one reactor: lines are fanned out by their
    /// poster ([`Sequencer::Local`]).
    pub fn local(config: &ChatConfig) -> Hub {
        Hub {
            directory: Mutex::new(Rooms::new(config, 1)),
            sequencer: Sequencer::Local,
        }
    }

    /// The hub of the reactors of `group`: every line goes through their
    /// inboxes ([`Sequencer::Inboxes`]).
    pub fn across(config: &ChatConfig, group: Arc<Group>) -> Hub {
        let reactors = group.reactors();
        Hub {
            directory: Mutex::new(Rooms::new(config, reactors)),
            sequencer: Sequencer::Inboxes(Inboxes {
                boxes: (0..reactors)
                    .map(|_| Inbox {
                        queue: Mutex::new(Vec::new()),
                        ring: AtomicBool::new(false),
                        bytes: AtomicUsize::new(0),
                    })
                    .collect(),
                group,
            }),
        }
    }

    /// The directory, locked. Held for one command's bookkeeping and its
    /// sequencing, never across a callback.
    pub fn directory(&self) -> MutexGuard<'_, Rooms> {
        // Nothing panics while the lock is held in the daemon's code; a
        // poisoned lock still holds a consistent directory.
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// Runs `f` with the directory locked, then rings every reactor whose
    /// inbox `f` left something in: the wake-ups are not made under the
    /// lock.
    pub fn locked<R>(&self, f: impl FnOnce(&mut Rooms, &Sequencer) -> R) -> R {
        let r = f(&mut self.directory(), &self.sequencer);
        if let Sequencer::Inboxes(inboxes) = &self.sequencer {
            inboxes.ring();
        }
        r
    }

    /// The seam for lines put in order elsewhere (the chat cluster's link,
    /// `cluster::Cluster::deliver`): hands `line`, already sequenced, to
    /// every member of `room` on every reactor, and returns how many there
    /// are. With [`Sequencer::Local`] the members are all this loop's and
    /// get it through `post` at once; with [`Sequencer::Inboxes`] it goes
    /// the way of [`Hub::deliver_sequenced`].
    pub fn hand_to_room(&self, post: &mut Post<'_>, room: &str, line: Bytes) -> usize {
        if let Sequencer::Inboxes(_) = &self.sequencer {
            return self.deliver_sequenced(room, line);
        }
        let dir = self.directory();
        let members = dir.members_of(room);
        for m in members {
            post.send_to(m.token, m.serial, line.clone());
        }
        members.len()
    }

    /// Pushes `line`, already sequenced, into the inbox of each reactor
    /// hosting `room` and rings them, exactly like a line said here;
    /// returns the members of the room. Callable from any thread. With
    /// [`Sequencer::Local`] there are no inboxes and nothing is delivered
    /// (see [`Hub::hand_to_room`]).
    pub fn deliver_sequenced(&self, room: &str, line: Bytes) -> usize {
        self.locked(|dir, sequencer| {
            if let Sequencer::Inboxes(inboxes) = sequencer {
                inboxes.post(dir, room, Change::None, Some(line));
            }
            dir.members_of(room).len()
        })
    }

    /// Hands `line` to one `member`, on whichever reactor it is.
    pub fn hand_to(&self, post: &mut Post<'_>, member: MemberId, line: Bytes) {
        match &self.sequencer {
            Sequencer::Local => post.send_to(member.token, member.serial, line),
            Sequencer::Inboxes(inboxes) => {
                inboxes.post_to(member, line);
                inboxes.ring();
            }
        }
    }

    /// Hands `line` to every member of the daemon; returns how many.
    pub fn hand_to_everyone(&self, post: &mut Post<'_>, line: Bytes) -> usize {
        let members: Vec<MemberId> = self.directory().member_ids().collect();
        for &m in &members {
            match &self.sequencer {
                Sequencer::Local => post.send_to(m.token, m.serial, line.clone()),
                Sequencer::Inboxes(inboxes) => inboxes.post_to(m, line.clone()),
            }
        }
        if let Sequencer::Inboxes(inboxes) = &self.sequencer {
            inboxes.ring();
        }
        members.len()
    }

    /// Wakes `member`'s session (`on_timer`) on its own reactor.
    pub fn wake(&self, post: &mut Post<'_>, member: MemberId) {
        match &self.sequencer {
            Sequencer::Local => post.wake(member.token, member.serial),
            Sequencer::Inboxes(inboxes) => inboxes.wake(member),
        }
    }

    /// Rings the other reactors hosting `room`, so they publish fresh
    /// figures for it: a poster held back by one of them asks it to look
    /// again (module docs, "Pacing across reactors").
    pub fn nudge(&self, room: &str, me: usize) {
        let Sequencer::Inboxes(inboxes) = &self.sequencer else {
            return;
        };
        let hosts: Vec<usize> = self.directory().hosts(room).collect();
        for i in hosts.into_iter().filter(|&i| i != me) {
            inboxes.group.wake(i);
        }
    }
}

impl Inboxes {
    /// Puts `line` and `change` in `room`'s order: one push into the inbox
    /// of each reactor hosting the room, and of the reactor of a member
    /// who just left it (which must hear of that, even when it hosts
    /// nobody else there). `dir` is the locked directory, so the pushes of
    /// two posters never interleave.
    pub fn post(&self, dir: &Rooms, room: &str, change: Change, line: Option<Bytes>) {
        let leaver = match change {
            Change::Left(m) => Some(m.reactor),
            Change::None | Change::Joined(_) => None,
        };
        let mut pushed = leaver.is_none();
        for i in dir.hosts(room) {
            pushed |= Some(i) == leaver;
            self.push(
                i,
                Posted::Room {
                    room: room.to_string(),
                    change,
                    line: line.clone(),
                },
            );
        }
        if !pushed && let Some(i) = leaver {
            self.push(
                i,
                Posted::Room {
                    room: room.to_string(),
                    change,
                    line,
                },
            );
        }
    }

    /// Leaves a wake-up for `member` in its reactor's inbox, and rings it:
    /// its drain wakes the session (`Posted::Wake`).
    pub fn wake(&self, member: MemberId) {
        self.push(member.reactor, Posted::Wake { member });
        self.ring();
    }

    /// Leaves `line` for `member` alone, in its reactor's inbox.
    pub fn post_to(&self, member: MemberId, line: Bytes) {
        self.push(member.reactor, Posted::To { member, line });
    }

    /// Wakes every reactor whose inbox went from empty to not empty since
    /// it was last rung.
    pub fn ring(&self) {
        for (i, inbox) in self.boxes.iter().enumerate() {
            if inbox.ring.load(Ordering::Relaxed) && inbox.ring.swap(false, Ordering::AcqRel) {
                self.group.wake(i);
            }
        }
    }

    /// Moves everything in reactor `index`'s inbox to `into`, in order.
    pub fn take(&self, index: usize, into: &mut Vec<Posted>) {
        let Some(inbox) = self.boxes.get(index) else {
            return;
        };
        let mut queue = inbox.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.is_empty() {
            return;
        }
        std::mem::swap(&mut *queue, into);
        inbox.bytes.store(0, Ordering::Relaxed);
    }

    /// How full the output of `room`'s members on the other reactors is,
    /// as they last published it, plus the lines waiting in their inboxes.
    pub fn fullest_elsewhere(&self, dir: &Rooms, room: &str, me: usize) -> usize {
        dir.hosts(room)
            .filter(|&i| i != me)
            .map(|i| dir.fullest_on(room, i) + self.waiting(i))
            .max()
            .unwrap_or(0)
    }

    /// Bytes of lines waiting in reactor `index`'s inbox.
    pub fn waiting(&self, index: usize) -> usize {
        self.boxes
            .get(index)
            .map_or(0, |b| b.bytes.load(Ordering::Relaxed))
    }

    fn push(&self, index: usize, posted: Posted) {
        let Some(inbox) = self.boxes.get(index) else {
            return;
        };
        let bytes = match &posted {
            Posted::Room { line, .. } => line.as_ref().map_or(0, Bytes::len),
            Posted::To { line, .. } => line.len(),
            Posted::Wake { .. } => 0,
        };
        let mut queue = inbox.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.is_empty() {
            inbox.ring.store(true, Ordering::Release);
        }
        queue.push(posted);
        inbox.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// One reactor's part of the chat: its place, the hub, and the members it
/// hosts per room as its inbox told it. Kept in that reactor's
/// `services::Shared`, touched only by its thread.
pub struct Hosted {
    hub: Arc<Hub>,
    /// This reactor's index in its group.
    index: usize,
    /// The members this reactor hosts, per room, in joining order; changed
    /// only by `Joined` and `Left` drained from the inbox. Unused with
    /// [`Sequencer::Local`], whose directory is this list.
    rooms: HashMap<String, Vec<MemberId>>,
    /// Rooms whose figure this reactor last published above 0: looked at
    /// again every turn until it is 0.
    watched: Vec<String>,
    /// The drained items, kept so a drain does not allocate.
    batch: Vec<Posted>,
    /// Bytes of lines delivered per room in one drain, for the figures.
    served: HashMap<String, usize>,
    /// Scratch list of members, for callers that look at each one's
    /// output while they borrow the reactor (`Hosted::members`).
    pub scratch: Vec<MemberId>,
}

impl Hosted {
    /// Reactor `index`'s part of the chat held in `hub`.
    pub fn new(hub: Arc<Hub>, index: usize) -> Hosted {
        Hosted {
            hub,
            index,
            rooms: HashMap::new(),
            watched: Vec::new(),
            batch: Vec::new(),
            served: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// This reactor's index in its group.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The members of `room` this reactor hosts (with several reactors).
    pub fn members(&self, room: &str) -> &[MemberId] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// The `drain_inboxes` step: delivers what was sequenced for this
    /// reactor's members, in order, then publishes how full their output
    /// is for the rooms it served or still watches.
    pub fn drain(&mut self, post: &mut Post<'_>) {
        let Sequencer::Inboxes(inboxes) = &self.hub.sequencer else {
            return;
        };
        inboxes.take(self.index, &mut self.batch);
        if self.batch.is_empty() && self.watched.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        for posted in batch.drain(..) {
            if let Posted::Wake { member } = posted {
                post.wake(member.token, member.serial);
                continue;
            }
            self.apply(posted, &mut |token, serial, line| {
                post.send_to(token, serial, line)
            });
        }
        self.batch = batch;
        self.publish(|m| post.pending_output_of(m.token, m.serial));
    }

    /// Applies one drained item: a membership change of a member hosted
    /// here, then its line to every member of the room hosted here.
    pub fn apply(&mut self, posted: Posted, send: &mut impl FnMut(usize, u64, Bytes)) {
        match posted {
            Posted::To { member, line } => send(member.token, member.serial, line),
            // Handled by the drain, which can wake a session.
            Posted::Wake { .. } => {}
            Posted::Room { room, change, line } => {
                match change {
                    Change::Joined(m) if m.reactor == self.index => {
                        self.rooms.entry(room.clone()).or_default().push(m);
                    }
                    Change::Left(m) if m.reactor == self.index => {
                        if let Some(members) = self.rooms.get_mut(&room) {
                            members.retain(|x| *x != m);
                            if members.is_empty() {
                                self.rooms.remove(&room);
                            }
                        }
                    }
                    _ => {}
                }
                let Some(line) = line else {
                    return;
                };
                for m in self.members(&room) {
                    send(m.token, m.serial, line.clone());
                }
                match self.served.get_mut(&room) {
                    Some(bytes) => *bytes += line.len(),
                    None => {
                        self.served.insert(room, line.len());
                    }
                }
            }
        }
    }

    /// Publishes, for every room served by this drain or still watched,
    /// the fullest output among its members hosted here (`pending` of
    /// each, plus what this drain queued for the room, which the mailbox
    /// has not delivered yet). One lock of the directory for all of them.
    fn publish(&mut self, pending: impl Fn(&MemberId) -> usize) {
        for room in self.watched.drain(..) {
            self.served.entry(room).or_insert(0);
        }
        if self.served.is_empty() {
            return;
        }
        let figures: Vec<(String, usize)> = self
            .served
            .drain()
            .map(|(room, queued)| {
                let fullest = self.rooms.get(&room).map_or(0, |members| {
                    members.iter().map(&pending).max().unwrap_or(0) + queued
                });
                (room, fullest)
            })
            .collect();
        let mut dir = self.hub.directory();
        for (room, fullest) in figures {
            dir.publish_fullest(&room, self.index, fullest);
            if fullest > 0 {
                self.watched.push(room);
            }
        }
    }
}

#[cfg(test)]
mod tests;
