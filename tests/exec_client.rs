//! `socketlab exec`, the client, end to end against a real daemon: exit
//! status, stdout and stderr kept apart, streamed stdin, Ctrl-C, and its
//! messages when things go wrong.
//! Run: `cargo test --test exec_client`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use common::{Daemon, PATIENCE, wait_until};

/// `socketlab exec` aimed at the daemon, with the key from its data dir.
fn client(d: &Daemon) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_socketlab"));
    cmd.arg("exec")
        .arg("--addr")
        .arg(d.tcp("exec").to_string())
        .arg("--data-dir")
        .arg(d.data_dir());
    cmd
}

/// Runs the client to its end (bounded: the remote programs are short).
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .expect("run socketlab exec")
}

#[test]
fn exit_code_and_split_output_pass_through() {
    let d = Daemon::start(&[]);
    let out = output(client(&d).args(["--", "sh", "-c", "echo out; echo err >&2; exit 3"]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    let out = output(client(&d).args(["--", "true"]));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_signal_ends_the_client_with_128_plus_its_number() {
    let d = Daemon::start(&[]);
    let out = output(client(&d).args(["--", "sh", "-c", "kill -TERM $$"]));
    assert_eq!(out.status.code(), Some(128 + 15));
    let out = output(client(&d).args(["--", "sh", "-c", "kill -KILL $$"]));
    assert_eq!(out.status.code(), Some(128 + 9));
}

#[test]
fn arguments_starting_with_dashes_belong_to_the_program() {
    let d = Daemon::start(&[]);
    let out = output(client(&d).args(["--", "printf", "%s|", "--stdin", "-x"]));
    assert_eq!(out.stdout, b"--stdin|-x|");
}

#[test]
fn stdin_is_forwarded_in_full() {
    let d = Daemon::start(&[]);
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut child = client(&d)
        .args(["--stdin", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout == data,
        "{} bytes back of {}",
        out.stdout.len(),
        data.len()
    );
}

#[test]
fn stdin_is_streamed_not_read_whole() {
    let d = Daemon::start(&[]);
    let mut child = client(&d)
        .args(["--stdin", "--", "sh", "-c", "read line; echo got:$line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    // Our end of its stdin stays open: the answer can only come if the
    // line was sent as it was read.
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(PATIENCE)
        .expect("no answer while stdin is open");
    assert_eq!(line, "got:hello\n");
    // The program has ended; the client exits although stdin is still open.
    let mut status = None;
    assert!(wait_until(|| {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(0));
    drop(stdin);
}

#[test]
fn ctrl_c_interrupts_the_remote_program() {
    let d = Daemon::start(&[]);
    let mut child = client(&d)
        .args(["--", "sh", "-c", "echo ready; exec sleep 30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut status = None;
    assert!(wait_until(|| {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(
        status.unwrap().code(),
        Some(128 + 2),
        "INT reached the program"
    );
}

#[test]
fn a_timeout_is_reported() {
    let d = Daemon::start(&[]);
    let out = output(client(&d).args(["--timeout", "300ms", "--", "sleep", "30"]));
    assert_eq!(out.status.code(), Some(128 + 15));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timed out"), "{stderr}");
}

#[test]
fn shell_runs_when_the_daemon_allows_them() {
    let d = Daemon::start(&["--set", "exec.allow_shell=true"]);
    let out = output(client(&d).args(["--shell", "echo a b | tr ' ' '\\n' | sort -r"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"b\na\n");
    let d = Daemon::start(&[]);
    let out = output(client(&d).args(["--shell", "true"]));
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shell disabled"));
}

#[test]
fn the_shell_refusal_says_it_stops_shell_requests_only() {
    let d = Daemon::start(&[]);
    let out = output(client(&d).args(["--shell", "exit 3"]));
    assert_eq!(out.status.code(), Some(126));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"shell\" requests only"), "{stderr}");
    assert!(stderr.contains("exec.allow"), "{stderr}");
    // What the message says: the same command as argv is a program run,
    // which the default exec.allow admits.
    let out = output(client(&d).args(["--", "sh", "-c", "exit 3"]));
    assert_eq!(out.status.code(), Some(3));
}

// ---- Failures ----

#[test]
fn refusals_have_shell_like_statuses() {
    let d = Daemon::start(&["--set", r#"exec.allow=["echo","no-such-program"]"#]);
    let out = output(client(&d).args(["--", "no-such-program"]));
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = output(client(&d).args(["--", "cat"]));
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not allowed"));
}

#[test]
fn a_wrong_key_fails_with_255_and_says_so() {
    let d = Daemon::start(&[]);
    let other = tempfile::tempdir().unwrap();
    let key_file = other.path().join("other.key");
    std::fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let out = output(
        client(&d)
            .arg("--key-file")
            .arg(&key_file)
            .args(["--", "echo", "never"]),
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authentication failed"), "{stderr}");
}

#[test]
fn a_wrong_key_from_another_data_dir_suggests_data_dir() {
    let d = Daemon::start(&[]);
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("secret.key"), "cd".repeat(32)).unwrap();
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_socketlab"))
            .args(["exec", "--addr", &d.tcp("exec").to_string(), "--data-dir"])
            .arg(other.path())
            .args(["--", "true"]),
    );
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(stderr.contains("--data-dir DIR"), "{stderr}");
    assert!(
        stderr.contains(&other.path().display().to_string()),
        "{stderr}"
    );
}

#[test]
fn a_throttled_client_is_told_so() {
    let d = Daemon::start(&["--set", "auth.max_failures=1"]);
    let bad = tempfile::tempdir().unwrap();
    let key_file = bad.path().join("bad.key");
    std::fs::write(&key_file, "00".repeat(32)).unwrap();
    let out = output(client(&d).arg("--key-file").arg(&key_file).arg("true"));
    assert_eq!(out.status.code(), Some(255));
    let out = output(client(&d).arg("true"));
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too many failed attempts"), "{stderr}");
    // The client adds how long to wait (auth.lockout_s's default).
    assert!(
        stderr.contains("wait 60 s after the last failed attempt"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn no_daemon_means_255() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.key"), "00".repeat(32)).unwrap();
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_socketlab"))
            .args(["exec", "--addr", &addr.to_string(), "--data-dir"])
            .arg(dir.path())
            .args(["--", "true"]),
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    // No key file at all: also 255, with the path in the message.
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_socketlab"))
            .args([
                "exec",
                "--addr",
                &addr.to_string(),
                "--key-file",
                "/nonexistent/key",
            ])
            .args(["--", "true"]),
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/key"));
    // No key in the data dir given: the message says to give the daemon's.
    let empty = tempfile::tempdir().unwrap();
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_socketlab"))
            .args(["exec", "--addr", &addr.to_string(), "--data-dir"])
            .arg(empty.path())
            .args(["--", "true"]),
    );
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--data-dir DIR"), "{stderr}");
}

#[test]
fn a_closed_local_stdout_ends_the_client_and_the_program() {
    let d = Daemon::start(&[]);
    let mut child = client(&d)
        .args(["--", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut some = [0u8; 4096];
    stdout.read_exact(&mut some).unwrap();
    drop(stdout);
    let mut status = None;
    assert!(wait_until(|| {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(141));
    // The daemon saw the disconnect and stopped `yes`.
    assert!(wait_until(|| d.stderr().contains("stopping pid")));
}
