//! `socketlab user add|passwd|del|list` (PROTOCOL.md §5.4): exit status 0
//! done, 1 refused, 2 usage; the store keeps no password.
//! Run: `cargo test --test files_user_cli`.

mod common;
mod exec_support;
mod files_support;

use files_support::{TEST_ITERATIONS, user_cmd};

fn status(dir: &std::path::Path, args: &[&str], stdin: &str) -> i32 {
    user_cmd(dir, args, stdin).status.code().expect("exit code")
}

#[test]
fn exit_codes_follow_the_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let add = |name: &str| {
        status(
            dir,
            &[
                "add",
                name,
                "--password-stdin",
                "--iterations",
                TEST_ITERATIONS,
            ],
            "secret\n",
        )
    };
    assert_eq!(add("alice"), 0);
    assert_eq!(add("alice"), 1, "name taken");
    for bad in [".hidden", "-dash", "a/b", &"x".repeat(33), ""] {
        assert_eq!(add(bad), 2, "bad name {bad:?}");
    }
    assert_eq!(
        status(
            dir,
            &["add", "q", "--password-stdin", "--quota", "12X"],
            "pw\n"
        ),
        2,
        "bad quota"
    );
    assert_eq!(
        status(
            dir,
            &["add", "q", "--password-stdin", "--iterations", "10"],
            "pw\n"
        ),
        2,
        "too few iterations"
    );
    assert_eq!(status(dir, &["frobnicate"], ""), 2, "unknown subcommand");
    assert_eq!(
        status(dir, &["passwd", "nobody", "--password-stdin"], "pw\n"),
        1
    );
    assert_eq!(status(dir, &["del", "nobody"], ""), 1);
    assert_eq!(
        status(
            dir,
            &[
                "passwd",
                "alice",
                "--password-stdin",
                "--iterations",
                TEST_ITERATIONS
            ],
            "new\n"
        ),
        0
    );
    let store = std::fs::read_to_string(dir.join("users.json")).unwrap();
    assert!(!store.contains("secret") && !store.contains("\"new\""));
    assert_eq!(status(dir, &["del", "alice"], ""), 0);
    assert_eq!(status(dir, &["del", "alice"], ""), 1);
}

#[test]
fn list_prints_name_quota_and_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, quota) in [("b", None), ("a", Some("2K"))] {
        let mut args = vec![
            "add",
            name,
            "--password-stdin",
            "--iterations",
            TEST_ITERATIONS,
        ];
        if let Some(q) = quota {
            args.extend(["--quota", q]);
        }
        assert_eq!(status(dir, &args, "pw\n"), 0);
    }
    std::fs::write(dir.join("files/home/b/x"), [0; 10]).unwrap();
    let out = user_cmd(dir, &["list"], "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "a 2048 0\nb none 10\n"
    );
}

// ---- The terminal prompt ----

/// Runs `socketlab user ARGS` with a fresh pseudo-terminal as its
/// controlling terminal, answers each prompt in `answers` in turn, and
/// returns the exit code and everything the terminal showed.
fn on_terminal(dir: &std::path::Path, args: &[&str], answers: &[&str]) -> (i32, String) {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;

    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_socketlab"));
    cmd.arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::ioctl(slave, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // SAFETY: both descriptors came from openpty above.
    drop(unsafe { std::fs::File::from_raw_fd(slave) });
    let mut tty = unsafe { std::fs::File::from_raw_fd(master) };
    let mut shown = Vec::new();
    let read_until = |tty: &mut std::fs::File, shown: &mut Vec<u8>, token: &[u8]| {
        let deadline = std::time::Instant::now() + common::PATIENCE;
        while !shown.windows(token.len()).any(|w| w == token) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {token:?} in {shown:?}"
            );
            let mut poll = libc::pollfd {
                fd: master,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut poll, 1, 100) } <= 0 {
                continue;
            }
            let mut buf = [0u8; 256];
            match tty.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => shown.extend_from_slice(&buf[..n]),
            }
        }
    };
    for (i, answer) in answers.iter().enumerate() {
        let prompt: &[u8] = if i == 0 { b"password: " } else { b"again: " };
        read_until(&mut tty, &mut shown, prompt);
        tty.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
    let status = child.wait().unwrap();
    (
        status.code().expect("exit code"),
        String::from_utf8_lossy(&shown).into_owned(),
    )
}

#[test]
fn without_password_stdin_the_password_is_asked_twice_without_echo() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["add", "tty", "--iterations", TEST_ITERATIONS];
    let (code, shown) = on_terminal(tmp.path(), &args, &["typed-secret", "typed-secret"]);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains("typed-secret"), "echoed: {shown:?}");
    let (code, _) = on_terminal(
        tmp.path(),
        &["passwd", "tty", "--iterations", TEST_ITERATIONS],
        &["one", "two"],
    );
    assert_eq!(code, 1, "passwords that differ are refused");
}
