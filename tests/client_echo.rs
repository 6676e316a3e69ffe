//! `socketlab echo` against stand-in echo servers: interactive lines over
//! TCP, Unix sockets and UDP, measured round-trips with verification, and
//! the failures a user must be told about (mismatch, silence, refusal).
//!
//! Run with `cargo test --test client_echo`.

mod client_support;

use std::net::TcpListener;

use client_support::{
    Behaviour, refused_addr, run_client, scratch_path, tcp_server, udp_server, unix_server,
};

// ---------------------------------------------------------------------------
// Interactive mode.
// ---------------------------------------------------------------------------

#[test]
fn lines_come_back_whole_although_replies_are_split() {
    let addr = tcp_server(Behaviour::DribblingEcho).to_string();
    let input = "hello\nsecond line, somewhat longer than the first\n\nlast\n";
    let out = run_client(&["echo", &addr], input.as_bytes());
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, input);
}

#[test]
fn a_last_line_without_newline_is_echoed_too() {
    let addr = tcp_server(Behaviour::DribblingEcho).to_string();
    let out = run_client(&["echo", &addr], b"one\ntwo");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "one\ntwo");
}

#[test]
fn a_unix_socket_works_like_tcp() {
    let path = scratch_path("echo.sock");
    unix_server(&path, Behaviour::DribblingEcho);
    let addr = format!("unix:{}", path.display());
    let out = run_client(&["echo", &addr], b"over a unix socket\n");
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "over a unix socket\n");
}

#[test]
fn ipv6_addresses_are_written_in_brackets() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    };
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // Nothing listens there any more: the point is that the address is
    // understood and named as written.
    let out = run_client(&["echo", &addr.to_string()], b"x\n");
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains(&format!("cannot connect to [::1]:{}", addr.port())),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn udp_lines_are_datagrams() {
    let (addr, received) = udp_server(|datagram| Some(datagram.to_vec()));
    let out = run_client(&["echo", "--udp", &addr.to_string()], b"ping\npong\n");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "ping\npong\n");
    assert_eq!(
        *received.lock().unwrap(),
        [b"ping\n".to_vec(), b"pong\n".to_vec()]
    );
}

#[test]
fn a_silent_server_is_a_timeout_not_a_hang() {
    let addr = tcp_server(Behaviour::Silent).to_string();
    let out = run_client(&["echo", &addr, "--timeout", "300ms"], b"anyone?\n");
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "socketlab echo: timed out after 300ms waiting for the echo of a line\n"
    );
}

#[test]
fn a_refused_connection_says_so() {
    let addr = refused_addr();
    let out = run_client(&["echo", &addr.to_string()], b"x\n");
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .starts_with(&format!("socketlab echo: cannot connect to {addr}: ")),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn a_malformed_address_is_a_usage_error() {
    let out = run_client(&["echo", "::1:7007"], b"");
    assert_eq!(out.code(), Some(2));
    assert!(out.stderr.contains("brackets"), "stderr: {}", out.stderr);
}

// ---------------------------------------------------------------------------
// Measuring mode.
// ---------------------------------------------------------------------------

#[test]
fn counted_messages_are_verified_and_reported() {
    let addr = tcp_server(Behaviour::DribblingEcho).to_string();
    let args = ["echo", &addr, "--count", "40", "--size", "1000", "--verify"];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!(
            "echo {addr} tcp: 40 round-trips of 1000 bytes in "
        )),
        "stdout: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("round-trips/s"),
        "stdout: {}",
        out.stdout
    );
    assert!(
        out.stdout.trim_end().ends_with("; every byte verified"),
        "stdout: {}",
        out.stdout
    );
}

/// A message far larger than the socket buffers: a client that wrote it
/// whole before reading would wait forever on a server that only reads
/// while its replies are being read.
#[test]
fn messages_larger_than_the_socket_buffers_do_not_deadlock() {
    let addr = tcp_server(Behaviour::DribblingEcho).to_string();
    let size = (8 * 1024 * 1024).to_string();
    let args = ["echo", &addr, "--count", "2", "--size", &size, "--verify"];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("every byte verified"),
        "stdout: {}",
        out.stdout
    );
}

#[test]
fn a_changed_byte_is_a_mismatch_with_exit_status_1() {
    let addr = tcp_server(Behaviour::UpperEcho).to_string();
    let args = ["echo", &addr, "--count", "3", "--size", "200", "--verify"];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(1));
    // Message 0 holds the byte values 0, 1, 2, ...: the first one the
    // server changes is `a` (0x61), at offset 97.
    assert_eq!(
        out.stderr,
        "socketlab echo: echo mismatch in message 0 at byte 97: sent 0x61, got 0x41\n"
    );
}

#[test]
fn without_verify_only_the_lengths_are_checked() {
    let addr = tcp_server(Behaviour::UpperEcho).to_string();
    let out = run_client(&["echo", &addr, "--count", "3", "--size", "200"], b"");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(!out.stdout.contains("verified"), "stdout: {}", out.stdout);
}

#[test]
fn counted_udp_datagrams_are_verified() {
    let (addr, received) = udp_server(|datagram| Some(datagram.to_vec()));
    let addr = addr.to_string();
    let args = [
        "echo", "--udp", &addr, "--count", "25", "--size", "1200", "--verify",
    ];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout
            .starts_with(&format!("echo {addr} udp: 25 round-trips of 1200 bytes")),
        "stdout: {}",
        out.stdout
    );
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 25);
    assert!(received.iter().all(|d| d.len() == 1200));
}

#[test]
fn a_truncated_udp_echo_is_a_mismatch() {
    let (addr, _) = udp_server(|datagram| Some(datagram[..datagram.len() - 1].to_vec()));
    let args = [
        "echo",
        "--udp",
        &addr.to_string(),
        "--count",
        "1",
        "--size",
        "10",
    ];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(1));
    assert_eq!(
        out.stderr,
        "socketlab echo: echo mismatch in message 0: sent 10 bytes, got a datagram of 9\n"
    );
}

#[test]
fn a_lost_udp_reply_is_a_timeout() {
    let (addr, _) = udp_server(|_| None);
    let args = [
        "echo",
        "--udp",
        &addr.to_string(),
        "--count",
        "1",
        "--timeout",
        "200ms",
    ];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(1));
    assert_eq!(
        out.stderr,
        "socketlab echo: timed out after 200ms waiting for an echo datagram\n"
    );
}

#[test]
fn oversized_datagrams_are_refused_before_sending() {
    let (addr, received) = udp_server(|datagram| Some(datagram.to_vec()));
    let args = [
        "echo",
        "--udp",
        &addr.to_string(),
        "--count",
        "1",
        "--size",
        "65508",
    ];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("at most 65507"),
        "stderr: {}",
        out.stderr
    );
    assert!(received.lock().unwrap().is_empty());
}
