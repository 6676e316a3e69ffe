//! `socketlab daytime` against stand-in daytime servers: the TCP reply read
//! to EOF, UDP requests with and without a format, `error:` replies, and
//! the timeouts that keep a silent server from hanging the client.
//!
//! Run with `cargo test --test client_daytime`.

mod client_support;

use client_support::{Behaviour, run_client, tcp_sender, tcp_server, udp_server};

/// The stand-in UDP service: the time for an empty datagram, the format
/// itself echoed back for a known one, and an error for `%Q`.
fn udp_daytime(datagram: &[u8]) -> Option<Vec<u8>> {
    Some(match datagram {
        b"" => b"2026-11-03 09:05:01".to_vec(),
        b"%Q" => b"error: unknown specifier %Q".to_vec(),
        format => [b"formatted ", format].concat(),
    })
}

#[test]
fn tcp_reads_until_the_daemon_closes() {
    let addr = tcp_sender(b"2026-11-03 09:05:01\n").to_string();
    let out = run_client(&["daytime", &addr], b"");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "2026-11-03 09:05:01\n");
    assert_eq!(out.stderr, "");
}

#[test]
fn tcp_error_replies_go_to_stderr() {
    let addr = tcp_sender(b"error: clock unavailable\n").to_string();
    let out = run_client(&["daytime", &addr], b"");
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "error: clock unavailable\n");
}

#[test]
fn tcp_without_a_reply_is_an_error() {
    let addr = tcp_sender(b"").to_string();
    let out = run_client(&["daytime", &addr], b"");
    assert_eq!(out.code(), Some(1));
    assert_eq!(
        out.stderr,
        format!("socketlab daytime: {addr} closed the connection without sending the time\n")
    );
}

#[test]
fn tcp_that_never_closes_is_a_timeout() {
    let addr = tcp_server(Behaviour::Silent).to_string();
    let out = run_client(&["daytime", &addr, "--timeout", "250ms"], b"");
    assert_eq!(out.code(), Some(1));
    assert_eq!(
        out.stderr,
        "socketlab daytime: timed out after 250ms waiting for the daemon to send the time and close\n"
    );
}

#[test]
fn udp_sends_an_empty_datagram_for_the_time() {
    let (addr, received) = udp_server(udp_daytime);
    let out = run_client(&["daytime", "--udp", &addr.to_string()], b"");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "2026-11-03 09:05:01\n");
    assert_eq!(*received.lock().unwrap(), [Vec::<u8>::new()]);
}

#[test]
fn udp_sends_the_format_as_the_datagram() {
    let (addr, received) = udp_server(udp_daytime);
    let args = [
        "daytime",
        "--udp",
        "--format",
        "%A %H:%M",
        &addr.to_string(),
    ];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "formatted %A %H:%M\n");
    assert_eq!(*received.lock().unwrap(), [b"%A %H:%M".to_vec()]);
}

#[test]
fn udp_error_replies_go_to_stderr_with_status_1() {
    let (addr, _) = udp_server(udp_daytime);
    let args = ["daytime", "--udp", "--format", "%Q", &addr.to_string()];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "error: unknown specifier %Q\n");
}

#[test]
fn udp_without_a_reply_is_a_timeout() {
    let (addr, _) = udp_server(|_| None);
    let args = ["daytime", "--udp", &addr.to_string(), "--timeout", "200ms"];
    let out = run_client(&args, b"");
    assert_eq!(out.code(), Some(1));
    assert_eq!(
        out.stderr,
        "socketlab daytime: timed out after 200ms waiting for the time datagram\n"
    );
}

#[test]
fn udp_cannot_use_a_unix_socket() {
    let out = run_client(&["daytime", "--udp", "unix:/tmp/nowhere.sock"], b"");
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("UDP needs an IP address"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn a_format_needs_udp() {
    let out = run_client(&["daytime", "--format", "%H"], b"");
    assert_eq!(out.code(), Some(2));
    assert!(out.stderr.contains("--udp"), "stderr: {}", out.stderr);
}
