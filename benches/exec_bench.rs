//! What running a program through the exec service costs, next to doing the
//! same thing locally.
//!
//! Run (release, as the figures in BENCHMARKS.md were):
//!
//! ```sh
//! cargo build --release && cargo run --release --example exec_bench -- [RUNS] [MIB]
//! ```
//!
//! It starts its own daemon (`target/release/socketlab serve --port-base 0`,
//! found next to this example's binary, or the binary `SOCKETLAB` names,
//! to compare two builds; `SOCKETLAB_ARGS` adds arguments, e.g.
//! `--set exec.cgroups=false`) with a fresh data dir, then measures:
//!
//! 1. programs per second: `true` run RUNS times (default 500) one after the
//!    other over one authenticated connection, each followed by one spawn of
//!    `true` here, so the two rates are measured on the same machine at the
//!    same moments (on a shared host the local rate alone moved by 3x from
//!    one run to the next); and, through the daemon, the median time from
//!    `run` to `started` (the spawn) and from `started` to `exit` (the
//!    program's life and its reaping);
//! 2. streaming: `head -c MIB MiB /dev/zero` (default 1024) read as stdout
//!    frames, against reading the same command's output through a local pipe.
//!
//! The ratios are the daemon's overhead: framing, the loop, the socket.
//! After the first part it prints the daemon's longest loop turn so far
//! (`max_turn_seconds` from `GET /stats`): how long starting programs
//! kept every other client waiting.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::json;
use socketlab::auth::{self, handshake};
use socketlab::codec::frame::{self, FrameDecoder, Header, Item};

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);

    let dir = std::env::temp_dir().join(format!("socketlab-exec-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut daemon = start_daemon(&dir);
    let (addr, admin) = wait_for_addrs(&dir.join("ready.json"));
    let key = auth::load(&dir.join("data/secret.key")).expect("key").key;

    let mut client = Client::connect(&addr, &key);

    // 1. Programs per second, one through the daemon and one spawned
    //    here in turn, so both see the same machine: on a shared host the
    //    rate moves from one second to the next, and two runs one after
    //    the other would compare two different machines.
    let (mut remote, mut local) = (Duration::ZERO, Duration::ZERO);
    let (mut to_started, mut to_exit) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let (code, _, started_after) = client.run_timed(&["true"]);
        let took = t.elapsed();
        assert_eq!(code, Some(0));
        remote += took;
        to_started.push(started_after);
        to_exit.push(took - started_after);
        let t = Instant::now();
        let status = Command::new("true").status().expect("spawn true");
        local += t.elapsed();
        assert!(status.success());
    }
    let per_s = |d: Duration| f64::from(runs) / d.as_secs_f64();
    println!("programs run one after another ({runs} x `true`, in turn with a local spawn):");
    println!("  through the daemon  {:>10.0} /s", per_s(remote));
    println!("  spawned locally     {:>10.0} /s", per_s(local));
    println!(
        "  ratio               {:>10.2}",
        per_s(remote) / per_s(local)
    );
    println!(
        "  run to started      {:>10.3} ms median (the spawn)",
        median_ms(&mut to_started)
    );
    println!(
        "  started to exit     {:>10.3} ms median (the program's life and its reaping)",
        median_ms(&mut to_exit)
    );
    println!(
        "  daemon's longest turn {:>8.2} ms",
        max_turn_seconds(&admin) * 1e3
    );

    // 2. Streaming throughput.
    let count = format!("{mib}M");
    let started = Instant::now();
    let (code, bytes) = client.run(&["head", "-c", &count, "/dev/zero"]);
    let remote = started.elapsed();
    assert_eq!(code, Some(0));
    assert_eq!(bytes, mib << 20);
    let started = Instant::now();
    let mut child = Command::new("head")
        .args(["-c", &count, "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn head");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 64 * 1024];
    let mut local_bytes = 0u64;
    loop {
        let n = out.read(&mut buf).expect("read pipe");
        if n == 0 {
            break;
        }
        local_bytes += n as u64;
    }
    child.wait().expect("wait head");
    let local = started.elapsed();
    assert_eq!(local_bytes, mib << 20);
    let mibs = |d: Duration| mib as f64 / d.as_secs_f64();
    println!("streaming {mib} MiB of stdout (`head -c {count} /dev/zero`):");
    println!("  through the daemon  {:>10.0} MiB/s", mibs(remote));
    println!("  local pipe          {:>10.0} MiB/s", mibs(local));
    println!("  ratio               {:>10.2}", mibs(remote) / mibs(local));

    drop(client);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The median of `samples`, in milliseconds.
fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// A blocking exec client: just enough of PROTOCOL.md §5 for the benchmark.
struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: BytesMut,
}

impl Client {
    fn connect(addr: &str, key: &auth::Key) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to exec");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = Client {
            stream,
            decoder: FrameDecoder::default(),
            buf: BytesMut::with_capacity(256 * 1024),
        };
        let hello = c.header();
        let challenge = handshake::parse_hello(&hello).expect("hello");
        let mut out = BytesMut::new();
        handshake::encode_auth(key, &challenge, &mut out);
        c.stream.write_all(&out).expect("send auth");
        assert_eq!(frame::frame_type(&c.header()), "ok", "authentication");
        c
    }

    /// Runs `argv`; returns the exit code and the stdout bytes received.
    fn run(&mut self, argv: &[&str]) -> (Option<i64>, u64) {
        let (code, stdout, _) = self.run_timed(argv);
        (code, stdout)
    }

    /// [`Client::run`], and how long the `started` frame took to come.
    fn run_timed(&mut self, argv: &[&str]) -> (Option<i64>, u64, Duration) {
        let mut out = BytesMut::new();
        frame::encode(&json!({"type": "run", "argv": argv}), &mut out).expect("encode run");
        let sent = Instant::now();
        self.stream.write_all(&out).expect("send run");
        let started = self.header();
        let started_after = sent.elapsed();
        assert_eq!(frame::frame_type(&started), "started", "{started:?}");
        let mut stdout = 0u64;
        loop {
            let h = self.header();
            match frame::frame_type(&h) {
                "stdout" | "stderr" => {
                    let size = h["size"].as_u64().expect("size");
                    self.decoder.expect_payload(size);
                    if frame::frame_type(&h) == "stdout" {
                        stdout += size;
                    }
                    self.skip_payload();
                }
                "exit" => return (h["code"].as_i64(), stdout, started_after),
                other => panic!("unexpected frame {other}: {h:?}"),
            }
        }
    }

    fn next(&mut self) -> Item {
        loop {
            if let Some(item) = self.decoder.decode(&mut self.buf).expect("valid frames") {
                return item;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "daemon closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn header(&mut self) -> Header {
        match self.next() {
            Item::Header(h) => h,
            Item::Payload { .. } => panic!("payload where a header was expected"),
        }
    }

    fn skip_payload(&mut self) {
        loop {
            match self.next() {
                Item::Payload { last: true, .. } => return,
                Item::Payload { .. } => {}
                Item::Header(h) => panic!("header inside a payload: {h:?}"),
            }
        }
    }
}

fn start_daemon(dir: &Path) -> std::process::Child {
    let socketlab: PathBuf = match std::env::var_os("SOCKETLAB") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .expect("current exe")
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("socketlab"))
            .expect("target dir"),
    };
    Command::new(&socketlab)
        .args(["serve", "--port-base", "0", "--log-level", "warn"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--ready-file")
        .arg(dir.join("ready.json"))
        .args(
            std::env::var("SOCKETLAB_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (run cargo build --release first)",
                socketlab.display()
            )
        })
}

/// The exec and admin addresses from the ready file.
fn wait_for_addrs(ready: &Path) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(ready) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("ready JSON");
            let addr = |service: &str| {
                v[service]["tcp"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{service} address"))
                    .to_string()
            };
            return (addr("exec"), addr("admin"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the daemon did not become ready");
}

/// `loop.max_turn_seconds` from the daemon's `GET /stats`.
fn max_turn_seconds(admin: &str) -> f64 {
    let mut s = TcpStream::connect(admin).expect("connect to admin");
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("send request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    let (_, body) = response.split_once("\r\n\r\n").expect("head and body");
    let v: serde_json::Value = serde_json::from_str(body).expect("stats JSON");
    v["loop"]["max_turn_seconds"]
        .as_f64()
        .expect("max_turn_seconds")
}
