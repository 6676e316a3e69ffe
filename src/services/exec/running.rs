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
//! through its [`Launcher`]; the daemon's is [`Spawner`], which spawns on
//! the helper pool, so the loop never waits for a child to `exec`: its `launch`
//! answers "under way", and the program arrives through
//! [`Launcher::spawned`] when the job is done.
//!
//! A unit test gives the session a launcher of its own whose programs are
//! plain data: output the test decides, an exit when the test says so.
//! That checks the session's side of the contract (frames in the right
//! order, one run at a time, holds on input) with no process, pipe or
//! timing involved; tests/exec_*.rs check the real programs end to end.
//!
//! The cost is one virtual call per program event. The session already
//! kept its program boxed.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::Cx;
use super::launch::Launch;
use super::program::Program;
use super::reaper::{self, Dying};
use super::request::{Exit, Refusal, Signal};
use super::subreaper::{Registration, Spawning};
use super::sys::{self, Cgroup, ChildPid};
use crate::reactor::{Job, JobError, JobOutput};

/// The tag of the one job an exec session submits: its program's spawn.
pub const SPAWN_JOB: u64 = 1;

/// What starting a program gives: a running program, `None` while the
/// spawn is under way (it arrives through [`Launcher::spawned`]), or the
/// refusal to send and a program that had started and must be reaped.
pub type Launched = Result<Option<Box<dyn RunningProgram>>, (Refusal, Option<Dying>)>;
/// What a finished spawn gives.
pub type Spawned = Result<Box<dyn RunningProgram>, (Refusal, Option<Dying>)>;

/// Starts programs for a session.
pub trait Launcher {
    /// Starts the program `launch` describes, registering whatever it
    /// needs with the reactor through `cx`, or begins to.
    fn launch(&mut self, launch: &Launch, cx: &mut Cx<'_>) -> Launched;

    /// The spawn job [`Launcher::launch`] began has finished.
    fn spawned(
        &mut self,
        launch: &Launch,
        result: Result<JobOutput, JobError>,
        cx: &mut Cx<'_>,
    ) -> Spawned {
        let _ = (launch, result, cx);
        unreachable!("a launcher that answers at once has no spawns under way")
    }

    /// The spawn finished after the session stopped waiting for it (it is
    /// closing): the program is nobody's.
    fn abandoned(&mut self, result: Result<JobOutput, JobError>, cx: &mut Cx<'_>) {
        let _ = (result, cx);
    }
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

/// The daemon's launcher: spawns on the helper pool (launch.rs prepares
/// the spawn, sys.rs does it and makes the cgroup).
#[derive(Default)]
pub struct Spawner {
    /// What the spawn job hands over besides the child, shared with the
    /// job and its cleanup; emptied when the job's result arrives.
    slot: Option<Arc<Mutex<SpawnSlot>>>,
}

/// The cgroup of the program being spawned, and its registration as the
/// daemon's own child, made by the job the moment the child exists (see
/// subreaper.rs for why the moment matters).
#[derive(Debug, Default)]
struct SpawnSlot {
    cgroup: Option<Cgroup>,
    registration: Option<Registration>,
}

impl Launcher for Spawner {
    fn launch(&mut self, launch: &Launch, cx: &mut Cx<'_>) -> Launched {
        // The cgroup travels with the job, so its `cgroup.procs` stays open
        // until the spawn is over even if the session goes away meanwhile;
        // whoever gets the child (the session, or the job's cleanup) takes
        // the cgroup and the registration from the shared slot.
        let spawn = match Program::command(launch) {
            Ok(spawn) => spawn,
            Err(e) => return Err((Program::refusal(launch, &e), None)),
        };
        let cgroup = cx.shared().exec.new_cgroup();
        let slot = Arc::new(Mutex::new(SpawnSlot {
            cgroup,
            registration: None,
        }));
        let (job_slot, orphan_slot) = (Arc::clone(&slot), Arc::clone(&slot));
        let job = Job::new(SPAWN_JOB, move || {
            let spawning = Spawning::begin();
            let mut slot = lock(&job_slot);
            let procs = slot.cgroup.as_ref().map(Cgroup::procs_fd);
            let spawned = spawn.spawn(procs);
            slot.registration = spawning.end(spawned.as_ref().ok().map(|c| c.pid));
            spawned.map(JobOutput::Child)
        })
        .on_orphan(move |output| {
            // Nobody is left to run it for: its group (and cgroup) is
            // killed and the leader reaped, here on the helper, where
            // waiting is allowed. The cgroup's directory goes when it
            // drops, and the registration once the leader is reaped.
            let SpawnSlot {
                cgroup,
                registration,
            } = std::mem::take(&mut *lock(&orphan_slot));
            if let Some(cgroup) = &cgroup {
                cgroup.kill();
            }
            if let JobOutput::Child(child) = output {
                sys::signal_group(child.pid as i32, libc::SIGKILL);
                let _ = ChildPid::new(child.pid).wait();
            }
            drop(registration);
        });
        if cx.submit(job).is_err() {
            let error = "too much work waiting for the helper threads; try again";
            return Err((Program::spawn_failed(launch, error.to_string()), None));
        }
        self.slot = Some(slot);
        Ok(None)
    }

    fn spawned(
        &mut self,
        launch: &Launch,
        result: Result<JobOutput, JobError>,
        cx: &mut Cx<'_>,
    ) -> Spawned {
        let SpawnSlot {
            cgroup,
            registration,
        } = self.take_slot();
        let failed = |error: String| Err((Program::spawn_failed(launch, error), None));
        match result {
            Ok(JobOutput::Child(child)) => {
                Program::attach_child(child, cgroup, registration, launch, cx)
                    .map(|p| Box::new(p) as Box<dyn RunningProgram>)
            }
            Ok(other) => failed(format!("internal error: the spawn gave {other:?}")),
            Err(JobError::Io(e)) => Err((Program::refusal(launch, &e), None)),
            Err(e) => failed(e.to_string()),
        }
    }

    fn abandoned(&mut self, result: Result<JobOutput, JobError>, cx: &mut Cx<'_>) {
        let SpawnSlot {
            cgroup,
            registration,
        } = self.take_slot();
        // Nobody waits for the child: it goes to the reaper at once,
        // counted as running again until reaped (the session gave its slot
        // back when it stopped waiting).
        if let Ok(JobOutput::Child(child)) = result {
            let pgid = child.pid as i32;
            sys::signal_group(pgid, libc::SIGKILL);
            let now = cx.now();
            let exec = &mut cx.shared().exec;
            exec.program_started();
            exec.adopt(reaper::Dying::new(
                pgid,
                Some(ChildPid::new(child.pid)),
                cgroup,
                registration,
                now,
            ));
        }
    }
}

impl Spawner {
    /// Empties the slot of the spawn whose result arrived.
    fn take_slot(&mut self) -> SpawnSlot {
        self.slot
            .take()
            .map(|slot| std::mem::take(&mut *lock(&slot)))
            .unwrap_or_default()
    }
}

/// Locks a spawn's slot. A panic while it was held (in a spawn job, which
/// the pool catches) leaves a slot that is still consistent.
fn lock(slot: &Mutex<SpawnSlot>) -> MutexGuard<'_, SpawnSlot> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
