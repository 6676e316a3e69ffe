//! The admin endpoint over real sockets: `/metrics`, `/stats`, the error
//! statuses, persistent connections and the connection limit
//! (PROTOCOL.md §6, §7).
//! Run: `cargo test --test admin_http`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};

use common::{Daemon, PATIENCE, read_to_end, wait_until};

/// Services the daemon hosts, as its ready file names them.
fn hosted(d: &Daemon) -> Vec<String> {
    d.ready
        .as_object()
        .expect("ready object")
        .keys()
        .cloned()
        .collect()
}

// ----- A small HTTP client -------------------------------------------------

/// One response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A connection to the admin port that reads responses one at a time,
/// keeping whatever arrived beyond the current one for the next.
struct Client {
    stream: TcpStream,
    buffered: Vec<u8>,
    /// Bytes of requests sent so far.
    sent: u64,
}

impl Client {
    fn connect(d: &Daemon) -> Client {
        Client {
            stream: d.connect("admin"),
            buffered: Vec::new(),
            sent: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
        self.sent += bytes.len() as u64;
    }

    fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response(false)
    }

    /// Reads one response; `to_head` when it answers a HEAD request, whose
    /// `Content-Length` describes a body that is not sent.
    fn response(&mut self, to_head: bool) -> Response {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = parsed
                .parse(&self.buffered)
                .expect("a well-formed response head")
            {
                let status = parsed.code.expect("status code");
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8(h.value.to_vec()).expect("ASCII header");
                        (h.name.to_string(), value)
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().expect("numeric Content-Length"))
                    .expect("every response has a Content-Length");
                let body_len = if to_head { 0 } else { length };
                self.fill(len + body_len);
                let body = self.buffered[len..len + body_len].to_vec();
                self.buffered.drain(..len + body_len);
                return Response {
                    status,
                    headers,
                    body,
                };
            }
            self.read_more();
        }
    }

    fn fill(&mut self, n: usize) {
        while self.buffered.len() < n {
            self.read_more();
        }
    }

    fn read_more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .stream
            .read(&mut chunk)
            .expect("read (bounded by a timeout)");
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&self.buffered)
        );
        self.buffered.extend_from_slice(&chunk[..n]);
    }

    /// Asserts the daemon closes the connection with nothing more to say.
    fn expect_eof(mut self) {
        assert!(self.buffered.is_empty(), "unexpected bytes before EOF");
        let rest = read_to_end(&mut self.stream).expect("EOF, not a reset");
        assert!(
            rest.is_empty(),
            "unexpected bytes before EOF: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// `/metrics` parsed: sample name with labels (as written) to value, and
/// metric name to its `# TYPE`.
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition {
        samples: BTreeMap::new(),
        types: BTreeMap::new(),
        helps: BTreeMap::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            e.types.insert(name.to_string(), kind.to_string());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            e.helps.insert(name.to_string(), help.to_string());
        } else {
            assert!(!line.starts_with('#'), "unknown comment line {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("sample: series value");
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("numeric value: {line}"));
            assert!(
                e.samples.insert(series.to_string(), value).is_none(),
                "duplicate series {series}"
            );
        }
    }
    e
}

/// Moves `n` bytes through echo over TCP on one connection, then closes it.
fn echo_tcp(d: &Daemon, n: usize) {
    let mut s = d.connect("echo");
    let sent: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    s.write_all(&sent).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let back = read_to_end(&mut s).unwrap();
    assert_eq!(back, sent, "echo returned what it was sent");
}

/// Sends one datagram of `n` bytes to echo and waits for its answer.
fn echo_udp(d: &Daemon, n: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.send_to(&vec![b'u'; n], d.udp("echo")).unwrap();
    let mut buf = [0u8; 2048];
    let (got, _) = s.recv_from(&mut buf).expect("echo datagram");
    assert_eq!(got, n);
}

/// Waits until `/stats` says no echo connection is open any more: the
/// daemon finishes a close after the client has seen its FIN.
fn wait_for_echo_closed(admin: &mut Client) {
    assert!(
        wait_until(|| admin.get("/stats").json()["services"]["echo"]["connections_open"] == 0),
        "echo connections still open"
    );
}

// ----- /metrics and /stats -------------------------------------------------

#[test]
fn metrics_count_the_bytes_moved_through_echo() {
    let d = Daemon::start(&[]);
    echo_tcp(&d, 10_000);
    echo_tcp(&d, 2_345);
    echo_udp(&d, 100);
    let mut admin = Client::connect(&d);
    wait_for_echo_closed(&mut admin);

    let r = admin.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    let e = parse_exposition(r.text());

    let echo = |name: &str| e.samples[&format!("{name}{{service=\"echo\"}}")];
    assert_eq!(echo("socketlab_connections_open"), 0.0);
    assert_eq!(echo("socketlab_connections_total"), 2.0);
    assert_eq!(echo("socketlab_connections_rejected_total"), 0.0);
    assert_eq!(echo("socketlab_bytes_received_total"), 12_445.0);
    assert_eq!(echo("socketlab_bytes_sent_total"), 12_445.0);

    let mut expected_types = vec![
        ("socketlab_connections_open", "gauge"),
        ("socketlab_connections_total", "counter"),
        ("socketlab_connections_rejected_total", "counter"),
        ("socketlab_bytes_received_total", "counter"),
        ("socketlab_bytes_sent_total", "counter"),
        ("socketlab_loop_iterations_total", "counter"),
        ("socketlab_events_total", "counter"),
        ("socketlab_loop_last_turn_events", "gauge"),
        ("socketlab_loop_last_turn_seconds", "gauge"),
        ("socketlab_loop_max_turn_seconds", "gauge"),
        ("socketlab_loop_busy_seconds_total", "counter"),
        ("socketlab_uptime_seconds", "gauge"),
        ("socketlab_loop_timers", "gauge"),
        ("socketlab_loop_turn_seconds", "histogram"),
        ("socketlab_messages_received_total", "counter"),
    ];
    // Several reactors (`SOCKETLAB_TEST_REACTORS`) add one family of
    // their own (PROTOCOL.md §8).
    let reactors = admin.get("/stats").json()["reactors"]
        .as_array()
        .map_or(0, Vec::len);
    if reactors > 1 {
        expected_types.push(("socketlab_reactor_connections_open", "gauge"));
    }
    for &(name, kind) in &expected_types {
        assert_eq!(e.types.get(name).map(String::as_str), Some(kind), "{name}");
        assert!(e.helps.contains_key(name), "{name} has HELP");
    }
    assert_eq!(e.types.len(), expected_types.len(), "{:?}", e.types);

    // One sample per hosted service for each per-service family, and for
    // no other service.
    let services = hosted(&d);
    for family in ["socketlab_connections_open", "socketlab_bytes_sent_total"] {
        for service in &services {
            assert!(
                e.samples
                    .contains_key(&format!("{family}{{service=\"{service}\"}}")),
                "{family} for {service}"
            );
        }
        let count = e
            .samples
            .keys()
            .filter(|k| k.starts_with(&format!("{family}{{")))
            .count();
        assert_eq!(count, services.len(), "{family}");
    }
    // The asking connection is an admin connection like any other.
    assert_eq!(
        e.samples["socketlab_connections_open{service=\"admin\"}"],
        1.0
    );
    assert!(e.samples["socketlab_bytes_received_total{service=\"admin\"}"] > 0.0);
    assert!(e.samples["socketlab_loop_iterations_total"] > 0.0);
    assert!(e.samples["socketlab_events_total"] > 0.0);
    assert!(
        e.samples["socketlab_loop_max_turn_seconds"]
            >= e.samples["socketlab_loop_last_turn_seconds"]
    );
    assert!(e.samples["socketlab_uptime_seconds"] > 0.0);
}

#[test]
fn stats_give_the_same_figures_as_json() {
    let d = Daemon::start(&[]);
    echo_tcp(&d, 777);
    echo_udp(&d, 23);
    let mut admin = Client::connect(&d);
    wait_for_echo_closed(&mut admin);

    let r = admin.get("/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    // One datagram, and the 777 bytes in at least one read (TCP may split
    // them, so the count of reads is not fixed).
    let messages = v["services"]["echo"]["messages_received"]
        .as_u64()
        .expect("messages_received");
    assert!((2..=778).contains(&messages), "{messages} messages");
    assert_eq!(
        v["services"]["echo"],
        serde_json::json!({
            "connections_open": 0,
            "connections_total": 1,
            "connections_rejected": 0,
            "bytes_received": 800,
            "bytes_sent": 800,
            "messages_received": messages,
        })
    );
    let mut reported: Vec<String> = v["services"].as_object().unwrap().keys().cloned().collect();
    reported.sort();
    let mut services = hosted(&d);
    services.sort();
    assert_eq!(reported, services, "every hosted service, and only those");

    let iterations = v["loop"]["iterations"].as_u64().expect("iterations");
    let events = v["loop"]["events"].as_u64().expect("events");
    assert!(iterations > 0 && events > 0);
    for field in [
        "last_turn_events",
        "last_turn_seconds",
        "max_turn_seconds",
        "busy_seconds",
        "uptime_seconds",
    ] {
        assert!(v["loop"][field].is_number(), "{field}");
    }

    // The figures are live: the next answer has seen more of the loop.
    let later = admin.get("/stats").json();
    assert!(later["loop"]["iterations"].as_u64().unwrap() > iterations);
    assert!(later["loop"]["events"].as_u64().unwrap() > events);
    let received = |v: &serde_json::Value| v["services"]["admin"]["bytes_received"].as_u64();
    assert!(received(&later) > received(&v));
}

// ----- Statuses --------------------------------------------------------------

#[test]
fn another_method_is_405_naming_the_allowed_ones() {
    let d = Daemon::start(&[]);
    let mut admin = Client::connect(&d);
    for method in ["DELETE", "OPTIONS", "PUT"] {
        admin.send(format!("{method} /stats HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = admin.response(false);
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
    // A body the server does not read: answered, then the connection closes
    // (cleanly, with a FIN) because the body would pass for the next request.
    admin.send(b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let r = admin.response(false);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("connection"), Some("close"));
    admin.expect_eof();
}

#[test]
fn a_malformed_request_is_400_and_closes() {
    let d = Daemon::start(&[]);
    for request in [
        &b"this is not http\r\n\r\n"[..],
        b"GET /stats HTTP/1.1\r\n\r\n",
        b"GET /stats HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        b"GET /stats HTTP/3.0\r\nHost: t\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let mut admin = Client::connect(&d);
        admin.send(request);
        let r = admin.response(false);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(request));
        assert_eq!(r.header("connection"), Some("close"));
        admin.expect_eof();
    }
}

#[test]
fn an_oversized_head_is_431_and_closes() {
    let d = Daemon::start(&[]);
    let mut admin = Client::connect(&d);
    let filler = "a".repeat(9 * 1024);
    admin.send(format!("GET /stats HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}").as_bytes());
    let r = admin.response(false);
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));
    admin.expect_eof();
}

#[test]
fn the_connection_limit_turns_clients_away_with_503() {
    let d = Daemon::start(&["--set", "admin.max_connections=1"]);
    let mut first = Client::connect(&d);
    assert_eq!(first.get("/stats").status, 200, "the first one is served");

    let mut second = Client::connect(&d);
    let r = second.response(false);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    second.expect_eof();

    // With several reactors (`SOCKETLAB_TEST_REACTORS`) the refusal may
    // have come from another one, whose figures arrive at its turn's end.
    let mut v = serde_json::Value::Null;
    assert!(wait_until(|| {
        v = first.get("/stats").json();
        v["services"]["admin"]["connections_rejected"] == 1
    }));
    assert_eq!(v["services"]["admin"]["connections_total"], 2);
    assert_eq!(v["services"]["admin"]["connections_open"], 1);
}

/// Slowloris: a head sent a byte at a time, each byte soon enough to keep
/// the connection from being idle, is cut off at `admin.header_timeout_s`.
#[test]
fn a_head_dripped_past_the_header_timeout_gets_408_and_a_close() {
    let d = Daemon::start(&[
        "--set",
        "admin.header_timeout_s=1",
        "--set",
        "admin.idle_timeout_s=1",
    ]);
    let started = std::time::Instant::now();
    let mut admin = Client::connect(&d);
    admin.send(b"GET /stats HTTP/1.1\r\nHost: test\r\nX-Drip: ");
    admin
        .stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    // Drip one byte per read timeout until the daemon answers; bounded by
    // the patience of every test.
    let mut answer = Vec::new();
    while started.elapsed() < PATIENCE {
        let mut chunk = [0u8; 4096];
        match admin.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = admin.stream.write_all(b"a");
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

#[test]
fn a_client_that_says_nothing_gets_408_after_the_header_timeout() {
    let d = Daemon::start(&["--set", "admin.header_timeout_s=1"]);
    let mut admin = Client::connect(&d);
    let r = admin.response(false);
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection"), Some("close"));
    admin.expect_eof();
}

// ----- Persistent connections --------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let d = Daemon::start(&[]);
    let mut admin = Client::connect(&d);
    admin.send(
        b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let stats = admin.response(false);
    assert_eq!(stats.status, 200);
    assert!(stats.json()["loop"]["iterations"].is_u64());
    let metrics = admin.response(false);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("# TYPE socketlab_events_total counter\n")
    );
    assert_eq!(admin.response(false).status, 404);

    // Still open; `Connection: close` ends it after its answer.
    admin.send(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = admin.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    admin.expect_eof();
}

#[test]
fn head_gets_the_head_of_get_without_the_body() {
    let d = Daemon::start(&[]);
    let mut admin = Client::connect(&d);
    for path in ["/", "/metrics", "/stats", "/nope"] {
        let get = admin.get(path);
        // Pipelined after the HEAD: if the HEAD answer carried a body, this
        // one would not parse.
        admin.send(
            format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
                .as_bytes(),
        );
        let head = admin.response(true);
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        if path == "/" || path == "/nope" {
            assert_eq!(head.header("content-length"), get.header("content-length"));
        } else {
            // The figures moved on between the two, but there is a length.
            assert!(
                head.header("content-length")
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
                    > 0
            );
        }
        assert_eq!(admin.response(false).status, 404, "after HEAD {path}");
    }
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let d = Daemon::start(&[]);
    let mut admin = Client::connect(&d);
    admin.send(b"GET /stats HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = admin.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    admin.send(b"GET /stats HTTP/1.0\r\n\r\n");
    let r = admin.response(false);
    assert_eq!(r.header("connection"), Some("close"));
    admin.expect_eof();
}

#[test]
fn requests_sent_before_the_clients_fin_are_answered_then_it_closes() {
    let d = Daemon::start(&[]);
    let mut admin = Client::connect(&d);
    admin.send(
        b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\nHEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /unfinis",
    );
    admin.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(admin.response(false).status, 200);
    assert_eq!(admin.response(true).status, 200);
    admin.expect_eof();
}

/// A client that pipelines many requests without reading must not make the
/// daemon buffer every answer (PROTOCOL.md §6): answering pauses while the
/// output is at its limit, and every answer still arrives, in order.
#[test]
fn pipelining_without_reading_keeps_the_daemons_memory_bounded() {
    const REQUESTS: usize = 2_000;
    let d = Daemon::start(&[]);
    let mut watcher = Client::connect(&d);
    let page_len = watcher.get("/").body.len();
    let rss_before = d.rss();

    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut flood = Client::connect(&d);
    flood.send(&request.repeat(REQUESTS));
    // Once the daemon has read from the flood, it has also answered what it
    // will answer before the client reads: requests are answered in the
    // turn they are read. (It need not read them all: while the output is
    // full it stops reading.) Admin bytes not sent by the watcher are the
    // flood's.
    assert!(
        wait_until(|| {
            let received = watcher.get("/stats").json()["services"]["admin"]["bytes_received"]
                .as_u64()
                .unwrap();
            received > watcher.sent
        }),
        "the daemon read from the flood"
    );
    // Answering everything read at once would take up to REQUESTS x
    // page_len bytes (about 15 MB).
    let grown = d.rss().saturating_sub(rss_before);
    assert!(
        grown < 6 * 1024 * 1024,
        "daemon grew by {grown} bytes while {} bytes of pages were asked for",
        REQUESTS * page_len
    );

    for i in 0..REQUESTS {
        let r = flood.response(false);
        assert_eq!(r.status, 200, "answer {i}");
        assert_eq!(r.body.len(), page_len, "answer {i}");
    }
    flood.send(b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(flood.response(false).status, 404);
    flood.expect_eof();
}
