//! The echo service over TCP and UDP: byte-exact, in order, bounded.
//! Run: `cargo test --test echo`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::{Daemon, PATIENCE, read_to_end, wait_until};

/// A deterministic byte stream, different per client, so mixing two
/// clients' bytes or reordering one client's would be caught.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` in uneven pieces (1, 2, 3, ... 97 bytes, repeating).
fn write_in_odd_pieces(s: &mut TcpStream, data: &[u8]) {
    let mut at = 0;
    let mut piece = 1;
    while at < data.len() {
        let end = (at + piece).min(data.len());
        s.write_all(&data[at..end]).unwrap();
        at = end;
        piece = piece % 97 + 1;
    }
}

// ----- Byte-exact echo ------------------------------------------------------

#[test]
fn two_hundred_concurrent_clients_get_back_exactly_their_own_bytes() {
    let d = Daemon::start(&[]);
    let addr = d.tcp("echo");
    let clients: Vec<_> = (0..200u64)
        .map(|i| {
            thread::spawn(move || {
                let data = pattern(i, 20_000 + i as usize * 37);
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut writer = s.try_clone().unwrap();
                let sent = data.clone();
                let w = thread::spawn(move || {
                    write_in_odd_pieces(&mut writer, &sent);
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                let got = read_to_end(&mut s).unwrap();
                w.join().unwrap();
                assert_eq!(got.len(), data.len(), "client {i}: length");
                assert!(got == data, "client {i}: bytes differ");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn a_half_closed_client_gets_everything_still_pending_and_then_eof() {
    let d = Daemon::start(&[]);
    let mut s = d.connect("echo");
    let data = pattern(7, 300_000);
    let mut writer = s.try_clone().unwrap();
    let sent = data.clone();
    let w = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_end(&mut s).unwrap();
    w.join().unwrap();
    assert!(got == data);
}

// ----- Backpressure ---------------------------------------------------------

#[test]
fn a_client_that_writes_without_reading_cannot_grow_the_daemon_and_loses_nothing() {
    const TOTAL: usize = 64 << 20;
    let d = Daemon::start(&[]);
    let baseline = d.rss();

    // The flooder writes 64 MiB and reads nothing until told to.
    let mut flooder = d.connect("echo");
    let mut writer = flooder.try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let w_written = Arc::clone(&written);
    let w = thread::spawn(move || {
        let chunk = pattern(1, 1 << 20);
        for _ in 0..TOTAL / chunk.len() {
            writer.write_all(&chunk).unwrap();
            w_written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });

    // Once several MiB went in, the daemon has surely hit its 256 KiB
    // bound and stopped reading; the rest sits in kernel buffers.
    assert!(wait_until(|| written.load(Ordering::Relaxed) >= 3 << 20));

    // Another client is still served, promptly.
    let mut other = d.connect("echo");
    other.write_all(b"still there?").unwrap();
    let mut buf = [0u8; 12];
    other.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still there?");

    let grown = d.rss().saturating_sub(baseline);
    assert!(
        grown < 8 << 20,
        "daemon grew by {grown} bytes while a client flooded it"
    );
    assert!(
        written.load(Ordering::Relaxed) < TOTAL as u64,
        "nothing pushed back"
    );

    // Now the flooder reads: every byte comes back, in order.
    let chunk = pattern(1, 1 << 20);
    let mut got = vec![0u8; chunk.len()];
    for i in 0..TOTAL / chunk.len() {
        flooder.read_exact(&mut got).unwrap();
        assert!(got == chunk, "chunk {i} differs");
        if i % 16 == 0 {
            let grown = d.rss().saturating_sub(baseline);
            assert!(grown < 8 << 20, "daemon grew by {grown} bytes");
        }
    }
    w.join().unwrap();
    let mut rest = Vec::new();
    flooder.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

// ----- UDP ------------------------------------------------------------------

fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

#[test]
fn udp_echo_answers_each_datagram_with_one_datagram_up_to_65507_bytes() {
    let d = Daemon::start(&[]);
    let s = udp_client();
    let mut buf = vec![0u8; 70_000];
    for size in [0, 1, 1472, 9000, 65_507] {
        let data = pattern(size as u64, size);
        s.send_to(&data, d.udp("echo")).unwrap();
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!(from, d.udp("echo"));
        assert_eq!(n, size);
        assert!(buf[..n] == data[..]);
    }
}

// ----- Modes ----------------------------------------------------------------

#[test]
fn upper_mode_uppercases_ascii_letters_only() {
    let d = Daemon::start(&["--set", "echo.mode=upper"]);
    let mut s = d.connect("echo");
    s.write_all("abc XYZ 123 é\n".as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s).unwrap(), "ABC XYZ 123 é\n".as_bytes());

    let u = udp_client();
    u.send_to(b"hello, udp", d.udp("echo")).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HELLO, UDP");
}

/// Checks `[Mon Nov  3 09:05:01 2026] ` (ctime layout) and returns the rest.
fn strip_ctime_stamp(line: &str) -> &str {
    let stamp = &line[..27];
    let b = stamp.as_bytes();
    assert_eq!(b[0], b'[', "{line:?}");
    assert_eq!(&stamp[25..], "] ", "{line:?}");
    let inner = &stamp[1..25];
    let words: Vec<&str> = inner.split(' ').collect();
    assert!(
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&words[0]),
        "{line:?}"
    );
    assert_eq!(&inner[3..4], " ");
    assert_eq!(&inner[7..8], " ");
    assert!(inner[8..10].trim_start().parse::<u32>().is_ok(), "{line:?}");
    assert_eq!(&inner[13..14], ":");
    assert_eq!(&inner[16..17], ":");
    assert!(inner[20..24].parse::<u32>().is_ok(), "{line:?}");
    &line[27..]
}

#[test]
fn stamp_mode_prefixes_every_line_and_stamps_a_last_line_at_shutdown() {
    let d = Daemon::start(&["--set", "echo.mode=\"stamp\""]);
    let mut s = d.connect("echo");
    // Lines split across writes, and a last line without its newline.
    s.write_all(b"first li").unwrap();
    s.write_all(b"ne\nsecond\nlast").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let text = String::from_utf8(read_to_end(&mut s).unwrap()).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert_eq!(strip_ctime_stamp(lines[0]), "first line\n");
    assert_eq!(strip_ctime_stamp(lines[1]), "second\n");
    assert_eq!(strip_ctime_stamp(lines[2]), "last");

    let u = udp_client();
    u.send_to(b"one\ntwo\n", d.udp("echo")).unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert_eq!(strip_ctime_stamp(lines[0]), "one\n");
    assert_eq!(strip_ctime_stamp(lines[1]), "two\n");
}

#[test]
fn stamp_mode_does_not_hold_a_line_without_newlines_whole() {
    let d = Daemon::start(&["--set", "echo.mode=stamp"]);
    let mut s = d.connect("echo");
    let long = vec![b'x'; 300_000];
    let mut writer = s.try_clone().unwrap();
    let w = thread::spawn(move || {
        writer.write_all(&long).unwrap();
        writer.write_all(b"\n").unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_end(&mut s).unwrap();
    w.join().unwrap();
    let text = String::from_utf8(got).unwrap();
    let body = strip_ctime_stamp(&text);
    assert_eq!(body.len(), 300_001);
    assert!(body[..300_000].bytes().all(|b| b == b'x'));
}

// ----- Discard --------------------------------------------------------------

#[test]
fn discard_reads_everything_and_answers_nothing() {
    let d = Daemon::start(&[]);
    let mut s = d.connect("discard");
    s.write_all(&pattern(3, 1 << 20)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut s).unwrap().is_empty());

    let u = udp_client();
    u.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    u.send_to(b"into the void", d.udp("discard")).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        u.recv_from(&mut buf).is_err(),
        "discard answered a datagram"
    );
}
