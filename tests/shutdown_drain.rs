//! Shutdown with unread input: a client that wrote far more than the daemon
//! read still gets a clean end of stream (FIN), never a reset.
//! Run: `cargo test --test shutdown_drain`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Daemon, wait_until};

/// What the client writes, without reading.
const TOTAL: usize = 20 * 1024 * 1024;

/// The byte at offset `i` of what the client sends.
fn pattern(i: usize) -> u8 {
    b'a' + (i % 23) as u8
}

#[test]
fn sigterm_ends_an_echo_client_with_unread_input_by_fin_not_reset() {
    let d = Daemon::start(&[]);
    let mut s = d.connect("echo");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    // The client writes 20 MB in one call and reads nothing meanwhile: the
    // echo fills its receive buffer, the daemon's backpressure stops
    // reading, and the writer blocks with megabytes unread on both sides.
    let mut writer = s.try_clone().unwrap();
    let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let sending = std::thread::spawn(move || {
        // SAFETY: gettid(2) has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        writer.write_all(&data)
    });
    let tid = tid_rx.recv().unwrap();
    // The writer is blocked once the kernel parks it waiting for send
    // buffer space: on loopback, only a closed receive window does that.
    let wchan = format!("/proc/self/task/{tid}/wchan");
    let mut peek = vec![0; 256 * 1024];
    assert!(
        wait_until(|| {
            s.peek(&mut peek).unwrap_or(0) >= 64 * 1024
                && std::fs::read_to_string(&wchan).is_ok_and(|w| w == "wait_woken")
        }),
        "the writer never blocked"
    );

    d.signal(libc::SIGTERM);
    let wrote = sending.join().unwrap();
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got);
    assert!(
        wrote.is_ok() && end.is_ok(),
        "expected the whole write taken and EOF after the echo, got write {wrote:?}, \
         read {end:?} after {} bytes",
        got.len()
    );
    assert!(!got.is_empty() && got.len() <= TOTAL);
    assert!(
        got.iter().enumerate().all(|(i, &b)| b == pattern(i)),
        "the echo is what was sent"
    );
}
