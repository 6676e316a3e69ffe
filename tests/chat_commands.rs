//! The chat service's commands, notices and errors, line by line against
//! PROTOCOL.md §4, over real sockets to the real daemon. What a session
//! answers to each command is unit-tested without a network, in
//! src/services/chat/session_tests.rs; these tests keep what needs the
//! real loop (sockets, FINs and resets, timers, limits, tracing).
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
fn crlf_line_endings_are_accepted_and_never_sent_back() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    a.send_raw(b"over telnet\r\n/nick tel\r\n");
    assert_eq!(a.said(), format!("{}: over telnet", a.nick));
    a.expect(&format!("* {} is now tel", a.nick));
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

// ----- /help, /quit, leaving -----------------------------------------------
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
fn an_idle_member_is_disconnected_and_its_room_told() {
    let d = Daemon::start(&["--set", "chat.idle_timeout_s=1"]);
    let mut idle = Member::join(&d);
    // The last bytes `idle` sees (`busy`'s join) are written after this
    // instant, so its idle time cannot run out before a second from it.
    let started = Instant::now();
    let mut busy = Member::join(&d);
    idle.expect(&format!("* {} joined lobby", busy.nick));
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
    // Stamped like the reactor's own lines: `trace 1.234567 #12 chat ...`,
    // or `trace 1.234567 r1 #12 chat ...` when the daemon runs several.
    for line in d.stderr().lines().filter(|l| l.contains("chat broadcast")) {
        let (_, rest) = line.split_once("trace ").expect("a trace line");
        let (stamp, rest) = rest.split_once(' ').unwrap();
        let (secs, micros) = stamp.split_once('.').unwrap();
        assert!(secs.parse::<u64>().is_ok(), "{line:?}");
        assert_eq!(micros.len(), 6, "{line:?}");
        let rest = match rest.split_once(' ') {
            Some((reactor, after)) if reactor.starts_with('r') => after,
            _ => rest,
        };
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
