//! Joins to a big room are spread over loop turns: a chat join tells every
//! member, so the reactor stops accepting for a turn once that turn has
//! delivered `MAIL_PER_TURN` (16,384) letters, and the rest of a burst of
//! newcomers waits for the next turn instead of making one turn long.
//! With several reactors a join's letters are queued by every reactor
//! hosting the room at its drain step, and the accepting reactor counts
//! them all as its turn's (`Cx::owe_letters`), so the bound is the same.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;

use common::{Daemon, wait_until};

/// `MAIL_PER_TURN` in src/reactor/mod.rs.
const MAIL_PER_TURN: usize = 16_384;

#[test]
fn a_burst_of_joins_to_a_big_room_is_accepted_over_several_turns() {
    let d = Daemon::start(&["--trace"]);
    // A lobby of 300 members, each in before the next, reading nothing:
    // the daemon only queues their notices (1 MiB apiece is plenty).
    let mut members = Vec::new();
    for _ in 0..300 {
        let s = d.connect("chat");
        let mut first = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with("* welcome"), "{first:?}");
        members.push(s);
    }
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

/// How many chat connections each traced turn accepted, for the turns that
/// accepted any. With several reactors (`SOCKETLAB_TEST_REACTORS=2`) their
/// lines interleave, each naming its reactor (`trace 1.2 r1 ...`), so the
/// turns are counted per reactor.
fn accepted_per_turn(trace: &str) -> Vec<usize> {
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
        } else if line.contains(" chat ") && line.ends_with(" accepted") {
            *current.entry(reactor).or_default() += 1;
        }
    }
    counts.extend(current.into_values().filter(|&n| n > 0));
    counts
}
