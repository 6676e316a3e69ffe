//! Test support for the files service: users made with the real
//! `socketlab user` command, a SCRAM login done by hand over a raw socket,
//! and the frames of PROTOCOL.md §5.5.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socketlab::auth::scram;
use socketlab::codec::hex;

use crate::common::Daemon;
#[allow(unused_imports)]
pub use crate::exec_support::{expect_closed, expect_error, recv, send, send_raw_frame, try_recv};

/// Iterations for test users: the protocol's minimum, so logins are quick.
pub const TEST_ITERATIONS: &str = "4096";

/// A client nonce of the allowed shape.
pub const NONCE: &str = "abcdefghijklmnopqrstuvwxyz012345";

/// Runs `socketlab user ARGS --data-dir DIR`, feeding `stdin`.
pub fn user_cmd(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socketlab user");
    // A command that refuses its arguments exits without reading stdin,
    // so a broken pipe here is an outcome, not a failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().expect("socketlab user")
}

/// Adds a user with a password (and a quota, if given), checking it worked.
pub fn add_user(d: &Daemon, name: &str, password: &str, quota: Option<&str>) {
    let mut args = vec![
        "add",
        name,
        "--password-stdin",
        "--iterations",
        TEST_ITERATIONS,
    ];
    if let Some(q) = quota {
        args.extend(["--quota", q]);
    }
    let out = user_cmd(&d.data_dir(), &args, &format!("{password}\n"));
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects and reads the hello, checking its shape.
pub fn hello(d: &Daemon) -> TcpStream {
    let mut s = d.connect("files");
    let hello = recv(&mut s);
    assert_eq!(
        hello,
        json!({"type": "hello", "service": "files", "version": 1, "auth": "scram-sha-256"})
    );
    s
}

/// Sends the login frame and returns the challenge.
pub fn challenge(s: &mut TcpStream, user: &str) -> Value {
    send(s, &json!({"type": "login", "user": user, "nonce": NONCE}));
    let c = recv(s);
    assert_eq!(c["type"], "challenge", "{c}");
    c
}

/// The proof for `password` answering challenge `c`, and the signature the
/// daemon should send back for it.
pub fn proof(user: &str, password: &str, c: &Value) -> (String, String) {
    let salt_hex = c["salt"].as_str().unwrap();
    let salt = hex::decode(salt_hex).unwrap();
    let iterations = c["iterations"].as_u64().unwrap() as u32;
    let nonce = c["nonce"].as_str().unwrap();
    assert!(nonce.starts_with(NONCE) && nonce.len() > NONCE.len());
    let salted = scram::salted_password(password, &salt, iterations);
    let message = scram::auth_message(user, nonce, salt_hex, iterations);
    let proof = scram::client_proof(&scram::client_key(&salted), message.as_bytes());
    let signature = scram::server_signature(&scram::server_key(&salted), message.as_bytes());
    (hex::encode(&proof), hex::encode(&signature))
}

/// Logs in and returns the answer to the proof (ok or error).
pub fn try_login(d: &Daemon, user: &str, password: &str) -> (TcpStream, Value) {
    let mut s = hello(d);
    let c = challenge(&mut s, user);
    let (p, _) = proof(user, password, &c);
    send(&mut s, &json!({"type": "proof", "proof": p}));
    let answer = recv(&mut s);
    (s, answer)
}

/// Logs in, checking the daemon's signature, and returns the connection.
pub fn login(d: &Daemon, user: &str, password: &str) -> TcpStream {
    let mut s = hello(d);
    let c = challenge(&mut s, user);
    let (p, signature) = proof(user, password, &c);
    send(&mut s, &json!({"type": "proof", "proof": p}));
    let ok = recv(&mut s);
    assert_eq!(
        ok,
        json!({"type": "ok", "signature": signature, "cwd": "/"}),
        "login as {user}"
    );
    s
}

/// Sends a request and returns its one answer.
pub fn ask(s: &mut TcpStream, request: Value) -> Value {
    send(s, &request);
    recv(s)
}

pub fn sha_hex(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data))
}

/// Uploads `data` whole; returns the last answer (or the refusal).
pub fn put(s: &mut TcpStream, path: &str, data: &[u8]) -> Value {
    send(
        s,
        &json!({"type": "put", "path": path, "size": data.len(), "sha256": sha_hex(data)}),
    );
    let ready = recv(s);
    if ready["type"] != "ready" {
        return ready;
    }
    let offset = ready["offset"].as_u64().unwrap() as usize;
    s.write_all(&data[offset..]).unwrap();
    recv(s)
}

/// Downloads from `offset`; returns the ready frame and the bytes.
pub fn get(s: &mut TcpStream, path: &str, offset: u64) -> (Value, Vec<u8>) {
    let ready = ask(s, json!({"type": "get", "path": path, "offset": offset}));
    if ready["type"] != "ready" {
        return (ready, Vec::new());
    }
    let n = ready["size"].as_u64().unwrap() - ready["offset"].as_u64().unwrap();
    let mut data = vec![0; n as usize];
    s.read_exact(&mut data).unwrap();
    (ready, data)
}

/// A deterministic test payload of `n` bytes.
pub fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The user's home on disk.
pub fn home(d: &Daemon, user: &str) -> std::path::PathBuf {
    d.data_dir().join("files/home").join(user)
}

/// Files in the user's staging directory.
pub fn staged(d: &Daemon, user: &str) -> Vec<String> {
    let dir = d.data_dir().join("files/.staging").join(user);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
