//! One member of the chat room, and the sender's side of it.
//!
//! A member is its connection ([`Link`]: connecting, open, closed), the
//! nick the service gave it, the bytes of a line not yet complete, and the
//! sender's next line number it expects. Member 0 is also the sender, whose
//! [`Voice`] keeps what it has said and not yet written.

use std::collections::HashSet;
use std::time::Instant;

use super::super::link::Link;
use super::super::pacing::Pacer;

/// One member of the room.
pub(super) struct Member {
    pub(super) link: Link,
    /// Its nick, from the welcome line.
    pub(super) nick: Option<String>,
    /// Received bytes of a line not yet complete.
    pub(super) inbox: Vec<u8>,
    /// The sender's next line number this member expects.
    pub(super) next_seq: u64,
}

/// The sender's side (member 0): what it has said and not yet written.
pub(super) struct Voice {
    /// Lines issued so far.
    pub(super) issued: u64,
    /// Text issued but not yet accepted by the kernel.
    pub(super) outbox: Vec<u8>,
    /// Nicks the sender has seen join.
    pub(super) seen_joining: HashSet<String>,
    pub(super) pacer: Pacer,
}

impl Member {
    /// A member not yet connected.
    pub(super) fn new() -> Member {
        Member {
            link: Link::Closed,
            nick: None,
            inbox: Vec::new(),
            next_seq: 0,
        }
    }
}

impl Voice {
    /// A sender that has said nothing, paced at `rate` lines per second
    /// from `start` if given.
    pub(super) fn new(start: Instant, rate: Option<f64>) -> Voice {
        Voice {
            issued: 0,
            outbox: Vec::new(),
            seen_joining: HashSet::new(),
            pacer: Pacer::new(start, rate),
        }
    }
}
