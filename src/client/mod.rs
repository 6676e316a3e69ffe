//! Clients for each service: what the classic tutorial clients do, done right.
//!
//! The tutorial clients of every networking book share three habits that
//! work on a quiet loopback and fail everywhere else:
//!
//! - **One `read` is taken to be one reply.** TCP is a byte stream: a reply
//!   may arrive split over several reads, or glued to the next one. Our
//!   clients know how many bytes they sent, or which byte ends a reply, and
//!   read until they have it.
//! - **A read waits forever.** A daemon that never answers, a UDP datagram
//!   that is lost, a firewall that drops packets: each leaves a blocking
//!   client hanging. Every wait here is bounded by a [`Deadline`], and the
//!   error says what was awaited and for how long.
//! - **Writes and reads take turns.** A client that writes a large message
//!   before reading its echo can deadlock against a daemon that stops
//!   reading while its output is unsent (which is exactly what ours does,
//!   to bound its memory). The echo client therefore writes on one thread
//!   and reads on another.
//!
//! This module holds what the clients share: the [`Endpoint`] syntax of
//! `ADDR` arguments, a [`Stream`] over TCP or a Unix socket, deadlines, and
//! the [`ClientError`] every client prints before exiting with status 1.
//!
//! The clients are plain blocking programs on purpose. The daemon shows how
//! one thread serves thousands of sockets with readiness events; a client
//! talks to one socket, and blocking calls with timeouts say what it does
//! most plainly.

pub mod chat;
pub mod daytime;
pub mod echo;
pub mod exec;
pub mod files;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The default time a client waits for a connection or a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a client connects, as written in its `ADDR` argument.
///
/// Accepted forms: `host:port` (a name is resolved when connecting),
/// `1.2.3.4:port`, `[v6]:port`, and `unix:/path` for the stream services
/// that the daemon can serve on a Unix domain socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or IP address and a port, reached over TCP or UDP.
    Inet { host: String, port: u16 },
    /// A Unix domain stream socket.
    Unix(PathBuf),
}

/// Why an `ADDR` argument could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// `unix:` with nothing after it.
    EmptyUnixPath,
    /// No `:port` at the end.
    MissingPort,
    /// The port is not a number from 0 to 65535.
    BadPort(String),
    /// Nothing before `:port`.
    EmptyHost,
    /// An IPv6 address written without brackets, which makes the port
    /// ambiguous.
    UnbracketedIpv6,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::EmptyUnixPath => {
                write!(f, "`unix:` needs a path, e.g. unix:/run/s.sock")
            }
            EndpointError::MissingPort => write!(f, "expected HOST:PORT, [IPV6]:PORT or unix:PATH"),
            EndpointError::BadPort(port) => write!(f, "`{port}` is not a port number (0-65535)"),
            EndpointError::EmptyHost => write!(f, "the host before `:PORT` is empty"),
            EndpointError::UnbracketedIpv6 => {
                write!(f, "write IPv6 addresses in brackets, e.g. [::1]:7007")
            }
        }
    }
}

impl std::error::Error for EndpointError {}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Endpoint, EndpointError> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(EndpointError::EmptyUnixPath);
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        // A literal address (`127.0.0.1:7`, `[::1]:7`) needs no resolving;
        // keeping it in its canonical form makes error messages exact.
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Endpoint::from(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or(EndpointError::MissingPort)?;
        if host.contains(':') && !host.starts_with('[') {
            return Err(EndpointError::UnbracketedIpv6);
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(EndpointError::EmptyHost);
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| EndpointError::BadPort(port.to_string()))?;
        Ok(Endpoint::Inet {
            host: host.to_string(),
            port,
        })
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint::Inet {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inet { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Inet { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Endpoint {
    /// The endpoint a client uses when no `ADDR` is given: the daemon's
    /// default port for the service, on the loopback address.
    pub fn loopback(port: u16) -> Endpoint {
        Endpoint::Inet {
            host: "127.0.0.1".to_string(),
            port,
        }
    }

    /// Opens a stream connection, trying each resolved address in turn
    /// (a name such as `localhost` may resolve to `::1` and `127.0.0.1`),
    /// each attempt bounded by `timeout`.
    pub fn connect(&self, timeout: Duration) -> Result<Stream, ClientError> {
        let connect_error = |source| ClientError::Connect {
            endpoint: self.clone(),
            source,
        };
        match self {
            Endpoint::Unix(path) => UnixStream::connect(path)
                .map(Stream::Unix)
                .map_err(connect_error),
            Endpoint::Inet { .. } => {
                let mut last_error = None;
                for addr in self.resolve()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(stream) => {
                            // Lines and small messages should leave at once,
                            // not wait for Nagle's algorithm to batch them.
                            stream.set_nodelay(true).map_err(connect_error)?;
                            return Ok(Stream::Tcp(stream));
                        }
                        Err(error) => last_error = Some(error),
                    }
                }
                Err(connect_error(last_error.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the name has no address")
                })))
            }
        }
    }

    /// A UDP socket connected to this endpoint, so that `send` and `recv`
    /// talk to it alone: datagrams from any other sender are filtered out
    /// by the kernel, and an ICMP "port unreachable" comes back as an error
    /// instead of as silence.
    pub fn connect_udp(&self) -> Result<UdpSocket, ClientError> {
        if let Endpoint::Unix(_) = self {
            return Err(ClientError::UnixNotSupported);
        }
        let addr = self.resolve()?[0];
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().expect("a literal address")
        } else {
            "[::]:0".parse().expect("a literal address")
        };
        let socket = UdpSocket::bind(local).map_err(|source| ClientError::Io {
            doing: format!("binding a UDP socket on {local}"),
            source,
        })?;
        socket
            .connect(addr)
            .map_err(|source| ClientError::Connect {
                endpoint: self.clone(),
                source,
            })?;
        Ok(socket)
    }

    /// Resolves a host name to its addresses; a literal address resolves
    /// to itself without asking anyone.
    fn resolve(&self) -> Result<Vec<SocketAddr>, ClientError> {
        let Endpoint::Inet { host, port } = self else {
            return Err(ClientError::UnixNotSupported);
        };
        let resolve_error = |source| ClientError::Resolve {
            endpoint: self.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(resolve_error)?
            .collect();
        if addrs.is_empty() {
            return Err(resolve_error(io::Error::new(
                io::ErrorKind::NotFound,
                "the name has no address",
            )));
        }
        Ok(addrs)
    }
}

/// A connected stream socket, TCP or Unix: the clients read and write it
/// alike, whichever way the daemon listens.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// A second handle on the same socket, so that one thread can write
    /// while another reads.
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(stream) => stream.try_clone().map(Stream::Tcp),
            Stream::Unix(stream) => stream.try_clone().map(Stream::Unix),
        }
    }

    /// Bounds each following `read`; `None` waits forever.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.set_read_timeout(timeout),
            Stream::Unix(stream) => stream.set_read_timeout(timeout),
        }
    }

    /// Bounds each following `write`; `None` waits forever.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.set_write_timeout(timeout),
            Stream::Unix(stream) => stream.set_write_timeout(timeout),
        }
    }

    /// Shuts down one or both directions. Shutting down `Write` sends a FIN:
    /// the daemon reads EOF, while this side can still read its replies.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.shutdown(how),
            Stream::Unix(stream) => stream.shutdown(how),
        }
    }

    /// Reads what is available (at least one byte, or 0 at EOF), waiting
    /// no later than `deadline`. `awaiting` names what a timeout missed.
    pub fn read_by(
        &mut self,
        buf: &mut [u8],
        deadline: Deadline,
        awaiting: &str,
    ) -> Result<usize, ClientError> {
        loop {
            let remaining = deadline
                .remaining()
                .ok_or_else(|| deadline.expired(awaiting))?;
            self.set_read_timeout(Some(remaining))
                .map_err(|source| ClientError::io("setting a read timeout", source))?;
            match self.read(buf) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if is_timeout(&error) => return Err(deadline.expired(awaiting)),
                Err(source) => return Err(ClientError::io("reading from the daemon", source)),
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buf),
            Stream::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(buf),
            Stream::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.flush(),
            Stream::Unix(stream) => stream.flush(),
        }
    }
}

/// The moment by which something must have happened, and how long the
/// client was prepared to wait for it (for the error message).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// The time left, or `None` once the deadline has passed. Never
    /// `Some(0)`: socket timeouts of zero are rejected by the OS.
    pub fn remaining(&self) -> Option<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// The error for a wait that ran out of time.
    pub fn expired(&self, awaiting: &str) -> ClientError {
        ClientError::Timeout {
            awaiting: awaiting.to_string(),
            after: self.budget,
        }
    }
}

/// Everything that makes a client give up. Each message names what the
/// client was doing, so the one line printed is enough to act on.
#[derive(Debug)]
pub enum ClientError {
    /// The name in `ADDR` did not resolve.
    Resolve {
        endpoint: Endpoint,
        source: io::Error,
    },
    /// The connection was refused, timed out or failed otherwise.
    Connect {
        endpoint: Endpoint,
        source: io::Error,
    },
    /// `unix:` was given where only an IP address makes sense (UDP).
    UnixNotSupported,
    /// A wait ran past its deadline.
    Timeout { awaiting: String, after: Duration },
    /// The daemon closed the connection before the client was done.
    Closed { awaiting: String },
    /// The daemon's answer was not what the protocol promises.
    Protocol(String),
    /// Any other failed system call.
    Io { doing: String, source: io::Error },
}

impl ClientError {
    /// An I/O error while `doing` something.
    pub fn io(doing: &str, source: io::Error) -> ClientError {
        ClientError::Io {
            doing: doing.to_string(),
            source,
        }
    }

    /// Prints the error as `socketlab <command>: <error>` and gives the
    /// exit status every client uses for a failure.
    pub fn report(&self, command: &str) -> ExitCode {
        eprintln!("socketlab {command}: {self}");
        ExitCode::FAILURE
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Resolve { endpoint, source } => {
                write!(f, "cannot resolve {endpoint}: {source}")
            }
            ClientError::Connect { endpoint, source } => {
                write!(f, "cannot connect to {endpoint}: {source}")?;
                if source.kind() == io::ErrorKind::ConnectionRefused
                    || source.kind() == io::ErrorKind::NotFound
                {
                    write!(f, " (is `socketlab serve` running there?)")?;
                }
                Ok(())
            }
            ClientError::UnixNotSupported => {
                write!(
                    f,
                    "UDP needs an IP address; unix: paths are for stream services"
                )
            }
            ClientError::Timeout { awaiting, after } => {
                write!(
                    f,
                    "timed out after {} waiting for {awaiting}",
                    show_duration(*after)
                )
            }
            ClientError::Closed { awaiting } => {
                write!(f, "the daemon closed the connection before {awaiting}")
            }
            ClientError::Protocol(what) => write!(f, "{what}"),
            ClientError::Io { doing, source } => {
                write!(f, "{doing}: {source}")?;
                // Over UDP a refused port shows up on the next receive as
                // ECONNREFUSED (from the ICMP port-unreachable), not at
                // connect; it means the same as for TCP.
                if source.kind() == io::ErrorKind::ConnectionRefused {
                    write!(f, " (is `socketlab serve` running there?)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Resolve { source, .. }
            | ClientError::Connect { source, .. }
            | ClientError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Whether an I/O error is a socket timeout. Linux reports an expired
/// `SO_RCVTIMEO` as `EAGAIN` (`WouldBlock`), other systems as `ETIMEDOUT`.
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Parses a `--timeout` value: a number of seconds (`5`, `0.5`) or a
/// number with a unit (`250ms`, `5s`, `2m`). Zero is refused, because a
/// socket timeout of zero means "wait forever" to some calls and is an
/// error to others.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = crate::units::parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("`{}` must be a positive duration", text.trim()));
    }
    Ok(duration)
}

/// A duration as a person would write it: `5s`, `250ms`, `1.5s`.
pub fn show_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(host: &str, port: u16) -> Endpoint {
        Endpoint::Inet {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn endpoints_in_every_accepted_form() {
        assert_eq!("127.0.0.1:7007".parse(), Ok(inet("127.0.0.1", 7007)));
        assert_eq!("[::1]:7007".parse(), Ok(inet("::1", 7007)));
        assert_eq!("localhost:9".parse(), Ok(inet("localhost", 9)));
        assert_eq!(
            "unix:/run/echo.sock".parse(),
            Ok(Endpoint::Unix(PathBuf::from("/run/echo.sock")))
        );
    }

    #[test]
    fn endpoints_that_are_refused() {
        assert_eq!(
            "unix:".parse::<Endpoint>(),
            Err(EndpointError::EmptyUnixPath)
        );
        assert_eq!(
            "localhost".parse::<Endpoint>(),
            Err(EndpointError::MissingPort)
        );
        assert_eq!(
            "localhost:http".parse::<Endpoint>(),
            Err(EndpointError::BadPort("http".to_string()))
        );
        assert_eq!(
            "host:70000".parse::<Endpoint>(),
            Err(EndpointError::BadPort("70000".to_string()))
        );
        assert_eq!(":7".parse::<Endpoint>(), Err(EndpointError::EmptyHost));
        assert_eq!(
            "::1:7007".parse::<Endpoint>(),
            Err(EndpointError::UnbracketedIpv6)
        );
    }

    #[test]
    fn endpoints_display_as_they_are_written() {
        for text in [
            "127.0.0.1:7007",
            "[::1]:7194",
            "localhost:13",
            "unix:/tmp/s",
        ] {
            assert_eq!(text.parse::<Endpoint>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("inf").is_err());
    }

    #[test]
    fn durations_are_shown_in_the_shortest_exact_unit() {
        assert_eq!(show_duration(Duration::from_secs(5)), "5s");
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.500s");
    }
}
