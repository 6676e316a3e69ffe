//! The harness's own promises, with sessions made for the purpose: mail
//! is dropped for a connection that is gone, held input waits for the
//! hold to lift, jobs are kept for the test to answer.

use std::time::SystemTime;

use super::*;
use crate::reactor::{JobOutput, ServiceLimits};

/// Services that open sessions of a kind the test names.
struct Probes;

impl Services for Probes {
    fn open_session(&mut self, _service: ServiceId) -> Box<dyn Session> {
        Box::new(Relay { to: None })
    }
    fn answer_datagram(&self, _: ServiceId, _: &[u8], _: SystemTime, _: &mut Vec<u8>) -> bool {
        false
    }
    fn limits(&self, _service: ServiceId) -> ServiceLimits {
        ServiceLimits::default()
    }
    fn poll(&mut self, _now: Instant) -> Option<Instant> {
        None
    }
    fn is_busy(&self) -> bool {
        false
    }
}

/// Mails every line it gets to `to`; `hold` holds input, `free` lifts
/// the hold, `job` submits a job.
struct Relay {
    to: Option<(usize, u64)>,
}

impl Session for Relay {
    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        match input {
            b"hold" => cx.hold_input(true),
            b"job" => {
                let full = cx.submit(Job::new(7, || Ok(JobOutput::Unit))).is_err();
                cx.write(if full { b"full" } else { b"queued" });
            }
            _ => {
                if let Some((token, serial)) = self.to {
                    cx.send_to(token, serial, Bytes::copy_from_slice(input));
                }
                cx.write(b"ok");
            }
        }
        input.len()
    }
    fn on_source(&mut self, event: SourceEvent, cx: &mut Cx<'_>) {
        if let SourceEvent::Job { tag, result } = event {
            cx.write(format!("job {tag} {}", result.is_ok()).as_bytes());
        }
        cx.hold_input(false);
    }
}

#[test]
fn mail_reaches_an_open_connection_and_is_dropped_once_it_closed() {
    let mut h = Harness::new(Probes);
    let b = h.open(ServiceId::Echo);
    let a = h.open_with(
        ServiceId::Echo,
        Box::new(Relay {
            to: Some((b, 1)), // b's serial: the first connection opened.
        }),
    );
    h.input(a, b"hi");
    assert_eq!(h.output(b), b"hi");
    h.close(b, CloseReason::Error);
    h.input(a, b"again");
    assert!(h.output(b).is_empty());
    assert_eq!(h.output(a), b"okok");
}

#[test]
fn held_input_waits_until_the_hold_lifts_then_is_offered_at_once() {
    let mut h = Harness::new(Probes);
    let c = h.open(ServiceId::Echo);
    h.input(c, b"hold");
    h.input(c, b"x");
    assert_eq!(h.unconsumed(c), b"x");
    assert!(h.output(c).is_empty());
    h.source(
        c,
        SourceEvent::Ready {
            token: 0,
            readable: true,
            writable: false,
            closed: false,
        },
    );
    assert!(h.unconsumed(c).is_empty());
    assert_eq!(h.output(c), b"ok");
}

#[test]
fn jobs_are_kept_for_the_test_and_a_full_queue_hands_them_back() {
    let mut h = Harness::new(Probes);
    let c = h.open(ServiceId::Echo);
    h.input(c, b"job");
    assert_eq!(h.output(c), b"queued");
    let jobs = std::mem::take(&mut h.recorded(c).jobs);
    assert_eq!(jobs.iter().map(Job::tag).collect::<Vec<_>>(), [7]);
    h.source(
        c,
        SourceEvent::Job {
            tag: 7,
            result: Ok(JobOutput::Unit),
        },
    );
    assert_eq!(h.output(c), b"job 7 true");
    h.set_pool_room(false);
    h.input(c, b"job");
    assert_eq!(h.output(c), b"full");
    assert!(h.recorded(c).jobs.is_empty());
}
