//! What the client tests share: running the `socketlab` binary with a
//! bounded wait, waiting for a condition with a deadline, and small
//! in-test servers that stand in for the daemon's services, so that each
//! client is tested against exactly the behaviour the test needs (replies
//! split into pieces, silence, corruption) without a daemon.
//!
//! Each test crate uses part of this module, so unused items are allowed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single test step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(20);

/// What a finished client printed, and how it exited.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `socketlab ARGS` with `stdin` as its input (not a terminal), and
/// waits for it to exit, at most [`STEP`].
pub fn run_client(args: &[&str], stdin: &[u8]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_socketlab"));
    command.args(args);
    run_command(command, args, stdin)
}

/// Runs `command` (`socketlab ARGS`, set up by the caller: its directory,
/// its environment) with `stdin` as its input, and waits for it to exit,
/// at most [`STEP`].
pub fn run_command(mut command: Command, args: &[&str], stdin: &[u8]) -> Finished {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the socketlab binary starts");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Written from a thread, so that a client that does not read its input
    // cannot block the test; a client that exits early makes this fail,
    // which is fine.
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "socketlab {args:?} did not exit within {STEP:?}; stderr: {}",
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    feeder.join().unwrap();
    Finished {
        status,
        stdout: String::from_utf8(stdout.join().unwrap()).expect("UTF-8 stdout"),
        stderr: String::from_utf8(stderr.join().unwrap()).expect("UTF-8 stderr"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Polls `condition` until it holds, failing the test after [`STEP`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// An address on which nothing listens: bound, then released.
pub fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A fresh path for a Unix socket or other scratch file.
pub fn scratch_path(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("socketlab-{}-{n}-{name}", std::process::id()))
}

// ---------------------------------------------------------------------------
// Stream servers.
// ---------------------------------------------------------------------------

/// How a stand-in TCP server answers what it reads.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Echoes every byte, each read sent back in three pieces (its first
    /// byte, then two halves of the rest), so that replies reach the client
    /// split over several reads.
    DribblingEcho,
    /// Echoes with `a`-`z` turned into `A`-`Z`.
    UpperEcho,
    /// Reads and never answers.
    Silent,
}

/// Serves `behaviour` on a loopback TCP port, one thread per connection.
pub fn tcp_server(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            stream.set_nodelay(true).unwrap();
            thread::spawn(move || serve(stream, behaviour));
        }
    });
    addr
}

/// Serves `behaviour` on a Unix socket at `path`.
pub fn unix_server(path: &std::path::Path, behaviour: Behaviour) {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || serve(stream, behaviour));
        }
    });
}

fn serve(mut stream: impl Read + Write, behaviour: Behaviour) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let reply = &mut buf[..n];
        let sent = match behaviour {
            Behaviour::Silent => continue,
            Behaviour::UpperEcho => {
                reply.make_ascii_uppercase();
                stream.write_all(reply)
            }
            Behaviour::DribblingEcho => {
                let (first, rest) = reply.split_at(1);
                let (second, third) = rest.split_at(rest.len() / 2);
                [first, second, third]
                    .iter()
                    .filter(|piece| !piece.is_empty())
                    .try_for_each(|piece| stream.write_all(piece).and_then(|()| stream.flush()))
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A TCP server that sends `reply` in two pieces to each connection and
/// closes it, as the daytime service does.
pub fn tcp_sender(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream.set_nodelay(true).unwrap();
            let (first, second) = reply.split_at(reply.len() / 2);
            let _ = stream.write_all(first);
            let _ = stream.flush();
            let _ = stream.write_all(second);
        }
    });
    addr
}

// ---------------------------------------------------------------------------
// UDP servers.
// ---------------------------------------------------------------------------

/// A UDP server that answers each datagram with `answer(datagram)`, or not
/// at all when it returns `None`.
pub fn udp_server(
    answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            log.lock().unwrap().push(buf[..n].to_vec());
            if let Some(reply) = answer(&buf[..n]) {
                let _ = socket.send_to(&reply, peer);
            }
        }
    });
    (addr, received)
}

// ---------------------------------------------------------------------------
// A minimal chat service: the line shapes of PROTOCOL.md §4, one member
// per connection, every member in a room of its own.
// ---------------------------------------------------------------------------

/// How the chat stub answers `/quit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnQuit {
    /// `* bye`, then close, as the daemon does.
    ByeAndClose,
    /// Ignore it and keep the connection open.
    Ignore,
}

/// The stand-in chat service and what it has seen.
pub struct ChatStub {
    pub addr: SocketAddr,
    /// Every line received, from every connection, in order.
    received: Arc<Mutex<Vec<String>>>,
    /// A handle on each accepted connection, to push lines or close it.
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

/// The nick the stub refuses as in use, as the daemon refuses a taken one.
pub const TAKEN_NICK: &str = "taken";

/// The timestamp the stub puts on every said line.
pub const STUB_TS: &str = "<2026-01-01 00:00:00>";

impl ChatStub {
    pub fn start(on_quit: OnQuit) -> ChatStub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (log, handles) = (Arc::clone(&received), Arc::clone(&connections));
        thread::spawn(move || {
            for (k, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                handles.lock().unwrap().push(stream.try_clone().unwrap());
                let log = Arc::clone(&log);
                thread::spawn(move || chat_member(stream, k + 1, on_quit, &log));
            }
        });
        ChatStub {
            addr,
            received,
            connections,
        }
    }

    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until the stub has received `line`.
    pub fn wait_for_line(&self, line: &str) {
        wait_until(&format!("the chat stub to receive {line:?}"), || {
            self.received().iter().any(|l| l == line)
        });
    }

    /// Sends `line` to the first connection, as if another member spoke.
    pub fn push(&self, line: &str) {
        let mut connections = self.connections.lock().unwrap();
        connections[0]
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// Closes the first connection, as a daemon shutting down would.
    pub fn drop_first(&self) {
        let connections = self.connections.lock().unwrap();
        connections[0].shutdown(Shutdown::Both).unwrap();
    }
}

fn chat_member(stream: TcpStream, k: usize, on_quit: OnQuit, log: &Mutex<Vec<String>>) {
    let mut out = stream.try_clone().unwrap();
    let mut nick = format!("guest{k}");
    let mut send = |line: String| out.write_all(format!("{line}\n").as_bytes());
    if send(format!(
        "* welcome {nick}; room lobby; 1 online; /help for commands"
    ))
    .is_err()
    {
        return;
    }
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        log.lock().unwrap().push(line.clone());
        let reply = if line.strip_prefix("/nick ") == Some(TAKEN_NICK) {
            "! error: nick in use".to_string()
        } else if let Some(new) = line.strip_prefix("/nick ") {
            let reply = format!("* {nick} is now {new}");
            nick = new.to_string();
            reply
        } else if let Some(room) = line.strip_prefix("/join ") {
            format!("* {nick} joined {room}")
        } else if line == "/quit" || line == "quit" {
            if on_quit == OnQuit::Ignore {
                continue;
            }
            let _ = send("* bye".to_string());
            break;
        } else if line.is_empty() {
            continue;
        } else {
            format!("{STUB_TS} {nick}: {line}")
        };
        if send(reply).is_err() {
            return;
        }
    }
    // The test keeps a handle on the connection, so dropping ours would
    // not close it: shut it down explicitly, which sends the FIN.
    let _ = out.shutdown(Shutdown::Write);
}
