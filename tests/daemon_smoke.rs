//! The daemon starts, answers, and stops cleanly.
//! Run: `cargo test --test daemon_smoke`.

mod common;

use std::io::{Read, Write};

use common::Daemon;

#[test]
fn the_ready_file_names_every_service_of_the_daemon_with_real_addresses() {
    let d = Daemon::start(&[]);
    for service in ["echo", "discard", "daytime"] {
        assert_ne!(d.tcp(service).port(), 0);
        assert_eq!(d.tcp(service).port(), d.udp(service).port());
    }
    assert_ne!(d.tcp("chargen").port(), 0);
    assert!(
        d.stderr()
            .contains(&format!("listening echo tcp {}", d.tcp("echo")))
    );
}

#[test]
fn echo_returns_what_it_was_sent() {
    let d = Daemon::start(&[]);
    let mut s = d.connect("echo");
    s.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello\n");
}
