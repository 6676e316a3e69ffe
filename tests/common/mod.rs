//! Test support: start the real daemon binary and talk to it over sockets.
//!
//! Every test gets its own daemon on ephemeral ports (`--port-base 0`) with
//! its own data directory, and learns the addresses from the ready file,
//! which the daemon writes atomically once everything is bound. Nothing
//! sleeps to synchronise: [`wait_until`] polls a condition with a deadline.

#![allow(dead_code)]

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `SOCKETLAB_TEST_REACTORS=N` runs every daemon a test starts with N
/// reactors (unless the test chooses its own), so a whole suite can be run
/// again on several loops: `SOCKETLAB_TEST_REACTORS=2 cargo test --test echo`.
fn reactors_from_env(args: &[&str]) -> Vec<String> {
    match std::env::var("SOCKETLAB_TEST_REACTORS") {
        Ok(n) if !args.contains(&"--reactors") => vec!["--reactors".into(), n],
        _ => Vec::new(),
    }
}

/// A running daemon, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub ready: serde_json::Value,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `socketlab serve --port-base 0` with a fresh data dir and
    /// ready file, plus `args`, and waits until it is ready.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with(args, |_| {})
    }

    /// Starts the daemon as [`Daemon::start`] does, with at most `limit`
    /// open descriptors (`RLIMIT_NOFILE`, set in the child before `exec`).
    pub fn start_with_descriptor_limit(args: &[&str], limit: u64) -> Daemon {
        use std::os::unix::process::CommandExt;
        Daemon::start_with(args, |c| {
            // SAFETY: setrlimit is async-signal-safe, and nothing else runs
            // in the child between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// Like [`Daemon::start`], letting the caller adjust the command first
    /// (an rlimit, environment variables).
    pub fn start_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let ready_path = dir.path().join("ready.json");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_socketlab"));
        cmd.arg("serve")
            .arg("--port-base")
            .arg("0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready_path)
            .args(reactors_from_env(args))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"));
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn socketlab");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                let ready = serde_json::from_str(&text).expect("ready file is JSON");
                return Daemon { child, ready, dir };
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
                panic!("daemon exited before it was ready ({status}):\n{err}");
            }
            assert!(Instant::now() < deadline, "daemon not ready in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address of a service's TCP (or Unix, as `unix:/path`) listener.
    pub fn addr_str(&self, service: &str, transport: &str) -> String {
        self.ready[service][transport]
            .as_str()
            .unwrap_or_else(|| panic!("{service} has no {transport} listener: {}", self.ready))
            .to_string()
    }

    pub fn tcp(&self, service: &str) -> SocketAddr {
        self.addr_str(service, "tcp").parse().expect("tcp address")
    }

    pub fn udp(&self, service: &str) -> SocketAddr {
        self.addr_str(service, "udp").parse().expect("udp address")
    }

    /// Connects to a service, with read and write timeouts so no test can
    /// hang on a socket.
    pub fn connect(&self, service: &str) -> TcpStream {
        let s = TcpStream::connect(self.tcp(service)).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.set_write_timeout(Some(PATIENCE)).unwrap();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the daemon to exit, at most [`PATIENCE`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's resident memory in bytes (VmRSS).
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, from /proc.
pub fn rss_of(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Polls `cond` until it holds or `PATIENCE` passes; returns whether it held.
pub fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Reads exactly `n` bytes (bounded by the socket's read timeout).
pub fn read_exact_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until EOF (bounded by the socket's read timeout).
pub fn read_to_end(s: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads one `\n`-terminated line, byte by byte (tests only).
pub fn read_line(s: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) => panic!("read_line: {e} (got {:?})", String::from_utf8_lossy(&line)),
        }
    }
    String::from_utf8(line).expect("utf-8 line")
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
