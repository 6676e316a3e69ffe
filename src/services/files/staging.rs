//! Where uploads wait: staging files, their records, and resuming
//! (PROTOCOL.md §5.5).
//!
//! # Layout
//!
//! ```text
//! <data-dir>/files/home/<user>/...            what the user sees ("/")
//! <data-dir>/files/.staging/<user>/<id>.json  an upload's record
//! <data-dir>/files/.staging/<user>/<id>.part  the bytes received so far
//! ```
//!
//! The staging area is beside the homes, not in them, so no request can
//! name it, and on the same filesystem, so finishing an upload is one
//! `rename` into place. `<id>` is derived from (path, size, sha256): the
//! same upload asked for again finds its record, which is what resuming
//! is. The record is written before the first byte, so a `.part` file
//! without a record is debris from a crash and is removed; so is a record
//! without a `.part` file (a crash after the rename into place). The
//! daemon removes debris only when it counts a user's uploads, at their
//! first login, when none of them can be under way.
//!
//! # What survives a crash
//!
//! The bytes of a `.part` file are written as they arrive and never
//! rewritten, so after `kill -9` the file holds a prefix of what the
//! client sent (the kernel keeps written pages even when the process
//! dies), and its length is the offset a resumed upload starts from.
//! After a power cut, the tail might be lost, which only makes the offset
//! smaller. The final `fsync` before the rename is what makes a finished
//! upload durable; the record itself is not flushed on its own, which at
//! worst loses the chance to resume after a power cut.
//!
//! # Expiry
//!
//! An interrupted upload stays on record for `files.resume_ttl_s` after
//! its last byte arrived (the `.part` file's modification time). Expired
//! ones are removed when the daemon first looks at the user's uploads
//! after it starts, and then at each of the user's logins: an upload
//! nobody comes back for costs nothing until its owner returns, and is
//! gone by the time they could notice it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::hex;

/// An upload's record: what it is for, and what it counts for the quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The target, relative to the home (as from `jail::resolve`).
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The size of the file the upload will replace, credited against
    /// `size` when the quota is counted.
    pub credit: u64,
}

impl Record {
    /// What the upload counts toward the quota while on record.
    pub fn charge(&self) -> u64 {
        self.size.saturating_sub(self.credit)
    }
}

/// One upload found on disk.
#[derive(Debug, Clone)]
pub struct Staged {
    pub id: String,
    pub record: Record,
}

/// The root of everything the files service stores.
pub fn files_root(data_dir: &Path) -> PathBuf {
    data_dir.join("files")
}

/// A user's staging directory.
pub fn user_dir(root: &Path, user: &str) -> PathBuf {
    root.join(".staging").join(user)
}

/// The name under which an upload of (path, size, sha256) is staged.
pub fn upload_id(path: &str, size: u64, sha256: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update([0]);
    h.update(size.to_be_bytes());
    h.update(sha256);
    hex::encode(&h.finalize()[..16])
}

pub fn part_name(id: &str) -> String {
    format!("{id}.part")
}

fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes the record of a new upload (before its first byte).
pub fn write_record(dir: &Path, id: &str, record: &Record) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let text = serde_json::to_vec(record).map_err(io::Error::other)?;
    fs::write(record_path(dir, id), text)
}

/// Opens (creating if needed) an upload's `.part` file for appending and
/// returns it with its current length.
pub fn open_part(dir: &Path, id: &str) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(part_name(id)))?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// Forgets an upload: its record and its bytes.
pub fn remove(dir: &Path, id: &str) {
    let _ = fs::remove_file(dir.join(part_name(id)));
    let _ = fs::remove_file(record_path(dir, id));
}

/// Removes only the record (after the `.part` file was renamed into place).
pub fn remove_record(dir: &Path, id: &str) {
    let _ = fs::remove_file(record_path(dir, id));
}

/// The uploads on record in `dir`. With `ttl`, expired ones and debris
/// (a `.part` without a record, a record that does not parse) are removed
/// first; without it (`socketlab user list`), nothing is changed.
pub fn scan(dir: &Path, now: SystemTime, ttl: Option<Duration>) -> Vec<Staged> {
    let Ok(items) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".part") {
            if ttl.is_some() && !record_path(dir, id).exists() {
                let _ = fs::remove_file(item.path());
            }
            continue;
        }
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        let record = fs::read(item.path())
            .ok()
            .and_then(|t| serde_json::from_slice::<Record>(&t).ok());
        // A record that does not parse, or whose bytes are gone (the
        // daemon died between the rename and removing the record), is
        // debris too.
        let record = record.filter(|_| ttl.is_none() || dir.join(part_name(id)).exists());
        let Some(record) = record else {
            if ttl.is_some() {
                remove(dir, id);
            }
            continue;
        };
        if let Some(ttl) = ttl
            && is_expired(dir, id, now, ttl)
        {
            remove(dir, id);
            continue;
        }
        found.push(Staged {
            id: id.to_string(),
            record,
        });
    }
    found
}

/// Whether the upload `id` received its last byte (or, with none yet, was
/// recorded) more than `ttl` before `now`.
pub fn is_expired(dir: &Path, id: &str, now: SystemTime, ttl: Duration) -> bool {
    let last = fs::metadata(dir.join(part_name(id)))
        .or_else(|_| fs::metadata(record_path(dir, id)))
        .and_then(|m| m.modified())
        .unwrap_or(now);
    now.duration_since(last).unwrap_or_default() > ttl
}

/// Bytes of regular files under `dir`, not following symlinks.
pub fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(items) = fs::read_dir(&dir) else {
            continue;
        };
        for item in items.flatten() {
            let Ok(meta) = fs::symlink_metadata(item.path()) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(item.path());
            } else if meta.is_file() {
                total += meta.size();
            }
        }
    }
    total
}

/// A user's used bytes as the daemon counts them: files in the home plus
/// the uploads on record. `socketlab user list` prints this.
pub fn usage_on_disk(root: &Path, user: &str, home: &Path) -> u64 {
    let reserved: u64 = scan(&user_dir(root, user), SystemTime::now(), None)
        .iter()
        .map(|s| s.record.charge())
        .sum();
    tree_size(&root.join(home)) + reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> Record {
        Record {
            path: path.to_string(),
            size: 10,
            sha256: "00".repeat(32),
            credit: 4,
        }
    }

    #[test]
    fn ids_tell_uploads_apart() {
        let a = upload_id("a", 1, &[0; 32]);
        assert_eq!(a, upload_id("a", 1, &[0; 32]));
        assert_ne!(a, upload_id("b", 1, &[0; 32]));
        assert_ne!(a, upload_id("a", 2, &[0; 32]));
        assert_ne!(a, upload_id("a", 1, &[1; 32]));
    }

    #[test]
    fn scan_keeps_live_uploads_and_removes_debris_and_expired_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_record(d, "live", &record("x")).unwrap();
        open_part(d, "live").unwrap();
        fs::write(d.join("orphan.part"), b"abc").unwrap();
        fs::write(d.join("broken.json"), b"{").unwrap();
        write_record(d, "renamed", &record("y")).unwrap();
        let now = SystemTime::now();
        let found = scan(d, now, Some(Duration::from_secs(60)));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].record.charge(), 6);
        assert!(!d.join("orphan.part").exists());
        assert!(!d.join("broken.json").exists());
        assert!(!d.join("renamed.json").exists());
        let later = now + Duration::from_secs(120);
        assert!(
            scan(d, later, None).len() == 1,
            "a plain look changes nothing"
        );
        assert!(scan(d, later, Some(Duration::from_secs(60))).is_empty());
        assert!(!d.join("live.part").exists());
    }

    #[test]
    fn usage_counts_files_and_records() {
        let root = tempfile::tempdir().unwrap();
        let home = Path::new("home/u");
        fs::create_dir_all(root.path().join(home).join("sub")).unwrap();
        fs::write(root.path().join(home).join("a"), [0; 5]).unwrap();
        fs::write(root.path().join(home).join("sub/b"), [0; 7]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join(home).join("l")).unwrap();
        write_record(&user_dir(root.path(), "u"), "id", &record("x")).unwrap();
        assert_eq!(usage_on_disk(root.path(), "u", home), 5 + 7 + 6);
    }
}
