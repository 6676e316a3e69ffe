//! The shared key and its file (PROTOCOL.md §5.2).
//!
//! The key file holds 64 hex characters and an optional newline; the key is
//! the 32 bytes they encode. It lives at `<data-dir>/secret.key` unless told
//! otherwise, readable by its owner alone (mode 0600), and the daemon creates
//! it on first start.
//!
//! # Writing it safely
//!
//! A key file must never be seen half-written, and two programs starting at
//! once (two daemons, or a daemon and `socketlab key show`) must not each
//! create a different key, or one of them would hand out a key that the
//! other rejects. So a key is always written in full to a private temporary
//! file in the same directory, flushed to disk, and only then published:
//!
//! - creating uses `link(2)`, which fails if the name exists. Whoever links
//!   first wins; the loser finds the file there and loads the winner's key.
//! - rotating uses `rename(2)`, which replaces the old file in one step, so a
//!   reader sees the old key or the new one, never a mix.
//!
//! The temporary file is created with mode 0600 from the start (and set to
//! exactly that, whatever the umask), so the key is never readable by
//! others, not even for an instant.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::codec::hex;

/// The key file's name inside the data directory.
pub const KEY_FILE_NAME: &str = "secret.key";

/// The key's length in bytes (64 hex characters in the file).
pub const KEY_LEN: usize = 32;

/// The mode a key file is created with: read and write for the owner alone.
const KEY_FILE_MODE: u32 = 0o600;

/// How many times `load_or_create` looks again after losing a race whose
/// winner's file then vanished; more than one such race in a row means
/// something else is deleting the file as fast as it appears.
const CREATE_ATTEMPTS: usize = 3;

/// A shared key. Its `Debug` output hides the bytes, so a key never ends up
/// in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// A fresh key from the operating system's secure random source.
    pub fn generate() -> io::Result<Key> {
        let mut bytes = [0u8; KEY_LEN];
        super::fill_random(&mut bytes)?;
        Ok(Key(bytes))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Reads a key file's contents: exactly 64 hex characters, then nothing
    /// or one `\n`.
    pub fn from_file_contents(contents: &[u8]) -> Option<Key> {
        let digits = contents.strip_suffix(b"\n").unwrap_or(contents);
        let text = std::str::from_utf8(digits).ok()?;
        hex::decode_array::<KEY_LEN>(text).map(Key)
    }

    /// The contents of a key file holding this key: 64 lowercase hex
    /// characters and a newline.
    pub fn to_file_contents(&self) -> String {
        let mut text = hex::encode(&self.0);
        text.push('\n');
        text
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// A key as found on disk.
#[derive(Debug, Clone)]
pub struct KeyFile {
    pub key: Key,
    /// True when this call created the file.
    pub created: bool,
    /// The file's permission bits (`0o600` for a file this module wrote).
    pub mode: u32,
}

impl KeyFile {
    /// Whether only the owner may read the file. When this is false, the
    /// caller should warn: anyone who can read the key can run programs
    /// through the exec service.
    pub fn is_private(&self) -> bool {
        self.mode & 0o077 == 0
    }
}

/// Where the key file lives by default: `<data_dir>/secret.key`.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE_NAME)
}

/// Loads an existing key file. Errors name the path; a file that is not
/// 64 hex characters and an optional newline is `InvalidData`.
pub fn load(path: &Path) -> io::Result<KeyFile> {
    let file = File::open(path).map_err(|e| with_path(path, e))?;
    let mode = file
        .metadata()
        .map_err(|e| with_path(path, e))?
        .permissions()
        .mode()
        & 0o7777;
    // Read one byte more than a valid file can hold, so a long file is
    // recognised as malformed without reading all of it.
    let longest = 2 * KEY_LEN + 1;
    let mut contents = Vec::with_capacity(longest + 1);
    file.take(longest as u64 + 1)
        .read_to_end(&mut contents)
        .map_err(|e| with_path(path, e))?;
    let key = Key::from_file_contents(&contents).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not a key file: expected {} hex characters and an optional newline",
                path.display(),
                2 * KEY_LEN
            ),
        )
    })?;
    Ok(KeyFile {
        key,
        created: false,
        mode,
    })
}

/// Loads the key file, creating it (and its directory) with a fresh key if
/// it does not exist. Safe against another program doing the same at the
/// same time: both end up with the same key.
pub fn load_or_create(path: &Path) -> io::Result<KeyFile> {
    let mut last_error = None;
    for _ in 0..CREATE_ATTEMPTS {
        match load(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            found => return found,
        }
        if let Some(dir) = parent_dir(path) {
            fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
        }
        let key = Key::generate()?;
        match publish_new(path, &key) {
            Ok(()) => {
                return Ok(KeyFile {
                    key,
                    created: true,
                    mode: KEY_FILE_MODE,
                });
            }
            // Someone else created it between our load and our link: go
            // round and load theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("key file kept vanishing")))
}

/// Replaces the key file (creating it and its directory if needed) with a
/// fresh key, atomically, and returns the new key. A program that loaded
/// the old key keeps using it until it loads the file again.
pub fn rotate(path: &Path) -> io::Result<Key> {
    if let Some(dir) = parent_dir(path) {
        fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
    }
    let key = Key::generate()?;
    let temp = write_temp(path, &key)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(with_path(path, e));
    }
    sync_dir(path)?;
    Ok(key)
}

/// Writes `key` to a temporary file and links it to `path`, failing with
/// `AlreadyExists` if `path` exists.
fn publish_new(path: &Path, key: &Key) -> io::Result<()> {
    let temp = write_temp(path, key)?;
    let linked = fs::hard_link(&temp, path);
    // The temporary name is removed whether or not the link succeeded: on
    // success the file lives on under `path`.
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(e) => Err(with_path(path, e)),
    }
}

/// Creates a private temporary file next to `path` holding `key`, flushed
/// to disk, and returns its name. The name is unique (process id and random
/// bytes), and `create_new` refuses to reuse one that exists.
fn write_temp(path: &Path, key: &Key) -> io::Result<PathBuf> {
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file name", path.display()),
            )
        })?
        .to_string_lossy();
    let mut salt = [0u8; 6];
    super::fill_random(&mut salt)?;
    let temp = path.with_file_name(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        hex::encode(&salt)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_FILE_MODE)
            .open(&temp)?;
        // The umask can only have removed bits from 0600; setting the mode
        // again makes it exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(KEY_FILE_MODE))?;
        file.write_all(key.to_file_contents().as_bytes())?;
        file.sync_all()
    })();
    match written {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(with_path(&temp, e))
        }
    }
}

/// Flushes the directory holding `path`, so that the new name survives a
/// crash as surely as the file's contents do.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = parent_dir(path).unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(dir, e))
}

/// The directory part of `path`, if it has one (`secret.key` alone has none).
fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|dir| !dir.as_os_str().is_empty())
}

/// Prefixes an error's message with the path it concerns, keeping its kind.
fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory under the system's temporary directory,
    /// removed when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(label: &str) -> TempDir {
            let mut salt = [0u8; 8];
            super::super::fill_random(&mut salt).unwrap();
            let dir = std::env::temp_dir().join(format!(
                "socketlab-test-{label}-{}-{}",
                std::process::id(),
                hex::encode(&salt)
            ));
            fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    // ---- Contents ----

    #[test]
    fn contents_are_64_hex_characters_and_a_newline() {
        let key = Key::from_bytes([0xab; KEY_LEN]);
        let text = key.to_file_contents();
        assert_eq!(text, format!("{}\n", "ab".repeat(32)));
        assert_eq!(Key::from_file_contents(text.as_bytes()), Some(key.clone()));
        // The newline is optional, and upper case is the same key.
        let bare = "AB".repeat(32);
        assert_eq!(Key::from_file_contents(bare.as_bytes()), Some(key));
    }

    #[test]
    fn malformed_contents_are_refused() {
        let good = "0f".repeat(32);
        for bad in [
            String::new(),
            "\n".to_string(),
            good[..63].to_string(),
            format!("{good}0"),
            format!("{good}\n\n"),
            format!("{good}\r\n"),
            format!(" {good}"),
            format!("{}zz", &good[..62]),
        ] {
            assert_eq!(Key::from_file_contents(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Key::from_file_contents(&[0xff; 64]), None);
    }

    #[test]
    fn debug_hides_the_key() {
        let key = Key::from_bytes([0x5a; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "Key(<redacted>)");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Key::generate().unwrap(), Key::generate().unwrap());
    }

    // ---- The file ----

    #[test]
    fn first_load_creates_a_private_file_in_a_new_directory() {
        let dir = TempDir::new("key-create");
        let path = default_path(&dir.path().join("data"));
        let created = load_or_create(&path).unwrap();
        assert!(created.created);
        assert!(created.is_private());
        assert_eq!(mode_of(&path), 0o600);
        let contents = fs::read(&path).unwrap();
        assert_eq!(contents.len(), 65);
        assert_eq!(
            Key::from_file_contents(&contents),
            Some(created.key.clone())
        );

        let again = load_or_create(&path).unwrap();
        assert!(!again.created);
        assert_eq!(again.key, created.key);
        assert_eq!(again.mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(entries(&dir.path().join("data")), vec!["secret.key"]);
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let dir = TempDir::new("key-race");
        let path = default_path(dir.path());
        let keys: Vec<Key> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| load_or_create(&path).unwrap().key))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]));
        assert_eq!(load(&path).unwrap().key, keys[0]);
        assert_eq!(entries(dir.path()), vec!["secret.key"]);
    }

    #[test]
    fn load_reports_a_group_readable_file() {
        let dir = TempDir::new("key-mode");
        let path = default_path(dir.path());
        fs::write(&path, "11".repeat(32)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.key, Key::from_bytes([0x11; KEY_LEN]));
        assert_eq!(loaded.mode, 0o640);
        assert!(!loaded.is_private());
    }

    #[test]
    fn malformed_file_is_an_error_naming_the_path() {
        let dir = TempDir::new("key-bad");
        let path = default_path(dir.path());
        fs::write(&path, "not a key\n").unwrap();
        for attempt in [load(&path), load_or_create(&path)] {
            let e = attempt.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            let message = e.to_string();
            assert!(message.contains("secret.key"), "{message}");
            assert!(message.contains("64 hex characters"), "{message}");
        }
        // A malformed file is never replaced behind the user's back.
        assert_eq!(fs::read(&path).unwrap(), b"not a key\n");
    }

    #[test]
    fn an_overlong_file_is_malformed() {
        let dir = TempDir::new("key-long");
        let path = default_path(dir.path());
        fs::write(&path, "a".repeat(1 << 20)).unwrap();
        assert_eq!(load(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn missing_file_is_not_found_for_load() {
        let dir = TempDir::new("key-missing");
        let e = load(&default_path(dir.path())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("secret.key"));
    }

    #[test]
    fn rotate_changes_the_key_and_keeps_it_private() {
        let dir = TempDir::new("key-rotate");
        let path = default_path(dir.path());
        let old = load_or_create(&path).unwrap().key;
        // Even a file the user loosened comes back private.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let new = rotate(&path).unwrap();
        assert_ne!(new, old);
        assert_eq!(mode_of(&path), 0o600);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.key, new);
        assert!(loaded.is_private());
        assert_eq!(entries(dir.path()), vec!["secret.key"]);
    }

    #[test]
    fn rotate_creates_a_missing_file() {
        let dir = TempDir::new("key-rotate-new");
        let path = dir.path().join("sub").join("k");
        let key = rotate(&path).unwrap();
        assert_eq!(load(&path).unwrap().key, key);
        assert_eq!(mode_of(&path), 0o600);
    }
}
