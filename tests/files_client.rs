//! `socketlab files`, the real binary, against a fake files service (see
//! files_client_support): transfers and their verification, resuming both
//! ways, the login's signature check, the shell, and the JSON output.

mod client_support;
mod files_client_support;

use files_client_support::{FakeFiles, Faults, PASSWORD, USER, content, run_in};
use serde_json::Value;

/// `files --addr <fake> --user ada --password-stdin` and then `rest`.
fn files_args<'a>(fake_addr: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "files",
        "--addr",
        fake_addr,
        "--user",
        USER,
        "--password-stdin",
    ];
    args.extend_from_slice(rest);
    args
}

fn password_line() -> Vec<u8> {
    format!("{PASSWORD}\n").into_bytes()
}

// Tests for transfers

#[test]
fn put_then_get_round_trips_every_byte() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let data = content(300_000);
    std::fs::write(local.path().join("src.bin"), &data).unwrap();

    let put = run_in(
        local.path(),
        &files_args(&addr, &["put", "src.bin"]),
        &password_line(),
        &[],
    );
    assert_eq!(put.code(), Some(0), "{put:?}");
    assert_eq!(
        put.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
    assert_eq!(std::fs::read(fake.path("src.bin")).unwrap(), data);
    assert!(
        put.stdout.starts_with("put src.bin -> src.bin: "),
        "{put:?}"
    );

    let get = run_in(
        local.path(),
        &files_args(&addr, &["get", "/src.bin", "back.bin"]),
        &password_line(),
        &[],
    );
    assert_eq!(get.code(), Some(0), "{get:?}");
    assert_eq!(std::fs::read(local.path().join("back.bin")).unwrap(), data);
    assert!(!local.path().join("back.bin.part").exists());
}

#[test]
fn get_resumes_from_the_part_file_length() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let data = content(200_000);
    std::fs::write(fake.path("big.bin"), &data).unwrap();
    std::fs::write(local.path().join("big.bin.part"), &data[..70_000]).unwrap();

    let get = run_in(
        local.path(),
        &files_args(&addr, &["get", "big.bin"]),
        &password_line(),
        &[],
    );
    assert_eq!(get.code(), Some(0), "{get:?}");
    assert_eq!(fake.log().requests[0]["offset"], 70_000);
    assert_eq!(std::fs::read(local.path().join("big.bin")).unwrap(), data);
    assert!(!local.path().join("big.bin.part").exists());
    assert!(get.stdout.contains("(resumed at "), "{get:?}");
}

#[test]
fn put_resumes_from_the_daemon_offset_and_sends_only_the_rest() {
    let fake = FakeFiles::start(Faults {
        cut_first_put_after: Some(100_000),
        ..Faults::default()
    });
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let data = content(250_000);
    std::fs::write(local.path().join("up.bin"), &data).unwrap();

    let cut = run_in(
        local.path(),
        &files_args(&addr, &["put", "up.bin"]),
        &password_line(),
        &[],
    );
    assert_eq!(cut.code(), Some(255), "{cut:?}");
    assert!(!fake.path("up.bin").exists());

    let resumed = run_in(
        local.path(),
        &files_args(&addr, &["put", "up.bin"]),
        &password_line(),
        &[],
    );
    assert_eq!(resumed.code(), Some(0), "{resumed:?}");
    assert_eq!(fake.log().put_bytes, [100_000, 150_000]);
    assert_eq!(std::fs::read(fake.path("up.bin")).unwrap(), data);
}

#[test]
fn a_corrupted_download_fails_its_checksum_and_leaves_no_file() {
    let fake = FakeFiles::start(Faults {
        corrupt_get: true,
        ..Faults::default()
    });
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    std::fs::write(fake.path("f.bin"), content(50_000)).unwrap();

    let get = run_in(
        local.path(),
        &files_args(&addr, &["get", "f.bin"]),
        &password_line(),
        &[],
    );
    assert_eq!(get.code(), Some(1), "{get:?}");
    assert!(get.stderr.contains("checksum mismatch"), "{get:?}");
    assert!(!local.path().join("f.bin").exists());
    assert!(!local.path().join("f.bin.part").exists());
}

#[test]
fn a_refused_get_exits_1_and_leaves_no_part_file() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let get = run_in(
        local.path(),
        &files_args(&addr, &["get", "missing"]),
        &password_line(),
        &[],
    );
    assert_eq!(get.code(), Some(1), "{get:?}");
    assert!(get.stderr.contains("refused: no such file"), "{get:?}");
    assert!(!local.path().join("missing.part").exists());
}

#[test]
fn a_part_file_longer_than_the_remote_file_is_kept_and_named_in_the_error() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    std::fs::write(fake.path("small.bin"), content(1_000)).unwrap();
    std::fs::write(local.path().join("small.bin.part"), content(5_000)).unwrap();
    let get = run_in(
        local.path(),
        &files_args(&addr, &["get", "small.bin"]),
        &password_line(),
        &[],
    );
    assert_eq!(get.code(), Some(1), "{get:?}");
    assert!(
        get.stderr
            .contains("(resuming from small.bin.part at 5000; remove it to start over)"),
        "{get:?}"
    );
    assert_eq!(
        std::fs::read(local.path().join("small.bin.part"))
            .unwrap()
            .len(),
        5_000
    );
    assert!(!local.path().join("small.bin").exists());
}

#[test]
fn a_request_over_the_frame_limit_is_refused_locally_and_the_shell_goes_on() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let script = format!("{PASSWORD}\n-mkdir {}\npwd\n", "a".repeat(70_000));
    let shell = run_in(
        local.path(),
        &files_args(&addr, &["shell"]),
        script.as_bytes(),
        &[],
    );
    assert_eq!(shell.code(), Some(0), "{}", shell.stderr);
    assert!(
        shell.stderr.contains("over the 65536-byte limit"),
        "{}",
        shell.stderr
    );
    assert_eq!(shell.stdout, "/\n");
    let log = fake.log();
    let types: Vec<&str> = log
        .requests
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["pwd", "bye"]);
}

// Tests for the login

#[test]
fn a_wrong_server_signature_is_refused_before_any_request() {
    let fake = FakeFiles::start(Faults {
        wrong_signature: true,
        ..Faults::default()
    });
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let ls = run_in(
        local.path(),
        &files_args(&addr, &["ls"]),
        &password_line(),
        &[],
    );
    assert_eq!(ls.code(), Some(255), "{ls:?}");
    assert!(ls.stderr.contains("signature is wrong"), "{ls:?}");
    fake.wait_closed(1);
    assert!(fake.log().requests.is_empty(), "{:?}", fake.log());
}

#[test]
fn a_wrong_password_exits_255() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let ls = run_in(local.path(), &files_args(&addr, &["ls"]), b"wrong\n", &[]);
    assert_eq!(ls.code(), Some(255), "{ls:?}");
    assert!(
        ls.stderr.contains("login refused: authentication failed"),
        "{ls:?}"
    );
}

#[test]
fn the_password_may_come_from_the_environment_or_the_demo_file() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let args = ["files", "--addr", &addr, "--user", USER, "pwd"];
    let pwd = run_in(
        local.path(),
        &args,
        b"",
        &[("SOCKETLAB_PASSWORD", PASSWORD)],
    );
    assert_eq!(
        (pwd.code(), pwd.stdout.as_str()),
        (Some(0), "/\n"),
        "{pwd:?}"
    );

    // The demo file is read for the user demo only; the fake knows only
    // ada, so the login fails, but after the password was found.
    std::fs::create_dir(local.path().join("data")).unwrap();
    std::fs::write(local.path().join("data/demo.password"), "pw\n").unwrap();
    let args = ["files", "--addr", &addr, "--data-dir", "data", "pwd"];
    let demo = run_in(local.path(), &args, b"", &[]);
    assert_eq!(demo.code(), Some(255), "{demo:?}");
    assert!(demo.stderr.contains("authentication failed"), "{demo:?}");
}

#[test]
fn no_daemon_listening_exits_255_with_a_hint() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let local = tempfile::tempdir().unwrap();
    let ls = run_in(
        local.path(),
        &files_args(&addr, &["ls"]),
        &password_line(),
        &[],
    );
    assert_eq!(ls.code(), Some(255), "{ls:?}");
    assert!(
        ls.stderr.contains("is `socketlab serve` running there?"),
        "{ls:?}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    let local = tempfile::tempdir().unwrap();
    let missing = run_in(local.path(), &["files", "put"], b"", &[]);
    assert_eq!(missing.code(), Some(2), "{missing:?}");
    let bad_addr = run_in(
        local.path(),
        &["files", "--addr", "nowhere", "ls"],
        b"",
        &[],
    );
    assert_eq!(bad_addr.code(), Some(2), "{bad_addr:?}");
}

// Tests for the shell

#[test]
fn the_shell_runs_a_script_from_stdin() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let data = content(90_000);
    std::fs::write(local.path().join("s.bin"), &data).unwrap();
    let script = format!(
        "{PASSWORD}\nmkdir d\ncd d\nput s.bin\nls\n# a comment\npwd\nget s.bin back.bin\nlpwd\nbye\npwd\n"
    );
    let shell = run_in(
        local.path(),
        &files_args(&addr, &["shell"]),
        script.as_bytes(),
        &[],
    );
    assert_eq!(shell.code(), Some(0), "{shell:?}");
    assert_eq!(std::fs::read(fake.path("d/s.bin")).unwrap(), data);
    assert_eq!(std::fs::read(local.path().join("back.bin")).unwrap(), data);
    let lines: Vec<&str> = shell.stdout.lines().collect();
    assert_eq!(lines[0], "/d", "{shell:?}");
    assert!(lines[1].starts_with("put s.bin -> s.bin: "), "{shell:?}");
    assert!(
        lines[2].starts_with("- 90000 ") && lines[2].ends_with(" s.bin"),
        "{shell:?}"
    );
    assert_eq!(lines[3], "/d", "{shell:?}");
    assert!(lines[4].starts_with("get s.bin -> back.bin: "), "{shell:?}");
    // After bye, the last pwd is not run.
    assert_eq!(lines.len(), 6, "{shell:?}");
    let log = fake.log();
    let types: Vec<&str> = log
        .requests
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["mkdir", "cd", "put", "ls", "pwd", "get", "bye"]);
}

#[test]
fn a_script_stops_at_the_first_failure_unless_it_is_marked() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let script = format!("{PASSWORD}\nrm missing\npwd\n");
    let stops = run_in(
        local.path(),
        &files_args(&addr, &["shell"]),
        script.as_bytes(),
        &[],
    );
    assert_eq!(stops.code(), Some(1), "{stops:?}");
    assert_eq!(stops.stdout, "", "{stops:?}");

    let script = format!("{PASSWORD}\n-rm missing\npwd\n");
    let goes_on = run_in(
        local.path(),
        &files_args(&addr, &["shell"]),
        script.as_bytes(),
        &[],
    );
    assert_eq!(goes_on.code(), Some(0), "{goes_on:?}");
    assert_eq!(goes_on.stdout, "/\n", "{goes_on:?}");
}

// Tests for --json

#[test]
fn json_prints_one_object_per_result() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir(fake.path("sub")).unwrap();
    std::fs::write(fake.path("a.txt"), b"hello").unwrap();

    let ls = run_in(
        local.path(),
        &files_args(&addr, &["--json", "ls"]),
        &password_line(),
        &[],
    );
    assert_eq!(ls.code(), Some(0), "{ls:?}");
    let result: Value = serde_json::from_str(ls.stdout.trim()).unwrap();
    assert_eq!(result["command"], "ls");
    assert_eq!(result["ok"], true);
    let names: Vec<&str> = result["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "sub"]);
    assert_eq!(result["entries"][0]["size"], 5);

    let script = format!("{PASSWORD}\nget a.txt\n-rm nothing\nquota\n");
    let shell = run_in(
        local.path(),
        &files_args(&addr, &["--json", "shell"]),
        script.as_bytes(),
        &[],
    );
    assert_eq!(shell.code(), Some(0), "{shell:?}");
    let results: Vec<Value> = shell
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 3, "{shell:?}");
    assert_eq!(results[0]["command"], "get");
    assert_eq!(results[0]["size"], 5);
    assert_eq!(results[0]["offset"], 0);
    assert_eq!(
        results[0]["sha256"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(
        (results[1]["ok"].clone(), results[1]["kind"].clone()),
        (false.into(), "refused".into())
    );
    assert_eq!(results[2]["used"], 5);
    assert_eq!(results[2]["limit"], 10 << 20);
}

// Tests for `bench files`

#[test]
fn bench_files_verifies_every_round_and_cleans_up() {
    let fake = FakeFiles::start(Faults::default());
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "files",
        "--addr",
        &addr,
        "--user",
        USER,
        "--password-stdin",
        "--clients",
        "2",
        "--size",
        "64K",
        "--count",
        "5",
        "--json",
    ];
    let bench = run_in(local.path(), &args, &password_line(), &[]);
    assert_eq!(bench.code(), Some(0), "{bench:?}");
    let report: Value = serde_json::from_str(&bench.stdout).unwrap();
    assert_eq!(report["workload"], "files");
    assert_eq!(report["clean"], true);
    assert_eq!(report["logged_in"], 2);
    assert_eq!(
        (
            report["rounds"].clone(),
            report["puts"].clone(),
            report["gets"].clone()
        ),
        (5.into(), 5.into(), 5.into())
    );
    assert_eq!(report["bytes_up"], 5 * 65_536);
    assert_eq!(report["bytes_down"], 5 * 65_536);
    assert_eq!(report["put_latency"]["samples"], 5);
    let log = fake.log();
    assert_eq!(log.requests.iter().filter(|r| r["type"] == "rm").count(), 2);
    assert_eq!(std::fs::read_dir(fake.home.path()).unwrap().count(), 0);
}

#[test]
fn bench_files_fails_when_a_download_is_corrupted() {
    let fake = FakeFiles::start(Faults {
        corrupt_get: true,
        ..Faults::default()
    });
    let addr = fake.addr.to_string();
    let local = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "files",
        "--addr",
        &addr,
        "--user",
        USER,
        "--password-stdin",
        "--clients",
        "1",
        "--size",
        "10K",
        "--count",
        "3",
        "--json",
    ];
    let bench = run_in(local.path(), &args, &password_line(), &[]);
    assert_eq!(bench.code(), Some(1), "{bench:?}");
    let report: Value = serde_json::from_str(&bench.stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["rounds"], 0);
    let error = report["failures"][0]["error"].as_str().unwrap();
    assert!(error.contains("checksum mismatch"), "{error}");
}

// Tests on a terminal (tmux)

/// A tmux server of this test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "files"])
    }

    /// Waits until the screen contains `text`, at most `STEP`.
    fn wait_for(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + files_client_support::STEP;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {text:?} on:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn a_terminal_shows_a_progress_bar_that_starts_at_the_resume_offset() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let gate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fake = FakeFiles::start(Faults {
        hold_get_halfway: Some(gate.clone()),
        ..Faults::default()
    });
    let local = tempfile::tempdir().unwrap();
    let data = content(1 << 20);
    std::fs::write(fake.path("big.bin"), &data).unwrap();
    std::fs::write(local.path().join("big.bin.part"), &data[..256 << 10]).unwrap();
    let command = format!(
        "cd '{}' && SOCKETLAB_PASSWORD='{PASSWORD}' '{}' files --addr {} --user {USER} get big.bin; \
         echo EXIT=$?; sleep 60",
        local.path().display(),
        env!("CARGO_BIN_EXE_socketlab"),
        fake.addr
    );
    let tmux = Tmux {
        socket: format!("socketlab-files-test-{}", std::process::id()),
    };
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "files",
        "-x",
        "150",
        "-y",
        "10",
        &command,
    ]);

    // Half of the 768 KiB after the offset has come: the bar stands at
    // 256 + 384 KiB, with a rate and a time left.
    let screen = tmux.wait_for("640.0 KiB / 1.0 MiB");
    assert!(screen.contains("get big.bin ["), "{screen}");
    assert!(screen.contains(" MiB/s  ETA "), "{screen}");

    gate.store(true, std::sync::atomic::Ordering::SeqCst);
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("(resumed at 256.0 KiB)"), "{screen}");
    assert_eq!(std::fs::read(local.path().join("big.bin")).unwrap(), data);
}
