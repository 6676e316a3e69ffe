//! admin: live metrics over HTTP/1.1, served by the very loop they measure.
//!
//! # Format
//!
//! ```text
//! client: GET /stats HTTP/1.1\r\n
//!         Host: 127.0.0.1:7000\r\n
//!         \r\n
//! daemon: HTTP/1.1 200 OK\r\n
//!         Date: Tue, 03 Nov 2026 09:05:01 GMT\r\n
//!         Content-Type: application/json\r\n
//!         Content-Length: 731\r\n
//!         Cache-Control: no-store\r\n
//!         \r\n
//!         {"services":{"admin":{"connections_open":1,...},"echo":{...}},"loop":{"iterations":9,...}}
//! ```
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` | 200, Prometheus text exposition 0.0.4 |
//! | `GET /stats` | 200, the same figures as one JSON object |
//! | `GET /` | 200, the dashboard: an HTML page whose script polls `/stats` |
//! | `HEAD` of any path | the head `GET` would get, without the body |
//! | `GET` of another path | 404 |
//! | another method on the paths above | 405, with `Allow: GET, HEAD` |
//! | a malformed request | 400, and the connection closes |
//!
//! The figures are those of every service the daemon hosts (implemented
//! and enabled), in the order of PROTOCOL.md §1, and of the loop. The
//! admin endpoint is a service like the others, so its own connections
//! count under `service="admin"`: the connection asking is already open
//! and its request already received, but the answer is not yet sent.
//!
//! # The part of HTTP/1.1 spoken here
//!
//! Requests are parsed with `httparse`, which checks the grammar of RFC
//! 9112 without allocating and answers "partial" until a head is whole:
//! the very question a non-blocking reader asks after each read.
//!
//! - **Persistent connections.** An HTTP/1.1 connection stays open after
//!   a response unless the client sent `Connection: close`; an HTTP/1.0
//!   one only if it sent `Connection: keep-alive` (RFC 9112 §9.3).
//! - **Pipelining.** A client may send several requests without waiting
//!   for answers. Each is answered as soon as its head is complete, in
//!   the order received, on the one connection: answers cannot overtake
//!   each other.
//! - **A deadline for every head.** A client has `admin.header_timeout_s`
//!   (default 10 s) to finish a request head, counted from the moment the
//!   connection waits for it: when it opens, and again after each answer.
//!   Past it the client gets 408 and the connection closes. Without it, a
//!   client that sends one byte every few seconds (*slowloris*) holds a
//!   connection for ever, since each byte resets the idle timeout; a few
//!   thousand such clients fill the daemon. No deadline runs while the
//!   daemon itself is not reading (output full, below): the wait is then
//!   the daemon's, not the client's.
//! - **Bounded input.** A request head may take [`MAX_HEAD`] bytes and
//!   [`MAX_HEADERS`] header fields; more is answered with 431 and the
//!   connection closes, so a client never makes the daemon hold more than
//!   that (plus one read) for it.
//! - **Bounded output.** While the connection's unsent output is at its
//!   limit (`admin.max_pending_output`), no further request is answered
//!   and the session stops taking input (`Cx::hold_input`); answering
//!   resumes as the client reads. A client that pipelines without reading
//!   gets its kernel buffers filled, not the daemon's memory.
//! - **No request bodies.** None of these resources takes one, so the
//!   server never reads one. A request announcing a body (a
//!   `Content-Length` above zero, or any `Transfer-Encoding`) is answered
//!   as usual, but with `Connection: close`: its body would otherwise be
//!   read as the next request's head. The reactor's lingering close reads
//!   and drops what follows, so the client sees a FIN, not a reset.
//! - **Strictness.** An HTTP/1.1 request must carry exactly one `Host`
//!   (RFC 9112 §3.2); a bad `Content-Length`, a target that is neither a
//!   path nor an absolute URL, or anything `httparse` refuses (an HTTP
//!   version other than 1.0 and 1.1 included) is a malformed request.
//! - **The client's FIN.** Requests already received are still answered,
//!   then the connection closes; an unfinished head is dropped unanswered.
//!
//! # State
//!
//! ```text
//!                 complete head: answered, connection persists
//!                       .------------.
//!                       v            |
//!   on_open ------> KeepAlive -------'
//!                    |      \
//!      client's FIN  |       \  Connection: close, HTTP/1.0, a body,
//!                    v        \  a malformed or oversized head
//!               InputEnded     '-----------------------> Closed
//!                    |                                     ^ ^
//!                    '--- the requests it holds answered --' |
//!                                                            |
//!      KeepAlive, head not complete by its deadline: 408 ----'
//! ```
//!
//! Whether more input is taken is a separate matter, decided by output
//! room (see "Bounded output" above), in any state.
//!
//! # What it costs the loop
//!
//! Nothing on the hot path: the counters are plain integers the loop keeps
//! anyway (`reactor::metrics`), and they are only read, and formatted,
//! when a request asks. A dashboard polling once a second costs the daemon
//! one short request per second.

//!
//! # Where things are
//!
//! - `mod.rs` (this file): the session, its state, and the routing of a
//!   request to its answer ([`respond`]).
//! - [`http`]: the part of HTTP/1.1 spoken here, request heads in and
//!   responses out, pure and allocation-light.
//! - [`figures`]: the one table of figures behind `/metrics` and `/stats`.
//! - `dashboard.html`: the page served at `/`.

mod figures;
mod http;

use std::time::{Duration, Instant, SystemTime};

use super::{Cx, ServiceId};
use crate::reactor::Metrics;
pub use figures::{Figures, PROMETHEUS_TEXT};
pub use http::{
    MAX_HEAD, MAX_HEADERS, Method, Parsed, Persistence, Rejection, Request, Resource, Response,
    Status, parse_request,
};

/// The dashboard, kept in a file of its own so it reads as HTML.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Where an admin connection stands (see the module docs' diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Requests are read and answered; the connection persists.
    #[default]
    KeepAlive,
    /// The client shut down its sending side: what it sent is answered,
    /// then the connection closes.
    InputEnded,
    /// The last response is written and the close requested; nothing more
    /// is answered.
    Closed,
}

/// Why answering stopped for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// No complete request head is waiting: more input is needed.
    NeedInput,
    /// The output is at its limit: the client must read first.
    OutputFull,
    /// The connection is closing.
    Closed,
}

/// One admin connection: its keep-alive state and its head deadline.
/// Requests received and not answered yet (the unfinished head of the next
/// request, and, while output is full, whole requests waiting their turn)
/// stay unconsumed with the reactor, which offers them again when more
/// arrives or the hold on input lifts.
#[derive(Default)]
pub struct Session {
    state: State,
    /// When the head being waited for must be complete (see "A deadline
    /// for every head"); `None` while no head is waited for (output full,
    /// closing) or when `admin.header_timeout_s` is 0.
    head_deadline: Option<Instant>,
    /// The earliest wake-up asked of the reactor and not yet delivered.
    /// Wake-ups cannot be cancelled, so a later deadline needs no new one
    /// while an earlier wake-up is pending: that one re-arms for it.
    wake_at: Option<Instant>,
}

impl super::Session for Session {
    /// Starts the clock for the first request head.
    fn on_open(&mut self, cx: &mut Cx<'_>) {
        self.await_head(cx);
    }

    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        if self.state == State::Closed {
            return input.len();
        }
        self.answer(input, cx)
    }

    fn on_peer_closed(&mut self, input: &[u8], cx: &mut Cx<'_>) {
        if self.state == State::KeepAlive {
            self.state = State::InputEnded;
        }
        if input.is_empty() {
            self.answer(input, cx);
        } else {
            // Requests wait (the output is full): answered through
            // `on_input` as the output drains, like any held input.
            cx.offer_input_again();
        }
    }

    fn wants_output_drained(&self) -> bool {
        true
    }

    /// The client read enough for more answers to be written.
    fn on_output_drained(&mut self, cx: &mut Cx<'_>) {
        cx.hold_input(false);
    }

    /// A head not complete by its deadline gets 408 and the close. A
    /// wake-up for an older, later or no deadline finds nothing due, and
    /// only re-arms.
    fn on_timer(&mut self, cx: &mut Cx<'_>) {
        self.wake_at = None;
        match self.head_deadline {
            // Only a connection waiting for a head has a deadline; one that
            // is closing, or answering what the client sent before its
            // FIN, needs no wake-up.
            _ if self.state != State::KeepAlive => self.head_deadline = None,
            Some(deadline) if deadline <= cx.now() => {
                self.head_deadline = None;
                let timeout = cx.shared().config.admin.header_timeout_s;
                let rejection = Rejection::new(
                    Status::RequestTimeout,
                    format!("request head not complete within {timeout} s"),
                );
                let date = http_date(cx.wall_time());
                let response = rejection.response();
                cx.write_with(|out| response.encode(false, date.as_deref(), out));
                self.state = State::Closed;
                cx.close();
            }
            Some(deadline) => self.wake(deadline, cx),
            None => {}
        }
    }
}

impl Session {
    /// Answers the complete requests at the start of `input`, in order,
    /// for as long as the output has room, then decides what the
    /// connection waits for. Returns the bytes answered.
    fn answer(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        let mut answered = 0;
        let pause = loop {
            if self.state == State::Closed {
                break Pause::Closed;
            }
            let waiting = &input[answered..];
            if waiting.is_empty() {
                break Pause::NeedInput;
            }
            if cx.pending_output() >= cx.output_limit() {
                break Pause::OutputFull;
            }
            let (response, head_only) = match parse_request(waiting) {
                Parsed::Incomplete => break Pause::NeedInput,
                Parsed::Request { request, len } => {
                    answered += len;
                    let hosted = hosted_services(cx);
                    // With several reactors the figures are the sum of
                    // theirs, each also reported on its own.
                    let reactors = cx.reactor_metrics();
                    let total = Metrics::total(&reactors).unwrap_or_else(|| cx.metrics().clone());
                    let figures = Figures {
                        metrics: &total,
                        hosted: &hosted,
                        now: cx.now(),
                        reactors: &reactors,
                        cluster: cluster_figures(cx),
                    };
                    (respond(&request, &figures), request.method == Method::Head)
                }
                Parsed::Rejected(rejection) => (rejection.response(), false),
            };
            let date = http_date(cx.wall_time());
            cx.write_with(|out| response.encode(head_only, date.as_deref(), out));
            if response.persistence == Persistence::Close {
                self.state = State::Closed;
                cx.close();
            }
        };

        match pause {
            // The client has said all it will, and all of it is answered.
            Pause::NeedInput if self.state == State::InputEnded => {
                self.state = State::Closed;
                cx.close();
            }
            // A new head is awaited once an answer went out; an unfinished
            // head keeps the deadline it has.
            Pause::NeedInput if answered > 0 || self.head_deadline.is_none() => {
                self.await_head(cx);
            }
            Pause::NeedInput => {}
            // Stop reading until the output drains (`on_output_drained`),
            // so what waits here stays bounded. The client is not late
            // while the daemon is not reading.
            Pause::OutputFull => {
                cx.hold_input(true);
                self.head_deadline = None;
            }
            // Nothing more is answered: the rest is moot.
            Pause::Closed => {
                self.head_deadline = None;
                return input.len();
            }
        }
        answered
    }
}

impl Session {
    /// Starts the clock for the next request head, now.
    fn await_head(&mut self, cx: &mut Cx<'_>) {
        let timeout = cx.shared().config.admin.header_timeout_s;
        if timeout == 0 || self.state != State::KeepAlive {
            self.head_deadline = None;
            return;
        }
        let now = cx.now();
        // A timeout too large for `Instant` is as good as none.
        self.head_deadline = now.checked_add(Duration::from_secs(timeout));
        if let Some(deadline) = self.head_deadline {
            self.wake(deadline, cx);
        }
    }

    /// Makes sure a wake-up is due no later than `at`.
    fn wake(&mut self, at: Instant, cx: &mut Cx<'_>) {
        if self.wake_at.is_none_or(|pending| at < pending) {
            self.wake_at = Some(at);
            cx.set_timer(at);
        }
    }
}

/// The chat cluster link's counters, when the daemon has one.
fn cluster_figures(cx: &mut Cx<'_>) -> Option<figures::ClusterFigures> {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = cx.shared().chat_cluster_stats.clone()?;
    Some(figures::ClusterFigures {
        connected: stats.connected.load(Relaxed),
        reconnects: stats.reconnects.load(Relaxed),
        published: stats.published.load(Relaxed),
        received: stats.received.load(Relaxed),
        dropped: stats.dropped.load(Relaxed),
        subscriptions_lost: stats.subscriptions_lost.load(Relaxed),
    })
}

/// The services the daemon hosts, whose figures are reported.
fn hosted_services(cx: &mut Cx<'_>) -> Vec<ServiceId> {
    let config = &cx.shared().config;
    ServiceId::ALL
        .into_iter()
        .filter(|&id| super::is_implemented(id) && config.service(id).enabled)
        .collect()
}

/// `Date` header value (RFC 9110 §5.6.7), or `None` for a clock jiff
/// cannot represent (before year 1, say), when the header is left out.
fn http_date(wall: SystemTime) -> Option<String> {
    let ts = jiff::Timestamp::try_from(wall).ok()?;
    jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&ts)
        .ok()
}

/// Routes a request to its answer.
pub fn respond(request: &Request, figures: &Figures<'_>) -> Response {
    let response = match (request.resource, request.method) {
        (Resource::Unknown, _) => Response::text(Status::NotFound, "not found\n"),
        (_, Method::Other) => Response::text(
            Status::MethodNotAllowed,
            "method not allowed; use GET or HEAD\n",
        ),
        (Resource::Dashboard, _) => {
            Response::new(Status::Ok, "text/html; charset=utf-8", DASHBOARD)
        }
        (Resource::Metrics, _) => Response::new(Status::Ok, PROMETHEUS_TEXT, figures.prometheus()),
        (Resource::Stats, _) => Response::new(Status::Ok, "application/json", figures.json()),
    };
    let persistence = if !request.keep_alive || request.has_body {
        Persistence::Close
    } else if request.minor_version == 0 {
        Persistence::KeepAliveConfirmed
    } else {
        Persistence::KeepAlive
    };
    Response {
        persistence,
        ..response
    }
}

#[cfg(test)]
mod session_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn request(text: &str) -> Request {
        match parse_request(text.as_bytes()) {
            Parsed::Request { request, len } => {
                assert_eq!(len, text.len(), "the whole input is one head");
                request
            }
            other => panic!("not a request: {other:?}"),
        }
    }

    fn encoded(response: &Response, head_only: bool) -> String {
        let mut out = BytesMut::new();
        response.encode(head_only, Some("Thu, 01 Jan 1970 00:00:01 GMT"), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn respond_to(text: &str) -> Response {
        let (metrics, now) = figures::fixture();
        let hosted = [ServiceId::Admin, ServiceId::Echo];
        let figures = Figures {
            metrics: &metrics,
            hosted: &hosted,
            now,
            reactors: &[],
            cluster: None,
        };
        respond(&request(text), &figures)
    }

    #[test]
    fn routing_gives_the_statuses_of_the_contract() {
        let cases = [
            ("GET / HTTP/1.1", Status::Ok),
            ("HEAD /metrics HTTP/1.1", Status::Ok),
            ("GET /missing HTTP/1.1", Status::NotFound),
            ("POST /missing HTTP/1.1", Status::NotFound),
            ("DELETE /stats HTTP/1.1", Status::MethodNotAllowed),
        ];
        for (line, status) in cases {
            let response = respond_to(&format!("{line}\r\nHost: x\r\n\r\n"));
            assert_eq!(response.status, status, "{line}");
            assert_eq!(response.persistence, Persistence::KeepAlive, "{line}");
        }
    }

    #[test]
    fn a_response_says_its_length_and_head_omits_only_the_body() {
        let response = respond_to("GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
        let full = encoded(&response, false);
        let (head, body) = full.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(head.contains("\r\nContent-Type: application/json\r\n"));
        assert!(head.contains("\r\nDate: Thu, 01 Jan 1970 00:00:01 GMT\r\n"));
        assert!(!head.contains("Connection"), "HTTP/1.1 persists silently");
        assert_eq!(encoded(&response, true), format!("{head}\r\n\r\n"));
    }

    #[test]
    fn the_connection_field_tells_what_follows() {
        let response = respond_to("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(encoded(&response, true).contains("\r\nConnection: close\r\n"));
        let response = respond_to("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(encoded(&response, true).contains("\r\nConnection: keep-alive\r\n"));
        let response = respond_to("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(
            response.persistence,
            Persistence::Close,
            "a body is never read"
        );
        let response = respond_to("PUT / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(encoded(&response, true).contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[test]
    fn the_dashboard_polls_stats_and_names_its_figures() {
        for needle in [
            "fetch(\"/stats\"",
            "data-state=\"loading\"",
            "id=\"services\"",
            "id=\"loop-events-per-turn\"",
            "id=\"loop-turn-average\"",
            "bytes_received_per_second",
        ] {
            assert!(DASHBOARD.contains(needle), "{needle}");
        }
        assert!(!DASHBOARD.contains("src="), "the page loads nothing else");
    }
}
