//! socketlab daytime: the daytime client.
//!
//! ```text
//! socketlab daytime [ADDR] [--udp [--format F]] [--timeout T]
//! ```
//!
//! # TCP: the reply ends where the connection ends
//!
//! RFC 867 has no length field and no terminator the client may rely on:
//! the daemon sends the time and closes, and EOF is the end of the reply.
//! A tutorial client does one `read` and prints it, which works until the
//! reply comes in two segments. This one reads until EOF, bounded twice:
//! by the timeout (a daemon that never closes cannot hang it) and by
//! `MAX_REPLY` bytes (one that never stops sending cannot fill memory).
//!
//! # UDP: one datagram each way
//!
//! An empty datagram asks for the time; a non-empty one is a strftime
//! format, e.g. `--format '%A %H:%M'`. The reply is one datagram without a
//! newline; a lost request or reply is the timeout. A reply beginning with
//! `error:` (an unknown specifier, say) goes to stderr with exit status 1.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use super::{ClientError, Deadline, Endpoint, parse_duration};

/// The daytime service's default port (PROTOCOL.md §1).
const DEFAULT_PORT: u16 = 7013;

/// The longest reply accepted. The daemon's are a few dozen bytes; the
/// bound is there for whatever else may be listening at ADDR.
const MAX_REPLY: usize = 64 * 1024;

/// Arguments of `socketlab daytime`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the daytime service listens: HOST:PORT (an IPv6 host in brackets) or unix:PATH (TCP only).
    /// Also accepted as the first argument, without `--addr`.
    #[arg(
        long = "addr",
        value_name = "ADDR",
        default_value_t = Endpoint::loopback(DEFAULT_PORT)
    )]
    pub addr: Endpoint,
    /// The same address given as the first argument (`socketlab daytime HOST:PORT`).
    #[arg(value_name = "ADDR", conflicts_with = "addr", hide = true)]
    pub addr_positional: Option<Endpoint>,
    /// Ask the UDP daytime service instead of TCP.
    #[arg(long)]
    pub udp: bool,
    /// A strftime format for the UDP service to fill in, e.g. '%Y-%m-%d %H:%M'.
    #[arg(long, value_name = "F", requires = "udp")]
    pub format: Option<String>,
    /// How long to wait for the connection and the reply, e.g. 5, 2.5s, 250ms.
    #[arg(long, value_name = "T", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn run(mut args: Args) -> ExitCode {
    if let Some(addr) = args.addr_positional.take() {
        args.addr = addr;
    }
    let reply = if args.udp {
        ask_udp(
            &args.addr,
            args.format.as_deref().unwrap_or(""),
            args.timeout,
        )
    } else {
        ask_tcp(&args.addr, args.timeout)
    };
    match reply.map(|bytes| Reply::parse(&bytes)) {
        Ok(Reply::Time(time)) => {
            println!("{time}");
            ExitCode::SUCCESS
        }
        Ok(Reply::Error(error)) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
        Err(error) => error.report("daytime"),
    }
}

/// A reply, once its trailing newline is set aside.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// The time, as the daemon formatted it.
    Time(String),
    /// The daemon refused the request: the whole line, `error: ...`.
    Error(String),
}

impl Reply {
    fn parse(bytes: &[u8]) -> Reply {
        // The daemon only sends UTF-8, but a stray byte from something else
        // at ADDR is shown as U+FFFD rather than failing the whole reply.
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        if text.starts_with("error:") {
            Reply::Error(text)
        } else {
            Reply::Time(text)
        }
    }
}

/// Connects, reads until the daemon closes, and returns what it sent.
fn ask_tcp(addr: &Endpoint, timeout: Duration) -> Result<Vec<u8>, ClientError> {
    let deadline = Deadline::after(timeout);
    let mut stream = addr.connect(timeout)?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read_by(&mut buf, deadline, "the daemon to send the time and close")?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.len() > MAX_REPLY {
            return Err(ClientError::Protocol(format!(
                "{addr} sent more than {MAX_REPLY} bytes; is it a daytime service?"
            )));
        }
    }
    if reply.is_empty() {
        return Err(ClientError::Protocol(format!(
            "{addr} closed the connection without sending the time"
        )));
    }
    Ok(reply)
}

/// Sends one datagram (empty, or the format) and returns the reply.
fn ask_udp(addr: &Endpoint, format: &str, timeout: Duration) -> Result<Vec<u8>, ClientError> {
    let deadline = Deadline::after(timeout);
    let socket = addr.connect_udp()?;
    socket
        .send(format.as_bytes())
        .map_err(|source| ClientError::io("sending the request datagram", source))?;
    let mut reply = vec![0u8; MAX_REPLY];
    loop {
        let remaining = deadline
            .remaining()
            .ok_or_else(|| deadline.expired("the time datagram"))?;
        socket
            .set_read_timeout(Some(remaining))
            .map_err(|source| ClientError::io("setting a read timeout", source))?;
        match socket.recv(&mut reply) {
            Ok(n) => {
                reply.truncate(n);
                return Ok(reply);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if super::is_timeout(&error) => {
                return Err(deadline.expired("the time datagram"));
            }
            Err(source) => return Err(ClientError::io("receiving the time datagram", source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_reply_loses_its_newline() {
        assert_eq!(
            Reply::parse(b"2026-11-03 09:05:01\n"),
            Reply::Time("2026-11-03 09:05:01".to_string())
        );
        assert_eq!(
            Reply::parse(b"2026-11-03 09:05:01\r\n"),
            Reply::Time("2026-11-03 09:05:01".to_string())
        );
    }

    #[test]
    fn a_udp_reply_is_taken_whole() {
        assert_eq!(Reply::parse(b"Tuesday"), Reply::Time("Tuesday".to_string()));
        assert_eq!(Reply::parse(b""), Reply::Time(String::new()));
    }

    #[test]
    fn error_replies_are_told_apart() {
        assert_eq!(
            Reply::parse(b"error: unknown specifier %Q"),
            Reply::Error("error: unknown specifier %Q".to_string())
        );
        // Only a leading `error:` is the daemon refusing; a format may well
        // produce text that contains the word.
        assert_eq!(
            Reply::parse(b"no error: 09:05"),
            Reply::Time("no error: 09:05".to_string())
        );
    }
}
