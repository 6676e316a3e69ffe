//! Reaching the loop from outside a connection: a [`Nudge`] wakes it from
//! another thread, and a [`Post`] lets the services' shared state hand
//! output to connections during its turn.
//!
//! # Why a seam of its own
//!
//! Most of what a session sends is caused by its own connection: bytes
//! arrived, a timer fired, a job finished. Some output has no such cause
//! on this loop. A chat line said on another daemon arrives on a thread
//! that talks to Redis, and must reach this daemon's members of the room.
//! That thread may not touch the loop's state, so it leaves what it has
//! in a channel of the services' own and *nudges* the loop, which makes
//! `poll()` return (the same `mio::Waker` the helper pool uses). In the
//! turn that follows, the services' shared state gets a [`Post`] in
//! `Services::deliver` and hands the lines out: letters for connections
//! (delivered like mail from a session, after the step) and wake-ups for
//! sessions that wait on something the other thread answered.
//!
//! The reactor names no service here either: what travels in the channel,
//! and what it means, is the services' business.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use mio::Waker;

use super::timers::{Timers, Wake};

/// Wakes a loop from any thread; cheap to clone. Waking a loop that is
/// already awake costs a write to an eventfd and an extra turn at most.
#[derive(Clone)]
pub struct Nudge(Arc<Waker>);

impl Nudge {
    pub(super) fn new(waker: Arc<Waker>) -> Nudge {
        Nudge(waker)
    }

    /// Makes the loop's `poll()` return, so its next turn runs
    /// `Services::deliver`. A failure (the loop is gone) is not the
    /// caller's problem, so it is only logged.
    pub fn wake(&self) {
        if let Err(e) = self.0.wake() {
            log::debug!("cannot wake the loop: {e}");
        }
    }
}

/// What shared state may do in its turn: mail connections and wake
/// sessions. Lent to `Services::deliver` once per turn.
pub struct Post<'a> {
    pub(super) mail: &'a mut Vec<(usize, u64, Bytes)>,
    pub(super) timers: &'a mut Timers,
    pub(super) now: Instant,
    pub(super) wall: SystemTime,
}

impl Post<'_> {
    /// This turn's time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// This turn's wall-clock time.
    pub fn wall_time(&self) -> SystemTime {
        self.wall
    }

    /// Queues a shared chunk for a connection, as [`Cx::send_to`] does:
    /// delivered after this step, dropped if the connection is gone.
    ///
    /// [`Cx::send_to`]: super::Cx::send_to
    pub fn send_to(&mut self, token: usize, serial: u64, bytes: Bytes) {
        self.mail.push((token, serial, bytes));
    }

    /// Calls the session on connection `token`/`serial` back (`on_timer`)
    /// at the start of the next turn; nothing if it is gone by then.
    pub fn wake(&mut self, token: usize, serial: u64) {
        self.timers.schedule(self.now, token, serial, Wake::Session);
    }
}
