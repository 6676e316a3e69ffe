//! `socketlab bench`, driven as a user drives it: the real binary against
//! small servers running in this test process, some of them faithful, some
//! deliberately broken so that the load generator must catch them.
//!
//! Every server binds 127.0.0.1 port 0; every child process runs under a
//! deadline and is killed if it passes it. No figure of speed is asserted,
//! only counts and verdicts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

/// The longest any one bench run may take before the test gives up on it.
const DEADLINE: Duration = Duration::from_secs(60);

/// What a finished `socketlab bench` run left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `socketlab bench ARGS...` to completion, within `DEADLINE`.
fn bench(args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start socketlab");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => {
            let output = output.expect("wait for socketlab");
            Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        Err(_) => {
            // SAFETY: kill only sends a signal to our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("socketlab bench {args:?} did not finish within {DEADLINE:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Echo servers, faithful and not.

/// What an in-test echo server does to the bytes it echoes.
#[derive(Clone, Copy)]
enum Echo {
    Faithful,
    /// Flips one bit of every `n`-th byte (from byte `n` on), per connection.
    FlipEvery(u64),
    /// Leaves out `len` bytes at offset `at` of each connection's stream.
    DropAt {
        at: u64,
        len: u64,
    },
}

fn echo_server(behaviour: Echo) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || echo_connection(stream, behaviour));
        }
    });
    addr
}

fn echo_connection(mut stream: TcpStream, behaviour: Echo) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let start = offset;
        offset += n as u64;
        let out: Vec<u8> = match behaviour {
            Echo::Faithful => chunk.to_vec(),
            Echo::FlipEvery(every) => {
                for (i, byte) in chunk.iter_mut().enumerate() {
                    let at = start + i as u64;
                    if at > 0 && at.is_multiple_of(every) {
                        *byte ^= 0x01;
                    }
                }
                chunk.to_vec()
            }
            Echo::DropAt { at, len } => chunk
                .iter()
                .enumerate()
                .filter(|&(i, _)| !(at..at + len).contains(&(start + i as u64)))
                .map(|(_, &b)| b)
                .collect(),
        };
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// bench echo

#[test]
fn echo_against_a_faithful_server_counts_messages_and_exits_0() {
    let addr = echo_server(Echo::Faithful).to_string();
    let run = bench(&[
        "echo",
        "--addr",
        &addr,
        "--conns",
        "4",
        "--depth",
        "4",
        "--size",
        "100",
        "--duration",
        "500ms",
        "--threads",
        "2",
        "--json",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let json = run.json();
    assert_eq!(json["workload"], "echo");
    assert_eq!(json["clean"], true);
    assert_eq!(json["connected"], 4);
    let messages = json["messages"].as_u64().unwrap();
    assert!(messages > 0, "{json}");
    // Every message's bytes went out and came back.
    assert_eq!(json["bytes_received"].as_u64(), Some(messages * 100));
    assert_eq!(json["bytes_sent"], json["bytes_received"]);
    assert_eq!(json["latency"]["samples"].as_u64(), Some(messages));
}

#[test]
fn echo_prints_a_summary_table_without_json() {
    let addr = echo_server(Echo::Faithful).to_string();
    let run = bench(&[
        "echo",
        "--addr",
        &addr,
        "--duration",
        "200ms",
        "--messages",
        "50",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(
        run.stdout.contains("messages     50 echoed"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("result       clean"), "{}", run.stdout);
}

#[test]
fn echo_stops_at_the_message_budget() {
    let addr = echo_server(Echo::Faithful).to_string();
    let run = bench(&[
        "echo",
        "--addr",
        &addr,
        "--conns",
        "3",
        "--depth",
        "2",
        "--messages",
        "301",
        "--duration",
        "30s",
        "--json",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert_eq!(run.json()["messages"], 301);
}

#[test]
fn echo_paced_sends_at_most_the_rate() {
    let addr = echo_server(Echo::Faithful).to_string();
    let run = bench(&[
        "echo",
        "--addr",
        &addr,
        "--conns",
        "2",
        "--rate",
        "200",
        "--duration",
        "500ms",
        "--json",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let json = run.json();
    // 200/s for half a second is about 100 messages, whatever the speed:
    // the pacer grants one every 5 ms from the start.
    let messages = json["messages"].as_u64().unwrap();
    assert!((1..=102).contains(&messages), "{json}");
    assert_eq!(json["rate_target"], 200.0);
}

#[test]
fn a_corrupting_server_is_caught_and_named() {
    let addr = echo_server(Echo::FlipEvery(5000)).to_string();
    let run = bench(&[
        "echo",
        "--addr",
        &addr,
        "--conns",
        "2",
        "--depth",
        "8",
        "--size",
        "64",
        "--duration",
        "2s",
        "--json",
    ]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    // Byte 5000 is in message 78 (of 64 bytes), on both connections.
    for connection in 0..2 {
        let expected = format!("connection {connection}: message 78: echoed byte 5000 is");
        assert!(run.stderr.contains(&expected), "stderr:\n{}", run.stderr);
    }
    assert!(
        run.stderr.contains("1 byte corrupted"),
        "stderr:\n{}",
        run.stderr
    );
    let json = run.json();
    assert_eq!(json["clean"], false);
    assert_eq!(json["failures_total"], 2);
    // Both connections fail; which one reports first is up to scheduling.
    let mut connections: Vec<u64> = json["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["connection"].as_u64().expect("connection"))
        .collect();
    connections.sort_unstable();
    assert_eq!(connections, [0, 1]);
}

#[test]
fn a_server_that_loses_bytes_is_caught() {
    let addr = echo_server(Echo::DropAt { at: 1000, len: 10 }).to_string();
    let run = bench(&["echo", "--addr", &addr, "--depth", "4", "--duration", "2s"]);
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("echoed byte 1000")
            && run
                .stderr
                .contains("sent 10 bytes later (lost or reordered data)"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
}

#[test]
fn a_refused_connection_is_a_failure() {
    let addr = unused_port();
    let run = bench(&["echo", "--addr", &addr, "--conns", "3", "--duration", "1s"]);
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("connect failed") && run.stderr.contains("refused"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("is `socketlab serve` running there?"),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(bench(&["echo", "--size", "0"]).code, 2);
    assert_eq!(bench(&["echo", "--conns", "0"]).code, 2);
    assert_eq!(bench(&["echo", "--duration", "soon"]).code, 2);
    assert_eq!(bench(&["echo", "--addr", "no-such-host.invalid:7"]).code, 2);
    assert_eq!(bench(&["chat", "--size", "5"]).code, 2);
    assert_eq!(bench(&["udp", "--size", "8"]).code, 2);
    let run = bench(&["echo", "--pid", "999999999", "--duration", "1s"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--pid"), "{}", run.stderr);
}

#[test]
fn ctrl_c_prints_the_summary_so_far_and_exits_130() {
    let addr = echo_server(Echo::Faithful).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args([
            "bench",
            "echo",
            "--addr",
            &addr,
            "--duration",
            "50s",
            "--progress",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Wait for the first status line: the run is under way.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20));
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let first = first.expect("a status line within 20 s");
    assert!(first.contains("msg/s") && first.contains("p99"), "{first}");

    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let Ok(output) = done_rx.recv_timeout(Duration::from_secs(20)) else {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("no exit within 20 s of SIGINT");
    };
    let output = output.unwrap();
    // 128 + SIGINT, after the summary, as shells expect of an interrupted run.
    assert_eq!(output.status.code(), Some(130));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["interrupted"], true);
    assert_eq!(json["clean"], true);
    assert!(json["messages"].as_u64().unwrap() > 0, "{json}");
    assert!(json["elapsed_s"].as_f64().unwrap() < 50.0, "{json}");
}

// ---------------------------------------------------------------------------
// --admin and --pid

/// A stand-in for the daemon's admin endpoint: `/stats` with counters
/// that grow by a fixed step per request, and 404 elsewhere.
fn admin_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head);
            let response = if head.starts_with("GET /stats ") {
                let k = requests.fetch_add(1, Ordering::Relaxed) + 1;
                let body = format!(
                    r#"{{"services":{{"echo":{{"connections_open":{k},"connections_total":9,"connections_rejected":0,"bytes_received":{},"bytes_sent":{}}}}},"loop":{{"iterations":{},"events":{}}}}}"#,
                    k * 1000,
                    k * 1000,
                    k * 10,
                    k * 30
                );
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

#[test]
fn admin_stats_are_shown_next_to_the_client_side() {
    let addr = echo_server(Echo::Faithful).to_string();
    let admin = admin_server().to_string();
    let pid = std::process::id().to_string();
    let run = bench(&[
        "echo",
        "--addr",
        &addr,
        "--duration",
        "300ms",
        "--admin",
        &admin,
        "--pid",
        &pid,
        "--json",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let json = run.json();
    let server = &json["server"];
    assert_eq!(server["service"], "echo");
    assert_eq!(server["connections_open_start"], 1);
    assert_eq!(server["connections_open_end"], 2);
    assert_eq!(server["events_per_iteration"], 3.0);
    assert!(
        server["bytes_sent_per_s"].as_f64().unwrap() > 0.0,
        "{server}"
    );
    // The echo server runs in this test process, so --pid is this process.
    let process = &json["process"];
    assert_eq!(process["pid"].as_u64(), Some(u64::from(std::process::id())));
    assert!(process["rss_end_bytes"].as_u64().unwrap() > 0, "{process}");
}

#[test]
fn a_missing_admin_endpoint_is_noted_and_the_run_goes_on() {
    let addr = echo_server(Echo::Faithful).to_string();
    let admin = unused_port();
    let run = bench(&[
        "echo",
        "--addr",
        &addr,
        "--duration",
        "200ms",
        "--admin",
        &admin,
        "--json",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("no admin endpoint"), "{}", run.stderr);
    let json = run.json();
    assert!(json["server"].is_null());
    assert!(
        json["server_note"]
            .as_str()
            .unwrap()
            .contains("no admin endpoint")
    );
}

// ---------------------------------------------------------------------------
// bench udp

/// A UDP echo server; with `corrupt`, every 10th reply has a byte flipped.
fn udp_echo_server(corrupt: bool) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut count = 0u64;
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            count += 1;
            if corrupt && count.is_multiple_of(10) {
                buf[n - 1] ^= 0x80;
            }
            let _ = socket.send_to(&buf[..n], peer);
        }
    });
    addr
}

#[test]
fn udp_counts_every_datagram() {
    let addr = udp_echo_server(false).to_string();
    let run = bench(&[
        "udp", "--addr", &addr, "--count", "2000", "--size", "200", "--window", "16", "--json",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let json = run.json();
    assert_eq!(json["sent"], 2000);
    let answered = json["answered"].as_u64().unwrap();
    let lost = json["lost"].as_u64().unwrap();
    assert!(answered > 0, "{json}");
    assert_eq!(answered + lost, 2000, "{json}");
    assert_eq!(json["corrupted"], 0);
    assert_eq!(json["duplicated"], 0);
}

#[test]
fn udp_catches_corrupted_replies() {
    let addr = udp_echo_server(true).to_string();
    let run = bench(&["udp", "--addr", &addr, "--count", "100", "--json"]);
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("(corrupted)"), "{}", run.stderr);
    assert_eq!(run.json()["corrupted"], 10);
}

#[test]
fn udp_with_nobody_listening_fails_clearly() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    drop(socket);
    let run = bench(&[
        "udp",
        "--addr",
        &addr,
        "--count",
        "20",
        "--timeout",
        "200ms",
    ]);
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("none of 20 datagrams came back"),
        "{}",
        run.stderr
    );
    // The same hint as for a refused TCP connection.
    assert!(
        run.stderr.contains("is `socketlab serve` running there?"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// bench conns

/// A server that accepts and holds every connection, sending a greeting.
fn holding_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.write_all(b"hi\n");
            held.push(stream);
        }
    });
    addr
}

#[test]
fn conns_opens_holds_and_measures_memory() {
    let addr = holding_server().to_string();
    let pid = std::process::id().to_string();
    let run = bench(&[
        "conns", "--addr", &addr, "--count", "200", "--hold", "300ms", "--pid", &pid, "--json",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let json = run.json();
    assert_eq!(json["connected"], 200);
    assert_eq!(json["connect_failed"], 0);
    assert_eq!(json["closed_by_server"], 0);
    assert_eq!(json["bytes_received"], 600);
    assert_eq!(json["connect_latency"]["samples"], 200);
    let memory = &json["memory"];
    assert!(memory["rss_held_bytes"].as_u64().unwrap() > 0, "{memory}");
    assert!(memory["bytes_per_connection"].is_number(), "{memory}");
}

#[test]
fn conns_reports_connections_the_server_closes() {
    // Accepts and closes at once, like a server at its connection limit.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let run = bench(&[
        "conns", "--addr", &addr, "--count", "5", "--hold", "2s", "--json",
    ]);
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("the server closed the connection"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["closed_by_server"], 5);
}

// ---------------------------------------------------------------------------
// bench chat

/// A minimal chat server speaking the part of PROTOCOL.md §4 that the bench
/// uses. With `lose`, member number `lose.0` (in order of joining) never
/// gets the line whose text starts with line number `lose.1`.
fn chat_server(lose: Option<(usize, u64)>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let room: Arc<Mutex<Vec<(usize, TcpStream)>>> = Arc::new(Mutex::new(Vec::new()));
    thread::spawn(move || {
        for (number, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let nick = format!("guest{}", number + 1);
            {
                let mut members = room.lock().unwrap();
                let mut writer = stream.try_clone().unwrap();
                let _ = writeln!(
                    writer,
                    "* welcome {nick}; room lobby; {} online; /help for commands",
                    members.len() + 1
                );
                members.push((number, writer));
                for (_, member) in members.iter_mut() {
                    let _ = writeln!(member, "* {nick} joined lobby");
                }
            }
            let room = Arc::clone(&room);
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(text) = line else { return };
                    if text.is_empty() {
                        continue;
                    }
                    let said = format!("2026-01-01 00:00:00 {nick}: {text}\n");
                    let seq: Option<u64> = text.get(..10).and_then(|s| s.parse().ok());
                    let mut members = room.lock().unwrap();
                    for (member, writer) in members.iter_mut() {
                        if lose.is_some_and(|(who, line)| who == *member && seq == Some(line)) {
                            continue;
                        }
                        let _ = writer.write_all(said.as_bytes());
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn chat_delivers_every_line_to_every_member() {
    let addr = chat_server(None).to_string();
    let run = bench(&[
        "chat",
        "--addr",
        &addr,
        "--members",
        "6",
        "--messages",
        "300",
        "--size",
        "80",
        "--window",
        "32",
        "--json",
    ]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let json = run.json();
    assert_eq!(json["joined"], 6);
    assert_eq!(json["sender_nick"], "guest1");
    assert_eq!(json["lines_sent"], 300);
    assert_eq!(json["deliveries"], 1800);
    assert_eq!(json["deliveries_expected"], 1800);
    assert_eq!(json["latency"]["samples"], 1800);
}

#[test]
fn chat_catches_a_lost_line() {
    let addr = chat_server(Some((2, 17))).to_string();
    let run = bench(&[
        "chat",
        "--addr",
        &addr,
        "--members",
        "4",
        "--messages",
        "50",
        "--json",
    ]);
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("connection 2: line 17 missing: line 18 came next (lost)"),
        "stderr:\n{}",
        run.stderr
    );
    assert_eq!(run.json()["failures_total"], 1);
}

#[test]
fn chat_against_nothing_fails_to_join() {
    let addr = unused_port();
    let run = bench(&["chat", "--addr", &addr, "--members", "3", "--messages", "5"]);
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("connect failed"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------

/// An address on which nothing listens (a port just released).
fn unused_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}
