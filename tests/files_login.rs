//! files login (PROTOCOL.md §5.4): SCRAM with right, wrong and unknown
//! users, the demo user, the deadline, the throttle shared with exec, and a
//! user store changed while the daemon runs.
//! Run: `cargo test --test files_login`.

mod common;
mod exec_support;
mod files_support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::json;

use common::Daemon;
use files_support::*;

// ---- The exchange ----

#[test]
fn the_right_password_logs_in_and_the_signature_proves_the_daemon() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "correct horse", None);
    // `login` checks the signature against the one computed from the
    // password: a daemon without the user's ServerKey could not make it.
    let mut s = login(&d, "alice", "correct horse");
    assert_eq!(
        ask(&mut s, json!({"type": "pwd"})),
        json!({"type": "ok", "cwd": "/"})
    );
}

#[test]
fn a_wrong_password_fails_closes_and_is_logged() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "correct horse", None);
    let (mut s, answer) = try_login(&d, "alice", "battery staple");
    assert_eq!(
        answer,
        json!({"type": "error", "error": "authentication failed"})
    );
    expect_closed(&mut s);
    assert!(common::wait_until(|| d.stderr().contains("failed login")));
}

#[test]
fn an_unknown_user_gets_a_challenge_like_a_real_one_and_the_same_failure() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", None);
    let mut s = hello(&d);
    let real = challenge(&mut s, "alice");
    let mut s = hello(&d);
    let fake = challenge(&mut s, "mallory");
    let mut s2 = hello(&d);
    let fake_again = challenge(&mut s2, "mallory");
    let salt = |c: &serde_json::Value| c["salt"].as_str().unwrap().to_string();
    assert_eq!(salt(&real).len(), salt(&fake).len());
    assert_eq!(salt(&fake), salt(&fake_again), "repeated probes agree");
    assert_ne!(fake["nonce"], fake_again["nonce"], "the nonce is fresh");
    let keys = |c: &serde_json::Value| {
        let mut k: Vec<_> = c.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&real), keys(&fake));
    // The default iteration count, not the test users' 4096.
    assert_eq!(
        fake["iterations"],
        socketlab::auth::users::DEFAULT_ITERATIONS
    );
    let (p, _) = proof("mallory", "anything", &fake);
    send(&mut s, &json!({"type": "proof", "proof": p}));
    assert_eq!(
        recv(&mut s),
        json!({"type": "error", "error": "authentication failed"})
    );
    expect_closed(&mut s);
}

#[test]
fn requests_before_login_are_refused_and_close() {
    let d = Daemon::start(&[]);
    let mut s = hello(&d);
    send(&mut s, &json!({"type": "pwd"}));
    let e = expect_error(&mut s);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("authentication failed")
    );
    expect_closed(&mut s);
    // A login frame with a bad nonce is a bad authentication frame too.
    let mut s = hello(&d);
    send(
        &mut s,
        &json!({"type": "login", "user": "demo", "nonce": "a,b"}),
    );
    expect_error(&mut s);
    expect_closed(&mut s);
}

#[test]
fn the_demo_user_is_created_on_first_start_with_a_private_password_file() {
    let d = Daemon::start(&[]);
    let path = d.data_dir().join("demo.password");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(d.stderr().contains("created user demo"), "{}", d.stderr());
    let password = std::fs::read_to_string(&path).unwrap();
    let mut s = login(&d, "demo", password.trim_end());
    assert_eq!(ask(&mut s, json!({"type": "quota"}))["limit"], json!(null));
}

// ---- Deadline and throttle ----

#[test]
fn the_deadline_covers_both_client_steps() {
    let d = Daemon::start(&["--set", "auth.handshake_timeout_s=1"]);
    let started = Instant::now();
    let mut s = hello(&d);
    // The first step in time, the second never.
    let _ = challenge(&mut s, "demo");
    assert_eq!(
        recv(&mut s),
        json!({"type": "error", "error": "authentication timed out"})
    );
    expect_closed(&mut s);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn failed_logins_lock_the_address_out_of_files_and_exec() {
    let d = Daemon::start(&["--set", "auth.max_failures=2", "--set", "auth.lockout_s=60"]);
    add_user(&d, "alice", "pw", None);
    for _ in 0..2 {
        let (_, answer) = try_login(&d, "alice", "wrong");
        assert_eq!(answer["error"], "authentication failed");
    }
    let mut s = d.connect("files");
    assert_eq!(
        recv(&mut s),
        json!({"type": "error", "code": "throttled", "error": "too many failed attempts; retry later"})
    );
    expect_closed(&mut s);
    let mut e = d.connect("exec");
    assert_eq!(recv(&mut e)["code"], "throttled");
}

#[test]
fn a_lockout_during_the_login_stops_the_proof() {
    let d = Daemon::start(&["--set", "auth.max_failures=1", "--set", "auth.lockout_s=60"]);
    add_user(&d, "alice", "pw", None);
    // This connection gets its challenge before the address is locked...
    let mut s = hello(&d);
    let c = challenge(&mut s, "alice");
    let (_, answer) = try_login(&d, "alice", "wrong");
    assert_eq!(answer["error"], "authentication failed");
    // ...and its right proof is refused once it is.
    let (p, _) = proof("alice", "pw", &c);
    send(&mut s, &json!({"type": "proof", "proof": p}));
    assert_eq!(recv(&mut s)["code"], "throttled");
}

// ---- The store changes under the daemon ----

#[test]
fn users_added_changed_and_deleted_take_effect_without_a_restart() {
    let d = Daemon::start(&[]);
    add_user(&d, "bob", "one", None);
    drop(login(&d, "bob", "one"));

    let out = user_cmd(
        &d.data_dir(),
        &[
            "passwd",
            "bob",
            "--password-stdin",
            "--iterations",
            TEST_ITERATIONS,
        ],
        "two\n",
    );
    assert!(out.status.success());
    assert_eq!(
        try_login(&d, "bob", "one").1["error"],
        "authentication failed"
    );
    drop(login(&d, "bob", "two"));

    let out = user_cmd(&d.data_dir(), &["del", "bob"], "");
    assert!(out.status.success());
    assert_eq!(
        try_login(&d, "bob", "two").1["error"],
        "authentication failed"
    );
}
