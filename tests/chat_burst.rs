//! Chat bursts: members that read at full speed are never cut off as too
//! slow, however large the burst said to their room; the sender is slowed
//! down instead, and every member gets every line, in order.
//! Run: `cargo test --test chat_burst`.

mod chat_support;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use chat_support::{Member, said_text};
use common::Daemon;

/// How long a reader waits for its next line before the test fails.
const READ_PATIENCE: Duration = Duration::from_secs(120);

/// Reads on a thread until the sender's line `done` arrives; fails on EOF,
/// on a departure notice, or on a line of the sender's out of order.
/// `expected(i)` is the text of the sender's `i`th line. Returns how many
/// of the sender's lines arrived.
fn read_all(
    mut reader: BufReader<TcpStream>,
    who: String,
    sender: String,
    expected: fn(usize) -> String,
) -> thread::JoinHandle<usize> {
    reader
        .get_ref()
        .set_read_timeout(Some(READ_PATIENCE))
        .unwrap();
    thread::spawn(move || {
        let prefix = format!("{sender}: ");
        let mut next = 0;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("{who}: read after {next} lines: {e}"));
            assert!(n > 0, "{who}: EOF after {next} of the sender's lines");
            line.pop();
            assert!(
                !(line.starts_with("* ") && line.contains(" left ")),
                "{who}: someone left: {line:?} after {next} lines"
            );
            let Some(text) = said_text(&line).and_then(|t| t.strip_prefix(&prefix)) else {
                continue;
            };
            if text == "done" {
                return next;
            }
            assert_eq!(text, expected(next), "{who}: line {next}");
            next += 1;
        }
    })
}

/// Connects `n` members to the lobby; the last one is the sender. Each
/// member has seen every later member join.
fn room_of(d: &Daemon, n: usize) -> Vec<Member> {
    let mut members: Vec<Member> = Vec::with_capacity(n);
    for _ in 0..n {
        let m = Member::join(d);
        for earlier in &mut members {
            earlier.expect(&format!("* {} joined lobby", m.nick));
        }
        members.push(m);
    }
    members
}

/// Says `lines` (each `expected(i)`) as one write of everything, with every
/// member reading in its own thread, then `done`; checks every member got
/// every line in order and nobody left.
fn burst(d: &Daemon, members: usize, lines: usize, expected: fn(usize) -> String) {
    let mut room = room_of(d, members);
    let sender = room.pop().unwrap();
    let sender_nick = sender.nick.clone();
    let mut readers = Vec::new();
    for m in room {
        let nick = m.nick.clone();
        readers.push(read_all(m.split().0, nick, sender_nick.clone(), expected));
    }
    let (s_reader, mut s_writer) = sender.split();
    readers.push(read_all(
        s_reader,
        sender_nick.clone(),
        sender_nick.clone(),
        expected,
    ));
    let mut paste = String::new();
    for i in 0..lines {
        paste.push_str(&expected(i));
        paste.push('\n');
    }
    paste.push_str("done\n");
    s_writer.write_all(paste.as_bytes()).unwrap();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), lines);
    }
}

#[test]
fn a_lone_member_reading_in_a_thread_gets_all_of_a_120_kb_burst_of_short_lines() {
    let d = Daemon::start(&[]);
    // 120 KB of `x\n`: one read queues about 1.5 MB of said lines.
    burst(&d, 1, 61_440, |_| "x".to_string());
}

#[test]
fn three_members_reading_get_all_of_a_2_mb_paste_of_60_byte_lines() {
    let d = Daemon::start(&[]);
    burst(&d, 3, 2 * 1024 * 1024 / 61, |i| {
        format!("{i:08} {}", "p".repeat(51))
    });
}

#[test]
fn four_members_reading_get_all_of_an_18_mb_flood() {
    let d = Daemon::start(&[]);
    burst(&d, 4, 18 * 1024 * 1024 / 101, |i| {
        format!("{i:08} {}", "f".repeat(91))
    });
}

#[test]
fn a_hundred_fast_readers_get_all_of_a_5_mb_paste_and_nobody_is_cut() {
    let d = Daemon::start(&[]);
    burst(&d, 100, 5 * 1024 * 1024 / 501, |i| {
        format!("{i:08} {}", "h".repeat(491))
    });
}
