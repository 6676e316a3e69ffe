//! Tests of the helper pool on its own: a real `mio::Poll` and waker, real
//! helper threads, no daemon.

use super::*;
use std::sync::mpsc;

/// A pool with its own poll, so tests can wait for the waker.
struct Fixture {
    poll: mio::Poll,
    events: mio::Events,
    pool: Pool,
}

fn fixture(threads: usize) -> Fixture {
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
    Fixture {
        poll,
        events: mio::Events::with_capacity(8),
        pool: Pool::new(waker, threads),
    }
}

impl Fixture {
    /// Waits (bounded) for `n` completions, the way the loop does: poll
    /// until the waker fires, then drain.
    fn completions(&mut self, n: usize) -> Vec<Completion> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "only {} of {n} completions", got.len());
            self.poll.poll(&mut self.events, Some(left)).unwrap();
            got.extend(self.pool.take_completed());
        }
        got
    }
}

/// A job that blocks until the returned sender is dropped or sent to,
/// and reports on `started` when it begins.
fn gated(tag: u64, started: mpsc::Sender<u64>) -> (Job, mpsc::Sender<()>) {
    let (open, gate) = mpsc::channel::<()>();
    let job = Job::new(tag, move || {
        started.send(tag).unwrap();
        let _ = gate.recv_timeout(Duration::from_secs(10));
        Ok(JobOutput::Size(tag))
    });
    (job, open)
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_result_comes_back_with_its_address_and_tag() {
    let mut f = fixture(2);
    f.pool
        .submit(7, 70, Job::new(3, || Ok(JobOutput::Digest([9; 32]))))
        .unwrap();
    let done = f.completions(1);
    assert_eq!((done[0].token, done[0].serial, done[0].tag), (7, 70, 3));
    assert!(matches!(done[0].result, Ok(JobOutput::Digest([9, ..]))));
}

#[test]
fn an_io_error_is_reported_as_such() {
    let mut f = fixture(1);
    f.pool
        .submit(1, 1, Job::new(1, || Err(io::ErrorKind::NotFound.into())))
        .unwrap();
    let done = f.completions(1);
    assert!(matches!(&done[0].result, Err(JobError::Io(e)) if e.kind() == io::ErrorKind::NotFound));
}

#[test]
fn a_panicking_job_reports_its_message_and_the_helper_lives_on() {
    // One helper only: if the panic killed it, the second job would
    // never run and the wait below would fail.
    let mut f = fixture(1);
    f.pool
        .submit(1, 1, Job::new(1, || panic!("disk on fire")))
        .unwrap();
    let done = f.completions(1);
    assert!(
        matches!(&done[0].result, Err(JobError::Panicked(m)) if m == "disk on fire"),
        "{:?}",
        done[0].result
    );
    f.pool
        .submit(1, 1, Job::new(2, || Ok(JobOutput::Unit)))
        .unwrap();
    let done = f.completions(1);
    assert_eq!(done[0].tag, 2);
    assert!(matches!(done[0].result, Ok(JobOutput::Unit)));
}

#[test]
fn a_full_queue_hands_the_job_back_and_frees_up_as_jobs_start() {
    let mut f = fixture(1);
    let (started_tx, started) = mpsc::channel();
    // The one helper is kept busy, so every later job waits in the queue.
    let (busy, release) = gated(0, started_tx);
    f.pool.submit(1, 1, busy).unwrap();
    assert_eq!(started.recv_timeout(WAIT).unwrap(), 0);
    for tag in 1..=QUEUE_CAPACITY as u64 {
        assert!(f.pool.has_room());
        f.pool
            .submit(1, 1, Job::new(tag, || Ok(JobOutput::Unit)))
            .unwrap();
    }
    assert!(!f.pool.has_room());
    let refused = f
        .pool
        .submit(1, 1, Job::new(999, || Ok(JobOutput::Unit)))
        .unwrap_err();
    assert_eq!(refused.0.tag(), 999, "the refused job comes back intact");
    drop(release);
    let done = f.completions(QUEUE_CAPACITY + 1);
    assert!(done.iter().all(|c| c.tag != 999));
    assert!(f.pool.has_room());
    f.pool.submit(1, 1, refused.0).unwrap();
    assert_eq!(f.completions(1)[0].tag, 999);
}

#[test]
fn an_orphaned_result_is_cleaned_up_on_a_helper_with_its_output() {
    let mut f = fixture(1);
    let (tx, rx) = mpsc::channel();
    let job = Job::new(5, || Ok(JobOutput::Size(42))).on_orphan(move |out| {
        let on = thread::current().name().unwrap_or("").to_string();
        tx.send((out, on)).unwrap();
    });
    f.pool.submit(3, 30, job).unwrap();
    let done = f.completions(1).pop().unwrap();
    // The loop finds connection 3 gone (or reused) and hands it back.
    f.pool.orphan(done);
    let (out, thread_name) = rx.recv_timeout(WAIT).unwrap();
    assert!(matches!(out, JobOutput::Size(42)));
    assert!(
        thread_name.starts_with("socketlab-helper-"),
        "{thread_name}"
    );
}

#[test]
fn a_failed_orphan_gets_unit_in_its_cleanup() {
    let mut f = fixture(1);
    let (tx, rx) = mpsc::channel();
    let job = Job::new(5, || Err(io::ErrorKind::Other.into()))
        .on_orphan(move |out| tx.send(out).unwrap());
    f.pool.submit(3, 30, job).unwrap();
    let done = f.completions(1).pop().unwrap();
    f.pool.orphan(done);
    assert!(matches!(rx.recv_timeout(WAIT).unwrap(), JobOutput::Unit));
}

#[test]
fn cancelling_reports_queued_jobs_and_spares_the_running_one() {
    let mut f = fixture(1);
    let (started_tx, started) = mpsc::channel();
    let (running, release) = gated(1, started_tx);
    f.pool.submit(1, 1, running).unwrap();
    assert_eq!(started.recv_timeout(WAIT).unwrap(), 1);
    f.pool
        .submit(2, 2, Job::new(2, || Ok(JobOutput::Unit)))
        .unwrap();
    f.pool.cancel_queued();
    let cancelled = f.completions(1);
    assert_eq!(cancelled[0].tag, 2);
    assert!(matches!(cancelled[0].result, Err(JobError::Cancelled)));
    assert!(f.pool.has_room());
    release.send(()).unwrap();
    let finished = f.completions(1);
    assert_eq!(finished[0].tag, 1);
    assert!(matches!(finished[0].result, Ok(JobOutput::Size(1))));
}

#[test]
fn shutdown_waits_for_the_running_job_and_cleans_up_the_queued_one() {
    let mut f = fixture(1);
    let (started_tx, started) = mpsc::channel();
    let (running, release) = gated(1, started_tx);
    let (ran_tx, ran) = mpsc::channel();
    let running_ran = ran_tx.clone();
    f.pool
        .submit(
            1,
            1,
            running.on_orphan(move |_| running_ran.send("running").unwrap()),
        )
        .unwrap();
    assert_eq!(started.recv_timeout(WAIT).unwrap(), 1);
    let queued_ran = ran_tx.clone();
    f.pool
        .submit(
            2,
            2,
            Job::new(2, || panic!("must not run")).on_orphan(move |out| {
                assert!(matches!(out, JobOutput::Unit));
                queued_ran.send("queued").unwrap()
            }),
        )
        .unwrap();
    // The running job is let go only once shutdown has begun, so
    // shutdown really has a running job to wait for.
    let shared = Arc::clone(&f.pool.shared);
    let releaser = thread::spawn(move || {
        let deadline = Instant::now() + WAIT;
        let mut state = shared.lock();
        while !state.closing && Instant::now() < deadline {
            state = shared
                .changed
                .wait_timeout(state, Duration::from_millis(10))
                .unwrap()
                .0;
        }
        drop(state);
        release.send(()).unwrap();
    });
    assert!(f.pool.shutdown(), "shutdown gave up on a job that finished");
    releaser.join().unwrap();
    let mut cleaned: Vec<&str> = ran.try_iter().collect();
    cleaned.sort();
    // Both results reached nobody, so both cleanups ran before
    // shutdown returned.
    assert_eq!(cleaned, ["queued", "running"]);
    assert!(f.pool.take_completed().is_empty());
}

#[test]
fn shutdown_gives_up_on_a_stuck_job_after_its_wait() {
    let mut f = fixture(1);
    f.pool.shutdown_wait = Duration::from_millis(100);
    let (started_tx, started) = mpsc::channel();
    let (stuck, release) = gated(1, started_tx);
    f.pool.submit(1, 1, stuck).unwrap();
    assert_eq!(started.recv_timeout(WAIT).unwrap(), 1);
    let began = Instant::now();
    assert!(!f.pool.shutdown(), "the job was still running");
    assert!(began.elapsed() < WAIT, "the wait was not bounded");
    drop(release);
}

#[test]
fn a_pool_never_used_starts_no_thread_and_drops_at_once() {
    let f = fixture(2);
    assert!(!f.pool.started);
    drop(f);
}
