//! File ranges in the outbox, with real files and real non-blocking
//! sockets: the `sendfile` path, its copying fallback, partial sends, a
//! reader that stops, a file cut short, and order with ordinary bytes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::*;
use crate::reactor::connection::Stream;

const WAIT: Duration = Duration::from_secs(10);

/// A file holding `len` bytes of a pattern that shows misplaced bytes.
fn file_of(len: usize) -> (Arc<File>, Vec<u8>) {
    let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&content).unwrap();
    (Arc::new(f), content)
}

/// A non-blocking Unix socket pair: the daemon's end as a `Stream`, and a
/// blocking reader (with a timeout) for the test.
fn unix_pair() -> (Stream, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    theirs.set_read_timeout(Some(WAIT)).unwrap();
    (Stream::Unix(mio::net::UnixStream::from_std(ours)), theirs)
}

/// A 127.0.0.1 TCP pair with small kernel buffers, so a range cannot go in
/// one call.
fn tight_tcp_pair() -> (Stream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let theirs = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    socket2::SockRef::from(&ours)
        .set_send_buffer_size(4096)
        .unwrap();
    socket2::SockRef::from(&theirs)
        .set_recv_buffer_size(16 * 1024)
        .unwrap();
    // As the daemon does: small sends leave at once instead of waiting
    // for the peer's delayed acknowledgement.
    ours.set_nodelay(true).unwrap();
    ours.set_nonblocking(true).unwrap();
    theirs.set_read_timeout(Some(WAIT)).unwrap();
    (Stream::Tcp(mio::net::TcpStream::from_std(ours)), theirs)
}

/// Flushes and reads in turn until `want` bytes arrived: bounded in rounds
/// and time. Returns what arrived and how many flushes it took.
fn deliver(
    out: &mut Outbox,
    sink: &mut impl FileSink,
    reader: &mut impl Read,
    want: usize,
) -> (Vec<u8>, usize) {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::with_capacity(want);
    let mut buf = vec![0; 64 * 1024];
    let mut flushes = 0;
    while got.len() < want {
        assert!(Instant::now() < deadline, "{} of {want} bytes", got.len());
        assert!(flushes < 100_000, "no progress");
        if !out.is_empty() {
            out.flush_to(sink, usize::MAX).unwrap();
            flushes += 1;
        }
        // Data is in flight (the flush above sent some, or filled the
        // socket), so this read returns without waiting for more.
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {} of {want} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    assert!(out.is_empty());
    (got, flushes)
}

/// Counts the calls a flush makes, around another sink.
struct Counting<S> {
    inner: S,
    writes: usize,
    vectored: usize,
    sendfiles: usize,
    /// Makes `sendfile` fail with `EINVAL`, as for descriptors it refuses.
    refuse_sendfile: bool,
}

fn counting<S>(inner: S) -> Counting<S> {
    Counting {
        inner,
        writes: 0,
        vectored: 0,
        sendfiles: 0,
        refuse_sendfile: false,
    }
}

impl<S: Write> Write for Counting<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        self.inner.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.vectored += 1;
        self.inner.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: FileSink> FileSink for Counting<S> {
    fn sendfile(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        self.sendfiles += 1;
        if self.refuse_sendfile {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.inner.sendfile(file, offset, len)
    }
}

/// A `Vec` takes everything and has no descriptor: ranges are copied.
impl FileSink for Vec<u8> {}

// ----- Order ----------------------------------------------------------

#[test]
fn bytes_file_ranges_and_bytes_leave_in_the_order_they_were_queued() {
    let (file, content) = file_of(300_000);
    let mut out = Outbox::new();
    out.write(b"head:");
    out.push_file(Arc::clone(&file), 3, 200_000);
    out.push_shared(Bytes::from_static(b"|shared|"));
    out.write(b"|private|");
    out.push_file(Arc::clone(&file), 250_000, 1_000);
    out.write(b":tail");
    let mut expected = b"head:".to_vec();
    expected.extend_from_slice(&content[3..200_003]);
    expected.extend_from_slice(b"|shared||private|");
    expected.extend_from_slice(&content[250_000..251_000]);
    expected.extend_from_slice(b":tail");

    let (stream, mut reader) = unix_pair();
    let mut sink = counting(stream);
    let (got, _) = deliver(&mut out, &mut sink, &mut reader, expected.len());
    assert!(got == expected, "bytes out of order or misplaced");
    assert!(sink.sendfiles > 0, "the ranges went by sendfile");
}

#[test]
fn appending_an_outbox_with_ranges_keeps_their_place() {
    let (file, content) = file_of(10_000);
    let mut conn = Outbox::new();
    conn.write(b"1");
    conn.push_file(Arc::clone(&file), 0, 10);
    conn.write(b"2");
    let mut staged = Outbox::new();
    staged.push_shared(Bytes::from_static(b"3"));
    staged.push_file(Arc::clone(&file), 100, 10);
    staged.write(b"4");
    conn.append_outbox(&mut staged);
    assert!(staged.is_empty());

    let mut sink = Vec::new();
    conn.flush_to(&mut sink, usize::MAX).unwrap();
    let mut expected = b"1".to_vec();
    expected.extend_from_slice(&content[..10]);
    expected.extend_from_slice(b"23");
    expected.extend_from_slice(&content[100..110]);
    expected.extend_from_slice(b"4");
    assert_eq!(sink, expected);
    assert!(conn.is_empty());
}

// ----- Partial sends and a reader that stops ---------------------------

#[test]
fn a_small_send_buffer_takes_a_range_in_partial_sends() {
    const LEN: usize = 512 * 1024;
    let (file, content) = file_of(LEN);
    let (stream, mut reader) = tight_tcp_pair();
    let mut sink = counting(stream);
    let mut out = Outbox::new();
    out.push_file(file, 0, LEN as u64);

    let first = out.flush_to(&mut sink, usize::MAX).unwrap();
    assert!(first.blocked, "{first:?}");
    assert!(first.bytes > 0 && first.bytes < LEN, "{first:?}");
    // The first flush's bytes are still to be read, with the rest.
    let (got, flushes) = deliver(&mut out, &mut sink, &mut reader, LEN);
    assert!(flushes > 1, "the range went in several flushes");
    assert!(got == content, "bytes misplaced");
}

#[test]
fn a_reader_that_stops_leaves_the_flush_blocked_without_spinning() {
    let (file, _) = file_of(4 << 20);
    let (stream, _reader) = tight_tcp_pair();
    let mut sink = counting(stream);
    let mut out = Outbox::new();
    out.push_file(file, 0, 4 << 20);
    // Fill the kernel's buffers: bounded, since they hold far less than
    // the 4 MiB queued.
    let mut sent = 0;
    for _ in 0..1_000 {
        let f = out.flush_to(&mut sink, usize::MAX).unwrap();
        sent += f.bytes;
        if f.blocked && f.bytes == 0 {
            break;
        }
    }
    assert!(sent < 4 << 20, "the reader took nothing, yet all was sent");
    let before = sink.sendfiles + sink.writes + sink.vectored;
    let again = out.flush_to(&mut sink, usize::MAX).unwrap();
    assert_eq!(
        again,
        Flushed {
            bytes: 0,
            blocked: true
        }
    );
    let calls = sink.sendfiles + sink.writes + sink.vectored - before;
    assert_eq!(calls, 1, "one refused call, then the flush gives up");
    assert_eq!(out.len(), FILE_WINDOW, "the range is still queued");
}

// ----- A file cut short -------------------------------------------------

#[test]
fn a_file_truncated_underneath_fails_the_flush_after_what_it_had() {
    let (file, content) = file_of(100_000);
    let mut out = Outbox::new();
    out.push_file(Arc::clone(&file), 0, 100_000);
    file.set_len(10_000).unwrap();

    let (stream, mut reader) = unix_pair();
    let mut sink = counting(stream);
    let err = out.flush_to(&mut sink, usize::MAX).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let mut got = vec![0; 10_000];
    reader.read_exact(&mut got).unwrap();
    assert!(got[..] == content[..10_000]);
    // Nothing beyond the file's new end was sent: the peer must not take
    // padding for content.
    reader.set_nonblocking(true).unwrap();
    let extra = reader.read(&mut [0; 16]);
    assert_eq!(
        extra.map_err(|e| e.kind()),
        Err(io::ErrorKind::WouldBlock),
        "bytes beyond the end of the file"
    );
}

#[test]
fn a_truncated_file_on_the_copying_path_fails_the_same_way() {
    let (file, _) = file_of(50_000);
    let mut out = Outbox::new();
    out.push_file(Arc::clone(&file), 0, 50_000);
    file.set_len(0).unwrap();
    let mut sink = Vec::new();
    let err = out.flush_to(&mut sink, usize::MAX).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(sink.is_empty());
}

// ----- The copying fallback ----------------------------------------------

#[test]
fn when_sendfile_is_refused_the_range_is_copied_and_sendfile_not_retried() {
    let (file, content) = file_of(500_000);
    let (stream, mut reader) = unix_pair();
    let mut sink = counting(stream);
    sink.refuse_sendfile = true;
    let mut out = Outbox::new();
    out.write(b">");
    out.push_file(file, 0, 500_000);
    let (got, _) = deliver(&mut out, &mut sink, &mut reader, 500_001);
    assert_eq!(got[0], b'>');
    assert!(got[1..] == content[..], "copied bytes misplaced");
    assert_eq!(sink.sendfiles, 1, "refused once, then copied for good");
    assert!(sink.writes > 1);
}

// ----- Backpressure and the budget ----------------------------------------

#[test]
fn a_huge_range_counts_as_one_window_of_pending_output() {
    // Sparse: a gibibyte of length, no gibibyte of disk.
    let file = tempfile::tempfile().unwrap();
    file.set_len(1 << 30).unwrap();
    let file = Arc::new(file);
    let mut out = Outbox::new();
    out.write(&[1; 10]);
    out.push_file(Arc::clone(&file), 0, 1 << 30);
    assert_eq!(out.len(), 10 + FILE_WINDOW);
    // A range nearly done counts what is left of it.
    out.push_file(file, (1 << 30) - 1_000, 1_000);
    assert_eq!(out.len(), 10 + FILE_WINDOW + 1_000);
}

#[test]
fn the_budget_bounds_a_flush_of_a_range() {
    let (file, content) = file_of(1 << 20);
    let mut out = Outbox::new();
    out.push_file(file, 0, 1 << 20);
    let mut sink = counting(Vec::new());
    let f = out.flush_to(&mut sink, 100_000).unwrap();
    assert_eq!(
        f,
        Flushed {
            bytes: 100_000,
            blocked: false
        }
    );
    // In windows: no call moved more than one.
    assert_eq!(sink.writes, 100_000usize.div_ceil(FILE_WINDOW));
    assert!(sink.inner[..] == content[..100_000]);
}

// ----- The plain path stays plain -------------------------------------------

#[test]
fn one_buffer_without_ranges_is_one_write() {
    let mut out = Outbox::new();
    out.write(b"hello\n");
    let mut sink = counting(Vec::new());
    let f = out.flush_to(&mut sink, usize::MAX).unwrap();
    assert_eq!(f.bytes, 6);
    assert_eq!(
        (sink.writes, sink.vectored, sink.sendfiles),
        (1, 0, 0),
        "the echo path makes one send and nothing else"
    );
}
