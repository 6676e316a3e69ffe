//! The two directions of a file transfer, and the two seams through which
//! they reach the reactor: [`blocking`] (work for the helper pool) and
//! [`send_range`] (file bytes to the client, by `sendfile`).
//!
//! # Upload
//!
//! ```text
//! put ──checks, reserve──> [prefix staged?] ──yes──> hash prefix (pool) ──┐
//!                                │ no                                     │
//!                                v                                        v
//!                         ready{offset:0}                        ready{offset:K}
//!                                └──────────────> Receiving <─────────────┘
//!                     each chunk: write(2) to the .part file, hash it, drop it
//!                                                 │ last byte
//!                                        digest == announced?
//!                                  no: "checksum mismatch", staging removed
//!                                  yes: fsync, rename into place,
//!                                       fsync the directory (pool) ──> ok
//! ```
//!
//! The bytes go from the reactor's read buffer to the file at once: the
//! daemon holds no more than one read of an upload in memory, however
//! slow the disk (the page cache absorbs it; when it cannot, `write`
//! blocks the loop for that moment, which the pool would avoid at the cost
//! of a copy per chunk). What makes the file durable, `fsync`, and what
//! reads a whole file, hashing, never run on the loop.
//!
//! # Download
//!
//! `ready` carries the whole file's SHA-256, cached by file identity
//! (device, inode, size, mtime) and computed on the pool the first time.
//! Then the whole range is handed to the reactor as a file range
//! (`Cx::send_file`), which sends it with `sendfile(2)` in windows as the
//! client reads: the bytes go from the page cache to the socket without
//! passing through the daemon's memory, a reader that stops reading stops
//! the sending, and the range counts as one window toward the output limit,
//! however large the file.
//!
//! # Seams
//!
//! The helper pool returns results in a few general shapes
//! ([`JobOutput`]); this service's results are richer (a hash state to go
//! on with, a quota book), so a job leaves its [`Done`] in the session's
//! [`JobSlot`] and reports only that it finished. The pool's queue is
//! bounded: when it is full, [`blocking`] says so and the session answers
//! `busy` instead of waiting.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Cx;
use super::quota::Book;
use super::shared::FileKey;
use crate::reactor::{Job, JobError, JobOutput};

/// What a job on the pool reports back.
pub enum Done {
    /// The staged prefix of a resumed upload, hashed.
    Prefix(io::Result<Sha256>),
    /// The upload is durable and in place.
    Committed(io::Result<Committed>),
    /// A whole file's digest, for a download.
    Digest(io::Result<[u8; 32]>),
    /// A user's quota book, counted from the disk after their login.
    Counted(Book),
}

/// Where a pool job leaves its result for the session; one job runs per
/// connection at a time, so one slot is enough.
#[derive(Clone, Default)]
pub struct JobSlot(Arc<Mutex<Option<Done>>>);

impl JobSlot {
    /// The result the finished job left, if any.
    pub fn take(&self) -> Option<Done> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The helper pool's queue is full; the work was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBusy;

/// The tag of this service's jobs (it runs one at a time, so one is enough).
const JOB_TAG: u64 = 1;

/// Runs `work` on the helper pool; its result is left in `slot`, and the
/// session hears that it finished through `on_source`. The one place the
/// pool is reached.
pub fn blocking(
    cx: &mut Cx<'_>,
    slot: &JobSlot,
    work: impl FnOnce() -> Done + Send + 'static,
) -> Result<(), PoolBusy> {
    let out = Arc::clone(&slot.0);
    let job = Job::new(JOB_TAG, move || {
        let done = work();
        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
        Ok(JobOutput::Unit)
    });
    cx.submit(job).map_err(|_| PoolBusy)
}

/// Why a job finished without leaving a result: it panicked, or the daemon
/// is stopping and cancelled it before it ran.
pub fn job_failure(error: &JobError) -> io::Error {
    match error {
        JobError::Io(e) => io::Error::new(e.kind(), e.to_string()),
        JobError::Panicked(message) => io::Error::other(format!("helper failed: {message}")),
        JobError::Cancelled => io::Error::other("the daemon is stopping"),
    }
}

/// Hands the reactor the rest of a download, `offset..end` of `file`, to
/// send with `sendfile` as the client reads. The one place file bytes are
/// sent. If the file shrinks meanwhile, the reactor ends the connection:
/// the client was promised `end - offset` bytes.
pub fn send_range(cx: &mut Cx<'_>, file: &Arc<File>, offset: u64, end: u64) {
    if offset < end {
        cx.send_file(Arc::clone(file), offset, end - offset);
    }
}

/// An upload in progress.
pub struct Upload {
    /// Upload id in the staging directory and the quota book.
    pub id: String,
    /// Target, relative to the home.
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The `.part` file; shared with a pool job while one runs.
    pub file: Arc<File>,
    /// The user's staging directory.
    pub dir: PathBuf,
    /// Bytes in the `.part` file.
    pub written: u64,
    /// SHA-256 of those bytes.
    pub hasher: Sha256,
}

impl Upload {
    pub fn remaining(&self) -> u64 {
        self.size - self.written
    }

    /// Appends a chunk of the upload to the `.part` file and the hash.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < chunk.len() {
            match self
                .file
                .write_at(&chunk[done..], self.written + done as u64)
            {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }
}

/// Hashes the first `len` bytes of a staged file (on the pool).
pub fn hash_prefix(file: &File, len: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut reader = file.try_clone()?;
    reader.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher)
}

/// Hashes a whole file through its descriptor (on the pool).
pub fn hash_file(file: &File, size: u64) -> io::Result<[u8; 32]> {
    Ok(hash_prefix(file, size)?.finalize().into())
}

/// A committed upload.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The size of the file it replaced (0 for none).
    pub replaced: u64,
    /// Its identity in place, for the digest cache: a `rename` keeps the
    /// inode, the size and the mtime.
    pub key: FileKey,
}

/// Makes a finished upload durable and puts it in place (on the pool):
/// `fsync` of the data, `rename` over the target (atomic: a reader sees
/// the old file or the new one), `fsync` of the target's directory so the
/// rename survives a crash.
pub fn commit(
    file: &File,
    staging: &OwnedFd,
    part: &str,
    parent: &OwnedFd,
    name: &str,
) -> io::Result<Committed> {
    file.sync_all()?;
    let key = super::shared::file_key(&file.metadata()?);
    let replaced = match rustix::fs::statat(parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => st.st_size as u64,
        _ => 0,
    };
    rustix::fs::renameat(staging, part, parent, name)?;
    rustix::fs::fsync(parent)?;
    Ok(Committed { replaced, key })
}

/// A download in progress.
pub struct Download {
    pub file: Arc<File>,
    /// Next byte to send.
    pub offset: u64,
    /// The file's size when the download started; bytes up to it are sent.
    pub end: u64,
    /// For the digest cache.
    pub key: FileKey,
}

impl Download {
    /// Opens what `get` found: the identity for the digest cache and the
    /// size.
    pub fn new(fd: OwnedFd, offset: u64) -> io::Result<Download> {
        let file = File::from(fd);
        let meta = file.metadata()?;
        Ok(Download {
            key: super::shared::file_key(&meta),
            end: meta.len(),
            offset,
            file: Arc::new(file),
        })
    }
}
