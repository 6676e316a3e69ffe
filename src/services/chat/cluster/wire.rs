//! What crosses Redis: the channel and key names, and the one message
//! format every channel carries. Pure: text in, values out.
//!
//! # Format
//!
//! Every message is one JSON object, an [`Envelope`]: the daemon that
//! sent it, that daemon's sequence number for it (1, 2, 3, ... over the
//! life of its link), and what happened, tagged by `kind`:
//!
//! ```text
//! {"from":"d-3fa9c1e2b0a4d5f6","seq":41,"kind":"say","room":"lobby",
//!  "line":"2026-11-03 09:05:01 ada: hello\n"}
//! {"from":"d-...","seq":42,"kind":"joined","room":"rust","nick":"ada","line":"* ada joined rust\n"}
//! {"from":"d-...","seq":43,"kind":"left","room":"lobby","nick":"ada","line":"* ada left lobby\n"}
//! {"from":"d-...","seq":44,"kind":"renamed","room":"rust","old":"guest3","nick":"ada","line":"* guest3 is now ada\n"}
//! {"from":"d-...","seq":45,"kind":"msg","to":"bob","line":"2026-11-03 09:05:09 ada -> bob: hi\n"}
//! {"from":"d-...","seq":46,"kind":"bye"}
//! ```
//!
//! The line is sent formatted, exactly as members receive it, so every
//! daemon shows the same stamp (the sender's clock) and formats nothing.
//! `joined`, `left` and `renamed` also say who, so other daemons can keep
//! their view of this daemon's members for `/who`, `/rooms` and `/msg`.
//! `msg` travels on the addressee's daemon channel, all others on the one
//! events channel; `bye` says a daemon is stopping and its members are gone.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The channel every daemon subscribes to: lines, notices and presence.
pub const EVENTS_CHANNEL: &str = "chat:events";
/// Which daemons are (or were lately) in the cluster: a set of ids.
pub const DAEMONS_KEY: &str = "chat:daemons";
/// The counter guest nicks are numbered from, so `guest<K>` is unique over
/// the cluster as it is over one daemon.
pub const GUEST_COUNTER_KEY: &str = "chat:next_guest";

/// The channel of one daemon: private messages to its members.
pub fn daemon_channel(daemon: &str) -> String {
    format!("chat:daemon:{daemon}")
}

/// Who holds a nick: the holder's daemon id, with a TTL.
pub fn nick_key(nick: &str) -> String {
    format!("chat:nick:{nick}")
}

/// A daemon's heartbeat: present, with a TTL, while the daemon lives.
pub fn alive_key(daemon: &str) -> String {
    format!("chat:alive:{daemon}")
}

/// A daemon's members: a hash from nick to room.
pub fn members_key(daemon: &str) -> String {
    format!("chat:members:{daemon}")
}

/// One message on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending daemon's id.
    pub from: String,
    /// The sender's count of messages published, from 1; a gap in what
    /// one subscriber sees from one sender is a lost message.
    pub seq: u64,
    #[serde(flatten)]
    pub body: Body,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    /// A line said to a room.
    Say { room: String, line: String },
    /// `nick` arrived in (or moved to) `room`.
    Joined {
        room: String,
        nick: String,
        line: String,
    },
    /// `nick` left `room` (for another room, or the chat).
    Left {
        room: String,
        nick: String,
        line: String,
    },
    /// `old` in `room` is now `nick`.
    Renamed {
        room: String,
        old: String,
        nick: String,
        line: String,
    },
    /// A private line for `to`, a member of the receiving daemon.
    Msg { to: String, line: String },
    /// The sending daemon is stopping: its members are gone.
    Bye,
}

impl Body {
    /// The room whose members receive the line, for room messages.
    pub fn room(&self) -> Option<&str> {
        match self {
            Body::Say { room, .. }
            | Body::Joined { room, .. }
            | Body::Left { room, .. }
            | Body::Renamed { room, .. } => Some(room),
            Body::Msg { .. } | Body::Bye => None,
        }
    }

    /// The text members receive, `\n` included.
    pub fn line(&self) -> Option<&str> {
        match self {
            Body::Say { line, .. }
            | Body::Joined { line, .. }
            | Body::Left { line, .. }
            | Body::Renamed { line, .. }
            | Body::Msg { line, .. } => Some(line),
            Body::Bye => None,
        }
    }
}

impl Envelope {
    /// The message as published.
    pub fn encode(&self) -> String {
        // Strings and numbers only: serializing cannot fail.
        serde_json::to_string(self).expect("an envelope serializes")
    }

    /// A message as received; anything else (another program publishing
    /// on our channel) is an error the caller logs and skips.
    pub fn decode(payload: &[u8]) -> Result<Envelope, String> {
        serde_json::from_slice(payload).map_err(|e| format!("not a chat message: {e}"))
    }
}

/// Counts the messages a subscriber missed, from each sender's sequence
/// numbers. Forgotten at each new subscription: what was published while
/// this daemon was not subscribed was never on its way to it.
#[derive(Debug, Default)]
pub struct Gaps {
    /// The last sequence number seen from each sender.
    last: HashMap<String, u64>,
}

impl Gaps {
    /// Notes a message; returns how many of the sender's messages were
    /// skipped before it (0 for the first seen from a sender: it may have
    /// published before we subscribed).
    pub fn observe(&mut self, from: &str, seq: u64) -> u64 {
        match self.last.get_mut(from) {
            Some(last) => {
                let missed = seq.saturating_sub(*last + 1);
                *last = (*last).max(seq);
                missed
            }
            None => {
                self.last.insert(from.to_string(), seq);
                0
            }
        }
    }

    /// Forgets a sender (it said `bye`).
    pub fn forget(&mut self, from: &str) {
        self.last.remove(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(body: Body) -> Envelope {
        Envelope {
            from: "d-1".into(),
            seq: 7,
            body,
        }
    }

    #[test]
    fn every_kind_survives_encoding() {
        let bodies = [
            Body::Say {
                room: "lobby".into(),
                line: "2026-11-03 09:05:01 ada: hi \"there\" é\n".into(),
            },
            Body::Joined {
                room: "rust".into(),
                nick: "ada".into(),
                line: "* ada joined rust\n".into(),
            },
            Body::Left {
                room: "lobby".into(),
                nick: "ada".into(),
                line: "* ada left lobby (idle)\n".into(),
            },
            Body::Renamed {
                room: "rust".into(),
                old: "guest3".into(),
                nick: "ada".into(),
                line: "* guest3 is now ada\n".into(),
            },
            Body::Msg {
                to: "bob".into(),
                line: "2026 ada -> bob: x\n".into(),
            },
            Body::Bye,
        ];
        for body in bodies {
            let e = envelope(body);
            assert_eq!(Envelope::decode(e.encode().as_bytes()), Ok(e));
        }
    }

    #[test]
    fn the_format_is_the_documented_one() {
        let e = envelope(Body::Say {
            room: "lobby".into(),
            line: "x\n".into(),
        });
        assert_eq!(
            e.encode(),
            r#"{"from":"d-1","seq":7,"kind":"say","room":"lobby","line":"x\n"}"#
        );
        assert_eq!(
            envelope(Body::Bye).encode(),
            r#"{"from":"d-1","seq":7,"kind":"bye"}"#
        );
    }

    #[test]
    fn foreign_payloads_are_refused_not_fatal() {
        for bad in [
            &b"hello"[..],
            b"{}",
            b"{\"from\":\"x\",\"seq\":1,\"kind\":\"nope\"}",
            b"\xff",
        ] {
            assert!(Envelope::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gaps_count_skipped_sequence_numbers_per_sender() {
        let mut gaps = Gaps::default();
        assert_eq!(gaps.observe("a", 5), 0, "the first seen starts the count");
        assert_eq!(gaps.observe("a", 6), 0);
        assert_eq!(gaps.observe("b", 1), 0);
        assert_eq!(gaps.observe("a", 9), 2, "7 and 8 were lost");
        assert_eq!(gaps.observe("b", 2), 0);
        gaps.forget("a");
        assert_eq!(gaps.observe("a", 1), 0, "a restarted sender starts over");
    }

    #[test]
    fn names_follow_the_documented_keys() {
        assert_eq!(nick_key("ada"), "chat:nick:ada");
        assert_eq!(daemon_channel("d-1"), "chat:daemon:d-1");
        assert_eq!(alive_key("d-1"), "chat:alive:d-1");
        assert_eq!(members_key("d-1"), "chat:members:d-1");
    }
}
