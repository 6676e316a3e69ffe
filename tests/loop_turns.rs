//! The loop watches its own turns: a turn longer than
//! `limits.slow_turn_ms` is logged with what it did, and every turn lands
//! in the `/metrics` histogram.
//!
//! Run with `cargo test --test loop_turns`.

mod common;

use std::io::Write;

use common::{Daemon, read_exact_n, read_to_end, wait_until};

/// One echo round trip, so the loop has served a connection.
fn echo_once(d: &Daemon) {
    let mut s = d.connect("echo");
    s.write_all(b"ping\n").unwrap();
    assert_eq!(read_exact_n(&mut s, 5), b"ping\n");
}

/// `GET /metrics` on a fresh connection: the body.
fn metrics(d: &Daemon) -> String {
    let mut s = d.connect("admin");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = String::from_utf8(read_to_end(&mut s).expect("response")).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    body.to_string()
}

#[test]
fn with_a_zero_limit_every_busy_turn_is_logged_naming_the_service_it_served() {
    let d = Daemon::start(&["--set", "limits.slow_turn_ms=0"]);
    echo_once(&d);
    // The turn that read "ping" ran echo's callback; its line says so,
    // with the bytes it moved.
    assert!(
        wait_until(|| d.stderr().lines().any(|l| l.contains("WARN  slow turn ")
            && l.contains("(limits.slow_turn_ms = 0)")
            && l.contains("callbacks echo ")
            && l.contains("read 5 B"))),
        "no slow-turn line for echo in\n{}",
        d.stderr()
    );
}

#[test]
fn with_the_default_limit_a_quiet_daemon_logs_no_slow_turn() {
    let mut d = Daemon::start(&[]);
    echo_once(&d);
    d.signal(libc::SIGTERM);
    assert!(d.wait().success());
    let log = d.stderr();
    assert!(log.contains("stopped"), "the daemon ran to its end:\n{log}");
    assert!(!log.contains("slow turn"), "{log}");
}

#[test]
fn metrics_count_every_turn_in_the_turn_histogram() {
    let d = Daemon::start(&[]);
    echo_once(&d);
    let body = metrics(&d);
    assert!(
        body.contains("# TYPE socketlab_loop_turn_seconds histogram\n"),
        "{body}"
    );
    let sample = |name: &str| -> f64 {
        let line = body
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    let count = sample("socketlab_loop_turn_seconds_count ");
    let iterations = sample("socketlab_loop_iterations_total ");
    // The answer is written during the turn that counts as an iteration
    // but is recorded in the histogram only at its end: one behind.
    assert_eq!(count + 1.0, iterations, "{body}");
    assert_eq!(
        sample("socketlab_loop_turn_seconds_bucket{le=\"+Inf\"} "),
        count
    );
    let first = sample("socketlab_loop_turn_seconds_bucket{le=\"0.00005\"} ");
    let last = sample("socketlab_loop_turn_seconds_bucket{le=\"1\"} ");
    assert!(first <= last && last <= count, "{body}");
}
