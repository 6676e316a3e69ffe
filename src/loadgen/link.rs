//! A client connection's life as every TCP workload sees it, and how a
//! non-blocking connect completes.
//!
//! # Non-blocking connect
//!
//! `mio::net::TcpStream::connect` returns at once, before the handshake is
//! done. The socket becomes *writable* when the handshake finishes, either
//! way: connected, or failed (refused, unreachable). So on the first event
//! the workload asks the socket which it was ([`connect_result`]), as mio's
//! documentation of `connect` describes: an error stored on the socket
//! (`SO_ERROR`, read by `take_error`) means it failed; a peer address means
//! it is connected; "not connected" means the event was spurious and the
//! handshake is still running.
//!
//! ```text
//!   Connecting ──connected──▶ Open ──EOF, error, failed check──▶ Closed
//!        └──refused, timed out───────────────────────────────────▲
//! ```

use std::io;
use std::time::Instant;

use mio::net::TcpStream;

/// One connection's link to the server.
pub enum Link {
    /// `connect` was called at `since`; the handshake is not finished.
    Connecting { stream: TcpStream, since: Instant },
    /// Connected: the workload's traffic flows.
    Open(TcpStream),
    /// Finished, failed, or not opened yet; no socket.
    Closed,
}

impl Link {
    /// The socket, if there is one.
    pub fn stream(&mut self) -> Option<&mut TcpStream> {
        match self {
            Link::Connecting { stream, .. } | Link::Open(stream) => Some(stream),
            Link::Closed => None,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Link::Open(_))
    }

    pub fn is_connecting(&self) -> bool {
        matches!(self, Link::Connecting { .. })
    }
}

/// What a readiness event says about a pending connect.
pub enum ConnectResult {
    Connected,
    /// A spurious event: the handshake is still running.
    Pending,
    Failed(io::Error),
}

/// Checks a non-blocking connect after a readiness event (see the module
/// documentation).
pub fn connect_result(stream: &TcpStream) -> ConnectResult {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return ConnectResult::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => ConnectResult::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => ConnectResult::Pending,
        Err(e) => ConnectResult::Failed(e),
    }
}

/// Promotes a `Connecting` link to `Open` and returns the socket, to set
/// its options. Does nothing (and returns `None`) in any other state.
pub fn promote(link: &mut Link) -> Option<&mut TcpStream> {
    if let Link::Connecting { .. } = link
        && let Link::Connecting { stream, .. } = std::mem::replace(link, Link::Closed)
    {
        *link = Link::Open(stream);
    }
    match link {
        Link::Open(stream) => Some(stream),
        _ => None,
    }
}
