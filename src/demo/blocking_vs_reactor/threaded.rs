//! Thread per client: the blocking server's code, run once per connection
//! on its own thread.
//!
//! The waits now overlap, because each client's sleeping `recv` blocks only
//! its own thread. The price is a thread per connection: a stack (2 MiB of
//! address space for a Rust thread by default, some of it touched), a kernel task for
//! the scheduler, and a context switch whenever one wakes. That is cheap for
//! a hundred clients and heavy for ten thousand.

use std::io;
use std::net::TcpListener;
use std::thread;
use std::time::Instant;

use socket2::SockRef;

use super::blocking::serve_one;
use super::{Served, time_left};

/// Accepts `clients` connections from `listener` and serves each on a new
/// thread; returns when all of them are done.
pub fn serve(listener: TcpListener, clients: usize, deadline: Instant) -> io::Result<Served> {
    thread::scope(|scope| {
        let mut workers = Vec::with_capacity(clients);
        for _ in 0..clients {
            SockRef::from(&listener).set_read_timeout(Some(time_left(deadline)?))?;
            let (stream, _) = listener.accept()?;
            workers.push(scope.spawn(move || serve_one(stream, deadline)));
        }
        let threads = 1 + workers.len();
        // A worker that failed or panicked counts as a client not served.
        let served = workers
            .into_iter()
            .map(|worker| worker.join())
            .filter(|result| matches!(result, Ok(Ok(()))))
            .count();
        Ok(Served { served, threads })
    })
}
