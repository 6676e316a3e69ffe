//! Baseline: a chat server in the style of tokio's well-known chat example
//! (tokio/examples/chat.rs), speaking enough of PROTOCOL.md §4 for
//! `socketlab bench chat`.
//!
//! ```text
//! cargo run --release --example baseline_tokio_chat -- [PORT] [multi_thread|current_thread]
//! ```
//!
//! It binds 127.0.0.1:PORT (PORT 0, the default, picks a free port) and
//! prints `listening <addr>` on stdout before anything else. The runtime is
//! `multi_thread`, as `#[tokio::main]` in the example gives, unless told
//! `current_thread`.
//!
//! The design is the example's: one task per client; a shared
//! `Mutex<HashMap<SocketAddr, Tx>>` of per-peer unbounded mpsc channels;
//! to say something, a client locks the map and sends every peer its own
//! `String` clone of the line; each client's task writes what its channel
//! receives, one write per line, while reading its own lines. What it
//! speaks of §4:
//!
//! - on connect: `* welcome guest<K>; room lobby; <N> online; /help for commands`,
//!   then `* guest<K> joined lobby` to everyone, the newcomer included;
//! - a plain line: `<YYYY-MM-DD HH:MM:SS> <nick>: <text>` to everyone, the
//!   sender included; empty lines are ignored;
//! - `/quit` or `quit`: `* bye`, then close; other commands:
//!   `! error: unknown command`;
//! - on leaving: `* <nick> left lobby` to those who remain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The sending half of a peer's channel.
type Tx = mpsc::UnboundedSender<String>;

/// State shared by every client task, as in the example.
struct Shared {
    peers: HashMap<SocketAddr, Tx>,
}

impl Shared {
    /// Sends `line` to every peer: one clone per recipient.
    fn broadcast(&self, line: &str) {
        for tx in self.peers.values() {
            let _ = tx.send(line.to_string());
        }
    }
}

/// Numbers guest nicks, unique in this server's life.
static NEXT_GUEST: AtomicU64 = AtomicU64::new(1);

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .map_or(Ok(0), |p| p.parse())
        .unwrap_or_else(|_| usage());
    let runtime = match args.next().as_deref() {
        None | Some("multi_thread") => tokio::runtime::Builder::new_multi_thread(),
        Some("current_thread") => tokio::runtime::Builder::new_current_thread(),
        Some(_) => usage(),
    }
    .enable_all()
    .build()?;
    runtime.block_on(serve(port))
}

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening {}", listener.local_addr()?);
    let state = Arc::new(Mutex::new(Shared {
        peers: HashMap::new(),
    }));
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = client(state, stream, addr).await;
        });
    }
}

async fn client(
    state: Arc<Mutex<Shared>>,
    stream: TcpStream,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    let nick = format!("guest{}", NEXT_GUEST.fetch_add(1, Ordering::Relaxed));
    let (tx, mut rx) = mpsc::unbounded_channel();

    // Register, then greet and announce under the same lock, so that the
    // welcome line comes before any broadcast to the newcomer.
    {
        let mut shared = state.lock().expect("no task panics while holding the lock");
        shared.peers.insert(addr, tx.clone());
        let welcome = format!(
            "* welcome {nick}; room lobby; {} online; /help for commands\n",
            shared.peers.len()
        );
        let _ = tx.send(welcome);
        shared.broadcast(&format!("* {nick} joined lobby\n"));
    }

    let result = async {
        loop {
            tokio::select! {
                // A line for this client: write it.
                Some(line) = rx.recv() => writer.write_all(line.as_bytes()).await?,
                // A line from this client.
                read = lines.next_line() => {
                    let Some(line) = read? else { return Ok(()) };
                    let text = line.strip_suffix('\r').unwrap_or(&line);
                    if text.is_empty() {
                        continue;
                    }
                    if text == "quit" || text == "/quit" {
                        writer.write_all(b"* bye\n").await?;
                        return Ok(());
                    }
                    if text.starts_with('/') {
                        writer.write_all(b"! error: unknown command\n").await?;
                        continue;
                    }
                    let now = jiff::ZonedDateTime::now();
                    let said = format!("{} {nick}: {text}\n", now.strftime("%Y-%m-%d %H:%M:%S"));
                    state.lock().expect("no task panics while holding the lock").broadcast(&said);
                }
            }
        }
    }
    .await;

    let mut shared = state.lock().expect("no task panics while holding the lock");
    shared.peers.remove(&addr);
    shared.broadcast(&format!("* {nick} left lobby\n"));
    result
}

fn usage() -> ! {
    eprintln!("usage: baseline_tokio_chat [PORT] [multi_thread|current_thread]");
    std::process::exit(2);
}
