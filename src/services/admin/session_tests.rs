//! The admin session through the test harness: requests in, responses
//! out, over one connection, with keep-alive, pipelining, the statuses of
//! the contract, and the hold on input while the output is full. The
//! parsing and routing underneath are tested in admin's own `tests`.

use crate::config::Config;
use crate::service_id::ServiceId;
use crate::services::testing::{Ending, Harness, harness};

/// One response as the client would read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Splits the output into responses, each head by its blank line and
/// each body by its `Content-Length` (none for `head_only` responses).
fn answers(out: Vec<u8>, head_only: bool) -> Vec<Answer> {
    let text = String::from_utf8(out).expect("admin answers in UTF-8");
    let mut rest = text.as_str();
    let mut all = Vec::new();
    while !rest.is_empty() {
        let end = rest.find("\r\n\r\n").expect("a whole head");
        let head = rest[..end].to_string();
        rest = &rest[end + 4..];
        let status = head[9..12].parse().expect("a status code");
        let mut answer = Answer {
            status,
            head,
            body: String::new(),
        };
        if !head_only {
            let len: usize = answer.header("Content-Length").unwrap().parse().unwrap();
            answer.body = rest[..len].to_string();
            rest = &rest[len..];
        }
        all.push(answer);
    }
    all
}

fn admin() -> (Harness, usize) {
    let mut h = harness(Config::default());
    let c = h.open(ServiceId::Admin);
    (h, c)
}

const GET_STATS: &[u8] = b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n";

// ----- Routing -------------------------------------------------------------

#[test]
fn stats_and_metrics_are_served_and_the_connection_persists() {
    let (mut h, c) = admin();
    h.input(c, GET_STATS);
    h.input(c, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = answers(h.output(c), false);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].status, 200);
    assert_eq!(got[0].header("Content-Type"), Some("application/json"));
    assert!(got[0].body.starts_with("{\"services\":"), "{}", got[0].body);
    assert_eq!(got[1].status, 200);
    assert_eq!(got[1].header("Content-Type"), Some(super::PROMETHEUS_TEXT));
    assert!(got[1].body.contains("service=\"admin\""));
    assert!(h.is_open(c));
    assert_eq!(h.recorded(c).ending, None);
}

#[test]
fn an_unknown_path_is_404_and_another_method_405_and_both_persist() {
    let (mut h, c) = admin();
    h.input(
        c,
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\nPOST /stats HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let got = answers(h.output(c), false);
    assert_eq!(got[0].status, 404);
    assert_eq!(got[1].status, 405);
    assert_eq!(got[1].header("Allow"), Some("GET, HEAD"));
    assert!(h.is_open(c));
}

#[test]
fn head_gets_the_head_of_get_without_the_body() {
    let (mut h, c) = admin();
    h.input(c, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = answers(h.output(c), true);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, 200);
    assert!(
        got[0]
            .header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
}

#[test]
fn a_malformed_request_is_400_and_the_connection_closes() {
    let (mut h, c) = admin();
    h.input(c, b"GET /stats HTTP/1.1\r\n\r\n"); // No Host.
    let got = answers(h.output(c), false);
    assert_eq!(got[0].status, 400);
    assert_eq!(got[0].header("Connection"), Some("close"));
    assert_eq!(h.recorded(c).ending, Some(Ending::Closed));
}

#[test]
fn a_head_over_max_head_is_431_and_the_connection_closes() {
    let (mut h, c) = admin();
    let mut input = b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
    input.resize(super::MAX_HEAD + 1, b'a');
    h.input(c, &input);
    let got = answers(h.output(c), false);
    assert_eq!(got[0].status, 431);
    assert_eq!(h.recorded(c).ending, Some(Ending::Closed));
}

// ----- Keep-alive and pipelining -------------------------------------------

#[test]
fn connection_close_and_http_1_0_end_the_connection_after_the_answer() {
    for request in [
        &b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /stats HTTP/1.0\r\n\r\n",
    ] {
        let (mut h, c) = admin();
        h.input(c, request);
        let got = answers(h.output(c), false);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, 200);
        assert_eq!(h.recorded(c).ending, Some(Ending::Closed));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_partial_one_waits() {
    let (mut h, c) = admin();
    let mut input = Vec::new();
    input.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    input.extend_from_slice(GET_STATS);
    input.extend_from_slice(b"GET /metr");
    h.input(c, &input);
    let got = answers(h.output(c), false);
    assert_eq!(got.iter().map(|a| a.status).collect::<Vec<_>>(), [404, 200]);
    assert_eq!(h.unconsumed(c), b"GET /metr");
    h.input(c, b"ics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(answers(h.output(c), false)[0].status, 200);
}

#[test]
fn the_clients_fin_ends_after_the_answers_and_drops_an_unfinished_head() {
    let (mut h, c) = admin();
    h.input(c, GET_STATS);
    h.input(c, b"GET /sta");
    h.peer_closed(c);
    assert_eq!(answers(h.output(c), false).len(), 1);
    assert_eq!(h.recorded(c).ending, Some(Ending::Closed));
}

#[test]
fn while_the_output_is_full_requests_wait_and_are_answered_as_it_drains() {
    let (mut h, c) = admin();
    h.set_output_limit(c, 1);
    h.stall(c);
    h.input(c, &[GET_STATS, GET_STATS, GET_STATS].concat());
    assert_eq!(answers(h.output(c), false).len(), 1);
    assert!(h.recorded(c).held);
    assert_eq!(h.unconsumed(c).len(), 2 * GET_STATS.len());
    h.set_output_limit(c, 1 << 20);
    h.drain(c);
    assert_eq!(answers(h.output(c), false).len(), 2);
    assert!(!h.recorded(c).held);
    assert!(h.unconsumed(c).is_empty());
}
