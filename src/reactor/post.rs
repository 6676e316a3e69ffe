//! Reaching the loop from outside a connection: a [`Nudge`] wakes it from
//! another thread, and the [`Post`](super::Post) of the drain step
//! (call.rs) lets the services' shared state hand output to connections
//! and wake sessions during its turn.
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
//! turn that follows, the services' shared state gets a `Post` in
//! `Services::drain_inbox` and hands the lines out: letters for connections
//! (delivered like mail from a session, after the step) and wake-ups for
//! sessions that wait on something the other thread answered.
//!
//! The reactor names no service here either: what travels in the channel,
//! and what it means, is the services' business.

use std::sync::Arc;

use mio::Waker;

/// Wakes a loop from any thread; cheap to clone. Waking a loop that is
/// already awake costs a write to an eventfd and an extra turn at most.
#[derive(Clone)]
pub struct Nudge(Arc<Waker>);

impl Nudge {
    pub(super) fn new(waker: Arc<Waker>) -> Nudge {
        Nudge(waker)
    }

    /// Makes the loop's `poll()` return, so its next turn runs
    /// `Services::drain_inbox`. A failure (the loop is gone) is not the
    /// caller's problem, so it is only logged.
    pub fn wake(&self) {
        if let Err(e) = self.0.wake() {
            log::debug!("cannot wake the loop: {e}");
        }
    }
}
