//! The daemon's own view of a load test: a tiny blocking HTTP/1.1 client
//! for its admin endpoint's `GET /stats` (PROTOCOL.md §7).
//!
//! `--admin ADDR` samples `/stats` when the run starts and when it ends;
//! the difference between the two samples, divided by the time between
//! them, is the server's side of the run: bytes per second, event-loop
//! turns per second, events per turn. Next to the client's figures, that
//! shows how much work the server did per message (how many loop turns,
//! how many readiness events).
//!
//! The client is deliberately small and blocking: it runs twice per load
//! test on the main thread, never among the measured connections. It sends
//! `Connection: close`, so the response ends at end of stream, and it
//! understands `Content-Length` and chunked bodies, since a server
//! answering HTTP/1.1 may use either. Responses are parsed with httparse.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long one `/stats` request may take in all; the run goes on without
/// the server side when it takes longer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The largest response accepted; `/stats` is a few hundred bytes.
const MAX_RESPONSE: usize = 1 << 20;

/// The `/stats` document, as far as the load generator uses it. Fields the
/// daemon adds later are ignored; fields it lacks read as zero.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Stats {
    #[serde(default)]
    pub services: BTreeMap<String, ServiceStats>,
    #[serde(default, rename = "loop")]
    pub event_loop: LoopStats,
}

/// One service's counters in `/stats`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ServiceStats {
    pub connections_open: u64,
    pub connections_total: u64,
    pub connections_rejected: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// The event loop's counters in `/stats`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LoopStats {
    pub iterations: u64,
    pub events: u64,
}

/// `/stats` as read at one moment.
#[derive(Debug, Clone)]
pub struct StatsSample {
    pub taken: Instant,
    pub stats: Stats,
}

/// Why `/stats` could not be read.
#[derive(Debug)]
pub enum AdminError {
    /// The address did not resolve.
    Resolve(String),
    /// Connecting, writing or reading failed (refused, timed out, reset).
    Io(io::Error),
    /// The response was not HTTP, or its body was cut short.
    Http(String),
    /// The server answered with another status than 200.
    Status(u16),
    /// The body was not the expected JSON.
    Json(serde_json::Error),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Resolve(e) => write!(f, "cannot resolve the address: {e}"),
            AdminError::Io(e) => write!(f, "{e}"),
            AdminError::Http(e) => write!(f, "bad HTTP response: {e}"),
            AdminError::Status(code) => write!(f, "GET /stats answered {code}"),
            AdminError::Json(e) => write!(f, "/stats is not the expected JSON: {e}"),
        }
    }
}

impl From<io::Error> for AdminError {
    fn from(e: io::Error) -> Self {
        AdminError::Io(e)
    }
}

/// Fetches and parses `GET /stats` from `addr` (`host:port`, with or
/// without a leading `http://`).
pub fn fetch_stats(addr: &str) -> Result<StatsSample, AdminError> {
    let (taken, body) = fetch_stats_body(addr)?;
    let stats = serde_json::from_slice(&body).map_err(AdminError::Json)?;
    Ok(StatsSample { taken, stats })
}

/// `GET /stats` as untyped JSON, for the figures [`Stats`] leaves out
/// (such as the loop's `max_turn_seconds`).
pub fn fetch_stats_json(addr: &str) -> Result<serde_json::Value, AdminError> {
    let (_, body) = fetch_stats_body(addr)?;
    serde_json::from_slice(&body).map_err(AdminError::Json)
}

/// The body of `GET /stats`, and when it was read.
fn fetch_stats_body(addr: &str) -> Result<(Instant, Vec<u8>), AdminError> {
    let authority = addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let socket_addr = authority
        .to_socket_addrs()
        .map_err(|e| AdminError::Resolve(e.to_string()))?
        .next()
        .ok_or_else(|| AdminError::Resolve(format!("{authority} has no address")))?;

    let mut stream = TcpStream::connect_timeout(&socket_addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = format!(
        "GET /stats HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;

    // Read to the end: with `Connection: close` the server closes after the
    // response, and the bound keeps a misbehaving one from filling memory.
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut response)?;
    if response.len() > MAX_RESPONSE {
        return Err(AdminError::Http("response over 1 MiB".into()));
    }
    let taken = Instant::now();
    Ok((taken, response_body(&response)?))
}

/// Splits a complete HTTP/1.1 response into status and body, and returns
/// the body of a 200 response, de-chunked if need be.
fn response_body(response: &[u8]) -> Result<Vec<u8>, AdminError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(response) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(AdminError::Http("headers cut short".into())),
        Err(e) => return Err(AdminError::Http(e.to_string())),
    };
    let code = parsed.code.unwrap_or(0);
    if code != 200 {
        return Err(AdminError::Status(code));
    }
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &response[head_len..];
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return dechunk(rest).ok_or_else(|| AdminError::Http("bad chunked body".into()));
    }
    match header("content-length") {
        Some(len) => {
            let len: usize = len
                .parse()
                .map_err(|_| AdminError::Http(format!("bad Content-Length `{len}`")))?;
            rest.get(..len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| AdminError::Http("body shorter than Content-Length".into()))
        }
        None => Ok(rest.to_vec()),
    }
}

/// Decodes a chunked body (RFC 9112 §7.1): hex size, CRLF, data, CRLF,
/// ending with a zero-size chunk. Extensions and trailers are ignored.
fn dechunk(mut input: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = input.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&input[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        input = &input[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(input.get(..size)?);
        input = input.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// The server's side of a run: the difference between two `/stats`
/// samples, per second and per unit of client work.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// The service whose counters are shown, or `all` for the sum.
    pub service: String,
    pub elapsed_s: f64,
    pub bytes_received_per_s: f64,
    pub bytes_sent_per_s: f64,
    pub connections_open_start: u64,
    pub connections_open_end: u64,
    pub loop_iterations_per_s: f64,
    pub events_per_s: f64,
    /// Readiness events handled per loop turn: how much each `poll` batched.
    pub events_per_iteration: Option<f64>,
    /// Loop turns per unit of client work (message, delivery, datagram).
    pub iterations_per_unit: Option<f64>,
    pub events_per_unit: Option<f64>,
}

impl ServerReport {
    /// Compares two samples. `service` picks one service's counters;
    /// `None` sums all of them. `completed` is the client's count of units
    /// of work over the same time.
    pub fn between(
        start: &StatsSample,
        end: &StatsSample,
        service: Option<&str>,
        completed: u64,
    ) -> ServerReport {
        let counters = |stats: &Stats| match service {
            Some(name) => stats.services.get(name).copied().unwrap_or_default(),
            None => stats
                .services
                .values()
                .fold(ServiceStats::default(), |sum, s| ServiceStats {
                    connections_open: sum.connections_open + s.connections_open,
                    connections_total: sum.connections_total + s.connections_total,
                    connections_rejected: sum.connections_rejected + s.connections_rejected,
                    bytes_received: sum.bytes_received + s.bytes_received,
                    bytes_sent: sum.bytes_sent + s.bytes_sent,
                }),
        };
        let (a, b) = (counters(&start.stats), counters(&end.stats));
        let (la, lb) = (start.stats.event_loop, end.stats.event_loop);
        let elapsed = end
            .taken
            .duration_since(start.taken)
            .as_secs_f64()
            .max(1e-9);
        let iterations = lb.iterations.saturating_sub(la.iterations) as f64;
        let events = lb.events.saturating_sub(la.events) as f64;
        let per_unit = |x: f64| (completed > 0).then(|| x / completed as f64);
        ServerReport {
            service: service.unwrap_or("all").to_string(),
            elapsed_s: elapsed,
            bytes_received_per_s: b.bytes_received.saturating_sub(a.bytes_received) as f64
                / elapsed,
            bytes_sent_per_s: b.bytes_sent.saturating_sub(a.bytes_sent) as f64 / elapsed,
            connections_open_start: a.connections_open,
            connections_open_end: b.connections_open,
            loop_iterations_per_s: iterations / elapsed,
            events_per_s: events / elapsed,
            events_per_iteration: (iterations > 0.0).then(|| events / iterations),
            iterations_per_unit: per_unit(iterations),
            events_per_unit: per_unit(events),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = r#"{"services":{"echo":{"connections_open":2,"connections_total":5,"connections_rejected":0,"bytes_received":100,"bytes_sent":100},"chat":{"connections_open":1}},"loop":{"iterations":10,"events":30},"uptime_s":4}"#;

    #[test]
    fn a_content_length_body_is_parsed() {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{STATS}",
            STATS.len()
        );
        let body = response_body(response.as_bytes()).unwrap();
        let stats: Stats = serde_json::from_slice(&body).unwrap();
        assert_eq!(stats.services["echo"].bytes_sent, 100);
        assert_eq!(stats.services["chat"].connections_open, 1);
        assert_eq!(stats.event_loop.events, 30);
    }

    #[test]
    fn a_chunked_body_is_decoded() {
        let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        assert_eq!(response_body(response.as_bytes()).unwrap(), b"hello, world");
        assert_eq!(dechunk(b"5\r\nhel"), None);
    }

    #[test]
    fn another_status_is_an_error() {
        let response = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            response_body(response),
            Err(AdminError::Status(404))
        ));
        assert!(matches!(
            response_body(b"SSH-2.0-OpenSSH\r\n"),
            Err(AdminError::Http(_))
        ));
    }

    #[test]
    fn the_server_report_is_a_difference_per_second() {
        let t0 = Instant::now();
        let stats: Stats = serde_json::from_str(STATS).unwrap();
        let start = StatsSample {
            taken: t0,
            stats: stats.clone(),
        };
        let mut later = stats;
        later.services.get_mut("echo").unwrap().bytes_sent += 2000;
        later.event_loop.iterations += 50;
        later.event_loop.events += 100;
        let end = StatsSample {
            taken: t0 + Duration::from_secs(2),
            stats: later,
        };
        let r = ServerReport::between(&start, &end, Some("echo"), 25);
        assert_eq!(r.bytes_sent_per_s, 1000.0);
        assert_eq!(r.loop_iterations_per_s, 25.0);
        assert_eq!(r.events_per_iteration, Some(2.0));
        assert_eq!(r.iterations_per_unit, Some(2.0));
        let all = ServerReport::between(&start, &end, None, 0);
        assert_eq!(all.connections_open_end, 3);
        assert_eq!(all.events_per_unit, None);
    }

    #[test]
    fn an_absent_endpoint_is_an_io_error() {
        // Bind and drop a listener to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = fetch_stats(&format!("127.0.0.1:{port}")).unwrap_err();
        assert!(matches!(err, AdminError::Io(_)), "{err}");
    }
}
