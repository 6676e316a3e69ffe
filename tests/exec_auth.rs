//! exec authentication (PROTOCOL.md §5.2): the handshake, its failures,
//! the deadline, throttling, and key rotation.
//! Run: `cargo test --test exec_auth`.

mod common;
mod exec_support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::json;

use common::{Daemon, wait_until};
use exec_support::*;

// ---- The handshake ----

#[test]
fn key_file_is_created_private_and_the_right_mac_is_accepted() {
    let d = Daemon::start(&[]);
    let path = d.data_dir().join("secret.key");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65, "64 hex characters and a newline");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (mut s, challenge) = hello(&d);
    assert_eq!(challenge.len(), 64);
    assert!(challenge.bytes().all(|b| b.is_ascii_hexdigit()));
    send(
        &mut s,
        &json!({"type": "auth", "mac": mac_hex(&key_of(&d), &challenge)}),
    );
    assert_eq!(recv(&mut s), json!({"type": "ok"}));
    // Served after ok.
    let out = run_to_end(&mut s, argv(&["echo", "in"]));
    assert_eq!(out.stdout, b"in\n");
}

#[test]
fn hello_is_exactly_the_protocol_shape_with_a_fresh_challenge() {
    let d = Daemon::start(&[]);
    let (_a, first) = hello(&d);
    let (mut s, second) = hello(&d);
    assert_ne!(first, second, "every connection gets its own challenge");
    // The raw bytes of the next hello, compared to the exact text.
    let mut s2 = d.connect("exec");
    let mut prefix = [0u8; 4];
    std::io::Read::read_exact(&mut s2, &mut prefix).unwrap();
    let mut body = vec![0; u32::from_be_bytes(prefix) as usize];
    std::io::Read::read_exact(&mut s2, &mut body).unwrap();
    let text = String::from_utf8(body).unwrap();
    let challenge = &text[text.len() - 66..text.len() - 2];
    assert_eq!(
        text,
        format!(
            r#"{{"type":"hello","service":"exec","version":1,"auth":"hmac-sha256","challenge":"{challenge}"}}"#
        )
    );
    send(
        &mut s,
        &json!({"type": "auth", "mac": mac_hex(&key_of(&d), &second)}),
    );
    assert_eq!(recv(&mut s), json!({"type": "ok"}));
}

#[test]
fn a_wrong_mac_is_refused_and_the_connection_closed() {
    let d = Daemon::start(&[]);
    let (mut s, challenge) = hello(&d);
    let mut wrong_key = key_of(&d);
    wrong_key[0] ^= 1;
    send(
        &mut s,
        &json!({"type": "auth", "mac": mac_hex(&wrong_key, &challenge)}),
    );
    let e = expect_error(&mut s);
    assert_eq!(
        e,
        json!({"type": "error", "error": "authentication failed"})
    );
    expect_closed(&mut s);
    let port = s.local_addr().unwrap().port();
    assert!(
        wait_until(|| d.stderr().contains(&format!("127.0.0.1:{port}"))),
        "the failure is logged with the peer address:\n{}",
        d.stderr()
    );
}

#[test]
fn a_mac_replayed_on_a_new_connection_fails() {
    let d = Daemon::start(&[]);
    let key = key_of(&d);
    let (mut first, challenge) = hello(&d);
    let mac = mac_hex(&key, &challenge);
    send(&mut first, &json!({"type": "auth", "mac": mac}));
    assert_eq!(recv(&mut first), json!({"type": "ok"}));

    // An eavesdropper replays the same answer on its own connection.
    let (mut replay, other) = hello(&d);
    assert_ne!(other, challenge);
    send(&mut replay, &json!({"type": "auth", "mac": mac}));
    expect_error(&mut replay);
    expect_closed(&mut replay);
}

#[test]
fn requests_before_authentication_are_refused_and_closed() {
    let d = Daemon::start(&[]);
    let cases = [
        json!({"type": "run", "argv": ["echo", "sneaky"]}),
        json!({"type": "auth"}),
        json!({"type": "auth", "mac": 12}),
        json!({"type": "auth", "mac": "zz"}),
    ];
    for request in cases {
        let (mut s, _) = hello(&d);
        send(&mut s, &request);
        let e = expect_error(&mut s);
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .starts_with("authentication failed"),
            "{request}: {e}"
        );
        expect_closed(&mut s);
    }
    // A frame that is not even JSON, before authentication.
    let (mut s, _) = hello(&d);
    send_raw_frame(&mut s, b"{nope");
    expect_error(&mut s);
    expect_closed(&mut s);
    // Nothing ran: the workdir is empty and the log names no program.
    assert!(!d.stderr().contains("sneaky"));
}

#[test]
fn silence_past_the_deadline_times_out() {
    let d = Daemon::start(&["--set", "auth.handshake_timeout_s=1"]);
    let (mut s, _) = hello(&d);
    let start = Instant::now();
    let e = expect_error(&mut s);
    assert_eq!(
        e,
        json!({"type": "error", "error": "authentication timed out"})
    );
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    expect_closed(&mut s);
}

#[test]
fn an_authenticated_connection_has_no_handshake_deadline() {
    let d = Daemon::start(&["--set", "auth.handshake_timeout_s=1"]);
    let mut s = login(&d);
    // Longer than the handshake deadline, measured by a program the
    // daemon runs, not by the test sleeping.
    let out = run_to_end(&mut s, argv(&["sleep", "1.5"]));
    assert_eq!(exit_summary(&out.exit).0, json!(0));
    let out = run_to_end(&mut s, argv(&["echo", "still here"]));
    assert_eq!(out.stdout, b"still here\n");
}

// ---- Throttling ----

#[test]
fn repeated_failures_lock_the_address_out_until_the_lockout_ends() {
    let d = Daemon::start(&["--set", "auth.max_failures=2", "--set", "auth.lockout_s=2"]);
    for _ in 0..2 {
        let (mut s, challenge) = hello(&d);
        send(
            &mut s,
            &json!({"type": "auth", "mac": mac_hex(&[0; 32], &challenge)}),
        );
        expect_error(&mut s);
        expect_closed(&mut s);
    }
    // Locked: no hello, the throttled error instead, even with the key.
    let locked_at = Instant::now();
    let mut s = d.connect("exec");
    assert_eq!(
        recv(&mut s),
        json!({"type": "error", "code": "throttled", "error": "too many failed attempts; retry later"})
    );
    expect_closed(&mut s);
    // After the lockout, hello again.
    let key = key_of(&d);
    assert!(wait_until(|| {
        let mut s = d.connect("exec");
        let first = recv(&mut s);
        if first["type"] != "hello" {
            return false;
        }
        let mac = mac_hex(&key, first["challenge"].as_str().unwrap());
        send(&mut s, &json!({"type": "auth", "mac": mac}));
        recv(&mut s) == json!({"type": "ok"})
    }));
    assert!(locked_at.elapsed() >= Duration::from_millis(1500));
    assert!(d.stderr().contains("address locked out"), "{}", d.stderr());
}

#[test]
fn a_handshake_timeout_counts_as_a_failure() {
    let d = Daemon::start(&[
        "--set",
        "auth.handshake_timeout_s=1",
        "--set",
        "auth.max_failures=1",
        "--set",
        "auth.lockout_s=60",
    ]);
    let (mut s, _) = hello(&d);
    assert_eq!(expect_error(&mut s)["error"], "authentication timed out");
    expect_closed(&mut s);
    let mut s = d.connect("exec");
    assert_eq!(expect_error(&mut s)["code"], "throttled");
}

/// Connections opened before any failure used to get a guess each: the
/// lock was checked only when a connection was accepted. Now it is checked
/// again when the mac arrives, so however many connections a client holds
/// open, at most `auth.max_failures` of its macs are ever evaluated.
#[test]
fn pre_opened_connections_get_at_most_max_failures_guesses() {
    const OPENED: usize = 50;
    const MAX_FAILURES: usize = 5;
    let d = Daemon::start(&[
        "--set",
        &format!("auth.max_failures={MAX_FAILURES}"),
        "--set",
        "auth.lockout_s=60",
    ]);
    let opened: Vec<_> = (0..OPENED).map(|_| hello(&d)).collect();
    let (mut evaluated, mut throttled) = (0, 0);
    for (mut s, challenge) in opened {
        send(
            &mut s,
            &json!({"type": "auth", "mac": mac_hex(&[7; 32], &challenge)}),
        );
        let e = expect_error(&mut s);
        if e == json!({"type": "error", "error": "authentication failed"}) {
            evaluated += 1;
        } else {
            assert_eq!(
                e,
                json!({"type": "error", "code": "throttled", "error": "too many failed attempts; retry later"})
            );
            throttled += 1;
        }
        expect_closed(&mut s);
    }
    assert_eq!(evaluated, MAX_FAILURES, "macs evaluated");
    assert_eq!(throttled, OPENED - MAX_FAILURES, "macs turned away unread");
}

/// IPv6 clients are counted by their /64; through the daemon that is
/// visible on `::1` alone: its failures lock it out like an IPv4 address.
#[test]
fn an_ipv6_client_is_locked_out_too() {
    let d = Daemon::start(&["--bind", "::1", "--set", "auth.max_failures=1"]);
    assert!(d.tcp("exec").is_ipv6());
    let (mut s, challenge) = hello(&d);
    send(
        &mut s,
        &json!({"type": "auth", "mac": mac_hex(&[9; 32], &challenge)}),
    );
    assert_eq!(expect_error(&mut s)["error"], "authentication failed");
    let mut s = d.connect("exec");
    assert_eq!(expect_error(&mut s)["code"], "throttled");
    expect_closed(&mut s);
}

#[test]
fn max_failures_zero_turns_throttling_off() {
    let d = Daemon::start(&["--set", "auth.max_failures=0"]);
    for _ in 0..8 {
        let (mut s, challenge) = hello(&d);
        send(
            &mut s,
            &json!({"type": "auth", "mac": mac_hex(&[1; 32], &challenge)}),
        );
        expect_error(&mut s);
    }
    login(&d);
}

// ---- The key file ----

#[test]
fn a_rotated_key_is_used_for_new_connections() {
    let d = Daemon::start(&[]);
    let old = key_of(&d);
    let path = d.data_dir().join("secret.key");
    // `socketlab key rotate`, as an operator would run it.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(["key", "rotate", "--data-dir"])
        .arg(d.data_dir())
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let new = read_key(&path);
    assert_ne!(old, new);

    let (mut s, challenge) = hello(&d);
    send(
        &mut s,
        &json!({"type": "auth", "mac": mac_hex(&old, &challenge)}),
    );
    expect_error(&mut s);
    let (mut s, challenge) = hello(&d);
    send(
        &mut s,
        &json!({"type": "auth", "mac": mac_hex(&new, &challenge)}),
    );
    assert_eq!(recv(&mut s), json!({"type": "ok"}));
}

#[test]
fn an_existing_key_file_is_kept_and_used() {
    let key = [0x5a_u8; 32];
    let d = Daemon::start_with(&[], |cmd| {
        // Put a key in the data dir the harness chose, before the start.
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let at = args.iter().position(|a| a == "--data-dir").unwrap();
        let data = std::path::PathBuf::from(&args[at + 1]);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("secret.key"), hex_encode(&key)).unwrap();
        let loose = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(data.join("secret.key"), loose).unwrap();
    });
    assert_eq!(key_of(&d), key);
    let (mut s, challenge) = hello(&d);
    send(
        &mut s,
        &json!({"type": "auth", "mac": mac_hex(&key, &challenge)}),
    );
    assert_eq!(recv(&mut s), json!({"type": "ok"}));
    assert!(
        d.stderr().contains("others can read the key"),
        "a loose mode is warned about:\n{}",
        d.stderr()
    );
}
