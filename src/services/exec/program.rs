//! One running program, on the reactor: taking it over once spawned
//! (launch.rs prepares the spawn, sys/spawn.rs does it), streaming its pipes, noticing its exit,
//! and stopping it.
//!
//! # A child process as three pipes and a descriptor
//!
//! The classic tutorial server calls `subprocess.run(cmd, capture_output=True)`
//! and waits: for the program to end, with all its output in memory. The
//! loop thread of this daemon may never wait, so every part of a child is
//! turned into something `epoll` can watch:
//!
//! ```text
//!   program's stdout ──pipe──> Receiver   readable: read, frame, send
//!   program's stderr ──pipe──> Receiver   readable: read, frame, send
//!   program's stdin  <──pipe── Sender     writable: write what the client sent
//!   program's exit   ───────── pidfd      readable: the program ended; waitpid()
//! ```
//!
//! The pipes are made non-blocking and registered as sources owned by the
//! connection ([`Cx::register`]). For the exit, Linux offers the *pidfd*
//! (`pidfd_open(2)`, Linux 5.3): a descriptor that turns readable when the
//! process ends, so its exit arrives as one more readiness event instead of
//! a `SIGCHLD` handler that would have to find out which child it was
//! about. `waitpid()` (through `ChildPid::try_wait`, sys/spawn.rs) then
//! collects the status without blocking and frees the zombie. On an older
//! kernel the program's exit is polled from a timer instead.
//!
//! # Output first, exit last
//!
//! The program's exit and the end of its output are separate events, in
//! either order: a program may exit with output still in the pipe, and a
//! process it started in the background may hold the pipes open after it
//! exits. The `exit` frame is therefore sent only when both have happened —
//! the status is known *and* both pipes have given EOF — so no byte of
//! output is ever lost or sent after the `exit` frame.
//!
//! # Backpressure
//!
//! The pipes are read only while the client's unsent output is below half
//! of the service's `max_pending_output`. Above it, the reactor is not asked
//! for more; the pipe fills (64 KiB in the kernel), and the program's next
//! `write()` blocks *it*, not the daemon. `Session::on_output_drained`
//! resumes the reading. The other way, stdin bytes wait in a small queue
//! while the pipe is full; the session stops taking input from the client
//! when that queue is long (see `Session`).
//!
//! # Stopping
//!
//! Every signal goes to the program's *process group*, not just its pid:
//! the program was started as the leader of a new group
//! (`setpgid(0, 0)` in the child), so `kill(-pgid, sig)` also reaches what it
//! started (a shell's pipeline, say). On a timeout the group gets TERM,
//! then KILL after `exec.kill_grace_ms`; a program whose connection goes
//! away is handed to the service's reaper ([`super::reaper`]), which does
//! the same after the session is gone.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use mio::Interest;
use mio::unix::SourceFd;
use mio::unix::pipe::{Receiver, Sender};

use super::launch::Launch;
use super::reaper::Dying;
use super::request::{Exit, Refusal, Signal, signal_name};
use super::subreaper::Registration;
use super::sys::{Cgroup, ChildPid, group_exists, pidfd_open, signal_group};
use crate::codec::frame;
use crate::reactor::ChildProcess;
use crate::services::Cx;

/// How often a program's exit is polled where `pidfd_open` is missing.
const EXIT_POLL: Duration = Duration::from_millis(50);

/// The most stdin bytes queued for a program that is not reading them;
/// past this, the session stops taking input from its client.
pub const STDIN_BACKLOG: usize = 64 * 1024;

/// Which of the program's outputs a pipe carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Stdout,
    Stderr,
}

impl Output {
    /// The frame type its chunks are sent as.
    fn frame_type(self) -> &'static str {
        match self {
            Output::Stdout => "stdout",
            Output::Stderr => "stderr",
        }
    }
}

/// The reading end of stdout or stderr.
struct OutputPipe {
    kind: Output,
    /// The pipe and its token; `None` once EOF was read (or the pipe was
    /// given up), which closes our end.
    rx: Option<(Receiver, usize)>,
    /// Readiness remembered (the pipe is registered edge-triggered): set
    /// by an event, cleared by a read that emptied the pipe.
    ready: bool,
    /// Every writer has closed its end (`EPOLLHUP`): a short read no longer
    /// means "empty for now", EOF is still to be read.
    hung_up: bool,
}

impl OutputPipe {
    /// A pipe not attached yet (see `Program::attach`).
    fn new(kind: Output) -> OutputPipe {
        OutputPipe {
            kind,
            rx: None,
            // Output may arrive before registration; the first read finds
            // out.
            ready: true,
            hung_up: false,
        }
    }

    fn token(&self) -> Option<usize> {
        self.rx.as_ref().map(|(_, token)| *token)
    }

    fn wants_read(&self) -> bool {
        self.ready && self.rx.is_some()
    }

    /// One read; what it gets is framed straight into the output.
    fn read_once(&mut self, scratch: &mut [u8], cx: &mut Cx<'_>) {
        let Some((rx, _)) = self.rx.as_mut() else {
            self.ready = false;
            return;
        };
        match rx.read(scratch) {
            Ok(0) => self.close(cx),
            Ok(n) => {
                let kind = self.kind.frame_type();
                cx.write_with(|out| frame::encode_chunk(kind, &scratch[..n], out));
                // A pipe read returns what the pipe holds, so a short read
                // emptied it, and the next write will raise a new edge.
                if n < scratch.len() && !self.hung_up {
                    self.ready = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("exec: reading {}: {e}", self.kind.frame_type());
                self.close(cx);
            }
        }
    }

    /// Deregisters and closes our end.
    fn close(&mut self, cx: &mut Cx<'_>) {
        if let Some((mut rx, token)) = self.rx.take() {
            cx.deregister(&mut rx, token);
        }
        self.ready = false;
    }
}

/// The program's stdin, as seen from the daemon.
enum Stdin {
    /// Not asked for: the program reads `/dev/null`.
    Null,
    /// A pipe that client bytes are written to.
    Open(Box<StdinFeed>),
    /// Closed after `stdin_eof`, or because the program closed its end;
    /// further bytes for it are dropped, as a pipe to a finished reader
    /// would drop them.
    Closed,
}

/// The writing end of the program's stdin and the bytes waiting for room.
struct StdinFeed {
    tx: Sender,
    token: usize,
    /// Chunks received from the client and not yet taken by the pipe,
    /// oldest first (slices of the input buffer, not copies).
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    queued: usize,
    /// The client sent `stdin_eof`: close once `queue` is written.
    eof_asked: bool,
}

/// How the program's exit was learned.
enum ExitWatch {
    /// Its pidfd, registered for readability.
    Pidfd { fd: OwnedFd, token: usize },
    /// No pidfd (an old kernel): `try_wait` from a timer.
    Polling,
    /// The status is known.
    Done,
}

/// How far the daemon has gone in stopping the program itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// Not at all: the program runs until it ends or its timeout passes.
    No,
    /// The timeout passed and the group got TERM; KILL at `kill_at`.
    Terminating { kill_at: Instant },
    /// The group got KILL. If something outside the group still holds the
    /// pipes at `abandon_at`, they are given up.
    Killed { abandon_at: Instant },
    /// Past `abandon_at`: a pipe found empty is closed instead of waited
    /// on. What is in a pipe is still read and sent first, however slowly
    /// the client reads it.
    GivingUp,
}

/// The program's end, as learned from `waitpid`.
#[derive(Debug, Clone)]
struct Ended {
    code: Option<i32>,
    signal: Option<String>,
    at: Instant,
}

/// A program started for a connection, from spawn to its `exit` frame.
pub struct Program {
    /// Its pid, which is also its process group's id.
    pid: u32,
    /// The child until it is reaped.
    child: Option<ChildPid>,
    /// The program's cgroup, if the daemon could make one: it holds every
    /// descendant, even those that left the process group.
    cgroup: Option<Cgroup>,
    /// Its pid in the registry of spawned programs, so a subreaper never
    /// takes it for an adopted process; goes to the reaper with the group.
    registration: Option<Registration>,
    ended: Option<Ended>,
    watch: ExitWatch,
    stdout: OutputPipe,
    stderr: OutputPipe,
    stdin: Stdin,
    started: Instant,
    /// When the timeout passes, if there is one.
    timeout_at: Option<Instant>,
    timed_out: bool,
    stopping: Stopping,
    kill_grace: Duration,
    /// Read first next time, so a chatty stdout cannot starve stderr.
    next: Output,
    /// Where pipe reads land before they are framed; one frame's worth.
    scratch: Box<[u8]>,
}

impl Program {
    /// Takes over a program spawned from [`Program::command`], with the
    /// cgroup it joined and its registration as the daemon's own child
    /// (subreaper.rs): registers its pipes and exit with the reactor, and
    /// sets its timeout from now.
    ///
    /// On failure (registration failed), the program is stopped and
    /// returned for the reaper.
    pub fn attach_child(
        child: ChildProcess,
        cgroup: Option<Cgroup>,
        registration: Option<Registration>,
        launch: &Launch,
        cx: &mut Cx<'_>,
    ) -> Result<Program, (Refusal, Option<Dying>)> {
        let now = cx.now();
        let pid = child.pid;
        let stdout = Some(Receiver::from(child.stdout));
        let stderr = Some(Receiver::from(child.stderr));
        let stdin = child.stdin.map(Sender::from);
        let mut program = Program {
            pid,
            child: Some(ChildPid::new(pid)),
            cgroup,
            registration,
            ended: None,
            watch: ExitWatch::Polling,
            stdout: OutputPipe::new(Output::Stdout),
            stderr: OutputPipe::new(Output::Stderr),
            stdin: Stdin::Null,
            started: now,
            timeout_at: launch.timeout.and_then(|t| now.checked_add(t)),
            timed_out: false,
            stopping: Stopping::No,
            kill_grace: launch.kill_grace,
            next: Output::Stdout,
            scratch: vec![0; super::request::MAX_CHUNK].into_boxed_slice(),
        };
        match program.attach(stdout, stderr, stdin, cx) {
            Ok(()) => {
                if let Some(at) = program.timeout_at {
                    cx.set_timer(at);
                }
                Ok(program)
            }
            Err(e) => {
                let refusal =
                    Program::spawn_failed(launch, format!("cannot watch the program: {e}"));
                Err((refusal, program.abandon(cx)))
            }
        }
    }

    /// Makes the pipes non-blocking and registers them and the exit watch.
    fn attach(
        &mut self,
        stdout: Option<Receiver>,
        stderr: Option<Receiver>,
        stdin: Option<Sender>,
        cx: &mut Cx<'_>,
    ) -> io::Result<()> {
        for (pipe, rx) in [(&mut self.stdout, stdout), (&mut self.stderr, stderr)] {
            let mut rx = rx.ok_or_else(|| io::Error::other("output pipe missing"))?;
            rx.set_nonblocking(true)?;
            let token = cx.register(&mut rx, Interest::READABLE)?;
            pipe.rx = Some((rx, token));
        }
        if let Some(mut tx) = stdin {
            tx.set_nonblocking(true)?;
            let token = cx.register(&mut tx, Interest::WRITABLE)?;
            self.stdin = Stdin::Open(Box::new(StdinFeed {
                tx,
                token,
                queue: VecDeque::new(),
                queued: 0,
                eof_asked: false,
            }));
        }
        match pidfd_open(self.pid) {
            Ok(fd) => {
                let token = cx.register(&mut SourceFd(&fd.as_raw_fd()), Interest::READABLE)?;
                self.watch = ExitWatch::Pidfd { fd, token };
            }
            Err(e) => {
                log::debug!(
                    "exec: pidfd_open: {e}; polling for the exit of {}",
                    self.pid
                );
                self.watch = ExitWatch::Polling;
                cx.set_timer(cx.now() + EXIT_POLL);
            }
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the client may send stdin bytes (the program was started
    /// with `"stdin":true`).
    pub fn takes_stdin(&self) -> bool {
        !matches!(self.stdin, Stdin::Null)
    }

    /// Stdin bytes queued because the pipe is full.
    pub fn stdin_backlog(&self) -> usize {
        match &self.stdin {
            Stdin::Open(feed) => feed.queued,
            Stdin::Null | Stdin::Closed => 0,
        }
    }

    /// One of the program's sources is ready.
    pub fn on_ready(
        &mut self,
        token: usize,
        readable: bool,
        writable: bool,
        closed: bool,
        cx: &mut Cx<'_>,
    ) {
        for pipe in [&mut self.stdout, &mut self.stderr] {
            if pipe.token() == Some(token) {
                pipe.ready |= readable || closed;
                pipe.hung_up |= closed;
            }
        }
        if let Stdin::Open(feed) = &self.stdin
            && feed.token == token
            && (writable || closed)
        {
            self.flush_stdin(cx);
        }
        if let ExitWatch::Pidfd { token: t, .. } = self.watch
            && t == token
            && (readable || closed)
        {
            self.check_exit(cx);
        }
        self.pump_output(cx);
    }

    /// Reads the pipes into frames while the client's unsent output is
    /// below the threshold (see the module docs), alternating between them.
    pub fn pump_output(&mut self, cx: &mut Cx<'_>) {
        let threshold = (cx.output_limit() / 2).max(1);
        // Each round either adds a frame to the output (so the threshold
        // comes nearer) or finds a pipe empty or at its end; the pipes'
        // own size bounds how many rounds can add frames before both are
        // empty. The cap is a safety net.
        for _ in 0..64 {
            if cx.pending_output() >= threshold {
                return;
            }
            let order = match self.next {
                Output::Stdout => [Output::Stdout, Output::Stderr],
                Output::Stderr => [Output::Stderr, Output::Stdout],
            };
            let Some(kind) = order.into_iter().find(|&k| self.pipe(k).wants_read()) else {
                if self.stopping == Stopping::GivingUp {
                    // Both are empty now (or closed): stop waiting for EOF.
                    self.stdout.close(cx);
                    self.stderr.close(cx);
                }
                return;
            };
            self.next = match kind {
                Output::Stdout => Output::Stderr,
                Output::Stderr => Output::Stdout,
            };
            let pipe = match kind {
                Output::Stdout => &mut self.stdout,
                Output::Stderr => &mut self.stderr,
            };
            pipe.read_once(&mut self.scratch, cx);
        }
    }

    fn pipe(&self, kind: Output) -> &OutputPipe {
        match kind {
            Output::Stdout => &self.stdout,
            Output::Stderr => &self.stderr,
        }
    }

    /// Queues client bytes for the program's stdin and writes what fits.
    pub fn feed_stdin(&mut self, chunk: Bytes, cx: &mut Cx<'_>) {
        if let Stdin::Open(feed) = &mut self.stdin
            && !chunk.is_empty()
            && !feed.eof_asked
        {
            feed.queued += chunk.len();
            feed.queue.push_back(chunk);
            self.flush_stdin(cx);
        }
    }

    /// The client will send no more stdin: close the pipe once the queue
    /// is written, so the program reads EOF.
    pub fn stdin_eof(&mut self, cx: &mut Cx<'_>) {
        if let Stdin::Open(feed) = &mut self.stdin {
            feed.eof_asked = true;
            self.flush_stdin(cx);
        }
    }

    /// Writes queued stdin bytes until the pipe is full.
    fn flush_stdin(&mut self, cx: &mut Cx<'_>) {
        let Stdin::Open(feed) = &mut self.stdin else {
            return;
        };
        // Each round writes some bytes or stops.
        while let Some(front) = feed.queue.front_mut() {
            match feed.tx.write(front) {
                Ok(n) => {
                    front.advance(n);
                    feed.queued -= n;
                    if front.is_empty() {
                        feed.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EPIPE: the program closed its stdin (or ended). Like a
                    // shell pipeline, the writer's bytes are dropped.
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        log::debug!("exec: writing stdin of {}: {e}", self.pid);
                    }
                    self.close_stdin(cx);
                    return;
                }
            }
        }
        if feed.eof_asked {
            self.close_stdin(cx);
        }
    }

    fn close_stdin(&mut self, cx: &mut Cx<'_>) {
        if let Stdin::Open(mut feed) = std::mem::replace(&mut self.stdin, Stdin::Closed) {
            cx.deregister(&mut feed.tx, feed.token);
        }
    }

    /// Sends `signal` to the program's process group, at the client's
    /// request.
    pub fn signal(&self, signal: Signal) {
        self.signal_group(signal.number());
    }

    /// Deadlines: the exit poll, the timeout, the KILL after TERM, and
    /// giving up on pipes held open by something that escaped the group.
    pub fn on_timer(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        if matches!(self.watch, ExitWatch::Polling) {
            self.check_exit(cx);
            if self.child.is_some() {
                cx.set_timer(now + EXIT_POLL);
            }
        }
        match self.stopping {
            Stopping::No => {
                if self.timeout_at.is_some_and(|at| at <= now) && !self.is_done() {
                    self.timed_out = true;
                    self.signal_group(libc::SIGTERM);
                    let kill_at = now + self.kill_grace;
                    self.stopping = Stopping::Terminating { kill_at };
                    cx.set_timer(kill_at);
                }
            }
            Stopping::Terminating { kill_at } if kill_at <= now => {
                self.signal_group(libc::SIGKILL);
                if let Some(cgroup) = &self.cgroup {
                    cgroup.kill();
                }
                let abandon_at = now + self.kill_grace;
                self.stopping = Stopping::Killed { abandon_at };
                cx.set_timer(abandon_at);
            }
            Stopping::Killed { abandon_at } if abandon_at <= now && self.ended.is_some() => {
                // Everything in the group is dead, yet a pipe is still open:
                // a process that left the group (setsid) holds it.
                log::warn!(
                    "exec: pid {}: output pipes still open after KILL; giving them up",
                    self.pid
                );
                self.stopping = Stopping::GivingUp;
            }
            Stopping::Terminating { .. } | Stopping::Killed { .. } | Stopping::GivingUp => {}
        }
        self.pump_output(cx);
    }

    /// Collects the exit status if the program has ended (never blocks).
    fn check_exit(&mut self, cx: &mut Cx<'_>) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return, // Not yet: a spurious wake-up.
            Err(e) => {
                // ECHILD: someone else reaped it. The status is lost.
                log::warn!("exec: waitpid({}): {e}", self.pid);
                ExitStatus::from_raw(0)
            }
        };
        self.child = None;
        if let Some(registration) = &self.registration {
            registration.leader_ended();
        }
        self.ended = Some(Ended {
            code: status.code(),
            signal: status.signal().map(signal_name),
            at: cx.now(),
        });
        if let ExitWatch::Pidfd { fd, token } = std::mem::replace(&mut self.watch, ExitWatch::Done)
        {
            cx.deregister(&mut SourceFd(&fd.as_raw_fd()), token);
        } else {
            self.watch = ExitWatch::Done;
        }
    }

    /// The program has ended and both pipes have given EOF: time for the
    /// `exit` frame.
    pub fn is_done(&self) -> bool {
        self.ended.is_some() && self.stdout.rx.is_none() && self.stderr.rx.is_none()
    }

    /// Releases what is left (the stdin pipe) and reports the exit. If the
    /// program's group still has members (something it left running in the
    /// background), they get TERM and are returned for the reaper: a run
    /// leaves nothing behind.
    pub fn finish(mut self, cx: &mut Cx<'_>) -> (Exit, Option<Dying>) {
        debug_assert!(self.is_done());
        self.close_stdin(cx);
        let ended = self.ended.clone().unwrap_or(Ended {
            code: None,
            signal: None,
            at: cx.now(),
        });
        let exit = Exit {
            code: ended.code,
            signal: ended.signal,
            timed_out: self.timed_out,
            elapsed: ended.at.saturating_duration_since(self.started),
        };
        let leftover = if group_exists(self.pgid()) || self.cgroup_populated() {
            self.signal_group(libc::SIGTERM);
            Some(Dying::new(
                self.pgid(),
                None,
                self.cgroup.take(),
                self.registration.take(),
                cx.now() + self.kill_grace,
            ))
        } else {
            self.recycle_cgroup(cx);
            None
        };
        (exit, leftover)
    }

    /// The connection is going away with the program still running: close
    /// every pipe, TERM the group, and return what the reaper must finish
    /// (`None` when nothing is left to wait for).
    pub fn abandon(mut self, cx: &mut Cx<'_>) -> Option<Dying> {
        self.stdout.close(cx);
        self.stderr.close(cx);
        self.close_stdin(cx);
        if let ExitWatch::Pidfd { fd, token } = std::mem::replace(&mut self.watch, ExitWatch::Done)
        {
            cx.deregister(&mut SourceFd(&fd.as_raw_fd()), token);
        }
        let pgid = self.pgid();
        if self.child.is_none() && !group_exists(pgid) && !self.cgroup_populated() {
            self.recycle_cgroup(cx);
            return None;
        }
        self.signal_group(libc::SIGTERM);
        Some(Dying::new(
            pgid,
            self.child.take(),
            self.cgroup.take(),
            self.registration.take(),
            cx.now() + self.kill_grace,
        ))
    }

    /// The program's cgroup, just found empty, goes back for reuse.
    fn recycle_cgroup(&mut self, cx: &mut Cx<'_>) {
        if let Some(cgroup) = self.cgroup.take() {
            cx.shared().exec.recycle_cgroup(cgroup);
        }
    }

    fn cgroup_populated(&self) -> bool {
        self.cgroup.as_ref().is_some_and(Cgroup::is_populated)
    }

    fn pgid(&self) -> i32 {
        // A pid always fits: Linux caps them at 2^22.
        i32::try_from(self.pid).unwrap_or(i32::MAX)
    }

    fn signal_group(&self, signal: i32) {
        // While the leader is unreaped its pid, the group's id, cannot be
        // reused. After that, the id stays reserved only while the group
        // has members, so check first: a signal must never reach a new,
        // unrelated group that happens to get the same number.
        if self.child.is_some() || group_exists(self.pgid()) {
            signal_group(self.pgid(), signal);
        }
    }
}
