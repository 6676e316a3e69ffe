//! `socketlab bench mixed` against a real daemon: a short soak passes and
//! reports its series; a missing `--pid` is a usage error.
//!
//! Run with `cargo test --test bench_mixed`. The long soak is `.ci/soak`.

mod common;

use std::process::Command;

use common::Daemon;

#[test]
fn a_short_soak_of_a_healthy_daemon_passes_with_its_series() {
    let d = Daemon::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args([
            "bench",
            "mixed",
            "--duration",
            "3s",
            "--json",
            "--ready-file",
        ])
        .arg(d.path("ready.json"))
        .arg("--data-dir")
        .arg(d.data_dir())
        .args(["--pid", &d.pid().to_string()])
        .output()
        .expect("run bench mixed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}); stderr:\n{stderr}"));

    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );
    assert_eq!(report["clean"], true, "{report}");
    let series = report["series"].as_array().expect("series");
    assert!(series.len() >= 2, "{} samples", series.len());
    assert!(series.iter().all(|s| s["fds"].as_u64() > Some(0)));
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "settled",
            "descriptors",
            "memory",
            "no growth",
            "loop turns"
        ]
    );
    assert!(checks.iter().all(|c| c["pass"] == true), "{checks:?}");
    let activity = &report["activity"];
    for counter in [
        "echoed",
        "slow_reads",
        "chat_lines",
        "exec_runs",
        "logins_refused",
        "udp_replies",
        "classic",
    ] {
        assert!(
            activity[counter].as_u64() > Some(0),
            "no {counter}: {activity}"
        );
    }
    assert!(stderr.contains("baseline:"), "no baseline line:\n{stderr}");
}

#[test]
fn a_soak_without_the_daemons_pid_is_a_usage_error() {
    let d = Daemon::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(["bench", "mixed", "--duration", "1s", "--ready-file"])
        .arg(d.path("ready.json"))
        .arg("--data-dir")
        .arg(d.data_dir())
        .output()
        .expect("run bench mixed");

    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --pid"));
}

#[test]
fn an_unknown_activity_is_a_usage_error_naming_the_known_ones() {
    let d = Daemon::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(["bench", "mixed", "--only", "echo,gopher", "--ready-file"])
        .arg(d.path("ready.json"))
        .args(["--pid", &d.pid().to_string()])
        .output()
        .expect("run bench mixed");
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("gopher"), "{stderr}");
    assert!(stderr.contains("slow-reader"), "{stderr}");
}
