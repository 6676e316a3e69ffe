//! The chat session through the test harness: commands, fan-out by mail,
//! departures, and the errors a line can earn. Grouped by what a member
//! does; every test starts from members who have arrived and whose
//! greetings were read.

use super::FANOUT_BUDGET;
use crate::config::Config;
use crate::reactor::CloseReason;
use crate::service_id::ServiceId;
use crate::services::clock;
use crate::services::testing::{Ending, Harness, harness};

/// A chat over `config` with `n` members who arrived in order (guest1,
/// guest2, ...) and whose greetings were taken.
fn chat_with(config: Config, n: usize) -> (Harness, Vec<usize>) {
    let mut h = harness(config);
    let members: Vec<usize> = (0..n).map(|_| h.open(ServiceId::Chat)).collect();
    for &m in &members {
        h.output(m);
    }
    (h, members)
}

fn chat(n: usize) -> (Harness, Vec<usize>) {
    chat_with(Config::default(), n)
}

/// What a line said at the harness's wall time looks like.
fn said(who: &str, text: &str) -> String {
    format!("{} {who}: {text}\n", clock::datetime(wall()))
}

fn wall() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)
}

// ----- Arriving ------------------------------------------------------------

#[test]
fn a_newcomer_is_welcomed_and_the_lobby_hears_of_it() {
    let (mut h, m) = chat(1);
    let b = h.open(ServiceId::Chat);
    assert_eq!(
        h.text(b),
        "* welcome guest2; room lobby; 2 online; /help for commands\n* guest2 joined lobby\n"
    );
    assert_eq!(h.text(m[0]), "* guest2 joined lobby\n");
}

#[test]
fn a_newcomer_to_a_full_lobby_is_refused_and_closed() {
    let mut config = Config::default();
    config.chat.max_room_members = 1;
    let (mut h, m) = chat_with(config, 1);
    let b = h.open(ServiceId::Chat);
    assert_eq!(h.text(b), "! error: room full\n");
    assert_eq!(h.recorded(b).ending, Some(Ending::Closed));
    assert!(h.text(m[0]).is_empty(), "the lobby hears nothing");
}

// ----- Saying --------------------------------------------------------------

#[test]
fn a_line_reaches_every_member_of_the_room_the_sender_included() {
    let (mut h, m) = chat(3);
    h.set_wall(wall());
    h.input(m[1], b"hello\r\n");
    for &member in &m {
        assert_eq!(h.text(member), said("guest2", "hello"), "member {member}");
    }
}

#[test]
fn a_line_split_over_many_reads_is_said_once_whole() {
    let (mut h, m) = chat(2);
    h.set_wall(wall());
    for b in b"split line\n" {
        h.input(m[0], &[*b]);
    }
    assert_eq!(h.text(m[1]), said("guest1", "split line"));
}

#[test]
fn empty_lines_are_ignored() {
    let (mut h, m) = chat(2);
    h.input(m[0], b"\n\r\n");
    assert!(h.text(m[0]).is_empty());
    assert!(h.text(m[1]).is_empty());
}

#[test]
fn more_lines_than_the_fanout_budget_are_all_said_in_order() {
    let (mut h, m) = chat(2);
    let lines = FANOUT_BUDGET / 2 + 10; // Two letters a line: over budget.
    let input: Vec<u8> = (0..lines)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    h.input(m[0], &input);
    assert!(h.unconsumed(m[0]).is_empty());
    let heard = h.text(m[1]);
    let texts: Vec<&str> = heard
        .lines()
        .map(|l| l.rsplit(": ").next().unwrap())
        .collect();
    let expected: Vec<String> = (0..lines).map(|i| i.to_string()).collect();
    assert_eq!(texts, expected);
}

// ----- Commands ------------------------------------------------------------

#[test]
fn nick_renames_and_tells_the_room() {
    let (mut h, m) = chat(2);
    h.input(m[0], b"/nick ada\n");
    assert_eq!(h.text(m[0]), "* guest1 is now ada\n");
    assert_eq!(h.text(m[1]), "* guest1 is now ada\n");
}

#[test]
fn nick_to_ones_own_nick_tells_only_oneself() {
    let (mut h, m) = chat(2);
    h.input(m[0], b"/nick guest1\n");
    assert_eq!(h.text(m[0]), "* guest1 is now guest1\n");
    assert!(h.text(m[1]).is_empty());
}

#[test]
fn nick_errors_go_to_the_sender_alone() {
    let (mut h, m) = chat(2);
    h.input(m[0], b"/nick guest2\n/nick bad!name\n/nick\n");
    assert_eq!(
        h.text(m[0]),
        "! error: nick in use\n! error: bad name\n! error: bad name\n"
    );
    assert!(h.text(m[1]).is_empty());
}

#[test]
fn join_moves_a_member_and_tells_both_rooms() {
    let (mut h, m) = chat(3);
    h.input(m[2], b"/join rust\n");
    for &member in &m {
        h.output(member);
    }
    h.input(m[0], b"/join rust\n");
    assert_eq!(h.text(m[0]), "* guest1 joined rust\n");
    assert_eq!(h.text(m[1]), "* guest1 left lobby\n");
    assert_eq!(h.text(m[2]), "* guest1 joined rust\n");
    h.set_wall(wall());
    h.input(m[0], b"only rust\n");
    assert!(h.text(m[1]).is_empty(), "the lobby does not hear rust");
    assert_eq!(h.text(m[2]), said("guest1", "only rust"));
}

#[test]
fn join_beyond_max_rooms_is_refused() {
    let mut config = Config::default();
    config.chat.max_rooms = 1;
    // A second member keeps the lobby, so rust would be a second room.
    let (mut h, m) = chat_with(config, 2);
    h.input(m[0], b"/join rust\n");
    assert_eq!(h.text(m[0]), "! error: too many rooms\n");
}

#[test]
fn who_lists_the_members_of_ones_room_by_name() {
    let (mut h, m) = chat(2);
    h.input(m[1], b"/nick bob\n");
    h.output(m[0]);
    h.output(m[1]);
    h.input(m[0], b"/who\n");
    assert_eq!(h.text(m[0]), "* in lobby: bob guest1\n");
    assert!(h.text(m[1]).is_empty());
}

#[test]
fn rooms_lists_every_room_with_its_count() {
    let (mut h, m) = chat(3);
    h.input(m[2], b"/join rust\n");
    h.output(m[0]);
    h.input(m[0], b"/rooms\n");
    assert_eq!(h.text(m[0]), "* rooms: lobby(2) rust(1)\n");
}

#[test]
fn msg_reaches_the_addressee_and_the_sender_only() {
    let (mut h, m) = chat(3);
    h.set_wall(wall());
    h.input(m[0], b"/msg guest2 hi there\n");
    let line = format!("{} guest1 -> guest2: hi there\n", clock::datetime(wall()));
    assert_eq!(h.text(m[0]), line);
    assert_eq!(h.text(m[1]), line);
    assert!(h.text(m[2]).is_empty());
}

#[test]
fn msg_errors_name_what_is_missing() {
    let (mut h, m) = chat(1);
    h.input(m[0], b"/msg nobody hi\n/msg guest1\n/msg\n");
    assert_eq!(
        h.text(m[0]),
        "! error: no such nick\n! error: usage: /msg NICK TEXT\n! error: usage: /msg NICK TEXT\n"
    );
}

#[test]
fn help_lists_the_commands_and_ends_with_a_marker() {
    let (mut h, m) = chat(1);
    h.input(m[0], b"/help\n");
    let text = h.text(m[0]);
    assert!(text.lines().all(|l| l.starts_with("* ")), "{text}");
    assert!(text.ends_with("* end of help\n"));
    for command in ["/nick", "/join", "/who", "/rooms", "/msg", "/help", "/quit"] {
        assert!(text.contains(command), "{command} missing from {text}");
    }
}

#[test]
fn bad_lines_earn_an_error_and_the_connection_stays() {
    let (mut h, m) = chat(2);
    h.input(m[0], b"/frobnicate\n/NICK x\n\xff\xfe\n");
    assert_eq!(
        h.text(m[0]),
        "! error: unknown command\n! error: unknown command\n! error: invalid UTF-8\n"
    );
    assert!(h.text(m[1]).is_empty());
    assert!(h.is_open(m[0]));
}

#[test]
fn a_line_over_max_line_is_refused_and_discarded_up_to_its_newline() {
    let mut config = Config::default();
    config.chat.max_line = 8;
    let (mut h, m) = chat_with(config, 2);
    h.set_wall(wall());
    h.input(m[0], b"0123456789");
    assert_eq!(h.text(m[0]), "! error: line too long\n");
    h.input(m[0], b"more of it\nok\n");
    assert_eq!(h.text(m[1]), said("guest1", "ok"));
}

// ----- Leaving -------------------------------------------------------------

#[test]
fn quit_says_bye_closes_and_tells_the_room() {
    for quit in [&b"/quit\n"[..], b"quit\n"] {
        let (mut h, m) = chat(2);
        h.input(m[0], quit);
        assert_eq!(h.text(m[0]), "* bye\n");
        assert_eq!(h.recorded(m[0]).ending, Some(Ending::Closed));
        assert_eq!(h.text(m[1]), "* guest1 left lobby\n");
    }
}

#[test]
fn a_hang_up_tells_the_room_once_and_drops_a_last_partial_line() {
    let (mut h, m) = chat(2);
    h.input(m[0], b"never finished");
    h.peer_closed(m[0]);
    assert_eq!(h.text(m[1]), "* guest1 left lobby\n");
    assert_eq!(h.recorded(m[0]).closed, Some(CloseReason::PeerClosed));
}

#[test]
fn an_idle_member_leaves_with_a_reason() {
    let (mut h, m) = chat(2);
    h.close(m[0], CloseReason::Idle);
    assert_eq!(h.text(m[1]), "* guest1 left lobby (idle)\n");
}

#[test]
fn nobody_is_told_of_departures_at_shutdown() {
    let (mut h, m) = chat(2);
    h.close(m[0], CloseReason::Shutdown);
    assert!(h.text(m[1]).is_empty());
    let c = h.open(ServiceId::Chat);
    assert!(h.text(c).contains("; 2 online;"), "guest1 is gone");
}

#[test]
fn a_member_too_slow_to_read_is_cut_off_alone_and_the_room_told() {
    let (mut h, m) = chat(3);
    h.set_output_limit(m[1], 100);
    h.stall(m[1]);
    for _ in 0..10 {
        h.input(m[0], b"a line long enough to fill a small limit\n");
    }
    assert_eq!(h.recorded(m[1]).ending, Some(Ending::Aborted));
    assert_eq!(h.recorded(m[1]).output_full, 1);
    let heard = h.text(m[2]);
    assert_eq!(heard.matches("* guest2 left lobby (too slow)\n").count(), 1);
    assert_eq!(heard.lines().count(), 11, "{heard}");
    assert!(h.is_open(m[0]) && h.is_open(m[2]));
}

#[test]
fn joining_the_room_one_is_in_is_confirmed_to_oneself_alone() {
    let (mut h, m) = chat(2);
    h.input(m[0], b"/join lobby\n");
    assert_eq!(h.text(m[0]), "* guest1 joined lobby\n");
    assert!(h.text(m[1]).is_empty());
}

#[test]
fn msg_to_oneself_arrives_once() {
    let (mut h, m) = chat(1);
    h.set_wall(wall());
    h.input(m[0], b"/msg guest1 note to self\n");
    let line = format!(
        "{} guest1 -> guest1: note to self\n",
        clock::datetime(wall())
    );
    assert_eq!(h.text(m[0]), line);
}

#[test]
fn lines_after_quit_in_the_same_read_are_not_served() {
    let (mut h, m) = chat(2);
    h.input(m[0], b"quit\nnot said\n");
    assert_eq!(h.text(m[0]), "* bye\n");
    assert_eq!(h.text(m[1]), "* guest1 left lobby\n");
}

#[test]
fn join_of_a_full_room_is_refused_and_the_member_stays() {
    let mut config = Config::default();
    config.chat.max_room_members = 1;
    let (mut h, m) = chat_with(config, 1);
    h.input(m[0], b"/join rust\n");
    h.output(m[0]);
    let b = h.open(ServiceId::Chat);
    h.output(b);
    h.input(b, b"/join rust\n/who\n");
    assert_eq!(h.text(b), "! error: room full\n* in lobby: guest2\n");
}
