//! Test support for network faults: a two-namespace lab joined by a veth
//! pair, whose link the kernel can impair, and a fault-injecting TCP proxy
//! for what the kernel here cannot do.
//!
//! # The lab
//!
//! [`Lab::new`] makes two network namespaces, `client` and `server`, joined
//! by a veth pair with addresses `10.77.<n>.1` and `10.77.<n>.2`; nothing
//! is added to the test process's own namespace. The daemon runs inside
//! `server` (started through `ip netns exec`), listening on the veth
//! address, with its admin endpoint on the namespace's own loopback so
//! `/stats` stays reachable whatever happens to the link. The test's
//! sockets are made in `client` by a thread that first enters it with
//! `setns(2)`: a socket keeps the namespace it was made in, so the stream
//! can then be used from any thread.
//!
//! The link is impaired with the tools this kernel has: `tc tbf` limits a
//! side's rate, and an nftables rule with `numgen random mod 100 < N`
//! drops a share of the packets (there is no `netem` here). Every rule
//! carries a counter, and the namespaces' TCP retransmission counters are
//! read from `/proc/net/snmp`, so each test can show that the fault really
//! happened rather than trusting that it did.
//!
//! Names are unique per test run (the pid and a counter), and a `Lab`
//! deletes its namespaces when dropped, also when the test panics;
//! namespaces left by a run that was killed are removed by the next one.
//! Without root, without `ip`, `tc` or `nft`, or where `ip netns` fails,
//! [`Lab::new`] prints why and returns `None`, and the test returns early.
//!
//! # The proxy
//!
//! [`Proxy`] listens on 127.0.0.1 and forwards each connection to an
//! upstream address through two std threads, applying a [`Fault`]: a delay
//! before each chunk, writes sliced into 1-byte pieces, a stall after so
//! many bytes, or a reset (RST both ways) after so many bytes, much as
//! Toxiproxy's toxics do. It counts what it did in [`ProxyCounts`].

#![allow(dead_code)]

mod proxy;

pub use proxy::{Fault, Proxy};

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Daemon, PATIENCE};

/// The prefix of every namespace this suite makes: `slf<pid>x<n>c|s`.
const NS_PREFIX: &str = "slf";

static NEXT_LAB: AtomicU64 = AtomicU64::new(1);

/// Two namespaces joined by a veth pair; deleted when dropped.
pub struct Lab {
    /// The namespace the test's sockets are made in.
    pub client_ns: String,
    /// The namespace the daemon runs in.
    pub server_ns: String,
    /// The veth end in `client_ns`, and the one in `server_ns`.
    pub client_if: String,
    pub server_if: String,
    /// `10.77.<n>.1` (client side) and `10.77.<n>.2` (server side).
    pub client_ip: String,
    pub server_ip: String,
}

impl Lab {
    /// Builds the lab, or prints why it cannot and returns `None`.
    pub fn new() -> Option<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: the network-namespace tests need root");
            return None;
        }
        for tool in [["ip", "-V"], ["tc", "-V"], ["nft", "--version"]] {
            if let Err(e) = sh(&tool) {
                eprintln!("skipped: {e} (install iproute2 and nftables: .ci/install-tools)");
                return None;
            }
        }
        remove_stale_namespaces();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{NS_PREFIX}{pid}x{n}");
        let lab = Lab {
            client_ns: format!("{tag}c"),
            server_ns: format!("{tag}s"),
            // Interface names are at most 15 bytes; the pid keeps them
            // unique between runs, the counter within one.
            client_if: format!("vc{}x{n}", pid % 1_000_000),
            server_if: format!("vs{}x{n}", pid % 1_000_000),
            client_ip: format!("10.77.{}.1", n % 250),
            server_ip: format!("10.77.{}.2", n % 250),
        };
        if let Err(e) = lab.build() {
            eprintln!("skipped: cannot build a network namespace lab: {e}");
            return None;
        }
        Some(lab)
    }

    fn build(&self) -> Result<(), String> {
        let (c, s) = (&self.client_ns, &self.server_ns);
        sh(&["ip", "netns", "add", c])?;
        sh(&["ip", "netns", "add", s])?;
        sh(&[
            "ip",
            "link",
            "add",
            &self.client_if,
            "type",
            "veth",
            "peer",
            "name",
            &self.server_if,
        ])?;
        sh(&["ip", "link", "set", &self.client_if, "netns", c])?;
        sh(&["ip", "link", "set", &self.server_if, "netns", s])?;
        let client_cidr = format!("{}/24", self.client_ip);
        let server_cidr = format!("{}/24", self.server_ip);
        sh(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            &client_cidr,
            "dev",
            &self.client_if,
        ])?;
        sh(&[
            "ip",
            "-n",
            s,
            "addr",
            "add",
            &server_cidr,
            "dev",
            &self.server_if,
        ])?;
        for (ns, dev) in [(c, &self.client_if), (s, &self.server_if)] {
            // One segment per packet: a veth passes segmentation-offload
            // packets of up to 64 KiB whole, and a random drop of one of
            // those is a rare, large event rather than ordinary loss.
            sh(&["ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// Starts the daemon inside the server namespace on the veth address,
    /// with its admin endpoint on that namespace's loopback.
    pub fn start_daemon(&self, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let ready_path = dir.path().join("ready.json");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server_ns])
            .arg(env!("CARGO_BIN_EXE_socketlab"))
            .args(["serve", "--port-base", "0", "--bind", &self.server_ip])
            .args(["--listen", "admin=127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"));
        // `ip netns exec` enters the namespace and execs the program, so
        // the child's pid is the daemon's and killing it kills the daemon.
        let mut child = cmd.spawn().expect("spawn ip netns exec socketlab");
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

    /// Connects from the client namespace, with read and write timeouts.
    pub fn connect(&self, addr: SocketAddr) -> TcpStream {
        let s = in_netns(&self.client_ns, move || TcpStream::connect(addr)).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.set_write_timeout(Some(PATIENCE)).unwrap();
        s
    }

    /// One service's `connections_open` from the daemon's `/stats`, asked
    /// over the server namespace's loopback.
    pub fn open_connections(&self, d: &Daemon, service: &str) -> Option<u64> {
        let admin = d.tcp("admin");
        let body = in_netns(&self.server_ns, move || http_get(admin, "/stats")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["services"][service]["connections_open"].as_u64()
    }

    /// Drops `percent` % of the packets at random in both directions, as
    /// each namespace receives them from the veth, counting them.
    ///
    /// The rules sit on the input hooks only. A packet dropped on an
    /// output hook never leaves: the sender's TCP learns of it at once and
    /// sends it again later without counting a retransmission, which is
    /// not what a lossy network does.
    pub fn drop_randomly(&self, percent: u32) {
        self.nft_tables(&format!("numgen random mod 100 < {percent}"));
    }

    /// Drops every packet arriving over the veth: the peer vanishes.
    pub fn drop_everything(&self) {
        self.nft_tables("");
    }

    fn nft_tables(&self, condition: &str) {
        for (ns, iface) in self.sides() {
            let ruleset = format!(
                "table inet faults {{\n\
                   chain input {{ type filter hook input priority 0; policy accept;\n\
                     iifname \"{iface}\" {condition} counter drop\n }}\n\
                 }}\n"
            );
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn nft");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(ruleset.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "nft -f failed:\n{ruleset}");
        }
    }

    /// Packets the nft rules have dropped so far, both namespaces together.
    pub fn dropped_packets(&self) -> u64 {
        self.sides()
            .iter()
            .map(|(ns, _)| {
                let out = output(&[
                    "ip", "netns", "exec", ns, "nft", "list", "table", "inet", "faults",
                ]);
                counters_after(&out, "counter packets ").iter().sum::<u64>()
            })
            .sum()
    }

    /// Each namespace with its veth end.
    fn sides(&self) -> [(&str, &str); 2] {
        [
            (&self.client_ns, &self.client_if),
            (&self.server_ns, &self.server_if),
        ]
    }

    /// Limits each side's sending rate with a token bucket (`tc tbf`).
    pub fn limit_rate(&self, rate: &str) {
        for (ns, dev) in self.sides() {
            sh(&["ip", "-n", ns, "link", "set", dev, "txqueuelen", "1000"]).unwrap();
            sh(&[
                "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst",
                "16kb", "latency", "200ms",
            ])
            .expect("tc qdisc add tbf");
        }
    }

    /// Times either token bucket held a packet back (`overlimits`).
    pub fn rate_limited_packets(&self) -> u64 {
        self.sides()
            .iter()
            .map(|(ns, dev)| {
                let out = output(&["tc", "-n", ns, "-s", "qdisc", "show", "dev", dev]);
                counters_after(&out, "overlimits ").iter().sum::<u64>()
            })
            .sum()
    }

    /// TCP segments retransmitted in both namespaces (`Tcp: RetransSegs`).
    pub fn retransmitted_segments(&self) -> u64 {
        [&self.client_ns, &self.server_ns]
            .iter()
            .map(|ns| {
                let snmp = output(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]);
                snmp_field(&snmp, "Tcp:", "RetransSegs").unwrap_or(0)
            })
            .sum()
    }

    /// Deletes the client's end of the veth (and so the pair): the peer is
    /// gone without a word.
    pub fn cut_the_link(&self) {
        sh(&["ip", "-n", &self.client_ns, "link", "del", &self.client_if]).expect("link del");
    }

    /// Whether the server's veth still exists.
    pub fn link_exists(&self) -> bool {
        sh(&["ip", "-n", &self.server_ns, "link", "show", &self.server_if]).is_ok()
    }

    /// Runs `socketlab ARGS` inside the client namespace and returns its
    /// exit status and stdout.
    pub fn run_client(&self, args: &[&str]) -> (i32, Vec<u8>) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client_ns])
            .arg(env!("CARGO_BIN_EXE_socketlab"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn socketlab client");
        (out.status.code().unwrap_or(-1), out.stdout)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace also deletes the veth end inside it, and
        // with it the pair.
        let _ = sh(&["ip", "netns", "del", &self.client_ns]);
        let _ = sh(&["ip", "netns", "del", &self.server_ns]);
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns`, and
/// returns what it returns. Sockets made by `f` stay in `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        // SAFETY: setns on a valid namespace descriptor; it changes only
        // this thread's network namespace, and the thread ends after `f`.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// A tiny `GET` over HTTP/1.1 with `Connection: close`; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body.to_string())
}

/// A deterministic test pattern of `len` bytes, not periodic in any small
/// power of two, so a dropped, repeated or reordered piece shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Writes `data` on one thread while reading as many bytes back on this
/// one, and returns what came back (a short read ends it early).
pub fn echo_through(s: &TcpStream, data: &[u8]) -> Vec<u8> {
    let mut writer = s.try_clone().expect("clone stream");
    let out = data.to_vec();
    let sending = std::thread::spawn(move || {
        for chunk in out.chunks(16 * 1024) {
            writer.write_all(chunk)?;
        }
        Ok::<(), io::Error>(())
    });
    let mut back = Vec::with_capacity(data.len());
    let mut buf = [0u8; 16 * 1024];
    let mut reader = s;
    while back.len() < data.len() {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(e) => panic!("echo read after {} bytes: {e}", back.len()),
        }
    }
    sending.join().unwrap().expect("echo write");
    back
}

/// Runs a command, turning a failure into its stderr.
fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command and returns its stdout (empty when it fails).
fn output(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Every number that follows `label` in `text`.
fn counters_after(text: &str, label: &str) -> Vec<u64> {
    text.match_indices(label)
        .filter_map(|(i, _)| {
            let rest = &text[i + label.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// A field of `/proc/net/snmp`, whose sections come as a header line of
/// names and a line of values, both starting with `section`.
fn snmp_field(snmp: &str, section: &str, name: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with(section));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Deletes namespaces left by earlier runs whose process is gone (a run
/// killed before its guards could clean up).
fn remove_stale_namespaces() {
    for line in output(&["ip", "netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('x').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sh(&["ip", "netns", "del", name]);
        }
    }
}
