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
//!  lines, |  --output stalled----------> "left (too slow)", abort -----> Gone
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
//! # Across reactors
//!
//! With `reactors = N` chat connections are spread over N loops, and the
//! rooms, nicks and member count stay the daemon's (PROTOCOL.md §8). The
//! directory then lives behind one lock in the [`Hub`], and a line is not
//! queued by its poster but pushed, under that lock, into the inbox of
//! every reactor hosting its room (its own included); each reactor queues
//! it for its own members when it drains its inbox. That is what keeps
//! one order per room; hub.rs explains it, with what it costs per line,
//! and the seam for lines put in order outside this daemon. With one
//! reactor the poster fans out itself, as described above.
//!
//! # Slow consumers
//!
//! A member is too slow when it does not read: its unsent output reached
//! `chat.max_pending_output` (default 1 MiB), the kernel refused to take
//! more, and the output then stayed at or over the limit for the reactor's
//! `STALL_GRACE` (2 s). The reactor calls `on_output_full` then, and the
//! member is cut off alone: its room gets `* <nick> left <room> (too slow)`
//! and its connection is aborted (its pending output is dropped and a FIN
//! sent; a line the kernel had only partly taken arrives truncated). A
//! member that stays connected never misses a line. The notice is a
//! broadcast like any other, so every member sees it between the same two
//! lines. Output over the limit alone is not slowness: a burst outruns the
//! reactor's write budget for a turn (next section) while the client reads
//! at full speed, and such a member is never cut.
//!
//! # Bursts
//!
//! One read of `x\n` lines becomes about fifteen times its size in said
//! lines for every member (the stamp and the nick), while the reactor
//! writes at most `WRITE_BUDGET` (64 KiB) to a connection per turn. So the
//! room paces the sender, not the other way round: each callback first
//! works out the room's *headroom*, how much more every member can be given
//! before the fullest one reaches the limit, and serves lines only while
//! its own output (it hears every line it says) has grown by less than
//! that. (With several reactors its own copy arrives only when its reactor
//! drains its inbox, so the bytes it posted are counted instead, and the
//! members on other reactors count by the figures those reactors publish:
//! hub.rs, "Pacing across reactors".) A room at the limit is *congested*: the rest of the input stays
//! with the reactor, the session holds its input (`Cx::hold_input`), so
//! nothing more is read from the sender and TCP slows it down, and after
//! [`CONGESTION_RETRY`] (`on_timer`) the held lines are offered again. A
//! `/msg` to a member at the limit waits the same way, and so do a
//! member's own replies (`/who` flooded without reading). So a member's
//! output never passes the limit by more than one line, however large the
//! burst, and a member that never reads holds its room up for
//! `STALL_GRACE` at most. Polling the room every few milliseconds while it
//! is congested is the simple choice; a production server would have the
//! member that drains wake the senders waiting on it.
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
//! the session keeps no copy of its input. (The budget bounds the letters of
//! one callback; the headroom of "Bursts" bounds the bytes.)
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
//!
//! # Where the parts live
//!
//! This file is the session: its state machine, its commands and
//! departures. The rest is in files named for what they hold: `line.rs`
//! cuts the byte stream into lines, `commands.rs` says what a line means
//! (and the errors a line can earn), `fanout.rs` how a line reaches its
//! room and how much a callback may say, `rooms.rs` is the directory every
//! chat session shares, and `hub.rs` where it lives and where a room's
//! lines are put in order.

pub mod cluster;
mod clustered;
mod commands;
mod fanout;
mod hub;
mod line;
mod rooms;
#[cfg(test)]
mod session_tests;

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{CloseReason, Cx, clock};
pub use cluster::Cluster;
use clustered::{Claiming, Pending, Said, say};
pub use commands::{ChatError, Command, HELP, is_valid_name, parse};
pub use hub::{Change, Hosted, Hub, Inboxes, Posted, Sequencer};
pub use line::{Framed, LineSplitter};
pub use rooms::{ChatRoom, Member, MemberId, Moved, Renamed, Rooms};

/// The room every client arrives in.
pub const LOBBY: &str = "lobby";
/// The longest nick or room name, in bytes.
pub const MAX_NAME: usize = 32;
/// Letters (one line queued for one member) a callback may queue before
/// the rest of its input waits for the next loop turn (see "Fairness of
/// one read"). A letter costs about 48 bytes while it waits for delivery,
/// so this bounds that transient memory to under a megabyte per callback.
pub const FANOUT_BUDGET: usize = 16 * 1024;
/// How long a sender whose room is congested (a member's output at the
/// limit) waits before its held lines are offered again (see "Bursts").
pub const CONGESTION_RETRY: Duration = Duration::from_millis(5);

// ----- The session ---------------------------------------------------------

/// One chat connection.
pub struct Session {
    lines: LineSplitter,
    presence: Presence,
    /// The daemon's chat state (the reactor's `Hosted` holds the same),
    /// kept here so a callback can lock the directory while it queues
    /// output through its `Cx`.
    hub: Arc<Hub>,
    /// Bytes this callback said to its room through the reactors'
    /// inboxes. They reach our own output only when our reactor drains
    /// its inbox, after the callback, so they are counted here against the
    /// room's headroom (see "Bursts"). Always 0 with one reactor.
    posted: usize,
}

/// Where the client stands in the chat.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Presence {
    /// Accepted, not yet welcomed (before `on_open`).
    Arriving,
    /// Waiting, input held, for the cluster to answer a nick claim: a
    /// newcomer's guest nick, or a present member's `/nick`
    /// (clustered.rs).
    Claiming(Pending),
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
    /// Lines remain, but a recipient's output (or our own) is at the
    /// limit: the rest waits until it has room.
    Congested,
    /// A line started a nick claim; the rest waits for its answer.
    Waiting,
    /// The member left; the rest of the input is moot.
    Left,
}

impl Session {
    /// A session of the chat held in `hub`.
    pub fn new(max_line: usize, hub: Arc<Hub>) -> Session {
        Session {
            lines: LineSplitter::new(max_line),
            presence: Presence::Arriving,
            hub,
            posted: 0,
        }
    }

    /// Serves the complete lines at the start of `input`, within the
    /// budget; returns the bytes consumed and why it stopped.
    fn serve(&mut self, input: &[u8], cx: &mut Cx<'_>) -> (usize, Stop) {
        let mut consumed = 0;
        let mut spent = 0;
        // Every line said to the room reaches us too, so what our own
        // output grows by is what each member's grows by (see "Bursts").
        let start = cx.pending_output();
        self.posted = 0;
        let headroom = self.room_headroom(cx);
        loop {
            match self.presence {
                Presence::Present => {}
                Presence::Claiming(_) => return (consumed, Stop::Waiting),
                Presence::Arriving | Presence::Gone => return (input.len(), Stop::Left),
            }
            let rest = &input[consumed..];
            let complete = memchr(b'\n', rest).is_some();
            let grown = cx.pending_output().saturating_sub(start) + self.posted;
            if complete && grown >= headroom {
                return (consumed, Stop::Congested);
            }
            if complete && !clustered::has_room(cx) {
                return (consumed, Stop::Congested);
            }
            if spent >= FANOUT_BUDGET && complete {
                return (consumed, Stop::BudgetSpent);
            }
            let (n, framed) = self.lines.take_line(rest);
            match framed {
                Framed::Incomplete => return (consumed + n, Stop::NeedMore),
                Framed::TooLong => {
                    consumed += n;
                    reply_error(cx, ChatError::LineTooLong);
                    spent += 1;
                }
                Framed::Line(line) => {
                    if self.addressee_is_full(line, cx) {
                        // Not taken: the line is served again later.
                        return (consumed, Stop::Congested);
                    }
                    consumed += n;
                    spent += self.on_line(line, cx).max(1);
                }
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
        let Some(Member { nick, room }) = self.hub.directory().member(me).cloned() else {
            return 0;
        };
        let command = match parse(line) {
            Ok(command) => command,
            Err(e) => {
                reply_error(cx, e);
                return 1;
            }
        };
        let posted = &mut self.posted;
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
                let said = Some(said.freeze());
                self.hub.locked(|dir, seq| {
                    say(cx, seq, dir, &room, Change::None, said, posted, Said::Line)
                })
            }
            Command::Nick(new) => {
                let taken_here = self.hub.directory().find(new).is_some_and(|id| id != me);
                if new == nick || taken_here || !clustered::is_shared(cx) {
                    return self.rename(cx, new, false);
                }
                if clustered::held_elsewhere(cx, new) {
                    clustered::refuse_taken(cx);
                    return 1;
                }
                let what = Claiming::Rename {
                    to: new.to_string(),
                };
                match clustered::claim(cx, Some(new), what) {
                    Some(pending) => {
                        self.presence = Presence::Claiming(pending);
                        1
                    }
                    None => self.rename(cx, new, false),
                }
            }
            Command::Join(to) => self.hub.locked(|dir, seq| match dir.join(me, to) {
                Ok(Moved::Stayed) => {
                    cx.write_shared(notice(format_args!("{nick} joined {to}")));
                    1
                }
                Ok(Moved::From { from }) => {
                    let left = Some(notice(format_args!("{nick} left {from}")));
                    let joined = Some(notice(format_args!("{nick} joined {to}")));
                    let (l, j) = (Said::Left { nick: &nick }, Said::Joined { nick: &nick });
                    say(cx, seq, dir, &from, Change::Left(me), left, posted, l)
                        + say(cx, seq, dir, to, Change::Joined(me), joined, posted, j)
                }
                Err(e) => {
                    reply_error(cx, e);
                    1
                }
            }),
            Command::Who => {
                let who = clustered::who(cx, &self.hub, &room);
                cx.write_with(|out| {
                    let _ = writeln!(out, "* in {room}: {who}");
                });
                1
            }
            Command::Rooms => {
                let mut listing = String::from("* rooms:");
                for (name, count) in clustered::listing(cx, &self.hub) {
                    let _ = write!(listing, " {name}({count})");
                }
                listing.push('\n');
                cx.write(listing.as_bytes());
                1
            }
            Command::Msg { to, text } => {
                let stamp = clock::datetime(cx.wall_time());
                let line = Bytes::from(format!("{stamp} {nick} -> {to}: {text}\n"));
                let found = self.hub.directory().find(to);
                let Some(to_id) = found else {
                    if clustered::msg_elsewhere(cx, to, &line) {
                        cx.write_shared(line);
                        return 1;
                    }
                    reply_error(cx, ChatError::NoSuchNick);
                    return 1;
                };
                if to_id == me {
                    // Said to oneself: delivered once, below.
                } else if to_id.reactor == me.reactor {
                    cx.send_to(to_id.token, to_id.serial, line.clone());
                } else if let Sequencer::Inboxes(inboxes) = self.hub.sequencer() {
                    inboxes.post_to(to_id, line.clone());
                    inboxes.ring();
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
        match std::mem::replace(&mut self.presence, Presence::Gone) {
            Presence::Present => {}
            // Still in its room under its old nick: it leaves from there.
            Presence::Claiming(Pending {
                what: Claiming::Rename { .. },
                ..
            }) => clustered::abandon(cx),
            Presence::Claiming(_) => return clustered::abandon(cx),
            Presence::Arriving | Presence::Gone => return,
        }
        let me = MemberId::of(cx);
        let why = match how {
            Departure::Quit | Departure::Disconnected => Some(""),
            Departure::Idle => Some(" (idle)"),
            Departure::TooSlow => Some(" (too slow)"),
            // Nobody is told, but with several reactors the member's own
            // still hears `Left`, to forget it.
            Departure::Shutdown => None,
        };
        let posted = &mut self.posted;
        let left = self.hub.locked(|dir, seq| {
            let Member { nick, room } = dir.depart(me)?;
            clustered::release(cx, &nick);
            // The member is out of the room already, so this reaches the others.
            let line = why.map(|why| notice(format_args!("{nick} left {room}{why}")));
            let said = Said::Left { nick: &nick };
            say(cx, seq, dir, &room, Change::Left(me), line, posted, said);
            Some(())
        });
        if left.is_none() {
            return;
        }
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
        // A shared chat numbers guests over the cluster: the welcome waits
        // for the claim (clustered.rs). A full lobby is refused first.
        let lobby_full = self.hub.directory().lobby_is_full();
        if clustered::is_shared(cx)
            && !lobby_full
            && let Some(pending) = clustered::claim(cx, None, Claiming::Arrival)
        {
            self.presence = Presence::Claiming(pending);
            return;
        }
        self.welcome(None, cx);
    }

    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        match self.presence {
            Presence::Present => {}
            // Kept for after the claim (its input is held meanwhile).
            Presence::Claiming(_) => return 0,
            Presence::Arriving | Presence::Gone => return input.len(),
        }
        self.serve_input(input, cx)
    }

    /// The congestion retry: the held lines are offered again, and held
    /// again if the room is still full. Or a claim's answer (or its
    /// deadline): the member waits no more.
    fn on_timer(&mut self, cx: &mut Cx<'_>) {
        if let Presence::Claiming(pending) = &self.presence {
            let pending = pending.clone();
            self.settle(pending, cx);
            return;
        }
        cx.hold_input(false);
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

impl Session {
    /// Lets a newcomer in, under `granted` (a nick the cluster gave it) or
    /// a fresh local guest nick, welcomes it and tells the lobby; or
    /// refuses it.
    /// Returns false when it was refused.
    fn welcome(&mut self, granted: Option<String>, cx: &mut Cx<'_>) -> bool {
        let me = MemberId::of(cx);
        let posted = &mut self.posted;
        let arrived = self.hub.locked(|dir, seq| {
            let nick = match granted {
                Some(nick) => dir.arrive_as(me, nick)?,
                None => dir.arrive(me)?,
            };
            let online = dir.online();
            cx.write_with(|out| {
                let _ = writeln!(
                    out,
                    "* welcome {nick}; room {LOBBY}; {online} online; /help for commands"
                );
            });
            if let Some(notice) = clustered::newcomer_notice(cx) {
                cx.write(notice.as_bytes());
            }
            let joined = Some(notice(format_args!("{nick} joined {LOBBY}")));
            let said = Said::Joined { nick: &nick };
            say(
                cx,
                seq,
                dir,
                LOBBY,
                Change::Joined(me),
                joined,
                posted,
                said,
            );
            Ok(())
        });
        match arrived {
            Ok(()) => {
                self.presence = Presence::Present;
                true
            }
            Err(e) => {
                reply_error(cx, e);
                self.presence = Presence::Gone;
                cx.close();
                false
            }
        }
    }

    /// Serves input once the member is present (`on_input`).
    fn serve_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        // Serve straight from the reactor's buffer; a partial line, and
        // the lines past the budget, stay with the reactor.
        let (consumed, stop) = self.serve(input, cx);
        match stop {
            // Whole lines wait: offered again at the next turn (module docs).
            Stop::BudgetSpent => cx.offer_input_again(),
            // Whole lines wait for room: nothing more is read from this
            // client, which slows it down, until `on_timer` looks again.
            // The other reactors hosting the room are asked for fresh
            // figures meanwhile.
            Stop::Congested => {
                cx.hold_input(true);
                cx.set_timer(cx.now() + CONGESTION_RETRY);
                let me = MemberId::of(cx);
                let room = self.hub.directory().member(me).map(|m| m.room.clone());
                if let Some(room) = room {
                    self.hub.nudge(&room, me.reactor);
                }
            }
            // Input is held until the claim is answered (`on_timer`).
            Stop::Waiting | Stop::NeedMore | Stop::Left => {}
        }
        consumed
    }
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

pub(super) fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}
