//! Listening sockets, datagram sockets, and what to do when descriptors run out.
//!
//! # Running out of file descriptors
//!
//! Every accepted connection costs a descriptor. When the process has none
//! left, `accept()` fails with `EMFILE` (or `ENFILE`, the system-wide
//! table). The connection stays in the kernel's accept queue, so the
//! listener stays readable. A level-triggered loop would now spin at 100%
//! CPU, woken again and again for a connection it cannot take; an
//! edge-triggered one would go deaf instead, because no new edge comes for
//! connections already queued. Both are wrong.
//!
//! Two well-known answers exist:
//!
//! * nginx disables the accept event for a while (`ngx_event_accept`,
//!   500 ms) and tries again later. Clients wait in the queue meanwhile,
//!   and may time out there without a word.
//! * libuv keeps one spare descriptor open (`uv__emfile_trick`). On
//!   `EMFILE` it closes the spare, accepts the pending connection with the
//!   freed slot, closes it at once, and reopens the spare, repeating until
//!   the queue is empty. Clients get an immediate, clean close instead of
//!   silence, and the listener is drained, so edge-triggered readiness
//!   keeps working.
//!
//! socketlab uses libuv's trick, because a load tester is better served by
//! a fast, visible refusal than by a hang, and it matches what PROTOCOL.md
//! §6 asks for connections over the limit ("accepted and closed at once").
//! If even the spare cannot be had back (another thread took it; here there
//! are only helper threads, which rarely open files), it falls back to
//! nginx's pause: the listener is retried by a timer. Either way, the
//! connections already open are served throughout, and accepting resumes
//! as soon as a descriptor is free.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use mio::net::{TcpListener, UdpSocket, UnixListener};

use super::connection::Stream;
use crate::service_id::ServiceId;

/// A bound, listening stream socket.
#[derive(Debug)]
pub enum ListenSocket {
    Tcp(TcpListener),
    /// A Unix domain socket, with the path to remove when the daemon stops.
    Unix(UnixListener, PathBuf),
}

impl ListenSocket {
    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            ListenSocket::Tcp(l) => l,
            ListenSocket::Unix(l, _) => l,
        }
    }

    /// Accepts one connection. The accepted socket is already non-blocking:
    /// mio uses `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`, one syscall.
    pub fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            ListenSocket::Tcp(l) => {
                let (s, addr) = l.accept()?;
                Ok((Stream::Tcp(s), Some(addr)))
            }
            ListenSocket::Unix(l, _) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), None))
            }
        }
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        if let ListenSocket::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A listener in the slab.
#[derive(Debug)]
pub struct Listener {
    pub socket: ListenSocket,
    pub service: ServiceId,
    /// In the ready queue: more connections may be waiting than one turn's
    /// batch took.
    pub queued: bool,
}

/// A UDP socket in the slab, with the replies the kernel would not take yet.
#[derive(Debug)]
pub struct UdpEndpoint {
    pub socket: UdpSocket,
    pub service: ServiceId,
    /// Replies waiting for the socket to become writable again, in order.
    pub backlog: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Bytes in `backlog`. Above the service's `max_pending_output` the
    /// endpoint stops reading: the kernel then drops datagrams at its
    /// receive buffer, which is UDP's own form of backpressure.
    pub backlog_bytes: usize,
    pub read_ready: bool,
    pub write_blocked: bool,
    pub queued: bool,
}

/// The spare descriptor of libuv's trick (see the module docs).
#[derive(Debug)]
pub struct Reserve {
    spare: Option<File>,
}

impl Reserve {
    pub fn new() -> Reserve {
        Reserve {
            spare: File::open("/dev/null").ok(),
        }
    }

    /// Takes the spare back if it was lost (its reopening failed while the
    /// process was out of descriptors). Called after a successful accept,
    /// when descriptors are evidently available again; costs nothing while
    /// the spare is held.
    pub fn replenish(&mut self) {
        if self.spare.is_none() {
            self.spare = File::open("/dev/null").ok();
        }
    }

    /// Out of descriptors: frees the spare, and uses it to accept and close
    /// every connection waiting on `listener`. Returns how many were shed,
    /// or `None` when there was no spare to use, and the caller must pause
    /// the listener instead. (If the spare cannot be reopened afterwards,
    /// the next exhaustion pauses; [`Reserve::replenish`] takes it back.)
    pub fn shed(&mut self, listener: &ListenSocket) -> Option<u64> {
        self.spare.take()?;
        let mut shed = 0;
        // Bounded: the accept queue is finite (the listen backlog), and a
        // flood arriving meanwhile is left to the next turn.
        for _ in 0..4096 {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.shutdown_write();
                    drop(stream);
                    shed += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.spare = File::open("/dev/null").ok();
        Some(shed)
    }
}

impl Default for Reserve {
    fn default() -> Reserve {
        Reserve::new()
    }
}

/// True for the `accept()` errors that mean "no descriptor left".
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
        || matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::ENOMEM))
}

/// True for `accept()` errors about one connection that gave up before it
/// was taken (reset while queued): skip it and accept the next.
pub fn connection_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EPERM)
    )
}
