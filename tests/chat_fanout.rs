//! Chat fan-out: every member gets every line, in one order shared by the
//! whole room, however many members there are, while slow or vanishing
//! members come and go.
//! Run: `cargo test --test chat_fanout`.

mod chat_support;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use chat_support::{Member, said_text, welcome_parts};
use common::Daemon;

/// Reads said lines until `last` (a said text) arrives, on a thread;
/// returns every line before it, notices included. Sets `seen` when a
/// line equal to `watch` arrives.
fn collect_until(
    mut reader: BufReader<TcpStream>,
    last: String,
    watch: Option<(String, Arc<AtomicBool>)>,
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read");
            assert!(n > 0, "EOF before {last:?}");
            line.pop();
            if said_text(&line) == Some(last.as_str()) {
                return lines;
            }
            if let Some((watched, seen)) = &watch
                && line == *watched
            {
                seen.store(true, Ordering::SeqCst);
            }
            lines.push(line);
        }
    })
}

/// The texts of said lines (stamps checked and removed); notices as is.
fn texts(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| said_text(l).map_or_else(|| l.clone(), str::to_string))
        .collect()
}

/// Checks that `lines` are `<nick>: <label> 0`, `<label> 1`, ... in order
/// (other lines, and lines of other senders, are skipped); returns how
/// many there were.
fn count_in_order(lines: &[String], nick: &str, label: &str) -> usize {
    let prefix = format!("{nick}: {label} ");
    let mut next = 0;
    for text in texts(lines) {
        if let Some(rest) = text.strip_prefix(&prefix) {
            let n: usize = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad line {text:?}"));
            assert_eq!(n, next, "{nick}'s lines out of order or missing");
            next += 1;
        }
    }
    next
}

#[test]
fn two_members_receive_every_message_in_the_same_order() {
    let d = Daemon::start(&[]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    // Both talk at once, each in one burst.
    let burst = |label: &str| -> Vec<u8> {
        (0..500)
            .map(|i| format!("{label} {i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    a.send_raw(&burst("from-a"));
    b.send_raw(&burst("from-b"));
    a.send("a done");
    b.send("b done");
    let mut seen = Vec::new();
    for m in [&mut a, &mut b] {
        let mut lines = Vec::new();
        let mut done = 0;
        while done < 2 {
            let line = m.said();
            if line.ends_with(" done") {
                done += 1;
            }
            lines.push(line);
        }
        seen.push(lines);
    }
    assert_eq!(seen[0], seen[1], "both see one order");
    assert_eq!(count_in_order(&seen[0], &a.nick, "from-a"), 500);
    assert_eq!(count_in_order(&seen[0], &b.nick, "from-b"), 500);
}

#[test]
fn a_hundred_members_receive_every_message_in_the_same_order() {
    let d = Daemon::start(&[]);
    let mut members: Vec<Member> = (0..100).map(|_| Member::join(&d)).collect();
    // Everyone skips the arrivals after their own.
    let last_nick = members[99].nick.clone();
    for m in &mut members[..99] {
        m.skip_until(&format!("* {last_nick} joined lobby"));
    }
    // One member says 400 lines in one write: more than one callback may
    // fan out to a room of 100 (see FANOUT_BUDGET), so the daemon serves it
    // over several loop turns. Nine others say 50 each.
    let burst = |label: &str, n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| format!("{label} {i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    members[0].send_raw(&burst("big", 400));
    for m in &mut members[1..10] {
        m.send_raw(&burst("small", 50));
    }
    for m in &mut members[..10] {
        m.send("done");
    }
    let senders: Vec<String> = members[..10].iter().map(|m| m.nick.clone()).collect();
    let mut first: Option<Vec<String>> = None;
    for m in &mut members {
        let mut lines = Vec::new();
        let mut done = 0;
        while done < 10 {
            let line = m.said();
            if line.ends_with(": done") {
                done += 1;
            }
            lines.push(line);
        }
        assert_eq!(lines.len(), 400 + 9 * 50 + 10);
        assert_eq!(count_in_order(&lines, &senders[0], "big"), 400);
        for nick in &senders[1..] {
            assert_eq!(count_in_order(&lines, nick, "small"), 50);
        }
        match &first {
            None => first = Some(lines),
            Some(first) => assert_eq!(*first, lines, "{} saw another order", m.nick),
        }
    }
}

#[test]
fn a_member_that_never_reads_is_cut_off_alone_and_the_others_get_every_line() {
    // A small limit, so the member that never reads reaches it soon; it is
    // cut off `STALL_GRACE` after the kernel stops taking its bytes, and
    // the sender is held meanwhile (its writes below block, then resume).
    let d = Daemon::start(&["--set", "chat.max_pending_output=262144"]);
    // Room order: a, slow, b, sender. `a` is served before `slow` in each
    // broadcast and `b` after it, so if the notice overtook a line, the
    // two would disagree.
    let mut a = Member::join(&d);
    let slow = Member::connect(&d);
    let slow_nick = a
        .line()
        .strip_prefix("* ")
        .unwrap()
        .replace(" joined lobby", "");
    let mut b = Member::join(&d);
    let sender = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    a.expect(&format!("* {} joined lobby", sender.nick));
    b.expect(&format!("* {} joined lobby", sender.nick));

    let notice = format!("* {slow_nick} left lobby (too slow)");
    let cut = Arc::new(AtomicBool::new(false));
    let sender_nick = sender.nick.clone();
    let done = format!("{sender_nick}: done");
    let (a_reader, _a_writer) = a.split();
    let (b_reader, _b_writer) = b.split();
    let a_lines = collect_until(a_reader, done.clone(), Some((notice.clone(), cut.clone())));
    let b_lines = collect_until(b_reader, done.clone(), None);
    let (s_reader, mut s_writer) = sender.split();
    let s_lines = collect_until(s_reader, done, None);

    // Say 1 KB lines until `slow` is cut off: its kernel buffers fill
    // first, then its outbox passes the limit.
    let pad = "p".repeat(1000);
    let mut said = 0;
    while !cut.load(Ordering::SeqCst) {
        assert!(said < 50_000, "never cut off");
        let batch: String = (said..said + 16)
            .map(|i| format!("n {i} {pad}\n"))
            .collect();
        s_writer.write_all(batch.as_bytes()).unwrap();
        said += 16;
    }
    // Lines said after the cut-off reach the others too.
    for i in said..said + 16 {
        s_writer
            .write_all(format!("n {i} after\n").as_bytes())
            .unwrap();
    }
    s_writer.write_all(b"done\n").unwrap();
    let said = said + 16;

    let a_lines = a_lines.join().unwrap();
    let b_lines = b_lines.join().unwrap();
    let s_lines = s_lines.join().unwrap();
    for lines in [&a_lines, &b_lines, &s_lines] {
        assert_eq!(count_in_order(lines, &sender_nick, "n"), said);
        assert_eq!(lines.iter().filter(|l| **l == notice).count(), 1);
        assert_eq!(
            lines.len(),
            said + 1,
            "nothing but the lines and the notice"
        );
    }
    assert_eq!(texts(&a_lines), texts(&b_lines), "a and b saw one order");
    assert_eq!(texts(&a_lines), texts(&s_lines), "the sender saw it too");

    // The slow member's connection ends with a FIN, not a reset.
    let mut slow = slow.split().0;
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).expect("clean end of stream");
    assert!(rest.starts_with(b"* welcome "));
}

#[test]
fn a_member_vanishing_mid_broadcast_does_not_disturb_the_others() {
    let d = Daemon::start(&[]);
    let mut stay = Member::join(&d);
    let mut leaver = Member::join(&d);
    let sender = Member::join(&d);
    stay.expect(&format!("* {} joined lobby", leaver.nick));
    stay.expect(&format!("* {} joined lobby", sender.nick));
    leaver.expect(&format!("* {} joined lobby", sender.nick));
    let leaver_nick = leaver.nick.clone();
    let sender_nick = sender.nick.clone();

    let done = format!("{sender_nick}: done");
    let (stay_reader, _stay_writer) = stay.split();
    let stay_lines = collect_until(stay_reader, done.clone(), None);
    let (s_reader, mut s_writer) = sender.split();
    let s_lines = collect_until(s_reader, done, None);

    let burst: String = (0..2000)
        .map(|i| format!("m {i} {}\n", "x".repeat(100)))
        .collect();
    s_writer.write_all(burst.as_bytes()).unwrap();
    // The leaver reads one line, then closes with the rest unread: its
    // kernel answers further data with a reset.
    assert!(leaver.said().starts_with(&format!("{sender_nick}: m 0 ")));
    drop(leaver);
    s_writer
        .write_all(burst.replace("m ", "k ").as_bytes())
        .unwrap();
    s_writer.write_all(b"done\n").unwrap();

    for lines in [stay_lines.join().unwrap(), s_lines.join().unwrap()] {
        assert_eq!(count_in_order(&lines, &sender_nick, "m"), 2000);
        assert_eq!(count_in_order(&lines, &sender_nick, "k"), 2000);
        let left = format!("* {leaver_nick} left lobby");
        assert_eq!(lines.iter().filter(|l| **l == left).count(), 1);
        assert_eq!(lines.len(), 4001);
    }
}

#[test]
fn two_thousand_members_connected_at_once_are_all_welcomed_and_hear_a_broadcast() {
    const MEMBERS: usize = 2000;
    let d = Daemon::start(&[]);
    // Connect everyone first, so the daemon accepts them in batches.
    let mut members: Vec<BufReader<TcpStream>> = (0..MEMBERS)
        .map(|_| BufReader::new(d.connect("chat")))
        .collect();
    let mut counts = Vec::with_capacity(MEMBERS);
    let mut nicks = Vec::with_capacity(MEMBERS);
    for m in &mut members {
        let mut line = String::new();
        m.read_line(&mut line).unwrap();
        let (nick, online) = welcome_parts(line.trim_end_matches('\n'));
        nicks.push(nick);
        counts.push(online);
    }
    // Nobody left, so the arrivals counted 1, 2, ..., 2000.
    counts.sort_unstable();
    assert_eq!(counts, (1..=MEMBERS).collect::<Vec<_>>());
    let mut unique = nicks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), MEMBERS, "nicks are unique");

    members[0]
        .get_mut()
        .write_all(b"hello, all two thousand\n")
        .unwrap();
    let expected = format!("{}: hello, all two thousand", nicks[0]);
    for (i, m) in members.iter_mut().enumerate() {
        // Arrival notices come first; skip to the line.
        let mut skipped = 0;
        loop {
            let mut line = String::new();
            assert!(m.read_line(&mut line).unwrap() > 0, "member {i}: EOF");
            if said_text(line.trim_end_matches('\n')) == Some(expected.as_str()) {
                break;
            }
            assert!(line.starts_with("* "), "member {i}: {line:?}");
            skipped += 1;
            assert!(skipped <= MEMBERS, "member {i}: too many lines");
        }
    }
    let mut who = String::new();
    members[0].get_mut().write_all(b"/who\n").unwrap();
    members[0].read_line(&mut who).unwrap();
    assert_eq!(who.trim_end().split(' ').count(), 3 + MEMBERS);
}

#[test]
fn a_burst_past_the_fanout_budget_is_served_without_more_input() {
    // 40,000 lines to a room of two is 80,000 letters, several times
    // FANOUT_BUDGET: a callback serves part of the burst and leaves the
    // rest with the reactor, which must offer it again by itself, because
    // the sender sends nothing more. The output limit is raised so that
    // neither member is cut off while the test reads one, then the other.
    const LINES: usize = 40_000;
    let d = Daemon::start(&["--set", "chat.max_pending_output=16777216"]);
    let mut a = Member::join(&d);
    let mut b = Member::join(&d);
    a.expect(&format!("* {} joined lobby", b.nick));
    let burst: String = (0..LINES).map(|i| format!("{i}\n")).collect();
    a.send_raw(burst.as_bytes());
    for i in 0..LINES {
        assert_eq!(b.said(), format!("{}: {i}", a.nick));
    }
    for i in 0..LINES {
        assert_eq!(a.said(), format!("{}: {i}", a.nick));
    }
}
