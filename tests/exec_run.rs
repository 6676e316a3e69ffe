//! exec: running programs (PROTOCOL.md §5.3), refusals and bad frames.
//! Run: `cargo test --test exec_run`.

mod common;
mod exec_support;

use std::time::Duration;

use serde_json::{Value, json};

use common::Daemon;
use exec_support::*;

// ---- Running ----

#[test]
fn output_is_streamed_and_the_exit_reported() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let pid = start(&mut s, argv(&["echo", "hello", "world"]));
    assert!(pid > 1);
    let out = collect(&mut s);
    assert_eq!(out.stdout, b"hello world\n");
    assert!(out.stderr.is_empty());
    assert_eq!(
        exit_summary(&out.exit),
        (json!(0), Value::Null, json!(false))
    );
    // Exactly the protocol's fields, in its order.
    let keys: Vec<&String> = out.exit.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{}", out.exit);
}

#[test]
fn exit_codes_and_stderr_are_reported_apart() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let out = run_to_end(
        &mut s,
        argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
    );
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(
        exit_summary(&out.exit),
        (json!(3), Value::Null, json!(false))
    );
}

#[test]
fn output_keeps_the_order_it_was_read_in() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    // Each line is written separately, with a pause the program measures
    // itself, so the daemon reads them one at a time.
    let script = "for i in 1 2 3; do echo o$i; sleep 0.05; echo e$i >&2; sleep 0.05; done";
    let out = run_to_end(&mut s, argv(&["sh", "-c", script]));
    assert_eq!(out.stdout, b"o1\no2\no3\n");
    assert_eq!(out.stderr, b"e1\ne2\ne3\n");
    assert_eq!(
        out.frames,
        ["stdout", "stderr", "stdout", "stderr", "stdout", "stderr"]
    );
}

#[test]
fn programs_get_exactly_three_variables_and_the_workdir() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let workdir = d.data_dir().join("exec").canonicalize().unwrap();
    let out = run_to_end(&mut s, argv(&["env"]));
    let mut vars: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        [
            format!("HOME={}", workdir.display()),
            "LANG=C.UTF-8".to_string(),
            "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        ]
    );
    let out = run_to_end(&mut s, argv(&["pwd"]));
    assert_eq!(out.stdout, format!("{}\n", workdir.display()).as_bytes());
}

#[test]
fn programs_inherit_no_descriptor_of_the_daemon() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    // `ls` opens the directory itself, as descriptor 3.
    let out = run_to_end(&mut s, argv(&["ls", "/proc/self/fd"]));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "0\n1\n2\n3\n");
}

#[test]
fn programs_start_with_default_signal_handling() {
    // A daemon started like `nohup socketlab serve` ignores HUP and QUIT;
    // its programs must not inherit that (an ignored INT would make a
    // client's Ctrl-C useless).
    let d = Daemon::start_with(&[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: plain signal(2) calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                libc::signal(libc::SIGQUIT, libc::SIG_IGN);
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
                Ok(())
            });
        }
    });
    let mut s = login(&d);
    let out = run_to_end(
        &mut s,
        argv(&["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mask = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split('\t').nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{text}");
    // Signals 1 to 31 (bits 0 to 30) are at their defaults.
    assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "{text}");
}

#[test]
fn argv_reaches_the_program_unchanged() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let tricky = "$(touch pwned); `id` 'quoted' \"double\" * ; | &";
    let out = run_to_end(&mut s, argv(&["printf", "%s|", tricky, "", "é"]));
    assert_eq!(out.stdout, format!("{tricky}||é|").as_bytes());
    assert!(!d.data_dir().join("exec/pwned").exists());
}

#[test]
fn one_program_at_a_time_then_another() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    start(&mut s, argv(&["sleep", "0.3"]));
    send(&mut s, &argv(&["echo", "too soon"]));
    let e = expect_error(&mut s);
    assert_eq!(e["code"], "running", "{e}");
    let out = collect(&mut s);
    assert!(out.stdout.is_empty(), "the refused program did not run");
    assert_eq!(exit_summary(&out.exit).0, json!(0));
    let out = run_to_end(&mut s, argv(&["echo", "next"]));
    assert_eq!(out.stdout, b"next\n");
}

#[test]
fn elapsed_ms_measures_the_run() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let out = run_to_end(&mut s, argv(&["sleep", "0.3"]));
    let ms = out.exit["elapsed_ms"].as_u64().unwrap();
    assert!((250..10_000).contains(&ms), "{ms}");
}

// ---- Refusals: the connection stays usable ----

#[test]
fn program_not_found_then_the_connection_still_works() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    for name in ["no-such-program-xyz", "/no/such/path", "./nothing-here"] {
        send(&mut s, &argv(&[name]));
        let e = expect_error(&mut s);
        assert_eq!(e["code"], "not_found", "{name}: {e}");
        assert!(e["error"].as_str().unwrap().contains("not found"), "{e}");
    }
    let out = run_to_end(&mut s, argv(&["echo", "ok"]));
    assert_eq!(out.stdout, b"ok\n");
}

#[test]
fn the_allowlist_matches_argv0_exactly() {
    let d = Daemon::start(&["--set", r#"exec.allow=["echo","cat"]"#]);
    let mut s = login(&d);
    for name in ["sh", "/bin/echo", "ECHO", "true"] {
        send(&mut s, &argv(&[name, "x"]));
        let e = expect_error(&mut s);
        assert_eq!(e["code"], "not_allowed", "{name}: {e}");
    }
    let out = run_to_end(&mut s, argv(&["echo", "allowed"]));
    assert_eq!(out.stdout, b"allowed\n");
}

#[test]
fn shell_runs_are_off_by_default() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    send(&mut s, &json!({"type": "run", "shell": "echo hi"}));
    assert_eq!(expect_error(&mut s)["code"], "shell_disabled");
    run_to_end(&mut s, argv(&["true"]));
}

#[test]
fn shell_runs_when_allowed_ignore_the_allowlist() {
    let d = Daemon::start(&[
        "--set",
        "exec.allow_shell=true",
        "--set",
        r#"exec.allow=["echo"]"#,
    ]);
    let mut s = login(&d);
    let out = run_to_end(
        &mut s,
        json!({"type": "run", "shell": "echo abc | tr a-c x-z; exit 4"}),
    );
    assert_eq!(out.stdout, b"xyz\n");
    assert_eq!(exit_summary(&out.exit).0, json!(4));
}

#[test]
fn unknown_types_and_bad_fields_get_errors_and_the_connection_stays() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let cases = [
        (json!({"type": "launch"}), "unknown_type"),
        (json!({"type": "run"}), "bad_request"),
        (json!({"type": "run", "argv": "echo hi"}), "bad_request"),
        (json!({"type": "run", "argv": []}), "bad_request"),
        (
            json!({"type": "run", "argv": ["echo"], "timeout_ms": "soon"}),
            "bad_request",
        ),
        (
            json!({"type": "run", "argv": ["echo"], "stdin": 1}),
            "bad_request",
        ),
        (json!({"type": "signal", "signal": "HUP"}), "bad_request"),
        (json!({"type": "signal"}), "bad_request"),
        (json!({"type": "signal", "signal": "INT"}), "not_running"),
        (json!({"type": "stdin_eof"}), "not_running"),
        (json!({"type": "auth", "mac": "00"}), "bad_request"),
    ];
    for (request, code) in cases {
        send(&mut s, &request);
        let e = expect_error(&mut s);
        assert_eq!(e["code"], code, "{request}: {e}");
    }
    let out = run_to_end(&mut s, argv(&["echo", "fine"]));
    assert_eq!(out.stdout, b"fine\n");
}

#[test]
fn stdin_without_a_program_is_refused_and_its_bytes_skipped() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    // The payload looks like a frame; it must be skipped, not decoded.
    let fake = {
        let json = br#"{"type":"run","argv":["touch","pwned"]}"#;
        let mut b = (json.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(json);
        b
    };
    send_stdin(&mut s, &fake).unwrap();
    assert_eq!(expect_error(&mut s)["code"], "not_running");
    // A program started without stdin refuses stdin frames too.
    start(&mut s, argv(&["sleep", "0.2"]));
    send_stdin(&mut s, &fake).unwrap();
    assert_eq!(expect_error(&mut s)["code"], "no_stdin");
    let out = collect(&mut s);
    assert_eq!(exit_summary(&out.exit).0, json!(0));
    assert!(!d.data_dir().join("exec/pwned").exists());
    let out = run_to_end(&mut s, argv(&["ls"]));
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn stdin_frames_feed_the_program() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    start(
        &mut s,
        json!({"type": "run", "argv": ["sort", "-r"], "stdin": true}),
    );
    send_stdin(&mut s, b"b\na\n").unwrap();
    send_stdin(&mut s, b"").unwrap();
    send_stdin(&mut s, b"c\n").unwrap();
    send(&mut s, &json!({"type": "stdin_eof"}));
    let out = collect(&mut s);
    assert_eq!(out.stdout, b"c\nb\na\n");
    assert_eq!(exit_summary(&out.exit).0, json!(0));
}

#[test]
fn late_stdin_and_signals_after_an_exit_are_dropped_quietly() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let run = json!({"type": "run", "argv": ["head", "-c", "2"], "stdin": true});
    start(&mut s, run);
    send_stdin(&mut s, b"ab").unwrap();
    let out = collect(&mut s);
    assert_eq!(out.stdout, b"ab");
    // Sent before the client saw the exit frame: no errors come back.
    send_stdin(&mut s, b"more").unwrap();
    send(&mut s, &json!({"type": "stdin_eof"}));
    send(&mut s, &json!({"type": "signal", "signal": "INT"}));
    send(&mut s, &argv(&["echo", "next"]));
    let started = recv(&mut s);
    assert_eq!(started["type"], "started", "{started}");
    assert_eq!(collect(&mut s).stdout, b"next\n");
    // Once a new run was asked for (even a refused one), stray frames are
    // errors again.
    send(&mut s, &argv(&["no-such-program-xyz"]));
    assert_eq!(expect_error(&mut s)["code"], "not_found");
    send(&mut s, &json!({"type": "stdin_eof"}));
    assert_eq!(expect_error(&mut s)["code"], "not_running");
}

#[test]
fn without_stdin_the_program_reads_nothing() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let out = run_to_end(&mut s, argv(&["wc", "-c"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

// ---- Timeouts and signals ----

#[test]
fn a_timeout_terminates_the_program() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let run = json!({"type": "run", "argv": ["sleep", "30"], "timeout_ms": 300});
    let pid = start(&mut s, run);
    let out = collect(&mut s);
    assert_eq!(
        exit_summary(&out.exit),
        (Value::Null, json!("TERM"), json!(true))
    );
    let ms = out.exit["elapsed_ms"].as_u64().unwrap();
    assert!((250..10_000).contains(&ms), "{ms}");
    assert!(is_gone(pid));
}

#[test]
fn a_program_ignoring_term_is_killed_after_the_grace() {
    let d = Daemon::start(&["--set", "exec.kill_grace_ms=300"]);
    let mut s = login(&d);
    let run = json!({
        "type": "run",
        "argv": ["sh", "-c", "trap '' TERM; echo trapped; sleep 30; echo never"],
        "timeout_ms": 200,
    });
    let pid = start(&mut s, run);
    let out = collect(&mut s);
    assert_eq!(out.stdout, b"trapped\n");
    assert_eq!(
        exit_summary(&out.exit),
        (Value::Null, json!("KILL"), json!(true))
    );
    let ms = out.exit["elapsed_ms"].as_u64().unwrap();
    assert!(ms >= 450, "TERM at 200 ms, KILL 300 ms later: {ms}");
    assert!(is_gone(pid));
}

#[test]
fn the_default_timeout_comes_from_the_configuration() {
    let d = Daemon::start(&["--set", "exec.default_timeout_ms=200"]);
    let mut s = login(&d);
    let out = run_to_end(&mut s, argv(&["sleep", "30"]));
    assert_eq!(out.exit["timed_out"], true);
}

#[test]
fn signals_reach_the_program() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    for name in ["INT", "TERM", "KILL"] {
        let pid = start(&mut s, argv(&["sleep", "30"]));
        send(&mut s, &json!({"type": "signal", "signal": name}));
        let out = collect(&mut s);
        assert_eq!(
            exit_summary(&out.exit),
            (Value::Null, json!(name), json!(false)),
            "{name}"
        );
        assert!(is_gone(pid));
    }
}

#[test]
fn signals_reach_the_whole_process_group() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    // The shell waits for a pipeline; TERM to the group ends all of it.
    start(
        &mut s,
        argv(&["sh", "-c", "sleep 30 | sleep 31; echo survived"]),
    );
    // Wait until both sleeps of the pipeline exist.
    assert!(common::wait_until(|| count_sleepers(&d) == 2));
    send(&mut s, &json!({"type": "signal", "signal": "TERM"}));
    let out = collect(&mut s);
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.exit["signal"], "TERM");
    assert!(common::wait_until(|| count_sleepers(&d) == 0));
}

/// Processes named `sleep` whose working directory is this daemon's workdir.
fn count_sleepers(d: &Daemon) -> usize {
    let workdir = d.data_dir().join("exec").canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "sleep")
                && std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == workdir)
        })
        .count()
}

// ---- Bad frames close the connection ----

#[test]
fn a_malformed_frame_after_authentication_closes() {
    let d = Daemon::start(&[]);
    for bad in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"type":7}"#,
        br#"{"kind":"run"}"#,
        b"\xff\xfe",
    ] {
        let mut s = login(&d);
        send_raw_frame(&mut s, bad);
        let e = expect_error(&mut s);
        assert_eq!(e["code"], "bad_frame", "{e}");
        expect_closed(&mut s);
    }
}

#[test]
fn an_oversized_header_closes() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    std::io::Write::write_all(&mut s, &65_537u32.to_be_bytes()).unwrap();
    let e = expect_error(&mut s);
    assert_eq!(e["code"], "frame_too_large", "{e}");
    expect_closed(&mut s);
    // Before authentication too.
    let (mut s, _) = hello(&d);
    std::io::Write::write_all(&mut s, &u32::MAX.to_be_bytes()).unwrap();
    expect_error(&mut s);
    expect_closed(&mut s);
}

#[test]
fn an_oversized_stdin_chunk_closes() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let pid = start(
        &mut s,
        json!({"type": "run", "argv": ["cat"], "stdin": true}),
    );
    send(&mut s, &json!({"type": "stdin", "size": 65_537}));
    let e = expect_error(&mut s);
    assert_eq!(e["code"], "frame_too_large", "{e}");
    expect_closed(&mut s);
    assert!(common::wait_until(|| is_gone(pid)));
}

#[test]
fn the_header_limit_is_configurable() {
    let d = Daemon::start(&["--set", "frames.max_header=100"]);
    let mut s = login(&d);
    let long = "x".repeat(100);
    send(&mut s, &argv(&["echo", &long]));
    assert_eq!(expect_error(&mut s)["code"], "frame_too_large");
    expect_closed(&mut s);
}

#[test]
fn a_partial_frame_split_byte_by_byte_still_works() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    s.set_nodelay(true).unwrap();
    let json = serde_json::to_vec(&argv(&["echo", "slowly"])).unwrap();
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&json);
    for b in bytes {
        std::io::Write::write_all(&mut s, &[b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(recv(&mut s)["type"], "started");
    assert_eq!(collect(&mut s).stdout, b"slowly\n");
}
