//! The traffic of `bench mixed`: one plain blocking loop per activity, each
//! on its own thread, each doing whole client lives (connect, talk, leave)
//! over and over until the run ends.
//!
//! Blocking sockets with timeouts, not a poll loop: a soak is about the
//! daemon's steadiness over time, not the generator's speed, and a client's
//! life written top to bottom is easier to check by reading. Every read and
//! write has [`IO_TIMEOUT`], so no activity can hang, and each checks what
//! comes back: a wrong byte, a missing line, a refused connection is a
//! [`Failure`]. The ways a life ends vary on purpose: a clean close, a
//! half-close, an RST (`SO_LINGER` 0) with data in flight, a `/quit`, a
//! client that vanishes while its program runs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::challenge::{self, Challenge};
use crate::auth::key::Key;
use crate::loadgen::report::Failure;

/// The longest any single read, write or connect may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many failures are kept; the count goes on.
const MAX_KEPT_FAILURES: usize = 100;

/// Where each service is, and the exec key.
#[derive(Debug, Clone)]
pub struct Targets {
    pub echo: SocketAddr,
    pub echo_udp: SocketAddr,
    pub discard: SocketAddr,
    pub chargen: SocketAddr,
    pub daytime: SocketAddr,
    pub daytime_udp: SocketAddr,
    pub chat: SocketAddr,
    pub exec: SocketAddr,
    pub key: Key,
}

/// What every activity counts, shared by all threads.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections opened (TCP).
    pub connects: AtomicU64,
    /// Echo messages sent and verified.
    pub echoed: AtomicU64,
    /// Connections ended with an RST on purpose.
    pub resets: AtomicU64,
    /// Slow-reader rounds completed (the daemon held output back).
    pub slow_reads: AtomicU64,
    /// Chat lines delivered and verified, per receiving member.
    pub chat_lines: AtomicU64,
    /// Programs run to their exit frame, and abandoned while running.
    pub exec_runs: AtomicU64,
    pub exec_abandoned: AtomicU64,
    /// Wrong-mac logins refused (failed or throttled).
    pub logins_refused: AtomicU64,
    /// UDP replies verified, and datagrams with no reply in time.
    pub udp_replies: AtomicU64,
    pub udp_lost: AtomicU64,
    /// discard, chargen and daytime lives completed.
    pub classic: AtomicU64,
    failures_total: AtomicU64,
    failures: Mutex<Vec<Failure>>,
}

/// The tally's counters as one JSON object at the end of a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TallySnapshot {
    pub connects: u64,
    pub echoed: u64,
    pub resets: u64,
    pub slow_reads: u64,
    pub chat_lines: u64,
    pub exec_runs: u64,
    pub exec_abandoned: u64,
    pub logins_refused: u64,
    pub udp_replies: u64,
    pub udp_lost: u64,
    pub classic: u64,
}

impl Tally {
    pub fn snapshot(&self) -> TallySnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TallySnapshot {
            connects: get(&self.connects),
            echoed: get(&self.echoed),
            resets: get(&self.resets),
            slow_reads: get(&self.slow_reads),
            chat_lines: get(&self.chat_lines),
            exec_runs: get(&self.exec_runs),
            exec_abandoned: get(&self.exec_abandoned),
            logins_refused: get(&self.logins_refused),
            udp_replies: get(&self.udp_replies),
            udp_lost: get(&self.udp_lost),
            classic: get(&self.classic),
        }
    }

    /// The failures kept, and how many there were in all.
    pub fn take_failures(&self) -> (Vec<Failure>, u64) {
        let kept = std::mem::take(&mut *self.failures.lock().unwrap());
        (kept, self.failures_total.load(Ordering::Relaxed))
    }

    fn fail(&self, activity: &str, error: String) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.failures.lock().unwrap();
        if kept.len() < MAX_KEPT_FAILURES {
            kept.push(Failure::run(format!("{activity}: {error}")));
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The activities, each run by [`run_lives`] on a thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Activity {
    Echo,
    SlowReader,
    Chat,
    Exec,
    BadLogin,
    Udp,
    Classic,
}

impl Activity {
    pub const ALL: [Activity; 7] = [
        Activity::Echo,
        Activity::SlowReader,
        Activity::Chat,
        Activity::Exec,
        Activity::BadLogin,
        Activity::Udp,
        Activity::Classic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Activity::Echo => "echo",
            Activity::SlowReader => "slow reader",
            Activity::Chat => "chat",
            Activity::Exec => "exec",
            Activity::BadLogin => "bad login",
            Activity::Udp => "udp",
            Activity::Classic => "discard/chargen/daytime",
        }
    }
}

/// Runs at most `lives` of one activity's lives, until `until` or `stop`,
/// recording failures.
pub fn run_lives(
    activity: Activity,
    targets: &Targets,
    tally: &Tally,
    lives: u64,
    until: Instant,
    stop: &AtomicBool,
    seed: u64,
) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut round = 0u64;
    while round < lives && Instant::now() < until && !stop.load(Ordering::Relaxed) {
        round += 1;
        let result = match activity {
            Activity::Echo => echo_life(targets, tally, &mut rng),
            Activity::SlowReader => slow_reader_life(targets, tally),
            Activity::Chat => chat_life(targets, tally, seed, round),
            Activity::Exec => exec_life(targets, tally, round),
            Activity::BadLogin => bad_login_life(targets, tally),
            Activity::Udp => udp_life(targets, tally, &mut rng),
            Activity::Classic => classic_life(targets, tally, round),
        };
        if let Err(e) = result {
            tally.fail(activity.name(), e);
        }
    }
}

type Life = Result<(), String>;

/// Echo: a few messages of random sizes, each checked, then one of three
/// ends: a half-close (the daemon must send what is pending, then close),
/// a plain close, or an RST with unread data both ways.
fn echo_life(t: &Targets, tally: &Tally, rng: &mut Rng) -> Life {
    let mut s = connect(t.echo, tally)?;
    let messages = 1 + rng.below(20);
    for m in 0..messages {
        let size = 1 + rng.below(16 * 1024) as usize;
        let msg = pattern(size, m + rng.below(256));
        s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
        let mut back = vec![0; size];
        s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
        if back != msg {
            return Err(format!("message {m} of {size} bytes came back changed"));
        }
        Tally::add(&tally.echoed, 1);
    }
    match rng.below(3) {
        0 => {
            s.shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)
                .map_err(|e| format!("read to EOF: {e}"))?;
            if !rest.is_empty() {
                return Err(format!("{} unexpected bytes after half-close", rest.len()));
            }
        }
        1 => drop(s),
        _ => {
            s.write_all(&pattern(8192, 7))
                .map_err(|e| format!("write: {e}"))?;
            reset(s, tally);
        }
    }
    Ok(())
}

/// A reader slower than the daemon's output limit: 1 MiB is written at
/// once and read back 4 KiB at a time with pauses, so the daemon must stop
/// reading this connection until its output drains, and lose nothing.
fn slow_reader_life(t: &Targets, tally: &Tally) -> Life {
    const TOTAL: usize = 1 << 20;
    let s = connect(t.echo, tally)?;
    let data = pattern(TOTAL, 3);
    let mut writer = s.try_clone().map_err(|e| format!("clone: {e}"))?;
    std::thread::scope(|scope| {
        let sending = scope.spawn(|| writer.write_all(&data));
        let mut back = Vec::with_capacity(TOTAL);
        let mut buf = [0u8; 4096];
        let mut reader = &s;
        while back.len() < TOTAL {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("read after {} bytes: {e}", back.len())),
            }
            // The pause is the point: it makes this reader slow.
            std::thread::sleep(Duration::from_millis(2));
        }
        sending
            .join()
            .expect("writer thread")
            .map_err(|e| format!("write: {e}"))?;
        if back != data {
            return Err(format!(
                "{} of {TOTAL} bytes came back, or changed",
                back.len()
            ));
        }
        Tally::add(&tally.slow_reads, 1);
        Ok(())
    })
}

/// Chat: three members join a room of their own (created on demand, gone
/// when they leave); the first says 20 numbered lines; the others must
/// hear all of them, in order. Then one leaves with `/quit`, one closes,
/// one resets.
///
/// A room of their own, because in a shared lobby another thread's
/// members' lines and notices come in between, as many as that thread
/// manages to send, and no bound on lines to skip would be safe.
fn chat_life(t: &Targets, tally: &Tally, seed: u64, round: u64) -> Life {
    let room = format!("soak{seed}r{round}");
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut s = connect(t.chat, tally)?;
        let mut reader = BufReader::new(s.try_clone().map_err(|e| format!("clone: {e}"))?);
        let mut welcome = String::new();
        reader
            .read_line(&mut welcome)
            .map_err(|e| format!("welcome: {e}"))?;
        let nick = welcome
            .strip_prefix("* welcome ")
            .and_then(|r| r.split(';').next())
            .ok_or_else(|| format!("not a welcome line: {welcome:?}"))?
            .to_string();
        s.write_all(format!("/join {room}\n").as_bytes())
            .map_err(|e| format!("/join: {e}"))?;
        // The joiner's own notice says the join has taken effect; lobby
        // notices from other threads may come before it.
        let joined = format!("* {nick} joined {room}\n");
        let mut line = String::new();
        let mut seen = false;
        for _ in 0..10_000 {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return Err(format!("{nick} was disconnected before joining")),
                Ok(_) if line == joined => {
                    seen = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{nick} read: {e}")),
            }
        }
        if !seen {
            return Err(format!("{nick} never saw itself join {room}"));
        }
        members.push((s, reader, nick));
    }
    let lines = 20;
    let speaker = members[0].2.clone();
    let mut said = String::new();
    for i in 0..lines {
        said.push_str(&format!("soak {round} line {i}\n"));
    }
    members[0]
        .0
        .write_all(said.as_bytes())
        .map_err(|e| format!("say: {e}"))?;
    let marker = format!(" {speaker}: soak {round} line ");
    // Bounded: only the room's own join notices come between.
    for (_, reader, nick) in members.iter_mut().skip(1) {
        let mut next = 0;
        let mut line = String::new();
        for _ in 0..lines + 10 {
            if next == lines {
                break;
            }
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return Err(format!("{nick} was disconnected")),
                Ok(_) => {}
                Err(e) => return Err(format!("{nick} read: {e}")),
            }
            if let Some((_, n)) = line.split_once(&marker) {
                if n.trim_end() != next.to_string() {
                    return Err(format!(
                        "{nick} heard line {} where {next} was due",
                        n.trim_end()
                    ));
                }
                next += 1;
                Tally::add(&tally.chat_lines, 1);
            }
        }
        if next != lines {
            return Err(format!("{nick} heard {next} of {lines} lines"));
        }
    }
    let mut members = members.into_iter();
    if let Some((mut s, mut reader, _)) = members.next() {
        s.write_all(b"/quit\n").map_err(|e| format!("/quit: {e}"))?;
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        if !rest.contains("* bye") {
            return Err(format!("no `* bye` after /quit: {rest:?}"));
        }
    }
    if let Some((s, ..)) = members.next() {
        drop(s);
    }
    if let Some((s, ..)) = members.next() {
        reset(s, tally);
    }
    Ok(())
}

/// exec: log in with the right key and run `echo soak`, checking its output
/// and exit; every fourth life runs `sleep 30` instead and vanishes while
/// it runs, so the daemon must kill and reap it.
fn exec_life(t: &Targets, tally: &Tally, round: u64) -> Life {
    let mut s = connect(t.exec, tally)?;
    let hello = recv_frame(&mut s)?;
    let challenge = hello["challenge"]
        .as_str()
        .and_then(Challenge::from_hex)
        .ok_or_else(|| format!("not a hello: {hello}"))?;
    let mac = crate::codec::hex::encode(&challenge::mac(&t.key, &challenge));
    send_frame(&mut s, &json!({"type": "auth", "mac": mac}))?;
    let ok = recv_frame(&mut s)?;
    if ok["type"] != "ok" {
        return Err(format!("login refused: {ok}"));
    }
    if round.is_multiple_of(4) {
        send_frame(&mut s, &json!({"type": "run", "argv": ["sleep", "30"]}))?;
        let started = recv_frame(&mut s)?;
        if started["type"] != "started" {
            return Err(format!("sleep not started: {started}"));
        }
        reset(s, tally);
        Tally::add(&tally.exec_abandoned, 1);
        return Ok(());
    }
    send_frame(&mut s, &json!({"type": "run", "argv": ["echo", "soak"]}))?;
    let mut stdout = Vec::new();
    // Bounded: started, a few output frames, exit.
    for _ in 0..16 {
        let frame = recv_frame(&mut s)?;
        match frame["type"].as_str() {
            Some("started") => {}
            Some("stdout") | Some("stderr") => {
                let size = frame["size"].as_u64().unwrap_or(0) as usize;
                let mut bytes = vec![0; size];
                s.read_exact(&mut bytes)
                    .map_err(|e| format!("output: {e}"))?;
                if frame["type"] == "stdout" {
                    stdout.extend_from_slice(&bytes);
                }
            }
            Some("exit") => {
                if frame["code"] != 0 || stdout != b"soak\n" {
                    return Err(format!("echo soak ended {frame}, stdout {stdout:?}"));
                }
                Tally::add(&tally.exec_runs, 1);
                return Ok(());
            }
            _ => return Err(format!("unexpected frame {frame}")),
        }
    }
    Err("no exit frame".into())
}

/// A login with a wrong mac, which must be refused (failed, or throttled
/// once failures pile up) and closed. On loopback it comes from 127.0.0.2,
/// so the throttle it trips does not lock out [`exec_life`] on 127.0.0.1.
fn bad_login_life(t: &Targets, tally: &Tally) -> Life {
    let mut s = connect_from(t.exec, bad_login_source(t.exec), tally)?;
    let hello = recv_frame(&mut s)?;
    if hello["type"] == "hello" {
        send_frame(&mut s, &json!({"type": "auth", "mac": "00".repeat(32)}))?;
        let answer = recv_frame(&mut s)?;
        if answer["type"] != "error" {
            return Err(format!("a wrong mac was answered {answer}"));
        }
    } else if hello["code"] != "throttled" {
        return Err(format!("expected hello or throttled, got {hello}"));
    }
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => {}
        Ok(_) => return Err(format!("{} bytes after the refusal", rest.len())),
        Err(e) => return Err(format!("no close after the refusal: {e}")),
    }
    Tally::add(&tally.logins_refused, 1);
    // Paced: refusals are cheap, and a flood of them is not the point.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// UDP: an echo datagram of random size, checked, and a daytime request;
/// a reply that does not come within a second counts as lost, which is a
/// measurement (UDP may drop), not a failure.
fn udp_life(t: &Targets, tally: &Tally, rng: &mut Rng) -> Life {
    let any: SocketAddr = match t.echo_udp.ip() {
        IpAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        IpAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    let s = UdpSocket::bind(any).map_err(|e| format!("bind: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| format!("timeout: {e}"))?;
    let mut buf = vec![0u8; 65_536];
    for _ in 0..10 {
        let msg = pattern(1 + rng.below(8192) as usize, rng.below(256));
        s.send_to(&msg, t.echo_udp)
            .map_err(|e| format!("send: {e}"))?;
        match s.recv_from(&mut buf) {
            Ok((n, _)) if buf[..n] == msg[..] => Tally::add(&tally.udp_replies, 1),
            Ok((n, _)) => return Err(format!("an echo datagram of {n} bytes came back changed")),
            Err(e) if timed_out(&e) => Tally::add(&tally.udp_lost, 1),
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    s.send_to(b"", t.daytime_udp)
        .map_err(|e| format!("send: {e}"))?;
    match s.recv_from(&mut buf) {
        Ok((19, _)) => Tally::add(&tally.udp_replies, 1),
        Ok((n, _)) => return Err(format!("daytime answered {n} bytes, not 19")),
        Err(e) if timed_out(&e) => Tally::add(&tally.udp_lost, 1),
        Err(e) => return Err(format!("recv: {e}")),
    }
    Ok(())
}

/// The classic three in turn: discard 256 KiB, read 64 KiB of chargen and
/// check its first line, read a daytime line and its close.
fn classic_life(t: &Targets, tally: &Tally, round: u64) -> Life {
    let mut s = connect(t.discard, tally)?;
    s.write_all(&pattern(256 * 1024, 1))
        .map_err(|e| format!("discard write: {e}"))?;
    if round.is_multiple_of(2) {
        reset(s, tally);
    }

    let mut s = connect(t.chargen, tally)?;
    let mut got = vec![0u8; 64 * 1024];
    s.read_exact(&mut got)
        .map_err(|e| format!("chargen read: {e}"))?;
    if !got.starts_with(b"!\"#$%&'()*+,-./0123456789") || got[72..74] != *b"\r\n" {
        return Err("chargen's first line is not RFC 864's".into());
    }
    if round % 2 == 1 {
        reset(s, tally);
    }

    let mut s = connect(t.daytime, tally)?;
    let mut line = Vec::new();
    s.read_to_end(&mut line)
        .map_err(|e| format!("daytime read: {e}"))?;
    if line.len() != 20 || line[19] != b'\n' {
        return Err(format!("daytime sent {:?}", String::from_utf8_lossy(&line)));
    }
    Tally::add(&tally.classic, 1);
    Ok(())
}

fn connect(addr: SocketAddr, tally: &Tally) -> Result<TcpStream, String> {
    connect_from(addr, None, tally)
}

/// Connects with [`IO_TIMEOUT`] on everything, from `source` if given.
fn connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
    tally: &Tally,
) -> Result<TcpStream, String> {
    let s = match source {
        None => TcpStream::connect_timeout(&addr, IO_TIMEOUT),
        Some(ip) => {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )
            .map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket
                .connect_timeout(&addr.into(), IO_TIMEOUT)
                .map(|()| TcpStream::from(socket))
        }
    }
    .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("timeouts: {e}"))?;
    Tally::add(&tally.connects, 1);
    Ok(s)
}

/// 127.0.0.2 when the daemon is on 127.0.0.1 (every 127/8 address is
/// loopback on Linux); otherwise the ordinary source.
fn bad_login_source(target: SocketAddr) -> Option<IpAddr> {
    (target.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST)).then(|| Ipv4Addr::new(127, 0, 0, 2).into())
}

/// Ends a connection with an RST: `SO_LINGER` 0, then close.
fn reset(s: TcpStream, tally: &Tally) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
    Tally::add(&tally.resets, 1);
}

fn send_frame(s: &mut TcpStream, header: &Value) -> Life {
    let json = serde_json::to_vec(header).expect("JSON");
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&json);
    s.write_all(&bytes).map_err(|e| format!("send frame: {e}"))
}

/// Reads one frame header (PROTOCOL.md §5.1) as JSON.
fn recv_frame(s: &mut TcpStream) -> Result<Value, String> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix)
        .map_err(|e| format!("frame length: {e}"))?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > 65_536 {
        return Err(format!("a frame header of {len} bytes"));
    }
    let mut json = vec![0; len];
    s.read_exact(&mut json)
        .map_err(|e| format!("frame header: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("frame JSON: {e}"))
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `len` bytes that differ with `salt`, not periodic in a power of two.
fn pattern(len: usize, salt: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 7 + i as u64 / 251 + salt) as u8)
        .collect()
}

/// xorshift64: enough randomness to vary sizes and endings, seeded per
/// thread so two threads do not march in step.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
