//! Baseline: a bare mio echo loop, the least user-space work per echoed
//! message that this design allows, and so the practical limit for the
//! daemon's echo service.
//!
//! ```text
//! cargo run --release --example baseline_mio_echo -- [PORT]
//! ```
//!
//! It binds 127.0.0.1:PORT (PORT 0, the default, picks a free port) and
//! prints `listening <addr>` on stdout before anything else, so a harness
//! can start it on an ephemeral port and read the address back.
//!
//! One thread, one `Poll`, a `Slab` of connections. Each connection is its
//! socket plus the bytes read but not yet written back; reading stops while
//! any are pending (backpressure), and resumes once they are written.
//! Nothing else: no timers, no limits, no counters.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet written back; empty almost always.
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        None => 0,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("usage: baseline_mio_echo [PORT]");
            std::process::exit(2);
        }
    };
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!("listening {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut connections: Slab<Connection> = Slab::new();
    let mut buf = vec![0u8; 64 * 1024];

    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut connections);
                continue;
            }
            let key = event.token().0;
            let Some(connection) = connections.get_mut(key) else {
                continue; // Already closed earlier in this batch.
            };
            if serve(connection, &poll, Token(key), &mut buf).is_err() {
                let mut gone = connections.remove(key);
                let _ = poll.registry().deregister(&mut gone.stream);
            }
        }
    }
}

/// Accepts until the backlog is empty.
fn accept_all(listener: &TcpListener, poll: &Poll, connections: &mut Slab<Connection>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = connections.vacant_entry();
                if poll
                    .registry()
                    .register(&mut stream, Token(entry.key()), Interest::READABLE)
                    .is_ok()
                {
                    entry.insert(Connection {
                        stream,
                        pending: Vec::new(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors, or a connection reset before accept:
            // drop this attempt and wait for the next readiness event.
            Err(_) => return,
        }
    }
}

/// Writes back what is pending, then echoes what can be read, until the
/// socket would block. `Err` means the connection is finished.
fn serve(c: &mut Connection, poll: &Poll, token: Token, buf: &mut [u8]) -> io::Result<()> {
    if !c.pending.is_empty() {
        let n = write_some(&mut c.stream, &c.pending)?;
        c.pending.drain(..n);
        if !c.pending.is_empty() {
            return Ok(()); // Still full; wait for WRITABLE.
        }
        poll.registry()
            .reregister(&mut c.stream, token, Interest::READABLE)?;
    }
    loop {
        let n = match c.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let written = write_some(&mut c.stream, &buf[..n])?;
        if written < n {
            // The peer reads slower than it writes: keep the rest, stop
            // reading until it is written.
            c.pending.extend_from_slice(&buf[written..n]);
            poll.registry().reregister(
                &mut c.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            return Ok(());
        }
    }
}

/// Writes as much of `data` as the socket takes now.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
