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
//!                    |                                     ^
//!                    '--- the requests it holds answered --'
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

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;

use super::{Cx, ServiceId};
use crate::reactor::metrics::{Metrics, ServiceCounters};

/// Largest request head (request line and header fields) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header fields one request may carry.
pub const MAX_HEADERS: usize = 32;

/// The Prometheus text exposition format's media type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// The dashboard, kept in a file of its own so it reads as HTML.
const DASHBOARD: &str = include_str!("admin/dashboard.html");

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

/// One admin connection: its keep-alive state. Requests received and not
/// answered yet (the unfinished head of the next request, and, while output
/// is full, whole requests waiting their turn) stay unconsumed with the
/// reactor, which offers them again when more arrives or the hold on input
/// lifts.
#[derive(Default)]
pub struct Session {
    state: State,
}

impl super::Session for Session {
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
                    let figures = Figures {
                        metrics: cx.metrics(),
                        hosted: &hosted,
                        now: cx.now(),
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
            Pause::NeedInput => {}
            // Stop reading until the output drains (`on_output_drained`),
            // so what waits here stays bounded.
            Pause::OutputFull => cx.hold_input(true),
            // Nothing more is answered: the rest is moot.
            Pause::Closed => return input.len(),
        }
        answered
    }
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

// ----- Requests ------------------------------------------------------------

/// The request methods this server tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Any other (valid) method: POST, PUT, OPTIONS...
    Other,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `/`
    Dashboard,
    /// `/metrics`
    Metrics,
    /// `/stats`
    Stats,
    /// Any other path.
    Unknown,
}

/// A request head, reduced to what the answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub resource: Resource,
    /// The `1.x` of `HTTP/1.x`: 0 or 1.
    pub minor_version: u8,
    /// Whether the client wants the connection to persist (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// Whether a body follows the head (which this server never reads).
    pub has_body: bool,
}

/// What the bytes at the front of a connection's input hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet: wait for more bytes.
    Incomplete,
    /// A whole head, `len` bytes long.
    Request { request: Request, len: usize },
    /// Not a request this server will serve: answer, then close.
    Rejected(Rejection),
}

/// A request refused before routing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: Status,
    pub reason: Cow<'static, str>,
}

impl Rejection {
    fn new(status: Status, reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
        }
    }

    /// The error response, always closing: after a malformed head there is
    /// no telling where the next request would begin.
    fn response(&self) -> Response {
        Response::text(
            self.status,
            format!("{}: {}\n", self.status.reason(), self.reason),
        )
        .closing()
    }
}

/// Looks for one request head at the front of `input`.
pub fn parse_request(input: &[u8]) -> Parsed {
    // Never look past the bound: a head that does not end within it is
    // refused however it would have ended.
    let window = &input[..input.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(window) {
        Ok(httparse::Status::Complete(len)) => match interpret(&req) {
            Ok(request) => Parsed::Request { request, len },
            Err(rejection) => Parsed::Rejected(rejection),
        },
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            Parsed::Rejected(Rejection::new(
                Status::HeadTooLarge,
                format!("request head over {MAX_HEAD} bytes"),
            ))
        }
        Ok(httparse::Status::Partial) => Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => Parsed::Rejected(Rejection::new(
            Status::HeadTooLarge,
            format!("more than {MAX_HEADERS} header fields"),
        )),
        Err(e) => Parsed::Rejected(Rejection::new(Status::BadRequest, e.to_string())),
    }
}

/// Checks a complete head and reduces it to a [`Request`].
fn interpret(req: &httparse::Request<'_, '_>) -> Result<Request, Rejection> {
    // httparse fills these in whenever it reports a complete head.
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(Rejection::new(
            Status::BadRequest,
            "incomplete request line",
        ));
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let resource = match path_of(target) {
        Some("/") => Resource::Dashboard,
        Some("/metrics") => Resource::Metrics,
        Some("/stats") => Resource::Stats,
        Some(_) => Resource::Unknown,
        None => {
            return Err(Rejection::new(
                Status::BadRequest,
                "malformed request target",
            ));
        }
    };

    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut chunked_or_other_coding = false;
    let (mut close, mut keep_alive) = (false, false);
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(header.value)
                .ok_or_else(|| Rejection::new(Status::BadRequest, "invalid Content-Length"))?;
            if content_length.is_some_and(|l| l != length) {
                return Err(Rejection::new(
                    Status::BadRequest,
                    "conflicting Content-Length fields",
                ));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked_or_other_coding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in header.value.split(|&b| b == b',') {
                let option = option.trim_ascii();
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if minor_version == 1 && hosts != 1 {
        return Err(Rejection::new(
            Status::BadRequest,
            "an HTTP/1.1 request needs exactly one Host field",
        ));
    }
    Ok(Request {
        method,
        resource,
        minor_version,
        keep_alive: !close && (minor_version == 1 || keep_alive),
        has_body: chunked_or_other_coding || content_length.is_some_and(|l| l > 0),
    })
}

/// The path of a request target: origin form (`/stats?x=1`), or absolute
/// form (`http://host/stats`), which a server must accept too (RFC 9112
/// §3.2.2). The query is not part of the path. `None` for anything else.
fn path_of(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return Some(without_query(target));
    }
    let scheme_len = ["http://", "https://"]
        .into_iter()
        .find(|s| {
            target
                .as_bytes()
                .get(..s.len())
                .is_some_and(|t| t.eq_ignore_ascii_case(s.as_bytes()))
        })?
        .len();
    // The scheme is ASCII, so this slices on a character boundary.
    let after_scheme = &target[scheme_len..];
    match after_scheme.find(['/', '?']) {
        Some(i) if after_scheme[i..].starts_with('/') => Some(without_query(&after_scheme[i..])),
        // `http://host` or `http://host?q`: the path is empty, meaning `/`.
        _ => Some("/"),
    }
}

fn without_query(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

/// A `Content-Length` value: decimal digits only (RFC 9110 §8.6).
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

// ----- Responses -----------------------------------------------------------

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeadTooLarge => 431,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadTooLarge => "Request Header Fields Too Large",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

/// What the connection does after a response, as its `Connection` field
/// tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// The connection ends after this response: `Connection: close`.
    Close,
    /// HTTP/1.1 persists by default: no field needed.
    KeepAlive,
    /// HTTP/1.0 persists only because the client asked, so the answer
    /// confirms it: `Connection: keep-alive`.
    KeepAliveConfirmed,
}

/// One response, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    pub body: Cow<'static, str>,
    pub persistence: Persistence,
}

impl Response {
    fn new(status: Status, content_type: &'static str, body: impl Into<Cow<'static, str>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            persistence: Persistence::KeepAlive,
        }
    }

    fn text(status: Status, body: impl Into<Cow<'static, str>>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    fn closing(mut self) -> Response {
        self.persistence = Persistence::Close;
        self
    }

    /// Writes the response: status line, header fields, and the body
    /// unless `head_only` (a HEAD request gets the same `Content-Length`
    /// as the GET would, and no body).
    pub fn encode(&self, head_only: bool, date: Option<&str>, out: &mut BytesMut) {
        // Writing into a BytesMut cannot fail.
        let _ = write!(out, "HTTP/1.1 {}\r\n", self.status);
        if let Some(date) = date {
            let _ = write!(out, "Date: {date}\r\n");
        }
        let _ = write!(
            out,
            "Content-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            self.content_type,
            self.body.len()
        );
        if self.status == Status::MethodNotAllowed {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        match self.persistence {
            Persistence::Close => out.extend_from_slice(b"Connection: close\r\n"),
            Persistence::KeepAlive => {}
            Persistence::KeepAliveConfirmed => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
    }
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

// ----- Figures ---------------------------------------------------------------

/// The figures one answer reports: the loop's counters as they stand when
/// the request is answered.
pub struct Figures<'a> {
    pub metrics: &'a Metrics,
    /// The services reported, in the order of PROTOCOL.md §1.
    pub hosted: &'a [ServiceId],
    /// This loop turn's time, for the uptime.
    pub now: Instant,
}

/// How Prometheus should treat a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only ever grows (until the daemon restarts): rates make sense.
    Counter,
    /// Goes up and down: the current value is what matters.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One figure, named for both formats, so `/metrics` and `/stats` cannot
/// drift apart.
struct Figure<T> {
    /// The Prometheus metric name.
    metric: &'static str,
    /// The field name in `/stats`.
    field: &'static str,
    kind: Kind,
    help: &'static str,
    read: fn(&T) -> Value,
}

/// A figure's value: a count, or a time span reported in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Count(u64),
    Seconds(Duration),
}

impl fmt::Display for Value {
    /// One spelling both formats accept: an integer, or a decimal number
    /// of seconds (Rust prints `f64` without an exponent).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Seconds(d) => write!(f, "{}", d.as_secs_f64()),
        }
    }
}

/// The figures each service has, labelled `service="<name>"` in
/// `/metrics` and keyed by name in `/stats`.
const SERVICE_FIGURES: [Figure<ServiceCounters>; 5] = [
    Figure {
        metric: "socketlab_connections_open",
        field: "connections_open",
        kind: Kind::Gauge,
        help: "Connections open now.",
        read: |c| Value::Count(c.connections_open),
    },
    Figure {
        metric: "socketlab_connections_total",
        field: "connections_total",
        kind: Kind::Counter,
        help: "Connections accepted, rejected ones included.",
        read: |c| Value::Count(c.connections_total),
    },
    Figure {
        metric: "socketlab_connections_rejected_total",
        field: "connections_rejected",
        kind: Kind::Counter,
        help: "Connections turned away by a connection limit or descriptor exhaustion.",
        read: |c| Value::Count(c.connections_rejected),
    },
    Figure {
        metric: "socketlab_bytes_received_total",
        field: "bytes_received",
        kind: Kind::Counter,
        help: "Bytes received from clients, datagrams included.",
        read: |c| Value::Count(c.bytes_received),
    },
    Figure {
        metric: "socketlab_bytes_sent_total",
        field: "bytes_sent",
        kind: Kind::Counter,
        help: "Bytes sent to clients, datagrams included.",
        read: |c| Value::Count(c.bytes_sent),
    },
];

/// The loop's figures as one answer reports them: copied from the
/// counters, with the uptime worked out for this turn.
#[derive(Debug, Clone, Copy)]
struct LoopFigures {
    iterations: u64,
    events: u64,
    last_turn_events: u64,
    last_turn: Duration,
    max_turn: Duration,
    busy: Duration,
    uptime: Duration,
}

/// The loop's figures, under `"loop"` in `/stats`.
const LOOP_FIGURES: [Figure<LoopFigures>; 7] = [
    Figure {
        metric: "socketlab_loop_iterations_total",
        field: "iterations",
        kind: Kind::Counter,
        help: "Event loop turns, one poll() each.",
        read: |l| Value::Count(l.iterations),
    },
    Figure {
        metric: "socketlab_events_total",
        field: "events",
        kind: Kind::Counter,
        help: "Readiness events returned by poll().",
        read: |l| Value::Count(l.events),
    },
    Figure {
        metric: "socketlab_loop_last_turn_events",
        field: "last_turn_events",
        kind: Kind::Gauge,
        help: "Readiness events returned by the latest poll().",
        read: |l| Value::Count(l.last_turn_events),
    },
    Figure {
        metric: "socketlab_loop_last_turn_seconds",
        field: "last_turn_seconds",
        kind: Kind::Gauge,
        help: "Time the last finished loop turn spent working, from poll() returning to the next poll().",
        read: |l| Value::Seconds(l.last_turn),
    },
    Figure {
        metric: "socketlab_loop_max_turn_seconds",
        field: "max_turn_seconds",
        kind: Kind::Gauge,
        help: "The longest loop turn since start: the longest a ready client may have waited.",
        read: |l| Value::Seconds(l.max_turn),
    },
    Figure {
        metric: "socketlab_loop_busy_seconds_total",
        field: "busy_seconds",
        kind: Kind::Counter,
        help: "Time the loop spent working rather than waiting in poll().",
        read: |l| Value::Seconds(l.busy),
    },
    Figure {
        metric: "socketlab_uptime_seconds",
        field: "uptime_seconds",
        kind: Kind::Gauge,
        help: "Time since the daemon started serving.",
        read: |l| Value::Seconds(l.uptime),
    },
];

/// The turn histogram's Prometheus name (`_bucket`, `_sum` and `_count`
/// are added); in `/stats` it is `loop.turn_histogram`.
const TURN_HISTOGRAM_METRIC: &str = "socketlab_loop_turn_seconds";
const TURN_HISTOGRAM_HELP: &str =
    "Loop turns by the time they spent working, from poll() returning to the next poll().";

impl Figures<'_> {
    /// The Prometheus text exposition format, version 0.0.4: per metric a
    /// `# HELP` and a `# TYPE` line, then one sample line per label set.
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        for figure in &SERVICE_FIGURES {
            figure.write_family_head(&mut out);
            for &id in self.hosted {
                let value = (figure.read)(self.metrics.service(id));
                let _ = writeln!(out, "{}{{service=\"{id}\"}} {value}", figure.metric);
            }
        }
        let loop_figures = self.loop_figures();
        for figure in &LOOP_FIGURES {
            figure.write_family_head(&mut out);
            let _ = writeln!(out, "{} {}", figure.metric, (figure.read)(&loop_figures));
        }
        self.write_turn_histogram(&mut out);
        out
    }

    /// The turn histogram, a Prometheus `histogram`: one cumulative
    /// `_bucket` line per bound of `TURN_BUCKETS`, then `+Inf`, `_sum` and
    /// `_count`. It is not a `Figure` because it is many numbers, but its
    /// names stand next to the table's, here and in `json`.
    fn write_turn_histogram(&self, out: &mut String) {
        let h = &self.metrics.turn_histogram;
        let name = TURN_HISTOGRAM_METRIC;
        let _ = writeln!(out, "# HELP {name} {TURN_HISTOGRAM_HELP}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, n) in h.cumulative() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", Value::Seconds(bound));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
        let _ = writeln!(out, "{name}_sum {}", Value::Seconds(h.sum()));
        let _ = writeln!(out, "{name}_count {}", h.count());
    }

    /// The `/stats` object. Every name is a constant of this file and
    /// every value a number, so nothing needs escaping.
    pub fn json(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("{\"services\":{");
        for (i, &id) in self.hosted.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(out, "{comma}\"{id}\":");
            write_object(&mut out, &SERVICE_FIGURES, self.metrics.service(id));
        }
        out.push_str("},\"loop\":");
        write_object(&mut out, &LOOP_FIGURES, &self.loop_figures());
        // The histogram goes inside the loop's object, as its last field:
        // cumulative buckets like Prometheus', the overflow bucket left out
        // (JSON has no infinity; `count` is its value).
        out.pop();
        let h = &self.metrics.turn_histogram;
        out.push_str(",\"turn_histogram\":{\"buckets\":[");
        for (i, (bound, n)) in h.cumulative().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{comma}{{\"le\":{},\"count\":{n}}}",
                Value::Seconds(bound)
            );
        }
        let _ = write!(
            out,
            "],\"sum\":{},\"count\":{}}}}}",
            Value::Seconds(h.sum()),
            h.count()
        );
        out.push('}');
        out
    }

    fn loop_figures(&self) -> LoopFigures {
        let m = self.metrics;
        LoopFigures {
            iterations: m.iterations,
            events: m.events,
            last_turn_events: m.last_turn_events,
            last_turn: m.last_turn,
            max_turn: m.max_turn,
            busy: m.busy,
            uptime: self.now.saturating_duration_since(m.started),
        }
    }
}

impl<T> Figure<T> {
    fn write_family_head(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.metric, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.metric, self.kind.name());
    }
}

/// `{"field":value,...}` for one set of figures.
fn write_object<T>(out: &mut String, figures: &[Figure<T>], of: &T) {
    out.push('{');
    for (i, figure) in figures.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, "{comma}\"{}\":{}", figure.field, (figure.read)(of));
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        parse_request(text.as_bytes())
    }

    fn request(text: &str) -> Request {
        match parse(text) {
            Parsed::Request { request, len } => {
                assert_eq!(len, text.len(), "the whole input is one head");
                request
            }
            other => panic!("not a request: {other:?}"),
        }
    }

    fn rejected(text: &str) -> Rejection {
        match parse(text) {
            Parsed::Rejected(r) => r,
            other => panic!("not rejected: {other:?}"),
        }
    }

    fn figures_fixture() -> (Metrics, Instant) {
        let started = Instant::now();
        let mut m = Metrics::new(started);
        *m.service_mut(ServiceId::Echo) = ServiceCounters {
            connections_open: 2,
            connections_total: 5,
            connections_rejected: 1,
            bytes_received: 1234,
            bytes_sent: 1200,
        };
        m.service_mut(ServiceId::Admin).connections_open = 1;
        m.iterations = 40;
        m.events = 77;
        m.last_turn_events = 3;
        m.last_turn = Duration::from_micros(12);
        m.max_turn = Duration::from_millis(3);
        m.busy = Duration::from_micros(1500);
        (m, started + Duration::from_millis(2500))
    }

    // ----- Parsing --------------------------------------------------------

    #[test]
    fn a_get_for_each_resource_is_routed() {
        for (path, resource) in [
            ("/", Resource::Dashboard),
            ("/metrics", Resource::Metrics),
            ("/stats", Resource::Stats),
            ("/stats?pretty=1", Resource::Stats),
            ("/nope", Resource::Unknown),
            ("http://localhost:7000/metrics", Resource::Metrics),
            ("HTTP://localhost:7000", Resource::Dashboard),
        ] {
            let r = request(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(r.resource, resource, "{path}");
            assert_eq!(r.method, Method::Get);
            assert!(r.keep_alive && !r.has_body);
        }
    }

    #[test]
    fn a_head_cut_anywhere_is_incomplete() {
        let text = "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..text.len() {
            assert_eq!(parse(&text[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn only_the_first_of_pipelined_requests_is_taken() {
        let one = "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n";
        let two = format!("{one}HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        match parse(&two) {
            Parsed::Request { request, len } => {
                assert_eq!(len, one.len());
                assert_eq!(request.resource, Resource::Stats);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn persistence_follows_the_version_and_the_connection_field() {
        let cases = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.1", "Connection: Keep-Alive, CLOSE\r\n", false),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: keep-alive\r\n", true),
        ];
        for (version, field, keep_alive) in cases {
            let r = request(&format!("GET / {version}\r\nHost: x\r\n{field}\r\n"));
            assert_eq!(r.keep_alive, keep_alive, "{version} {field:?}");
        }
    }

    #[test]
    fn a_body_is_noticed_whichever_way_it_is_announced() {
        let r = request("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert!(!r.has_body);
        let r = request("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
        assert!(r.has_body);
        assert_eq!(r.method, Method::Other);
        let r = request("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(r.has_body);
    }

    #[test]
    fn malformed_heads_are_bad_requests() {
        for text in [
            "garbage\r\n\r\n",
            "GET /\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET stats HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert_eq!(rejected(text).status, Status::BadRequest, "{text:?}");
        }
        // HTTP/1.0 did not have Host.
        request("GET / HTTP/1.0\r\n\r\n");
    }

    #[test]
    fn an_oversized_head_is_refused_once_it_passes_the_bound() {
        let mut text = "GET / HTTP/1.1\r\nHost: x\r\nX-Filler: ".to_string();
        text.push_str(&"a".repeat(MAX_HEAD - text.len()));
        assert_eq!(parse(&text), Parsed::Incomplete, "exactly at the bound");
        text.push('a');
        assert_eq!(rejected(&text).status, Status::HeadTooLarge);

        let mut many = "GET / HTTP/1.1\r\nHost: x\r\n".to_string();
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(rejected(&many).status, Status::HeadTooLarge);
    }

    // ----- Responses ------------------------------------------------------

    fn encoded(response: &Response, head_only: bool) -> String {
        let mut out = BytesMut::new();
        response.encode(head_only, Some("Thu, 01 Jan 1970 00:00:01 GMT"), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn respond_to(text: &str) -> Response {
        let (metrics, now) = figures_fixture();
        let hosted = [ServiceId::Admin, ServiceId::Echo];
        let figures = Figures {
            metrics: &metrics,
            hosted: &hosted,
            now,
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
    fn a_rejection_explains_itself_and_closes() {
        let response = rejected("nonsense\r\n\r\n").response();
        let text = encoded(&response, false);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(body.starts_with("Bad Request: "), "{body}");
    }

    // ----- Figures --------------------------------------------------------

    #[test]
    fn prometheus_text_has_help_type_and_one_sample_per_service() {
        let (metrics, now) = figures_fixture();
        let hosted = [ServiceId::Admin, ServiceId::Echo];
        let text = Figures {
            metrics: &metrics,
            hosted: &hosted,
            now,
        }
        .prometheus();
        for expected in [
            "# HELP socketlab_connections_open Connections open now.\n",
            "# TYPE socketlab_connections_open gauge\n",
            "socketlab_connections_open{service=\"admin\"} 1\n",
            "socketlab_connections_open{service=\"echo\"} 2\n",
            "# TYPE socketlab_connections_total counter\n",
            "socketlab_connections_total{service=\"echo\"} 5\n",
            "socketlab_connections_rejected_total{service=\"echo\"} 1\n",
            "socketlab_bytes_received_total{service=\"echo\"} 1234\n",
            "socketlab_bytes_sent_total{service=\"echo\"} 1200\n",
            "# TYPE socketlab_loop_iterations_total counter\n",
            "socketlab_loop_iterations_total 40\n",
            "socketlab_events_total 77\n",
            "socketlab_loop_last_turn_events 3\n",
            "socketlab_loop_last_turn_seconds 0.000012\n",
            "socketlab_loop_max_turn_seconds 0.003\n",
            "socketlab_loop_busy_seconds_total 0.0015\n",
            "# TYPE socketlab_uptime_seconds gauge\n",
            "socketlab_uptime_seconds 2.5\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("discard"), "only hosted services are listed");
        // Every line is a comment or `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }

    #[test]
    fn stats_json_has_the_shape_of_the_contract() {
        let (metrics, now) = figures_fixture();
        let hosted = [ServiceId::Admin, ServiceId::Echo];
        let text = Figures {
            metrics: &metrics,
            hosted: &hosted,
            now,
        }
        .json();
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            v["services"]["echo"],
            serde_json::json!({
                "connections_open": 2,
                "connections_total": 5,
                "connections_rejected": 1,
                "bytes_received": 1234,
                "bytes_sent": 1200,
            })
        );
        assert_eq!(v["services"].as_object().unwrap().len(), 2);
        assert_eq!(v["loop"]["iterations"], 40);
        assert_eq!(v["loop"]["events"], 77);
        assert_eq!(v["loop"]["uptime_seconds"], 2.5);
        assert_eq!(v["loop"]["max_turn_seconds"], 0.003);
    }

    #[test]
    fn the_turn_histogram_is_cumulative_in_both_formats() {
        use crate::reactor::metrics::TURN_BUCKETS;
        let (mut metrics, now) = figures_fixture();
        for micros in [30, 800, 3_000, 2_000_000] {
            metrics.turn_histogram.record(Duration::from_micros(micros));
        }
        let figures = Figures {
            metrics: &metrics,
            hosted: &[ServiceId::Echo],
            now,
        };
        let text = figures.prometheus();
        for expected in [
            "# TYPE socketlab_loop_turn_seconds histogram\n",
            "socketlab_loop_turn_seconds_bucket{le=\"0.00005\"} 1\n",
            "socketlab_loop_turn_seconds_bucket{le=\"0.001\"} 2\n",
            "socketlab_loop_turn_seconds_bucket{le=\"0.005\"} 3\n",
            "socketlab_loop_turn_seconds_bucket{le=\"1\"} 3\n",
            "socketlab_loop_turn_seconds_bucket{le=\"+Inf\"} 4\n",
            "socketlab_loop_turn_seconds_sum 2.00383\n",
            "socketlab_loop_turn_seconds_count 4\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let v: serde_json::Value = serde_json::from_str(&figures.json()).expect("valid JSON");
        let h = &v["loop"]["turn_histogram"];
        let buckets = h["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), TURN_BUCKETS.len());
        assert_eq!(buckets[0], serde_json::json!({"le": 0.00005, "count": 1}));
        assert_eq!(buckets[4], serde_json::json!({"le": 0.001, "count": 2}));
        assert_eq!(buckets[13]["le"].as_f64(), Some(1.0));
        assert_eq!(buckets[13]["count"], 3);
        assert_eq!(h["count"], 4);
        assert_eq!(h["sum"], 2.00383);
        assert_eq!(v["loop"]["iterations"], 40, "the loop's other fields stay");
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
