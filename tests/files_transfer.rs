//! files transfers (PROTOCOL.md §5.5, §6): put and get with SHA-256,
//! checksum mismatch, resuming after a disconnect and after kill -9,
//! quotas and their races, many users at once, a symlink swapped in
//! mid-transfer, a reader that stops reading, and a full disk.
//! Run: `cargo test --test files_transfer`.

mod common;
mod exec_support;
mod files_support;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::Instant;

use serde_json::json;

use common::{Daemon, wait_until};
use files_support::*;

fn part_len(d: &Daemon, user: &str) -> Option<u64> {
    let name = staged(d, user).into_iter().find(|n| n.ends_with(".part"))?;
    let path = d.data_dir().join("files/.staging").join(user).join(name);
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Sends a put header and returns the `ready` answer's offset.
fn begin_put(s: &mut TcpStream, path: &str, data: &[u8]) -> u64 {
    send(
        s,
        &json!({"type": "put", "path": path, "size": data.len(), "sha256": sha_hex(data)}),
    );
    let ready = recv(s);
    assert_eq!(ready["type"], "ready", "{ready}");
    ready["offset"].as_u64().unwrap()
}

// ---- Round trips ----

#[test]
fn put_then_get_round_trips_with_the_whole_file_sha256() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", None);
    let mut s = login(&d, "alice", "pw");
    let data = payload(3 * 1024 * 1024 + 17, 1);
    assert_eq!(
        put(&mut s, "big.bin", &data),
        json!({"type": "ok", "size": data.len(), "sha256": sha_hex(&data)})
    );
    assert_eq!(
        std::fs::read(home(&d, "alice").join("big.bin")).unwrap(),
        data
    );
    let (ready, got) = get(&mut s, "big.bin", 0);
    assert_eq!(
        ready,
        json!({"type": "ready", "size": data.len(), "offset": 0, "sha256": sha_hex(&data)})
    );
    assert_eq!(got, data);
    // From an offset, the rest; the digest is still the whole file's.
    let (ready, tail) = get(&mut s, "/big.bin", 1000);
    assert_eq!(ready["sha256"], sha_hex(&data));
    assert_eq!(tail, &data[1000..]);
    // Replacing a file, and an empty file.
    assert_eq!(put(&mut s, "big.bin", b"small")["size"], 5);
    assert_eq!(get(&mut s, "big.bin", 0).1, b"small");
    assert_eq!(put(&mut s, "empty", b"")["type"], "ok");
    assert_eq!(get(&mut s, "empty", 0).1, b"");
    assert_eq!(
        ask(&mut s, json!({"type": "get", "path": "empty", "offset": 1}))["type"],
        "error"
    );
    assert!(staged(&d, "alice").is_empty(), "{:?}", staged(&d, "alice"));
}

#[test]
fn a_get_after_a_put_announces_the_digest_the_put_verified_without_hashing_again() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", None);
    let mut s = login(&d, "alice", "pw");
    let data = payload(64 * 1024, 3);
    assert_eq!(put(&mut s, "kept.bin", &data)["type"], "ok");
    // The bytes change on disk under the same identity (inode, size,
    // mtime), which the digest cache keys on: only a digest remembered at
    // the put's commit, not one computed now, is the old content's.
    let path = home(&d, "alice").join("kept.bin");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"changed", 0).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let (ready, got) = get(&mut s, "kept.bin", 0);
    assert_eq!(
        ready["sha256"],
        sha_hex(&data),
        "the put's digest, remembered"
    );
    assert_ne!(got, data, "the bytes sent are the file's own");
}

#[test]
fn a_checksum_mismatch_changes_nothing_visible() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", Some("1M"));
    let mut s = login(&d, "alice", "pw");
    assert_eq!(put(&mut s, "f", b"old")["type"], "ok");
    let data = payload(100_000, 2);
    send(
        &mut s,
        &json!({"type": "put", "path": "f", "size": data.len(), "sha256": sha_hex(b"other")}),
    );
    assert_eq!(recv(&mut s)["type"], "ready");
    s.write_all(&data).unwrap();
    assert_eq!(
        recv(&mut s),
        json!({"type": "error", "error": "checksum mismatch"})
    );
    assert_eq!(std::fs::read(home(&d, "alice").join("f")).unwrap(), b"old");
    assert!(staged(&d, "alice").is_empty());
    assert_eq!(ask(&mut s, json!({"type": "quota"}))["used"], 3);
}

// ---- Resuming ----

#[test]
fn an_upload_cut_off_resumes_from_what_reached_the_daemon() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", Some("10M"));
    let data = payload(2 * 1024 * 1024, 3);
    let half = data.len() / 2;
    let mut s = login(&d, "alice", "pw");
    assert_eq!(begin_put(&mut s, "r.bin", &data), 0);
    s.write_all(&data[..half]).unwrap();
    assert!(wait_until(|| part_len(&d, "alice") == Some(half as u64)));
    drop(s);
    assert!(wait_until(|| d.stderr().contains("kept for resuming")));
    assert!(!home(&d, "alice").join("r.bin").exists(), "out of sight");

    let mut s = login(&d, "alice", "pw");
    // Interrupted, the upload still counts its announced size.
    assert_eq!(ask(&mut s, json!({"type": "quota"}))["used"], data.len());
    let offset = begin_put(&mut s, "r.bin", &data);
    assert_eq!(offset, half as u64);
    s.write_all(&data[half..]).unwrap();
    assert_eq!(recv(&mut s)["sha256"], sha_hex(&data));
    assert_eq!(
        std::fs::read(home(&d, "alice").join("r.bin")).unwrap(),
        data
    );
    assert_eq!(ask(&mut s, json!({"type": "quota"}))["used"], data.len());
}

#[test]
fn an_interrupted_upload_expires_after_the_resume_ttl() {
    let d = Daemon::start(&["--set", "files.resume_ttl_s=1"]);
    add_user(&d, "alice", "pw", None);
    let data = payload(100_000, 11);
    let mut s = login(&d, "alice", "pw");
    assert_eq!(begin_put(&mut s, "x", &data), 0);
    s.write_all(&data[..50_000]).unwrap();
    assert!(wait_until(|| part_len(&d, "alice") == Some(50_000)));
    drop(s);
    assert!(wait_until(|| d.stderr().contains("kept for resuming")));
    // Counted while on record; gone, bytes and all, once expired (checked
    // at each login).
    assert!(wait_until(|| {
        let mut s = login(&d, "alice", "pw");
        ask(&mut s, json!({"type": "quota"}))["used"] == 0
    }));
    assert!(staged(&d, "alice").is_empty());
    let mut s = login(&d, "alice", "pw");
    assert_eq!(begin_put(&mut s, "x", &data), 0, "starts over");
}

/// Stops the daemon with `signal` and starts it again on the same data dir.
fn stop_and_restart(d: &mut Daemon, signal: i32) {
    d.signal(signal);
    let status = d.wait();
    if signal == libc::SIGTERM {
        assert!(status.success(), "{status}");
    }
    let ready_path = d.path("ready.json");
    std::fs::remove_file(&ready_path).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(["serve", "--port-base", "0", "--data-dir"])
        .arg(d.data_dir())
        .arg("--ready-file")
        .arg(&ready_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.path("stderr2")).unwrap())
        .spawn()
        .unwrap();
    d.child = child;
    assert!(wait_until(|| ready_path.exists()));
    d.ready = serde_json::from_str(&std::fs::read_to_string(&ready_path).unwrap()).unwrap();
}

#[test]
fn kill_9_mid_upload_then_restart_resumes_and_the_file_is_right() {
    let mut d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", None);
    let data = payload(1024 * 1024 + 5, 4);
    let sent = 700_000;
    let mut s = login(&d, "alice", "pw");
    assert_eq!(begin_put(&mut s, "k.bin", &data), 0);
    s.write_all(&data[..sent]).unwrap();
    assert!(wait_until(|| part_len(&d, "alice") == Some(sent as u64)));
    stop_and_restart(&mut d, libc::SIGKILL);

    let mut s = login(&d, "alice", "pw");
    let offset = begin_put(&mut s, "k.bin", &data);
    assert!(offset > 0 && offset <= sent as u64, "offset {offset}");
    s.write_all(&data[offset as usize..]).unwrap();
    assert_eq!(recv(&mut s)["type"], "ok");
    assert_eq!(get(&mut s, "k.bin", 0).1, data);
}

#[test]
fn sigterm_mid_upload_keeps_it_resumable_after_a_restart() {
    let mut d = Daemon::start(&["--set", "files.resume_ttl_s=3600"]);
    add_user(&d, "alice", "pw", None);
    let data = payload(600_000, 10);
    let sent = 250_000;
    let mut s = login(&d, "alice", "pw");
    assert_eq!(begin_put(&mut s, "t.bin", &data), 0);
    s.write_all(&data[..sent]).unwrap();
    assert!(wait_until(|| part_len(&d, "alice") == Some(sent as u64)));
    stop_and_restart(&mut d, libc::SIGTERM);

    let mut s = login(&d, "alice", "pw");
    assert_eq!(begin_put(&mut s, "t.bin", &data), sent as u64);
    s.write_all(&data[sent..]).unwrap();
    assert_eq!(recv(&mut s)["sha256"], sha_hex(&data));
    assert_eq!(
        std::fs::read(home(&d, "alice").join("t.bin")).unwrap(),
        data
    );
}

#[test]
fn connections_over_the_limit_get_an_error_frame() {
    let d = Daemon::start(&["--set", "files.max_connections=1"]);
    let _first = hello(&d);
    let mut second = d.connect("files");
    assert_eq!(
        recv(&mut second),
        json!({"type": "error", "code": "busy", "error": "too many connections"})
    );
    expect_closed(&mut second);
}

// ---- Quotas ----

#[test]
fn over_quota_is_refused_before_ready_with_the_free_bytes() {
    let d = Daemon::start(&[]);
    add_user(&d, "q", "pw", Some("1K"));
    let mut s = login(&d, "q", "pw");
    assert_eq!(put(&mut s, "a", &[1; 600])["type"], "ok");
    let refusal = put(&mut s, "b", &[2; 600]);
    assert_eq!(refusal["code"], "quota", "{refusal}");
    assert_eq!(refusal["free"], 424);
    // Replacing a file is credited with its size.
    assert_eq!(put(&mut s, "a", &[3; 1000])["type"], "ok");
    assert_eq!(
        ask(&mut s, json!({"type": "quota"})),
        json!({"type": "ok", "used": 1000, "limit": 1024})
    );
    // `user list` agrees.
    let out = user_cmd(&d.data_dir(), &["list"], "");
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.lines().any(|l| l == "q 1024 1000"), "{list}");
    assert_eq!(
        ask(&mut s, json!({"type": "rm", "path": "a"}))["type"],
        "ok"
    );
    assert_eq!(ask(&mut s, json!({"type": "quota"}))["used"], 0);
}

#[test]
fn two_connections_of_one_user_cannot_overcommit() {
    let d = Daemon::start(&[]);
    add_user(&d, "q", "pw", Some("1000"));
    let mut a = login(&d, "q", "pw");
    let mut b = login(&d, "q", "pw");
    let one = payload(600, 5);
    let two = payload(600, 6);
    for (s, data, path) in [(&mut a, &one, "one"), (&mut b, &two, "two")] {
        send(
            s,
            &json!({"type": "put", "path": path, "size": data.len(), "sha256": sha_hex(data)}),
        );
    }
    let answers = [recv(&mut a), recv(&mut b)];
    let ready = answers.iter().filter(|x| x["type"] == "ready").count();
    assert_eq!(ready, 1, "{answers:?}");
    let refused = answers.iter().find(|x| x["type"] == "error").unwrap();
    assert_eq!(refused["code"], "quota");
    assert_eq!(refused["free"], 400);
}

// ---- Many at once, and slow readers ----

#[test]
fn twenty_users_upload_and_download_at_once() {
    let d = Daemon::start(&[]);
    for i in 0..20 {
        add_user(&d, &format!("u{i}"), "pw", None);
    }
    std::thread::scope(|scope| {
        for i in 0..20u8 {
            let d = &d;
            scope.spawn(move || {
                let user = format!("u{i}");
                let mut s = login(d, &user, "pw");
                let data = payload(300_000 + usize::from(i) * 1000, i);
                assert_eq!(put(&mut s, "mine", &data)["type"], "ok");
                assert_eq!(get(&mut s, "mine", 0).1, data);
            });
        }
    });
}

#[test]
fn a_client_that_stops_reading_a_download_does_not_hold_up_others() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", None);
    let data = payload(32 * 1024 * 1024, 7);
    let mut s = login(&d, "alice", "pw");
    assert_eq!(put(&mut s, "big", &data)["type"], "ok");
    let before = d.rss();

    let mut stalled = login(&d, "alice", "pw");
    send(&mut stalled, &json!({"type": "get", "path": "big"}));
    // The stalled reader never reads; another client is served in full.
    let started = Instant::now();
    let (_, got) = get(&mut s, "big", 0);
    assert_eq!(got.len(), data.len());
    assert!(started.elapsed() < common::PATIENCE);
    // The daemon did not buffer the stalled download.
    let grown = d.rss().saturating_sub(before);
    assert!(grown < 8 * 1024 * 1024, "rss grew by {grown} bytes");
}

// ---- Attacks and failures mid-transfer ----

#[test]
fn a_symlink_swapped_in_during_an_upload_is_refused_at_the_end() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", None);
    let outside = d.data_dir().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut s = login(&d, "alice", "pw");
    assert_eq!(
        ask(&mut s, json!({"type": "mkdir", "path": "d"}))["type"],
        "ok"
    );
    let data = payload(200_000, 8);
    assert_eq!(begin_put(&mut s, "d/f", &data), 0);
    s.write_all(&data[..100_000]).unwrap();
    assert!(wait_until(|| part_len(&d, "alice") == Some(100_000)));
    let home = home(&d, "alice");
    std::fs::rename(home.join("d"), home.join("d.real")).unwrap();
    std::os::unix::fs::symlink(&outside, home.join("d")).unwrap();
    s.write_all(&data[100_000..]).unwrap();
    let answer = recv(&mut s);
    assert_eq!(answer["type"], "error", "{answer}");
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing outside"
    );
    assert!(!home.join("d.real/f").exists());
    assert!(staged(&d, "alice").is_empty());
}

#[test]
fn a_full_disk_gives_a_clear_error_and_leaves_nothing_visible() {
    // The daemon may write files of at most 1 MiB (RLIMIT_FSIZE), and a
    // write past that fails with EFBIG instead of killing it with SIGXFSZ.
    let d = Daemon::start_with(&[], |cmd| unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1024 * 1024,
                rlim_max: 1024 * 1024,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    });
    add_user(&d, "alice", "pw", None);
    let mut s = login(&d, "alice", "pw");
    let data = payload(3 * 1024 * 1024, 9);
    assert_eq!(begin_put(&mut s, "huge", &data), 0);
    // The daemon may answer before all is sent; what it reads past is
    // discarded, so the connection stays in step.
    let _ = s.write_all(&data);
    assert_eq!(
        recv(&mut s),
        json!({"type": "error", "error": "no space left to store the file"})
    );
    assert_eq!(ask(&mut s, json!({"type": "pwd"}))["cwd"], "/");
    assert!(!home(&d, "alice").join("huge").exists());
    assert!(staged(&d, "alice").is_empty());
    assert_eq!(ask(&mut s, json!({"type": "quota"}))["used"], 0);
}
