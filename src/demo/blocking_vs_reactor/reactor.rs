//! One thread, many clients: a small readiness loop on mio.
//!
//! The reactor never waits on one socket. It asks the kernel (through
//! `mio::Poll`, which is `epoll` on Linux) which sockets are ready, does for
//! each exactly the work that will not block, and goes back to asking. A
//! client that is thinking costs nothing but an entry in the slab of
//! connections.
//!
//! Each connection is a small state machine, `Phase`, advanced by
//! `Connection::advance` whenever its token shows up in an event. mio's
//! registrations are edge-triggered, so `advance` keeps going until a call
//! says `EAGAIN` (or the connection is finished): stopping earlier could
//! leave bytes that no later event would announce (experiment 7 of
//! `socketlab demo nonblocking` shows this).
//!
//! This loop is deliberately small: one listener, no timers, no
//! backpressure. The daemon's reactor adds those; the shape is the same.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::protocol::{self, GREETING, MAX_REQUEST};
use super::{Served, time_left};

/// The listener's token. Connections use their slab key, which can never
/// reach `usize::MAX`.
const LISTENER: Token = Token(usize::MAX);

/// Serves `clients` connections from `listener` on this one thread and
/// returns when all of them have finished, served or failed.
pub fn serve(listener: TcpListener, clients: usize, deadline: Instant) -> io::Result<Served> {
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;

    // Every open connection, keyed by its token.
    let mut connections: Slab<Connection> = Slab::new();
    // Connections to remove once the current batch of events is handled, so
    // a token is never reused for a new connection within one batch.
    let mut finished: Vec<(usize, Result<(), io::Error>)> = Vec::new();
    let mut served = 0;
    let mut ended = 0;

    while ended < clients {
        match poll.poll(&mut events, Some(time_left(deadline)?)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &mut poll, &mut connections, &mut finished)?;
                continue;
            }
            let key = event.token().0;
            // An event can name a connection already finished in this batch.
            let Some(connection) = connections.get_mut(key) else {
                continue;
            };
            match connection.advance() {
                Ok(Progress::Waiting) => {}
                Ok(Progress::Done) => finished.push((key, Ok(()))),
                Err(error) => finished.push((key, Err(error))),
            }
        }
        for (key, result) in finished.drain(..) {
            if let Some(mut connection) = connections.try_remove(key) {
                // Dropping the stream closes it; deregistering first is tidy
                // but not required, since closing removes it from epoll too.
                let _ = poll.registry().deregister(&mut connection.stream);
                ended += 1;
                if result.is_ok() {
                    served += 1;
                }
            }
        }
    }
    Ok(Served { served, threads: 1 })
}

/// Accepts until `EAGAIN`: one readable event on the listener may stand for
/// many queued connections, and an edge will not come again for them.
fn accept_all(
    listener: &mio::net::TcpListener,
    poll: &mut Poll,
    connections: &mut Slab<Connection>,
    finished: &mut Vec<(usize, Result<(), io::Error>)>,
) -> io::Result<()> {
    loop {
        let (stream, _) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        let key = connections.insert(Connection::new(stream));
        let connection = &mut connections[key];
        poll.registry().register(
            &mut connection.stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // The greeting can go out now; waiting for a first writable event
        // would work too, but costs a trip through the loop.
        match connection.advance() {
            Ok(Progress::Waiting) => {}
            Ok(Progress::Done) => finished.push((key, Ok(()))),
            Err(error) => finished.push((key, Err(error))),
        }
    }
}

/// Where a connection is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending the greeting; `output` holds what is left of it.
    Greeting,
    /// The greeting is out; request bytes collect in `input` until a newline.
    AwaitingRequest,
    /// Sending the reply; the connection is done when `output` is empty.
    Replying,
}

/// What [`Connection::advance`] got to.
enum Progress {
    /// Blocked on the socket (`EAGAIN`); the next event will resume it.
    Waiting,
    /// The reply is fully written; the connection can be closed.
    Done,
}

/// One client's connection and its buffers.
struct Connection {
    stream: TcpStream,
    /// Changes only in `advance`, always forward: Greeting, AwaitingRequest, Replying.
    phase: Phase,
    /// Request bytes read but not yet a complete line. Bounded by `MAX_REQUEST`.
    input: Vec<u8>,
    /// Bytes still to write: the greeting, then the reply. A write may take
    /// only part, so the rest waits here for the next writable event.
    output: Vec<u8>,
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Connection {
            stream,
            phase: Phase::Greeting,
            input: Vec::new(),
            output: GREETING.to_vec(),
        }
    }

    /// Does all the work the socket allows now, moving through the phases
    /// until a call would block or the reply is out.
    fn advance(&mut self) -> io::Result<Progress> {
        loop {
            match self.phase {
                Phase::Greeting => {
                    if !self.flush()? {
                        return Ok(Progress::Waiting);
                    }
                    self.phase = Phase::AwaitingRequest;
                }
                Phase::AwaitingRequest => {
                    self.fill()?;
                    let Some(line) = protocol::complete_line(&self.input) else {
                        return Ok(Progress::Waiting);
                    };
                    self.output = protocol::reply_to(line);
                    self.phase = Phase::Replying;
                }
                Phase::Replying => {
                    return Ok(if self.flush()? {
                        Progress::Done
                    } else {
                        Progress::Waiting
                    });
                }
            }
        }
    }

    /// Writes `output` until it is empty (`true`) or the socket would block
    /// (`false`), keeping whatever was not taken.
    fn flush(&mut self) -> io::Result<bool> {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    /// Reads into `input` until `EAGAIN`. End of stream before a complete
    /// line, or a line longer than `MAX_REQUEST`, is an error for this
    /// connection alone.
    fn fill(&mut self) -> io::Result<()> {
        let mut buf = [0u8; MAX_REQUEST];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return if protocol::complete_line(&self.input).is_some() {
                        Ok(())
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    };
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if self.input.len() > MAX_REQUEST {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "request line too long",
                        ));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}
