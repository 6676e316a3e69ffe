//! The helper pool: where blocking work goes so the loop never waits.
//!
//! # Why a pool
//!
//! Some system calls have no non-blocking form. `fsync()` waits for the
//! disk; hashing a large file reads it all; a directory scan or an `open()`
//! on a slow filesystem can stall for milliseconds. Done on the loop
//! thread, every connection would wait with it. libuv's answer, followed
//! here, is a small pool of helper threads: the loop hands a [`Job`] over
//! and goes on serving; a helper runs it, puts the result in a completion
//! list and pokes a [`mio::Waker`], which makes the loop's `poll()` return
//! with the waker's token. The loop then drains the list and hands each
//! result to the session that asked, as [`SourceEvent::Job`].
//!
//! The threads start on first use, so a daemon that never submits blocking
//! work runs on exactly one thread.
//!
//! # Typed results
//!
//! A job returns a [`JobOutput`], one of the few shapes the daemon's jobs
//! produce (a digest, a size, an opened file, a spawned child), much as
//! libuv's `uv_fs_t` carries the result of any file operation. A closed
//! enum instead of `Box<dyn Any>` means a session matches on what it got
//! rather than guessing a type to downcast to, and the compiler lists every
//! shape a cleanup must dispose of.
//!
//! # A bounded queue
//!
//! Jobs waiting for a helper sit in a queue of at most [`QUEUE_CAPACITY`]
//! entries. A full queue is not hidden: [`Cx::submit`] hands the job back
//! in [`QueueFull`], and the session decides (answer "busy", or retry on a
//! timer). An unbounded queue would turn a burst of slow disk work into
//! unbounded memory and unbounded latency for everyone behind it.
//! [`Cx::pool_has_room`] lets a session look before it prepares a job.
//!
//! # Failure, orphans and shutdown
//!
//! - A job that panics is caught (`catch_unwind`) and reported to its
//!   session as [`JobError::Panicked`]; the helper lives on. A pool that
//!   silently lost a thread per bug would end with none.
//! - A result whose connection is gone (its token is free, or reused by a
//!   newer connection with another serial number) reaches nobody; nor does
//!   one whose session was already told `on_close`, after which, as the
//!   `Session` contract says, nothing is delivered. If the job produced
//!   something that must be undone (a staged temporary file, a child), it
//!   says so with [`Job::on_orphan`]: that cleanup runs, on a helper since
//!   it may block too, exactly when the result is not delivered. It gets
//!   the job's output, or [`JobOutput::Unit`] when there is none (the job
//!   failed, or never ran). A session that needs a result before it ends
//!   waits for it before closing.
//! - When the daemon begins to stop, jobs still queued are cancelled, and
//!   their sessions hear [`JobError::Cancelled`] at once, before their
//!   `on_close`. Jobs already running finish; their results come after
//!   `on_close`, so they go to their cleanups. When the reactor is
//!   dropped, the pool waits at most [`SHUTDOWN_WAIT`] for running jobs; a
//!   job stuck longer (a hung NFS mount) is abandoned with its thread,
//!   since the process is exiting anyway.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use mio::Waker;

use super::trace::trace;
use super::{Cx, Reactor, Source, SourceEvent};

/// Helper threads for blocking work, started on first use. Two keep one
/// slow job (an `fsync` on a busy disk) from holding up all the others,
/// without competing much with the loop for the CPU.
pub const POOL_THREADS: usize = 2;

/// Jobs that may wait for a helper at once, over all connections. Beyond
/// this [`Cx::submit`] fails with [`QueueFull`]. 64 is far more than two
/// helpers clear quickly; a queue that long means the disk is the
/// bottleneck and waiting longer would not help.
pub const QUEUE_CAPACITY: usize = 64;

/// How long dropping the pool (the daemon exiting) waits for running jobs.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// What blocking work produced, in the few shapes the daemon's jobs have
/// (like libuv's `uv_fs_t` results).
#[derive(Debug)]
pub enum JobOutput {
    /// Done, nothing to report (an `fsync`, a rename).
    Unit,
    /// A SHA-256 digest.
    Digest([u8; 32]),
    /// A byte count (a file's length, bytes written).
    Size(u64),
    /// An opened file, handed to the loop (to `Cx::send_file`, say).
    File(std::fs::File),
    /// A spawned child process. Dropping it neither kills nor reaps the
    /// child, so a job that spawns one sets an [`Job::on_orphan`] cleanup
    /// that does both.
    Child(ChildProcess),
}

/// A child process as a job hands it over: its pid and the daemon's ends
/// of its standard pipes. Plain data: the service that spawned it knows
/// how to wait for it and what its pipes carry.
#[derive(Debug)]
pub struct ChildProcess {
    /// The child's pid; it stays the child's until someone reaps it.
    pub pid: u32,
    /// The writing end of the child's stdin, when that is a pipe.
    pub stdin: Option<OwnedFd>,
    /// The reading end of the child's stdout.
    pub stdout: OwnedFd,
    /// The reading end of the child's stderr.
    pub stderr: OwnedFd,
}

/// Why a job has no output.
#[derive(Debug)]
pub enum JobError {
    /// The work itself failed.
    Io(io::Error),
    /// The work panicked; the message is the panic's, if it had one.
    Panicked(String),
    /// The daemon began to stop before a helper started the job.
    Cancelled,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Io(e) => write!(f, "{e}"),
            JobError::Panicked(msg) => write!(f, "job panicked: {msg}"),
            JobError::Cancelled => f.write_str("job cancelled: shutting down"),
        }
    }
}

/// The work a job does.
type Work = Box<dyn FnOnce() -> io::Result<JobOutput> + Send>;
/// What undoes a job's effects when its result reaches nobody.
type Cleanup = Box<dyn FnOnce(JobOutput) + Send>;

/// A unit of blocking work, with the tag its session will recognise the
/// result by, and an optional cleanup for a result nobody receives.
pub struct Job {
    /// Chosen by the session, handed back in [`SourceEvent::Job`], so a
    /// session with several jobs in flight tells their results apart.
    tag: u64,
    work: Work,
    orphan: Option<Cleanup>,
}

impl Job {
    pub fn new(tag: u64, work: impl FnOnce() -> io::Result<JobOutput> + Send + 'static) -> Job {
        Job {
            tag,
            work: Box::new(work),
            orphan: None,
        }
    }

    /// Sets what runs, on a helper, if the result cannot be delivered
    /// because the connection is gone or the daemon is exiting. It gets the
    /// job's output, or [`JobOutput::Unit`] if the job failed or never ran.
    pub fn on_orphan(mut self, cleanup: impl FnOnce(JobOutput) + Send + 'static) -> Job {
        self.orphan = Some(Box::new(cleanup));
        self
    }

    pub fn tag(&self) -> u64 {
        self.tag
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("tag", &self.tag)
            .field("on_orphan", &self.orphan.is_some())
            .finish()
    }
}

/// The queue was full: the job is handed back untouched.
#[derive(Debug)]
pub struct QueueFull(pub Job);

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "helper queue full ({QUEUE_CAPACITY} jobs waiting)")
    }
}

impl std::error::Error for QueueFull {}

/// A finished job, addressed to the connection that submitted it.
pub struct Completion {
    /// The connection's token...
    pub token: usize,
    /// ...and its serial number, so a result never reaches a newer
    /// connection that happens to reuse the token.
    pub serial: u64,
    pub tag: u64,
    pub result: Result<JobOutput, JobError>,
    /// Run (on a helper) if the result cannot be delivered.
    orphan: Option<Cleanup>,
}

/// Work a helper can take from the queue.
enum Task {
    /// A session's job, not started yet.
    Run { token: usize, serial: u64, job: Job },
    /// The cleanup of an undelivered result. Never refused for lack of
    /// room: it is the consequence of work already accepted.
    Cleanup(Cleanup, JobOutput),
}

/// Everything the loop and the helpers share, behind one mutex.
struct State {
    /// Tasks waiting for a helper, oldest first.
    queue: VecDeque<Task>,
    /// How many `Task::Run` entries `queue` holds; bounded by
    /// [`QUEUE_CAPACITY`] (cleanups are not counted).
    waiting_jobs: usize,
    /// Tasks a helper has taken and not finished.
    running: usize,
    /// Finished jobs, filled by helpers, drained by the loop.
    done: Vec<Completion>,
    /// Set when the pool is dropped: results are no longer delivered but
    /// orphaned, and helpers leave once the queue is empty.
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a task is queued, and, once the pool is closing,
    /// when one finishes (the pool's drop waits on it).
    changed: Condvar,
    /// Pokes the loop's `poll()` after a completion is queued.
    waker: Arc<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens while the lock is held (jobs run outside
        // it), so a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fixed set of helper threads sharing one bounded job queue.
pub struct Pool {
    shared: Arc<Shared>,
    /// Helpers to start on the first job.
    threads: usize,
    /// Whether the helpers were started.
    started: bool,
    /// How long dropping the pool waits for running jobs ([`SHUTDOWN_WAIT`];
    /// shorter in tests).
    shutdown_wait: Duration,
}

impl Pool {
    pub fn new(waker: Arc<Waker>, threads: usize) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    waiting_jobs: 0,
                    running: 0,
                    done: Vec::new(),
                    closing: false,
                }),
                changed: Condvar::new(),
                waker,
            }),
            threads: threads.max(1),
            started: false,
            shutdown_wait: SHUTDOWN_WAIT,
        }
    }

    /// The loop's waker, which the group hands out to other threads
    /// (`Group::wake`).
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.shared.waker)
    }

    /// Whether a job submitted now would be accepted.
    pub fn has_room(&self) -> bool {
        self.shared.lock().waiting_jobs < QUEUE_CAPACITY
    }

    /// Queues `job` on behalf of connection `token`/`serial`, or hands it
    /// back if [`QUEUE_CAPACITY`] jobs are already waiting.
    pub fn submit(&mut self, token: usize, serial: u64, job: Job) -> Result<(), QueueFull> {
        {
            let mut state = self.shared.lock();
            if state.waiting_jobs >= QUEUE_CAPACITY {
                return Err(QueueFull(job));
            }
            state.waiting_jobs += 1;
            state.queue.push_back(Task::Run { token, serial, job });
        }
        self.start();
        self.shared.changed.notify_one();
        Ok(())
    }

    /// Takes every finished job. Called when the waker's token fires.
    pub fn take_completed(&self) -> Vec<Completion> {
        std::mem::take(&mut self.shared.lock().done)
    }

    /// Disposes of a result that cannot be delivered: its cleanup, if any,
    /// runs on a helper.
    pub fn orphan(&mut self, done: Completion) {
        let Some(cleanup) = done.orphan else {
            return; // Dropping the output (a file, say) is all it needs.
        };
        let output = done.result.unwrap_or(JobOutput::Unit);
        self.shared
            .lock()
            .queue
            .push_back(Task::Cleanup(cleanup, output));
        self.start();
        self.shared.changed.notify_one();
    }

    /// Cancels every job not yet started (the daemon is stopping): each
    /// becomes an `Err(Cancelled)` completion, delivered like any other.
    /// Jobs already running are left to finish.
    pub fn cancel_queued(&mut self) {
        let mut state = self.shared.lock();
        let mut cancelled = 0;
        let mut kept = VecDeque::with_capacity(state.queue.len());
        for task in std::mem::take(&mut state.queue) {
            match task {
                Task::Run { token, serial, job } => {
                    cancelled += 1;
                    state.done.push(Completion {
                        token,
                        serial,
                        tag: job.tag,
                        result: Err(JobError::Cancelled),
                        orphan: job.orphan,
                    });
                }
                cleanup @ Task::Cleanup(..) => kept.push_back(cleanup),
            }
        }
        state.queue = kept;
        state.waiting_jobs = 0;
        drop(state);
        if cancelled > 0 {
            log::info!("helper pool: cancelled {cancelled} queued job(s)");
            let _ = self.shared.waker.wake();
        }
    }

    /// Stops the pool: queued jobs are cancelled and undelivered results
    /// orphaned (their cleanups run), then it waits up to `shutdown_wait`
    /// for the helpers to finish what they run. Returns whether they did.
    fn shutdown(&mut self) -> bool {
        let mut state = self.shared.lock();
        state.closing = true;
        let mut queue = VecDeque::with_capacity(state.queue.len());
        for task in std::mem::take(&mut state.queue) {
            match task {
                Task::Run { job, .. } => {
                    if let Some(cleanup) = job.orphan {
                        queue.push_back(Task::Cleanup(cleanup, JobOutput::Unit));
                    }
                }
                cleanup @ Task::Cleanup(..) => queue.push_back(cleanup),
            }
        }
        for done in std::mem::take(&mut state.done) {
            if let Some(cleanup) = done.orphan {
                queue.push_back(Task::Cleanup(
                    cleanup,
                    done.result.unwrap_or(JobOutput::Unit),
                ));
            }
        }
        state.queue = queue;
        state.waiting_jobs = 0;
        if !self.started {
            // No helper ever ran, so no cleanup can be owed; nothing to wait for.
            return true;
        }
        self.shared.changed.notify_all();
        let deadline = Instant::now() + self.shutdown_wait;
        while state.running > 0 || !state.queue.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "helper pool: {} job(s) still running after {:?}; exiting without them",
                    state.running,
                    self.shutdown_wait
                );
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        for i in 0..self.threads {
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name(format!("socketlab-helper-{i}"))
                .spawn(move || helper(&shared));
            if let Err(e) = spawned {
                // Fewer helpers only means slower jobs; with none at all,
                // jobs wait in the queue, which the log explains.
                log::error!("cannot start helper thread {i}: {e}");
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One helper thread: takes tasks until the pool closes.
fn helper(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        let Some(task) = state.queue.pop_front() else {
            if state.closing {
                return;
            }
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
            continue;
        };
        state.running += 1;
        if matches!(task, Task::Run { .. }) {
            state.waiting_jobs -= 1;
        }
        drop(state);
        let finished = run(task);
        state = shared.lock();
        state.running -= 1;
        if let Some(done) = finished {
            if state.closing {
                // Nobody will deliver it: the cleanup runs here and now.
                if let Some(cleanup) = done.orphan {
                    state.running += 1;
                    drop(state);
                    run(Task::Cleanup(
                        cleanup,
                        done.result.unwrap_or(JobOutput::Unit),
                    ));
                    state = shared.lock();
                    state.running -= 1;
                }
            } else {
                state.done.push(done);
                // If the loop is gone there is nobody left to tell.
                let _ = shared.waker.wake();
            }
        }
        if state.closing {
            // The pool's drop waits for the last task to finish.
            shared.changed.notify_all();
        }
    }
}

/// Runs one task with panics caught; a job's result becomes a completion.
fn run(task: Task) -> Option<Completion> {
    match task {
        Task::Run { token, serial, job } => {
            let result = match panic::catch_unwind(AssertUnwindSafe(job.work)) {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(e)) => Err(JobError::Io(e)),
                Err(payload) => {
                    let msg = panic_message(payload.as_ref());
                    log::error!("helper job {} panicked: {msg}", job.tag);
                    Err(JobError::Panicked(msg))
                }
            };
            Some(Completion {
                token,
                serial,
                tag: job.tag,
                result,
                orphan: job.orphan,
            })
        }
        Task::Cleanup(cleanup, output) => {
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| cleanup(output))) {
                log::error!(
                    "helper cleanup panicked: {}",
                    panic_message(payload.as_ref())
                );
            }
            None
        }
    }
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a
/// `String`; anything else has no message to show).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

impl Reactor {
    /// Hands finished jobs to their sessions (the waker's token fired). A
    /// result whose connection is gone, or whose session was told
    /// `on_close`, goes to its cleanup instead.
    pub(super) fn deliver_jobs(&mut self) {
        for done in self.core.pool.take_completed() {
            self.core.turn.jobs += 1;
            let listening = matches!(
                self.sources.get(done.token),
                Some(Source::Conn(c)) if c.serial == done.serial && !c.told_close
            );
            if !listening {
                trace!(
                    self.core.trace,
                    "#{} job {} orphaned: connection closed", done.token, done.tag
                );
                self.core.pool.orphan(done);
                continue;
            }
            let Completion {
                token,
                serial,
                tag,
                result,
                ..
            } = done;
            self.call(token, Some(serial), |s, cx| {
                s.on_source(SourceEvent::Job { tag, result }, cx)
            });
        }
    }

    /// The daemon begins to stop: jobs not yet started are cancelled, and
    /// their sessions told so now, before they hear `on_close`.
    pub(super) fn cancel_jobs(&mut self) {
        self.core.pool.cancel_queued();
        self.deliver_jobs();
    }
}

impl Cx<'_> {
    /// Runs blocking work on the helper pool; the result comes back as
    /// [`SourceEvent::Job`] with the job's tag. If [`QUEUE_CAPACITY`] jobs
    /// are already waiting, the job is handed back in [`QueueFull`].
    pub fn submit(&mut self, job: Job) -> Result<(), QueueFull> {
        match &mut self.back {
            super::Back::Reactor { core, .. } => core.pool.submit(self.key, self.serial, job),
            // A test keeps the job; it answers it with a `SourceEvent::Job`.
            #[cfg(test)]
            super::Back::Test { env, slot } => {
                if !env.pool_room {
                    return Err(QueueFull(job));
                }
                slot.rec.jobs.push(job);
                Ok(())
            }
        }
    }

    /// Whether [`Cx::submit`] would accept a job now.
    pub fn pool_has_room(&self) -> bool {
        match &self.back {
            super::Back::Reactor { core, .. } => core.pool.has_room(),
            #[cfg(test)]
            super::Back::Test { env, .. } => env.pool_room,
        }
    }
}

#[cfg(test)]
mod tests;
