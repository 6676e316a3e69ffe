//! Zero-copy file output: `sendfile(2)`, and the copy it replaces when it
//! cannot be used.
//!
//! # Why sendfile
//!
//! Serving a file the obvious way is `read()` into a buffer, then
//! `write()` from it: every byte crosses from the page cache into user
//! memory and back into the socket's buffer, two copies and two syscalls
//! per chunk, and the daemon owns a buffer the size of a chunk for as long
//! as the transfer lasts. `sendfile(out, in, &offset, count)` asks the
//! kernel to move the bytes from the file's pages to the socket itself. No
//! user buffer, one syscall, and with a network card that does scatter-
//! gather, no copy of the payload at all. nginx (`sendfile on;`), Apache
//! (`EnableSendfile`) and Go's `io.Copy` from a file to a TCP connection
//! all use it.
//!
//! The file's offset is passed in and kept by the outbox, not the file's
//! own position, so one opened file (an `Arc<File>`) can be sent to many
//! connections at once, each at its own place, as `pread` would allow.
//!
//! # Why windows
//!
//! `sendfile` on a non-blocking socket returns as soon as the socket's send
//! buffer is full, so it never waits for the *peer*. It may wait for the
//! *disk*: a page not in the cache is read synchronously, on the loop
//! thread. A range is therefore sent in windows of at most [`FILE_WINDOW`]
//! bytes, each counted against the connection's per-turn write budget
//! (`WRITE_BUDGET`) like ordinary bytes, so a cold file costs at most one
//! window's worth of disk reads before other connections get their turn.
//! A production server would also ask a helper thread to read the next
//! window ahead (`posix_fadvise(WILLNEED)`, or nginx's `aio threads`) so
//! the loop finds it cached; that is not needed here yet.
//!
//! # When sendfile cannot be used
//!
//! Some pairs of descriptors are refused (`EINVAL`: a file on a filesystem
//! that cannot splice, an output the kernel will not accept; `ENOSYS` or
//! `EOPNOTSUPP` elsewhere). Then the range falls back, for the rest of its
//! life, to [`copy_range`]: `pread` into a buffer on the stack, then
//! `write`. Bytes the socket did not take are simply read again next time.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};

use super::WRITE_BUDGET;
use super::connection::Stream;

/// The most one `sendfile` (or one fallback `pread`) moves. It bounds the
/// disk reads one flush can cause on the loop thread, and it is how much
/// of a queued file range counts as pending output (see `Outbox::len`).
/// It is [`WRITE_BUDGET`], so one window is one connection's share of a
/// turn.
pub const FILE_WINDOW: usize = WRITE_BUDGET;

/// A writer that can also take bytes straight from a file.
pub trait FileSink: Write {
    /// Sends up to `len` bytes of `file` from `offset`, without copying
    /// them through user memory, and returns how many were sent (0 means
    /// the file ended before `offset`). The default has no descriptor to
    /// send to and says `ENOSYS`, so such a writer takes the copying path.
    fn sendfile(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let _ = (file, offset, len);
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

impl FileSink for Stream {
    fn sendfile(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let out = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        sendfile_fd(out, file, offset, len)
    }
}

/// `sendfile(2)` from `file` at `offset` to the descriptor `out`.
#[cfg(target_os = "linux")]
pub fn sendfile_fd(out: RawFd, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let Ok(mut off) = libc::off_t::try_from(offset) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: both descriptors are open for the duration of the call (the
    // caller holds `file` and the socket), and `off` is a valid, exclusively
    // borrowed off_t the kernel updates.
    let n = unsafe { libc::sendfile(out, file.as_raw_fd(), &mut off, len) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Other systems spell `sendfile` differently (BSD and macOS take the
/// socket second and report progress through a pointer); they copy.
#[cfg(not(target_os = "linux"))]
pub fn sendfile_fd(_out: RawFd, _file: &File, _offset: u64, _len: usize) -> io::Result<usize> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// True when `sendfile` refused this pair of descriptors, so that copying
/// is the way to go on (rather than a failure of the connection).
pub fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// The fallback: `pread` up to `len` (at most [`FILE_WINDOW`]) bytes at
/// `offset`, then one `write`. Returns the bytes written, or 0 when the
/// file ended before `offset`.
pub fn copy_range<W: Write + ?Sized>(
    w: &mut W,
    file: &File,
    offset: u64,
    len: usize,
) -> io::Result<usize> {
    let mut buf = [0u8; FILE_WINDOW];
    let len = len.min(FILE_WINDOW);
    let n = loop {
        match file.read_at(&mut buf[..len], offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n == 0 {
        return Ok(0);
    }
    match w.write(&buf[..n])? {
        // A socket never takes zero bytes of a non-empty buffer; were it to,
        // that must not look like the end of the file.
        0 => Err(io::ErrorKind::WriteZero.into()),
        sent => Ok(sent),
    }
}
