//! exec: run a program for an authenticated client and stream its output
//! (PROTOCOL.md §5.1-5.3).
//!
//! # Format
//!
//! Length-prefixed JSON frames ([`crate::codec::frame`]); `+ N bytes`
//! means N raw bytes follow the frame.
//!
//! ```text
//! daemon: {"type":"hello","service":"exec","version":1,"auth":"hmac-sha256","challenge":"<64 hex>"}
//! client: {"type":"auth","mac":"<64 hex HMAC-SHA256(key, challenge)>"}
//! daemon: {"type":"ok"}
//! client: {"type":"run","argv":["sort","-r"],"stdin":true,"timeout_ms":5000}
//! daemon: {"type":"started","pid":4242}
//! client: {"type":"stdin","size":4} + "b\na\n"
//! client: {"type":"stdin_eof"}
//! daemon: {"type":"stdout","size":4} + "b\na\n"
//! daemon: {"type":"exit","code":0,"signal":null,"timed_out":false,"elapsed_ms":3}
//! client: {"type":"run","shell":"yes | head -1"}          (another program, if allowed)
//! ...
//! ```
//!
//! At any time while a program runs the client may send
//! `{"type":"signal","signal":"INT"}` (or `TERM`, `KILL`). Errors are
//! `{"type":"error","code":"<code>","error":"<reason>"}`.
//!
//! # States
//!
//! ```text
//!   on_open ──throttled──> Closed
//!      │
//!      │ hello sent, deadline set
//!      v
//!   AwaitingAuth ──wrong mac / other frame / deadline──> Closed   (a failure, logged)
//!      │      └────any frame while the address is locked──> Closed   (throttled, not evaluated)
//!      │
//!      │ right mac: ok
//!      v
//!   Ready <─────────── exit frame sent ──────────┐
//!      │    ^                                     │
//!      │ run│spawn failed: error                  │
//!      v    │                                     │
//!   Spawning (on the helper pool)                 │
//!      │                                          │
//!      │ spawned: started                         │
//!      v                                          │
//!   Running ── stdin, stdin_eof, signal, output ──┘
//!      │
//!      └── client gone, bad frame, shutdown ──> Closed   (the program is
//!                                                          handed to the reaper)
//! ```
//!
//! Every transition is in `Session::on_header` and the callbacks next to
//! it; the program's own life (pipes, exit, timeout) is in [`program`].
//!
//! # Input, and when to stop taking it
//!
//! The reactor hands the session whatever arrived; the session decodes the
//! whole frames at its start and returns how much it consumed. The rest (a
//! partial frame, or frames that must wait) stays with the reactor: the
//! session keeps no input of its own between callbacks.
//!
//! Stdin bytes go straight into the program's pipe; those the pipe does
//! not take wait in a queue, and once that holds [`program::STDIN_BACKLOG`]
//! bytes the session stops decoding and asks the reactor to stop reading
//! the client (`Cx::hold_input`). The client's writes then block in its own
//! kernel buffers, exactly as they would if it wrote into the program's
//! pipe directly. When the pipe drains (or the program ends), the session
//! lifts the hold, and the reactor offers the frames it kept again at once,
//! without waiting for new bytes: a client that sent its last `stdin`
//! frame and `stdin_eof` is waiting for output, not about to send more.
//!
//! # Spawning off the loop
//!
//! The thread that starts a program sleeps until the child's `execve`
//! (sys/spawn.rs: a `vfork`-style clone), which opens the program's file,
//! so the spawn is a job for the helper pool and the loop goes on serving
//! meanwhile. Until the job's result arrives the session is `Spawning`: it
//! decodes nothing further and holds its input, so a `stdin` frame sent
//! right behind the `run` waits with the reactor and reaches the program in
//! order once it runs. The program counts against `exec.max_running` (the
//! daemon's, over every reactor) from the moment its `run` is taken up. A
//! connection that ends while its program is being spawned gives the slot
//! back at once; the child, when it comes, is killed and reaped by the
//! job's cleanup (or, if the result is still delivered, by the reaper).
//!
//! # A client that goes away
//!
//! A client that closes the connection, or only shuts down its sending
//! side, has disconnected as far as the service is concerned: a program
//! that writes nothing would otherwise run on for nobody until its
//! timeout. The program's group gets TERM, then KILL after the grace
//! period, and is reaped. Clients that want the output of a program must
//! keep their side open until the `exit` frame.
//!
//! One disconnect cannot be seen: while the session holds its input (a
//! program that does not read its stdin), the daemon reads nothing from
//! the client, and a client that closes then has its FIN queued behind
//! the stdin bytes the daemon is not taking. The program's timeout still
//! ends it, and the disconnect is seen right after.
//!
//! # Late frames
//!
//! A client cannot know when a program will end, so `stdin`, `stdin_eof`
//! and `signal` frames it sent before it read the `exit` frame may arrive
//! after it. Until the next `run`, such frames are dropped without an
//! error frame, as bytes written to a pipe whose reader has exited are.

pub mod launch;
pub mod program;
pub mod reaper;
pub mod request;
pub mod running;
#[cfg(test)]
mod session_tests;
mod shared;
mod subreaper;
mod sys;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{CloseReason, Cx, SourceEvent};
use crate::auth::handshake::{self, AuthFailure};
use crate::auth::{Challenge, Key};
use crate::codec::frame::{self, FrameDecoder, FrameError, Header, Item};
use crate::reactor::{JobError, JobOutput};
use launch::Launch;
use program::STDIN_BACKLOG;
use request::{Refusal, Request, RequestError};
use running::{Launcher, RunningProgram, Spawner};
pub use shared::{ExecDaemon, ExecShared, Running};

use running::SPAWN_JOB;

/// One exec connection.
pub struct Session {
    state: State,
    /// Reads frames out of `scratch`; its limit is `frames.max_header`.
    decoder: FrameDecoder,
    /// The input of the current callback, copied because the decoder works
    /// on a `BytesMut` (a stdin chunk leaves it as a shared `Bytes`, with no
    /// second copy). Emptied before each callback returns: what is not
    /// decoded stays with the reactor (see the module docs).
    scratch: BytesMut,
    /// Where the raw bytes of the `stdin` frame being decoded go.
    payload: Payload,
    /// Whether the reactor was asked to hold input (`Cx::hold_input`).
    holding: bool,
    /// The client's address, for throttling and logs; `None` on a Unix
    /// socket.
    peer: Option<SocketAddr>,
    /// What starts programs: the daemon's spawns on the helper pool
    /// ([`Spawner`]); a unit test's fake runs plain data (running.rs).
    launcher: Box<dyn Launcher>,
}

/// Where the connection stands in the protocol.
enum State {
    /// The hello went out; the client has until `deadline` to answer the
    /// challenge under `key` (the key as it was when it connected).
    AwaitingAuth {
        challenge: Challenge,
        key: Key,
        deadline: Instant,
    },
    /// A `run` was accepted and its spawn handed to the helper pool; the
    /// result has not come back. Nothing is decoded meanwhile (input is
    /// held), so what follows the `run` waits for the program.
    Spawning(Box<Launch>),
    /// Authenticated, no program running. `after_exit`: a program ended
    /// and no other was asked for since; stdin, stdin_eof and signal
    /// frames are then late ones for that program (the client sent them
    /// before it read the exit frame) and are dropped without an error.
    Ready { after_exit: bool },
    /// A program runs; its `exit` frame has not been sent.
    Running(Box<dyn RunningProgram>),
    /// An error frame was sent, or the connection is ending: nothing more
    /// is read or run. (Also the state before `on_open`.)
    Closed,
}

/// The destination of a `stdin` frame's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// Into the running program's stdin.
    Stdin,
    /// Nowhere: the frame was refused, but its bytes still have to be read
    /// past to find the next frame.
    Discard,
}

impl Session {
    pub fn new(max_header: usize) -> Session {
        Session::with_launcher(max_header, Box::new(Spawner::default()))
    }

    /// A session whose programs are started by `launcher`.
    pub fn with_launcher(max_header: usize, launcher: Box<dyn Launcher>) -> Session {
        Session {
            state: State::Closed,
            decoder: FrameDecoder::new(max_header),
            scratch: BytesMut::new(),
            payload: Payload::Discard,
            holding: false,
            peer: None,
            launcher,
        }
    }

    /// The client's address for log lines.
    fn who(&self) -> String {
        who(self.peer)
    }

    /// Decodes and acts on the whole frames at the start of `input`, until
    /// the program's stdin queue is full or the connection is closing.
    /// Returns the bytes consumed; the rest stays with the reactor.
    fn process(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        self.scratch.clear();
        self.scratch.extend_from_slice(input);
        loop {
            if matches!(self.state, State::Closed) {
                // Nothing more is read or run: the rest is moot.
                self.scratch = BytesMut::new();
                return input.len();
            }
            if self.must_hold() {
                break;
            }
            match self.decoder.decode(&mut self.scratch) {
                Ok(None) => break,
                Ok(Some(Item::Header(header))) => self.on_header(header, cx),
                Ok(Some(Item::Payload { chunk, .. })) => self.on_payload(chunk, cx),
                Err(e) => {
                    self.on_bad_frame(e, cx);
                    self.scratch = BytesMut::new();
                    return input.len();
                }
            }
        }
        let consumed = input.len() - self.scratch.len();
        self.scratch.clear();
        self.update_hold(cx);
        if !matches!(self.state, State::Running(_)) {
            // Between programs a connection holds no buffer (a stream keeps
            // its buffer, to avoid an allocation per read).
            self.scratch = BytesMut::new();
        }
        consumed
    }

    /// Holds the client's input while the stdin queue is full, releases it
    /// once there is room; the reactor then offers what it kept again (see
    /// the module docs).
    fn update_hold(&mut self, cx: &mut Cx<'_>) {
        let hold = self.must_hold();
        if hold != self.holding {
            self.holding = hold;
            cx.hold_input(hold);
        }
    }

    /// Whether input must wait: the program's stdin queue is full, or the
    /// program is still being spawned.
    fn must_hold(&self) -> bool {
        matches!(self.state, State::Spawning(_)) || self.stdin_backlog() >= STDIN_BACKLOG
    }

    fn stdin_backlog(&self) -> usize {
        match &self.state {
            State::Running(program) => program.stdin_backlog(),
            _ => 0,
        }
    }

    /// One whole frame header: every protocol transition starts here.
    fn on_header(&mut self, header: Header, cx: &mut Cx<'_>) {
        // The client was locked out after this connection was accepted (by
        // failures on its other connections): its answer is not evaluated,
        // so holding many connections open buys no extra guesses.
        if matches!(self.state, State::AwaitingAuth { .. }) && self.is_throttled(cx) {
            self.refuse_throttled(cx);
            return;
        }
        match &mut self.state {
            // The handshake: the right MAC, or the end.
            State::AwaitingAuth { challenge, key, .. } => {
                match handshake::check_auth(key, challenge, &header) {
                    Ok(()) => {
                        cx.write_with(handshake::encode_ok);
                        log::debug!("exec: {} authenticated", self.who());
                        self.state = State::Ready { after_exit: false };
                    }
                    Err(failure) => self.fail_auth(&failure, cx),
                }
            }
            // Requests, with or without a program running.
            State::Ready { .. } | State::Running(_) => match request::parse(&header) {
                Ok(request) => self.on_request(request, cx),
                Err(e) => self.on_bad_request(&e, cx),
            },
            // Not reached: nothing is decoded while spawning.
            State::Spawning(_) | State::Closed => {}
        }
    }

    fn on_request(&mut self, request: Request, cx: &mut Cx<'_>) {
        match (&mut self.state, request) {
            // Start a program: only one at a time.
            (State::Ready { .. }, Request::Run(run)) => self.start(run, cx),
            (State::Running(_), Request::Run(_)) => refuse(&Refusal::AlreadyRunning, cx),
            // Stdin bytes follow the header in any case: they go to the
            // program if it takes them, and are read past otherwise.
            (state, Request::Stdin { size }) => {
                self.decoder.expect_payload(size as u64);
                self.payload = match state {
                    State::Running(program) if program.takes_stdin() => Payload::Stdin,
                    State::Running(_) => {
                        refuse(&Refusal::NoStdin, cx);
                        Payload::Discard
                    }
                    State::Ready { after_exit: true } => Payload::Discard,
                    _ => {
                        refuse(&Refusal::NotRunning("send stdin to"), cx);
                        Payload::Discard
                    }
                };
            }
            (State::Running(program), Request::StdinEof) => program.stdin_eof(cx),
            (State::Running(program), Request::Signal(signal)) => {
                log::debug!(
                    "exec: {} sends {} to pid {}",
                    who(self.peer),
                    signal.name(),
                    program.pid()
                );
                program.signal(signal);
            }
            // Late frames for a program that has just ended.
            (State::Ready { after_exit: true }, Request::StdinEof | Request::Signal(_)) => {}
            (_, Request::StdinEof) => refuse(&Refusal::NotRunning("end the stdin of"), cx),
            (_, Request::Signal(_)) => refuse(&Refusal::NotRunning("signal"), cx),
            (State::AwaitingAuth { .. } | State::Spawning(_) | State::Closed, Request::Run(_)) => {}
        }
    }

    /// Checks a `run` request against the configuration and starts it.
    fn start(&mut self, run: request::Run, cx: &mut Cx<'_>) {
        // Whatever happens to this request, frames from now on are not
        // late ones for an earlier program.
        self.state = State::Ready { after_exit: false };
        let shared = cx.shared();
        let config = &shared.config.exec;
        // The running slot is taken first, over the whole daemon (every
        // reactor's programs count), so spawns in flight count against
        // `exec.max_running` too; a refusal without a program to reap
        // gives it back (here, or in `started`).
        if !shared.exec.try_start(config.max_running) {
            refuse(&Refusal::Busy(config.max_running), cx);
            return;
        }
        let (program, argv) = match launch::resolve(
            &run.command,
            &config.allow,
            config.allow_shell,
            shared.exec.workdir(),
        ) {
            Ok(found) => found,
            Err(refusal) => {
                cx.shared().exec.program_reaped();
                log::info!("exec: {} refused: {refusal}", self.who());
                refuse(&refusal, cx);
                return;
            }
        };
        let launch = Launch {
            program,
            argv,
            stdin: run.stdin,
            workdir: shared.exec.workdir().to_path_buf(),
            timeout: Some(
                run.timeout
                    .unwrap_or(Duration::from_millis(config.default_timeout_ms)),
            ),
            kill_grace: Duration::from_millis(config.kill_grace_ms),
        };
        match self.launcher.launch(&launch, cx) {
            // The spawn runs on the helper pool; its result comes back
            // through `on_spawned`.
            Ok(None) => self.state = State::Spawning(Box::new(launch)),
            Ok(Some(program)) => self.started(&launch, Ok(program), cx),
            Err(refused) => self.started(&launch, Err(refused), cx),
        }
    }

    /// The spawn job's result: the program runs (`started`), or the client
    /// hears why not. Either way the input held meanwhile is offered again.
    fn on_spawned(&mut self, result: Result<JobOutput, JobError>, cx: &mut Cx<'_>) {
        let State::Spawning(launch) =
            std::mem::replace(&mut self.state, State::Ready { after_exit: false })
        else {
            // The session stopped waiting (it is closing): what arrives is
            // nobody's.
            self.launcher.abandoned(result, cx);
            return;
        };
        let spawned = self.launcher.spawned(&launch, result, cx);
        self.started(&launch, spawned, cx);
    }

    /// The program runs, or the client hears why not.
    fn started(
        &mut self,
        launch: &Launch,
        spawned: Result<Box<dyn RunningProgram>, (Refusal, Option<reaper::Dying>)>,
        cx: &mut Cx<'_>,
    ) {
        match spawned {
            Ok(mut program) => {
                log::info!(
                    "exec: {} runs {:?} as pid {}",
                    self.who(),
                    launch.argv,
                    program.pid()
                );
                cx.write_with(|out| request::encode_started(program.pid(), out));
                // Output may already be waiting in the pipes.
                program.pump_output(cx);
                self.state = State::Running(program);
            }
            Err((refusal, dying)) => {
                log::warn!("exec: {}: {refusal}", self.who());
                let exec = &mut cx.shared().exec;
                match dying {
                    // Still counted as running until the reaper is done.
                    Some(dying) => exec.adopt(dying),
                    None => exec.program_reaped(),
                }
                refuse(&refusal, cx);
            }
        }
        self.update_hold(cx);
    }

    fn on_payload(&mut self, chunk: Bytes, cx: &mut Cx<'_>) {
        if let (Payload::Stdin, State::Running(program)) = (self.payload, &mut self.state) {
            program.feed_stdin(chunk, cx);
        }
    }

    /// After anything happened to the program: the `exit` frame once it is
    /// done, and more input once its stdin has room.
    fn after_program_event(&mut self, cx: &mut Cx<'_>) {
        let State::Running(program) = &self.state else {
            return;
        };
        if program.is_done() {
            let State::Running(program) =
                std::mem::replace(&mut self.state, State::Ready { after_exit: true })
            else {
                unreachable!("matched Running above");
            };
            let pid = program.pid();
            let (exit, leftover) = program.finish(cx);
            log::debug!(
                "exec: pid {pid} ended: code {:?}, signal {:?}{}",
                exit.code,
                exit.signal,
                if exit.timed_out { ", timed out" } else { "" }
            );
            cx.write_with(|out| exit.encode(out));
            let exec = &mut cx.shared().exec;
            match leftover {
                Some(dying) => exec.adopt(dying),
                None => exec.program_reaped(),
            }
        }
        // Input may have waited for room in the stdin queue: lifting the
        // hold has the reactor offer it again.
        self.update_hold(cx);
    }

    /// A frame that breaks the framing rules: error frame, close. Before
    /// authentication it is also a failed handshake.
    fn on_bad_frame(&mut self, e: FrameError, cx: &mut Cx<'_>) {
        if matches!(self.state, State::AwaitingAuth { .. }) {
            if self.is_throttled(cx) {
                self.refuse_throttled(cx);
                return;
            }
            self.fail_auth(&AuthFailure::NotAnAuthFrame, cx);
            return;
        }
        log::debug!("exec: {}: {e}", self.who());
        cx.write_with(|out| e.encode(out));
        self.close(cx);
    }

    fn on_bad_request(&mut self, e: &RequestError, cx: &mut Cx<'_>) {
        cx.write_with(|out| e.encode(out));
        if e.is_fatal() {
            log::debug!("exec: {}: {e}", self.who());
            self.close(cx);
        }
    }

    /// A failed handshake: the error frame, the close, the log line and the
    /// count against the client's address.
    fn fail_auth(&mut self, failure: &AuthFailure, cx: &mut Cx<'_>) {
        cx.write_with(|out| failure.encode(out));
        self.count_failure(&failure.to_string(), cx);
        self.close(cx);
    }

    /// Whether the client's address is locked out now (PROTOCOL.md §5.2).
    fn is_throttled(&self, cx: &mut Cx<'_>) -> bool {
        let now = cx.now();
        self.peer
            .is_some_and(|peer| cx.shared().throttle.is_locked(peer.ip(), now))
    }

    /// Turns a locked-out client away: the throttled error, then the close.
    /// Not a failure of its own: nothing was evaluated.
    fn refuse_throttled(&mut self, cx: &mut Cx<'_>) {
        log::warn!(
            "exec: refused {}: too many failed authentications",
            self.who()
        );
        cx.write_with(handshake::encode_throttled);
        self.close(cx);
    }

    fn count_failure(&self, reason: &str, cx: &mut Cx<'_>) {
        let (ip, now, who) = (self.peer.map(|p| p.ip()), cx.now(), self.who());
        let what = "exec: failed authentication";
        cx.shared()
            .throttle
            .count_failure(ip, now, what, &who, reason);
    }

    /// Ends the connection once what is queued is sent. Nothing more is
    /// decoded or run, and a running program is stopped now.
    fn close(&mut self, cx: &mut Cx<'_>) {
        self.stop_program(CloseReason::Requested, cx);
        self.state = State::Closed;
        cx.close();
    }

    /// Hands a running program to the reaper (after TERM to its group).
    /// One still being spawned gives its slot back; its child is the
    /// spawn job's cleanup's to kill (see `on_spawned` for the other case).
    fn stop_program(&mut self, reason: CloseReason, cx: &mut Cx<'_>) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        if let State::Spawning(_) = state {
            cx.shared().exec.program_reaped();
        }
        if let State::Running(program) = state {
            let pid = program.pid();
            log::info!(
                "exec: connection of {} closing ({reason}); stopping pid {pid}",
                self.who()
            );
            let dying = program.abandon(cx);
            let exec = &mut cx.shared().exec;
            match dying {
                Some(dying) => exec.adopt(dying),
                None => exec.program_reaped(),
            }
        }
    }
}

impl super::Session for Session {
    /// Greets with a fresh challenge, unless the address is locked out.
    fn on_open(&mut self, cx: &mut Cx<'_>) {
        self.peer = cx.peer_addr();
        let now = cx.now();
        if self.is_throttled(cx) {
            self.refuse_throttled(cx);
            return;
        }
        let Some(key) = cx.shared().exec.current_key() else {
            cx.write_with(|out| frame::encode_error("the exec service has no key", None, out));
            self.close(cx);
            return;
        };
        let challenge = match Challenge::new() {
            Ok(c) => c,
            Err(e) => {
                log::error!("exec: no challenge for {}: {e}", self.who());
                cx.write_with(|out| frame::encode_error("internal error", None, out));
                self.close(cx);
                return;
            }
        };
        cx.write_with(|out| handshake::encode_hello(&challenge, out));
        let timeout = Duration::from_secs(cx.shared().config.auth.handshake_timeout_s);
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        cx.set_timer(deadline);
        self.state = State::AwaitingAuth {
            challenge,
            key,
            deadline,
        };
    }

    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        if matches!(self.state, State::Closed) {
            return input.len();
        }
        self.process(input, cx)
    }

    /// The client is gone (see the module docs): close, which stops the
    /// program.
    fn on_peer_closed(&mut self, _input: &[u8], cx: &mut Cx<'_>) {
        self.close(cx);
    }

    fn wants_output_drained(&self) -> bool {
        true
    }

    /// Room in the client's output: read the program's pipes again.
    fn on_output_drained(&mut self, cx: &mut Cx<'_>) {
        if let State::Running(program) = &mut self.state {
            program.pump_output(cx);
            self.after_program_event(cx);
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>) {
        match &mut self.state {
            State::AwaitingAuth { deadline, .. } if *deadline <= cx.now() => {
                cx.write_with(handshake::encode_timed_out);
                self.count_failure(handshake::AUTH_TIMED_OUT, cx);
                self.close(cx);
            }
            State::Running(program) => {
                program.on_timer(cx);
                self.after_program_event(cx);
            }
            // A wake-up from an earlier state (a timeout of a program that
            // has ended): nothing is due.
            State::AwaitingAuth { .. }
            | State::Spawning(_)
            | State::Ready { .. }
            | State::Closed => {}
        }
    }

    fn on_source(&mut self, event: SourceEvent, cx: &mut Cx<'_>) {
        let (token, readable, writable, closed) = match event {
            SourceEvent::Ready {
                token,
                readable,
                writable,
                closed,
            } => (token, readable, writable, closed),
            SourceEvent::Job {
                tag: SPAWN_JOB,
                result,
            } => {
                self.on_spawned(result, cx);
                return;
            }
            _ => return,
        };
        if let State::Running(program) = &mut self.state {
            program.on_ready(token, readable, writable, closed, cx);
            self.after_program_event(cx);
        }
    }

    fn is_busy(&self) -> bool {
        matches!(self.state, State::Running(_) | State::Spawning(_))
    }

    /// The connection ends: a program still running is stopped and handed
    /// to the reaper.
    fn on_close(&mut self, reason: CloseReason, cx: &mut Cx<'_>) {
        self.stop_program(reason, cx);
        self.state = State::Closed;
    }
}

/// A client's address for log lines.
fn who(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "a unix-socket client".to_string(), |p| p.to_string())
}

/// Sends the error frame for a refused request; the connection stays open.
fn refuse(refusal: &Refusal, cx: &mut Cx<'_>) {
    cx.write_with(|out| refusal.encode(out));
}
