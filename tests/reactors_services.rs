//! exec, files and admin with two reactors (`--reactors 2`, PROTOCOL.md
//! §8): each is served by both, and what must be the daemon's stays the
//! daemon's. `exec.max_running`, the handshake throttle and a files
//! quota count over both reactors, an interrupted upload resumes from a
//! connection on the other reactor, `/stats` on either reactor gives the
//! daemon's totals, and SIGTERM stops the programs of both.
//!
//! Which reactor a connection landed on is learnt from `/stats`
//! (`reactors[i].services.<service>.connections_total`), one connection
//! at a time, so a test can pick connections on each reactor instead of
//! hoping the kernel's hash spread them.
//! Run: `cargo test --test reactors_services`.

mod common;
mod exec_support;
mod files_support;

use std::io::Write;
use std::net::TcpStream;

use common::{Daemon, read_to_end, wait_until};
use serde_json::{Value, json};

fn two_reactors(extra: &[&str]) -> Daemon {
    let mut args = vec!["--reactors", "2"];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

/// `GET /stats` on a fresh admin connection, the body parsed as JSON.
fn stats(d: &Daemon) -> Value {
    let mut s = d.connect("admin");
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = String::from_utf8(read_to_end(&mut s).unwrap()).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).expect("JSON")
}

/// A service's connections so far on each reactor, as `/stats` reports
/// them (other reactors' figures as of their latest turn).
fn totals_per_reactor(d: &Daemon, service: &str) -> Vec<u64> {
    stats(d)["reactors"]
        .as_array()
        .expect("a reactors array")
        .iter()
        .map(|r| {
            r["services"][service]["connections_total"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Connections to one service, each tagged with the reactor it landed on.
struct Tracker<'a> {
    d: &'a Daemon,
    service: &'static str,
    /// The service's connections per reactor as last seen.
    seen: Vec<u64>,
}

impl<'a> Tracker<'a> {
    fn new(d: &'a Daemon, service: &'static str) -> Tracker<'a> {
        let seen = totals_per_reactor(d, service);
        assert_eq!(seen.len(), 2, "two reactors");
        Tracker { d, service, seen }
    }

    /// Connects with `open` and returns the connection and the index of
    /// the reactor whose count went up by it.
    fn open(&mut self, open: impl FnOnce(&Daemon) -> TcpStream) -> (TcpStream, usize) {
        let s = open(self.d);
        let want: u64 = self.seen.iter().sum::<u64>() + 1;
        let mut now = Vec::new();
        assert!(
            wait_until(|| {
                now = totals_per_reactor(self.d, self.service);
                now.iter().sum::<u64>() == want
            }),
            "{} connections per reactor: {now:?}, expected {want} in all",
            self.service
        );
        let reactor = (0..now.len())
            .find(|&i| now[i] > self.seen[i])
            .expect("one reactor counted it");
        self.seen = now;
        (s, reactor)
    }

    /// Opens connections until it holds `per_reactor` on each of the two
    /// reactors (the rest are dropped); at most 64 tries.
    fn on_each(
        &mut self,
        per_reactor: usize,
        mut open: impl FnMut(&Daemon) -> TcpStream,
    ) -> [Vec<TcpStream>; 2] {
        let mut held: [Vec<TcpStream>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..64 {
            if held.iter().all(|h| h.len() >= per_reactor) {
                return held;
            }
            let (s, reactor) = self.open(&mut open);
            if held[reactor].len() < per_reactor {
                held[reactor].push(s);
            }
        }
        panic!("64 connections did not give {per_reactor} on each reactor");
    }
}

// ----- Every reactor serves exec, files and admin ----------------------------

#[test]
fn exec_files_and_admin_connections_land_on_both_reactors() {
    let d = two_reactors(&[]);
    let _exec: Vec<TcpStream> = (0..24).map(|_| exec_support::login(&d)).collect();
    let _files: Vec<TcpStream> = (0..24).map(|_| files_support::hello(&d)).collect();
    // Every `stats` call is an admin connection of its own.
    let settled = || {
        let v = stats(&d);
        let reactors = v["reactors"].as_array().unwrap().clone();
        let on_both = |service: &str| {
            reactors
                .iter()
                .all(|r| r["services"][service]["connections_total"].as_u64() > Some(0))
        };
        v["services"]["exec"]["connections_total"] == 24
            && v["services"]["files"]["connections_total"] == 24
            && on_both("exec")
            && on_both("files")
            && on_both("admin")
    };
    // 24 connections from 24 source ports all hashed to one reactor: a
    // chance of 2^-23 per service. Admin connections keep coming, one
    // per try, until one lands on each reactor.
    assert!(wait_until(settled), "{}", stats(&d));
}

#[test]
fn stats_on_either_reactor_give_the_daemons_totals() {
    let d = two_reactors(&[]);
    let mut tracker = Tracker::new(&d, "exec");
    let held = tracker.on_each(2, exec_support::login);
    let open: usize = held.iter().map(Vec::len).sum();
    // The tracker let go of connections that landed on a reactor it had
    // enough on; wait until their closes are in every reactor's figures.
    assert!(
        wait_until(|| stats(&d)["services"]["exec"]["connections_open"] == open),
        "{}",
        stats(&d)
    );
    // Admin connections land on both reactors; every answer gives the
    // daemon's exec figures, whichever reactor wrote it. The reactor that
    // answers counts the asking connection in its own live figures, so
    // it is the one reporting an admin connection open (when the other's
    // published figures still show the previous asker, the answer is not
    // told apart, only checked).
    let mut answered_by = [false; 2];
    for _ in 0..64 {
        let v = stats(&d);
        assert_eq!(v["services"]["exec"]["connections_open"], open, "{v}");
        let reactors = v["reactors"].as_array().unwrap();
        let exec_open: u64 = reactors
            .iter()
            .map(|r| r["services"]["exec"]["connections_open"].as_u64().unwrap())
            .sum();
        assert_eq!(exec_open, open as u64, "{v}");
        let asking: Vec<usize> = (0..reactors.len())
            .filter(|&i| reactors[i]["services"]["admin"]["connections_open"] == 1)
            .collect();
        if let [reactor] = asking[..] {
            answered_by[reactor] = true;
        }
        if answered_by.iter().all(|&a| a) {
            return;
        }
    }
    panic!("64 admin connections all landed on one reactor");
}

// ----- exec ------------------------------------------------------------------

#[test]
fn max_running_counts_programs_on_both_reactors() {
    let d = two_reactors(&["--set", "exec.max_running=3"]);
    let mut tracker = Tracker::new(&d, "exec");
    let [mut first, mut second] = tracker.on_each(3, exec_support::login);
    let sleep = || exec_support::argv(&["sleep", "30"]);
    // Two programs on the first reactor and one on the second: the
    // daemon's three.
    let mut pids = [
        exec_support::start(&mut first[0], sleep()),
        exec_support::start(&mut first[1], sleep()),
        exec_support::start(&mut second[0], sleep()),
    ];
    // Either reactor now refuses, though neither runs three itself.
    for s in [&mut second[1], &mut first[2]] {
        exec_support::send(s, &sleep());
        let e = exec_support::expect_error(s);
        assert_eq!(e["code"], "busy", "{e}");
        assert!(e["error"].as_str().unwrap().contains("limit is 3"), "{e}");
    }
    // A program ending on the first reactor makes room on the second.
    exec_support::send(&mut first[0], &json!({"type": "signal", "signal": "KILL"}));
    let out = exec_support::collect(&mut first[0]);
    assert_eq!(out.exit["signal"], "KILL");
    assert!(wait_until(|| exec_support::is_gone(pids[0])));
    pids[0] = exec_support::start(&mut second[1], sleep());
    exec_support::send(&mut second[2], &sleep());
    assert_eq!(exec_support::expect_error(&mut second[2])["code"], "busy");
    assert!(pids.iter().all(|&p| !exec_support::is_gone(p)));
}

#[test]
fn sigterm_stops_and_reaps_the_programs_of_both_reactors_and_exits_zero() {
    let mut d = two_reactors(&[]);
    let mut tracker = Tracker::new(&d, "exec");
    let mut held = tracker.on_each(2, exec_support::login);
    let pids: Vec<u32> = held
        .iter_mut()
        .flatten()
        .map(|s| exec_support::start(s, exec_support::argv(&["sleep", "30"])))
        .collect();
    assert!(pids.iter().all(|&p| !exec_support::is_gone(p)));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait().code(), Some(0), "{}", d.stderr());
    // Each reactor stopped its own programs and waited for its reaper
    // before the daemon exited: none is still running.
    for pid in pids {
        assert!(exec_support::is_gone(pid), "pid {pid} outlived the daemon");
    }
    let log = d.stderr();
    for i in 0..2 {
        assert!(log.contains(&format!("stopped (reactor {i})")), "{log}");
    }
}

// ----- The throttle ----------------------------------------------------------

#[test]
fn failures_on_both_reactors_add_up_to_one_lockout() {
    // Four failures lock; two happen on each reactor, so neither reactor
    // alone saw enough.
    let d = two_reactors(&["--set", "auth.max_failures=4"]);
    let mut tracker = Tracker::new(&d, "exec");
    let held = tracker.on_each(2, |d| d.connect("exec"));
    for mut s in held.into_iter().flatten() {
        let hello = exec_support::recv(&mut s);
        assert_eq!(hello["type"], "hello", "{hello}");
        exec_support::send(&mut s, &json!({"type": "auth", "mac": "00".repeat(32)}));
        let e = exec_support::expect_error(&mut s);
        assert_eq!(e["error"], "authentication failed", "{e}");
    }
    // The address is locked on both reactors, for exec and files alike.
    let mut tracker = Tracker::new(&d, "exec");
    let held = tracker.on_each(1, |d| d.connect("exec"));
    for mut s in held.into_iter().flatten() {
        let e = exec_support::recv(&mut s);
        assert_eq!(e["code"], "throttled", "{e}");
        exec_support::expect_closed(&mut s);
    }
    let mut tracker = Tracker::new(&d, "files");
    let held = tracker.on_each(1, |d| d.connect("files"));
    for mut s in held.into_iter().flatten() {
        let e = exec_support::recv(&mut s);
        assert_eq!(e["code"], "throttled", "{e}");
    }
}

// ----- files -----------------------------------------------------------------

#[test]
fn concurrent_uploads_from_both_reactors_never_pass_the_quota() {
    const SIZE: usize = 40 * 1024;
    let d = two_reactors(&[]);
    // Room for two uploads of SIZE, not three.
    files_support::add_user(&d, "ann", "pw-ann", Some("100K"));
    let mut tracker = Tracker::new(&d, "files");
    let held = tracker.on_each(4, |d| files_support::login(d, "ann", "pw-ann"));
    let mut all: Vec<TcpStream> = held.into_iter().flatten().collect();
    // Every put is on the wire before any answer is read, so the two
    // reactors decide at the same time.
    let data: Vec<Vec<u8>> = (0..all.len())
        .map(|i| files_support::payload(SIZE, i as u8))
        .collect();
    for (i, s) in all.iter_mut().enumerate() {
        let put = json!({"type": "put", "path": format!("f{i}"), "size": SIZE,
                         "sha256": files_support::sha_hex(&data[i])});
        files_support::send(s, &put);
    }
    let mut ready = Vec::new();
    for (i, s) in all.iter_mut().enumerate() {
        let answer = files_support::recv(s);
        match answer["type"].as_str() {
            Some("ready") => ready.push(i),
            _ => assert_eq!(answer["code"], "quota", "{answer}"),
        }
    }
    assert_eq!(ready.len(), 2, "two uploads fit, no more: {ready:?}");
    for &i in &ready {
        all[i].write_all(&data[i]).unwrap();
        let done = files_support::recv(&mut all[i]);
        assert_eq!(done["type"], "ok", "{done}");
    }
    let quota = files_support::ask(&mut all[0], json!({"type": "quota"}));
    assert_eq!(quota["used"], 2 * SIZE as u64, "{quota}");
    assert!(quota["used"].as_u64() <= quota["limit"].as_u64(), "{quota}");
}

#[test]
fn an_upload_interrupted_on_one_reactor_resumes_on_the_other() {
    const SIZE: usize = 256 * 1024;
    let d = two_reactors(&[]);
    files_support::add_user(&d, "bob", "pw-bob", None);
    let data = files_support::payload(SIZE, 7);
    let sha = files_support::sha_hex(&data);
    let put = json!({"type": "put", "path": "big", "size": SIZE, "sha256": sha});
    let mut tracker = Tracker::new(&d, "files");
    let [mut first, mut second] = tracker.on_each(1, |d| files_support::login(d, "bob", "pw-bob"));
    let (mut s, mut other) = (first.remove(0), second.remove(0));
    // Half the bytes from a connection on the first reactor, then it
    // goes away.
    let ready = files_support::ask(&mut s, put.clone());
    assert_eq!(ready["offset"], 0, "{ready}");
    s.write_all(&data[..SIZE / 2]).unwrap();
    drop(s);
    // The connection on the second reactor resumes it, once the first
    // has let go of it.
    let mut resumed = Value::Null;
    assert!(
        wait_until(|| {
            resumed = files_support::ask(&mut other, put.clone());
            resumed["type"] == "ready"
        }),
        "{resumed}"
    );
    let offset = resumed["offset"].as_u64().unwrap() as usize;
    assert!(offset > 0 && offset <= SIZE / 2, "{resumed}");
    other.write_all(&data[offset..]).unwrap();
    let done = files_support::recv(&mut other);
    assert_eq!(done["type"], "ok", "{done}");
    assert_eq!(
        std::fs::read(files_support::home(&d, "bob").join("big")).unwrap(),
        data
    );
    assert!(files_support::staged(&d, "bob").is_empty());
}

#[test]
fn sigterm_leaves_a_partial_upload_on_record() {
    const SIZE: usize = 256 * 1024;
    let mut d = two_reactors(&[]);
    files_support::add_user(&d, "cy", "pw-cy", None);
    let data = files_support::payload(SIZE, 3);
    let mut s = files_support::login(&d, "cy", "pw-cy");
    let put = json!({"type": "put", "path": "part", "size": SIZE,
                     "sha256": files_support::sha_hex(&data)});
    assert_eq!(files_support::ask(&mut s, put)["type"], "ready");
    s.write_all(&data[..SIZE / 4]).unwrap();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait().code(), Some(0), "{}", d.stderr());
    // The record and the bytes staged so far are still there for a
    // later daemon to resume from.
    let staged = files_support::staged(&d, "cy");
    assert!(staged.iter().any(|n| n.ends_with(".part")), "{staged:?}");
    assert!(staged.len() >= 2, "{staged:?}");
}
