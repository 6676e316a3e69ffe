//! Experiment 1: `accept()` on a non-blocking listener.
//!
//! A listening socket holds a queue of connections whose handshake the
//! kernel has already finished. `accept()` takes one from the queue. When the
//! queue is empty a blocking listener sleeps; a non-blocking one returns
//! `EAGAIN` at once. An event loop therefore accepts only after the listener
//! is reported readable, and then accepts in a loop until `EAGAIN`, because
//! one readiness event may stand for many queued connections.

use std::io;
use std::net::TcpStream;

use serde::Serialize;

use crate::demo::report::{Finding, Mode, Observation, Outcome, millis};
use crate::demo::sys::{self, Readiness, SETUP_TIMEOUT};

/// What experiment 1 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The errno of `accept()` with an empty queue: `EAGAIN` on Linux.
    pub nothing_pending_errno: Option<&'static str>,
    /// Whether `poll` reported the listener readable once a client connected.
    pub listener_became_readable: bool,
    /// Whether the next `accept()` returned the client's connection (its
    /// peer address is the client's local address).
    pub accepted_the_client: bool,
}

pub fn run() -> io::Result<Finding<Facts>> {
    let listener = sys::loopback_listener()?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let mut observations = Vec::new();

    let nothing_pending = listener.accept();
    let nothing_pending_outcome = match &nothing_pending {
        Ok((_, peer)) => Outcome::done(format!("a connection from {peer}")),
        Err(error) => Outcome::error(error),
    };
    let nothing_pending_errno = nothing_pending_outcome.errno();
    observations.push(Observation::new(
        format!("accept(listener on {address})"),
        Mode::NonBlocking,
        nothing_pending_outcome,
        "No client has connected, so the accept queue is empty. A blocking listener \
         would put the thread to sleep here; a non-blocking one answers EAGAIN, \
         \"try again later\", and the thread is free to do other work.",
    ));

    let client = TcpStream::connect_timeout(&address, SETUP_TIMEOUT)?;
    let readable = sys::wait_for(&listener, Readiness::Readable, SETUP_TIMEOUT)?;
    observations.push(Observation::new(
        "poll(listener, POLLIN) after a client connected",
        Mode::wait(SETUP_TIMEOUT),
        match readable {
            Some(waited) => Outcome::done(format!("readable after {:.3} ms", millis(waited))),
            None => Outcome::TimedOut {
                after_ms: millis(SETUP_TIMEOUT),
            },
        },
        "The client's handshake completed, so the kernel queued the connection and \
         marked the listener readable: for a listener, \"readable\" means \"accept \
         will not block\".",
    ));

    let accepted = listener.accept();
    let accepted_the_client = match &accepted {
        Ok((_, peer)) => *peer == client.local_addr()?,
        Err(_) => false,
    };
    observations.push(Observation::new(
        format!("accept(listener on {address})"),
        Mode::NonBlocking,
        match &accepted {
            Ok((_, peer)) => Outcome::done(format!("a new socket, connected to {peer}")),
            Err(error) => Outcome::error(error),
        },
        "The same call now returns at once with a new connected socket. An event loop \
         would call accept again until EAGAIN, since one event can stand for several \
         queued connections.",
    ));

    Ok(Finding {
        observations,
        summary: "In short: a non-blocking accept never waits. EAGAIN is not a failure but \
                  the kernel's way of saying the queue is empty; readiness tells you when to \
                  call again."
            .to_string(),
        facts: Facts {
            nothing_pending_errno,
            listener_became_readable: readable.is_some(),
            accepted_the_client,
        },
    })
}
