//! chat: nicks, rooms and private messages over plain lines, where one line
//! said to a room of thousands is formatted once and never copied.
//!
//! # Format
//!
//! ```text
//! daemon: * welcome guest1; room lobby; 2 online; /help for commands
//! daemon: * guest1 joined lobby                    (to the lobby, guest1 included)
//! client: hello
//! daemon: 2026-11-03 09:05:01 guest1: hello        (to the room, the sender included)
//! client: /nick ada
//! daemon: * guest1 is now ada                      (to the room)
//! client: /join rust
//! daemon: * ada joined rust                        (to rust, ada included;
//!                                                   lobby gets * ada left lobby)
//! client: /who
//! daemon: * in rust: ada bob
//! client: /rooms
//! daemon: * rooms: lobby(1) rust(2)
//! client: /msg bob hi there
//! daemon: 2026-11-03 09:05:09 ada -> bob: hi there (to bob and to ada)
//! client: /frobnicate
//! daemon: ! error: unknown command
//! client: quit                                     (or /quit)
//! daemon: * bye                                    (then FIN; rust gets * ada left rust)
//! ```
//!
//! Every line ends in `\n` both ways; a client's `\r` before its `\n` is
//! dropped, so telnet works too. The time is local, `YYYY-MM-DD HH:MM:SS`.
//! `/help` answers with `* ` lines, the last one `* end of help`.
//!
//! # A member's life
//!
//! ```text
//!   Arriving --on_open, lobby full--> ! error: room full, close ----------.
//!      |                                                                  |
//!   on_open: welcome, "joined lobby"                                      |
//!      v                                                                  v
//!   Present --/quit or quit------------> * bye, "left", close ---------> Gone
//!   |  ^  |  --EOF, error--------------> "left" -----------------------> Gone
//!   '--'  |  --idle--------------------> "left (idle)" ----------------> Gone
//!  lines, |  --output over the limit---> "left (too slow)", abort -----> Gone
//! commands'  --daemon shutting down----> (no notice) ------------------> Gone
//! ```
//!
//! Leaving happens in one place, `Session::leave`, and only from
//! `Present`: whichever way a member goes, its room is told exactly once.
//! That matters because the ways overlap. `/quit` closes the connection,
//! after which the reactor calls `on_close(Requested)`; a member cut off as
//! too slow is aborted, which also ends in `on_close`. Those later calls
//! find the session `Gone` and do nothing.
//!
//! # Lines
//!
//! A line is counted in bytes without its `\n` and a `\r` before it, and
//! may be at most `chat.max_line` bytes (default 4,096). The reactor keeps
//! a partial line for the session until its `\n` arrives, so a line split
//! over many reads is served whole. A line that outgrows the limit is *not*
//! kept: as soon as more than `max_line + 1` bytes wait without a `\n`, the
//! client gets `! error: line too long` and the [`LineSplitter`] switches to
//! discarding until the next `\n`, however many reads that takes. So at most
//! `max_line + 1` bytes of one line are ever held, whatever a client sends.
//!
//! ```text
//!   Reading --more than max_line + 1 bytes without \n--> Discarding
//!      ^      (! error: line too long)                       |
//!      '------------------------- \n ------------------------'
//! ```
//!
//! Empty lines are ignored. A line that is not UTF-8 is dropped with
//! `! error: invalid UTF-8`. A last line without `\n` when the client hangs
//! up is dropped: it never became a line.
//!
//! # Fan-out without copying
//!
//! A line said to a room is formatted once into a [`Bytes`]. Each recipient
//! gets a clone of it, which is a reference count increment, not a copy:
//! a 100-byte line said to 1,000 members costs 100 bytes of text plus 1,000
//! handles queued in the members' outboxes. The sender is a member too and
//! gets its copy with [`Cx::write_shared`]; the others get theirs through
//! [`Cx::send_to`], which the reactor delivers when the callback returns.
//! Members are indexed by room ([`Rooms`]), so a broadcast visits the
//! members of that room only, never every connection.
//!
//! Recipients are visited in the order they joined, and every line is
//! queued to all of them before the next line is formatted, so every member
//! of a room sees the room's lines in the same order.
//!
//! # Slow consumers
//!
//! Nobody waits for a slow reader: its lines pile up in its own outbox. When
//! its unsent output passes `chat.max_pending_output` (default 1 MiB), the
//! reactor calls `on_output_full`, and the member is cut off alone: its room
//! gets `* <nick> left <room> (too slow)` and its connection is aborted (its
//! pending output is dropped and a FIN sent; a line the kernel had only
//! partly taken arrives truncated). A member that stays connected never
//! misses a line. The cut-off usually happens while the reactor delivers a
//! broadcast; the notice is delivered after the rest of that broadcast, so
//! the members before and after the slow one in the room agree on where it
//! falls. The same rule applies to a member's own replies: a client
//! that floods `/who` into a large room without reading its answers is cut
//! off the same way, checked before every line so a single read cannot
//! build up more than the limit plus one reply.
//!
//! # Fairness of one read
//!
//! One read can hold thousands of short lines, and each said line becomes
//! one queued letter per member of the room. Serving a whole read (up to the
//! reactor's `READ_CHUNK`, 128 KiB) of `a\n` lines to a room of 2,000 at
//! once would queue 131 million letters
//! before any was delivered. So a callback stops once it has queued
//! [`FANOUT_BUDGET`] letters (always after at least one line): the rest of
//! the input stays unconsumed with the reactor, and the session asks for it
//! again (`Cx::offer_input_again`). The reactor offers it at the next loop
//! turn, without waiting for new bytes, and reads nothing more from that
//! client until it is served. Other clients get their turn in between, and
//! the session keeps no copy of its input.
//!
//! # Decisions PROTOCOL.md leaves open
//!
//! - Command names are lower case and exact (`/NICK` is an unknown
//!   command); arguments are separated by spaces. `/who`, `/rooms`, `/help`
//!   and `/quit` ignore anything after them. In `/msg NICK TEXT`, TEXT is
//!   the rest of the line after the spaces that follow NICK.
//! - Nicks and room names are case-sensitive: `Ada` and `ada` are two nicks.
//! - `/nick` to your own nick, and `/join` of the room you are in, change
//!   nothing: only you get the notice (`* ada is now ada`,
//!   `* ada joined rust`), so a client waiting for its confirmation gets it
//!   and nobody else is disturbed.
//! - `* <old> is now <new>` goes to the renamed member's room, the member
//!   included.
//! - `/msg` to yourself delivers the line to you once.
//! - A guest nick already taken by someone's `/nick` is skipped: the
//!   newcomer gets the next free `guest<K>`.
//! - A room exists while it has members. `chat.max_rooms` (0 = no limit)
//!   refuses a `/join` that would create a room beyond it, but the lobby is
//!   always created when someone arrives, since every client must start
//!   somewhere. `chat.max_room_members` (0 = no limit) applies to the lobby
//!   too: a client arriving at a full lobby gets `! error: room full` and
//!   is disconnected.
//! - On daemon shutdown everyone leaves silently: announcing each of
//!   thousands of departures to everyone still there would be quadratic.
//!
//! # Errors
//!
//! Each is one line `! error: <reason>`, and the connection stays open
//! (except `room full` on arrival, above):
//!
//! | reason | when |
//! |---|---|
//! | `unknown command` | a line starting with `/` that names no command |
//! | `nick in use` | `/nick` to a nick someone else has |
//! | `no such nick` | `/msg` to a nick nobody has |
//! | `bad name` | a nick or room name not 1 to 32 of `A-Z a-z 0-9 _ -` (or missing) |
//! | `usage: /msg NICK TEXT` | `/msg` without a nick or without text |
//! | `invalid UTF-8` | a line that is not UTF-8 (it is dropped) |
//! | `line too long` | a line over `chat.max_line` bytes (dropped up to its `\n`) |
//! | `room full` | `/join` of a room holding `chat.max_room_members` members |
//! | `too many rooms` | `/join` that would create a room beyond `chat.max_rooms` |

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use bytes::{Bytes, BytesMut};

use super::{CloseReason, Cx, clock};
use crate::config::ChatConfig;

/// The room every client arrives in.
pub const LOBBY: &str = "lobby";
/// The longest nick or room name, in bytes.
pub const MAX_NAME: usize = 32;
/// Letters (one line queued for one member) a callback may queue before
/// the rest of its input waits for the next loop turn (see "Fairness of
/// one read"). A letter costs about 48 bytes while it waits for delivery,
/// so this bounds that transient memory to under a megabyte per callback.
pub const FANOUT_BUDGET: usize = 16 * 1024;

const HELP: &[&str] = &[
    "* commands:",
    "* /nick NEW       take the nick NEW (1 to 32 of A-Z a-z 0-9 _ -)",
    "* /join ROOM      leave this room for ROOM (created on demand)",
    "* /who            list the members of this room",
    "* /rooms          list the rooms that have members",
    "* /msg NICK TEXT  say TEXT to NICK alone",
    "* /help           this help",
    "* /quit           leave (a line that is just quit does too)",
    "* any other line is said to your room",
    "* end of help",
];

// ----- Errors --------------------------------------------------------------

/// Why a line was refused; its `Display` is the text after `! error: `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatError {
    UnknownCommand,
    NickInUse,
    NoSuchNick,
    BadName,
    MsgUsage,
    InvalidUtf8,
    LineTooLong,
    RoomFull,
    TooManyRooms,
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChatError::UnknownCommand => "unknown command",
            ChatError::NickInUse => "nick in use",
            ChatError::NoSuchNick => "no such nick",
            ChatError::BadName => "bad name",
            ChatError::MsgUsage => "usage: /msg NICK TEXT",
            ChatError::InvalidUtf8 => "invalid UTF-8",
            ChatError::LineTooLong => "line too long",
            ChatError::RoomFull => "room full",
            ChatError::TooManyRooms => "too many rooms",
        })
    }
}

// ----- Lines ---------------------------------------------------------------

/// Cuts a byte stream into lines of at most `max_line` bytes, dropping
/// longer ones without ever holding more than `max_line + 1` of their bytes.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    state: Framing,
}

/// Where the splitter stands in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// At a line's start or within a line short enough to keep.
    Reading,
    /// Within a line already reported too long: bytes are dropped until
    /// its `\n`.
    Discarding,
}

/// What [`LineSplitter::take_line`] found at the start of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A complete line, without its `\n` and a `\r` before it.
    Line(&'a [u8]),
    /// A line over the limit; it is dropped (the rest of it too, as it
    /// arrives). Reported once per line.
    TooLong,
    /// No complete line: the unconsumed bytes (at most `max_line + 1`) must
    /// be offered again with what arrives next.
    Incomplete,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            max_line,
            state: Framing::Reading,
        }
    }

    /// Looks at the start of `input` and returns how many bytes it
    /// consumed and what they were. Call it again on the rest until it
    /// says [`Framed::Incomplete`].
    pub fn take_line<'a>(&mut self, input: &'a [u8]) -> (usize, Framed<'a>) {
        let mut skipped = 0;
        if self.state == Framing::Discarding {
            match memchr(b'\n', input) {
                None => return (input.len(), Framed::Incomplete),
                Some(end) => {
                    self.state = Framing::Reading;
                    skipped = end + 1;
                }
            }
        }
        let rest = &input[skipped..];
        match memchr(b'\n', rest) {
            Some(end) => {
                let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
                let framed = if line.len() > self.max_line {
                    Framed::TooLong
                } else {
                    Framed::Line(line)
                };
                (skipped + end + 1, framed)
            }
            // `max_line` bytes and a `\r` may still end well; one more byte
            // cannot. Drop what is here and the rest as it comes.
            None if rest.len() > self.max_line + 1 => {
                self.state = Framing::Discarding;
                (input.len(), Framed::TooLong)
            }
            None => (skipped, Framed::Incomplete),
        }
    }
}

// ----- Commands ------------------------------------------------------------

/// One line, understood.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A plain line, said to the room.
    Say(&'a str),
    Nick(&'a str),
    Join(&'a str),
    Who,
    Rooms,
    Msg {
        to: &'a str,
        text: &'a str,
    },
    Help,
    Quit,
}

/// Parses one non-empty line. Names are checked here (so `/nick` and
/// `/join` with a bad name fail before touching any state); whether a nick
/// exists or is taken is for [`Rooms`] to say.
pub fn parse(line: &str) -> Result<Command<'_>, ChatError> {
    if line == "quit" {
        return Ok(Command::Quit);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Command::Say(line));
    };
    let (name, args) = command.split_once(' ').unwrap_or((command, ""));
    let args = args.trim_start_matches(' ');
    match name {
        "nick" => valid_name(args.trim_end_matches(' ')).map(Command::Nick),
        "join" => valid_name(args.trim_end_matches(' ')).map(Command::Join),
        "who" => Ok(Command::Who),
        "rooms" => Ok(Command::Rooms),
        "help" => Ok(Command::Help),
        "quit" => Ok(Command::Quit),
        "msg" => {
            let (to, text) = args.split_once(' ').ok_or(ChatError::MsgUsage)?;
            let text = text.trim_start_matches(' ');
            if to.is_empty() || text.is_empty() {
                return Err(ChatError::MsgUsage);
            }
            Ok(Command::Msg { to, text })
        }
        _ => Err(ChatError::UnknownCommand),
    }
}

/// Whether `name` is a valid nick or room name: 1 to 32 of
/// `A-Z a-z 0-9 _ -`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_name(name: &str) -> Result<&str, ChatError> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(ChatError::BadName)
    }
}

// ----- Rooms: the state all chat sessions share ----------------------------

/// One member, named by its connection: the token finds it, the serial
/// tells it apart from a later connection that reuses the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId {
    pub token: usize,
    pub serial: u64,
}

impl MemberId {
    /// The member on the connection `cx` belongs to.
    pub fn of(cx: &Cx<'_>) -> MemberId {
        MemberId {
            token: cx.token(),
            serial: cx.serial(),
        }
    }
}

/// Every member, every nick and every room of the daemon, kept in
/// [`super::Shared`]. Pure bookkeeping: it decides, the session sends.
#[derive(Debug)]
pub struct Rooms {
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
    /// Scratch list of a broadcast's recipients, kept so a broadcast does
    /// not allocate (see `broadcast`).
    recipients: Vec<MemberId>,
}

/// What the daemon knows of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub nick: String,
    pub room: String,
}

/// One room: its members in the order they joined, which is the order
/// every broadcast visits them in.
#[derive(Debug, Default)]
pub struct ChatRoom {
    members: Vec<MemberId>,
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
    pub fn new(config: &ChatConfig) -> Rooms {
        Rooms {
            members: HashMap::new(),
            nicks: HashMap::new(),
            rooms: BTreeMap::new(),
            next_guest: 1,
            max_room_members: config.max_room_members,
            max_rooms: config.max_rooms,
            recipients: Vec::new(),
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
        self.nicks.insert(nick.clone(), id);
        self.rooms
            .entry(LOBBY.to_string())
            .or_default()
            .members
            .push(id);
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
        self.rooms
            .entry(room.to_string())
            .or_default()
            .members
            .push(id);
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
            }
            if r.members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

// ----- The session ---------------------------------------------------------

/// One chat connection.
pub struct Session {
    lines: LineSplitter,
    presence: Presence,
}

/// Where the client stands in the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Accepted, not yet welcomed (before `on_open`).
    Arriving,
    /// In a room, under a nick.
    Present,
    /// Left the chat; the connection is ending and every later callback
    /// does nothing.
    Gone,
}

/// How a member leaves; decides what its room is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// `/quit` or `quit`: the member gets `* bye`.
    Quit,
    /// EOF or a connection error.
    Disconnected,
    /// Nothing moved for `chat.idle_timeout_s`.
    Idle,
    /// Its unsent output passed the limit.
    TooSlow,
    /// The daemon is stopping; nobody is told.
    Shutdown,
}

/// Why [`Session::serve`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The input ends in a partial line (or nothing).
    NeedMore,
    /// Lines remain, but this callback queued enough.
    BudgetSpent,
    /// The member left; the rest of the input is moot.
    Left,
}

impl Session {
    pub fn new(max_line: usize) -> Session {
        Session {
            lines: LineSplitter::new(max_line),
            presence: Presence::Arriving,
        }
    }

    /// Serves the complete lines at the start of `input`, within the
    /// budget; returns the bytes consumed and why it stopped.
    fn serve(&mut self, input: &[u8], cx: &mut Cx<'_>) -> (usize, Stop) {
        let mut consumed = 0;
        let mut spent = 0;
        loop {
            if self.presence != Presence::Present {
                return (input.len(), Stop::Left);
            }
            if cx.pending_output() >= cx.output_limit() {
                // Our own replies passed the limit within this read.
                self.leave(Departure::TooSlow, cx);
                return (input.len(), Stop::Left);
            }
            let rest = &input[consumed..];
            if spent >= FANOUT_BUDGET && memchr(b'\n', rest).is_some() {
                return (consumed, Stop::BudgetSpent);
            }
            let (n, framed) = self.lines.take_line(rest);
            consumed += n;
            match framed {
                Framed::Incomplete => return (consumed, Stop::NeedMore),
                Framed::TooLong => {
                    reply_error(cx, ChatError::LineTooLong);
                    spent += 1;
                }
                Framed::Line(line) => spent += self.on_line(line, cx).max(1),
            }
        }
    }

    /// Serves one complete line; returns how many letters it queued.
    fn on_line(&mut self, line: &[u8], cx: &mut Cx<'_>) -> usize {
        if line.is_empty() {
            return 0;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            reply_error(cx, ChatError::InvalidUtf8);
            return 1;
        };
        let me = MemberId::of(cx);
        let Some(Member { nick, room }) = cx.shared().chat.member(me).cloned() else {
            return 0;
        };
        let command = match parse(line) {
            Ok(command) => command,
            Err(e) => {
                reply_error(cx, e);
                return 1;
            }
        };
        match command {
            Command::Say(text) => {
                let stamp = clock::datetime(cx.wall_time());
                let mut said = BytesMut::with_capacity(stamp.len() + nick.len() + text.len() + 4);
                said.extend_from_slice(stamp.as_bytes());
                said.extend_from_slice(b" ");
                said.extend_from_slice(nick.as_bytes());
                said.extend_from_slice(b": ");
                said.extend_from_slice(text.as_bytes());
                said.extend_from_slice(b"\n");
                broadcast(cx, &room, said.freeze())
            }
            Command::Nick(new) => match cx.shared().chat.rename(me, new) {
                Ok(Renamed::Unchanged) => {
                    cx.write_shared(notice(format_args!("{nick} is now {nick}")));
                    1
                }
                Ok(Renamed::From { old }) => {
                    broadcast(cx, &room, notice(format_args!("{old} is now {new}")))
                }
                Err(e) => {
                    reply_error(cx, e);
                    1
                }
            },
            Command::Join(to) => match cx.shared().chat.join(me, to) {
                Ok(Moved::Stayed) => {
                    cx.write_shared(notice(format_args!("{nick} joined {to}")));
                    1
                }
                Ok(Moved::From { from }) => {
                    broadcast(cx, &from, notice(format_args!("{nick} left {from}")))
                        + broadcast(cx, to, notice(format_args!("{nick} joined {to}")))
                }
                Err(e) => {
                    reply_error(cx, e);
                    1
                }
            },
            Command::Who => {
                let who = cx.shared().chat.who(&room).join(" ");
                cx.write_with(|out| {
                    let _ = writeln!(out, "* in {room}: {who}");
                });
                1
            }
            Command::Rooms => {
                let mut listing = String::from("* rooms:");
                for (name, count) in cx.shared().chat.listing() {
                    let _ = write!(listing, " {name}({count})");
                }
                listing.push('\n');
                cx.write(listing.as_bytes());
                1
            }
            Command::Msg { to, text } => {
                let Some(to_id) = cx.shared().chat.find(to) else {
                    reply_error(cx, ChatError::NoSuchNick);
                    return 1;
                };
                let stamp = clock::datetime(cx.wall_time());
                let line = Bytes::from(format!("{stamp} {nick} -> {to}: {text}\n"));
                if to_id != me {
                    cx.send_to(to_id.token, to_id.serial, line.clone());
                }
                cx.write_shared(line);
                2
            }
            Command::Help => {
                for line in HELP {
                    cx.write(line.as_bytes());
                    cx.write(b"\n");
                }
                1
            }
            Command::Quit => {
                self.leave(Departure::Quit, cx);
                1
            }
        }
    }

    /// Takes the member out of the chat and tells its room, once: only a
    /// `Present` member leaves, and it is `Gone` afterwards.
    fn leave(&mut self, how: Departure, cx: &mut Cx<'_>) {
        if self.presence != Presence::Present {
            self.presence = Presence::Gone;
            return;
        }
        self.presence = Presence::Gone;
        let me = MemberId::of(cx);
        let Some(Member { nick, room }) = cx.shared().chat.depart(me) else {
            return;
        };
        let why = match how {
            Departure::Quit | Departure::Disconnected => "",
            Departure::Idle => " (idle)",
            Departure::TooSlow => " (too slow)",
            Departure::Shutdown => return,
        };
        // The member is out of the room already, so this reaches the others.
        broadcast(cx, &room, notice(format_args!("{nick} left {room}{why}")));
        match how {
            Departure::Quit => {
                cx.write(b"* bye\n");
                cx.close();
            }
            Departure::TooSlow => cx.abort(),
            // The connection is ending already (or `on_peer_closed` ends it).
            Departure::Disconnected | Departure::Idle | Departure::Shutdown => {}
        }
    }
}

impl super::Session for Session {
    fn on_open(&mut self, cx: &mut Cx<'_>) {
        let me = MemberId::of(cx);
        let rooms = &mut cx.shared().chat;
        match rooms.arrive(me) {
            Ok(nick) => {
                let online = rooms.online();
                self.presence = Presence::Present;
                cx.write_with(|out| {
                    let _ = writeln!(
                        out,
                        "* welcome {nick}; room {LOBBY}; {online} online; /help for commands"
                    );
                });
                broadcast(cx, LOBBY, notice(format_args!("{nick} joined {LOBBY}")));
            }
            Err(e) => {
                reply_error(cx, e);
                self.presence = Presence::Gone;
                cx.close();
            }
        }
    }

    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        if self.presence != Presence::Present {
            return input.len();
        }
        // Serve straight from the reactor's buffer; a partial line, and
        // the lines past the budget, stay with the reactor.
        let (consumed, stop) = self.serve(input, cx);
        if stop == Stop::BudgetSpent {
            // Whole lines wait: offered again at the next turn (module docs).
            cx.offer_input_again();
        }
        consumed
    }

    /// The client hung up; an unfinished last line is dropped.
    fn on_peer_closed(&mut self, _input: &[u8], cx: &mut Cx<'_>) {
        self.leave(Departure::Disconnected, cx);
        cx.close();
    }

    fn on_output_full(&mut self, cx: &mut Cx<'_>) {
        self.leave(Departure::TooSlow, cx);
    }

    fn on_close(&mut self, reason: CloseReason, cx: &mut Cx<'_>) {
        let how = match reason {
            CloseReason::Idle => Departure::Idle,
            CloseReason::Shutdown => Departure::Shutdown,
            CloseReason::Requested | CloseReason::PeerClosed | CloseReason::Error => {
                Departure::Disconnected
            }
        };
        self.leave(how, cx);
    }
}

/// Queues `line` for every member of `room`, the caller included if it is
/// one: the same [`Bytes`] for all, so the text exists once however many
/// members there are. Returns the number of recipients.
fn broadcast(cx: &mut Cx<'_>, room: &str, line: Bytes) -> usize {
    let me = MemberId::of(cx);
    let rooms = &mut cx.shared().chat;
    // The room's list cannot be borrowed while `cx` queues letters, so it
    // is copied into a scratch list that keeps its capacity between calls.
    let mut recipients = std::mem::take(&mut rooms.recipients);
    recipients.clear();
    recipients.extend_from_slice(rooms.members_of(room));
    for member in &recipients {
        if *member == me {
            cx.write_shared(line.clone());
        } else {
            cx.send_to(member.token, member.serial, line.clone());
        }
    }
    let count = recipients.len();
    cx.shared().chat.recipients = recipients;
    cx.trace(format_args!(
        "#{} chat broadcast to {count} members",
        cx.token()
    ));
    count
}

/// A `* ...` line.
fn notice(text: fmt::Arguments<'_>) -> Bytes {
    let mut line = BytesMut::with_capacity(64);
    // Formatting into a `BytesMut` cannot fail.
    let _ = writeln!(line, "* {text}");
    line.freeze()
}

fn reply_error(cx: &mut Cx<'_>, error: ChatError) {
    cx.write_with(|out| {
        let _ = writeln!(out, "! error: {error}");
    });
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ----- The line splitter ----------------------------------------------

    /// Feeds `chunks` as successive reads, keeping unconsumed bytes the way
    /// the reactor does, and lists what came out: `line:<text>` or
    /// `too long`. Also checks that no more than `max + 1` bytes are ever
    /// kept.
    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(max);
        let mut kept: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            kept.extend_from_slice(chunk);
            let mut consumed = 0;
            loop {
                let (n, framed) = splitter.take_line(&kept[consumed..]);
                consumed += n;
                match framed {
                    Framed::Line(l) => out.push(format!("line:{}", String::from_utf8_lossy(l))),
                    Framed::TooLong => out.push("too long".to_string()),
                    Framed::Incomplete => break,
                }
            }
            kept.drain(..consumed);
            assert!(kept.len() <= max + 1, "kept {} bytes", kept.len());
        }
        out
    }

    #[test]
    fn lines_come_out_without_their_newline_or_carriage_return() {
        assert_eq!(
            split(10, &[b"ab\ncd\r\n\n"]),
            ["line:ab", "line:cd", "line:"]
        );
    }

    #[test]
    fn a_carriage_return_inside_a_line_is_kept() {
        assert_eq!(split(10, &[b"a\rb\n"]), ["line:a\rb"]);
    }

    #[test]
    fn a_line_split_over_reads_comes_out_whole() {
        assert_eq!(split(10, &[b"he", b"ll", b"o\r", b"\n"]), ["line:hello"]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_with_or_without_carriage_return() {
        assert_eq!(split(3, &[b"abc\n", b"abc\r\n"]), ["line:abc", "line:abc"]);
        // The same, arriving a byte at a time.
        let bytes = b"abc\r\n";
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(split(3, &chunks), ["line:abc"]);
    }

    #[test]
    fn a_line_one_byte_over_the_limit_is_too_long() {
        assert_eq!(split(3, &[b"abcd\nok\n"]), ["too long", "line:ok"]);
        assert_eq!(split(3, &[b"abcd\r\nok\n"]), ["too long", "line:ok"]);
    }

    #[test]
    fn a_long_line_is_reported_once_and_dropped_up_to_its_newline_across_reads() {
        assert_eq!(
            split(4, &[b"abcdef", b"ghij", b"klmn", b"op\nnext\n"]),
            ["too long", "line:next"]
        );
    }

    #[test]
    fn a_long_line_is_reported_before_its_newline_arrives() {
        assert_eq!(split(4, &[b"abcdefgh"]), ["too long"]);
    }

    #[test]
    fn discarding_ends_at_the_newline_even_at_the_start_of_a_read() {
        assert_eq!(split(2, &[b"abcd", b"\nx\n"]), ["too long", "line:x"]);
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_lines() {
        let input = b"one\r\n\nthis one is far too long\ntwo\nsixsix\r\nseven77\r\n";
        let whole = split(6, &[input]);
        assert_eq!(
            whole,
            [
                "line:one",
                "line:",
                "too long",
                "line:two",
                "line:sixsix",
                "too long"
            ]
        );
        for size in 1..input.len() {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            assert_eq!(split(6, &chunks), whole, "chunks of {size}");
        }
    }

    // ----- The command parser ---------------------------------------------

    fn check(line: &str, expected: Result<Command<'_>, ChatError>) {
        assert_eq!(parse(line), expected, "{line:?}");
    }

    #[test]
    fn plain_lines_are_said() {
        check("hello", Ok(Command::Say("hello")));
        check("  spaced  ", Ok(Command::Say("  spaced  ")));
        check("quit now", Ok(Command::Say("quit now")));
        check("Quit", Ok(Command::Say("Quit")));
    }

    #[test]
    fn every_command_parses() {
        check("/nick ada", Ok(Command::Nick("ada")));
        check("/nick  ada ", Ok(Command::Nick("ada")));
        check("/join rust-lang_2", Ok(Command::Join("rust-lang_2")));
        check("/who", Ok(Command::Who));
        check("/who cares", Ok(Command::Who));
        check("/rooms", Ok(Command::Rooms));
        check("/help", Ok(Command::Help));
        check("/quit", Ok(Command::Quit));
        check("/quit see you", Ok(Command::Quit));
        check("quit", Ok(Command::Quit));
        check(
            "/msg bob hi  there ",
            Ok(Command::Msg {
                to: "bob",
                text: "hi  there ",
            }),
        );
        check(
            "/msg  bob   hi",
            Ok(Command::Msg {
                to: "bob",
                text: "hi",
            }),
        );
    }

    #[test]
    fn unknown_commands_are_refused() {
        check("/", Err(ChatError::UnknownCommand));
        check("/NICK ada", Err(ChatError::UnknownCommand));
        check("/whois", Err(ChatError::UnknownCommand));
        check("/ who", Err(ChatError::UnknownCommand));
    }

    #[test]
    fn bad_names_are_refused() {
        check("/nick", Err(ChatError::BadName));
        check("/nick ", Err(ChatError::BadName));
        check("/nick a b", Err(ChatError::BadName));
        check("/nick émile", Err(ChatError::BadName));
        check("/nick a.b", Err(ChatError::BadName));
        check(
            &format!("/nick {}", "x".repeat(33)),
            Err(ChatError::BadName),
        );
        check(
            &format!("/nick {}", "x".repeat(32)),
            Ok(Command::Nick(&"x".repeat(32))),
        );
        check("/join", Err(ChatError::BadName));
        check("/join #rust", Err(ChatError::BadName));
    }

    #[test]
    fn msg_needs_a_nick_and_text() {
        check("/msg", Err(ChatError::MsgUsage));
        check("/msg bob", Err(ChatError::MsgUsage));
        check("/msg bob   ", Err(ChatError::MsgUsage));
    }

    // ----- Rooms ----------------------------------------------------------

    fn id(n: usize) -> MemberId {
        MemberId {
            token: n,
            serial: n as u64 + 100,
        }
    }

    fn rooms(max_room_members: usize, max_rooms: usize) -> Rooms {
        Rooms::new(&ChatConfig {
            max_room_members,
            max_rooms,
            ..ChatConfig::default()
        })
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
    fn error_texts_are_the_documented_ones() {
        let texts: Vec<String> = [
            ChatError::UnknownCommand,
            ChatError::NickInUse,
            ChatError::NoSuchNick,
            ChatError::BadName,
            ChatError::MsgUsage,
            ChatError::InvalidUtf8,
            ChatError::LineTooLong,
            ChatError::RoomFull,
            ChatError::TooManyRooms,
        ]
        .iter()
        .map(|e| e.to_string())
        .collect();
        assert_eq!(
            texts,
            [
                "unknown command",
                "nick in use",
                "no such nick",
                "bad name",
                "usage: /msg NICK TEXT",
                "invalid UTF-8",
                "line too long",
                "room full",
                "too many rooms"
            ]
        );
    }
}
