//! What the files service keeps across connections: the user store as last
//! read, the daemon's secret for fake challenges, every user's quota book,
//! and the cache of file digests.
//!
//! # Noticing changes to the user store
//!
//! At every login the store file is `stat`ed, and read again when its
//! (inode, mtime, size) changed ([`users::Stamp`]). A new user can then log
//! in, a deleted one cannot, and a new password counts from the next login,
//! without a restart. The `stat` and the rare re-read run on the loop: the
//! file is small and local, and a login is not a hot path. A daemon with
//! thousands of logins a second would watch the file with inotify instead.
//!
//! # Quota books
//!
//! A user's book is counted at their first login after the daemon starts
//! (or after the store changed): a walk of the home and a look at the
//! staging directory, on the helper pool, while that connection waits
//! with its input held. From then on the book is kept current by the
//! service itself, so the walk happens once per user, not per request.
//! Files put into a home behind the daemon's back count from the next
//! count.
//!
//! # One for the daemon, behind a lock
//!
//! With `reactors = N` a user's connections may sit on different reactors,
//! and the quota is the user's, not a loop's (PROTOCOL.md §8). So there is
//! one `FilesShared` per daemon, inside a [`FilesDaemon`] every reactor
//! holds, and a session takes its lock for one step: a login (the store's
//! `stat`, the book's lookup), one request (`quota`, `rm`), the check and
//! reservation of a `put` together, a commit's entry in the book, a
//! digest's lookup. Never per byte: the bytes of an upload go from the
//! socket to the staged file, and those of a download from the file to
//! the socket, without it. Nothing slow runs under it either: the count
//! of a home, the hashing and the `fsync` run on the helper pool, outside
//! the lock (only the rare recount of a book whose store changed after
//! the login, [`FilesShared::book`], walks a home under it).
//!
//! Because a `put` checks and reserves under one lock, two uploads from
//! connections on different reactors can never together pass the quota;
//! and because the reservations and staged uploads are the daemon's, an
//! interrupted upload resumes whichever reactor the reconnect lands on.
//! A finer lock (one per user) would let two users' requests proceed at
//! the same instant; at a lock per request it would not be measurable.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::quota::{Book, Reservation};
use super::staging;
use crate::auth::scram::StoredSecrets;
use crate::auth::users::{self, DEFAULT_ITERATIONS, SALT_LEN, Stamp, User, Users};
use crate::config::Config;

/// Digests kept for downloads before the cache is emptied.
pub const DIGEST_CACHE_ENTRIES: usize = 4096;

/// Identity of a file's content for the digest cache: a file rewritten in
/// place gets a new mtime or size; a file replaced gets a new inode.
pub type FileKey = (u64, u64, u64, i128);

/// The [`FileKey`] of the file `meta` describes.
pub fn file_key(meta: &std::fs::Metadata) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    (meta.dev(), meta.ino(), meta.size(), mtime)
}

/// The daemon's one [`FilesShared`], shared by every reactor (see the
/// module docs).
pub struct FilesDaemon {
    shared: Mutex<FilesShared>,
}

impl FilesDaemon {
    /// Loads the store and the secret (see [`FilesShared::new`]).
    pub fn new(config: &Config) -> io::Result<FilesDaemon> {
        Ok(FilesDaemon {
            shared: Mutex::new(FilesShared::new(config)?),
        })
    }

    /// Takes the lock for one step of a session. Let it go before writing
    /// an answer or submitting a job: hold it across nothing slow. A panic
    /// under it (a bug) leaves books that are still books, so a poisoned
    /// lock is used as it is rather than failing every reactor's files
    /// service.
    pub fn lock(&self) -> MutexGuard<'_, FilesShared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The files service's state across connections; reached through
/// [`FilesDaemon::lock`].
pub struct FilesShared {
    /// `<data-dir>/files`.
    root: PathBuf,
    /// `<data-dir>/users.json`.
    store: PathBuf,
    /// The store's identity when last read; `None` when there was none.
    stamp: Option<Stamp>,
    users: Users,
    /// Key for fake challenge salts (`<data-dir>/files.key`).
    secret: [u8; 32],
    /// Quota books, by user name, filled on first use.
    books: HashMap<String, Book>,
    /// Whole-file SHA-256 by file identity, for `get`'s `ready`: computed
    /// by a download, or remembered when a put commits (the digest it
    /// verified), so a file just uploaded is not read again to be offered.
    digests: HashMap<FileKey, [u8; 32]>,
    resume_ttl: Duration,
}

impl FilesShared {
    /// Loads the user store and the secret; on the first start (no store
    /// yet), creates the `demo` user. With the service disabled, touches
    /// nothing on disk.
    pub fn new(config: &Config) -> io::Result<FilesShared> {
        let root = staging::files_root(&config.data_dir);
        let store = users::store_path(&config.data_dir);
        let mut shared = FilesShared {
            root,
            store,
            stamp: None,
            users: Users::new(),
            secret: [0; 32],
            books: HashMap::new(),
            digests: HashMap::new(),
            resume_ttl: Duration::from_secs(config.files.resume_ttl_s),
        };
        if !config.files.service.enabled {
            return Ok(shared);
        }
        fs::create_dir_all(shared.root.join("home"))?;
        fs::create_dir_all(shared.root.join(".staging"))?;
        let key = crate::auth::load_or_create(&config.data_dir.join("files.key"))?;
        shared.secret = *key.key.as_bytes();
        if users::stamp(&shared.store)?.is_none() {
            create_demo(&config.data_dir, &shared.store, &shared.root)?;
        }
        shared.refresh_users();
        Ok(shared)
    }

    /// The user's record as the store has it now (see the module docs).
    pub fn user(&mut self, name: &str) -> Option<User> {
        self.refresh_users();
        self.users.get(name).cloned()
    }

    /// The secret fake salts are derived from.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The user's staging directory.
    pub fn staging_dir(&self, user: &str) -> PathBuf {
        staging::user_dir(&self.root, user)
    }

    /// The user's quota book. It is normally counted on the pool at login
    /// ([`FilesShared::counting_job`]); if it is missing all the same (the
    /// store changed since), it is counted here, on the loop.
    pub fn book(&mut self, user: &str, home: &Path) -> &mut Book {
        if !self.books.contains_key(user) {
            let count = self.counting_job(user, home);
            self.books.insert(user.to_string(), count());
        }
        self.books.entry(user.to_string()).or_default()
    }

    /// Whether the user's book is counted already.
    pub fn has_book(&self, user: &str) -> bool {
        self.books.contains_key(user)
    }

    /// Work that counts a user's book from the disk, to run on the helper
    /// pool: a walk of the home, and a look at the staging directory that
    /// removes expired uploads and debris.
    pub fn counting_job(&self, user: &str, home: &Path) -> impl FnOnce() -> Book + Send + 'static {
        let home = self.root.join(home);
        let dir = self.staging_dir(user);
        let ttl = self.resume_ttl;
        move || {
            let mut book = Book {
                files: staging::tree_size(&home),
                ..Book::default()
            };
            for staged in staging::scan(&dir, SystemTime::now(), Some(ttl)) {
                book.reservations.insert(
                    staged.id,
                    Reservation {
                        charge: staged.record.charge(),
                        path: staged.record.path,
                        active: false,
                    },
                );
            }
            book
        }
    }

    /// Takes a book counted on the pool, unless another connection of the
    /// user got there first (its book is as fresh, and may already hold
    /// that connection's reservations).
    pub fn counted(&mut self, user: &str, book: Book) {
        self.books.entry(user.to_string()).or_insert(book);
    }

    /// Forgets the user's interrupted uploads that have expired (a `stat`
    /// per interrupted upload; called at each login once the book exists).
    pub fn expire_uploads(&mut self, user: &str, home: &Path, now: SystemTime) {
        let dir = self.staging_dir(user);
        let ttl = self.resume_ttl;
        let book = self.book(user, home);
        let expired: Vec<String> = book
            .reservations
            .iter()
            .filter(|(id, r)| !r.active && staging::is_expired(&dir, id, now, ttl))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            log::info!("files: an interrupted upload of {user} expired");
            book.release(&id);
            staging::remove(&dir, &id);
        }
    }

    /// A digest computed for this file identity before, if any.
    pub fn digest(&self, key: &FileKey) -> Option<[u8; 32]> {
        self.digests.get(key).copied()
    }

    pub fn remember_digest(&mut self, key: FileKey, digest: [u8; 32]) {
        // A crude bound: when full, start again. An LRU would keep the hot
        // entries; the cost of a miss is one hash on the helper pool.
        if self.digests.len() >= DIGEST_CACHE_ENTRIES {
            self.digests.clear();
        }
        self.digests.insert(key, digest);
    }

    /// Re-reads the store if it changed; keeps the old users if it cannot
    /// be read (a half-edited file by hand), and says so.
    fn refresh_users(&mut self) {
        let stamp = match users::stamp(&self.store) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("files: cannot stat the user store: {e}");
                return;
            }
        };
        if stamp == self.stamp && (stamp.is_some() || self.users.is_empty()) {
            return;
        }
        match users::load(&self.store) {
            Ok(fresh) => {
                if self.stamp.is_some() {
                    log::info!("files: user store changed; {} users", fresh.len());
                }
                // Books of users that are gone or changed are recounted.
                self.books
                    .retain(|name, _| fresh.get(name) == self.users.get(name));
                self.users = fresh;
                self.stamp = stamp;
            }
            Err(e) => log::warn!("files: keeping the users as they were: {e}"),
        }
    }
}

/// The file the demo user's password is written to.
pub fn demo_password_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo.password")
}

/// Creates `demo` with a random password, written 0600 next to the store,
/// so a first start gives a usable files service.
fn create_demo(data_dir: &Path, store: &Path, root: &Path) -> io::Result<()> {
    let mut random = [0u8; 12 + SALT_LEN];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let password = crate::codec::hex::encode(&random[..12]);
    let secrets = StoredSecrets::derive(&password, &random[12..], DEFAULT_ITERATIONS);
    let password_file = demo_password_path(data_dir);
    users::write_atomically(&password_file, format!("{password}\n").as_bytes(), 0o600)?;
    users::update(store, |all| {
        all.entry("demo".to_string()).or_insert(User {
            secrets,
            quota: None,
            home: users::default_home("demo"),
        });
        Ok::<_, io::Error>(())
    })?;
    fs::create_dir_all(root.join(users::default_home("demo")))?;
    log::info!(
        "files: created user demo; its password is in {}",
        password_file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reservations_from_several_threads_never_pass_the_quota_together() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        // The first start creates `demo`, whose home is empty.
        let daemon = Arc::new(FilesDaemon::new(&config).unwrap());
        let home = users::default_home("demo");
        assert!(daemon.lock().user("demo").is_some());
        // Eight "reactors" reserve 40 bytes each against a limit of 100,
        // each under one lock for the check and the reservation together.
        let reserved: usize = (0..8)
            .map(|i| {
                let (daemon, home) = (daemon.clone(), home.clone());
                std::thread::spawn(move || {
                    let reservation = Reservation {
                        path: format!("f{i}"),
                        charge: 40,
                        active: true,
                    };
                    let mut files = daemon.lock();
                    let book = files.book("demo", &home);
                    book.reserve(&format!("id{i}"), reservation, Some(100))
                        .is_ok()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(reserved, 2);
        assert_eq!(daemon.lock().book("demo", &home).used(), 80);
    }
}
