//! Starting and stopping the daemon as a whole: nothing half-started when a
//! port is taken, and the pid file's life.
//! Run: `cargo test --test daemon_start`.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Daemon, wait_until};

/// Starts `socketlab serve` with `exec` on an address already taken, so
/// binding fails at the last service, after every other one was bound.
/// Returns the exit code, stderr and the scratch directory.
/// The data dir is `data` if given, else `data` in the scratch directory.
fn start_with_exec_port_taken(data: Option<&Path>) -> (Option<i32>, String, tempfile::TempDir) {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
    let out = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .arg("serve")
        .args(["--port-base", "0", "--data-dir"])
        .arg(data)
        .arg("--listen")
        .arg(format!("exec={addr}"))
        .arg("--ready-file")
        .arg(dir.path().join("ready.json"))
        .arg("--pid-file")
        .arg(dir.path().join("socketlab.pid"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(&addr.to_string()), "{err}");
    (out.status.code(), err, dir)
}

#[test]
fn a_port_in_use_logs_no_listening_line_for_the_services_bound_before_it() {
    let (code, err, _dir) = start_with_exec_port_taken(None);
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains("listening"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("exec"), "{err}");
}

#[test]
fn a_port_in_use_leaves_no_data_dir_key_pid_or_ready_file_behind() {
    let (code, err, dir) = start_with_exec_port_taken(None);
    assert_eq!(code, Some(2), "{err}");
    assert!(!dir.path().join("data").exists(), "a data dir was created");
    assert!(!dir.path().join("socketlab.pid").exists(), "a pid file");
    assert!(!dir.path().join("ready.json").exists(), "a ready file");
}

#[test]
fn a_port_in_use_leaves_an_existing_data_dir_without_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("existing");
    std::fs::create_dir(&data).unwrap();
    let (code, err, _scratch) = start_with_exec_port_taken(Some(&data));
    assert_eq!(code, Some(2), "{err}");
    assert!(!data.join("secret.key").exists(), "a key was created");
}

#[test]
fn the_pid_file_holds_the_daemon_pid_and_is_removed_at_exit() {
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("socketlab.pid");
    let mut d = Daemon::start(&["--pid-file", pid_file.to_str().unwrap()]);
    // The ready file is written after the pid file, so it is there now.
    let text = std::fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(text, format!("{}\n", d.pid()));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait().code(), Some(0));
    assert!(wait_until(|| !pid_file.exists()), "pid file left behind");
}

#[test]
fn the_listening_lines_come_once_all_are_bound_and_name_every_listener() {
    let d = Daemon::start(&[]);
    let err = d.stderr();
    for (service, transport) in [("echo", "tcp"), ("echo", "udp"), ("exec", "tcp")] {
        let line = format!(
            "listening {service} {transport} {}",
            d.addr_str(service, transport)
        );
        assert!(err.contains(&line), "{line} missing from {err}");
    }
}
