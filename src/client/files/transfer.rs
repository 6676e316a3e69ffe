//! Uploads and downloads, with verification and resuming (PROTOCOL.md §5.5).
//!
//! # Download: `get REMOTE [LOCAL]`
//!
//! ```text
//!   LOCAL.part exists? ──yes──▶ K = its length, hash its K bytes
//!          │ no: K = 0                       │
//!          ▼                                 ▼
//!   {"type":"get","path":P,"offset":K} ──▶ {"type":"ready","size":N,"offset":K,"sha256":S}
//!          ▼
//!   append the N-K bytes to LOCAL.part, hashing them
//!          ▼
//!   hash of all N bytes == S ? ──no──▶ remove LOCAL.part, "checksum mismatch" (exit 1)
//!          │ yes
//!          ▼
//!   fsync LOCAL.part, rename it to LOCAL
//! ```
//!
//! The file only appears under its own name once every byte is verified,
//! so a name that exists holds a whole, correct file. A download that is
//! cut off keeps its `.part` file, and the next `get` of the same name
//! resumes from its length. A `.part` that turns out wrong (the remote file
//! changed in between, or a byte was corrupted) fails the check; it is
//! removed, so the next attempt starts from zero instead of failing again.
//!
//! # Upload: `put LOCAL [REMOTE]`
//!
//! ```text
//!   hash LOCAL (N bytes, sha256 S)
//!          ▼
//!   {"type":"put","path":P,"size":N,"sha256":S} ──▶ {"type":"ready","offset":K}
//!          ▼                                          (K > 0: an interrupted upload resumes)
//!   send exactly the N-K bytes from offset K
//!          ▼
//!   {"type":"ok","size":N,"sha256":S'}  and check S' == S
//! ```
//!
//! The daemon decides where an upload resumes, because it knows what it
//! made durable; the client only checks that `K` is within the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::FilesError;
use super::progress::Meter;
use super::session::{CHUNK, Session, expect_type};
use crate::codec::hex;

/// How a finished download went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Downloaded {
    pub remote: String,
    pub local: String,
    pub size: u64,
    /// Where this run started: the length of the `.part` file it resumed.
    pub offset: u64,
    pub sha256: String,
}

/// How a finished upload went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uploaded {
    pub local: String,
    pub remote: String,
    pub size: u64,
    /// Where this run started: the daemon's resume offset.
    pub offset: u64,
    pub sha256: String,
}

/// The file a download writes into until it is verified.
pub fn part_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Downloads `remote` into `local` through `local.part`, resuming from the
/// `.part` file's length, and renames it into place once verified.
pub fn get_file(
    session: &mut Session,
    remote: &str,
    local: &Path,
    show_progress: bool,
) -> Result<Downloaded, FilesError> {
    let part = part_path(local);
    let local_error =
        |doing: &str, e: io::Error| FilesError::Local(format!("{doing} {}: {e}", part.display()));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&part)
        .map_err(|e| local_error("cannot open", e))?;
    // The bytes already there are part of the file whose hash the daemon
    // will announce, so they go through the hash first. That takes a while
    // for a large `.part`, so it gets a bar of its own.
    let known = file.metadata().map_or(0, |m| m.len());
    let hashing = Meter::new(show_progress && known > 0, "hash .part", known, 0);
    let (hasher, offset) =
        hash_stream(&mut file, &hashing).map_err(|e| local_error("cannot read", e))?;
    hashing.finish();
    let label = format!("get {remote}");
    let result = download(session, remote, offset, hasher, &mut file, |total| {
        Meter::new(show_progress, &label, total, offset)
    });
    let ready = match result {
        Ok(ready) => ready,
        Err(error @ FilesError::Checksum(_)) => {
            let _ = fs::remove_file(&part);
            return Err(error);
        }
        Err(FilesError::Refused { error, code, free }) if offset > 0 => {
            // Most likely the remote file changed since the `.part` was
            // written; say how to get out of it.
            return Err(FilesError::Refused {
                error: format!(
                    "{error} (resuming from {} at {offset}; remove it to start over)",
                    part.display()
                ),
                code,
                free,
            });
        }
        Err(error) => {
            if offset == 0 && file.metadata().is_ok_and(|m| m.len() == 0) {
                // Nothing was received: leave no empty `.part` behind.
                let _ = fs::remove_file(&part);
            }
            return Err(error);
        }
    };
    file.sync_all()
        .map_err(|e| local_error("cannot flush", e))?;
    drop(file);
    fs::rename(&part, local).map_err(|e| {
        FilesError::Local(format!(
            "cannot rename {} to {}: {e}",
            part.display(),
            local.display()
        ))
    })?;
    Ok(Downloaded {
        remote: remote.to_string(),
        local: local.display().to_string(),
        size: ready.size,
        offset,
        sha256: ready.sha256,
    })
}

/// What the daemon's `ready` announced for a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub size: u64,
    pub sha256: String,
}

/// Asks for `remote` from `offset` and writes the bytes after it to `sink`,
/// feeding them to `hasher` (which holds the hash of the first `offset`
/// bytes), then checks the whole file's hash. `meter` makes the progress
/// bar once the size is known.
pub fn download(
    session: &mut Session,
    remote: &str,
    offset: u64,
    mut hasher: Sha256,
    sink: &mut dyn Write,
    meter: impl FnOnce(u64) -> Meter,
) -> Result<Ready, FilesError> {
    let request = json!({"type": "get", "path": remote, "offset": offset});
    session.send(&request)?;
    let ready = expect_type(session.recv("the answer to get")?, "ready")?;
    let size = ready.get("size").and_then(Value::as_u64);
    let sha256 = ready
        .get("sha256")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let (Some(size), Some(sha256)) = (size, sha256) else {
        return Err(FilesError::Protocol(
            "the daemon's ready has no size or sha256".into(),
        ));
    };
    let answered = ready.get("offset").and_then(Value::as_u64).unwrap_or(0);
    if answered != offset || offset > size {
        return Err(FilesError::Protocol(format!(
            "asked for the bytes from {offset}, the daemon announced {answered} of {size}"
        )));
    }
    let meter = meter(size);
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = size - offset;
    while remaining > 0 {
        let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
        let n = session.recv_bytes(&mut buf[..want], "the file's bytes")?;
        if let Err(e) = sink.write_all(&buf[..n]) {
            session.mark_broken();
            return Err(FilesError::Local(format!(
                "cannot write what was received: {e}"
            )));
        }
        hasher.update(&buf[..n]);
        remaining -= n as u64;
        meter.advance(n as u64);
    }
    meter.finish();
    let got = hex::encode(&hasher.finalize());
    if got != sha256 {
        return Err(FilesError::Checksum(format!(
            "checksum mismatch on {remote}: the daemon announced sha256 {sha256}, the bytes \
             received hash to {got}; nothing was kept"
        )));
    }
    Ok(Ready { size, sha256 })
}

/// Uploads `local` as `remote`, resuming where the daemon says.
pub fn put_file(
    session: &mut Session,
    local: &Path,
    remote: &str,
    show_progress: bool,
) -> Result<Uploaded, FilesError> {
    let local_error =
        |doing: &str, e: io::Error| FilesError::Local(format!("{doing} {}: {e}", local.display()));
    let mut file = File::open(local).map_err(|e| local_error("cannot open", e))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(FilesError::Local(format!(
            "{} is a directory",
            local.display()
        )));
    }
    let known = file.metadata().map_or(0, |m| m.len());
    let hashing = Meter::new(
        show_progress,
        &format!("hash {}", local.display()),
        known,
        0,
    );
    let (hasher, size) =
        hash_stream(&mut file, &hashing).map_err(|e| local_error("cannot read", e))?;
    hashing.finish();
    let sha256 = hex::encode(&hasher.finalize());
    let label = format!("put {}", local.display());
    let (offset, confirmed) = upload(session, remote, size, &sha256, &mut file, |start| {
        Meter::new(show_progress, &label, size, start)
    })?;
    Ok(Uploaded {
        local: local.display().to_string(),
        remote: remote.to_string(),
        size,
        offset,
        sha256: confirmed,
    })
}

/// Announces an upload of `size` bytes hashing to `sha256`, sends the bytes
/// from the daemon's offset on, read from `source`, and checks the final
/// answer. Returns the offset the daemon resumed from and the hash it
/// confirmed.
pub fn upload<S: Read + Seek + ?Sized>(
    session: &mut Session,
    remote: &str,
    size: u64,
    sha256: &str,
    source: &mut S,
    meter: impl FnOnce(u64) -> Meter,
) -> Result<(u64, String), FilesError> {
    let request = json!({"type": "put", "path": remote, "size": size, "sha256": sha256});
    session.send(&request)?;
    let ready = expect_type(session.recv("the answer to put")?, "ready")?;
    let offset = ready.get("offset").and_then(Value::as_u64).unwrap_or(0);
    if offset > size {
        return Err(FilesError::Protocol(format!(
            "the daemon would resume at {offset}, past the file's {size} bytes"
        )));
    }
    source
        .seek(SeekFrom::Start(offset))
        .map_err(|e| FilesError::Local(format!("cannot seek to {offset}: {e}")))?;
    let meter = meter(offset);
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = size - offset;
    while remaining > 0 {
        let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
        let n = match source.read(&mut buf[..want]) {
            Ok(0) => {
                session.mark_broken();
                return Err(FilesError::Local(format!(
                    "the local file shrank while it was sent ({remaining} bytes missing)"
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                session.mark_broken();
                return Err(FilesError::Local(format!(
                    "cannot read the local file: {e}"
                )));
            }
        };
        if let Err(error) = session.send_bytes(&buf[..n]) {
            // A daemon that gives up on an upload says why before closing;
            // that reason is worth more than "broken pipe".
            return Err(match session.recv("the reason the upload stopped") {
                Ok(frame) => expect_type(frame, "ok").err().unwrap_or(error),
                Err(_) => error,
            });
        }
        remaining -= n as u64;
        meter.advance(n as u64);
    }
    meter.finish();
    let ok = expect_type(session.recv("the upload's confirmation")?, "ok")?;
    let confirmed = ok
        .get("sha256")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
        .unwrap_or_default();
    let confirmed_size = ok.get("size").and_then(Value::as_u64);
    if confirmed != sha256 || confirmed_size != Some(size) {
        return Err(FilesError::Checksum(format!(
            "checksum mismatch on {remote}: sent {size} bytes with sha256 {sha256}, the daemon \
             confirmed {} bytes with sha256 {}",
            confirmed_size.map_or("?".to_string(), |s| s.to_string()),
            if confirmed.is_empty() {
                "(none)"
            } else {
                &confirmed
            }
        )));
    }
    Ok((offset, confirmed))
}

/// Hashes a stream from its current position to its end, counting the
/// bytes on `meter`; returns the hash state and the number of bytes read.
pub fn hash_stream(source: &mut impl Read, meter: &Meter) -> io::Result<(Sha256, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        match source.read(&mut buf) {
            Ok(0) => return Ok((hasher, total)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
                meter.advance(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_part_file_sits_next_to_the_target() {
        assert_eq!(
            part_path(Path::new("a/b.iso")),
            PathBuf::from("a/b.iso.part")
        );
        assert_eq!(part_path(Path::new("x")), PathBuf::from("x.part"));
    }

    #[test]
    fn hashing_in_chunks_matches_hashing_at_once() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        let (hasher, len) = hash_stream(&mut &data[..], &Meter::hidden()).unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(hasher.finalize(), Sha256::digest(&data));
    }
}
