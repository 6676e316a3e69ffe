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
//! # Memory
//!
//! An empty outbox owns no heap memory: `VecDeque::new()` and
//! `BytesMut::new()` do not allocate, and [`Outbox::clear_if_empty`] gives
//! capacity back once everything is sent, so an idle connection costs only
//! the struct itself.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes, BytesMut};

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
    /// Private bytes appended after the last chunk.
    tail: BytesMut,
    /// Total unsent bytes in `chunks` and `tail`; compared against the
    /// backpressure watermarks after every change.
    len: usize,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        if self.is_empty() && self.chunks.capacity() == 0 && self.tail.capacity() == 0 {
            // Common case: just take the remainder, cheaply. The scratch
            // keeps no capacity, which is what a *connection* should keep
            // either; the scratch re-grows on its next use.
            std::mem::swap(self, other);
            return;
        }
        self.freeze_tail();
        self.chunks.extend(other.chunks.drain(..));
        if !other.tail.is_empty() {
            self.chunks.push_back(other.tail.split().freeze());
        }
        self.len += other.len;
        other.len = 0;
    }

    /// Writes as much as the socket takes, up to `budget` bytes, with one
    /// `writev()` per round. Returns the bytes written and whether the
    /// socket refused more (`WouldBlock` or a partial write): in that case
    /// the caller waits for the next writable event instead of trying again.
    pub fn flush_to<W: Write>(&mut self, w: &mut W, budget: usize) -> io::Result<Flushed> {
        let mut written = 0;
        while !self.is_empty() && written < budget {
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
                for chunk in self.chunks.iter().take(MAX_IOVECS - 1) {
                    slices[count] = IoSlice::new(chunk);
                    count += 1;
                }
                if !self.tail.is_empty() && count < MAX_IOVECS {
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

    /// The unsent bytes, when they are one contiguous slice.
    fn single_slice(&self) -> Option<&[u8]> {
        match (self.chunks.len(), self.tail.is_empty()) {
            (0, _) => Some(&self.tail),
            (1, true) => self.chunks.front().map(|c| &c[..]),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `room` bytes, then says `WouldBlock`,
    /// like a socket whose send buffer fills up.
    struct Tight {
        taken: Vec<u8>,
        room: usize,
    }

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
