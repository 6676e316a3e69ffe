//! The classic server: accept one client, serve it to the end, then the next.
//!
//! Every call here blocks, which makes the code read like the protocol. Its
//! cost is that the thread belongs to one client at a time: while that
//! client thinks, the others wait in the listener's queue, served or not.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use socket2::SockRef;

use super::protocol::{self, GREETING, MAX_REQUEST};
use super::{Served, time_left};

/// Serves `clients` connections from `listener`, one after the other.
/// Every blocking call is bounded by `deadline`.
pub fn serve(listener: TcpListener, clients: usize, deadline: Instant) -> io::Result<Served> {
    let mut served = 0;
    for _ in 0..clients {
        // On Linux a listener's receive timeout also bounds `accept`.
        SockRef::from(&listener).set_read_timeout(Some(time_left(deadline)?))?;
        let (stream, _) = listener.accept()?;
        // A client that misbehaves costs only its own connection.
        if serve_one(stream, deadline).is_ok() {
            served += 1;
        }
    }
    Ok(Served { served, threads: 1 })
}

/// Serves one connection with blocking calls: greet, read the request line,
/// reply, close. Also used by the thread-per-client server.
pub fn serve_one(mut stream: TcpStream, deadline: Instant) -> io::Result<()> {
    stream.set_read_timeout(Some(time_left(deadline)?))?;
    stream.set_write_timeout(Some(time_left(deadline)?))?;
    stream.write_all(GREETING)?;

    // `take` bounds the line, so a client cannot make the server buffer
    // without limit by never sending a newline.
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX);
    BufReader::new((&stream).take(limit)).read_until(b'\n', &mut line)?;
    if protocol::complete_line(&line).is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no complete request line",
        ));
    }
    stream.write_all(&protocol::reply_to(&line))?;
    Ok(())
}
