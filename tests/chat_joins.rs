//! Joins to and leaves from a big room are spread over loop turns: a chat
//! join or leave tells every member, so once a turn has delivered
//! `MAIL_PER_TURN` (16,384) letters the reactor stops accepting and stops
//! acting on events for that turn, and the rest of a burst of newcomers
//! (or of hang-ups) waits for the next turn instead of making one turn
//! long.
//! A line to a big room is written over several turns too: a turn writes to
//! at most `WRITES_PER_TURN` (512) connections.
//! With several reactors a join's letters are queued by every reactor
//! hosting the room at its drain step, and the accepting reactor counts
//! them all as its turn's (`Cx::owe_letters`), so the bound is the same.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::{Daemon, wait_until};

/// `MAIL_PER_TURN` in src/reactor/mod.rs.
const MAIL_PER_TURN: usize = 16_384;
/// `WRITES_PER_TURN` in src/reactor/mod.rs.
const WRITES_PER_TURN: usize = 512;

#[test]
fn a_burst_of_joins_to_a_big_room_is_accepted_over_several_turns() {
    let d = Daemon::start(&["--trace"]);
    // A lobby of 300 members, each in before the next, reading nothing:
    // the daemon only queues their notices (1 MiB apiece is plenty).
    let members: Vec<TcpStream> = (0..300).map(|_| join(&d)).collect();
    // Stop the daemon, so that 150 connections wait in the listen queue at
    // once; then let it go. Only the trace written after the stop counts.
    d.signal(libc::SIGSTOP);
    let before = d.stderr().len();
    let newcomers: Vec<TcpStream> = (0..150).map(|_| d.connect("chat")).collect();
    d.signal(libc::SIGCONT);
    for s in &newcomers {
        let mut byte = [0u8; 1];
        (&*s).read_exact(&mut byte).expect("a welcome");
    }
    assert!(wait_until(|| accepted_per_turn(&d.stderr()[before..])
        .iter()
        .sum::<usize>()
        >= 150));

    // Each newcomer's join is at least 300 letters, so a turn past the
    // budget accepts no more: at most budget / 300 + 1 newcomers a turn,
    // where one turn could take 128 (`ACCEPT_BATCH`) without the budget.
    let per_turn = accepted_per_turn(&d.stderr()[before..]);
    let most = per_turn.iter().copied().max().unwrap_or(0);
    assert!(
        most <= MAIL_PER_TURN / 300 + 1,
        "{most} connections accepted in one turn: {per_turn:?}"
    );
    drop(members);
}

#[test]
fn a_burst_of_leaves_from_a_big_room_is_served_over_several_turns() {
    let d = Daemon::start(&["--trace"]);
    // 300 members that stay, reading nothing, and 150 that will leave.
    let stayers: Vec<TcpStream> = (0..300).map(|_| join(&d)).collect();
    let leavers: Vec<TcpStream> = (0..150).map(|_| join(&d)).collect();
    // All 150 hang up while the daemon is stopped, so their FINs are
    // reported together when it goes on. (A shutdown, not a close: a
    // socket closed with unread notices in it would send a reset.)
    d.signal(libc::SIGSTOP);
    let before = d.stderr().len();
    for s in &leavers {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    d.signal(libc::SIGCONT);
    assert!(wait_until(|| {
        leaves_per_turn(&d.stderr()[before..]).iter().sum::<usize>() >= 150
    }));

    // Each leave is at least 300 letters (one per member that stays), so
    // at most budget / 300 + 1 leaves are acted on in a turn, where one
    // turn's 256 events could hold all 150 without the budget.
    let per_turn = leaves_per_turn(&d.stderr()[before..]);
    let most = per_turn.iter().copied().max().unwrap_or(0);
    assert!(
        most <= MAIL_PER_TURN / 300 + 1,
        "{most} leaves acted on in one turn: {per_turn:?}"
    );
    assert!(per_turn.len() >= 150 / (MAIL_PER_TURN / 300 + 1));
    drop((stayers, leavers));
}

#[test]
fn a_line_to_a_big_room_is_written_over_several_turns() {
    let d = Daemon::start(&["--trace"]);
    // 700 members, each in before the next; none reads after its welcome
    // (the kernel takes the few lines each gets).
    let members: Vec<TcpStream> = (0..700).map(|_| join(&d)).collect();
    let before = d.stderr().len();
    (&members[0]).write_all(b"one line for everyone\n").unwrap();
    assert!(wait_until(|| {
        writes_per_turn(&d.stderr()[before..]).iter().sum::<usize>() >= 700
    }));

    // One line is 700 writes; a turn makes at most `WRITES_PER_TURN` of
    // them (and the one a callback makes for its own connection), where
    // without the budget one turn made all 700.
    let per_turn = writes_per_turn(&d.stderr()[before..]);
    let most = per_turn.iter().copied().max().unwrap_or(0);
    assert!(
        most <= WRITES_PER_TURN + 1,
        "{most} writes in one turn: {per_turn:?}"
    );
    drop(members);
}

/// A new member of the lobby, once its welcome has come (so each joins
/// before the next).
fn join(d: &Daemon) -> TcpStream {
    let s = d.connect("chat");
    let mut first = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("* welcome"), "{first:?}");
    s
}

/// How many chat connections each traced turn accepted, for the turns that
/// accepted any.
fn accepted_per_turn(trace: &str) -> Vec<usize> {
    per_turn(trace, |line| {
        line.contains(" chat ") && line.ends_with(" accepted")
    })
}

/// How many chat connections each traced turn wrote to, for the turns that
/// wrote to any.
fn writes_per_turn(trace: &str) -> Vec<usize> {
    per_turn(trace, |line| line.contains(" chat wrote "))
}

/// How many chat members' hang-ups (their end of stream read) each traced
/// turn acted on, for the turns that acted on any.
fn leaves_per_turn(trace: &str) -> Vec<usize> {
    per_turn(trace, |line| line.ends_with(" chat read EOF"))
}

/// How many lines of the trace match `counted` in each turn, for the turns
/// with any. With several reactors (`SOCKETLAB_TEST_REACTORS=2`) their
/// lines interleave, each naming its reactor (`trace 1.2 r1 ...`), so the
/// turns are counted per reactor.
fn per_turn(trace: &str, counted: impl Fn(&str) -> bool) -> Vec<usize> {
    let mut counts = Vec::new();
    let mut current: std::collections::HashMap<&str, usize> = Default::default();
    for line in trace.lines() {
        let reactor = line
            .split(' ')
            .nth(2)
            .filter(|r| r.starts_with('r'))
            .unwrap_or("");
        if line.contains(" -- turn ") {
            if let Some(n) = current.remove(reactor).filter(|&n| n > 0) {
                counts.push(n);
            }
        } else if counted(line) {
            *current.entry(reactor).or_default() += 1;
        }
    }
    counts.extend(current.into_values().filter(|&n| n > 0));
    counts
}
