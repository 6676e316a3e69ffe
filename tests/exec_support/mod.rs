//! Test support for the exec service: a small client written from
//! PROTOCOL.md §5 alone (its own frame reader, its own HMAC), so the tests
//! check the wire rather than the daemon's codec against itself.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::Daemon;

/// The daemon's shared key, read from its data dir.
pub fn key_of(d: &Daemon) -> Vec<u8> {
    read_key(&d.data_dir().join("secret.key"))
}

pub fn read_key(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("key file");
    hex_decode(text.trim_end_matches('\n'))
}

pub fn hex_decode(text: &str) -> Vec<u8> {
    assert_eq!(text.len() % 2, 0, "odd hex: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256(key, challenge bytes), as 64 hex characters.
pub fn mac_hex(key: &[u8], challenge_hex: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(&hex_decode(challenge_hex));
    hex_encode(&mac.finalize().into_bytes())
}

/// Sends one frame with `header` as its JSON.
pub fn send(s: &mut TcpStream, header: &Value) {
    let json = serde_json::to_vec(header).unwrap();
    send_raw_frame(s, &json);
}

/// Sends one frame with exactly these header bytes.
pub fn send_raw_frame(s: &mut TcpStream, json: &[u8]) {
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(json);
    s.write_all(&bytes).expect("send frame");
}

/// Sends a `stdin` frame and its bytes.
pub fn send_stdin(s: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    let json = serde_json::to_vec(&json!({"type": "stdin", "size": data.len()})).unwrap();
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(data);
    s.write_all(&bytes)
}

/// Reads one frame header; `None` at a clean EOF.
pub fn try_recv(s: &mut impl Read) -> io::Result<Option<Value>> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match s.read(&mut prefix[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    assert!(len <= 65_536, "the daemon sent a header of {len} bytes");
    let mut json = vec![0; len];
    s.read_exact(&mut json)?;
    let value: Value = serde_json::from_slice(&json).expect("header is JSON");
    assert!(value["type"].is_string(), "no type: {value}");
    Ok(Some(value))
}

/// Reads one frame header; panics at EOF.
pub fn recv(s: &mut impl Read) -> Value {
    try_recv(s)
        .expect("read frame")
        .expect("connection closed before a frame")
}

/// Reads one frame and, for `stdout`/`stderr`, its payload.
pub fn recv_with_payload(s: &mut impl Read) -> (Value, Vec<u8>) {
    let header = recv(s);
    let payload = match header["type"].as_str() {
        Some("stdout" | "stderr") => {
            let size = header["size"].as_u64().expect("size") as usize;
            assert!(size <= 65_536, "chunk of {size} bytes");
            let mut buf = vec![0; size];
            s.read_exact(&mut buf).expect("payload");
            buf
        }
        _ => Vec::new(),
    };
    (header, payload)
}

/// Asserts that the next frame is an error, and returns it.
pub fn expect_error(s: &mut impl Read) -> Value {
    let frame = recv(s);
    assert_eq!(frame["type"], "error", "expected an error frame: {frame}");
    assert!(frame["error"].is_string(), "{frame}");
    frame
}

/// Asserts that the daemon closes the connection (EOF) with nothing more.
pub fn expect_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "more bytes before EOF: {rest:?}"),
        // A reset after our unread bytes is a close too.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

/// Connects and reads the hello; returns the challenge.
pub fn hello(d: &Daemon) -> (TcpStream, String) {
    let mut s = d.connect("exec");
    let hello = recv(&mut s);
    assert_eq!(hello["type"], "hello", "{hello}");
    let challenge = hello["challenge"].as_str().expect("challenge").to_string();
    (s, challenge)
}

/// Connects and authenticates.
pub fn login(d: &Daemon) -> TcpStream {
    let key = key_of(d);
    let (mut s, challenge) = hello(d);
    send(
        &mut s,
        &json!({"type": "auth", "mac": mac_hex(&key, &challenge)}),
    );
    let ok = recv(&mut s);
    assert_eq!(ok, json!({"type": "ok"}));
    s
}

/// Sends `run` and expects `started`; returns the pid.
pub fn start(s: &mut TcpStream, run: Value) -> u32 {
    send(s, &run);
    let started = recv(s);
    assert_eq!(started["type"], "started", "{started}");
    started["pid"].as_u64().expect("pid") as u32
}

pub fn argv(args: &[&str]) -> Value {
    json!({"type": "run", "argv": args})
}

/// What a program produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Stream names in the order frames arrived.
    pub frames: Vec<String>,
    pub exit: Value,
}

/// Reads output frames until the `exit` frame.
pub fn collect(s: &mut impl Read) -> Outcome {
    let mut outcome = Outcome::default();
    loop {
        let (header, payload) = recv_with_payload(s);
        match header["type"].as_str().unwrap() {
            "stdout" => outcome.stdout.extend_from_slice(&payload),
            "stderr" => outcome.stderr.extend_from_slice(&payload),
            "exit" => {
                outcome.exit = header;
                return outcome;
            }
            other => panic!("unexpected {other} frame while running: {header}"),
        }
        outcome
            .frames
            .push(header["type"].as_str().unwrap().to_string());
    }
}

/// Runs a program to its end.
pub fn run_to_end(s: &mut TcpStream, run: Value) -> Outcome {
    start(s, run);
    collect(s)
}

/// Whether the process is gone from /proc: exited *and* reaped (a zombie
/// still has its entry).
pub fn is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// The exit frame's fields, for compact asserts.
pub fn exit_summary(exit: &Value) -> (Value, Value, Value) {
    assert_eq!(exit["type"], "exit");
    assert!(exit["elapsed_ms"].is_u64(), "{exit}");
    (
        exit["code"].clone(),
        exit["signal"].clone(),
        exit["timed_out"].clone(),
    )
}
