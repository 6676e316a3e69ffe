//! A fake files service, for testing the client without the daemon: a
//! std-thread TCP server speaking the §5.4 login (real SCRAM, through
//! `socketlab::auth::scram`) and the §5.5 requests over a temporary
//! directory. It is deliberately small and trusting (one user, no quota
//! enforcement, paths checked only against `..` past the root), and it
//! can misbehave on purpose: sign with the wrong key, corrupt a download,
//! or cut an upload off half-way and keep it for resuming.
//!
//! Test-only; the real service lives in the daemon.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socketlab::auth::scram::{self, StoredSecrets};
use socketlab::codec::hex;

pub use crate::client_support::Finished;
use crate::client_support::run_command;

/// How long any single test step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(20);

/// The fake's one user.
pub const USER: &str = "ada";
pub const PASSWORD: &str = "correct horse";

/// The salt and iteration count of every challenge (few iterations, so
/// that a debug-built client logs in quickly).
const SALT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const ITERATIONS: u32 = 256;

/// How the fake misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Sign the login with a key other than the user's.
    pub wrong_signature: bool,
    /// Flip one byte in the middle of every download's bytes.
    pub corrupt_get: bool,
    /// Close the connection once the first upload has sent this many
    /// bytes, keeping them for a resume.
    pub cut_first_put_after: Option<u64>,
    /// Send half of each download's bytes, then wait until the test sets
    /// this flag (at most [`STEP`]) before sending the rest.
    pub hold_get_halfway: Option<Arc<AtomicBool>>,
}

/// What the fake saw.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Every frame received after a successful login, in order.
    pub requests: Vec<Value>,
    /// Connections that have ended (for whatever reason).
    pub closed: usize,
    /// Bytes received by each upload, in order.
    pub put_bytes: Vec<u64>,
}

/// A running fake; its threads end with the test process.
pub struct FakeFiles {
    pub addr: SocketAddr,
    pub home: tempfile::TempDir,
    log: Arc<Mutex<Log>>,
}

/// State shared by the fake's connections.
struct Shared {
    home: PathBuf,
    faults: Faults,
    log: Arc<Mutex<Log>>,
    /// Interrupted uploads by (path, sha256): the bytes received so far.
    partial: Mutex<HashMap<(PathBuf, String), Vec<u8>>>,
    /// Whether an upload has been cut off already.
    cut_done: Mutex<bool>,
}

impl FakeFiles {
    pub fn start(faults: Faults) -> FakeFiles {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake");
        let addr = listener.local_addr().unwrap();
        let home = tempfile::tempdir().expect("temp home");
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Arc::new(Shared {
            home: home.path().to_path_buf(),
            faults,
            log: Arc::clone(&log),
            partial: Mutex::new(HashMap::new()),
            cut_done: Mutex::new(false),
        });
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    stream.set_read_timeout(Some(STEP)).unwrap();
                    let _ = serve(&shared, stream);
                    shared.log.lock().unwrap().closed += 1;
                });
            }
        });
        FakeFiles { addr, home, log }
    }

    pub fn log(&self) -> Log {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `n` connections have ended.
    pub fn wait_closed(&self, n: usize) {
        let deadline = Instant::now() + STEP;
        while self.log().closed < n {
            assert!(
                Instant::now() < deadline,
                "the fake saw no close: {:?}",
                self.log()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A path inside the user's home.
    pub fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }
}

fn serve(shared: &Shared, mut s: TcpStream) -> Option<()> {
    send(
        &mut s,
        &json!({"type":"hello","service":"files","version":1,"auth":"scram-sha-256"}),
    );
    let login = recv(&mut s)?;
    let user = login["user"].as_str()?.to_string();
    let nonce = format!("{}FAKE-SERVER-NONCE", login["nonce"].as_str()?);
    let salt_hex = hex::encode(&SALT);
    send(
        &mut s,
        &json!({"type":"challenge","salt":salt_hex,"iterations":ITERATIONS,"nonce":nonce}),
    );
    let proof = recv(&mut s)?;
    let proof = hex::decode(proof["proof"].as_str()?)?;
    let message = scram::auth_message(&user, &nonce, &salt_hex, ITERATIONS);
    let secrets = StoredSecrets::derive(PASSWORD, &SALT, ITERATIONS);
    let signature = match secrets.verify(message.as_bytes(), &proof) {
        Some(signature) if user == USER => signature,
        _ => {
            send(
                &mut s,
                &json!({"type":"error","error":"authentication failed"}),
            );
            return None;
        }
    };
    let signature = if shared.faults.wrong_signature {
        let impostor = StoredSecrets::derive("not the password", &SALT, ITERATIONS);
        scram::server_signature(&impostor.server_key, message.as_bytes())
    } else {
        signature
    };
    send(
        &mut s,
        &json!({"type":"ok","signature":hex::encode(&signature),"cwd":"/"}),
    );

    let mut cwd = String::from("/");
    loop {
        let request = recv(&mut s)?;
        shared.log.lock().unwrap().requests.push(request.clone());
        let path = |field: &str| resolve(&cwd, request[field].as_str().unwrap_or("."));
        let answer = match request["type"].as_str()? {
            "pwd" => json!({"type":"ok","cwd":cwd}),
            "cd" => match path("path") {
                Some(p) if shared.home.join(&p[1..]).is_dir() => {
                    cwd = p;
                    json!({"type":"ok","cwd":cwd})
                }
                _ => error("no such directory"),
            },
            "ls" => match path("path") {
                Some(p) => list(&shared.home.join(&p[1..])),
                None => error("bad path"),
            },
            "mkdir" => match path("path").map(|p| std::fs::create_dir(shared.home.join(&p[1..]))) {
                Some(Ok(())) => json!({"type":"ok"}),
                _ => error("cannot make that directory"),
            },
            "rm" => match path("path").map(|p| shared.home.join(&p[1..])) {
                Some(p) if p.is_dir() && std::fs::remove_dir(&p).is_ok() => json!({"type":"ok"}),
                Some(p) if p.is_file() && std::fs::remove_file(&p).is_ok() => json!({"type":"ok"}),
                _ => error("no such file or directory"),
            },
            "quota" => json!({"type":"ok","used":used(&shared.home),"limit":10 << 20}),
            "bye" => {
                send(&mut s, &json!({"type":"ok"}));
                return Some(());
            }
            "get" => {
                let Some(data) =
                    path("path").and_then(|p| std::fs::read(shared.home.join(&p[1..])).ok())
                else {
                    send(&mut s, &error("no such file"));
                    continue;
                };
                let offset = request["offset"].as_u64().unwrap_or(0) as usize;
                if offset > data.len() {
                    send(&mut s, &error("offset past the end of the file"));
                    continue;
                }
                let sha = hex::encode(&Sha256::digest(&data));
                send(
                    &mut s,
                    &json!({"type":"ready","size":data.len(),"offset":offset,"sha256":sha}),
                );
                let mut bytes = data[offset..].to_vec();
                if shared.faults.corrupt_get && !bytes.is_empty() {
                    let middle = bytes.len() / 2;
                    bytes[middle] ^= 0x20;
                }
                let half = bytes.len() / 2;
                s.write_all(&bytes[..half]).ok()?;
                if let Some(gate) = &shared.faults.hold_get_halfway {
                    let deadline = Instant::now() + STEP;
                    while !gate.load(Ordering::SeqCst) && Instant::now() < deadline {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                s.write_all(&bytes[half..]).ok()?;
                continue;
            }
            "put" => {
                let Some(p) = path("path") else {
                    send(&mut s, &error("bad path"));
                    continue;
                };
                let size = request["size"].as_u64()?;
                let sha = request["sha256"].as_str()?.to_string();
                let key = (PathBuf::from(&p), sha.clone());
                let mut data = shared
                    .partial
                    .lock()
                    .unwrap()
                    .remove(&key)
                    .unwrap_or_default();
                send(&mut s, &json!({"type":"ready","offset":data.len()}));
                let mut received = 0u64;
                let cut = match shared.faults.cut_first_put_after {
                    Some(cut)
                        if !std::mem::replace(&mut *shared.cut_done.lock().unwrap(), true) =>
                    {
                        Some(cut)
                    }
                    _ => None,
                };
                let mut buf = vec![0u8; 64 * 1024];
                while (data.len() as u64) < size {
                    let mut want = (size - data.len() as u64).min(buf.len() as u64);
                    if let Some(cut) = cut {
                        want = want.min(cut - received);
                    }
                    let n = s.read(&mut buf[..want as usize]).ok().filter(|&n| n > 0);
                    let Some(n) = n else { break };
                    data.extend_from_slice(&buf[..n]);
                    received += n as u64;
                    if cut == Some(received) {
                        break;
                    }
                }
                shared.log.lock().unwrap().put_bytes.push(received);
                if (data.len() as u64) < size {
                    // Cut off: keep what came, for a resume, and hang up.
                    shared.partial.lock().unwrap().insert(key, data);
                    return None;
                }
                if hex::encode(&Sha256::digest(&data)) != sha {
                    error("checksum mismatch")
                } else {
                    std::fs::write(shared.home.join(&p[1..]), &data).ok()?;
                    json!({"type":"ok","size":size,"sha256":sha})
                }
            }
            _ => error("unknown request"),
        };
        send(&mut s, &answer);
    }
}

fn error(reason: &str) -> Value {
    json!({"type":"error","error":reason})
}

/// An absolute path for `path` taken from `cwd`, or `None` past the root.
fn resolve(cwd: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        cwd.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn list(dir: &Path) -> Value {
    let Ok(items) = std::fs::read_dir(dir) else {
        return error("no such directory");
    };
    let mut entries: Vec<Value> = items
        .flatten()
        .map(|item| {
            let meta = item.metadata().unwrap();
            let mtime = meta
                .modified()
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            json!({
                "name": item.file_name().to_string_lossy(),
                "kind": if meta.is_dir() { "dir" } else { "file" },
                "size": if meta.is_dir() { 0 } else { meta.len() },
                "mtime": mtime,
            })
        })
        .collect();
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({"type":"ok","entries":entries})
}

fn used(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|items| {
            items
                .flatten()
                .map(|i| {
                    let meta = i.metadata().unwrap();
                    if meta.is_dir() {
                        used(&i.path())
                    } else {
                        meta.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn send(s: &mut TcpStream, header: &Value) {
    let json = serde_json::to_vec(header).unwrap();
    let mut frame = (json.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&json);
    let _ = s.write_all(&frame);
}

fn recv(s: &mut TcpStream) -> Option<Value> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).ok()?;
    let mut json = vec![0u8; u32::from_be_bytes(prefix) as usize];
    s.read_exact(&mut json).ok()?;
    serde_json::from_slice(&json).ok()
}

/// Runs `socketlab ARGS` in `dir` with `stdin` as its input (not a
/// terminal) and without `SOCKETLAB_PASSWORD` unless `env` sets it; waits
/// for it to exit, at most [`STEP`].
pub fn run_in(dir: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_socketlab"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("SOCKETLAB_PASSWORD")
        .envs(env.iter().copied());
    run_command(command, args, stdin)
}

/// `n` bytes that differ from one offset to the next (no repeating
/// 64 KiB block that would hide an offset error).
pub fn content(n: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}
