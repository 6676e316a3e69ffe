//! A fault-injecting TCP proxy, as Toxiproxy's toxics: see the opening of
//! the parent module.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does to the bytes it forwards, in both directions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fault {
    /// Waits this long before forwarding each chunk read.
    pub delay: Duration,
    /// Forwards one byte per write (with Nagle off, so each is a segment).
    pub slice: bool,
    /// After this many bytes in one direction, forwards nothing more in
    /// either (the connection stays open, silent).
    pub stall_after: Option<u64>,
    /// After this many bytes in one direction, resets both connections.
    pub reset_after: Option<u64>,
}

/// What the proxy did, so tests can show the fault happened.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    pub accepted: AtomicU64,
    /// Bytes forwarded client → upstream and upstream → client.
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// `write` calls made, both directions.
    pub writes: AtomicU64,
    /// Chunks held back by the delay.
    pub delayed: AtomicU64,
    pub stalls: AtomicU64,
    pub resets: AtomicU64,
    /// Connections on which the upstream side ended (EOF or error) while
    /// the proxy was stalled: the daemon gave up on a silent peer.
    pub upstream_closed_while_stalled: AtomicU64,
}

/// A fault-injecting TCP proxy on 127.0.0.1; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub counts: Arc<ProxyCounts>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(ProxyCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (Arc::clone(&counts), Arc::clone(&stop));
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::Relaxed);
                let link = Arc::new(Link {
                    client,
                    server,
                    fault,
                    counts: Arc::clone(&c),
                    stop: Arc::clone(&st),
                    stalled: AtomicBool::new(false),
                    reset: AtomicBool::new(false),
                });
                for up in [true, false] {
                    let link = Arc::clone(&link);
                    std::thread::spawn(move || link.pump(up));
                }
            }
        });
        Proxy {
            addr,
            counts,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn count(&self, field: fn(&ProxyCounts) -> &AtomicU64) -> u64 {
        field(&self.counts).load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// One proxied connection: both sockets, shared by its two pumps.
struct Link {
    client: TcpStream,
    server: TcpStream,
    fault: Fault,
    counts: Arc<ProxyCounts>,
    stop: Arc<AtomicBool>,
    stalled: AtomicBool,
    reset: AtomicBool,
}

impl Link {
    /// Forwards one direction until EOF, an error, a reset or the stop.
    fn pump(&self, up: bool) {
        let (mut from, mut to) = if up {
            (&self.client, &self.server)
        } else {
            (&self.server, &self.client)
        };
        if self.fault.slice {
            let _ = to.set_nodelay(true);
        }
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let total = if up {
            &self.counts.bytes_up
        } else {
            &self.counts.bytes_down
        };
        let mut forwarded = 0u64;
        let mut buf = [0u8; 16 * 1024];
        while !self.stop.load(Ordering::Relaxed) && !self.reset.load(Ordering::Relaxed) {
            if self.stalled.load(Ordering::Relaxed) {
                // Silent: read nothing, write nothing. The only thing
                // watched is whether the daemon ends its side.
                if !up && upstream_ended(&self.server) {
                    self.counts
                        .upstream_closed_while_stalled
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let n = match from.read(&mut buf) {
                Ok(0) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(_) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
            };
            if !self.fault.delay.is_zero() {
                self.counts.delayed.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(self.fault.delay);
            }
            let mut chunk = &buf[..n];
            if let Some(limit) = self.fault.reset_after.or(self.fault.stall_after) {
                chunk = &chunk[..chunk.len().min(limit.saturating_sub(forwarded) as usize)];
            }
            let pieces: Vec<&[u8]> = if self.fault.slice {
                chunk.chunks(1).collect()
            } else {
                vec![chunk]
            };
            // Counted before the bytes go out, so a test whose client has
            // seen them reads counts that include them.
            total.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            for piece in pieces {
                self.counts.writes.fetch_add(1, Ordering::Relaxed);
                if to.write_all(piece).is_err() {
                    return;
                }
            }
            forwarded += chunk.len() as u64;
            if self
                .fault
                .reset_after
                .is_some_and(|limit| forwarded >= limit)
            {
                self.reset_both();
                return;
            }
            if self
                .fault
                .stall_after
                .is_some_and(|limit| forwarded >= limit)
                && !self.stalled.swap(true, Ordering::Relaxed)
            {
                self.counts.stalls.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Resets both connections: SO_LINGER 0, then the socket is closed by
    /// putting /dev/null in place of its descriptor (`dup2`), which makes
    /// the kernel send an RST and leaves a harmless descriptor for the
    /// other pump, which reads EOF from it and ends.
    fn reset_both(&self) {
        if self.reset.swap(true, Ordering::Relaxed) {
            return;
        }
        // Counted before the reset goes out: a test that sees its client
        // fail may read the count at once.
        self.counts.resets.fetch_add(1, Ordering::Relaxed);
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        for s in [&self.client, &self.server] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            // SAFETY: both descriptors are valid; dup2 atomically closes
            // the socket's descriptor and reuses the number for /dev/null,
            // so the `TcpStream` still owns a valid descriptor.
            unsafe {
                libc::dup2(null.as_raw_fd(), s.as_raw_fd());
            }
        }
    }
}

/// Whether the daemon's side of a stalled link has ended: a peek that
/// returns EOF or an error. Waiting data does not count.
fn upstream_ended(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    let ended = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => {
            // Data is waiting: it could still be followed by a FIN. Look at
            // the socket's state instead.
            tcp_state_closed(s)
        }
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    ended
}

/// Whether the kernel says the peer has closed (TCP_INFO state
/// CLOSE_WAIT or CLOSE).
fn tcp_state_closed(s: &TcpStream) -> bool {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // 7 = TCP_CLOSE, 8 = TCP_CLOSE_WAIT (include/net/tcp_states.h).
    rc == 0 && matches!(info.tcpi_state, 7 | 8)
}
