//! Baseline: thread-per-connection echo on blocking `std::net`, the way
//! servers were written before readiness APIs.
//!
//! ```text
//! cargo run --release --example baseline_thread_echo -- [PORT]
//! ```
//!
//! It binds 127.0.0.1:PORT (PORT 0, the default, picks a free port) and
//! prints `listening <addr>` on stdout before anything else.
//!
//! Each connection gets a thread with an 8 KiB buffer that reads and writes
//! back until EOF. The kernel does the multiplexing (scheduling threads);
//! the cost shows up as a stack and a thread per connection, and as
//! context switches per message.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        None => 0,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("usage: baseline_thread_echo [PORT]");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!("listening {}", listener.local_addr()?);
    for stream in listener.incoming() {
        // A failed accept (say, out of descriptors) loses that connection only.
        let Ok(stream) = stream else { continue };
        // Small stacks: an echo loop needs little, and the default 2 MiB
        // of address space per thread adds up at 10,000 connections.
        let spawned = thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || echo(stream));
        if let Err(e) = spawned {
            eprintln!("cannot start a thread: {e}");
        }
    }
    Ok(())
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0; 8 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
