//! exec without cgroups (`exec.cgroups = false`): the daemon is the child
//! subreaper of its programs' descendants, kills what left a program's
//! process group once it adopts it, and never takes a running program's
//! exit status. Run: `cargo test --test exec_subreaper`.

mod common;
mod exec_support;

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use common::{Daemon, wait_until};
use exec_support::*;

/// A daemon whose programs get no cgroup, whatever the machine allows.
fn daemon_without_cgroups() -> Daemon {
    let d = Daemon::start(&["--set", "exec.cgroups=false"]);
    assert!(
        wait_until(|| d.stderr().contains("child subreaper")),
        "the start log does not say the subreaper is in use:\n{}",
        d.stderr()
    );
    d
}

/// A `sleep` argument no other process on the machine uses: the test
/// finds its processes by their command line.
fn unique_seconds() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("600.{}{n}{nanos}", std::process::id())
}

/// The pids of live processes (not zombies) running `sleep <seconds>`.
fn sleeping(seconds: &str) -> Vec<u32> {
    let wanted = format!("sleep\0{seconds}\0").into_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A zombie's command line is empty, so it never matches.
        if std::fs::read(entry.path().join("cmdline")).unwrap_or_default() == wanted {
            found.push(pid);
        }
    }
    found
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Waits for the `stdout` frame a program sends first and returns it as a
/// trimmed string.
fn first_line(s: &mut std::net::TcpStream) -> String {
    let (frame, payload) = recv_with_payload(s);
    assert_eq!(frame["type"], "stdout", "{frame}");
    String::from_utf8(payload).unwrap().trim().to_string()
}

/// Runs a program that starts `sleep <seconds>` in a session of its own
/// and exits; returns the sleep's pid.
fn leave_an_escaped_sleep(d: &Daemon, seconds: &str) -> u32 {
    let mut s = login(d);
    let out = run_to_end(
        &mut s,
        argv(&[
            "sh",
            "-c",
            &format!("setsid sleep {seconds} >/dev/null 2>&1 & echo $!"),
        ]),
    );
    assert_eq!(exit_summary(&out.exit).0, json!(0));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_process_that_left_its_group_dies_and_is_reaped_when_its_session_ends() {
    let d = daemon_without_cgroups();
    let (escaped, waiting) = (unique_seconds(), unique_seconds());
    let mut s = login(&d);
    start(
        &mut s,
        argv(&[
            "sh",
            "-c",
            &format!("setsid sleep {escaped} & echo started; sleep {waiting}"),
        ]),
    );
    assert_eq!(first_line(&mut s), "started");
    assert!(wait_until(
        || !sleeping(&escaped).is_empty() && !sleeping(&waiting).is_empty()
    ));
    let pids = [sleeping(&escaped), sleeping(&waiting)].concat();
    assert_eq!(pids.len(), 2, "{pids:?}");
    drop(s);
    assert!(
        wait_until(|| pids.iter().all(|&p| is_gone(p))),
        "still there (or unreaped): {:?}\n{}",
        pids.iter().filter(|&&p| !is_gone(p)).collect::<Vec<_>>(),
        d.stderr()
    );
    assert!(sleeping(&escaped).is_empty() && sleeping(&waiting).is_empty());
}

#[test]
fn at_sigterm_escaped_processes_die_and_the_daemon_exits_zero() {
    let mut d = daemon_without_cgroups();
    let (escaped, waiting) = (unique_seconds(), unique_seconds());
    let mut s = login(&d);
    start(
        &mut s,
        argv(&[
            "sh",
            "-c",
            &format!("setsid sleep {escaped} & echo started; sleep {waiting}"),
        ]),
    );
    assert_eq!(first_line(&mut s), "started");
    assert!(wait_until(
        || !sleeping(&escaped).is_empty() && !sleeping(&waiting).is_empty()
    ));
    d.signal(libc::SIGTERM);
    let status = d.wait();
    assert_eq!(status.code(), Some(0), "{}", d.stderr());
    // The daemon is gone, so what it did not kill would now be PID 1's.
    assert!(
        wait_until(|| sleeping(&escaped).is_empty() && sleeping(&waiting).is_empty()),
        "a program's process outlived the daemon:\n{}",
        d.stderr()
    );
    drop(s);
}

#[test]
fn a_double_forked_daemon_is_killed_once_adopted_while_its_program_runs() {
    let d = daemon_without_cgroups();
    let daemonized = unique_seconds();
    let mut s = login(&d);
    // The classic daemonizing dance: a child makes a session of its own,
    // forks the daemon, and exits, so the daemon is orphaned at once.
    let script =
        format!("setsid sh -c 'sleep {daemonized} >/dev/null 2>&1 & echo $!'; read line; exit 3");
    start(
        &mut s,
        json!({"type": "run", "argv": ["sh", "-c", script], "stdin": true}),
    );
    let pid: u32 = first_line(&mut s).parse().unwrap();
    assert!(
        wait_until(|| is_gone(pid)),
        "the daemonized sleep {pid} lives on:\n{}",
        d.stderr()
    );
    assert!(sleeping(&daemonized).is_empty());
    // Its program was not touched.
    send(&mut s, &json!({"type": "stdin_eof"}));
    let out = collect(&mut s);
    assert_eq!(exit_summary(&out.exit).0, json!(3));
}

#[test]
fn an_adopted_process_in_its_programs_group_lives_until_the_program_ends() {
    let d = daemon_without_cgroups();
    let (background, escaped) = (unique_seconds(), unique_seconds());
    let mut a = login(&d);
    // The subshell starts the sleep and exits: the sleep is adopted by the
    // daemon, still in its program's process group.
    let script = format!("(sleep {background} >/dev/null 2>&1 & echo $!); read line; exit 7");
    start(
        &mut a,
        json!({"type": "run", "argv": ["sh", "-c", script], "stdin": true}),
    );
    let kept: u32 = first_line(&mut a).parse().unwrap();
    let daemon = d.pid() as u32;
    assert!(
        wait_until(|| parent_of(kept) == Some(daemon)),
        "sleep {kept} was not adopted by the daemon"
    );
    // Another program's escaped process is adopted after it and killed:
    // the look that killed it saw the first one too, and left it alone.
    let killed = leave_an_escaped_sleep(&d, &escaped);
    assert!(wait_until(|| is_gone(killed)), "{}", d.stderr());
    assert!(
        !is_gone(kept),
        "the adopted sleep in a running program's group was killed"
    );
    assert_eq!(sleeping(&background), [kept]);
    // Its program ends: its group, the adopted sleep with it, is stopped.
    send_stdin(&mut a, b"go\n").unwrap();
    let out = collect(&mut a);
    assert_eq!(
        exit_summary(&out.exit).0,
        json!(7),
        "exit {:?}, daemon log:\n{}",
        out.exit,
        d.stderr()
    );
    assert!(
        wait_until(|| is_gone(kept)),
        "sleep {kept} outlived its program:\n{}",
        d.stderr()
    );
}

#[test]
fn a_running_programs_exit_status_arrives_while_the_daemon_adopts_and_kills() {
    let d = daemon_without_cgroups();
    let mut a = login(&d);
    let program = start(
        &mut a,
        json!({"type": "run", "argv": ["sh", "-c", "read line; exit 7"], "stdin": true}),
    );
    // Several rounds of adoption and killing while that program runs: its
    // pid must never be taken for an adopted one, nor its status reaped.
    for _ in 0..5 {
        let escaped = leave_an_escaped_sleep(&d, &unique_seconds());
        assert!(wait_until(|| is_gone(escaped)), "{}", d.stderr());
    }
    assert!(!is_gone(program));
    send_stdin(&mut a, b"go\n").unwrap();
    let out = collect(&mut a);
    assert_eq!(
        exit_summary(&out.exit),
        (json!(7), json!(null), json!(false))
    );
}
