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
