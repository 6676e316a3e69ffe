//! The files service's users: who may log in, with which secrets, how much
//! they may store, and where their files live (PROTOCOL.md §5.4).
//!
//! # The store
//!
//! One JSON file, `<data-dir>/users.json`:
//!
//! ```text
//! {"version":1,"users":{"alice":{"salt":"<hex>","iterations":100000,
//!   "stored_key":"<64 hex>","server_key":"<64 hex>","quota":1048576,
//!   "home":"home/alice"}}}
//! ```
//!
//! It holds what SCRAM needs on the daemon's side (salt, iteration count,
//! StoredKey, ServerKey: see [`crate::auth::scram`]), never the password.
//! `home` is relative to the files root, `<data-dir>/files`.
//!
//! # Changing it while the daemon runs
//!
//! `socketlab user ...` changes the file while the daemon may be reading
//! it, so every change is a whole new file: written to a temporary name,
//! flushed (`fsync`), renamed over the old one, and the directory flushed
//! so the rename itself survives a crash. A reader sees the old file or the
//! new one, never half of either. Two `socketlab user` commands at once
//! would each read, change and write back, and the second would undo the
//! first; an exclusive `flock` on `users.json.lock` around the whole
//! read-change-write makes them take turns ([`update`]).
//!
//! The daemon notices a new file by its identity: [`Stamp`] is the
//! (inode, modification time, size) triple, checked with one `stat` per
//! login. A rename always brings a new inode, so no change is missed even
//! within one clock tick.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scram::{KEY_LEN, StoredSecrets};
use crate::codec::hex;

/// PBKDF2 iterations for a new password unless `--iterations` says
/// otherwise, and the count every fake challenge carries. See
/// docs/security.md ("The iteration count") for the measurement behind it.
pub const DEFAULT_ITERATIONS: u32 = 100_000;

/// Fewest iterations `user add --iterations` accepts (RFC 7677's minimum).
pub const MIN_ITERATIONS: u32 = 4_096;

/// Bytes of random salt per user; fake challenges use the same length.
pub const SALT_LEN: usize = 16;

/// Longest user name, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// The store's file name in the data dir.
pub const STORE_FILE: &str = "users.json";

/// One user as the daemon knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub secrets: StoredSecrets,
    /// Bytes the user may store; `None` = no limit.
    pub quota: Option<u64>,
    /// The home directory, relative to the files root.
    pub home: PathBuf,
}

/// All users, by name (sorted, so `user list` is too).
pub type Users = BTreeMap<String, User>;

/// Where the store lives for a data dir.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_FILE)
}

/// The home a new user gets, relative to the files root.
pub fn default_home(name: &str) -> PathBuf {
    Path::new("home").join(name)
}

/// Whether `name` is a user name: 1 to 32 of `A-Z a-z 0-9 _ . -`, not
/// starting with `.` or `-` (so it is also a safe directory name).
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses a quota: whole bytes, or a number with a `K`, `M` or `G` suffix
/// (powers of 1024; lower case accepted too).
pub fn parse_quota(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let unit = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{text:?}: the suffix must be K, M or G")),
            };
            (&text[..i], unit)
        }
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a size (bytes, or a number with K, M or G)"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Identity of the store file as last read: a change in any part means the
/// file was replaced or edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    inode: u64,
    mtime_ns: i128,
    size: u64,
}

/// The store file's current stamp; `None` when there is no file.
pub fn stamp(path: &Path) -> io::Result<Option<Stamp>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            inode: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            size: m.size(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the store; a missing file is an empty store.
pub fn load(path: &Path) -> io::Result<Users> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Users::new()),
        Err(e) => return Err(with_path(path, e)),
    };
    let file: StoreFile = serde_json::from_slice(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    file.users
        .into_iter()
        .map(|(name, entry)| {
            let user = entry.into_user().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: user {name:?} has a malformed key", path.display()),
                )
            })?;
            Ok((name, user))
        })
        .collect()
}

/// Replaces the store with `users`, atomically (see the module docs).
pub fn save(path: &Path, users: &Users) -> io::Result<()> {
    let file = StoreFile {
        version: 1,
        users: users
            .iter()
            .map(|(name, user)| (name.clone(), Entry::from_user(user)))
            .collect(),
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
    text.push(b'\n');
    write_atomically(path, &text, 0o600)
}

/// Reads the store, lets `change` edit it, and writes it back if `change`
/// succeeded, holding an exclusive lock so concurrent commands take turns.
pub fn update<T, E: From<io::Error>>(
    path: &Path,
    change: impl FnOnce(&mut Users) -> Result<T, E>,
) -> Result<T, E> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
    }
    let lock_path = path.with_extension("json.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| with_path(&lock_path, e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| with_path(&lock_path, e.into()))?;
    let mut users = load(path)?;
    let outcome = change(&mut users)?;
    save(path, &users)?;
    Ok(outcome)
}

/// Writes `bytes` to `path` so that readers see the old file or the new
/// one: temporary file, `fsync`, rename, `fsync` of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut random = [0u8; 6];
    super::fill_random(&mut random)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        hex::encode(&random)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(with_path(path, e));
    }
    sync_parent(path)
}

/// Flushes the directory holding `path`, so a rename or a new name in it
/// is on disk.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(dir, e))
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The file's shape, with the keys as hex text.
#[derive(Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    users: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
    quota: Option<u64>,
    home: PathBuf,
}

impl Entry {
    fn from_user(user: &User) -> Entry {
        Entry {
            salt: hex::encode(&user.secrets.salt),
            iterations: user.secrets.iterations,
            stored_key: hex::encode(&user.secrets.stored_key),
            server_key: hex::encode(&user.secrets.server_key),
            quota: user.quota,
            home: user.home.clone(),
        }
    }

    fn into_user(self) -> Option<User> {
        Some(User {
            secrets: StoredSecrets {
                salt: hex::decode(&self.salt)?,
                iterations: self.iterations,
                stored_key: hex::decode_array::<KEY_LEN>(&self.stored_key)?,
                server_key: hex::decode_array::<KEY_LEN>(&self.server_key)?,
            },
            quota: self.quota,
            home: self.home,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_protocol() {
        for good in ["a", "alice", "A.b-c_9", &"x".repeat(32)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", ".a", "-a", "a/b", "a b", "é", &"x".repeat(33), ".."] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn quotas_take_bytes_or_binary_suffixes() {
        assert_eq!(parse_quota("0"), Ok(0));
        assert_eq!(parse_quota("1500"), Ok(1500));
        assert_eq!(parse_quota("1K"), Ok(1024));
        assert_eq!(parse_quota("2m"), Ok(2 << 20));
        assert_eq!(parse_quota("3G"), Ok(3 << 30));
        for bad in [
            "",
            "K",
            "1T",
            "1.5M",
            "-1",
            "1 K x",
            "99999999999999999999G",
        ] {
            assert!(parse_quota(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_round_trips_and_keeps_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        assert!(load(&path).unwrap().is_empty());
        assert_eq!(stamp(&path).unwrap(), None);
        let secrets = StoredSecrets::derive("hunter2", &[7; SALT_LEN], MIN_ITERATIONS);
        update(&path, |users| {
            users.insert(
                "alice".to_string(),
                User {
                    secrets: secrets.clone(),
                    quota: Some(10),
                    home: default_home("alice"),
                },
            );
            Ok::<_, io::Error>(())
        })
        .unwrap();
        let users = load(&path).unwrap();
        assert_eq!(users["alice"].secrets, secrets);
        assert_eq!(users["alice"].quota, Some(10));
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hunter2"));
        let before = stamp(&path).unwrap();
        save(&path, &users).unwrap();
        assert_ne!(stamp(&path).unwrap(), before, "a rewrite is a new file");
    }
}
