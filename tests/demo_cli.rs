//! The `socketlab demo` command line, run as a real process: the listing,
//! `nonblocking --json` with every step, `--step`, `--list`, and
//! `blocking-vs-reactor --json`.
//!
//! Run with `cargo test --test demo_cli`. Every child process is killed if it
//! runs past its deadline.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `socketlab ARGS...`, returning its exit status and stdout; panics
/// (after killing it) if it has not finished within `limit`.
fn socketlab(args: &[&str], limit: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start socketlab");
    let mut stdout = child.stdout.take().expect("piped stdout");
    // Read on another thread so a full pipe can never stall the child.
    let reader = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for socketlab") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("socketlab {args:?} still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let text = reader
        .join()
        .expect("reader thread")
        .expect("stdout is UTF-8");
    (status, text)
}

#[test]
fn demo_nonblocking_json_exits_zero_with_every_step_present() {
    let (status, stdout) = socketlab(&["demo", "nonblocking", "--json"], Duration::from_secs(60));
    assert!(status.success(), "exit status {status}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(report["demo"], "nonblocking");
    assert_eq!(report["failures"].as_array().map(Vec::len), Some(0));
    let steps = report["steps"].as_array().expect("a steps array");
    let numbers: Vec<u64> = steps.iter().filter_map(|s| s["step"].as_u64()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7, 8]);
    for step in steps {
        assert!(step["title"].is_string());
        assert!(step["summary"].is_string());
        assert!(step["facts"]["experiment"].is_string());
        for observation in step["observations"].as_array().expect("observations") {
            for field in ["call", "mode", "outcome", "why"] {
                assert!(observation[field].is_string(), "{field} in {observation}");
            }
        }
    }
}

#[test]
fn the_json_facts_carry_the_errno_names_the_narration_shows() {
    let (status, stdout) = socketlab(
        &["demo", "nonblocking", "--step", "3", "--json"],
        Duration::from_secs(30),
    );
    assert!(status.success());
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "--step 3 runs only experiment 3");
    let facts = &steps[0]["facts"];
    assert_eq!(facts["experiment"], "recv");
    assert_eq!(facts["no_data_errno"], "EAGAIN");
    assert_eq!(facts["data"], "hello");
    assert_eq!(facts["eof_after_close"], true);
    assert_eq!(facts["reset_errno"], "ECONNRESET");
    let first = &steps[0]["observations"][0];
    assert_eq!(first["mode"], "non_blocking");
    assert_eq!(first["outcome"], "error");
    assert_eq!(first["errno"], "EAGAIN");
}

#[test]
fn demo_nonblocking_narrates_in_text_by_default() {
    let (status, stdout) = socketlab(
        &["demo", "nonblocking", "--step", "1"],
        Duration::from_secs(30),
    );
    assert!(status.success());
    assert!(stdout.contains("Experiment 1:"));
    assert!(stdout.contains("non-blocking"));
    assert!(stdout.contains("EAGAIN"));
    assert!(!stdout.contains("Experiment 2:"));
}

#[test]
fn demo_nonblocking_list_names_the_experiments_without_running_them() {
    let (status, stdout) = socketlab(&["demo", "nonblocking", "--list"], Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(stdout.lines().count(), 8);
    assert!(stdout.lines().next().unwrap().starts_with(" 1. accept()"));
}

#[test]
fn a_step_outside_one_to_eight_is_a_usage_error() {
    let (status, _) = socketlab(
        &["demo", "nonblocking", "--step", "9"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2));
}

#[test]
fn demo_without_a_name_lists_the_demos() {
    let (status, stdout) = socketlab(&["demo"], Duration::from_secs(30));
    assert!(status.success());
    assert!(stdout.contains("nonblocking"));
    assert!(stdout.contains("blocking-vs-reactor"));
}

#[test]
fn demo_blocking_vs_reactor_json_reports_every_server_serving_every_client() {
    let (status, stdout) = socketlab(
        &[
            "demo",
            "blocking-vs-reactor",
            "--clients",
            "8",
            "--delay-ms",
            "10",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert!(status.success());
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["workload"]["clients"], 8);
    let runs = report["runs"].as_array().unwrap();
    let servers: Vec<&str> = runs.iter().filter_map(|r| r["server"].as_str()).collect();
    assert_eq!(servers, ["blocking", "thread_per_client", "reactor"]);
    for run in runs {
        assert_eq!(run["clients_served"], 8, "{run}");
        assert!(run["elapsed_ms"].is_f64());
    }
}

#[test]
fn demo_blocking_vs_reactor_refuses_a_workload_that_would_run_for_minutes() {
    let (status, _) = socketlab(
        &[
            "demo",
            "blocking-vs-reactor",
            "--clients",
            "1000",
            "--delay-ms",
            "1000",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2));
}
