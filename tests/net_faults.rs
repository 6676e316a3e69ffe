//! The daemon on an imperfect network: echo, chat, exec and files across a lossy,
//! rate-limited or vanishing link, and through a proxy that delays, slices,
//! stalls and resets (see tests/net_support for the lab and the proxy, and
//! docs/testing.md for what the suite proves).
//!
//! Run with `cargo test --test net_faults`. The namespace tests need root
//! and print `skipped: ...` without it; the proxy tests run anywhere.
//! Every test first shows that its fault really happened (a drop counter,
//! retransmissions, the token bucket's overlimits, the proxy's own counts),
//! then that the service did what PROTOCOL.md promises despite it.

mod common;
mod net_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Daemon, PATIENCE, wait_until};
use net_support::{Fault, Lab, Proxy, echo_through, http_get, pattern};

/// Idle timeout for the tests that wait for one: short, so the suite stays
/// quick, and long against the delays the proxy adds.
const IDLE: &[&str] = &["--set", "echo.idle_timeout_s=2"];

// ---------------------------------------------------------------------------
// Across a veth pair between two namespaces
// ---------------------------------------------------------------------------

#[test]
fn echo_over_a_lossy_link_returns_every_byte_in_order() {
    let Some(lab) = Lab::new() else { return };
    let d = lab.start_daemon(&[]);
    lab.drop_randomly(5);
    let retrans_before = lab.retransmitted_segments();

    let s = lab.connect(d.tcp("echo"));
    let data = pattern(512 * 1024);
    let back = echo_through(&s, &data);

    assert!(lab.dropped_packets() > 0, "the nft rule dropped nothing");
    assert!(
        lab.retransmitted_segments() > retrans_before,
        "no TCP segment was retransmitted"
    );
    assert_eq!(back.len(), data.len(), "echo came back short");
    assert!(back == data, "echo came back changed or reordered");
}

#[test]
fn echo_over_a_rate_limited_link_returns_every_byte_in_order() {
    let Some(lab) = Lab::new() else { return };
    let d = lab.start_daemon(&[]);
    lab.limit_rate("4mbit");

    let s = lab.connect(d.tcp("echo"));
    let data = pattern(256 * 1024);
    let back = echo_through(&s, &data);

    assert!(
        lab.rate_limited_packets() > 0,
        "the token bucket never held a packet back"
    );
    assert!(back == data, "echo came back changed, short or reordered");
}

#[test]
fn chat_over_a_lossy_rate_limited_link_delivers_every_line_in_order() {
    let Some(lab) = Lab::new() else { return };
    let d = lab.start_daemon(&[]);
    lab.limit_rate("4mbit");
    lab.drop_randomly(5);

    let addr = d.tcp("chat");
    let mut sender = ChatMember::join(lab.connect(addr));
    let mut listener = ChatMember::join(lab.connect(addr));
    let lines = 1500;
    let sent = chat_lines(lines);
    let mut w = sender.stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        for line in sent {
            w.write_all(line.as_bytes()).unwrap();
        }
    });
    let heard = listener.said_by(&sender.nick, lines);
    writing.join().unwrap();
    let own = sender.said_by(&sender.nick.clone(), lines);

    assert!(lab.dropped_packets() > 0, "the nft rule dropped nothing");
    assert!(
        lab.rate_limited_packets() > 0,
        "the token bucket held nothing"
    );
    assert_eq!(heard, expected_texts(lines), "the other member's view");
    assert_eq!(own, expected_texts(lines), "the sender's own view");
}

#[test]
fn exec_over_a_lossy_link_returns_the_whole_output() {
    let Some(lab) = Lab::new() else { return };
    let d = lab.start_daemon(&[]);
    lab.drop_randomly(5);
    let retrans_before = lab.retransmitted_segments();

    let addr = d.addr_str("exec", "tcp");
    let data_dir = d.data_dir().display().to_string();
    let (status, out) = lab.run_client(&[
        "exec",
        "--addr",
        &addr,
        "--data-dir",
        &data_dir,
        "--",
        "seq",
        "1",
        "100000",
    ]);

    assert!(lab.dropped_packets() > 0, "the nft rule dropped nothing");
    let (dropped, retrans) = (lab.dropped_packets(), lab.retransmitted_segments());
    assert!(
        retrans > retrans_before,
        "no retransmission ({retrans_before} -> {retrans}, {dropped} dropped, status {status}, {} bytes)",
        out.len()
    );
    assert_eq!(status, 0, "socketlab exec failed: {}", d.stderr());
    assert!(out == seq_output(100_000), "seq's output came back changed");
}

#[test]
fn files_over_a_lossy_link_put_and_get_every_byte() {
    let Some(lab) = Lab::new() else { return };
    let d = lab.start_daemon(&[]);
    lab.drop_randomly(5);
    let retrans_before = lab.retransmitted_segments();
    let local = tempfile::tempdir().unwrap();
    let data = pattern(2 << 20);
    let (up, back) = (local.path().join("up.bin"), local.path().join("back.bin"));
    std::fs::write(&up, &data).unwrap();

    let addr = d.addr_str("files", "tcp");
    let data_dir = d.data_dir().display().to_string();
    let files = |args: &[&str]| {
        let mut all = vec!["files", "--addr", &addr, "--data-dir", &data_dir];
        all.extend_from_slice(args);
        lab.run_client(&all)
    };
    let (put, _) = files(&["put", up.to_str().unwrap(), "/f.bin"]);
    let (get, _) = files(&["get", "/f.bin", back.to_str().unwrap()]);

    assert!(lab.dropped_packets() > 0, "the nft rule dropped nothing");
    assert!(
        lab.retransmitted_segments() > retrans_before,
        "no retransmission"
    );
    assert_eq!((put, get), (0, 0), "socketlab files failed: {}", d.stderr());
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the file came back changed"
    );
}

#[test]
fn a_peer_silenced_mid_transfer_is_timed_out_and_cleaned_up() {
    let Some(lab) = Lab::new() else { return };
    let d = lab.start_daemon(IDLE);
    let s = lab.connect(d.tcp("echo"));
    fill_without_reading(&s);
    assert!(
        wait_until(|| lab.open_connections(&d, "echo") == Some(1)),
        "the daemon does not count the connection"
    );

    lab.drop_everything();

    assert!(
        wait_until(|| lab.open_connections(&d, "echo") == Some(0)),
        "the connection to a silent peer is still open"
    );
    assert!(lab.dropped_packets() > 0, "the nft rule dropped nothing");
}

#[test]
fn a_peer_whose_link_is_deleted_mid_transfer_is_timed_out_and_cleaned_up() {
    let Some(lab) = Lab::new() else { return };
    let d = lab.start_daemon(IDLE);
    let s = lab.connect(d.tcp("echo"));
    fill_without_reading(&s);
    assert!(
        wait_until(|| lab.open_connections(&d, "echo") == Some(1)),
        "the daemon does not count the connection"
    );

    lab.cut_the_link();

    assert!(!lab.link_exists(), "the veth pair is still there");
    assert!(
        wait_until(|| lab.open_connections(&d, "echo") == Some(0)),
        "the connection to a vanished peer is still open"
    );
}

// ---------------------------------------------------------------------------
// Through the fault-injecting proxy
// ---------------------------------------------------------------------------

#[test]
fn echo_sliced_into_single_bytes_returns_every_byte_in_order() {
    let d = Daemon::start(&[]);
    let proxy = Proxy::start(
        d.tcp("echo"),
        Fault {
            slice: true,
            ..Fault::default()
        },
    );
    let s = connect(proxy.addr);
    let data = pattern(32 * 1024);
    let back = echo_through(&s, &data);

    assert!(
        proxy.count(|c| &c.writes) >= 2 * data.len() as u64,
        "the proxy did not write byte by byte"
    );
    assert!(back == data, "echo came back changed, short or reordered");
}

#[test]
fn chat_through_a_slow_slicing_link_delivers_whole_lines_in_order() {
    let d = Daemon::start(&[]);
    let proxy = Proxy::start(
        d.tcp("chat"),
        Fault {
            slice: true,
            delay: Duration::from_millis(5),
            ..Fault::default()
        },
    );
    let mut sender = ChatMember::join(connect(proxy.addr));
    let mut listener = ChatMember::join(connect(d.tcp("chat")));
    let lines = 200;
    for line in chat_lines(lines) {
        sender.stream.write_all(line.as_bytes()).unwrap();
    }
    let heard = listener.said_by(&sender.nick, lines);

    assert!(proxy.count(|c| &c.delayed) > 0, "nothing was delayed");
    assert!(
        proxy.count(|c| &c.writes) > proxy.count(|c| &c.bytes_up) / 2,
        "the proxy did not slice"
    );
    assert_eq!(heard, expected_texts(lines));
}

#[test]
fn exec_through_single_byte_slices_returns_the_whole_output() {
    let d = Daemon::start(&[]);
    let proxy = Proxy::start(
        d.tcp("exec"),
        Fault {
            slice: true,
            ..Fault::default()
        },
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(["exec", "--addr", &proxy.addr.to_string(), "--data-dir"])
        .arg(d.data_dir())
        .args(["--", "seq", "1", "5000"])
        .output()
        .expect("run socketlab exec");

    assert!(
        proxy.count(|c| &c.writes) >= proxy.count(|c| &c.bytes_down),
        "the proxy did not write byte by byte"
    );
    assert!(proxy.count(|c| &c.bytes_up) > 0, "nothing went up");
    assert!(out.status.success(), "socketlab exec: {out:?}");
    assert!(
        out.stdout == seq_output(5000),
        "seq's output came back changed"
    );
}

#[test]
fn files_through_single_byte_slices_put_and_get_every_byte() {
    let d = Daemon::start(&[]);
    let proxy = Proxy::start(
        d.tcp("files"),
        Fault {
            slice: true,
            ..Fault::default()
        },
    );
    let local = tempfile::tempdir().unwrap();
    let data = pattern(20_000);
    let (up, back) = (local.path().join("up.bin"), local.path().join("back.bin"));
    std::fs::write(&up, &data).unwrap();

    let put = files_client(
        &proxy.addr.to_string(),
        &d,
        &["put", up.to_str().unwrap(), "/f"],
    );
    let get = files_client(
        &proxy.addr.to_string(),
        &d,
        &["get", "/f", back.to_str().unwrap()],
    );

    assert!(
        proxy.count(|c| &c.writes) >= proxy.count(|c| &c.bytes_down),
        "the proxy did not write byte by byte"
    );
    assert!(put.status.success(), "put: {put:?}");
    assert!(get.status.success(), "get: {get:?}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the file came back changed"
    );
}

#[test]
fn a_put_reset_mid_transfer_resumes_from_what_reached_the_daemon() {
    let d = Daemon::start(&[]);
    let proxy = Proxy::start(
        d.tcp("files"),
        Fault {
            reset_after: Some(300_000),
            ..Fault::default()
        },
    );
    let local = tempfile::tempdir().unwrap();
    let data = pattern(1 << 20);
    let up = local.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();

    let cut = files_client(
        &proxy.addr.to_string(),
        &d,
        &["put", up.to_str().unwrap(), "/f"],
    );
    assert!(proxy.count(|c| &c.resets) > 0, "the proxy reset nothing");
    assert!(!cut.status.success(), "a reset put succeeded: {cut:?}");
    // The daemon notices the reset and keeps the upload on record; the
    // same put again, straight to the daemon, resumes past the start.
    let direct = d.addr_str("files", "tcp");
    let resumed = wait_until(|| {
        let out = files_client(&direct, &d, &["--json", "put", up.to_str().unwrap(), "/f"]);
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        out.status.success() && answer["offset"].as_u64().is_some_and(|k| k > 0)
    });
    assert!(resumed, "no put resumed: {}", d.stderr());
    let back = local.path().join("back.bin");
    let get = files_client(&direct, &d, &["get", "/f", back.to_str().unwrap()]);
    assert!(get.status.success(), "get: {get:?}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the file came back changed"
    );
}

#[test]
fn a_slow_link_is_not_cut_by_the_idle_timeout_while_the_client_talks() {
    let d = Daemon::start(IDLE);
    let proxy = Proxy::start(
        d.tcp("echo"),
        Fault {
            delay: Duration::from_millis(400),
            ..Fault::default()
        },
    );
    let mut s = connect(proxy.addr);
    // Four round trips of about 0.8 s each: longer in all than the 2 s
    // idle timeout, while the daemon never waits 2 s for a byte.
    let mut back = Vec::new();
    for i in 0..4 {
        let line = format!("round {i}\n");
        s.write_all(line.as_bytes()).unwrap();
        back.push(common::read_line(&mut s));
    }

    assert!(
        proxy.count(|c| &c.delayed) >= 8,
        "the proxy delayed too little"
    );
    assert_eq!(back, ["round 0\n", "round 1\n", "round 2\n", "round 3\n"]);
    assert_eq!(open_connections(&d, "echo"), Some(1), "the link was cut");
}

#[test]
fn a_stalled_peer_is_cut_by_the_idle_timeout() {
    let d = Daemon::start(IDLE);
    let proxy = Proxy::start(
        d.tcp("echo"),
        Fault {
            stall_after: Some(10),
            ..Fault::default()
        },
    );
    let mut s = connect(proxy.addr);
    s.write_all(&pattern(100)).unwrap();

    assert!(
        wait_until(|| proxy.count(|c| &c.stalls) == 1),
        "the proxy never stalled"
    );
    assert!(
        wait_until(|| proxy.count(|c| &c.upstream_closed_while_stalled) == 1),
        "the daemon kept a silent connection open"
    );
    assert!(wait_until(|| open_connections(&d, "echo") == Some(0)));
}

#[test]
fn a_reset_mid_transfer_is_cleaned_up() {
    let d = Daemon::start(&[]);
    let proxy = Proxy::start(
        d.tcp("echo"),
        Fault {
            reset_after: Some(64 * 1024),
            ..Fault::default()
        },
    );
    let mut s = connect(proxy.addr);
    let data = pattern(256 * 1024);
    let sent = s.write_all(&data);
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);

    assert_eq!(proxy.count(|c| &c.resets), 1, "the proxy did not reset");
    assert!(
        sent.is_err() || read.is_err(),
        "the client saw no reset (read {} bytes)",
        buf.len()
    );
    assert!(buf.len() < data.len(), "more came back than went through");
    assert!(
        wait_until(|| open_connections(&d, "echo") == Some(0)),
        "the daemon kept the reset connection"
    );
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `socketlab files --addr ADDR` as the daemon's demo user.
fn files_client(addr: &str, d: &Daemon, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(["files", "--addr", addr, "--data-dir"])
        .arg(d.data_dir())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run socketlab files")
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

fn open_connections(d: &Daemon, service: &str) -> Option<u64> {
    let body = http_get(d.tcp("admin"), "/stats").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["services"][service]["connections_open"].as_u64()
}

/// Writes without reading until the kernel will take no more: both sides'
/// buffers are full and the daemon holds unsent output.
fn fill_without_reading(s: &TcpStream) {
    s.set_nonblocking(true).unwrap();
    let chunk = pattern(64 * 1024);
    let mut w = s;
    let mut stuck = 0;
    // Bounded: a few megabytes fill any buffer here; stop after several
    // refusals in a row so a slow daemon is not mistaken for a full one.
    for _ in 0..2000 {
        match w.write(&chunk) {
            Ok(_) => stuck = 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stuck += 1;
                if stuck > 20 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
}

/// A chat member that has read its welcome and learned its nick.
struct ChatMember {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    nick: String,
}

impl ChatMember {
    fn join(stream: TcpStream) -> ChatMember {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut welcome = String::new();
        reader.read_line(&mut welcome).unwrap();
        let nick = welcome
            .strip_prefix("* welcome ")
            .and_then(|r| r.split(';').next())
            .unwrap_or_else(|| panic!("not a welcome: {welcome:?}"))
            .to_string();
        ChatMember {
            stream,
            reader,
            nick,
        }
    }

    /// Reads until `count` lines said by `nick` have arrived; returns their
    /// texts. Notices and other members' lines are skipped.
    fn said_by(&mut self, nick: &str, count: usize) -> Vec<String> {
        let marker = format!(" {nick}: ");
        let mut texts = Vec::new();
        let mut line = String::new();
        while texts.len() < count {
            line.clear();
            let n = self.reader.read_line(&mut line).expect("chat read");
            assert!(n > 0, "chat closed after {} lines", texts.len());
            if let Some((_, text)) = line.split_once(&marker) {
                texts.push(text.trim_end_matches('\n').to_string());
            }
        }
        texts
    }
}

fn chat_lines(count: usize) -> Vec<String> {
    expected_texts(count)
        .into_iter()
        .map(|t| t + "\n")
        .collect()
}

fn expected_texts(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("line {i:05} {}", "x".repeat(i % 120)))
        .collect()
}

fn seq_output(n: u32) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}
