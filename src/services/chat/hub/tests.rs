//! The hub without a network: which inboxes a line reaches, the one order
//! of a room's lines when posters race on several threads, and how a
//! reactor applies what it drains.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::ChatConfig;
use crate::services::chat::LOBBY;

fn across(reactors: usize) -> Hub {
    Hub::across(
        &ChatConfig::default(),
        Arc::new(Group::new(reactors, 1000, 0)),
    )
}

fn member(reactor: usize, token: usize) -> MemberId {
    MemberId {
        reactor,
        token,
        serial: token as u64 * 10,
    }
}

fn inboxes(hub: &Hub) -> &Inboxes {
    match hub.sequencer() {
        Sequencer::Inboxes(inboxes) => inboxes,
        Sequencer::Local => panic!("a hub across reactors has inboxes"),
    }
}

/// Everything in reactor `index`'s inbox, taken.
fn drained(hub: &Hub, index: usize) -> Vec<Posted> {
    let mut items = Vec::new();
    inboxes(hub).take(index, &mut items);
    items
}

fn said(room: &str, text: &'static str) -> Posted {
    Posted::Room {
        room: room.to_string(),
        change: Change::None,
        line: Some(Bytes::from_static(text.as_bytes())),
    }
}

/// Says `text` to `room` through the hub, as a session does.
fn say(hub: &Hub, room: &str, text: &'static str) {
    hub.locked(|dir, seq| {
        if let Sequencer::Inboxes(i) = seq {
            i.post(
                dir,
                room,
                Change::None,
                Some(Bytes::from_static(text.as_bytes())),
            );
        }
    });
}

// ----- Where a line goes -----------------------------------------------------

#[test]
fn a_line_reaches_the_inbox_of_each_reactor_hosting_the_room_and_no_other() {
    let hub = across(3);
    {
        let mut dir = hub.directory();
        dir.arrive(member(0, 1)).unwrap();
        dir.arrive(member(2, 1)).unwrap();
        dir.arrive(member(2, 2)).unwrap();
    }
    say(&hub, LOBBY, "hello\n");
    assert_eq!(drained(&hub, 0), [said(LOBBY, "hello\n")]);
    assert_eq!(drained(&hub, 1), [], "reactor 1 hosts nobody");
    assert_eq!(
        drained(&hub, 2),
        [said(LOBBY, "hello\n")],
        "one push per reactor, not one per member"
    );
}

#[test]
fn a_leaver_s_reactor_hears_of_it_even_when_it_hosts_nobody_else_there() {
    let hub = across(2);
    let (a, b) = (member(0, 1), member(1, 1));
    hub.locked(|dir, seq| {
        dir.arrive(a).unwrap();
        dir.arrive(b).unwrap();
        let Sequencer::Inboxes(i) = seq else {
            unreachable!()
        };
        dir.depart(b).unwrap();
        i.post(dir, LOBBY, Change::Left(b), None);
    });
    let left = Posted::Room {
        room: LOBBY.to_string(),
        change: Change::Left(b),
        line: None,
    };
    assert_eq!(drained(&hub, 0), std::slice::from_ref(&left));
    assert_eq!(drained(&hub, 1), [left]);
}

#[test]
fn a_line_sequenced_elsewhere_is_delivered_to_every_hosting_reactor() {
    let hub = across(2);
    {
        let mut dir = hub.directory();
        dir.arrive(member(0, 1)).unwrap();
        dir.arrive(member(1, 1)).unwrap();
    }
    assert_eq!(
        hub.deliver_sequenced(LOBBY, Bytes::from_static(b"from afar\n")),
        2
    );
    hub.deliver_sequenced("nowhere", Bytes::from_static(b"lost\n"));
    for r in 0..2 {
        assert_eq!(drained(&hub, r), [said(LOBBY, "from afar\n")]);
    }
}

#[test]
fn a_claims_answer_wakes_its_member_on_the_members_own_reactor_only() {
    let hub = across(3);
    let (m, n) = (member(1, 4), member(2, 7));
    hub.directory().arrive(m).unwrap();
    hub.directory().arrive(n).unwrap();
    inboxes(&hub).wake(m);
    assert_eq!(drained(&hub, 1), [Posted::Wake { member: m }]);
    assert!(drained(&hub, 0).is_empty());
    assert!(
        drained(&hub, 2).is_empty(),
        "not the other members' reactors"
    );
    // A wake-up is no line: it counts for nothing in the inbox's bytes.
    inboxes(&hub).wake(n);
    assert_eq!(inboxes(&hub).waiting(2), 0);
}

#[test]
fn waiting_lines_count_in_the_fullness_a_poster_sees_elsewhere() {
    let hub = across(2);
    {
        let mut dir = hub.directory();
        dir.arrive(member(0, 1)).unwrap();
        dir.arrive(member(1, 1)).unwrap();
        dir.publish_fullest(LOBBY, 1, 100);
    }
    say(&hub, LOBBY, "12345\n");
    let dir = hub.directory();
    let i = inboxes(&hub);
    assert_eq!(i.fullest_elsewhere(&dir, LOBBY, 0), 106);
    assert_eq!(
        i.fullest_elsewhere(&dir, LOBBY, 1),
        6,
        "reactor 0's waiting line"
    );
    drop(dir);
    drained(&hub, 1);
    assert_eq!(i.waiting(1), 0, "taken lines are no longer waiting");
}

// ----- One order ---------------------------------------------------------------

#[test]
fn posters_racing_on_four_threads_leave_every_inbox_the_same_order() {
    const LINES: usize = 2_000;
    let hub = Arc::new(across(3));
    {
        let mut dir = hub.directory();
        for r in 0..3 {
            dir.arrive(member(r, 1)).unwrap();
        }
    }
    let posters: Vec<_> = (0..4)
        .map(|t| {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || {
                for k in 0..LINES {
                    let line = Bytes::from(format!("t{t} {k}\n"));
                    hub.locked(|dir, seq| {
                        if let Sequencer::Inboxes(i) = seq {
                            i.post(dir, LOBBY, Change::None, Some(line));
                        }
                    });
                }
            })
        })
        .collect();
    // Reactors drain while the posters post, as they would.
    let mut seen: Vec<Vec<Posted>> = vec![Vec::new(); 3];
    let mut rounds = 0;
    while seen[0].len() < 4 * LINES || seen[1].len() < 4 * LINES || seen[2].len() < 4 * LINES {
        rounds += 1;
        assert!(rounds < 10_000_000, "the posters never finished");
        for (r, items) in seen.iter_mut().enumerate() {
            let mut batch = Vec::new();
            inboxes(&hub).take(r, &mut batch);
            items.extend(batch);
        }
    }
    for p in posters {
        p.join().unwrap();
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    // Each poster's own lines keep their order.
    for t in 0..4 {
        let mine: Vec<String> = seen[0]
            .iter()
            .filter_map(|p| match p {
                Posted::Room { line: Some(l), .. } => Some(String::from_utf8(l.to_vec()).unwrap()),
                _ => None,
            })
            .filter(|l| l.starts_with(&format!("t{t} ")))
            .collect();
        let expected: Vec<String> = (0..LINES).map(|k| format!("t{t} {k}\n")).collect();
        assert_eq!(mine, expected);
    }
}

// ----- What a reactor does with what it drains --------------------------------

/// Applies `items` on reactor `index` of `hub`; returns the letters, as
/// `(token, text)`.
fn apply(hosted: &mut Hosted, items: Vec<Posted>) -> Vec<(usize, String)> {
    let mut letters = Vec::new();
    for item in items {
        hosted.apply(item, &mut |token, _serial, line| {
            letters.push((token, String::from_utf8(line.to_vec()).unwrap()))
        });
    }
    letters
}

fn room(room: &str, change: Change, text: Option<&'static str>) -> Posted {
    Posted::Room {
        room: room.to_string(),
        change,
        line: text.map(|t| Bytes::from_static(t.as_bytes())),
    }
}

#[test]
fn a_reactor_serves_a_member_exactly_the_lines_between_its_join_and_its_leave() {
    let hub = Arc::new(across(2));
    let mut hosted = Hosted::new(hub, 1);
    let (a, b, elsewhere) = (member(1, 5), member(1, 6), member(0, 9));
    let letters = apply(
        &mut hosted,
        vec![
            room(LOBBY, Change::Joined(a), Some("a joined\n")),
            room(LOBBY, Change::None, Some("one\n")),
            room(LOBBY, Change::Joined(elsewhere), Some("x joined\n")),
            room(LOBBY, Change::Joined(b), Some("b joined\n")),
            room(LOBBY, Change::None, Some("two\n")),
            room(LOBBY, Change::Left(a), Some("a left\n")),
            room(LOBBY, Change::None, Some("three\n")),
            room(LOBBY, Change::Left(b), None),
            room(LOBBY, Change::None, Some("to nobody here\n")),
        ],
    );
    let to = |token: usize| -> Vec<&str> {
        letters
            .iter()
            .filter(|(t, _)| *t == token)
            .map(|(_, l)| l.as_str())
            .collect()
    };
    assert_eq!(
        to(5),
        ["a joined\n", "one\n", "x joined\n", "b joined\n", "two\n"]
    );
    assert_eq!(to(6), ["b joined\n", "two\n", "a left\n", "three\n"]);
    assert!(
        to(9).is_empty(),
        "a member of another reactor is not served here"
    );
    assert!(hosted.members(LOBBY).is_empty());
}

#[test]
fn a_private_line_reaches_its_one_member() {
    let hub = Arc::new(across(2));
    let mut hosted = Hosted::new(hub, 0);
    let letters = apply(
        &mut hosted,
        vec![Posted::To {
            member: member(0, 3),
            line: Bytes::from_static(b"psst\n"),
        }],
    );
    assert_eq!(letters, [(3, "psst\n".to_string())]);
}
