//! The chat service's commands, notices and errors, line by line against
//! PROTOCOL.md §4, over real sockets to the real daemon.
//! Run: `cargo test --test chat_commands`.

mod chat_support;
mod common;

use std::io::Read;
use std::net::Shutdown;
use std::time::{Duration, Instant, SystemTime};

use chat_support::{Member, said_text, welcome_parts};
use common::{Daemon, PATIENCE, wait_until};
use socketlab::services::clock;

// ----- Arriving ------------------------------------------------------------

#[test]
fn a_newcomer_is_welcomed_under_a_guest_nick_and_the_lobby_hears_it_joined() {
    let d = Daemon::start(&[]);
    let mut a = Member::connect(&d);
    let (nick_a, online) = welcome_parts(&a.line());
    assert_eq!(online, 1);
    assert!(nick_a.starts_with("guest"), "{nick_a}");
    assert!(nick_a[5..].parse::<u64>().is_ok(), "{nick_a}");
    a.expect(&format!("* {nick_a} joined lobby"));

    let mut b = Member::connect(&d);
    let (nick_b, online) = welcome_parts(&b.line());
    assert_eq!(online, 2, "the newcomer is counted");
    assert_ne!(nick_a, nick_b);
    b.expect(&format!("* {nick_b} joined lobby"));
    a.expect(&format!("* {nick_b} joined lobby"));
}

#[test]
fn guest_numbers_are_never_reused_and_a_taken_guest_nick_is_skipped() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let k: u64 = a.nick[5..].parse().unwrap();
    a.send("/quit");
    a.expect("* bye");

    let mut b = Member::join(&d);
    assert_eq!(b.nick, format!("guest{}", k + 1));
    // b takes the nick the next newcomer would have had.
    b.send(&format!("/nick guest{}", k + 2));
    b.expect(&format!("* guest{} is now guest{}", k + 1, k + 2));
    let c = Member::join(&d);
    assert_eq!(c.nick, format!("guest{}", k + 3));
}

// ----- Saying --------------------------------------------------------------

#[test]
fn a_plain_line_reaches_every_member_of_the_room_the_sender_included() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));

    a.send("hello, world");
    let expected = format!("{}: hello, world", a.nick);
    assert_eq!(a.said(), expected);
    assert_eq!(b.said(), expected);
}

#[test]
fn crlf_line_endings_are_accepted_and_never_sent_back() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    a.send_raw(b"over telnet\r\n/nick tel\r\n");
    assert_eq!(a.said(), format!("{}: over telnet", a.nick));
    a.expect(&format!("* {} is now tel", a.nick));
}

#[test]
fn empty_lines_are_ignored() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    a.send_raw(b"\n\r\n\nafter\n");
    assert_eq!(a.said(), format!("{}: after", a.nick));
}

#[test]
fn a_line_split_over_many_writes_is_said_whole() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    a.stream().set_nodelay(true).unwrap();
    for piece in ["sp", "lit ", "li", "ne\r", "\n"] {
        a.send_raw(piece.as_bytes());
    }
    assert_eq!(a.said(), format!("{}: split line", a.nick));
}

#[test]
fn text_keeps_its_spaces_and_utf8() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    a.send("  héllo   wörld ✓ ");
    assert_eq!(a.said(), format!("{}:   héllo   wörld ✓ ", a.nick));
}

// ----- /nick ---------------------------------------------------------------

#[test]
fn nick_renames_and_the_whole_room_hears_it() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));

    a.send("/nick ada_L-9");
    let notice = format!("* {} is now ada_L-9", a.nick);
    a.expect(&notice);
    b.expect(&notice);
    a.send("hi");
    assert_eq!(b.said(), "ada_L-9: hi");
    assert_eq!(a.said(), "ada_L-9: hi");
}

#[test]
fn nick_to_your_own_nick_is_confirmed_to_you_alone() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    a.send(&format!("/nick {}", a.nick));
    a.expect(&format!("* {0} is now {0}", a.nick));
    b.expect_nothing_queued("lobby");
}

#[test]
fn nick_collisions_are_refused_and_the_old_nick_is_kept() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));

    let (guest_a, guest_b) = (a.nick.clone(), b.nick.clone());
    a.send("/nick ada");
    a.expect(&format!("* {guest_a} is now ada"));
    b.expect(&format!("* {guest_a} is now ada"));
    b.send("/nick ada");
    b.expect("! error: nick in use");
    // The nick a gave up is free again.
    b.send(&format!("/nick {guest_a}"));
    b.expect(&format!("* {guest_b} is now {guest_a}"));
    a.expect(&format!("* {guest_b} is now {guest_a}"));
    // Nicks are case-sensitive: Ada is not ada.
    b.send("/nick Ada");
    b.expect(&format!("* {guest_a} is now Ada"));
    a.expect(&format!("* {guest_a} is now Ada"));
}

#[test]
fn bad_names_are_refused_with_an_error_and_the_connection_stays() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let long = "x".repeat(33);
    for bad in [
        "/nick".to_string(),
        "/nick a b".to_string(),
        "/nick a.b".to_string(),
        "/nick émile".to_string(),
        format!("/nick {long}"),
        "/join".to_string(),
        "/join #rust".to_string(),
        format!("/join {long}"),
    ] {
        a.send(&bad);
        a.expect("! error: bad name");
    }
    let longest = "x".repeat(32);
    a.send(&format!("/nick {longest}"));
    a.expect(&format!("* {} is now {longest}", a.nick));
}

// ----- /join, /who, /rooms -------------------------------------------------

#[test]
fn join_tells_the_room_left_behind_and_the_new_room_the_joiner_included() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    let mut c = Member::join(&d);
    a.skip_until(&format!("* {} joined lobby", c.nick));
    b.expect(&format!("* {} joined lobby", c.nick));

    a.send("/join rust");
    a.expect(&format!("* {} joined rust", a.nick));
    b.expect(&format!("* {} left lobby", a.nick));
    c.expect(&format!("* {} left lobby", a.nick));

    b.send("/join rust");
    let joined = format!("* {} joined rust", b.nick);
    b.expect(&joined);
    a.expect(&joined);
    c.expect(&format!("* {} left lobby", b.nick));

    // Lines stay in their room.
    a.send("in rust");
    assert_eq!(a.said(), format!("{}: in rust", a.nick));
    assert_eq!(b.said(), format!("{}: in rust", a.nick));
    c.expect_nothing_queued("lobby");
    c.send("in lobby");
    assert_eq!(c.said(), format!("{}: in lobby", c.nick));
    a.expect_nothing_queued("rust");
}

#[test]
fn joining_the_room_you_are_in_is_confirmed_to_you_alone() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    a.send("/join lobby");
    a.expect(&format!("* {} joined lobby", a.nick));
    b.expect_nothing_queued("lobby");
}

#[test]
fn who_lists_the_room_sorted_and_rooms_lists_rooms_with_counts_sorted() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    let mut c = Member::join(&d);
    a.skip_until(&format!("* {} joined lobby", c.nick));
    a.send("/nick zed");
    a.skip_until(&format!("* {} is now zed", a.nick));
    b.send("/nick Bob");
    a.skip_until(&format!("* {} is now Bob", b.nick));
    c.send("/nick alice");
    a.skip_until(&format!("* {} is now alice", c.nick));

    // Byte order: upper case before lower case.
    a.send("/who");
    a.expect("* in lobby: Bob alice zed");

    b.send("/join b-room");
    b.skip_until("* Bob joined b-room");
    c.send("/join A");
    c.skip_until("* alice joined A");
    a.skip_until("* alice left lobby");
    a.send("/rooms");
    a.expect("* rooms: A(1) b-room(1) lobby(1)");
    c.send("/join b-room");
    c.skip_until("* alice joined b-room");
    c.send("/who");
    c.expect("* in b-room: Bob alice");
    c.send("/rooms");
    c.expect("* rooms: b-room(2) lobby(1)");
}

// ----- /msg ----------------------------------------------------------------

#[test]
fn msg_reaches_the_named_member_and_the_sender_and_nobody_else() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    let mut c = Member::join(&d);
    a.skip_until(&format!("* {} joined lobby", c.nick));
    b.expect(&format!("* {} joined lobby", c.nick));
    // Across rooms too.
    b.send("/join elsewhere");
    b.expect(&format!("* {} joined elsewhere", b.nick));
    a.expect(&format!("* {} left lobby", b.nick));
    c.expect(&format!("* {} left lobby", b.nick));

    a.send(&format!("/msg {}   psst,  listen ", b.nick));
    let expected = format!("{} -> {}: psst,  listen ", a.nick, b.nick);
    assert_eq!(a.said(), expected);
    assert_eq!(b.said(), expected);
    c.expect_nothing_queued("lobby");
}

#[test]
fn msg_to_yourself_arrives_once() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    a.send(&format!("/msg {} note to self", a.nick));
    assert_eq!(a.said(), format!("{0} -> {0}: note to self", a.nick));
    a.expect_nothing_queued("lobby");
}

#[test]
fn msg_to_an_unknown_nick_or_without_text_is_an_error() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    a.send("/msg nobody hello");
    a.expect("! error: no such nick");
    a.send(&format!("/msg {}", a.nick));
    a.expect("! error: usage: /msg NICK TEXT");
    a.send("/msg");
    a.expect("! error: usage: /msg NICK TEXT");
}

// ----- /help, /quit, leaving -----------------------------------------------

#[test]
fn help_describes_every_command_in_star_lines_ending_with_end_of_help() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    a.send("/help");
    let lines = a.skip_until("* end of help");
    assert!(lines.len() >= 7, "{lines:?}");
    for line in &lines {
        assert!(line.starts_with("* "), "{line:?}");
    }
    let text = lines.join("\n");
    for command in ["/nick", "/join", "/who", "/rooms", "/msg", "/help", "/quit"] {
        assert!(text.contains(command), "help does not mention {command}");
    }
}

#[test]
fn quit_says_bye_closes_and_the_room_hears_the_member_left() {
    let d = Daemon::start(&[]);
    for quit in ["/quit", "quit"] {
        let mut a = Member::join(&d);
        let mut b = Member::join(&d);
        a.expect(&format!("* {} joined lobby", b.nick));
        a.send(quit);
        a.expect("* bye");
        assert_eq!(a.read_to_eof(), Vec::<String>::new(), "nothing after bye");
        b.expect(&format!("* {} left lobby", a.nick));
        // Told exactly once, although the connection also closed.
        b.expect_nothing_queued("lobby");
        b.send("/quit");
        b.expect("* bye");
    }
}

#[test]
fn lines_after_quit_in_the_same_write_are_not_served() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    a.send_raw(b"quit\nnot said\n");
    a.expect("* bye");
    b.expect(&format!("* {} left lobby", a.nick));
    b.expect_nothing_queued("lobby");
}

#[test]
fn hanging_up_is_leaving_and_an_unfinished_line_is_dropped() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    a.send_raw(b"unfinished");
    a.stream().shutdown(Shutdown::Write).unwrap();
    b.expect(&format!("* {} left lobby", a.nick));
    b.expect_nothing_queued("lobby");
    // The daemon closes its side too.
    assert_eq!(a.read_to_eof(), Vec::<String>::new());
}

#[test]
fn a_member_that_resets_its_connection_leaves_once() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    // Unread input at close makes the kernel send RST.
    b.send("unread by a");
    b.said();
    let nick_a = a.nick.clone();
    drop(a);
    b.expect(&format!("* {nick_a} left lobby"));
    b.expect_nothing_queued("lobby");
}

// ----- Errors --------------------------------------------------------------

#[test]
fn unknown_commands_get_an_error_and_the_connection_stays() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    for line in ["/frobnicate", "/", "/NICK ada", "/ who"] {
        a.send(line);
        a.expect("! error: unknown command");
    }
    a.send("still here");
    assert_eq!(a.said(), format!("{}: still here", a.nick));
}

#[test]
fn invalid_utf8_is_dropped_with_an_error_and_the_connection_stays() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    a.send_raw(b"bad \xff\xfe bytes\n/nick \xc3\n");
    a.expect("! error: invalid UTF-8");
    a.expect("! error: invalid UTF-8");
    a.send("fine");
    assert_eq!(a.said(), format!("{}: fine", a.nick));
    assert_eq!(b.said(), format!("{}: fine", a.nick));
}

#[test]
fn a_line_at_the_limit_passes_and_one_byte_more_is_refused() {
    let d = Daemon::start(&["--set", "chat.max_line=100"]);
    let mut a = Member::join(&d);
    // The limit counts neither the `\n` nor a `\r` before it.
    let prefix = format!("{}: ", a.nick);
    let at_limit = "x".repeat(100);
    a.send_raw(format!("{at_limit}\r\n").as_bytes());
    assert_eq!(a.said(), format!("{prefix}{at_limit}"));
    a.send(&"y".repeat(101));
    a.expect("! error: line too long");
    a.send("short");
    assert_eq!(a.said(), format!("{prefix}short"));
}

#[test]
fn a_long_line_arriving_over_many_writes_is_dropped_up_to_its_newline() {
    let d = Daemon::start(&["--set", "chat.max_line=100"]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    // The error comes as soon as the line is known to be too long, before
    // its newline: the daemon does not wait for (or keep) the rest.
    a.send_raw(&[b'z'; 150]);
    a.expect("! error: line too long");
    for _ in 0..200 {
        a.send_raw(&[b'z'; 1000]);
    }
    a.send_raw(b"zz tail\nafter\n");
    assert_eq!(a.said(), format!("{}: after", a.nick));
    assert_eq!(b.said(), format!("{}: after", a.nick));
}

#[test]
fn a_client_sending_megabytes_without_a_newline_is_served_in_bounded_memory() {
    let d = Daemon::start(&["--set", "chat.max_line=100"]);
    let mut a = Member::join(&d);
    let before = d.rss();
    let chunk = vec![b'q'; 64 * 1024];
    for _ in 0..256 {
        a.send_raw(&chunk); // 16 MiB in all
    }
    a.send_raw(b"\nstill fine\n");
    a.expect("! error: line too long");
    assert_eq!(a.said(), format!("{}: still fine", a.nick));
    let grown = d.rss().saturating_sub(before);
    assert!(grown < 8 << 20, "the daemon grew by {grown} bytes");
}

// ----- Limits --------------------------------------------------------------

#[test]
fn a_connection_over_the_limit_gets_an_error_line_and_is_closed() {
    let d = Daemon::start(&["--set", "chat.max_connections=1"]);
    let _a = Member::join(&d);
    let mut extra = d.connect("chat");
    let mut reply = String::new();
    extra.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("! error: "), "{reply:?}");
    assert!(
        reply.ends_with('\n') && reply.lines().count() == 1,
        "{reply:?}"
    );
}

#[test]
fn a_full_room_and_too_many_rooms_are_refused() {
    let d = Daemon::start(&[
        "--set",
        "chat.max_room_members=2",
        "--set",
        "chat.max_rooms=2",
    ]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    // The lobby is full: a third client cannot arrive anywhere.
    let mut c = Member::connect(&d);
    assert_eq!(c.read_to_eof(), ["! error: room full"]);

    a.send("/join x");
    a.expect(&format!("* {} joined x", a.nick));
    b.expect(&format!("* {} left lobby", a.nick));
    let mut e = Member::join(&d);
    b.expect(&format!("* {} joined lobby", e.nick));
    // Rooms x and lobby exist; a third may not.
    b.send("/join y");
    b.expect("! error: too many rooms");
    e.send("/join x");
    e.expect(&format!("* {} joined x", e.nick));
    a.expect(&format!("* {} joined x", e.nick));
    b.expect(&format!("* {} left lobby", e.nick));
    b.send("/join x");
    b.expect("! error: room full");
    b.send("/who");
    b.expect(&format!("* in lobby: {}", b.nick));
}

#[test]
fn an_idle_member_is_disconnected_and_its_room_told() {
    let d = Daemon::start(&["--set", "chat.idle_timeout_s=1"]);
    let mut idle = Member::join(&d);
    let mut busy = Member::join(&d);
    idle.expect(&format!("* {} joined lobby", busy.nick));
    let started = Instant::now();
    // `busy` keeps itself active with /who, whose answer goes to it
    // alone, so nothing reaches `idle`.
    let notice = format!("* {} left lobby (idle)", idle.nick);
    let deadline = started + PATIENCE;
    'waiting: loop {
        assert!(Instant::now() < deadline, "no idle notice in time");
        busy.send("/who");
        loop {
            let line = busy.line();
            if line == notice {
                break 'waiting;
            }
            if line.starts_with("* in lobby: ") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(idle.read_to_eof(), Vec::<String>::new());
    busy.expect_nothing_queued("lobby");
}

// ----- Tracing -------------------------------------------------------------

#[test]
fn trace_shows_one_line_per_broadcast_with_the_recipient_count() {
    let d = Daemon::start(&["--trace"]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    a.send("to both");
    a.said();
    b.said();
    let broadcasts = || -> Vec<String> {
        d.stderr()
            .lines()
            .filter(|l| l.contains("chat broadcast"))
            .map(|l| l.split_once(" chat ").unwrap().1.to_string())
            .collect()
    };
    assert!(wait_until(|| broadcasts().len() >= 3));
    assert_eq!(
        broadcasts(),
        [
            "broadcast to 1 members",
            "broadcast to 2 members",
            "broadcast to 2 members"
        ]
    );
    // Stamped like the reactor's own lines: `trace 1.234567 #12 chat ...`.
    for line in d.stderr().lines().filter(|l| l.contains("chat broadcast")) {
        let (_, rest) = line.split_once("trace ").expect("a trace line");
        let (stamp, rest) = rest.split_once(' ').unwrap();
        let (secs, micros) = stamp.split_once('.').unwrap();
        assert!(secs.parse::<u64>().is_ok(), "{line:?}");
        assert_eq!(micros.len(), 6, "{line:?}");
        assert!(rest.starts_with('#'), "{line:?}");
    }
}

#[test]
fn said_lines_carry_the_local_time_of_saying() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let before = clock::datetime(SystemTime::now());
    a.send("what time is it");
    let line = a.line();
    let after = clock::datetime(SystemTime::now());
    let text = said_text(&line).expect("timestamp shape");
    assert_eq!(text, format!("{}: what time is it", a.nick));
    let stamp = &line[..19];
    assert!(
        before.as_str() <= stamp && stamp <= after.as_str(),
        "{stamp} is not between {before} and {after}"
    );
}
