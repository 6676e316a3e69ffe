//! Wake-ups of connections that are gone do not pile up in the timer
//! queue: each short-lived connection leaves an idle wake-up (here 300 s
//! away) and a linger wake-up behind, and the reactor sweeps them out in
//! bulk once the queue has doubled since its last sweep (src/reactor/
//! timers.rs). `loop.timers` in `/stats` is the queue's length.
//! Run: `cargo test --test timer_sweep`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Daemon, read_to_end, wait_until};

/// `SWEEP_FLOOR` in src/reactor/timers.rs.
const SWEEP_FLOOR: u64 = 4_096;
const CONNECTIONS: u64 = 10_000;

fn stats(d: &Daemon) -> serde_json::Value {
    let mut s = d.connect("admin");
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = String::from_utf8(read_to_end(&mut s).unwrap()).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).expect("JSON")
}

#[test]
fn ten_thousand_closed_connections_leave_the_timer_queue_bounded() {
    let d = Daemon::start(&["--set", "echo.idle_timeout_s=300"]);
    for _ in 0..CONNECTIONS {
        let mut s: TcpStream = d.connect("echo");
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
    assert!(wait_until(|| {
        let v = stats(&d);
        v["services"]["echo"]["connections_total"] == CONNECTIONS
            && v["services"]["echo"]["connections_open"] == 0
    }));
    // Unswept, the queue would hold two wake-ups per connection: 20,000.
    let timers = stats(&d)["loop"]["timers"].as_u64().expect("loop.timers");
    assert!(
        timers <= 2 * SWEEP_FLOOR,
        "{timers} wake-ups queued after {CONNECTIONS} connections came and went"
    );
}
