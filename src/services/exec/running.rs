//! What the exec session asks of "a program", as two small traits, so the
//! protocol's state machine can be driven without starting processes.
//!
//! # The boundary
//!
//! The session (mod.rs) speaks the protocol: the handshake, requests,
//! refusals, and when to send `started` and `exit`. Everything about the
//! process itself (its pipes, its exit, its timeout, signalling its group)
//! lives behind [`RunningProgram`], which the real [`Program`] implements
//! by delegating to its own methods in program.rs. A session starts one
//! through its [`Launcher`]; the daemon's is [`Spawner`], which forks.
//!
//! A unit test gives the session a launcher of its own whose programs are
//! plain data: output the test decides, an exit when the test says so.
//! That checks the session's side of the contract (frames in the right
//! order, one run at a time, holds on input) with no process, pipe or
//! timing involved; tests/exec_*.rs check the real programs end to end.
//!
//! The cost is one virtual call per program event. The session already
//! kept its program boxed, and `Spawner` is zero-sized, so a `Box` of it
//! allocates nothing.

use bytes::Bytes;

use super::Cx;
use super::program::{Launch, Program};
use super::reaper::Dying;
use super::request::{Exit, Refusal, Signal};

/// Starts programs for a session.
pub trait Launcher {
    /// Starts the program `launch` describes, registering whatever it
    /// needs with the reactor through `cx`. On failure, the refusal to
    /// send, and a program that had started and must be reaped.
    fn launch(
        &self,
        launch: &Launch,
        cx: &mut Cx<'_>,
    ) -> Result<Box<dyn RunningProgram>, (Refusal, Option<Dying>)>;
}

/// A started program, as its session drives it. Each method is the one of
/// the same name on [`Program`], which documents it.
pub trait RunningProgram {
    fn pid(&self) -> u32;
    /// Whether the client may send stdin bytes.
    fn takes_stdin(&self) -> bool;
    /// Stdin bytes waiting because the program is not taking them.
    fn stdin_backlog(&self) -> usize;
    /// One of the program's sources is ready.
    fn on_ready(
        &mut self,
        token: usize,
        readable: bool,
        writable: bool,
        closed: bool,
        cx: &mut Cx<'_>,
    );
    /// Frames whatever output waits, while the client has room for it.
    fn pump_output(&mut self, cx: &mut Cx<'_>);
    fn feed_stdin(&mut self, chunk: Bytes, cx: &mut Cx<'_>);
    fn stdin_eof(&mut self, cx: &mut Cx<'_>);
    fn signal(&self, signal: Signal);
    /// A wake-up the program asked for (its timeout, say) may be due.
    fn on_timer(&mut self, cx: &mut Cx<'_>);
    /// Exited, and all its output has been sent: time for the exit frame.
    fn is_done(&self) -> bool;
    /// The exit, once done; and what is left of its group for the reaper.
    fn finish(self: Box<Self>, cx: &mut Cx<'_>) -> (Exit, Option<Dying>);
    /// Stops it (the connection is ending); what is left is for the reaper.
    fn abandon(self: Box<Self>, cx: &mut Cx<'_>) -> Option<Dying>;
}

/// The daemon's launcher: forks and execs (program.rs).
pub struct Spawner;

impl Launcher for Spawner {
    fn launch(
        &self,
        launch: &Launch,
        cx: &mut Cx<'_>,
    ) -> Result<Box<dyn RunningProgram>, (Refusal, Option<Dying>)> {
        Program::spawn(launch, cx).map(|p| Box::new(p) as Box<dyn RunningProgram>)
    }
}

impl RunningProgram for Program {
    fn pid(&self) -> u32 {
        Program::pid(self)
    }
    fn takes_stdin(&self) -> bool {
        Program::takes_stdin(self)
    }
    fn stdin_backlog(&self) -> usize {
        Program::stdin_backlog(self)
    }
    fn on_ready(
        &mut self,
        token: usize,
        readable: bool,
        writable: bool,
        closed: bool,
        cx: &mut Cx<'_>,
    ) {
        Program::on_ready(self, token, readable, writable, closed, cx);
    }
    fn pump_output(&mut self, cx: &mut Cx<'_>) {
        Program::pump_output(self, cx);
    }
    fn feed_stdin(&mut self, chunk: Bytes, cx: &mut Cx<'_>) {
        Program::feed_stdin(self, chunk, cx);
    }
    fn stdin_eof(&mut self, cx: &mut Cx<'_>) {
        Program::stdin_eof(self, cx);
    }
    fn signal(&self, signal: Signal) {
        Program::signal(self, signal);
    }
    fn on_timer(&mut self, cx: &mut Cx<'_>) {
        Program::on_timer(self, cx);
    }
    fn is_done(&self) -> bool {
        Program::is_done(self)
    }
    fn finish(self: Box<Self>, cx: &mut Cx<'_>) -> (Exit, Option<Dying>) {
        Program::finish(*self, cx)
    }
    fn abandon(self: Box<Self>, cx: &mut Cx<'_>) -> Option<Dying> {
        Program::abandon(*self, cx)
    }
}
