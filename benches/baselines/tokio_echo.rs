//! Baseline: the tokio echo server, as tokio's own example writes it, on
//! either runtime.
//!
//! ```text
//! cargo run --release --example baseline_tokio_echo -- [PORT] [current_thread|multi_thread]
//! ```
//!
//! It binds 127.0.0.1:PORT (PORT 0, the default, picks a free port) and
//! prints `listening <addr>` on stdout before anything else. The runtime
//! is `current_thread` (one thread, like the daemon) unless told
//! `multi_thread` (one worker per core, tokio's default).
//!
//! One task per connection, each with an 8 KiB buffer (the size
//! `tokio::io::copy` uses), reading and writing back until EOF. Sockets
//! get `TCP_NODELAY`, as in every other server compared, so that no
//! server's latency includes Nagle's algorithm.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .map_or(Ok(0), |p| p.parse())
        .unwrap_or_else(|_| usage());
    let runtime = match args.next().as_deref() {
        None | Some("current_thread") => tokio::runtime::Builder::new_current_thread(),
        Some("multi_thread") => tokio::runtime::Builder::new_multi_thread(),
        Some(_) => usage(),
    }
    .enable_all()
    .build()?;
    runtime.block_on(serve(port))
}

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (mut socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors, or a connection reset before accept.
            Err(_) => continue,
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0; 8 * 1024];
            loop {
                let n = match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if socket.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn usage() -> ! {
    eprintln!("usage: baseline_tokio_echo [PORT] [current_thread|multi_thread]");
    std::process::exit(2);
}
