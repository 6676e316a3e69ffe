//! The exec session's state machine through the test harness, with
//! programs that are plain data: the handshake, run -> started -> output
//! -> exit, stdin and its backpressure, signals, timeouts, and one run at
//! a time. Real processes are tested end to end in tests/exec_*.rs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use super::Cx;
use super::launch::Launch;
use super::program::STDIN_BACKLOG;
use super::reaper::Dying;
use super::request::{Exit, Signal};
use super::running::{Launched, Launcher, RunningProgram};
use crate::auth::handshake;
use crate::codec::frame::{self, FrameDecoder, Item};
use crate::config::Config;
use crate::reactor::SourceEvent;
use crate::service_id::ServiceId;
use crate::services::testing::{Ending, Harness, shared_of, shared_with_exec};

// ----- A program made of data ----------------------------------------------

/// What the test decides about the fake programs, and what they saw.
#[derive(Default)]
struct Script {
    /// The argv of every program launched.
    launched: Vec<Vec<String>>,
    /// Output waiting in the "pipe", framed at the next event.
    stdout: Vec<u8>,
    /// Set by the test (or a timeout): the program has exited with this
    /// code or signal.
    exit: Option<(Option<i32>, Option<&'static str>)>,
    /// Stdin the program took, and whether it saw the end of it.
    stdin: Vec<u8>,
    stdin_eof: bool,
    /// While true the program takes no stdin: it waits in `backlog`.
    stdin_blocked: bool,
    backlog: Vec<u8>,
    signals: Vec<&'static str>,
    timed_out: bool,
    /// The session gave the program up (its client left).
    abandoned: bool,
}

struct FakeLauncher(Rc<RefCell<Script>>);

struct FakeProgram {
    script: Rc<RefCell<Script>>,
    takes_stdin: bool,
    started: Instant,
    timeout_at: Option<Instant>,
}

const PID: u32 = 4242;

impl Launcher for FakeLauncher {
    fn launch(&mut self, launch: &Launch, cx: &mut Cx<'_>) -> Launched {
        self.0.borrow_mut().launched.push(launch.argv.clone());
        let timeout_at = launch.timeout.map(|t| cx.now() + t);
        if let Some(at) = timeout_at {
            cx.set_timer(at);
        }
        Ok(Some(Box::new(FakeProgram {
            script: self.0.clone(),
            takes_stdin: launch.stdin,
            started: cx.now(),
            timeout_at,
        })))
    }
}

impl RunningProgram for FakeProgram {
    fn pid(&self) -> u32 {
        PID
    }
    fn takes_stdin(&self) -> bool {
        self.takes_stdin
    }
    fn stdin_backlog(&self) -> usize {
        self.script.borrow().backlog.len()
    }
    fn on_ready(&mut self, _: usize, _: bool, writable: bool, _: bool, cx: &mut Cx<'_>) {
        let mut s = self.script.borrow_mut();
        if writable && !s.stdin_blocked {
            let backlog = std::mem::take(&mut s.backlog);
            s.stdin.extend_from_slice(&backlog);
        }
        drop(s);
        self.pump_output(cx);
    }
    fn pump_output(&mut self, cx: &mut Cx<'_>) {
        let out = std::mem::take(&mut self.script.borrow_mut().stdout);
        if !out.is_empty() {
            cx.write_with(|buf| frame::encode_chunk("stdout", &out, buf));
        }
    }
    fn feed_stdin(&mut self, chunk: Bytes, _cx: &mut Cx<'_>) {
        let mut s = self.script.borrow_mut();
        if s.stdin_blocked {
            s.backlog.extend_from_slice(&chunk);
        } else {
            s.stdin.extend_from_slice(&chunk);
        }
    }
    fn stdin_eof(&mut self, _cx: &mut Cx<'_>) {
        self.script.borrow_mut().stdin_eof = true;
    }
    fn signal(&self, signal: Signal) {
        self.script.borrow_mut().signals.push(signal.name());
    }
    fn on_timer(&mut self, cx: &mut Cx<'_>) {
        if self.timeout_at.is_some_and(|at| at <= cx.now()) {
            let mut s = self.script.borrow_mut();
            s.timed_out = true;
            s.exit = Some((None, Some("KILL")));
        }
    }
    fn is_done(&self) -> bool {
        let s = self.script.borrow();
        s.exit.is_some() && s.stdout.is_empty()
    }
    fn finish(self: Box<Self>, cx: &mut Cx<'_>) -> (Exit, Option<Dying>) {
        let mut s = self.script.borrow_mut();
        let (code, signal) = s.exit.take().expect("finish only once done");
        let exit = Exit {
            code,
            signal: signal.map(str::to_string),
            timed_out: s.timed_out,
            elapsed: cx.now() - self.started,
        };
        (exit, None)
    }
    fn abandon(self: Box<Self>, _cx: &mut Cx<'_>) -> Option<Dying> {
        self.script.borrow_mut().abandoned = true;
        None
    }
}

// ----- Fixtures ------------------------------------------------------------

/// An exec connection over a fresh key, with the script its programs
/// follow. The hello has been read.
struct Client {
    h: Harness,
    c: usize,
    script: Rc<RefCell<Script>>,
    challenge: crate::auth::Challenge,
    _dir: tempfile::TempDir,
}

fn connect(config: Config) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let max_header = config.frames.max_header;
    let mut h = Harness::new(shared_with_exec(config, dir.path()));
    let script = Rc::new(RefCell::new(Script::default()));
    let session = super::Session::with_launcher(max_header, Box::new(FakeLauncher(script.clone())));
    let c = h.open_with(ServiceId::Exec, Box::new(session));
    let hello = frames(h.output(c));
    assert_eq!(hello.len(), 1);
    let challenge = handshake::parse_hello(&to_header(&hello[0].0)).expect("a hello frame");
    Client {
        h,
        c,
        script,
        challenge,
        _dir: dir,
    }
}

/// A connection that has authenticated (its `ok` read).
fn authenticated() -> Client {
    let mut cl = connect(Config::default());
    let key = shared_of(&mut cl.h).exec.current_key().unwrap();
    let mut out = BytesMut::new();
    handshake::encode_auth(&key, &cl.challenge, &mut out);
    cl.h.input(cl.c, &out);
    assert_eq!(types(&frames(cl.h.output(cl.c))), ["ok"]);
    cl
}

impl Client {
    fn send(&mut self, header: Value) {
        let mut out = BytesMut::new();
        frame::encode(&header, &mut out).unwrap();
        self.h.input(self.c, &out);
    }

    fn send_stdin(&mut self, bytes: &[u8]) {
        let mut out = BytesMut::new();
        frame::encode_chunk("stdin", bytes, &mut out);
        self.h.input(self.c, &out);
    }

    /// The frames the daemon sent since last asked.
    fn frames(&mut self) -> Vec<(Value, Vec<u8>)> {
        frames(self.h.output(self.c))
    }

    /// A program "wrote" `bytes` and its pipe became readable.
    fn program_writes(&mut self, bytes: &[u8]) {
        self.script.borrow_mut().stdout.extend_from_slice(bytes);
        self.pipe_ready(false);
    }

    /// The program exited (its pidfd became readable).
    fn program_exits(&mut self, code: Option<i32>, signal: Option<&'static str>) {
        self.script.borrow_mut().exit = Some((code, signal));
        self.pipe_ready(false);
    }

    fn pipe_ready(&mut self, writable: bool) {
        self.h.source(
            self.c,
            SourceEvent::Ready {
                token: 1,
                readable: !writable,
                writable,
                closed: false,
            },
        );
    }

    fn running(&mut self) -> usize {
        shared_of(&mut self.h).exec.running()
    }
}

/// Splits daemon output into frames: each header, with the payload of a
/// `stdout`/`stderr` frame.
fn frames(bytes: Vec<u8>) -> Vec<(Value, Vec<u8>)> {
    let mut buf = BytesMut::from(&bytes[..]);
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut out: Vec<(Value, Vec<u8>)> = Vec::new();
    while let Some(item) = decoder.decode(&mut buf).expect("well-formed output") {
        match item {
            Item::Header(header) => {
                if let Some(size) = header.get("size").and_then(Value::as_u64) {
                    decoder.expect_payload(size);
                }
                out.push((Value::Object(header), Vec::new()));
            }
            Item::Payload { chunk, .. } => out.last_mut().unwrap().1.extend_from_slice(&chunk),
        }
    }
    assert!(buf.is_empty(), "a partial frame at the end of the output");
    out
}

fn to_header(v: &Value) -> frame::Header {
    v.as_object().unwrap().clone()
}

fn types(frames: &[(Value, Vec<u8>)]) -> Vec<&str> {
    frames
        .iter()
        .map(|(h, _)| h["type"].as_str().unwrap())
        .collect()
}

// ----- The handshake -------------------------------------------------------

#[test]
fn a_wrong_mac_gets_an_error_frame_and_the_connection_closes() {
    let mut cl = connect(Config::default());
    cl.send(json!({"type": "auth", "mac": "00".repeat(32)}));
    let got = cl.frames();
    assert_eq!(types(&got), ["error"]);
    assert_eq!(cl.h.recorded(cl.c).ending, Some(Ending::Closed));
}

#[test]
fn a_request_before_authenticating_ends_the_connection() {
    let mut cl = connect(Config::default());
    cl.send(json!({"type": "run", "argv": ["cat"]}));
    assert_eq!(types(&cl.frames()), ["error"]);
    assert!(cl.script.borrow().launched.is_empty());
    assert!(!cl.h.is_open(cl.c));
}

#[test]
fn a_client_silent_past_the_handshake_deadline_is_cut_off() {
    let mut cl = connect(Config::default());
    let timeout = Duration::from_secs(Config::default().auth.handshake_timeout_s);
    cl.h.advance(timeout - Duration::from_millis(1));
    assert!(cl.frames().is_empty());
    assert!(cl.h.is_open(cl.c));
    cl.h.advance(Duration::from_millis(1));
    assert_eq!(types(&cl.frames()), ["error"]);
    assert!(!cl.h.is_open(cl.c));
}

// ----- Running -------------------------------------------------------------

#[test]
fn run_starts_then_output_then_exit_and_another_run_may_follow() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["cat", "-n"]}));
    let got = cl.frames();
    assert_eq!(types(&got), ["started"]);
    assert_eq!(got[0].0["pid"], PID);
    assert_eq!(cl.script.borrow().launched, [vec!["cat", "-n"]]);
    assert_eq!(cl.running(), 1);

    cl.program_writes(b"hello\n");
    let got = cl.frames();
    assert_eq!(types(&got), ["stdout"]);
    assert_eq!(got[0].1, b"hello\n");

    cl.program_exits(Some(3), None);
    let got = cl.frames();
    assert_eq!(types(&got), ["exit"]);
    assert_eq!(got[0].0["code"], 3);
    assert_eq!(got[0].0["signal"], Value::Null);
    assert_eq!(got[0].0["timed_out"], false);
    assert_eq!(cl.running(), 0);

    cl.send(json!({"type": "run", "argv": ["true"]}));
    assert_eq!(types(&cl.frames()), ["started"]);
}

#[test]
fn output_waiting_when_the_program_exits_comes_before_the_exit_frame() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["cat"]}));
    cl.frames();
    cl.script
        .borrow_mut()
        .stdout
        .extend_from_slice(b"last words");
    cl.program_exits(Some(0), None);
    let got = cl.frames();
    assert_eq!(types(&got), ["stdout", "exit"]);
    assert_eq!(got[0].1, b"last words");
}

#[test]
fn a_second_run_while_one_runs_is_refused_and_the_first_runs_on() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["sleep", "10"]}));
    cl.frames();
    cl.send(json!({"type": "run", "argv": ["true"]}));
    let got = cl.frames();
    assert_eq!(types(&got), ["error"]);
    assert_eq!(got[0].0["code"], "running");
    assert_eq!(cl.script.borrow().launched.len(), 1);
    assert!(cl.h.is_open(cl.c));
    cl.program_exits(Some(0), None);
    assert_eq!(types(&cl.frames()), ["exit"]);
}

#[test]
fn stdin_frames_reach_the_program_and_stdin_eof_ends_its_input() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["sort"], "stdin": true}));
    cl.frames();
    cl.send_stdin(b"b\n");
    cl.send_stdin(b"a\n");
    cl.send(json!({"type": "stdin_eof"}));
    assert_eq!(cl.script.borrow().stdin, b"b\na\n");
    assert!(cl.script.borrow().stdin_eof);
    assert!(cl.frames().is_empty(), "nothing to answer");
}

#[test]
fn stdin_to_a_program_started_without_it_is_refused_and_read_past() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["cat"]}));
    cl.frames();
    cl.send_stdin(b"ignored");
    cl.send(json!({"type": "signal", "signal": "TERM"}));
    let got = cl.frames();
    assert_eq!(types(&got), ["error"]);
    assert_eq!(got[0].0["code"], "no_stdin");
    assert!(cl.script.borrow().stdin.is_empty());
    assert_eq!(
        cl.script.borrow().signals,
        ["TERM"],
        "the next frame is read"
    );
}

#[test]
fn a_full_stdin_backlog_holds_input_until_the_program_takes_it() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["cat"], "stdin": true}));
    cl.frames();
    cl.script.borrow_mut().stdin_blocked = true;
    let chunk = vec![b'x'; 16 * 1024];
    let mut input = BytesMut::new();
    for _ in 0..(STDIN_BACKLOG / chunk.len() + 2) {
        frame::encode_chunk("stdin", &chunk, &mut input);
    }
    frame::encode(&json!({"type": "stdin_eof"}), &mut input).unwrap();
    cl.h.input(cl.c, &input);
    assert!(cl.h.recorded(cl.c).held);
    assert!(
        !cl.h.unconsumed(cl.c).is_empty(),
        "frames wait with the reactor"
    );
    assert!(!cl.script.borrow().stdin_eof);

    cl.script.borrow_mut().stdin_blocked = false;
    cl.pipe_ready(true);
    assert!(!cl.h.recorded(cl.c).held);
    assert!(cl.h.unconsumed(cl.c).is_empty());
    let s = cl.script.borrow();
    assert_eq!(
        s.stdin.len() + s.backlog.len(),
        input.len() - stdin_overhead(&input)
    );
    assert!(s.stdin_eof);
}

/// Header bytes in `input` (all but the stdin payloads).
fn stdin_overhead(input: &[u8]) -> usize {
    let payload: usize = frames(input.to_vec()).iter().map(|(_, p)| p.len()).sum();
    input.len() - payload
}

#[test]
fn a_signal_is_passed_on_and_the_exit_names_it() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["sleep", "10"]}));
    cl.frames();
    cl.send(json!({"type": "signal", "signal": "INT"}));
    assert_eq!(cl.script.borrow().signals, ["INT"]);
    cl.program_exits(None, Some("INT"));
    let got = cl.frames();
    assert_eq!(got[0].0["signal"], "INT");
    assert_eq!(got[0].0["code"], Value::Null);
}

#[test]
fn a_program_past_its_timeout_ends_with_timed_out() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["sleep", "10"], "timeout_ms": 500}));
    cl.frames();
    cl.h.advance(Duration::from_millis(499));
    assert!(cl.frames().is_empty());
    cl.h.advance(Duration::from_millis(1));
    let got = cl.frames();
    assert_eq!(types(&got), ["exit"]);
    assert_eq!(got[0].0["timed_out"], true);
    assert_eq!(got[0].0["elapsed_ms"], 500);
}

#[test]
fn late_frames_after_an_exit_are_dropped_without_an_error() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["cat"], "stdin": true}));
    cl.program_exits(Some(0), None);
    cl.frames();
    cl.send_stdin(b"late");
    cl.send(json!({"type": "stdin_eof"}));
    cl.send(json!({"type": "signal", "signal": "KILL"}));
    assert!(cl.frames().is_empty());
    assert!(cl.script.borrow().signals.is_empty());
}

#[test]
fn frames_for_a_program_when_none_ran_are_refused() {
    let mut cl = authenticated();
    cl.send(json!({"type": "signal", "signal": "INT"}));
    let got = cl.frames();
    assert_eq!(types(&got), ["error"]);
    assert_eq!(got[0].0["code"], "not_running");
    assert!(cl.h.is_open(cl.c));
}

#[test]
fn a_client_that_hangs_up_has_its_program_stopped() {
    let mut cl = authenticated();
    cl.send(json!({"type": "run", "argv": ["sleep", "10"]}));
    cl.frames();
    cl.h.peer_closed(cl.c);
    assert!(cl.script.borrow().abandoned);
    assert_eq!(cl.running(), 0);
    assert!(!cl.h.is_open(cl.c));
}

#[test]
fn runs_beyond_max_running_are_refused_as_busy() {
    let mut cl = authenticated();
    shared_of(&mut cl.h).config.exec.max_running = 0;
    cl.send(json!({"type": "run", "argv": ["true"]}));
    let got = cl.frames();
    assert_eq!(got[0].0["code"], "busy");
    assert!(cl.script.borrow().launched.is_empty());
}
