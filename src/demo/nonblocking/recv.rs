//! Experiment 3: the four answers of a non-blocking `recv()`.
//!
//! A read on a connected TCP socket can end in exactly four ways, and an
//! event loop must tell them apart:
//!
//! | `recv` returns | meaning                                  | what a server does        |
//! |----------------|------------------------------------------|---------------------------|
//! | `-1`, `EAGAIN` | nothing has arrived yet                  | wait for readable         |
//! | `n > 0`        | `n` bytes, maybe part of a message       | buffer them, parse        |
//! | `0`            | the peer closed its side (FIN): EOF      | finish up and close       |
//! | `-1`, other    | the connection broke, e.g. `ECONNRESET`  | drop the connection       |
//!
//! The reset is provoked the usual way: the peer sets `SO_LINGER` to zero
//! seconds and closes, which makes its kernel send RST instead of FIN and
//! throw away anything unsent.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use serde::Serialize;
use socket2::SockRef;

use crate::demo::report::{Finding, Mode, Observation, Outcome};
use crate::demo::sys::{self, Readiness, SETUP_TIMEOUT};

/// What experiment 3 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The errno of `recv()` before anything was sent: `EAGAIN`.
    pub no_data_errno: Option<&'static str>,
    /// The bytes the next `recv()` returned once the peer had sent "hello".
    pub data: Option<String>,
    /// Whether `recv()` returned 0 (end of stream) after the peer closed.
    pub eof_after_close: bool,
    /// The errno of `recv()` after the peer reset the connection: `ECONNRESET`.
    pub reset_errno: Option<&'static str>,
}

/// The message the peer sends.
const GREETING: &[u8] = b"hello";

pub fn run() -> io::Result<Finding<Facts>> {
    let mut observations = Vec::new();
    let (mut peer, mut server) = sys::connected_pair()?;
    server.set_nonblocking(true)?;
    let mut buf = [0u8; 64];

    // 1. Nothing sent yet.
    let empty = server.read(&mut buf);
    let no_data = Outcome::received(&empty, &buf);
    let no_data_errno = no_data.errno();
    observations.push(Observation::new(
        "recv(server, 64-byte buffer)",
        Mode::NonBlocking,
        no_data,
        "The peer has sent nothing, so the receive queue is empty. Instead of sleeping \
         until something arrives, the call answers EAGAIN.",
    ));

    // 2. The peer sends five bytes; wait until they are in our receive queue.
    peer.write_all(GREETING)?;
    sys::ready_within(&server, Readiness::Readable, SETUP_TIMEOUT)?;
    let got = server.read(&mut buf);
    let data_outcome = Outcome::received(&got, &buf);
    let data = match &data_outcome {
        Outcome::Bytes { text, .. } => text.clone(),
        _ => None,
    };
    observations.push(Observation::new(
        "recv(server, 64-byte buffer) after the peer sent \"hello\"",
        Mode::NonBlocking,
        data_outcome,
        "The bytes are in the kernel's receive queue, so recv copies them out at once. \
         It returns what is there, up to the buffer's size, not a \"message\".",
    ));

    // 3. The peer closes normally: its kernel sends FIN after the data.
    peer.shutdown(Shutdown::Write)?;
    sys::ready_within(&server, Readiness::Readable, SETUP_TIMEOUT)?;
    let closed = server.read(&mut buf);
    let closed_outcome = Outcome::received(&closed, &buf);
    let eof_after_close = closed_outcome == Outcome::Eof;
    observations.push(Observation::new(
        "recv(server, 64-byte buffer) after the peer closed its side",
        Mode::NonBlocking,
        closed_outcome,
        "Zero bytes is not \"no data\" (that is EAGAIN): it is end of stream, the peer's \
         FIN. Every later recv returns 0 too, so the server should finish and close.",
    ));
    drop(peer);

    // 4. A fresh connection whose peer aborts it with SO_LINGER = 0.
    let (abrupt_peer, server) = sys::connected_pair()?;
    server.set_nonblocking(true)?;
    abort(abrupt_peer)?;
    sys::ready_within(&server, Readiness::Readable, SETUP_TIMEOUT)?;
    let reset = (&server).read(&mut buf);
    let reset_outcome = Outcome::received(&reset, &buf);
    let reset_errno = reset_outcome.errno();
    observations.push(Observation::new(
        "recv(server, 64-byte buffer) after the peer closed with SO_LINGER = 0",
        Mode::NonBlocking,
        reset_outcome,
        "A close with a zero linger time makes the peer's kernel send RST instead of FIN. \
         A reset is an error, not an end of stream: whatever was in flight is lost.",
    ));

    Ok(Finding {
        observations,
        summary: "In short: EAGAIN means \"nothing yet\", a positive count means \"some bytes\", \
                  0 means \"the peer is done\", and ECONNRESET means \"the connection is \
                  broken\". A server treats each differently."
            .to_string(),
        facts: Facts {
            no_data_errno,
            data,
            eof_after_close,
            reset_errno,
        },
    })
}

/// Closes `stream` with an RST: `SO_LINGER` on with a zero timeout makes
/// `close()` abort the connection instead of shutting it down gracefully.
pub fn abort(stream: TcpStream) -> io::Result<()> {
    SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}
