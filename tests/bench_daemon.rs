//! `socketlab bench` against the real daemon: every workload runs clean,
//! verifies what it gets, and reads the daemon's side from the admin
//! endpoint. (tests/bench_cli.rs covers the generator against in-test
//! servers, the corrupting and lossy ones included.)
//! Run: `cargo test --test bench_daemon`.

mod common;

use std::process::{Command, Stdio};

use common::Daemon;
use serde_json::Value;

/// Runs `socketlab bench ARGS --json`; returns the exit code and the JSON.
fn bench(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run socketlab bench");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench printed no JSON ({e}); stderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn bench_echo_against_the_daemon_is_clean_and_sees_the_server_side() {
    let d = Daemon::start(&[]);
    let echo = d.tcp("echo").to_string();
    let admin = d.tcp("admin").to_string();
    let pid = d.pid().to_string();
    let (code, json, stderr) = bench(&[
        "echo",
        "--addr",
        &echo,
        "--conns",
        "20",
        "--depth",
        "4",
        "--size",
        "100",
        "--duration",
        "1s",
        "--admin",
        &admin,
        "--pid",
        &pid,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["clean"], true);
    assert_eq!(json["failures_total"], 0);
    let messages = json["messages"].as_u64().unwrap();
    assert!(messages > 100, "only {messages} messages");
    // The daemon's own count agrees with the generator's, byte for byte.
    let stats: Value = serde_json::from_str(&http_get(&admin, "/stats")).unwrap();
    let received = stats["services"]["echo"]["bytes_received"]
        .as_u64()
        .unwrap();
    assert_eq!(received, messages * 100, "daemon received {received} bytes");
    assert!(json["server"].is_object(), "no server side: {json}");
}

#[test]
fn bench_udp_against_the_daemon_gets_every_datagram_back() {
    let d = Daemon::start(&[]);
    let udp = d.udp("echo").to_string();
    let (code, json, stderr) = bench(&["udp", "--addr", &udp, "--count", "2000", "--size", "256"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["clean"], true);
}

#[test]
fn bench_chat_against_the_daemon_delivers_every_line_to_every_member() {
    let d = Daemon::start(&[]);
    let chat = d.tcp("chat").to_string();
    let (code, json, stderr) = bench(&[
        "chat",
        "--addr",
        &chat,
        "--members",
        "50",
        "--messages",
        "200",
        "--size",
        "64",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["clean"], true);
    assert_eq!(json["failures_total"], 0);
}

#[test]
fn bench_conns_against_the_daemon_holds_them_and_measures_memory() {
    let d = Daemon::start(&[]);
    let echo = d.tcp("echo").to_string();
    let pid = d.pid().to_string();
    let (code, json, stderr) = bench(&[
        "conns", "--addr", &echo, "--count", "500", "--hold", "300ms", "--pid", &pid,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["clean"], true);
    assert!(json["memory"].is_object(), "no memory figures: {json}");
}

/// A minimal HTTP/1.1 GET, returning the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
