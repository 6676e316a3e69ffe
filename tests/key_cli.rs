//! `socketlab key show|rotate` through the real binary: neither creates a
//! key where the daemon would not look.
//! Run: `cargo test --test key_cli`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::Daemon;

/// Runs `socketlab key ARGS` in `cwd`.
fn key(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .arg("key")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run socketlab key")
}

#[test]
fn key_show_in_a_directory_without_a_key_creates_nothing_and_says_where_it_looked() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = key(elsewhere.path(), &["show"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let looked = elsewhere.path().join("socketlab-data").join("secret.key");
    assert!(err.contains(&looked.display().to_string()), "{err}");
    assert!(err.contains("--data-dir DIR"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none(),
        "key show created something"
    );
}

#[test]
fn key_rotate_without_a_key_creates_nothing_either() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = key(elsewhere.path(), &["rotate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn key_show_with_the_daemons_data_dir_prints_the_daemons_key_path() {
    let d = Daemon::start(&[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let data = d.data_dir();
    let out = key(
        elsewhere.path(),
        &["show", "--data-dir", data.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert_eq!(shown.trim(), data.join("secret.key").display().to_string());
}

#[test]
fn key_show_with_a_missing_key_file_names_that_file() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = key(elsewhere.path(), &["show", "--key-file", "/nonexistent/k"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/k") && err.contains("--key-file"),
        "{err}"
    );
}
