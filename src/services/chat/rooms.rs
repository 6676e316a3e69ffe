//! Rooms: the directory all chat sessions share (members in joining order
//! per room, a nick index), over every reactor of the daemon. It lives in
//! the [`Hub`](super::Hub), behind its lock; this file is pure
//! bookkeeping, so its rules are tested without a network or a thread.

use std::collections::{BTreeMap, HashMap};

use super::{ChatError, LOBBY};
use crate::config::ChatConfig;
use crate::services::Cx;

/// One member, named by its connection: the reactor that hosts it, the
/// token that finds it there, and the serial that tells it apart from a
/// later connection reusing the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId {
    pub reactor: usize,
    pub token: usize,
    pub serial: u64,
}

impl MemberId {
    /// The member on the connection `cx` belongs to.
    pub fn of(cx: &mut Cx<'_>) -> MemberId {
        MemberId {
            reactor: cx.shared().chat.index(),
            token: cx.token(),
            serial: cx.serial(),
        }
    }
}

/// Every member, every nick and every room of the daemon, on every
/// reactor, kept in the [`Hub`](super::Hub). Pure bookkeeping: it
/// decides, the session sends.
#[derive(Debug)]
pub struct Rooms {
    /// Reactors in the daemon; each room counts its members per reactor.
    reactors: usize,
    /// Every member present, by connection. A member is added on arrival
    /// and removed when it leaves, however it leaves.
    members: HashMap<MemberId, Member>,
    /// Who holds each nick; changes with `members` and on `/nick`.
    nicks: HashMap<String, MemberId>,
    /// Rooms that have members, by name; a `BTreeMap` so `/rooms` comes
    /// out sorted. A room is created by its first member and removed with
    /// its last.
    rooms: BTreeMap<String, ChatRoom>,
    /// The K of the next `guest<K>`; only ever grows, so K is unique over
    /// the daemon's life.
    next_guest: u64,
    /// Members one room may hold; 0 = no limit.
    max_room_members: usize,
    /// Rooms that may exist at once, beyond which `/join` creates none;
    /// 0 = no limit. The lobby is created whenever someone arrives.
    max_rooms: usize,
}

/// What the daemon knows of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub nick: String,
    pub room: String,
}

/// One room: its members in the order they joined, which is the order
/// every broadcast visits them in, and what each reactor hosts of it.
#[derive(Debug, Default)]
pub struct ChatRoom {
    members: Vec<MemberId>,
    /// Members of the room per reactor, by index: a line goes to the
    /// inboxes of the reactors counted here, and to no other.
    hosted: Vec<u32>,
    /// The fullest output among the room's members per reactor, as each
    /// reactor last published it (`Rooms::publish_fullest`): how a poster
    /// on one reactor paces itself by members on another (chat's module
    /// docs, "Bursts"). Unused with one reactor.
    fullest: Vec<usize>,
}

impl ChatRoom {
    fn new(reactors: usize) -> ChatRoom {
        ChatRoom {
            members: Vec::new(),
            hosted: vec![0; reactors],
            fullest: vec![0; reactors],
        }
    }

    fn add(&mut self, id: MemberId) {
        self.members.push(id);
        if let Some(n) = self.hosted.get_mut(id.reactor) {
            *n += 1;
        }
    }
}

/// What a `/nick` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Renamed {
    /// The member already had that nick.
    Unchanged,
    /// The nick changed from `old`.
    From { old: String },
}

/// What a `/join` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Moved {
    /// The member was in that room already.
    Stayed,
    /// The member left `from` for the new room.
    From { from: String },
}

impl Rooms {
    /// The directory of a daemon of `reactors` reactors.
    pub fn new(config: &ChatConfig, reactors: usize) -> Rooms {
        Rooms {
            reactors: reactors.max(1),
            members: HashMap::new(),
            nicks: HashMap::new(),
            rooms: BTreeMap::new(),
            next_guest: 1,
            max_room_members: config.max_room_members,
            max_rooms: config.max_rooms,
        }
    }

    /// The reactors hosting members of `room`, by index.
    pub fn hosts(&self, room: &str) -> impl Iterator<Item = usize> + '_ {
        self.rooms
            .get(room)
            .map_or(&[][..], |r| &r.hosted)
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, _)| i)
    }

    /// The fullest output among `room`'s members on `reactor`, as that
    /// reactor last published it (0 for a room it does not host).
    pub fn fullest_on(&self, room: &str, reactor: usize) -> usize {
        self.rooms
            .get(room)
            .and_then(|r| r.fullest.get(reactor))
            .copied()
            .unwrap_or(0)
    }

    /// Records the fullest output among `room`'s members on `reactor`.
    pub fn publish_fullest(&mut self, room: &str, reactor: usize, bytes: usize) {
        if let Some(slot) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.fullest.get_mut(reactor))
        {
            *slot = bytes;
        }
    }

    /// Members present in all rooms.
    pub fn online(&self) -> usize {
        self.members.len()
    }

    /// Rooms that have members.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// A member's nick and room.
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Who holds `nick`.
    pub fn find(&self, nick: &str) -> Option<MemberId> {
        self.nicks.get(nick).copied()
    }

    /// Every member present, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Every member's connection, in no particular order.
    pub fn member_ids(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.members.keys().copied()
    }

    /// Whether a newcomer would find the lobby full.
    pub fn lobby_is_full(&self) -> bool {
        self.is_full(LOBBY)
    }

    /// The members of `room`, in joining order (empty if it does not exist).
    pub fn members_of(&self, room: &str) -> &[MemberId] {
        self.rooms.get(room).map_or(&[], |r| &r.members)
    }

    /// The nicks in `room`, sorted in byte order.
    pub fn who(&self, room: &str) -> Vec<&str> {
        let mut nicks: Vec<&str> = self
            .members_of(room)
            .iter()
            .filter_map(|id| self.members.get(id).map(|m| m.nick.as_str()))
            .collect();
        nicks.sort_unstable();
        nicks
    }

    /// Every room with its member count, sorted by name.
    pub fn listing(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rooms
            .iter()
            .map(|(name, room)| (name.as_str(), room.members.len()))
    }

    /// Takes a newcomer into the lobby under a fresh guest nick, which it
    /// returns. Fails only when the lobby is full.
    pub fn arrive(&mut self, id: MemberId) -> Result<String, ChatError> {
        if self.is_full(LOBBY) {
            return Err(ChatError::RoomFull);
        }
        // Someone may have taken `guest<K>` by `/nick`; skip to a free one.
        // Bounded: at most one nick per member can be in the way.
        let nick = loop {
            let nick = format!("guest{}", self.next_guest);
            self.next_guest += 1;
            if !self.nicks.contains_key(&nick) {
                break nick;
            }
        };
        self.arrive_as(id, nick)
    }

    /// Takes a newcomer into the lobby under `nick`, which the cluster
    /// granted it. Fails when the lobby is full, or (the cluster having
    /// been unreachable for a while) a member here holds the nick.
    pub fn arrive_as(&mut self, id: MemberId, nick: String) -> Result<String, ChatError> {
        if self.is_full(LOBBY) {
            return Err(ChatError::RoomFull);
        }
        if self.nicks.contains_key(&nick) {
            return Err(ChatError::NickInUse);
        }
        self.nicks.insert(nick.clone(), id);
        let reactors = self.reactors;
        self.rooms
            .entry(LOBBY.to_string())
            .or_insert_with(|| ChatRoom::new(reactors))
            .add(id);
        self.members.insert(
            id,
            Member {
                nick: nick.clone(),
                room: LOBBY.to_string(),
            },
        );
        Ok(nick)
    }

    /// Removes a member from everything; returns what it was. A room left
    /// empty is removed.
    pub fn depart(&mut self, id: MemberId) -> Option<Member> {
        let member = self.members.remove(&id)?;
        self.nicks.remove(&member.nick);
        self.remove_from_room(id, &member.room);
        Some(member)
    }

    /// Gives a member a new nick (already checked to be a valid name).
    pub fn rename(&mut self, id: MemberId, new: &str) -> Result<Renamed, ChatError> {
        let Some(member) = self.members.get_mut(&id) else {
            return Err(ChatError::NoSuchNick);
        };
        if member.nick == new {
            return Ok(Renamed::Unchanged);
        }
        if self.nicks.contains_key(new) {
            return Err(ChatError::NickInUse);
        }
        let old = std::mem::replace(&mut member.nick, new.to_string());
        self.nicks.remove(&old);
        self.nicks.insert(new.to_string(), id);
        Ok(Renamed::From { old })
    }

    /// Moves a member to `room` (already checked to be a valid name),
    /// creating it if needed. On failure the member stays where it was.
    pub fn join(&mut self, id: MemberId, room: &str) -> Result<Moved, ChatError> {
        let Some(member) = self.members.get(&id) else {
            return Err(ChatError::NoSuchNick);
        };
        if member.room == room {
            return Ok(Moved::Stayed);
        }
        if self.is_full(room) {
            return Err(ChatError::RoomFull);
        }
        if self.max_rooms > 0 && room != LOBBY && !self.rooms.contains_key(room) {
            // A room of one disappears as its member leaves it, so that
            // move creates a room without adding one.
            let removed = usize::from(self.members_of(&member.room).len() == 1);
            if self.rooms.len() - removed >= self.max_rooms {
                return Err(ChatError::TooManyRooms);
            }
        }
        let from = member.room.clone();
        self.remove_from_room(id, &from);
        let reactors = self.reactors;
        self.rooms
            .entry(room.to_string())
            .or_insert_with(|| ChatRoom::new(reactors))
            .add(id);
        if let Some(member) = self.members.get_mut(&id) {
            member.room = room.to_string();
        }
        Ok(Moved::From { from })
    }

    fn is_full(&self, room: &str) -> bool {
        self.max_room_members > 0 && self.members_of(room).len() >= self.max_room_members
    }

    /// O(members of the room): the order of the others is kept, and the
    /// room's departure notice costs as much anyway.
    fn remove_from_room(&mut self, id: MemberId, room: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            if let Some(at) = r.members.iter().position(|m| *m == id) {
                r.members.remove(at);
                if let Some(n) = r.hosted.get_mut(id.reactor) {
                    *n -= 1;
                }
            }
            if r.members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> MemberId {
        MemberId {
            reactor: 0,
            token: n,
            serial: n as u64 + 100,
        }
    }

    fn rooms(max_room_members: usize, max_rooms: usize) -> Rooms {
        Rooms::new(
            &ChatConfig {
                max_room_members,
                max_rooms,
                ..ChatConfig::default()
            },
            1,
        )
    }

    #[test]
    fn newcomers_get_numbered_guest_nicks_in_the_lobby() {
        let mut r = rooms(0, 0);
        assert_eq!(r.arrive(id(1)).unwrap(), "guest1");
        assert_eq!(r.arrive(id(2)).unwrap(), "guest2");
        assert_eq!(r.online(), 2);
        assert_eq!(r.members_of(LOBBY), [id(1), id(2)]);
        r.depart(id(1));
        // K is never reused, even when its nick became free.
        assert_eq!(r.arrive(id(3)).unwrap(), "guest3");
    }

    #[test]
    fn a_guest_nick_taken_by_rename_is_skipped() {
        let mut r = rooms(0, 0);
        r.arrive(id(1)).unwrap();
        r.rename(id(1), "guest2").unwrap();
        assert_eq!(r.arrive(id(2)).unwrap(), "guest3");
    }

    #[test]
    fn renaming_refuses_a_taken_nick_and_frees_the_old_one() {
        let mut r = rooms(0, 0);
        r.arrive(id(1)).unwrap();
        r.arrive(id(2)).unwrap();
        assert_eq!(r.rename(id(2), "guest1"), Err(ChatError::NickInUse));
        assert_eq!(r.rename(id(2), "guest2"), Ok(Renamed::Unchanged));
        assert_eq!(
            r.rename(id(1), "ada"),
            Ok(Renamed::From {
                old: "guest1".into()
            })
        );
        assert_eq!(r.find("ada"), Some(id(1)));
        assert_eq!(r.find("guest1"), None);
        assert_eq!(
            r.rename(id(2), "guest1"),
            Ok(Renamed::From {
                old: "guest2".into()
            })
        );
    }

    #[test]
    fn rooms_exist_while_they_have_members_and_list_sorted() {
        let mut r = rooms(0, 0);
        for n in 1..=3 {
            r.arrive(id(n)).unwrap();
        }
        r.rename(id(3), "Zed").unwrap();
        assert_eq!(
            r.join(id(1), "rust"),
            Ok(Moved::From {
                from: "lobby".into()
            })
        );
        assert_eq!(r.join(id(1), "rust"), Ok(Moved::Stayed));
        r.join(id(2), "C").unwrap();
        assert_eq!(
            r.listing().collect::<Vec<_>>(),
            [("C", 1), ("lobby", 1), ("rust", 1)]
        );
        r.join(id(3), "rust").unwrap();
        assert_eq!(r.who("rust"), ["Zed", "guest1"]);
        assert_eq!(r.listing().collect::<Vec<_>>(), [("C", 1), ("rust", 2)]);
        r.depart(id(2));
        assert_eq!(r.room_count(), 1);
        assert_eq!(r.online(), 2);
    }

    #[test]
    fn a_full_room_refuses_joiners_and_a_full_lobby_refuses_newcomers() {
        let mut r = rooms(2, 0);
        r.arrive(id(1)).unwrap();
        r.arrive(id(2)).unwrap();
        assert_eq!(r.arrive(id(3)), Err(ChatError::RoomFull));
        assert_eq!(r.online(), 2);
        r.join(id(2), "x").unwrap();
        r.arrive(id(3)).unwrap();
        assert_eq!(
            r.join(id(1), "x"),
            Ok(Moved::From {
                from: "lobby".into()
            })
        );
        assert_eq!(r.join(id(3), "x"), Err(ChatError::RoomFull));
        assert_eq!(r.member(id(3)).unwrap().room, LOBBY);
    }

    #[test]
    fn max_rooms_limits_created_rooms_but_never_the_lobby() {
        let mut r = rooms(0, 2);
        for n in 1..=3 {
            r.arrive(id(n)).unwrap();
        }
        r.join(id(1), "a").unwrap();
        assert_eq!(r.join(id(2), "b"), Err(ChatError::TooManyRooms));
        assert_eq!(r.member(id(2)).unwrap().room, LOBBY);
        // Joining a room that exists is always possible.
        r.join(id(2), "a").unwrap();
        // The last member of a room may move to a new one: it replaces it.
        assert_eq!(
            r.join(id(3), "c"),
            Ok(Moved::From {
                from: "lobby".into()
            })
        );
        // The lobby is where everyone can go back to, beyond the limit.
        r.join(id(1), LOBBY).unwrap();
        assert_eq!(r.room_count(), 3);
        assert_eq!(r.join(id(2), "d"), Err(ChatError::TooManyRooms));
        assert_eq!(
            r.listing().collect::<Vec<_>>(),
            [("a", 1), ("c", 1), ("lobby", 1)]
        );
    }

    #[test]
    fn departing_removes_the_member_everywhere() {
        let mut r = rooms(0, 0);
        r.arrive(id(1)).unwrap();
        r.arrive(id(2)).unwrap();
        let gone = r.depart(id(1)).unwrap();
        assert_eq!(
            gone,
            Member {
                nick: "guest1".into(),
                room: LOBBY.into()
            }
        );
        assert_eq!(r.depart(id(1)), None);
        assert_eq!(r.find("guest1"), None);
        assert_eq!(r.members_of(LOBBY), [id(2)]);
    }

    #[test]
    fn each_room_knows_which_reactors_host_its_members() {
        let mut r = Rooms::new(&ChatConfig::default(), 3);
        let on = |reactor, token| MemberId {
            reactor,
            token,
            serial: 1,
        };
        r.arrive(on(0, 1)).unwrap();
        r.arrive(on(2, 1)).unwrap();
        r.arrive(on(2, 2)).unwrap();
        assert_eq!(r.hosts(LOBBY).collect::<Vec<_>>(), [0, 2]);
        r.join(on(0, 1), "rust").unwrap();
        assert_eq!(r.hosts(LOBBY).collect::<Vec<_>>(), [2]);
        assert_eq!(r.hosts("rust").collect::<Vec<_>>(), [0]);
        r.depart(on(2, 1));
        assert_eq!(r.hosts(LOBBY).collect::<Vec<_>>(), [2]);
        r.depart(on(2, 2));
        assert_eq!(r.hosts(LOBBY).count(), 0);
        assert_eq!(r.hosts("nowhere").count(), 0);
    }

    #[test]
    fn published_fullness_is_kept_per_room_and_reactor() {
        let mut r = Rooms::new(&ChatConfig::default(), 2);
        r.arrive(MemberId {
            reactor: 1,
            token: 4,
            serial: 9,
        })
        .unwrap();
        r.publish_fullest(LOBBY, 1, 500);
        r.publish_fullest("gone", 1, 7);
        assert_eq!(r.fullest_on(LOBBY, 1), 500);
        assert_eq!(r.fullest_on(LOBBY, 0), 0);
        assert_eq!(r.fullest_on("gone", 1), 0);
    }
}
