//! The helper pool: where blocking work goes so the loop never waits.
//!
//! Some system calls have no non-blocking form. `fsync()` waits for the
//! disk; a directory scan or a large `open()` on a slow filesystem can
//! stall for milliseconds. Done on the loop thread, every connection would
//! wait with it. libuv's answer, followed here, is a small pool of helper
//! threads: the loop hands a job over and goes on serving; the helper runs
//! it, puts the result in a completion queue and pokes a [`mio::Waker`],
//! which makes the loop's `poll()` return with the waker's token. The loop
//! then drains the queue and hands each result to the session that asked.
//!
//! The threads start on first use, so a daemon that never submits blocking
//! work runs on exactly one thread.

use std::any::Any;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use mio::Waker;

/// A unit of blocking work. Its result is delivered back to the loop.
pub type Job = Box<dyn FnOnce() -> JobResult + Send>;

/// Whatever a job produced; the session that submitted it downcasts it.
pub type JobResult = Box<dyn Any + Send>;

/// A finished job, addressed to the connection that submitted it.
pub struct Completion {
    /// The connection's token...
    pub token: usize,
    /// ...and its serial number, so a result never reaches a newer
    /// connection that happens to reuse the token.
    pub serial: u64,
    pub result: JobResult,
}

/// A fixed set of helper threads sharing one job queue.
pub struct Pool {
    /// Jobs go in here; `None` until the first job starts the threads.
    jobs: Option<Sender<(usize, u64, Job)>>,
    /// Finished jobs, filled by helpers, drained by the loop.
    done: Arc<Mutex<Vec<Completion>>>,
    /// Pokes the loop's `poll()` after a completion is queued.
    waker: Arc<Waker>,
    threads: usize,
}

impl Pool {
    pub fn new(waker: Arc<Waker>, threads: usize) -> Pool {
        Pool {
            jobs: None,
            done: Arc::new(Mutex::new(Vec::new())),
            waker,
            threads: threads.max(1),
        }
    }

    /// Queues `job` on behalf of connection `token`/`serial`.
    pub fn submit(&mut self, token: usize, serial: u64, job: Job) {
        let jobs = self.jobs.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<(usize, u64, Job)>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.threads {
                let rx = Arc::clone(&rx);
                let done = Arc::clone(&self.done);
                let waker = Arc::clone(&self.waker);
                thread::Builder::new()
                    .name(format!("socketlab-helper-{i}"))
                    .spawn(move || helper(&rx, &done, &waker))
                    .expect("spawning a helper thread");
            }
            tx
        });
        // The receiving side lives as long as any helper does, and helpers
        // only stop when this sender is dropped, so sending cannot fail.
        let _ = jobs.send((token, serial, job));
    }

    /// Takes every finished job. Called when the waker's token fires.
    pub fn take_completed(&self) -> Vec<Completion> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn helper(jobs: &Mutex<Receiver<(usize, u64, Job)>>, done: &Mutex<Vec<Completion>>, waker: &Waker) {
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((token, serial, job)) = next else {
            return; // The pool was dropped: the daemon is exiting.
        };
        let result = job();
        done.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Completion {
                token,
                serial,
                result,
            });
        // If the loop is gone there is nobody left to tell.
        let _ = waker.wake();
    }
}
