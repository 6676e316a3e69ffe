//! Experiment 2: a non-blocking `connect()`.
//!
//! Connecting takes a round trip: SYN out, SYN-ACK back. A blocking
//! `connect` sleeps through it. A non-blocking one sends the SYN and returns
//! `EINPROGRESS` ("operation now in progress") at once. The program then
//! waits for the socket to become *writable*, which happens when the
//! handshake is over, whether it succeeded or not. Writable does not mean
//! connected: the answer is in the socket's pending error, read with
//! `getsockopt(SO_ERROR)`: 0 for success, or the errno the connect would have
//! returned, such as `ECONNREFUSED` when nothing listens on the port.
//!
//! `std::net::TcpStream::connect` always blocks, so this experiment makes the
//! socket with `socket2`, whose calls map one to one onto the C API.

use std::io;
use std::net::SocketAddr;

use serde::Serialize;
use socket2::{Domain, Socket, Type};

use crate::demo::report::{Finding, Mode, Observation, Outcome, millis};
use crate::demo::sys::{self, Readiness, SETUP_TIMEOUT};

/// What experiment 2 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The errno of the non-blocking `connect()` to a listening port:
    /// `EINPROGRESS` on Linux. `None` would mean it completed at once.
    pub connect_errno: Option<&'static str>,
    /// Whether the connecting socket became writable within the wait.
    pub became_writable: bool,
    /// The pending error read with `SO_ERROR` afterwards: `None` means 0, connected.
    pub so_error: Option<&'static str>,
    /// The errno of the non-blocking `connect()` to a port nobody listens on.
    pub refused_connect_errno: Option<&'static str>,
    /// Whether that socket became writable (the failed handshake is over).
    pub refused_became_writable: bool,
    /// The pending error on that socket: `ECONNREFUSED`.
    pub refused_so_error: Option<&'static str>,
}

pub fn run() -> io::Result<Finding<Facts>> {
    let mut observations = Vec::new();

    // A listener that exists: the handshake will succeed.
    let listener = sys::loopback_listener()?;
    let accepted = attempt(listener.local_addr()?, &mut observations, Target::Listening)?;

    // A port with nothing behind it: the kernel answers the SYN with a reset.
    let refused = attempt(
        sys::unused_loopback_port()?,
        &mut observations,
        Target::Closed,
    )?;

    Ok(Finding {
        observations,
        summary: "In short: a non-blocking connect returns before the handshake is done \
                  (EINPROGRESS). Wait for writable, then ask SO_ERROR whether it worked: \
                  writable only means the attempt is over, successful or not."
            .to_string(),
        facts: Facts {
            connect_errno: accepted.connect_errno,
            became_writable: accepted.became_writable,
            so_error: accepted.so_error,
            refused_connect_errno: refused.connect_errno,
            refused_became_writable: refused.became_writable,
            refused_so_error: refused.so_error,
        },
    })
}

/// Whether the address tried has a listener behind it; it changes only the
/// narration, never the calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Listening,
    Closed,
}

/// What one connect attempt gave, before it is split into [`Facts`] fields.
struct Attempt {
    connect_errno: Option<&'static str>,
    became_writable: bool,
    so_error: Option<&'static str>,
}

/// Connects without waiting to `address`, waits for writable, reads `SO_ERROR`.
fn attempt(
    address: SocketAddr,
    observations: &mut Vec<Observation>,
    target: Target,
) -> io::Result<Attempt> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;

    let connected = socket.connect(&address.into());
    let connect_outcome = match &connected {
        Ok(()) => Outcome::done("0: connected at once"),
        Err(error) => Outcome::error(error),
    };
    let connect_errno = connect_outcome.errno();
    observations.push(Observation::new(
        format!("connect(socket, {address})"),
        Mode::NonBlocking,
        connect_outcome,
        match (target, connect_errno) {
            (Target::Listening, Some("EINPROGRESS")) => {
                "The kernel sent the SYN and returned without waiting for the SYN-ACK. \
                 EINPROGRESS means \"started\", not \"failed\"."
            }
            (Target::Closed, Some("EINPROGRESS")) => {
                "Nothing listens on this port, but connect does not know that yet: it \
                 only sent the SYN. Failures arrive later, like successes."
            }
            (_, None) => {
                "The handshake finished before connect returned, which loopback can do; \
                 a program must handle this case as well as EINPROGRESS."
            }
            (_, Some(_)) => {
                "This time the kernel knew the answer before connect returned and reported \
                 it at once; usually it comes later, through SO_ERROR."
            }
        },
    ));

    let writable = sys::wait_for(&socket, Readiness::Writable, SETUP_TIMEOUT)?;
    observations.push(Observation::new(
        "poll(socket, POLLOUT)",
        Mode::wait(SETUP_TIMEOUT),
        match writable {
            Some(waited) => Outcome::done(format!("writable after {:.3} ms", millis(waited))),
            None => Outcome::TimedOut {
                after_ms: millis(SETUP_TIMEOUT),
            },
        },
        "A connecting socket turns writable when the handshake is over, however it ended.",
    ));

    let pending = socket.take_error()?;
    let so_error = pending.as_ref().map(Outcome::error).and_then(|o| o.errno());
    observations.push(Observation::new(
        "getsockopt(socket, SOL_SOCKET, SO_ERROR)",
        Mode::NonBlocking,
        match &pending {
            None => Outcome::done("0: no error, the connection is established"),
            Some(error) => Outcome::error(error),
        },
        match (target, &pending) {
            (Target::Listening, None) => {
                "SO_ERROR is 0, so the handshake succeeded and the socket is ready for send \
                 and recv."
            }
            (Target::Closed, Some(_)) => {
                "The peer's kernel answered the SYN with a reset. SO_ERROR holds the errno \
                 a blocking connect would have returned, and reading it clears it."
            }
            (_, None) => "Nothing is pending: connect itself already gave the result.",
            (_, Some(_)) => "The handshake failed; SO_ERROR holds the reason.",
        },
    ));

    Ok(Attempt {
        connect_errno,
        became_writable: writable.is_some(),
        so_error,
    })
}
