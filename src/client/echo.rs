//! socketlab echo: the echo client.
//!
//! ```text
//! socketlab echo [ADDR] [--udp] [--timeout T]                 interactive
//! socketlab echo [ADDR] [--udp] --count N [--size S] [--verify]  measure
//! ```
//!
//! # Interactive: one line in, its echo out
//!
//! Each line read from stdin is sent, and the client then reads until the
//! echo of that line is complete before it reads the next line. TCP does
//! not keep message boundaries, so "complete" cannot mean "one `read`":
//! the echo of a 10-byte line may come as 3 + 7 bytes, and nothing marks
//! where it ends. What the client does know is how many bytes it has sent.
//! With the daemon in `echo` or `upper` mode the reply has exactly that
//! many bytes; in `stamp` mode it is longer, but still ends in the line's
//! `\n`. So the client reads until it has received at least as many bytes
//! as it sent and the last byte received is the newline that ended the
//! line. When stdin ends, the client shuts down its sending side and
//! prints whatever is still to come until the daemon closes (that is when
//! `stamp` mode sends a last line that had no `\n`).
//!
//! Over UDP each line (with its `\n`) is one datagram, and its reply is
//! one datagram, printed as it is.
//!
//! # Measuring: N round-trips of S bytes
//!
//! `--count N` sends N messages of S bytes, one at a time: each is sent,
//! then its echo read in full, before the next. Each message holds a
//! different run of all 256 byte values, so `--verify` catches any byte
//! that was changed, dropped, added or reordered. The client reports the
//! round-trips per second and the round-trip times.
//!
//! A message larger than the socket buffers cannot be written whole before
//! its echo is read: the daemon stops reading from a connection whose
//! replies are not being read (it bounds its unsent output), and the
//! client's write would then wait forever. So over TCP a writer thread
//! sends each message while the main thread reads its echo.

use std::io::{self, BufRead, Write};
use std::net::{Shutdown, UdpSocket};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{ClientError, Deadline, Endpoint, Stream, parse_duration};

/// The echo service's default port (PROTOCOL.md §1).
const DEFAULT_PORT: u16 = 7007;

/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers),
/// which is also the largest datagram the daemon echoes.
const MAX_DATAGRAM: usize = 65_507;

/// Arguments of `socketlab echo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the echo service listens: HOST:PORT (an IPv6 host in brackets) or unix:PATH.
    /// Also accepted as the first argument, without `--addr`.
    #[arg(
        long = "addr",
        value_name = "ADDR",
        default_value_t = Endpoint::loopback(DEFAULT_PORT)
    )]
    pub addr: Endpoint,
    /// The same address given as the first argument (`socketlab echo HOST:PORT`).
    #[arg(value_name = "ADDR", conflicts_with = "addr", hide = true)]
    pub addr_positional: Option<Endpoint>,
    /// Use the UDP echo service instead of TCP.
    #[arg(long)]
    pub udp: bool,
    /// Send N messages and report the round-trip rate, instead of echoing stdin.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Size of each message in bytes (with --count).
    #[arg(long, value_name = "S", default_value_t = 64, requires = "count")]
    pub size: usize,
    /// Check that every byte came back unchanged (with --count).
    #[arg(long, requires = "count")]
    pub verify: bool,
    /// How long to wait for the connection and for each reply, e.g. 5, 2.5s, 250ms.
    #[arg(long, value_name = "T", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn run(mut args: Args) -> ExitCode {
    if let Some(addr) = args.addr_positional.take() {
        args.addr = addr;
    }
    let outcome = match (args.count, args.udp) {
        (None, false) => interactive_tcp(&args),
        (None, true) => interactive_udp(&args),
        (Some(count), udp) => measure(&args, count, udp),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report("echo"),
    }
}

/// Echoes stdin line by line over TCP (or a Unix socket).
fn interactive_tcp(args: &Args) -> Result<(), ClientError> {
    let mut stream = args.addr.connect(args.timeout)?;
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut stdout = io::stdout().lock();
    let mut reply = EchoProgress::default();
    let mut line = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| ClientError::io("reading stdin", source))?;
        if n == 0 {
            break;
        }
        stream
            .write_all(&line)
            .map_err(|source| ClientError::io("sending to the daemon", source))?;
        reply.sent(&line);
        let deadline = Deadline::after(args.timeout);
        while !reply.is_complete() {
            let n = stream.read_by(&mut buf, deadline, "the echo of a line")?;
            if n == 0 {
                return Err(ClientError::Closed {
                    awaiting: "echoing every byte".to_string(),
                });
            }
            reply.received(&buf[..n]);
            write_stdout(&mut stdout, &buf[..n])?;
        }
        flush_stdout(&mut stdout)?;
    }
    // Half-close: the daemon sees EOF, sends what it still holds (a last
    // line without `\n`, in stamp mode) and closes; we print it all.
    stream
        .shutdown(Shutdown::Write)
        .map_err(|source| ClientError::io("shutting down the sending side", source))?;
    let deadline = Deadline::after(args.timeout);
    loop {
        let n = stream.read_by(&mut buf, deadline, "the daemon to close")?;
        if n == 0 {
            break;
        }
        write_stdout(&mut stdout, &buf[..n])?;
    }
    flush_stdout(&mut stdout)
}

/// Echoes stdin line by line over UDP, one datagram per line.
fn interactive_udp(args: &Args) -> Result<(), ClientError> {
    let socket = args.addr.connect_udp()?;
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut stdout = io::stdout().lock();
    let mut line = Vec::new();
    let mut reply = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| ClientError::io("reading stdin", source))?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_DATAGRAM {
            return Err(ClientError::Protocol(format!(
                "a line of {} bytes does not fit in one datagram (at most {MAX_DATAGRAM})",
                line.len()
            )));
        }
        send_datagram(&socket, &line)?;
        let n = recv_datagram(&socket, &mut reply, Deadline::after(args.timeout))?;
        write_stdout(&mut stdout, &reply[..n])?;
        if !reply[..n].ends_with(b"\n") {
            write_stdout(&mut stdout, b"\n")?;
        }
        flush_stdout(&mut stdout)?;
    }
}

/// What the interactive client knows about the echo it is waiting for.
///
/// This is the whole of the "when is a reply complete" rule, kept apart
/// from the socket so that it can be tested with bytes alone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct EchoProgress {
    /// Bytes sent since the connection opened.
    sent: u64,
    /// Bytes received since the connection opened.
    received: u64,
    /// Whether the last line sent ended with `\n`, so that its echo does too.
    awaiting_newline: bool,
    /// Whether the last byte received was `\n`.
    at_line_end: bool,
}

impl EchoProgress {
    fn sent(&mut self, line: &[u8]) {
        self.sent += line.len() as u64;
        self.awaiting_newline = line.ends_with(b"\n");
    }

    fn received(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        if let Some(&last) = bytes.last() {
            self.at_line_end = last == b'\n';
        }
    }

    /// Whether everything sent so far has come back: at least as many
    /// bytes (more in stamp mode) and, if the line had one, its newline.
    fn is_complete(&self) -> bool {
        self.received >= self.sent && (!self.awaiting_newline || self.at_line_end)
    }
}

/// Sends N messages of S bytes one at a time and reports the round-trips.
fn measure(args: &Args, count: u64, udp: bool) -> Result<(), ClientError> {
    if udp && args.size > MAX_DATAGRAM {
        return Err(ClientError::Protocol(format!(
            "--size {} does not fit in one datagram (at most {MAX_DATAGRAM})",
            args.size
        )));
    }
    let mut rtts = Histogram::<u64>::new(3).expect("3 significant figures is a valid precision");
    let started = Instant::now();
    if udp {
        measure_udp(args, count, &mut rtts)?;
    } else {
        measure_tcp(args, count, &mut rtts)?;
    }
    let elapsed = started.elapsed();
    let report = Report {
        endpoint: &args.addr,
        transport: if udp { "udp" } else { "tcp" },
        count,
        size: args.size,
        verified: args.verify,
        elapsed,
        rtts: &rtts,
    };
    println!("{report}");
    Ok(())
}

/// The TCP measurement. The writer thread sends message `i` when the main
/// thread asks for it, and the main thread reads its echo in full, so one
/// message is in flight at a time whatever its size.
fn measure_tcp(args: &Args, count: u64, rtts: &mut Histogram<u64>) -> Result<(), ClientError> {
    let mut stream = args.addr.connect(args.timeout)?;
    let mut writer = stream
        .try_clone()
        .map_err(|source| ClientError::io("cloning the socket", source))?;
    writer
        .set_write_timeout(Some(args.timeout))
        .map_err(|source| ClientError::io("setting a write timeout", source))?;
    let size = args.size;
    let (send_next, next_index) = mpsc::channel::<u64>();
    let sender = thread::spawn(move || -> io::Result<()> {
        for index in next_index {
            writer.write_all(&message(index, size))?;
        }
        Ok(())
    });

    let outcome = exchange_messages(args, count, &send_next, &mut stream, rtts);
    // Closing the channel ends the writer's loop; shutting the socket down
    // unblocks a writer stuck on a daemon that stopped reading.
    drop(send_next);
    if outcome.is_err() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    let written = sender.join().expect("the writer thread does not panic");
    outcome?;
    written.map_err(|source| ClientError::io("sending to the daemon", source))
}

/// The main thread's half of the TCP measurement: asks the writer for each
/// message in turn and reads its echo in full before asking for the next.
fn exchange_messages(
    args: &Args,
    count: u64,
    send_next: &mpsc::Sender<u64>,
    stream: &mut Stream,
    rtts: &mut Histogram<u64>,
) -> Result<(), ClientError> {
    let mut echo = vec![0u8; args.size];
    for index in 0..count {
        let sent_at = Instant::now();
        // The writer only stops early if a write failed; its error is
        // reported once it is joined.
        if send_next.send(index).is_err() {
            break;
        }
        read_echo(stream, &mut echo, Deadline::after(args.timeout))?;
        record(rtts, sent_at.elapsed());
        if args.verify {
            verify(index, &message(index, args.size), &echo)?;
        }
    }
    Ok(())
}

/// Reads exactly `echo.len()` bytes, however many reads that takes.
fn read_echo(stream: &mut Stream, echo: &mut [u8], deadline: Deadline) -> Result<(), ClientError> {
    let mut filled = 0;
    while filled < echo.len() {
        let n = stream.read_by(&mut echo[filled..], deadline, "an echo")?;
        if n == 0 {
            return Err(ClientError::Closed {
                awaiting: format!("echoing a whole message ({filled} of {} bytes)", echo.len()),
            });
        }
        filled += n;
    }
    Ok(())
}

/// The UDP measurement: one datagram out, its echo in, N times.
fn measure_udp(args: &Args, count: u64, rtts: &mut Histogram<u64>) -> Result<(), ClientError> {
    let socket = args.addr.connect_udp()?;
    let mut reply = vec![0u8; MAX_DATAGRAM + 1];
    for index in 0..count {
        let sent = message(index, args.size);
        let sent_at = Instant::now();
        send_datagram(&socket, &sent)?;
        let n = recv_datagram(&socket, &mut reply, Deadline::after(args.timeout))?;
        record(rtts, sent_at.elapsed());
        if n != sent.len() {
            return Err(ClientError::Protocol(format!(
                "echo mismatch in message {index}: sent {} bytes, got a datagram of {n}",
                sent.len()
            )));
        }
        if args.verify {
            verify(index, &sent, &reply[..n])?;
        }
    }
    Ok(())
}

/// Message `index` of `size` bytes: all 256 byte values in turn, starting
/// at a different value for each message, so that an echo of the wrong
/// message, or of a message shifted by a byte, cannot pass for the right one.
fn message(index: u64, size: usize) -> Vec<u8> {
    let start = index.wrapping_mul(97) as usize;
    (0..size).map(|i| (start + i) as u8).collect()
}

/// Compares an echo with what was sent and names the first difference.
fn verify(index: u64, sent: &[u8], echo: &[u8]) -> Result<(), ClientError> {
    match sent.iter().zip(echo).position(|(a, b)| a != b) {
        None if sent.len() == echo.len() => Ok(()),
        None => Err(ClientError::Protocol(format!(
            "echo mismatch in message {index}: sent {} bytes, got {}",
            sent.len(),
            echo.len()
        ))),
        Some(at) => Err(ClientError::Protocol(format!(
            "echo mismatch in message {index} at byte {at}: sent 0x{:02x}, got 0x{:02x}",
            sent[at], echo[at]
        ))),
    }
}

fn record(rtts: &mut Histogram<u64>, rtt: Duration) {
    // The histogram grows to fit any value, so recording cannot fail.
    let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
    rtts.saturating_record(micros.max(1));
}

/// The summary line of a measurement.
struct Report<'a> {
    endpoint: &'a Endpoint,
    transport: &'static str,
    count: u64,
    size: usize,
    verified: bool,
    elapsed: Duration,
    rtts: &'a Histogram<u64>,
}

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let rate = self.count as f64 / secs;
        let mib_per_s = (self.count as f64 * self.size as f64) / secs / (1024.0 * 1024.0);
        write!(
            f,
            "echo {} {}: {} round-trips of {} bytes in {:.3}s: {:.0} round-trips/s, {:.2} MiB/s each way",
            self.endpoint, self.transport, self.count, self.size, secs, rate, mib_per_s
        )?;
        if self.count > 0 {
            write!(
                f,
                "; rtt min {}us p50 {}us p99 {}us max {}us",
                self.rtts.min(),
                self.rtts.value_at_quantile(0.50),
                self.rtts.value_at_quantile(0.99),
                self.rtts.max()
            )?;
        }
        if self.verified {
            write!(f, "; every byte verified")?;
        }
        Ok(())
    }
}

fn send_datagram(socket: &UdpSocket, datagram: &[u8]) -> Result<(), ClientError> {
    socket
        .send(datagram)
        .map(drop)
        .map_err(|source| ClientError::io("sending a datagram", source))
}

/// Receives one datagram by `deadline`. A reply lost on the way is the
/// timeout; a daemon not listening shows up as "connection refused",
/// because the socket is connected and so receives the ICMP error.
fn recv_datagram(
    socket: &UdpSocket,
    buf: &mut [u8],
    deadline: Deadline,
) -> Result<usize, ClientError> {
    loop {
        let remaining = deadline
            .remaining()
            .ok_or_else(|| deadline.expired("an echo datagram"))?;
        socket
            .set_read_timeout(Some(remaining))
            .map_err(|source| ClientError::io("setting a read timeout", source))?;
        match socket.recv(buf) {
            Ok(n) => return Ok(n),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if super::is_timeout(&error) => {
                return Err(deadline.expired("an echo datagram"));
            }
            Err(source) => return Err(ClientError::io("receiving a datagram", source)),
        }
    }
}

fn write_stdout(stdout: &mut impl Write, bytes: &[u8]) -> Result<(), ClientError> {
    stdout
        .write_all(bytes)
        .map_err(|source| ClientError::io("writing stdout", source))
}

fn flush_stdout(stdout: &mut impl Write) -> Result<(), ClientError> {
    stdout
        .flush()
        .map_err(|source| ClientError::io("writing stdout", source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress_after(sent: &[&[u8]], received: &[&[u8]]) -> EchoProgress {
        let mut progress = EchoProgress::default();
        for line in sent {
            progress.sent(line);
        }
        for chunk in received {
            progress.received(chunk);
        }
        progress
    }

    #[test]
    fn an_echo_split_over_reads_is_complete_only_when_whole() {
        assert!(!progress_after(&[b"hello\n"], &[b"hel"]).is_complete());
        assert!(!progress_after(&[b"hello\n"], &[b"hel", b"lo"]).is_complete());
        assert!(progress_after(&[b"hello\n"], &[b"hel", b"lo", b"\n"]).is_complete());
    }

    #[test]
    fn a_stamped_echo_is_longer_and_ends_at_the_newline() {
        let stamp: &[u8] = b"[Mon Nov  3 09:05:01 2026] ";
        let progress = progress_after(&[b"hi\n"], &[stamp]);
        assert!(!progress.is_complete(), "more bytes but no newline yet");
        let progress = progress_after(&[b"hi\n"], &[stamp, b"hi\n"]);
        assert!(progress.is_complete());
        // The second line's reply must not be mistaken for complete just
        // because the first one left the byte count ahead.
        let mut progress = progress;
        progress.sent(b"there\n");
        progress.received(stamp);
        assert!(!progress.is_complete());
        progress.received(b"there\n");
        assert!(progress.is_complete());
    }

    #[test]
    fn a_last_line_without_newline_needs_only_its_bytes() {
        assert!(!progress_after(&[b"tail"], &[b"ta"]).is_complete());
        assert!(progress_after(&[b"tail"], &[b"ta", b"il"]).is_complete());
    }

    #[test]
    fn messages_differ_from_each_other_and_cover_every_byte() {
        let first = message(0, 256);
        let mut values = first.clone();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), 256);
        assert_ne!(message(1, 64), message(0, 64));
        assert_ne!(message(1, 64)[1..], message(0, 64)[..63]);
    }

    #[test]
    fn verify_names_the_first_difference() {
        let sent = message(3, 8);
        assert!(verify(3, &sent, &sent).is_ok());
        let mut changed = sent.clone();
        changed[5] ^= 0x20;
        let error = verify(3, &sent, &changed).unwrap_err().to_string();
        assert!(error.contains("message 3 at byte 5"), "{error}");
        let error = verify(3, &sent, &sent[..7]).unwrap_err().to_string();
        assert!(error.contains("sent 8 bytes, got 7"), "{error}");
    }
}
