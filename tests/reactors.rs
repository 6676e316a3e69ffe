//! Several reactors in one daemon (`--reactors 2`, PROTOCOL.md §8): the
//! kernel spreads connections over them, and to a client nothing changes:
//! echo, the limits (which count over every reactor), chat's one order per
//! room, SIGTERM, `/stats` with its per-reactor figures, and `--trace`
//! naming the reactor. The same suites run with one reactor elsewhere
//! (echo.rs, daemon.rs, chat_fanout.rs); with `SOCKETLAB_TEST_REACTORS=2`
//! in the environment those run on two as well.
//! Run: `cargo test --test reactors`.

mod chat_support;
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chat_support::{Member, reactor_of, said_text, welcome_parts};
use common::{Daemon, PATIENCE, read_to_end, wait_until};

fn two_reactors(extra: &[&str]) -> Daemon {
    let mut args = vec!["--reactors", "2"];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

/// `GET path` on the admin port, the body parsed as JSON.
fn stats(d: &Daemon) -> serde_json::Value {
    let mut s = d.connect("admin");
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = String::from_utf8(read_to_end(&mut s).unwrap()).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).expect("JSON")
}

fn metrics(d: &Daemon) -> String {
    let mut s = d.connect("admin");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    String::from_utf8(read_to_end(&mut s).unwrap()).unwrap()
}

fn echoes(s: &mut TcpStream) -> bool {
    s.write_all(b"ok?").is_ok() && {
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok?"
    }
}

fn closed_at_once(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(0))
}

/// Echo connections open on each reactor, as `/stats` reports them (the
/// admin connection asking counts on the first).
fn open_per_reactor(d: &Daemon) -> Vec<u64> {
    let v = stats(d);
    v["reactors"]
        .as_array()
        .expect("a reactors array")
        .iter()
        .map(|r| r["connections_open"].as_u64().unwrap())
        .collect()
}

#[test]
fn connections_are_spread_over_both_reactors_and_each_gets_its_own_bytes_back() {
    let d = two_reactors(&[]);
    let mut clients: Vec<TcpStream> = (0..64).map(|_| d.connect("echo")).collect();
    for (i, s) in clients.iter_mut().enumerate() {
        let message = format!("client {i} says {}", "x".repeat(i * 100));
        s.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0; message.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, message.as_bytes());
    }
    // 64 connections from 64 source ports: the kernel's hash leaving one
    // reactor without any has a chance of 2^-63. The other reactor's
    // figures are as of its latest turn's end, which may come just after
    // the echo did: wait for them.
    // (Read once per try: the admin connection of an earlier read may
    // still be closing on the other reactor.)
    let mut open = Vec::new();
    assert!(wait_until(|| {
        open = open_per_reactor(&d);
        open.iter().sum::<u64>() == 64 + 1
    }));
    assert_eq!(open.len(), 2, "{open:?}");
    assert_eq!(open.iter().sum::<u64>(), 64 + 1, "{open:?}");
    assert!(
        open.iter().all(|&n| n > 1),
        "one reactor took all: {open:?}"
    );
    let v = stats(&d);
    assert_eq!(v["services"]["echo"]["connections_open"], 64);
}

#[test]
fn udp_echo_answers_from_every_reactor() {
    let d = two_reactors(&[]);
    for i in 0..32 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(PATIENCE)).unwrap();
        let message = format!("datagram {i}");
        u.send_to(message.as_bytes(), d.udp("echo")).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = u.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], message.as_bytes());
        assert_eq!(
            from,
            d.udp("echo"),
            "the answer comes from the service's port"
        );
    }
}

/// Holds `limit` echo connections, shows that eight more are each closed at
/// once whichever reactor the kernel hands them to, and that there is room
/// again when one of the held ones leaves. Returns the rest, still held.
fn full_at(d: &Daemon, limit: usize) -> Vec<TcpStream> {
    let mut held: Vec<TcpStream> = (0..limit).map(|_| d.connect("echo")).collect();
    for s in &mut held {
        assert!(echoes(s));
    }
    for _ in 0..8 {
        let mut s = d.connect("echo");
        assert!(closed_at_once(&mut s));
    }
    drop(held.pop());
    assert!(wait_until(|| {
        let mut s = d.connect("echo");
        echoes(&mut s)
    }));
    held
}

#[test]
fn the_global_limit_counts_connections_on_every_reactor() {
    let d = two_reactors(&["--set", "limits.max_connections=6"]);
    let _held = full_at(&d, 6);
}

#[test]
fn a_service_limit_counts_connections_on_every_reactor() {
    let d = two_reactors(&["--set", "echo.max_connections=4"]);
    let mut held: Vec<TcpStream> = (0..4).map(|_| d.connect("echo")).collect();
    for s in &mut held {
        assert!(echoes(s));
    }
    for _ in 0..8 {
        let mut s = d.connect("echo");
        assert!(closed_at_once(&mut s));
    }
    // Other services are not limited by echo's limit.
    let mut x = d.connect("discard");
    x.write_all(b"fine").unwrap();
    // A reactor publishes its figures at the end of its turn, which may
    // come after the client saw its connection closed: wait for them.
    let settled = || {
        let v = stats(&d);
        v["services"]["echo"]["connections_rejected"] == 8
            && v["services"]["echo"]["connections_open"] == 4
    };
    assert!(wait_until(settled), "{}", stats(&d)["services"]["echo"]);
}

// ----- Chat over two reactors ------------------------------------------------

#[test]
fn four_members_on_both_reactors_bursting_at_once_give_everyone_one_order() {
    let d = two_reactors(&["--trace"]);
    let (mut members, on) = members_on_both(&d, 2);
    // Two bursters on each reactor, so lines sequenced on both race. A
    // poster that queued its line for its own reactor's members at once,
    // and for the others through their inboxes, fails here: each
    // reactor's members would hear their own reactor's bursts first.
    let mut bursters: Vec<usize> = Vec::new();
    for r in 0..2 {
        bursters.extend(
            on.iter()
                .enumerate()
                .filter(|(_, x)| **x == r)
                .map(|(i, _)| i)
                .take(2),
        );
    }
    for (k, &i) in bursters.iter().enumerate() {
        let burst: String = (0..50).map(|n| format!("m{k} line {n}\n")).collect();
        members[i].send_raw(burst.as_bytes());
    }
    let mut first: Option<Vec<String>> = None;
    for m in &mut members {
        let lines: Vec<String> = (0..200).map(|_| m.said()).collect();
        match &first {
            None => first = Some(lines),
            Some(first) => assert_eq!(*first, lines, "{} saw another order", m.nick),
        }
    }
    let first = first.unwrap();
    for k in 0..4 {
        let mine: Vec<&String> = first
            .iter()
            .filter(|l| l.contains(&format!(": m{k} line ")))
            .collect();
        assert_eq!(mine.len(), 50);
        for (n, l) in mine.iter().enumerate() {
            assert!(l.ends_with(&format!(": m{k} line {n}")), "{l}");
        }
    }
}

/// Members joining one after another until each of the two reactors hosts
/// at least `each` (bounded: 64 joins leave a reactor without `each` with
/// a chance far below 2^-50), each welcome checked to count every member
/// of the daemon. Returns the members and the reactor of each.
fn members_on_both(d: &Daemon, each: usize) -> (Vec<Member>, Vec<usize>) {
    let (mut members, mut on) = (Vec::new(), Vec::new());
    while (0..2).any(|r| on.iter().filter(|&&x| x == r).count() < each) {
        assert!(members.len() < 64, "the kernel never used both: {on:?}");
        let mut m = Member::connect(d);
        let (nick, online) = welcome_parts(&m.line());
        assert_eq!(online, members.len() + 1, "the welcome counts everyone");
        m.nick = nick;
        m.expect(&format!("* {} joined lobby", m.nick));
        on.push(reactor_of(d, &m));
        members.push(m);
    }
    // Everyone reads up to the last join, so what follows starts clean.
    let last = members.last().unwrap().nick.clone();
    for m in &mut members[..on.len() - 1] {
        m.skip_until(&format!("* {last} joined lobby"));
    }
    (members, on)
}

#[test]
fn chat_members_on_both_reactors_share_rooms_nicks_and_private_messages() {
    let d = two_reactors(&["--trace"]);
    let (mut members, on) = members_on_both(&d, 2);
    let count = members.len();
    // `/stats` agrees: both reactors hold chat connections (the admin
    // connection asking is one more, on either).
    assert!(
        wait_until(|| {
            let open = open_per_reactor(&d);
            open.iter().sum::<u64>() == count as u64 + 1 && open.iter().all(|&n| n >= 2)
        }),
        "{:?}",
        open_per_reactor(&d)
    );
    let a = on.iter().position(|&r| r == 0).unwrap();
    let b = on.iter().position(|&r| r == 1).unwrap();

    // `/who` and `/rooms` list the members of both reactors.
    let mut everyone: Vec<String> = members.iter().map(|m| m.nick.clone()).collect();
    everyone.sort();
    for i in [a, b] {
        members[i].send("/who");
        members[i].expect(&format!("* in lobby: {}", everyone.join(" ")));
        members[i].send("/rooms");
        members[i].expect(&format!("* rooms: lobby({count})"));
    }

    // A nick taken on one reactor is refused on the other.
    let (a_nick, b_nick) = (members[a].nick.clone(), members[b].nick.clone());
    members[a].send("/nick ada");
    for m in &mut members {
        m.expect(&format!("* {a_nick} is now ada"));
    }
    members[b].send("/nick ada");
    members[b].expect("! error: nick in use");

    // `/msg` reaches a member on the other reactor, and the sender.
    members[b].send("/msg ada across the reactors");
    for i in [a, b] {
        assert_eq!(
            members[i].said(),
            format!("{b_nick} -> ada: across the reactors")
        );
    }

    // Join and leave notices reach a room's members whichever reactor
    // they are on.
    members[a].send("/join rust");
    members[a].expect("* ada joined rust");
    members[b].skip_until("* ada left lobby");
    members[b].send("/join rust");
    members[b].expect(&format!("* {b_nick} joined rust"));
    members[a].expect(&format!("* {b_nick} joined rust"));
    members[b].send("/quit");
    members[b].expect("* bye");
    members[a].expect(&format!("* {b_nick} left rust"));
    members[a].send("/rooms");
    members[a].expect(&format!("* rooms: lobby({}) rust(1)", count - 2));
}
#[test]
fn a_member_that_never_reads_is_cut_alone_while_the_talker_is_on_the_other_reactor() {
    let d = two_reactors(&["--trace", "--set", "chat.max_pending_output=262144"]);
    // Roles by reactor: `slow` and the reader `a` on one, the reader `b`
    // and the sender on the other, so the sender is paced by a member it
    // cannot see directly. The extra members hang up first.
    let (members, on) = members_on_both(&d, 2);
    let on_reactor = |r: usize| {
        on.iter()
            .enumerate()
            .filter(move |(_, x)| **x == r)
            .map(|(i, _)| i)
    };
    let roles: Vec<usize> = on_reactor(0).take(2).chain(on_reactor(1).take(2)).collect();
    let mut members: Vec<Option<Member>> = members.into_iter().map(Some).collect();
    let mut role = |k: usize| members[roles[k]].take().unwrap();
    let (slow, a, b, mut sender) = (role(0), role(1), role(2), role(3));
    drop(members);
    // Every departure is sequenced before the `/rooms` that counts four.
    let mut settled = false;
    for _ in 0..400 {
        sender.send("/rooms");
        let answer = loop {
            let line = sender.line();
            if line.starts_with("* rooms:") {
                break line;
            }
        };
        if answer == "* rooms: lobby(4)" {
            settled = true;
            break;
        }
    }
    assert!(settled, "the extra members never left");
    let slow_nick = slow.nick.clone();
    let notice = format!("* {slow_nick} left lobby (too slow)");
    let sender_nick = sender.nick.clone();
    let done = format!("{sender_nick}: done");
    sender.send("ready");
    let ready = format!("{sender_nick}: ready");
    let cut = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for (m, watch) in [(a, true), (b, false)] {
        readers.push(collect_said(
            m,
            &ready,
            &done,
            watch.then(|| (notice.clone(), cut.clone())),
        ));
    }
    let (s_reader, mut s_writer) = sender.split();
    let mut s_member = Member::from_stream(s_reader.into_inner());
    s_member.nick = sender_nick.clone();
    readers.push(collect_said(s_member, &ready, &done, None));

    // 1 KB lines until `slow` is cut off: its kernel buffers fill first,
    // then its outbox reaches the limit, which holds the sender, on the
    // other reactor, until the member is cut.
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
    s_writer.write_all(b"after\ndone\n").unwrap();
    let seen: Vec<Vec<String>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for lines in &seen {
        let numbered: Vec<&String> = lines.iter().filter(|l| l.contains(": n ")).collect();
        assert_eq!(numbered.len(), said, "every line reached every reader");
        for (i, l) in numbered.iter().enumerate() {
            assert!(l.starts_with(&format!("{sender_nick}: n {i} ")), "{l}");
        }
        assert_eq!(lines.iter().filter(|l| **l == notice).count(), 1);
        assert_eq!(lines.len(), said + 2, "the lines, `after` and the notice");
    }
    assert_eq!(seen[0], seen[1], "a and b saw one order");
    assert_eq!(seen[0], seen[2], "the sender saw it too");
    // The slow member's connection ends, and nobody else's did.
    let mut slow = slow.split().0;
    assert!(read_to_end(&mut slow).is_ok(), "ended with a FIN");
}

/// Reads `m`'s lines in a thread from the said line `from` (excluded) to
/// the said line `until` (excluded); said lines are kept without their
/// stamp, notices whole. When `watch` is given, raises its flag on seeing
/// its line.
fn collect_said(
    mut m: Member,
    from: &str,
    until: &str,
    watch: Option<(String, Arc<AtomicBool>)>,
) -> std::thread::JoinHandle<Vec<String>> {
    let (from, until) = (from.to_string(), until.to_string());
    std::thread::spawn(move || {
        let text = |line: &str| said_text(line).map_or(line.to_string(), str::to_string);
        while text(&m.line()) != from {}
        let mut lines = Vec::new();
        loop {
            let line = text(&m.line());
            if line == until {
                return lines;
            }
            if let Some((wanted, flag)) = &watch
                && line == *wanted
            {
                flag.store(true, Ordering::SeqCst);
            }
            lines.push(line);
        }
    })
}

#[test]
fn sigterm_closes_connections_on_every_reactor_with_fin_and_exits_zero() {
    let mut d = two_reactors(&[]);
    let mut clients: Vec<TcpStream> = (0..16).map(|_| d.connect("echo")).collect();
    for s in &mut clients {
        assert!(echoes(s));
    }
    assert!(
        wait_until(|| open_per_reactor(&d).iter().all(|&n| n > 0)),
        "{:?}",
        open_per_reactor(&d)
    );
    d.signal(libc::SIGTERM);
    for s in &mut clients {
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).unwrap(), 0, "a clean end of stream");
        s.shutdown(Shutdown::Write).unwrap();
    }
    drop(clients);
    assert_eq!(d.wait().code(), Some(0));
    assert!(
        TcpStream::connect(d.tcp("echo")).is_err(),
        "listeners are gone"
    );
    let log = d.stderr();
    for i in 0..2 {
        assert!(log.contains(&format!("stopped (reactor {i})")), "{log}");
    }
}

#[test]
fn metrics_give_daemon_totals_and_each_reactors_loop_figures() {
    let d = two_reactors(&[]);
    let mut s = d.connect("echo");
    assert!(echoes(&mut s));
    const NEEDLES: [&str; 7] = [
        "\nsocketlab_loop_iterations_total ",
        "\nsocketlab_loop_iterations_total{reactor=\"0\"} ",
        "\nsocketlab_loop_iterations_total{reactor=\"1\"} ",
        "\nsocketlab_loop_busy_seconds_total{reactor=\"1\"} ",
        "\nsocketlab_loop_max_turn_seconds{reactor=\"0\"} ",
        "\nsocketlab_reactor_connections_open{reactor=\"1\"} ",
        "\nsocketlab_connections_open{service=\"echo\"} 1\n",
    ];
    // The reactor that served the echo publishes at its turn's end, which
    // may come just after the client read its bytes: wait for it.
    let missing = || {
        let text = metrics(&d);
        NEEDLES.iter().filter(|n| !text.contains(**n)).count()
    };
    assert!(wait_until(|| missing() == 0), "{}", metrics(&d));
}

#[test]
fn one_reactor_reports_one_entry_and_no_reactor_labels() {
    let d = Daemon::start(&["--reactors", "1"]);
    assert_eq!(open_per_reactor(&d), vec![1]);
    assert!(!metrics(&d).contains("reactor=\""));
}

#[test]
fn auto_runs_one_reactor_per_cpu_the_process_may_use() {
    let d = Daemon::start(&["--reactors", "auto"]);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(open_per_reactor(&d).len(), cpus);
}

#[test]
fn trace_lines_name_their_reactor() {
    let d = two_reactors(&["--trace"]);
    let mut clients: Vec<TcpStream> = (0..16).map(|_| d.connect("echo")).collect();
    for s in &mut clients {
        assert!(echoes(s));
    }
    assert!(wait_until(|| {
        let err = d.stderr();
        err.contains(" r0 #") && err.contains(" r1 #")
    }));
    let err = d.stderr();
    for line in err.lines().filter(|l| l.starts_with("trace ")) {
        let third = line.split(' ').nth(2).unwrap_or("");
        assert!(third == "r0" || third == "r1", "{line}");
    }
}

/// User + system CPU ticks of a process, from /proc/PID/stat.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_descriptors_with_two_reactors_neither_spins_nor_stalls() {
    const LIMIT: u64 = 96;
    let d = Daemon::start_with_descriptor_limit(
        &["--reactors", "2", "--set", "limits.max_connections=10000"],
        LIMIT,
    );
    let mut first = d.connect("echo");
    assert!(echoes(&mut first));
    // Each client either is served, or is closed at once with the spare
    // descriptor, or (when another reactor took the descriptor a
    // reactor's spare freed, see docs/protocol-notes.md §8) waits in the
    // kernel's queue: a short timeout counts it as refused, so the test's
    // time stays bounded.
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..150 {
        let mut s = d.connect("echo");
        s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        if echoes(&mut s) {
            served.push(s);
        } else {
            refused += 1;
        }
    }
    assert!(refused > 0, "the limit was never reached");
    assert!(served.len() > 20, "only {} served", served.len());
    // Both reactors stay responsive and neither spins.
    assert!(echoes(&mut first));
    let cpu_before = cpu_ticks(d.pid());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let spent = cpu_ticks(d.pid()) - cpu_before;
    assert!(
        spent <= 5,
        "daemon used {spent} ticks while idle: spinning?"
    );
    // Freeing descriptors lets every reactor accept again: 16 new
    // connections all served (the kernel spreads them over both).
    served.truncate(5);
    assert!(wait_until(|| {
        (0..16).all(|_| {
            let mut s = d.connect("echo");
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            echoes(&mut s)
        })
    }));
    assert!(d.stderr().contains("Too many open files"));
}

#[test]
fn an_idle_connection_is_closed_on_either_reactor() {
    let d = two_reactors(&["--set", "echo.idle_timeout_s=1"]);
    let mut idle: Vec<TcpStream> = (0..16).map(|_| d.connect("echo")).collect();
    for s in &mut idle {
        assert!(echoes(s));
    }
    assert!(wait_until(|| open_per_reactor(&d).iter().all(|&n| n > 0)));
    for s in &mut idle {
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).unwrap(), 0, "closed after its timeout");
    }
}

#[test]
fn the_per_client_cap_counts_connections_on_every_reactor() {
    // All from 127.0.0.1: wherever the kernel puts them, the client
    // already holds its four.
    let d = two_reactors(&["--set", "limits.max_connections_per_ip=4"]);
    let _held = full_at(&d, 4);
}

#[test]
fn a_service_on_a_unix_socket_keeps_its_udp_side_spread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let listen = format!("echo=unix:{}", path.display());
    let d = two_reactors(&["--listen", &listen]);
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"over unix").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s).unwrap(), b"over unix");
    for i in 0..8 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(PATIENCE)).unwrap();
        u.send_to(format!("d{i}").as_bytes(), d.udp("echo"))
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = u.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("d{i}").as_bytes());
    }
}
