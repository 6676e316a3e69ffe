//! The socket calls the standard library hides, as small safe functions.
//!
//! `std::net` covers the common path and `socket2` exposes socket options
//! (`SO_LINGER`, `SO_SNDBUF`) and a `connect` that does not wait. What is
//! left is here, each a thin wrapper over one libc call named after it:
//!
//! - [`wait_for`]: `poll(2)` on one socket. This is the classic,
//!   level-triggered readiness call: it reports a socket readable for as long
//!   as data is waiting, unlike mio's edge-triggered `epoll` (experiment 7
//!   shows the difference).
//! - [`bytes_waiting`]: `ioctl(FIONREAD)`, how many bytes sit in the receive
//!   queue, which lets a demo say where bytes are without reading them.
//! - [`recv_with_flags`]: `recv(2)` with flags such as `MSG_TRUNC`.
//!
//! It also has the loopback fixtures every experiment starts from.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// What [`wait_for`] waits for, as `poll(2)` event bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// `POLLIN`: data to read, a connection to accept, or end of stream.
    Readable,
    /// `POLLOUT`: room in the send buffer, or a non-blocking connect finished.
    Writable,
    /// `POLLRDHUP`: the peer has shut down its sending side (Linux only).
    /// Everything it sent before that has arrived, since TCP is in order.
    PeerClosed,
}

impl Readiness {
    fn poll_bits(self) -> libc::c_short {
        match self {
            Readiness::Readable => libc::POLLIN,
            Readiness::Writable => libc::POLLOUT,
            Readiness::PeerClosed => libc::POLLRDHUP,
        }
    }
}

/// Waits with `poll(2)` until `socket` is ready or `timeout` passes.
///
/// Returns how long the wait took if the socket became ready, or `None` on
/// timeout. Errors and hang-ups count as ready, as they do for `poll`: the
/// next call on the socket will report them. An interrupted wait (`EINTR`)
/// is resumed with the time that is left.
pub fn wait_for(
    socket: &impl AsFd,
    readiness: Readiness,
    timeout: Duration,
) -> io::Result<Option<Duration>> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut entry = libc::pollfd {
            fd: socket.as_fd().as_raw_fd(),
            events: readiness.poll_bits(),
            revents: 0,
        };
        // Round up so a wait of 0.5 ms is not turned into a busy poll of 0 ms.
        let left_ms =
            libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `entry` is one valid, initialised pollfd and we pass a count of 1.
        let ready = unsafe { libc::poll(&mut entry, 1, left_ms) };
        match ready {
            -1 => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            0 if Instant::now() >= deadline => return Ok(None),
            0 => {}
            _ => return Ok(Some(started.elapsed())),
        }
    }
}

/// Like [`wait_for`], for setup steps that must not time out: a timeout
/// becomes an `io::ErrorKind::TimedOut` error naming what was awaited.
pub fn ready_within(
    socket: &impl AsFd,
    readiness: Readiness,
    timeout: Duration,
) -> io::Result<Duration> {
    wait_for(socket, readiness, timeout)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the socket was not {readiness:?} within {} ms",
                timeout.as_millis()
            ),
        )
    })
}

/// `ioctl(FIONREAD)`: how many bytes are queued for reading on `socket`.
/// For UDP this is the size of the next datagram, not the total.
pub fn bytes_waiting(socket: &impl AsFd) -> io::Result<usize> {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    let status = unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::FIONREAD, &mut count) };
    if status == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(count).unwrap_or(0))
}

/// `recv(2)` with explicit flags. With `MSG_TRUNC` on a datagram socket,
/// Linux returns the datagram's real length even when `buf` was shorter
/// and the rest was thrown away.
pub fn recv_with_flags(
    socket: &impl AsFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which is valid for writes.
    let received = unsafe {
        libc::recv(
            socket.as_fd().as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
        )
    };
    // A negative return is the only error signal; anything else is a count.
    usize::try_from(received).map_err(|_| io::Error::last_os_error())
}

/// A listener on 127.0.0.1 with a port chosen by the kernel.
pub fn loopback_listener() -> io::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
}

/// A connected pair over loopback, both ends blocking: `(client, server)`,
/// where `server` is the socket `accept` returned.
pub fn connected_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = loopback_listener()?;
    connected_pair_on(&listener)
}

/// Like [`connected_pair`], through a listener the caller prepared (for
/// example with a small receive buffer that accepted sockets inherit).
pub fn connected_pair_on(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect_timeout(&listener.local_addr()?, SETUP_TIMEOUT)?;
    let server = accept_within(listener, SETUP_TIMEOUT)?;
    Ok((client, server))
}

/// How long fixtures wait for loopback setup steps that normally take
/// microseconds, so a broken machine gives an error instead of a hang.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts one connection, waiting at most `timeout` for it to arrive.
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> io::Result<TcpStream> {
    // After a client's connect returns, the server side of the handshake may
    // still be a few microseconds from the accept queue, so wait for the
    // listener to be readable instead of assuming the connection is there.
    ready_within(listener, Readiness::Readable, timeout)?;
    Ok(listener.accept()?.0)
}

/// A loopback address where nothing listens: bind a port, then close it.
/// Another program could take the port in between, which on a test machine's
/// loopback is unlikely enough for a demo.
pub fn unused_loopback_port() -> io::Result<SocketAddr> {
    let listener = loopback_listener()?;
    listener.local_addr()
}
