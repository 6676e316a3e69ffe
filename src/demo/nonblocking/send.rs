//! Experiment 4: `send()` in a loop until the kernel says `EAGAIN`.
//!
//! `send` does not put bytes on the wire; it copies them into the socket's
//! send buffer and returns. The kernel then moves them to the peer as fast as
//! the peer's receive window allows. If the peer does not read, its receive
//! buffer fills, the window closes, our send buffer fills, and then a
//! non-blocking `send` returns `EAGAIN`. So how much a sender can write
//! before it must wait is set by two buffers: its own `SO_SNDBUF` and the
//! peer's `SO_RCVBUF`.
//!
//! The same limit produces *partial writes*: a `send` of more bytes than fit
//! copies what fits and returns that count. The caller must keep the rest
//! and send it when the socket is writable again; that is the output buffer
//! every connection in an event loop carries.
//!
//! Both buffers are set small here so the loop ends quickly. Linux doubles
//! the value given to `setsockopt` to leave room for its bookkeeping, and
//! `getsockopt` reports the doubled figure (see `man 7 socket`).

use std::io::{self, Read, Write};
use std::net::TcpStream;

use serde::Serialize;
use socket2::SockRef;

use crate::demo::report::{Finding, Mode, Observation, Outcome};
use crate::demo::sys::{self, Readiness, SETUP_TIMEOUT};

/// What experiment 4 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The send buffer size asked for with `setsockopt(SO_SNDBUF)`.
    pub send_buffer_requested: usize,
    /// The sender's `SO_SNDBUF` as the kernel reports it afterwards.
    pub send_buffer: usize,
    /// The receive buffer size asked for on the receiving side.
    pub receive_buffer_requested: usize,
    /// The receiver's `SO_RCVBUF` as the kernel reports it.
    pub receive_buffer: usize,
    /// The size of each `send` in the loop.
    pub chunk: usize,
    /// How many `send` calls succeeded before the first `EAGAIN`.
    pub sends_accepted: usize,
    /// How many bytes the kernel took before the first `EAGAIN`.
    pub bytes_accepted: usize,
    /// The errno that ended the loop: `EAGAIN`.
    pub final_errno: Option<&'static str>,
    /// Of the accepted bytes, how many were already in the receiver's queue.
    pub bytes_in_receiver: usize,
    /// The size of the one large `send` made after the receiver drained its queue.
    pub partial_write_requested: usize,
    /// How many bytes of it the kernel took: fewer than requested.
    pub partial_write_accepted: usize,
}

/// What we ask for with `setsockopt`; small so the experiment is quick.
const SEND_BUFFER: usize = 32 * 1024;
const RECEIVE_BUFFER: usize = 32 * 1024;
/// Bytes per `send` in the filling loop.
const CHUNK: usize = 4096;
/// The loop gives up after this many bytes, whatever the buffer sizes, so a
/// kernel that never pushes back cannot make it run away.
const MAX_BYTES: usize = 64 * 1024 * 1024;

pub fn run() -> io::Result<Finding<Facts>> {
    let mut observations = Vec::new();

    // The receive buffer is set on the listener before anyone connects: an
    // accepted socket inherits it, and the window the receiver advertises in
    // the handshake already matches it.
    let listener = sys::loopback_listener()?;
    SockRef::from(&listener).set_recv_buffer_size(RECEIVE_BUFFER)?;
    let (mut sender, mut receiver) = sys::connected_pair_on(&listener)?;
    SockRef::from(&sender).set_send_buffer_size(SEND_BUFFER)?;
    sender.set_nonblocking(true)?;
    receiver.set_nonblocking(true)?;
    let send_buffer = SockRef::from(&sender).send_buffer_size()?;
    let receive_buffer = SockRef::from(&receiver).recv_buffer_size()?;

    // Fill: send until the kernel refuses.
    let chunk = [b'x'; CHUNK];
    let mut sends_accepted = 0;
    let mut bytes_accepted = 0;
    let refusal = loop {
        match sender.write(&chunk) {
            Ok(n) => {
                sends_accepted += 1;
                bytes_accepted += n;
                if bytes_accepted >= MAX_BYTES {
                    break None;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => break Some(error),
        }
    };
    let final_outcome = match &refusal {
        Some(error) => Outcome::error(error),
        None => Outcome::done(format!("still accepting after {MAX_BYTES} bytes; stopped")),
    };
    let final_errno = final_outcome.errno();
    let bytes_in_receiver = sys::bytes_waiting(&receiver)?;
    observations.push(Observation::new(
        format!("send(sender, {CHUNK} bytes) in a loop, the receiver not reading"),
        Mode::NonBlocking,
        final_outcome,
        format!(
            "The first {sends_accepted} calls returned at once, {bytes_accepted} bytes in all. \
             Of those, {bytes_in_receiver} sit in the receiver's queue (its SO_RCVBUF is \
             {receive_buffer}) and the rest in the sender's send buffer (its SO_SNDBUF is \
             {send_buffer}). With both full, the next send would have to wait, so it \
             answers EAGAIN."
        ),
    ));

    // Make room: the receiver reads everything queued, which reopens the
    // window; the sender's kernel then pushes its buffered bytes across.
    let drained = drain(&mut receiver)?;
    sys::ready_within(&sender, Readiness::Writable, SETUP_TIMEOUT)?;

    // One send far larger than both buffers together can only be taken in part.
    let partial_write_requested = 4 * (send_buffer + receive_buffer);
    let big = vec![b'y'; partial_write_requested];
    let partial = sender.write(&big);
    let partial_write_accepted = *partial.as_ref().unwrap_or(&0);
    observations.push(Observation::new(
        format!(
            "send(sender, {partial_write_requested} bytes) once the receiver read {drained} bytes"
        ),
        Mode::NonBlocking,
        Outcome::byte_count(&partial),
        "The socket is writable again, but one call cannot take more than there is room \
         for: the kernel copied what fits and returned the count. This is a partial \
         write; the program must keep the rest and send it on the next writable event.",
    ));

    Ok(Finding {
        observations,
        summary: format!(
            "In short: send only copies into kernel buffers. With the peer not reading, \
             {bytes_accepted} bytes were taken (send buffer {send_buffer}, peer receive buffer \
             {receive_buffer}, as reported; we asked for {SEND_BUFFER} and {RECEIVE_BUFFER}), \
             then EAGAIN. A large send was cut to {partial_write_accepted} of \
             {partial_write_requested} bytes. Always check how much send took."
        ),
        facts: Facts {
            send_buffer_requested: SEND_BUFFER,
            send_buffer,
            receive_buffer_requested: RECEIVE_BUFFER,
            receive_buffer,
            chunk: CHUNK,
            sends_accepted,
            bytes_accepted,
            final_errno,
            bytes_in_receiver,
            partial_write_requested,
            partial_write_accepted,
        },
    })
}

/// Reads everything queued on a non-blocking `stream` until `EAGAIN` and
/// returns the count. Data still arriving may be left for later.
fn drain(stream: &mut TcpStream) -> io::Result<usize> {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}
