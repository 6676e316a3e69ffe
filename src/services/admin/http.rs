//! The part of HTTP/1.1 the admin endpoint speaks: request heads in,
//! [`Parsed`] out; [`Response`]s in, bytes out. Nothing here touches a
//! socket or a clock, so every rule of the module docs one level up is
//! checked below with bytes alone.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use bytes::BytesMut;

/// Largest request head (request line and header fields) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header fields one request may carry.
pub const MAX_HEADERS: usize = 32;

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
    pub(super) fn new(status: Status, reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
        }
    }

    /// The error response, always closing: after a malformed head there is
    /// no telling where the next request would begin.
    pub(super) fn response(&self) -> Response {
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
    /// The head was not complete within `admin.header_timeout_s`.
    RequestTimeout,
    HeadTooLarge,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::HeadTooLarge => 431,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
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
    pub(super) fn new(
        status: Status,
        content_type: &'static str,
        body: impl Into<Cow<'static, str>>,
    ) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            persistence: Persistence::KeepAlive,
        }
    }

    pub(super) fn text(status: Status, body: impl Into<Cow<'static, str>>) -> Response {
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

    #[test]
    fn a_rejection_explains_itself_and_closes() {
        let response = rejected("nonsense\r\n\r\n").response();
        let text = encoded(&response, false);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(body.starts_with("Bad Request: "), "{body}");
    }
}
