//! exec: large streams in both directions, and memory that stays bounded
//! whichever side is slow.
//! Run: `cargo test --test exec_streams`.

mod common;
mod exec_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use common::{Daemon, PATIENCE};
use exec_support::*;

const MIB: usize = 1024 * 1024;

/// Deterministic bytes that are not a repeating short pattern (xorshift).
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn fifty_mib_through_cat() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    start(
        &mut s,
        json!({"type": "run", "argv": ["cat"], "stdin": true}),
    );
    let data = pseudo_random(50 * MIB);
    let expected = Sha256::digest(&data);

    // Write and read at the same time, as a real client must: cat's
    // output would otherwise fill every buffer on the way and stop it.
    let mut writer = s.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        for chunk in data.chunks(65_536) {
            send_stdin(&mut writer, chunk).expect("send stdin");
        }
        send(&mut writer, &json!({"type": "stdin_eof"}));
    });
    let mut hash = Sha256::new();
    let mut total = 0;
    let exit = loop {
        let (header, payload) = recv_with_payload(&mut s);
        match header["type"].as_str().unwrap() {
            "stdout" => {
                total += payload.len();
                hash.update(&payload);
            }
            "exit" => break header,
            other => panic!("unexpected {other}: {header}"),
        }
    };
    feeder.join().unwrap();
    assert_eq!(total, 50 * MIB);
    assert_eq!(hash.finalize(), expected, "the bytes came back unchanged");
    assert_eq!(exit_summary(&exit).0, json!(0));
}

#[test]
fn a_fast_printer_and_a_slow_reader_keep_memory_bounded_and_lose_nothing() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    // About 79 MB of numbered lines, printed as fast as `seq` can.
    let lines = 10_000_000u64;
    let baseline = d.rss();
    start(&mut s, argv(&["seq", "1", &lines.to_string()]));

    // Read nothing for a while: a daemon that buffered the program's
    // output would now hold most of it.
    let stalled = Instant::now();
    let mut peak = d.rss();
    while stalled.elapsed() < Duration::from_millis(700) {
        peak = peak.max(d.rss());
        std::thread::sleep(Duration::from_millis(20));
    }

    // Then read slowly at first, and check every line, in order.
    let mut next = 1u64;
    let mut partial = Vec::new();
    let mut frames = 0u64;
    let exit = loop {
        let (header, payload) = recv_with_payload(&mut s);
        match header["type"].as_str().unwrap() {
            "stdout" => {
                frames += 1;
                if frames < 200 && frames.is_multiple_of(20) {
                    peak = peak.max(d.rss());
                    std::thread::sleep(Duration::from_millis(5));
                }
                partial.extend_from_slice(&payload);
                let end = partial
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                for line in partial[..end]
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                {
                    let n: u64 = std::str::from_utf8(line).unwrap().parse().unwrap();
                    assert_eq!(n, next, "lines out of order or lost");
                    next += 1;
                }
                partial.drain(..end);
            }
            "exit" => break header,
            other => panic!("unexpected {other}: {header}"),
        }
    };
    assert_eq!(next, lines + 1, "every line arrived");
    assert!(partial.is_empty());
    assert_eq!(exit_summary(&exit).0, json!(0));
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 16 * MIB as u64,
        "the daemon grew by {} KiB while the client did not read",
        growth / 1024
    );
}

#[test]
fn a_program_that_never_reads_its_stdin_cannot_make_the_daemon_buffer() {
    let d = Daemon::start(&[]);
    let mut s = login(&d);
    let run = json!({"type": "run", "argv": ["sleep", "30"], "stdin": true, "timeout_ms": 10_000});
    let pid = start(&mut s, run);
    let baseline = d.rss();
    // Push up to 64 MiB of stdin frames without blocking, until a whole
    // second passes without the kernel taking a byte: the daemon must have
    // stopped reading long before 64 MiB, once the pipe and its small
    // queue were full.
    let mut frame = Vec::new();
    let header = br#"{"type":"stdin","size":65536}"#;
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header);
    frame.extend_from_slice(&[b'x'; 65_536]);
    s.set_nonblocking(true).unwrap();
    let (mut sent, mut offset, mut idle_polls) = (0usize, 0usize, 0);
    let give_up = Instant::now() + PATIENCE;
    while sent < 64 * MIB && idle_polls < 40 && Instant::now() < give_up {
        match s.write(&frame[offset..]) {
            Ok(n) => {
                sent += n;
                offset = (offset + n) % frame.len();
                idle_polls = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                idle_polls += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        sent < 48 * MIB,
        "the daemon took {} MiB for a program that reads nothing",
        sent / MIB
    );
    let growth = d.rss().saturating_sub(baseline);
    assert!(growth < 16 * MIB as u64, "grew by {} KiB", growth / 1024);

    // The daemon is not reading this client, so it cannot see it leave
    // (the FIN waits behind the unread stdin); the timeout still stops
    // the program, and it is reaped.
    drop(s);
    assert!(common::wait_until(|| is_gone(pid)), "pid {pid} still there");
    // The daemon served others all along.
    let mut other = login(&d);
    assert_eq!(
        run_to_end(&mut other, argv(&["echo", "hi"])).stdout,
        b"hi\n"
    );
}

#[test]
fn output_larger_than_the_pending_limit_arrives_whole_when_read_late() {
    // A small output limit makes the daemon pause the pipes often.
    let d = Daemon::start(&["--set", "exec.max_pending_output=4096"]);
    let mut s = login(&d);
    start(&mut s, argv(&["head", "-c", "3000000", "/dev/zero"]));
    std::thread::sleep(Duration::from_millis(200));
    let out = collect(&mut s);
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert_eq!(exit_summary(&out.exit).0, json!(0));
    read_nothing_more(&mut s);
}

/// The connection is idle after an exit: a new request gets an answer.
fn read_nothing_more(s: &mut TcpStream) {
    let out = run_to_end(s, argv(&["true"]));
    assert_eq!(exit_summary(&out.exit).0, json!(0));
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        s.read(&mut b).is_err(),
        "no stray bytes after the exit frame"
    );
}
