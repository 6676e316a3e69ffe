//! A connection's unsent output.
//!
//! # Why output needs a queue at all
//!
//! A blocking program calls `sendall()` and forgets about it: the call only
//! returns once the kernel took every byte. A non-blocking socket makes no
//! such promise. `write()` copies as much as fits into the kernel's send
//! buffer and returns that count, which may be less than asked (a *partial
//! write*) or nothing at all (`WouldBlock`). Whatever the kernel did not take
//! must wait somewhere until the socket becomes writable again: that place
//! is the outbox.
//!
//! # Two kinds of bytes
//!
//! Most output is private to one connection (an echoed message, a chargen
//! line). It is appended to `tail`, a growable buffer. Some output is shared:
//! the chat service formats a broadcast line once into a [`Bytes`] and hands
//! the *same* allocation to every member. Such chunks are queued by
//! reference, without copying, in `chunks`; private bytes written before them
//! are first frozen into a chunk of their own so the order is kept. A flush
//! hands up to [`MAX_IOVECS`] chunks to one `writev()`.
//!
//! # File ranges
//!
//! A file is not read into memory to be sent: [`Cx::send_file`] queues a
//! *range* (an open file, an offset, a length) in `files`, and the flush
//! hands it to `sendfile(2)` one window at a time (see the `sendfile`
//! module for why, and for the copying fallback). Order with bytes is kept
//! by counting chunks: a range records how many chunks sit before it
//! (`chunks_before`), and queuing one freezes the private tail first, so
//! the tail always comes after every range. Until a range's turn comes, a
//! flush writes only the chunks before it.
//!
//! Backpressure counts a range as at most one [`FILE_WINDOW`] of pending
//! output, not its full length: a 1 GiB range is not 1 GiB of memory (the
//! bytes stay in the page cache until the kernel sends them), and counting
//! it whole would keep the connection above its high watermark for the
//! entire transfer, so the watermarks would mean nothing to a session that
//! also writes bytes. Counted as one window, a range keeps the connection
//! reading, and `pending_output` falls below the low watermark (the
//! session's `on_output_drained`) only once the range is nearly done: the
//! moment to queue the next thing. A service whose `max_pending_output` is
//! below one window is paused by a range on its own, and hears
//! `on_output_full` if the client then stalls.
//!
//! A range the file can no longer fill (the file was truncated underneath:
//! `sendfile` returns 0 before the range is done) cannot be finished
//! honestly. The peer was promised its length, and padding it or ending
//! cleanly would both lie, so the flush fails with `UnexpectedEof`: the
//! reactor logs it and ends the connection at once, without a graceful
//! close, so the peer sees the stream end short of what was announced.
//!
//! # Memory
//!
//! An empty outbox owns no heap memory: `VecDeque::new()` and
//! `BytesMut::new()` do not allocate, and [`Outbox::clear_if_empty`] gives
//! capacity back once everything is sent, so an idle connection costs only
//! the struct itself.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::Cx;
use super::sendfile::{self, FILE_WINDOW, FileSink};

/// How many chunks one `writev()` is given. Linux accepts up to 1024
/// (`IOV_MAX`); 64 is plenty to batch a burst of broadcast lines and keeps
/// the on-stack array small.
pub const MAX_IOVECS: usize = 64;

/// Unsent output of one connection, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Frozen chunks waiting to be written, oldest first. Shared broadcast
    /// lines live here by reference.
    chunks: VecDeque<Bytes>,
    /// Private bytes appended after the last chunk (and after every file
    /// range: queuing a range freezes the tail first).
    tail: BytesMut,
    /// Total unsent bytes in `chunks` and `tail`. With `files`, what
    /// [`Outbox::len`] compares against the backpressure watermarks.
    len: usize,
    /// File ranges waiting to be sent, oldest first; empty (and without
    /// capacity) unless the connection serves files.
    files: VecDeque<FileRange>,
}

/// Part of a file queued for sending.
#[derive(Debug)]
struct FileRange {
    file: Arc<File>,
    /// Where the next byte comes from. The file's own position is never
    /// used, so one file may be sent to many connections at once.
    offset: u64,
    /// Bytes still to send.
    remaining: u64,
    /// Bytes of the range already sent, for the log if it ends early.
    sent: u64,
    /// Chunks queued between the previous range (or the front) and this
    /// one: they leave first. Goes down as they are written.
    chunks_before: usize,
    /// How bytes leave the file; switches to `Copy` for good when
    /// `sendfile` refuses this pair of descriptors.
    method: Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Sendfile,
    /// `pread` + `write` ([`sendfile::copy_range`]).
    Copy,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Unsent output as backpressure sees it: every queued byte, plus at
    /// most one [`FILE_WINDOW`] per file range (module docs).
    pub fn len(&self) -> usize {
        self.len
            + self
                .files
                .iter()
                .map(|r| r.remaining.min(FILE_WINDOW as u64) as usize)
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.files.is_empty()
    }

    /// Appends private bytes (copied).
    pub fn write(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends a shared chunk without copying it.
    pub fn push_shared(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.freeze_tail();
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Appends `len` bytes of `file` from `offset`, sent after everything
    /// queued before it and before everything queued after it.
    pub fn push_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.freeze_tail();
        let ahead: usize = self.files.iter().map(|r| r.chunks_before).sum();
        self.files.push_back(FileRange {
            file,
            offset,
            remaining: len,
            sent: 0,
            chunks_before: self.chunks.len() - ahead,
            method: Method::Sendfile,
        });
    }

    /// Lets an encoder serialise straight into the private tail (frames,
    /// formatted lines), counting what it appended.
    pub fn append_with<R>(&mut self, f: impl FnOnce(&mut BytesMut) -> R) -> R {
        let before = self.tail.len();
        let r = f(&mut self.tail);
        self.len += self.tail.len() - before;
        r
    }

    /// Moves everything from `other` to the end of `self`, keeping order.
    /// Used when output staged in the reactor's shared scratch outbox could
    /// not all be written and must now be kept by the connection.
    pub fn append_outbox(&mut self, other: &mut Outbox) {
        if other.is_empty() {
            return;
        }
        if self.is_empty()
            && self.chunks.capacity() == 0
            && self.tail.capacity() == 0
            && self.files.capacity() == 0
        {
            // Common case: just take the remainder, cheaply. The scratch
            // keeps no capacity, which is what a *connection* should keep
            // either; the scratch re-grows on its next use.
            std::mem::swap(self, other);
            return;
        }
        self.freeze_tail();
        if let Some(first) = other.files.front_mut() {
            // Its chunk count was from the front of `other`; here the
            // chunks after our own last range come before it too.
            let ahead: usize = self.files.iter().map(|r| r.chunks_before).sum();
            first.chunks_before += self.chunks.len() - ahead;
        }
        self.chunks.extend(other.chunks.drain(..));
        if !other.tail.is_empty() {
            self.chunks.push_back(other.tail.split().freeze());
        }
        self.files.extend(other.files.drain(..));
        self.len += other.len;
        other.len = 0;
    }

    /// Writes as much as the socket takes, up to `budget` bytes, with one
    /// `writev()` per round, and file ranges one window per round. Returns
    /// the bytes written and whether the socket refused more (`WouldBlock`
    /// or a partial write): in that case the caller waits for the next
    /// writable event instead of trying again. Fails with `UnexpectedEof`
    /// when a file range's file ended early (module docs).
    pub fn flush_to<W: FileSink>(&mut self, w: &mut W, budget: usize) -> io::Result<Flushed> {
        let mut written = 0;
        while !self.is_empty() && written < budget {
            if self.files.front().is_some_and(|r| r.chunks_before == 0) {
                match self.flush_file(w, budget - written)? {
                    Some(n) => {
                        written += n;
                        continue;
                    }
                    None => {
                        return Ok(Flushed {
                            bytes: written,
                            blocked: true,
                        });
                    }
                }
            }
            let n = if let Some(only) = self.single_slice() {
                // The common case (an echo, a reply): one buffer, so a plain
                // `send()`, without building an iovec array for `writev()`.
                match w.write(only) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) if n < only.len() => {
                        // A partial write: the kernel's send buffer is full.
                        self.consume(n);
                        return Ok(Flushed {
                            bytes: written + n,
                            blocked: true,
                        });
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Flushed {
                            bytes: written,
                            blocked: true,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            } else {
                let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                // Only the chunks before the next file range may go now.
                let (most, with_tail) = match self.files.front() {
                    None => (MAX_IOVECS - 1, true),
                    Some(r) => (r.chunks_before.min(MAX_IOVECS), false),
                };
                for chunk in self.chunks.iter().take(most) {
                    slices[count] = IoSlice::new(chunk);
                    count += 1;
                }
                if with_tail && !self.tail.is_empty() && count < MAX_IOVECS {
                    slices[count] = IoSlice::new(&self.tail);
                    count += 1;
                }
                let wanted: usize = slices[..count].iter().map(|s| s.len()).sum();
                match w.write_vectored(&slices[..count]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        if n < wanted {
                            // A partial write: the kernel's send buffer is
                            // full. Writing again now would only earn
                            // `WouldBlock`, one wasted syscall.
                            self.consume(n);
                            written += n;
                            return Ok(Flushed {
                                bytes: written,
                                blocked: true,
                            });
                        }
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Flushed {
                            bytes: written,
                            blocked: true,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.consume(n);
            written += n;
        }
        // Capacity is kept: the reactor's staging outbox reuses it for the
        // next message. A connection's own outbox is dropped once empty.
        Ok(Flushed {
            bytes: written,
            blocked: false,
        })
    }

    /// The bytes to send now, when they are one contiguous slice.
    fn single_slice(&self) -> Option<&[u8]> {
        if let Some(next) = self.files.front() {
            // Only the chunks before the next range may go; the tail is
            // behind it.
            return (next.chunks_before == 1).then(|| &self.chunks[0][..]);
        }
        match (self.chunks.len(), self.tail.is_empty()) {
            (0, _) => Some(&self.tail),
            (1, true) => self.chunks.front().map(|c| &c[..]),
            _ => None,
        }
    }

    /// Sends one window of the front file range, within `room` bytes.
    /// Returns the bytes sent, or `None` when the socket would take none.
    fn flush_file<W: FileSink>(&mut self, w: &mut W, room: usize) -> io::Result<Option<usize>> {
        let Some(range) = self.files.front_mut() else {
            return Ok(Some(0));
        };
        let want = range.remaining.min(FILE_WINDOW.min(room) as u64) as usize;
        loop {
            let result = match range.method {
                Method::Sendfile => w.sendfile(&range.file, range.offset, want),
                Method::Copy => sendfile::copy_range(w, &range.file, range.offset, want),
            };
            match result {
                Ok(0) => {
                    let total = range.sent + range.remaining;
                    log::warn!(
                        "file range ended early (truncated underneath?): {} of {total} bytes sent; ending the connection",
                        range.sent
                    );
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file ended after {} of {total} bytes", range.sent),
                    ));
                }
                Ok(n) => {
                    range.offset += n as u64;
                    range.remaining -= n as u64;
                    range.sent += n as u64;
                    if range.remaining == 0 {
                        self.files.pop_front();
                    }
                    // Unlike a short `write()`, a short `sendfile()` does
                    // not prove the socket is full: the file may have
                    // ended. The caller goes on, and the next call tells
                    // (`WouldBlock`, or 0 for a file cut short).
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if range.method == Method::Sendfile && sendfile::unsupported(&e) => {
                    log::debug!("sendfile refused ({e}); copying this range instead");
                    range.method = Method::Copy;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops everything unsent (a connection being cut off).
    pub fn discard(&mut self) {
        *self = Outbox::default();
    }

    /// Releases the buffers' capacity once nothing is left to send, so an
    /// idle connection holds no heap memory.
    pub fn clear_if_empty(&mut self) {
        if self.is_empty() {
            if self.chunks.capacity() > 0 {
                self.chunks = VecDeque::new();
            }
            if self.tail.capacity() > 0 {
                self.tail = BytesMut::new();
            }
            if self.files.capacity() > 0 {
                self.files = VecDeque::new();
            }
        }
    }

    fn freeze_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Removes `n` written bytes from the front.
    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(chunk) if chunk.len() <= n => {
                    n -= chunk.len();
                    self.chunks.pop_front();
                    if let Some(next) = self.files.front_mut() {
                        next.chunks_before -= 1;
                    }
                }
                Some(chunk) => {
                    chunk.advance(n);
                    return;
                }
                None => {
                    self.tail.advance(n);
                    return;
                }
            }
        }
    }
}

/// What one flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Bytes the kernel accepted.
    pub bytes: usize,
    /// True when the socket would take no more for now.
    pub blocked: bool,
}

impl Cx<'_> {
    /// Queues `len` bytes of `file` from `offset` for this connection,
    /// after whatever output is queued before it. The bytes go by
    /// `sendfile(2)` (copied if the kernel refuses), a window per turn. A
    /// range counts as at most one window of pending output, so
    /// `on_output_drained` comes when it is nearly done. If the file turns
    /// out shorter than promised, the connection is ended at once.
    pub fn send_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        self.core.staged.push_file(file, offset, len);
    }
}

#[cfg(test)]
mod file_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A writer that accepts at most `room` bytes, then says `WouldBlock`,
    /// like a socket whose send buffer fills up.
    struct Tight {
        taken: Vec<u8>,
        room: usize,
    }

    impl FileSink for Tight {}

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.taken.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        /// Like `writev()` on a socket: takes from every buffer in turn
        /// until the room runs out (std's default takes only the first).
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                n += self.write(b).unwrap_or(0);
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn private_and_shared_bytes_leave_in_the_order_they_were_queued() {
        let mut out = Outbox::new();
        out.write(b"ab");
        out.push_shared(Bytes::from_static(b"CD"));
        out.write(b"ef");
        assert_eq!(out.len(), 6);
        let mut w = Tight {
            taken: vec![],
            room: 100,
        };
        let f = out.flush_to(&mut w, usize::MAX).unwrap();
        assert_eq!(
            f,
            Flushed {
                bytes: 6,
                blocked: false
            }
        );
        assert_eq!(w.taken, b"abCDef");
        assert!(out.is_empty());
    }

    #[test]
    fn a_partial_write_keeps_the_rest_and_reports_blocked() {
        let mut out = Outbox::new();
        out.write(b"hello ");
        out.push_shared(Bytes::from_static(b"world"));
        let mut w = Tight {
            taken: vec![],
            room: 8,
        };
        let f = out.flush_to(&mut w, usize::MAX).unwrap();
        assert_eq!(
            f,
            Flushed {
                bytes: 8,
                blocked: true
            }
        );
        assert_eq!(out.len(), 3);
        w.room = 100;
        out.flush_to(&mut w, usize::MAX).unwrap();
        assert_eq!(w.taken, b"hello world");
    }

    #[test]
    fn an_empty_outbox_holds_no_capacity_once_cleared() {
        let mut out = Outbox::new();
        out.write(&[7; 10_000]);
        let mut w = Tight {
            taken: vec![],
            room: usize::MAX,
        };
        out.flush_to(&mut w, usize::MAX).unwrap();
        out.clear_if_empty();
        assert_eq!(out.tail.capacity(), 0);
        assert_eq!(out.chunks.capacity(), 0);
    }

    #[test]
    fn appending_an_outbox_keeps_order_and_length() {
        let mut a = Outbox::new();
        a.write(b"1");
        a.push_shared(Bytes::from_static(b"2"));
        let mut b = Outbox::new();
        b.write(b"3");
        b.push_shared(Bytes::from_static(b"4"));
        b.write(b"5");
        a.append_outbox(&mut b);
        assert!(b.is_empty());
        assert_eq!(a.len(), 5);
        let mut w = Tight {
            taken: vec![],
            room: 100,
        };
        a.flush_to(&mut w, usize::MAX).unwrap();
        assert_eq!(w.taken, b"12345");
    }

    #[test]
    fn the_budget_bounds_one_flush() {
        let mut out = Outbox::new();
        for _ in 0..100 {
            out.push_shared(Bytes::from(vec![1u8; 1000]));
        }
        let mut w = Tight {
            taken: vec![],
            room: usize::MAX,
        };
        let f = out.flush_to(&mut w, 10_000).unwrap();
        assert!(!f.blocked);
        assert!(f.bytes >= 10_000 && f.bytes < 100_000);
        assert_eq!(out.len(), 100_000 - f.bytes);
    }
}
