//! The view of the other daemons' members, for `/who`, `/rooms` and
//! `/msg`: kept from the joins, departures and renames received, and
//! replaced by a fresh read from Redis at each heartbeat. Pure
//! bookkeeping, like `Rooms`.

use std::collections::{BTreeMap, HashMap};

use super::wire::Body;

/// Other daemons' members: daemon id → nick → room.
#[derive(Debug, Default)]
pub struct View {
    daemons: HashMap<String, BTreeMap<String, String>>,
}

impl View {
    /// Applies one message from daemon `from` (never this daemon's own).
    pub fn apply(&mut self, from: &str, body: &Body) {
        match body {
            Body::Joined { room, nick, .. } => {
                self.members(from).insert(nick.clone(), room.clone());
            }
            Body::Left { room, nick, .. } => {
                let members = self.members(from);
                // A `left` for a room the member already moved out of (the
                // `joined` of its new room came first) must not remove it.
                if members.get(nick) == Some(room) {
                    members.remove(nick);
                }
            }
            Body::Renamed {
                room, old, nick, ..
            } => {
                let members = self.members(from);
                members.remove(old);
                members.insert(nick.clone(), room.clone());
            }
            Body::Bye => {
                self.daemons.remove(from);
            }
            Body::Say { .. } | Body::Msg { .. } => {}
        }
    }

    /// Replaces the whole view with a fresh read from Redis.
    pub fn replace(&mut self, others: Vec<(String, Vec<(String, String)>)>) {
        self.daemons = others
            .into_iter()
            .map(|(daemon, members)| (daemon, members.into_iter().collect()))
            .collect();
    }

    /// The nicks in `room` on other daemons.
    pub fn who(&self, room: &str) -> impl Iterator<Item = &str> {
        self.daemons.values().flat_map(move |members| {
            members
                .iter()
                .filter(move |(_, r)| r.as_str() == room)
                .map(|(nick, _)| nick.as_str())
        })
    }

    /// Members per room on other daemons.
    pub fn counts(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for members in self.daemons.values() {
            for room in members.values() {
                *counts.entry(room.as_str()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The daemon whose member has `nick`.
    pub fn find(&self, nick: &str) -> Option<&str> {
        self.daemons
            .iter()
            .find(|(_, members)| members.contains_key(nick))
            .map(|(daemon, _)| daemon.as_str())
    }

    fn members(&mut self, daemon: &str) -> &mut BTreeMap<String, String> {
        self.daemons.entry(daemon.to_string()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(room: &str, nick: &str) -> Body {
        Body::Joined {
            room: room.into(),
            nick: nick.into(),
            line: String::new(),
        }
    }

    fn left(room: &str, nick: &str) -> Body {
        Body::Left {
            room: room.into(),
            nick: nick.into(),
            line: String::new(),
        }
    }

    #[test]
    fn joins_moves_and_renames_are_followed() {
        let mut v = View::default();
        v.apply("b", &joined("lobby", "bob"));
        v.apply("c", &joined("lobby", "cy"));
        assert_eq!(
            v.who("lobby")
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            2
        );
        // A move is `left` then `joined`; in either order the member ends
        // up in the new room.
        v.apply("b", &joined("rust", "bob"));
        v.apply("b", &left("lobby", "bob"));
        assert_eq!(v.who("rust").collect::<Vec<_>>(), ["bob"]);
        assert_eq!(v.who("lobby").collect::<Vec<_>>(), ["cy"]);
        v.apply(
            "b",
            &Body::Renamed {
                room: "rust".into(),
                old: "bob".into(),
                nick: "rob".into(),
                line: String::new(),
            },
        );
        assert_eq!(v.find("rob"), Some("b"));
        assert_eq!(v.find("bob"), None);
        assert_eq!(
            v.counts().into_iter().collect::<Vec<_>>(),
            [("lobby", 1), ("rust", 1)]
        );
    }

    #[test]
    fn a_daemon_saying_bye_takes_its_members_with_it() {
        let mut v = View::default();
        v.apply("b", &joined("lobby", "bob"));
        v.apply("b", &Body::Bye);
        assert_eq!(v.find("bob"), None);
        assert!(v.counts().is_empty());
    }

    #[test]
    fn a_fresh_read_replaces_everything() {
        let mut v = View::default();
        v.apply("b", &joined("lobby", "bob"));
        v.replace(vec![("c".into(), vec![("cy".into(), "rust".into())])]);
        assert_eq!(v.find("bob"), None, "b's heartbeat expired");
        assert_eq!(v.find("cy"), Some("c"));
    }
}
