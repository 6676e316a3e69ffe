//! The helper pool and file ranges seen from a session, through a real
//! reactor: a connection over a Unix socket pair, a probe session in place
//! of a service, and loop turns driven one at a time by the test.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::connection::{Phase, Stream};
use super::pool::{JobError, JobOutput, POOL_THREADS, QUEUE_CAPACITY};
use super::sendfile::FILE_WINDOW;
use super::*;
use crate::service_id::ServiceId;

const WAIT: Duration = Duration::from_secs(10);

/// What the probe session was told.
#[derive(Default)]
struct Seen {
    jobs: Vec<(u64, Result<JobOutput, JobError>)>,
    /// `pending_output()` at each `on_output_drained`.
    drained_at: Vec<usize>,
    closed: Vec<CloseReason>,
    /// "job" and "close", in the order they came.
    order: Vec<&'static str>,
}

struct Probe {
    seen: Rc<RefCell<Seen>>,
}

impl Session for Probe {
    fn on_input(&mut self, input: &[u8], _cx: &mut Cx<'_>) -> usize {
        input.len()
    }
    fn wants_output_drained(&self) -> bool {
        true
    }
    fn on_output_drained(&mut self, cx: &mut Cx<'_>) {
        self.seen.borrow_mut().drained_at.push(cx.pending_output());
    }
    fn on_source(&mut self, event: SourceEvent, _cx: &mut Cx<'_>) {
        if let SourceEvent::Job { tag, result } = event {
            let mut seen = self.seen.borrow_mut();
            seen.jobs.push((tag, result));
            seen.order.push("job");
        }
    }
    fn on_close(&mut self, reason: CloseReason, _cx: &mut Cx<'_>) {
        let mut seen = self.seen.borrow_mut();
        seen.closed.push(reason);
        seen.order.push("close");
    }
}

/// The services of a reactor that hosts only probes: every connection's
/// session is replaced by the test right after it is admitted.
struct NoServices;

impl Services for NoServices {
    fn open_session(&mut self, _service: ServiceId) -> Box<dyn Session> {
        Box::new(Probe {
            seen: Rc::default(),
        })
    }
    fn answer_datagram(&self, _: ServiceId, _: &[u8], _: SystemTime, _: &mut Vec<u8>) -> bool {
        false
    }
    fn limits(&self, _service: ServiceId) -> ServiceLimits {
        ServiceLimits {
            max_connections: 0,
            idle_timeout: None,
            max_pending_output: 256 * 1024,
        }
    }
    fn poll(&mut self, _now: Instant) -> Option<Instant> {
        None
    }
    fn is_busy(&self) -> bool {
        false
    }
}

/// A reactor with no listeners and no real services.
fn reactor() -> Reactor {
    Reactor::new(Vec::new(), NoServices, 100, false).unwrap()
}

/// Admits one end of a socket pair as a discard connection, then puts a
/// probe in place of its session. Returns the key, what the probe sees,
/// and the client's end.
fn connect(r: &mut Reactor) -> (usize, Rc<RefCell<Seen>>, UnixStream) {
    let (ours, client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    client.set_nonblocking(true).unwrap();
    let serial = r.core.next_serial;
    r.admit(
        ServiceId::Discard,
        Stream::Unix(mio::net::UnixStream::from_std(ours)),
        None,
    );
    let seen = Rc::new(RefCell::new(Seen::default()));
    let key = r
        .sources
        .iter_mut()
        .find_map(|(k, s)| match s {
            Source::Conn(c) if c.serial == serial => {
                c.session = Some(Box::new(Probe {
                    seen: Rc::clone(&seen),
                }));
                c.wants_drain = true;
                Some(k)
            }
            _ => None,
        })
        .unwrap();
    (key, seen, client)
}

/// One loop turn, through `Reactor::run`'s own steps (without the services'
/// poll and the turn's figures), waiting at most `timeout`.
fn turn(r: &mut Reactor, timeout: Duration) {
    let timeout = if r.core.ready.is_empty() {
        timeout
    } else {
        Duration::ZERO
    };
    r.poll.poll(&mut r.events, Some(timeout)).unwrap();
    r.core.now = Instant::now();
    r.core.turn.begin(&r.core.metrics);
    r.serve_ready_queue();
    r.dispatch_events();
    r.fire_timers();
    r.flush_mailed();
    r.free_dead();
}

/// Turns the loop until `done` holds: bounded in turns and time.
fn turn_until(r: &mut Reactor, mut done: impl FnMut(&mut Reactor) -> bool) {
    let deadline = Instant::now() + WAIT;
    for _ in 0..100_000 {
        if done(r) {
            return;
        }
        assert!(Instant::now() < deadline, "condition not met in time");
        turn(r, Duration::from_millis(20));
    }
    panic!("condition not met in 100,000 turns");
}

/// A job that reports when it starts, then waits for its gate.
fn gated(tag: u64) -> (Job, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (started_tx, started) = mpsc::channel();
    let (open, gate) = mpsc::channel::<()>();
    let job = Job::new(tag, move || {
        started_tx.send(()).unwrap();
        let _ = gate.recv_timeout(WAIT);
        Ok(JobOutput::Size(tag))
    });
    (job, started, open)
}

// ----- Jobs ---------------------------------------------------------------

#[test]
fn a_job_result_reaches_its_live_session_with_its_tag() {
    let mut r = reactor();
    let (key, seen, _client) = connect(&mut r);
    r.call(key, None, |_, cx| {
        cx.submit(Job::new(7, || Ok(JobOutput::Size(42)))).unwrap()
    });
    turn_until(&mut r, |_| !seen.borrow().jobs.is_empty());
    let seen = seen.borrow();
    assert_eq!(seen.jobs.len(), 1);
    assert!(matches!(seen.jobs[0], (7, Ok(JobOutput::Size(42)))));
}

#[test]
fn a_result_for_a_connection_gone_runs_its_cleanup_and_reaches_no_newer_one() {
    let mut r = reactor();
    let (key, _, _client) = connect(&mut r);
    let (job, started, release) = gated(1);
    let (cleaned_tx, cleaned) = mpsc::channel();
    r.call(key, None, |_, cx| {
        cx.submit(job.on_orphan(move |out| cleaned_tx.send(out).unwrap()))
            .unwrap()
    });
    started.recv_timeout(WAIT).unwrap();
    // The connection ends while its job runs, and a new one takes its key.
    r.kill(key);
    turn(&mut r, Duration::ZERO);
    let (newer, newer_seen, _client2) = connect(&mut r);
    assert_eq!(newer, key, "the key was reused");
    release.send(()).unwrap();

    let deadline = Instant::now() + WAIT;
    let out = loop {
        assert!(Instant::now() < deadline, "the cleanup never ran");
        turn(&mut r, Duration::from_millis(20));
        if let Ok(out) = cleaned.try_recv() {
            break out;
        }
    };
    assert!(matches!(out, JobOutput::Size(1)), "cleanup got the output");
    assert!(
        newer_seen.borrow().jobs.is_empty(),
        "delivered to a stranger"
    );
}

#[test]
fn a_session_sees_the_queue_full_and_gets_its_job_back() {
    let mut r = reactor();
    let (key, _, _client) = connect(&mut r);
    // Every helper is kept busy, so the jobs below stay queued.
    let mut releases = Vec::new();
    for (busy, started, release) in (100..100 + POOL_THREADS as u64).map(gated) {
        r.call(key, None, |_, cx| cx.submit(busy).unwrap());
        started.recv_timeout(WAIT).unwrap();
        releases.push(release);
    }
    let refused = r
        .call(key, None, |_, cx| {
            for tag in 1..=QUEUE_CAPACITY as u64 {
                assert!(cx.pool_has_room());
                cx.submit(Job::new(tag, || Ok(JobOutput::Unit))).unwrap();
            }
            assert!(!cx.pool_has_room());
            cx.submit(Job::new(99, || Ok(JobOutput::Unit)))
                .map_err(|full| full.0.tag())
        })
        .unwrap();
    assert_eq!(refused, Err(99));
    drop(releases);
}

#[test]
fn shutdown_tells_sessions_of_cancelled_jobs_before_closing_them() {
    let mut r = reactor();
    let (key, seen, _client) = connect(&mut r);
    // Every helper is kept busy, so the last job waits in the queue.
    let (cleaned_tx, cleaned) = mpsc::channel();
    let mut releases = Vec::new();
    for (job, started, release) in (1..=POOL_THREADS as u64).map(gated) {
        let cleaned_tx = cleaned_tx.clone();
        let job = job.on_orphan(move |out| cleaned_tx.send(out).unwrap());
        r.call(key, None, |_, cx| cx.submit(job).unwrap());
        started.recv_timeout(WAIT).unwrap();
        releases.push(release);
    }
    let queued = POOL_THREADS as u64 + 1;
    r.call(key, None, |_, cx| {
        cx.submit(Job::new(queued, || Ok(JobOutput::Unit))).unwrap()
    });
    r.begin_shutdown();
    {
        let seen = seen.borrow();
        assert_eq!(seen.order, ["job", "close"], "cancelled, then closed");
        assert!(
            matches!(seen.jobs[..], [(tag, Err(JobError::Cancelled))] if tag == queued),
            "{:?}",
            seen.jobs
        );
        assert_eq!(seen.closed, [CloseReason::Shutdown]);
    }
    // The running jobs were spared; they finish after `on_close`, so their
    // results go to their cleanups, not to the closed session.
    for release in releases {
        release.send(()).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    let mut outputs = Vec::new();
    while outputs.len() < POOL_THREADS {
        assert!(Instant::now() < deadline, "cleanups did not run");
        turn(&mut r, Duration::from_millis(20));
        outputs.extend(cleaned.try_iter());
    }
    assert!(outputs.iter().all(|o| matches!(o, JobOutput::Size(_))));
    assert_eq!(seen.borrow().jobs.len(), 1, "nothing after on_close");
}

// ----- File ranges --------------------------------------------------------

fn file_of(len: usize) -> (Arc<File>, Vec<u8>) {
    let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&content).unwrap();
    (Arc::new(f), content)
}

/// Turns the loop and reads the client's end until it has `want` bytes or
/// sees EOF. Returns what arrived and whether EOF was seen.
fn receive(r: &mut Reactor, client: &mut UnixStream, want: usize) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = vec![0; 256 * 1024];
    let deadline = Instant::now() + WAIT;
    for _ in 0..100_000 {
        assert!(Instant::now() < deadline, "{} of {want} bytes", got.len());
        turn(r, Duration::from_millis(5));
        loop {
            match client.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (got, true),
                Err(e) => panic!("read: {e}"),
            }
        }
        if got.len() >= want {
            return (got, false);
        }
    }
    panic!("{} of {want} bytes in 100,000 turns", got.len());
}

#[test]
fn a_file_range_goes_out_between_bytes_without_pausing_the_connection() {
    const LEN: usize = 4 << 20;
    let mut r = reactor();
    let (key, seen, mut client) = connect(&mut r);
    let (file, content) = file_of(LEN);
    r.call(key, None, |_, cx| {
        cx.write(b"head:");
        cx.send_file(Arc::clone(&file), 0, LEN as u64);
        cx.write(b":tail");
    });
    let Some(Source::Conn(conn)) = r.sources.get(key) else {
        panic!("connection gone");
    };
    // 4 MiB queued, far above the 256 KiB high watermark, yet the range
    // counts as one window, so the connection keeps reading.
    assert!(conn.pending_output() <= FILE_WINDOW + 10);
    assert!(!conn.paused, "a range counted whole would pause reading");

    let (got, eof) = receive(&mut r, &mut client, LEN + 10);
    assert!(!eof);
    assert_eq!(&got[..5], b"head:");
    assert!(got[5..5 + LEN] == content[..], "file bytes misplaced");
    assert_eq!(&got[5 + LEN..], b":tail");
    // The session heard "room for more" while the transfer went on, each
    // time with no more than the low watermark (64 KiB here) pending.
    let seen = seen.borrow();
    assert!(!seen.drained_at.is_empty(), "on_output_drained never came");
    assert!(seen.drained_at.iter().all(|&p| p <= 64 * 1024));
}

#[test]
fn a_file_cut_short_ends_the_connection_after_what_it_had() {
    let mut r = reactor();
    let (key, seen, mut client) = connect(&mut r);
    let (file, content) = file_of(100_000);
    file.set_len(10_000).unwrap();
    r.call(key, None, |_, cx| {
        cx.send_file(Arc::clone(&file), 0, 100_000)
    });
    let (got, eof) = receive(&mut r, &mut client, 100_000);
    assert!(
        eof,
        "the stream must end, not wait for bytes that cannot come"
    );
    assert!(got == content[..10_000], "only what the file still had");
    assert_eq!(seen.borrow().closed, [CloseReason::Error]);
    assert!(!matches!(r.sources.get(key), Some(Source::Conn(c)) if c.phase != Phase::Dead));
}

/// One `poll()` returns at most `EVENTS_PER_TURN` events; the rest come
/// with the next one, so a turn's work is bounded and nobody is skipped.
#[test]
fn a_poll_returns_at_most_a_turns_worth_of_events_and_the_next_gets_the_rest() {
    let mut r = Reactor::new(Vec::new(), NoServices, 1_000, false).unwrap();
    let extra = 44;
    let clients: Vec<(usize, UnixStream)> = (0..EVENTS_PER_TURN + extra)
        .map(|_| {
            let (key, _, client) = connect(&mut r);
            (key, client)
        })
        .collect();
    // Registration reports every socket writable once: take those first.
    let mut drained = false;
    for _ in 0..100 {
        r.poll.poll(&mut r.events, Some(Duration::ZERO)).unwrap();
        if r.events.is_empty() {
            drained = true;
            break;
        }
    }
    assert!(drained, "the initial events never ran out");
    for (_, client) in &clients {
        (&*client).write_all(b"x").unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    r.poll.poll(&mut r.events, Some(WAIT)).unwrap();
    assert_eq!(r.events.iter().count(), EVENTS_PER_TURN);
    seen.extend(r.events.iter().map(|e| e.token().0));
    r.poll.poll(&mut r.events, Some(WAIT)).unwrap();
    assert_eq!(r.events.iter().count(), extra);
    seen.extend(r.events.iter().map(|e| e.token().0));
    let keys: std::collections::HashSet<usize> = clients.iter().map(|(k, _)| *k).collect();
    assert_eq!(seen, keys, "every connection's event came, once");
}
