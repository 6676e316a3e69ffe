//! Executable documentation for `socketlab demo blocking-vs-reactor`: each
//! server serves every client correctly, and the one-at-a-time server pays
//! every client's delay in turn.
//!
//! Run with `cargo test --test demo_blocking_vs_reactor`. No test compares
//! speeds between servers, which would depend on the machine; the only timing
//! asserted is a lower bound that follows from how the blocking server works.

use std::time::Duration;

use socketlab::demo::blocking_vs_reactor::{ServerKind, Workload, run_server};

const WORKLOAD: Workload = Workload {
    clients: 12,
    delay: Duration::from_millis(15),
};

#[test]
fn the_one_at_a_time_server_serves_every_client() {
    let run = run_server(ServerKind::Blocking, WORKLOAD).unwrap();
    assert_eq!(run.clients_served, WORKLOAD.clients);
    assert_eq!(run.server_served, WORKLOAD.clients);
    assert_eq!(run.server_threads, 1);
}

#[test]
fn the_one_at_a_time_server_takes_at_least_every_clients_delay_added_up() {
    // Each client starts its delay only once greeted, and the blocking server
    // greets the next client only after finishing the previous one.
    let run = run_server(ServerKind::Blocking, WORKLOAD).unwrap();
    let serial = WORKLOAD.delay * u32::try_from(WORKLOAD.clients).unwrap();
    assert!(run.elapsed_ms >= serial.as_secs_f64() * 1000.0);
}

#[test]
fn the_thread_per_client_server_serves_every_client_with_a_thread_each() {
    let run = run_server(ServerKind::ThreadPerClient, WORKLOAD).unwrap();
    assert_eq!(run.clients_served, WORKLOAD.clients);
    assert_eq!(run.server_served, WORKLOAD.clients);
    assert_eq!(run.server_threads, WORKLOAD.clients + 1);
}

#[test]
fn the_reactor_serves_every_client_on_one_thread() {
    let run = run_server(ServerKind::Reactor, WORKLOAD).unwrap();
    assert_eq!(run.clients_served, WORKLOAD.clients);
    assert_eq!(run.server_served, WORKLOAD.clients);
    assert_eq!(run.server_threads, 1);
}

#[test]
fn the_reactor_serves_clients_that_do_not_think_at_all() {
    // With no delay, many requests arrive while the reactor is still
    // accepting: it must handle connections in every phase at once.
    let workload = Workload {
        clients: 50,
        delay: Duration::ZERO,
    };
    let run = run_server(ServerKind::Reactor, workload).unwrap();
    assert_eq!(run.clients_served, workload.clients);
}
