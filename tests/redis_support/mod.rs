//! Test support: a Redis server of the test's own, on a Unix socket in a
//! temporary directory (or a free loopback port), with persistence off,
//! killed when dropped. Needs `redis-server` (`.ci/install-tools`
//! installs it); [`Redis::start`] returns `None`, after saying why, when
//! it is not installed at all.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;

/// Where a test's Redis listens.
#[derive(Debug, Clone)]
pub enum Place {
    /// A Unix socket: the same path again after a restart, and no port to
    /// race for.
    Unix(PathBuf),
    /// A loopback TCP port, for the `redis://` form of `chat.cluster`.
    Tcp(u16),
}

/// A running `redis-server`.
pub struct Redis {
    child: Option<Child>,
    pub place: Place,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts Redis on a Unix socket; `None` when redis-server is absent.
    pub fn start() -> Option<Redis> {
        let dir = tempfile::tempdir().expect("temp dir");
        let place = Place::Unix(dir.path().join("redis.sock"));
        Redis::start_at(place, dir)
    }

    /// Starts Redis on a free loopback port; `None` when it is absent.
    pub fn start_tcp() -> Option<Redis> {
        // The port is free when asked; another process could take it
        // before Redis binds it, which would fail the start loudly.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Redis::start_at(Place::Tcp(port), tempfile::tempdir().expect("temp dir"))
    }

    fn start_at(place: Place, dir: tempfile::TempDir) -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("SKIPPED: redis-server is not installed (run .ci/install-tools)");
            return None;
        }
        let mut redis = Redis {
            child: None,
            place,
            dir,
        };
        redis.spawn();
        Some(redis)
    }

    /// The value of `chat.cluster` that reaches this Redis.
    pub fn address(&self) -> String {
        match &self.place {
            Place::Unix(path) => format!("unix:{}", path.display()),
            Place::Tcp(port) => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// A client connection, for commands a test sends itself.
    pub fn client(&self) -> redis::Connection {
        let url = match &self.place {
            Place::Unix(path) => format!("unix://{}", path.display()),
            Place::Tcp(port) => format!("redis://127.0.0.1:{port}"),
        };
        let client = redis::Client::open(url).expect("redis url");
        client
            .get_connection_with_timeout(PATIENCE)
            .expect("connect to the test's redis")
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Place::Unix(path) = &self.place {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts the server again at the same place (with no data: it never
    /// saves).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--bind")
            .arg("127.0.0.1");
        match &self.place {
            Place::Unix(path) => {
                cmd.arg("--port").arg("0").arg("--unixsocket").arg(path);
            }
            Place::Tcp(port) => {
                cmd.arg("--port").arg(port.to_string());
            }
        }
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        cmd.stdin(Stdio::null()).stdout(log).stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let up = match &self.place {
                Place::Unix(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
                Place::Tcp(port) => std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
            };
            if up {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                let log = std::fs::read_to_string(self.dir.path().join("redis.log"));
                panic!(
                    "redis-server exited ({status}): {}",
                    log.unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "redis-server not up in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
