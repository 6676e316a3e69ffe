//! Chat across daemons (`chat.cluster`, PROTOCOL.md §8): two daemons on
//! one Redis of the test's own form one chat; Redis going away makes each
//! chat local, and its return makes them one again.
//!
//! Needs `redis-server` (`.ci/install-tools`); without it every test says
//! SKIPPED and passes.

mod chat_support;
mod common;
mod redis_support;

use std::io::Write;
use std::time::Duration;

use chat_support::{Member, reactor_of};
use common::{Daemon, wait_until};
use redis_support::Redis;

/// `chat.cluster_nick_ttl_s` for these tests: the shortest allowed, so a
/// dead daemon's nicks come free quickly.
const NICK_TTL_S: &str = "3";

/// Starts a daemon in the cluster at `redis` and waits until its link is
/// up. As many reactors as SOCKETLAB_TEST_REACTORS says (one without it).
fn clustered(redis: &Redis) -> Daemon {
    clustered_with(redis, &[])
}

/// [`clustered`], with more arguments for `serve`.
fn clustered_with(redis: &Redis, extra: &[&str]) -> Daemon {
    let cluster = format!("chat.cluster={}", redis.address());
    let ttl = format!("chat.cluster_nick_ttl_s={NICK_TTL_S}");
    let mut args = vec!["--set", &cluster, "--set", &ttl];
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    assert!(
        wait_until(|| d.stderr().contains("chat cluster: connected")),
        "the daemon never connected to Redis:\n{}",
        d.stderr()
    );
    d
}

/// Connects a member to `d` and waits for its own arrival notice. Lines
/// said in the cluster before it arrived may come in between: its daemon
/// may receive them from Redis after it has let the member in.
fn join(d: &Daemon) -> Member {
    let mut m = Member::connect(d);
    m.nick = chat_support::welcome_nick(&m.line());
    m.skip_until(&format!("* {} joined lobby", m.nick));
    m
}

/// The next said line's text (`nick: text`), skipping notices.
fn next_said(m: &mut Member) -> String {
    loop {
        let line = m.line();
        if !line.starts_with("* ") {
            return chat_support::said_text(&line)
                .unwrap_or_else(|| panic!("{} expected a said line, got {line:?}", m.nick))
                .to_string();
        }
    }
}

/// The daemon's `/metrics` page.
fn get_metrics(d: &Daemon) -> String {
    use std::io::Read;
    let mut s = d.connect("admin");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Skips lines until one starts with `prefix`; returns it.
fn skip_to_prefix(m: &mut Member, prefix: &str) -> String {
    loop {
        let line = m.line();
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// Every member says `lines` lines at once, from threads of their own;
/// checks that every member heard every line, all in one order, and each
/// sender's in the order it sent them.
fn all_talk_at_once(members: &mut [Member], lines: usize) {
    let writers: Vec<_> = members
        .iter()
        .map(|m| {
            let mut w = m.stream().try_clone().unwrap();
            std::thread::spawn(move || {
                for i in 0..lines {
                    w.write_all(format!("line {i}\n").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let said = lines * members.len();
    let heard: Vec<Vec<String>> = members
        .iter_mut()
        .map(|m| (0..said).map(|_| next_said(m)).collect())
        .collect();
    for (i, h) in heard.iter().enumerate().skip(1) {
        assert_eq!(h, &heard[0], "member {i} heard another order");
    }
    for m in members.iter() {
        let own: Vec<&String> = heard[0]
            .iter()
            .filter(|l| l.starts_with(&format!("{}: ", m.nick)))
            .collect();
        let expected: Vec<String> = (0..lines)
            .map(|i| format!("{}: line {i}", m.nick))
            .collect();
        assert_eq!(
            own,
            expected.iter().collect::<Vec<_>>(),
            "{}'s lines",
            m.nick
        );
    }
}

#[test]
fn members_on_two_daemons_see_every_line_in_one_order() {
    let Some(redis) = Redis::start_tcp() else {
        return;
    };
    let (a, b) = (clustered(&redis), clustered(&redis));
    let mut members = [join(&a), join(&b), join(&a), join(&b)];
    let nicks: Vec<String> = members.iter().map(|m| m.nick.clone()).collect();
    let unique: std::collections::BTreeSet<&String> = nicks.iter().collect();
    assert_eq!(unique.len(), 4, "guest nicks are the cluster's: {nicks:?}");
    let last = format!("* {} joined lobby", nicks[3]);
    for m in &mut members[..3] {
        m.skip_until(&last);
    }

    all_talk_at_once(&mut members, 50);
}

#[test]
fn a_nick_taken_on_one_daemon_is_refused_on_the_other() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (clustered(&redis), clustered(&redis));
    let mut ada = join(&a);
    let mut other = join(&b);
    ada.send("/nick ada");
    ada.skip_until(&format!("* {} is now ada", ada.nick));
    other.skip_until(&format!("* {} is now ada", ada.nick));
    other.send("/nick ada");
    other.expect("! error: nick in use");
    // And a nick nobody has yet is granted on the other daemon.
    other.send("/nick bob");
    other.expect(&format!("* {} is now bob", other.nick));
}

#[test]
fn who_and_rooms_list_members_of_both_daemons() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (clustered(&redis), clustered(&redis));
    let mut ada = join(&a);
    let mut bob = join(&b);
    let mut cy = join(&b);
    ada.send("/nick ada");
    ada.skip_until(&format!("* {} is now ada", ada.nick));
    bob.send("/nick bob");
    ada.skip_until(&format!("* {} is now bob", bob.nick));
    cy.send("/join rust");
    ada.skip_until(&format!("* {} left lobby", cy.nick));
    // The view of the other daemon follows its messages: `joined rust`
    // comes just after the `left lobby` ada heard, so it may need a moment.
    let mut rooms = String::new();
    assert!(
        wait_until(|| {
            ada.send("/rooms");
            rooms = ada.line();
            rooms == "* rooms: lobby(2) rust(1)"
        }),
        "last answer: {rooms:?}"
    );
    ada.send("/who");
    ada.expect("* in lobby: ada bob");
}

#[test]
fn a_private_message_crosses_daemons() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (clustered(&redis), clustered(&redis));
    let mut ada = join(&a);
    let mut bob = join(&b);
    bob.send("/nick bob");
    ada.skip_until(&format!("* {} is now bob", bob.nick));
    ada.send("/msg bob across the cluster");
    let mine = next_said(&mut ada);
    assert_eq!(mine, format!("{} -> bob: across the cluster", ada.nick));
    assert_eq!(next_said(&mut bob), mine);
    ada.send("/msg nobody hello");
    ada.expect("! error: no such nick");
}

#[test]
fn without_redis_chat_goes_local_and_comes_back_shared() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (clustered(&redis), clustered(&redis));
    let mut a1 = join(&a);
    let mut a2 = join(&a);
    let mut b1 = join(&b);
    a1.skip_until(&format!("* {} joined lobby", b1.nick));
    a2.skip_until(&format!("* {} joined lobby", b1.nick));

    redis.kill();
    for m in [&mut a1, &mut a2, &mut b1] {
        let told = skip_to_prefix(m, "* chat is local only: ");
        assert!(told.len() > "* chat is local only: ".len(), "{told:?}");
    }
    a1.send("still here");
    assert_eq!(next_said(&mut a2), format!("{}: still here", a1.nick));
    assert_eq!(next_said(&mut a1), format!("{}: still here", a1.nick));
    b1.send("only here");
    assert_eq!(next_said(&mut b1), format!("{}: only here", b1.nick));
    // A member arriving during the outage is told too, once, right after
    // its welcome.
    let mut a3 = Member::connect(&a);
    a3.nick = chat_support::welcome_nick(&a3.line());
    let told = a3.line();
    assert!(told.starts_with("* chat is local only: "), "{told:?}");
    a3.expect(&format!("* {} joined lobby", a3.nick));

    redis.restart();
    for m in [&mut a1, &mut a2, &mut b1, &mut a3] {
        m.skip_until("* chat is shared again");
    }
    a1.send("across again");
    assert_eq!(next_said(&mut b1), format!("{}: across again", a1.nick));
    assert_eq!(next_said(&mut a2), format!("{}: across again", a1.nick));
    // b1 never heard a1's local line: the first said line it got from a1
    // was the one after the outage.
    assert!(
        a.stderr().contains("chat cluster: local only"),
        "{}",
        a.stderr()
    );
}

#[test]
fn a_daemon_killed_frees_its_nicks_after_the_ttl() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let mut a = clustered(&redis);
    let b = clustered(&redis);
    let mut ada = join(&a);
    let mut other = join(&b);
    ada.send("/nick ada");
    other.skip_until(&format!("* {} is now ada", ada.nick));
    a.child.kill().unwrap();
    a.wait();
    other.send("/nick ada");
    other.expect("! error: nick in use");
    // The claim lapses within the TTL of the last refresh, and the other
    // daemon drops the dead one's members at its next heartbeat.
    let granted = format!("* {} is now ada", other.nick);
    assert!(
        wait_until(|| {
            std::thread::sleep(Duration::from_millis(100));
            other.send("/nick ada");
            other.line() == granted
        }),
        "ada never came free"
    );
}

#[test]
fn a_subscription_dropped_by_redis_is_reported_not_silent() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = clustered(&redis);
    let mut a1 = join(&a);
    let mut r = redis.client();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 1mb 0 0")
        .query::<()>(&mut r)
        .unwrap();
    // One message over the hard limit: Redis closes every subscriber it
    // was queued for instead of buffering it.
    let big = "x".repeat(2 * 1024 * 1024);
    let receivers: u64 = redis::cmd("PUBLISH")
        .arg("chat:events")
        .arg(&big)
        .query(&mut r)
        .unwrap();
    assert_eq!(receivers, 1, "the daemon was subscribed");
    let told = skip_to_prefix(&mut a1, "* chat is local only: ");
    assert!(told.contains("subscription closed"), "{told:?}");
    a1.skip_until("* chat is shared again");
    let metrics = get_metrics(&a);
    for expected in [
        "socketlab_chat_cluster_subscriptions_lost_total 1\n",
        "socketlab_chat_cluster_reconnects_total 1\n",
        "socketlab_chat_cluster_connected 1\n",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
    assert!(
        a.stderr().contains("output-buffer limit"),
        "the log names the likely cause:\n{}",
        a.stderr()
    );
}

#[test]
fn bench_chat_spreads_its_members_over_the_cluster_and_every_line_arrives() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (clustered(&redis), clustered(&redis));
    let addrs = format!("{},{}", a.tcp("chat"), b.tcp("chat"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(["bench", "chat", "--addr", &addrs, "--members", "6"])
        .args(["--messages", "300", "--window", "32", "--json"])
        .args(["--time-limit", "10s"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the bench");
    // Bounded by --time-limit and the drain timeout; the wait is too.
    assert!(
        wait_until(|| child.try_wait().unwrap().is_some()),
        "the bench did not finish"
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("--json output");
    assert_eq!(json["joined"], 6);
    assert_eq!(json["lines_sent"], 300);
    assert_eq!(
        json["deliveries"], 1800,
        "three members on each daemon got every line"
    );
    assert_eq!(json["deliveries_expected"], 1800);
}

#[test]
fn lines_sent_before_the_welcome_wait_for_the_claims_in_order() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = clustered(&redis);
    let mut m = Member::connect(&a);
    // Sent before the guest nick is claimed: held, then served in order,
    // the second line after the /nick's own claim.
    m.send_raw(b"/nick early\nhello\n");
    m.nick = chat_support::welcome_nick(&m.line());
    m.expect(&format!("* {} joined lobby", m.nick));
    m.expect(&format!("* {} is now early", m.nick));
    assert_eq!(next_said(&mut m), "early: hello");
}

#[test]
fn a_gap_in_a_senders_sequence_is_counted_as_dropped() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = clustered(&redis);
    let mut r = redis.client();
    // Another daemon's messages 1 and 5, as if 2 to 4 had been lost.
    for seq in [1, 5] {
        let message = format!(
            r#"{{"from":"d-elsewhere","seq":{seq},"kind":"say","room":"nowhere","line":"x\n"}}"#
        );
        redis::cmd("PUBLISH")
            .arg("chat:events")
            .arg(message)
            .query::<u64>(&mut r)
            .unwrap();
    }
    assert!(
        wait_until(|| get_metrics(&a).contains("socketlab_chat_cluster_dropped_total 3\n")),
        "{}",
        get_metrics(&a)
    );
    assert!(
        a.stderr()
            .contains("3 message(s) from d-elsewhere lost before #5"),
        "{}",
        a.stderr()
    );
}

#[test]
fn a_burst_from_redis_beyond_one_turns_budget_is_delivered_whole() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = clustered(&redis);
    let mut m = join(&a);
    let mut r = redis.client();
    // More lines than one turn hands out (`FANOUT_BUDGET`, 16,384 letters),
    // and nothing after them to wake the daemon again.
    const LINES: usize = 20_000;
    let mut pipe = redis::pipe();
    for seq in 1..=LINES {
        let message = format!(
            r#"{{"from":"d-burst","seq":{seq},"kind":"say","room":"lobby","line":"2026-01-01 00:00:00 burst: {seq}\n"}}"#
        );
        pipe.cmd("PUBLISH").arg("chat:events").arg(message).ignore();
    }
    pipe.query::<()>(&mut r).unwrap();
    for seq in 1..=LINES {
        assert_eq!(next_said(&mut m), format!("burst: {seq}"));
    }
}

// ----- Daemons of several reactors -------------------------------------------

/// A clustered daemon of two reactors, with `--trace` to tell which
/// reactor accepted a member.
fn clustered_on_two(redis: &Redis) -> Daemon {
    clustered_with(redis, &["--reactors", "2", "--trace"])
}

/// Members joining `d` until one is on each of its two reactors (the
/// others leave); `[on reactor 0, on reactor 1]`. Every arrival is a nick
/// claimed in Redis whose answer wakes the member on its own reactor.
/// Bounded: 64 joins leave a reactor without one with a chance far below
/// 2^-50.
fn one_on_each(d: &Daemon) -> [Member; 2] {
    let mut found: [Option<Member>; 2] = [None, None];
    for _ in 0..64 {
        let m = join(d);
        let r = reactor_of(d, &m);
        if found[r].is_none() {
            found[r] = Some(m);
        }
        if let [Some(_), Some(_)] = &found {
            return found.map(Option::unwrap);
        }
    }
    panic!("64 members did not land on both reactors");
}

/// Reads up to `wanted`, past notices of members joining or leaving the
/// lobby (those [`one_on_each`] let go leave while the test goes on), and
/// nothing else.
fn expect_past_comings_and_goings(m: &mut Member, wanted: &str) {
    loop {
        let line = m.line();
        if line == wanted {
            return;
        }
        assert!(
            line.ends_with(" joined lobby") || line.ends_with(" left lobby"),
            "{} got {line:?} while waiting for {wanted:?}",
            m.nick
        );
    }
}

#[test]
fn members_on_every_reactor_of_two_daemons_see_every_line_in_one_order() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (clustered_on_two(&redis), clustered_on_two(&redis));
    let [a0, a1] = one_on_each(&a);
    let [b0, b1] = one_on_each(&b);
    all_talk_at_once(&mut [a0, a1, b0, b1], 40);
}

#[test]
fn nicks_and_private_lines_work_for_members_of_the_second_reactor() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (clustered_on_two(&redis), clustered_on_two(&redis));
    let [mut a0, mut a1] = one_on_each(&a);
    let [mut b0, mut b1] = one_on_each(&b);
    // A rename from reactor 1: its claim's answer wakes it there.
    a1.send("/nick ada");
    let renamed = format!("* {} is now ada", a1.nick);
    a1.nick = "ada".into();
    for m in [&mut a1, &mut a0, &mut b0, &mut b1] {
        m.skip_until(&renamed);
    }
    // Taken over the cluster, on either reactor of the other daemon, and
    // on the other reactor of its own.
    for m in [&mut b1, &mut b0, &mut a0] {
        m.send("/nick ada");
        expect_past_comings_and_goings(m, "! error: nick in use");
    }
    // A private line from daemon b's reactor 0 to ada, on a's reactor 1,
    // and one back to b's reactor 1.
    b1.send("/nick bob");
    let renamed = format!("* {} is now bob", b1.nick);
    b1.nick = "bob".into();
    for m in [&mut b1, &mut a1] {
        m.skip_until(&renamed);
    }
    b0.send("/msg ada from afar");
    assert_eq!(next_said(&mut a1), format!("{} -> ada: from afar", b0.nick));
    a1.send("/msg bob and back");
    assert_eq!(next_said(&mut b1), "ada -> bob: and back");
    // Every claim was answered, none given locally for want of an answer
    // (which a wake-up lost on the way to reactor 1 would come to).
    for d in [&a, &b] {
        assert!(
            !d.stderr().contains("no answer to a nick claim"),
            "{}",
            d.stderr()
        );
    }
    // `/who` on reactor 1 lists both daemons' members.
    a1.send("/who");
    let who = skip_to_prefix(&mut a1, "* in lobby: ");
    for nick in ["ada", "bob", &a0.nick, &b0.nick] {
        assert!(who.split(' ').any(|n| n == nick), "{nick} in {who:?}");
    }
}

#[test]
fn without_redis_both_reactors_are_told_and_keep_one_local_chat() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (clustered_on_two(&redis), clustered_on_two(&redis));
    let [mut a0, mut a1] = one_on_each(&a);
    let mut b0 = join(&b);

    redis.kill();
    for m in [&mut a0, &mut a1, &mut b0] {
        skip_to_prefix(m, "* chat is local only: ");
    }
    // Local, the daemon's two reactors still share the lobby.
    a1.send("from r1");
    assert_eq!(next_said(&mut a0), format!("{}: from r1", a1.nick));
    assert_eq!(next_said(&mut a1), format!("{}: from r1", a1.nick));
    a0.send("from r0");
    assert_eq!(next_said(&mut a1), format!("{}: from r0", a0.nick));

    redis.restart();
    for m in [&mut a0, &mut a1, &mut b0] {
        m.skip_until("* chat is shared again");
    }
    a1.send("across again");
    assert_eq!(next_said(&mut b0), format!("{}: across again", a1.nick));
    assert_eq!(next_said(&mut a0), format!("{}: across again", a1.nick));
}
