//! What the exec service keeps across connections: the shared key, the
//! count of running programs, the working directory, the reaper, and how
//! what programs leave behind is contained (a cgroup per program, or the
//! subreaper fallback).
//!
//! # One daemon, several reactors
//!
//! With `reactors = N` the exec listener is bound once per reactor, and a
//! connection's program is spawned, fed, read and reaped by the reactor
//! that accepted the connection. What must be the daemon's rather than a
//! loop's (PROTOCOL.md §8) is built once, in an [`ExecDaemon`] that every
//! reactor's [`ExecShared`] holds through an `Arc`:
//!
//! - the key, loaded once at start. Each handshake takes its lock for one
//!   `stat` of the key file (to notice a rotation) and a copy of 32 bytes;
//! - the running count, `exec.max_running` over the whole daemon: an
//!   atomic ([`Running`]) that a `run` counts into first and checks after,
//!   like the connection limits of `reactor::group`, so two reactors
//!   racing for the last place may both be refused but never both
//!   admitted;
//! - the working directory, read-only after start;
//! - the parent cgroup, whose lock is taken once per spawn to name the
//!   program's own cgroup.
//!
//! None of them is touched per byte of a program's input or output.
//!
//! The reaper is *not* shared: each reactor keeps its own, for the
//! programs its own sessions started (their pipes and pidfds are
//! registered in that reactor's `Poll`), and drives it on its own turns
//! (`Shared::poll`). At shutdown each reactor waits for its own reaper, so
//! the daemon exits only once every reactor's programs are gone. A program
//! finished by a reaper gives its place back to the daemon's count.
//!
//! Containment is the daemon's too: the parent cgroup, or, where programs
//! get no cgroup, the child subreaper (subreaper.rs), which is
//! process-wide by nature; [`ExecDaemon::become_subreaper`] is called
//! once, at start.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::reaper::{Dying, Reaper};
use super::subreaper::{self, Subreaper};
use super::sys::{Cgroup, CgroupParent};
use crate::auth::{self, Key};
use crate::config::Config;

/// The exec service's part of one reactor's `Shared`.
#[derive(Debug)]
pub struct ExecShared {
    /// Programs of this reactor's sessions whose connection is gone, until
    /// reaped. Declared first, so its cgroups are removed before the
    /// daemon's parent cgroup (the last `ExecShared` dropped holds the last
    /// reference to it).
    reaper: Reaper,
    /// What every reactor shares.
    daemon: Arc<ExecDaemon>,
}

/// The exec service's state that belongs to the daemon, not to a reactor
/// (see the module docs): built once, shared by every reactor's
/// [`ExecShared`].
#[derive(Debug)]
pub struct ExecDaemon {
    /// The key clients must prove they hold, re-read when the file changes.
    key: Mutex<KeyCache>,
    /// Programs started and not yet reaped, over the whole daemon: those
    /// that sessions run plus those the reapers are finishing. Compared with
    /// `exec.max_running` before each start.
    running: Running,
    /// `<data-dir>/<exec.workdir>`, absolute: programs run here, and it is
    /// their `HOME`.
    workdir: PathBuf,
    /// Why programs get no cgroup (`exec.cgroups = false`, or the error
    /// that made creating one fail); `None` when they get one.
    no_cgroups: Option<String>,
    /// The daemon's subreaper, where it has become one (see
    /// [`ExecDaemon::become_subreaper`]); dropping it at exit sweeps. It is
    /// dropped with the last reactor's `ExecShared`, after that reactor's
    /// reaper (declared first there), so the reaper's programs are released
    /// first. Its lock is taken only at start.
    subreaper: Mutex<Option<Subreaper>>,
    /// Where each program gets its own cgroup; `None` where the daemon may
    /// not create cgroups (logged once at start).
    cgroups: Mutex<Option<CgroupParent>>,
}

impl ExecDaemon {
    /// Loads (or creates, mode 0600) the key file and creates the working
    /// directory. With the exec service disabled, neither is touched.
    pub fn new(config: &Config) -> io::Result<ExecDaemon> {
        let workdir = config.data_dir.join(&config.exec.workdir);
        if !config.exec.service.enabled {
            return Ok(ExecDaemon {
                key: Mutex::new(KeyCache::empty(auth::key::default_path(&config.data_dir))),
                running: Running::default(),
                workdir,
                no_cgroups: None,
                subreaper: Mutex::new(None),
                cgroups: Mutex::new(None),
            });
        }
        let key = KeyCache::load(auth::key::default_path(&config.data_dir))?;
        std::fs::create_dir_all(&workdir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create exec workdir {}: {e}", workdir.display()),
            )
        })?;
        // Programs get it as HOME, which should be absolute.
        let workdir = workdir.canonicalize()?;
        let made = if config.exec.cgroups {
            CgroupParent::create().map_err(|e| e.to_string())
        } else {
            Err("exec.cgroups = false".to_string())
        };
        let (cgroups, no_cgroups) = match made {
            Ok(parent) => {
                log::info!(
                    "exec: programs run in cgroups under {}",
                    parent.dir().display()
                );
                (Some(parent), None)
            }
            // Logged by `become_subreaper`, which says what replaces them.
            Err(why) => (None, Some(why)),
        };
        Ok(ExecDaemon {
            key: Mutex::new(key),
            running: Running::default(),
            workdir,
            no_cgroups,
            subreaper: Mutex::new(None),
            cgroups: Mutex::new(cgroups),
        })
    }

    /// Where programs get no cgroup, makes the daemon the child subreaper
    /// of their descendants (subreaper.rs) and logs which containment is
    /// in use, and why. Called once, by the daemon at start, before the
    /// reactors run: the subreaper is process-wide, and a process that merely
    /// hosts sessions (a unit test's) must not adopt and kill children it
    /// did not start.
    pub fn become_subreaper(&self) {
        let Some(why) = &self.no_cgroups else {
            return;
        };
        match subreaper::enable() {
            Ok(subreaper) => {
                log::info!(
                    "exec: no cgroup for programs ({why}); the daemon is their child subreaper \
                     instead, and kills a process that leaves its program's process group \
                     once it adopts it"
                );
                *lock(&self.subreaper) = Some(subreaper);
            }
            Err(e) => log::warn!(
                "exec: no cgroup for programs ({why}) and no subreaper (prctl: {e}); \
                 a program that leaves its process group may outlive its session"
            ),
        }
    }
}

impl ExecShared {
    /// A reactor's part, joined to the daemon's.
    pub fn joined(daemon: Arc<ExecDaemon>) -> ExecShared {
        ExecShared {
            reaper: Reaper::default(),
            daemon,
        }
    }

    /// A daemon's state of its own, for a lone reactor (the test harness).
    pub fn new(config: &Config) -> io::Result<ExecShared> {
        Ok(ExecShared::joined(Arc::new(ExecDaemon::new(config)?)))
    }

    /// An empty cgroup for the next program, where the daemon may make
    /// one: a spare, or a new one.
    pub fn new_cgroup(&mut self) -> Option<Cgroup> {
        let mut cgroups = lock(&self.daemon.cgroups);
        let parent = cgroups.as_mut()?;
        parent
            .child()
            .inspect_err(|e| log::warn!("exec: no cgroup for a program: {e}"))
            .ok()
    }

    /// A program's cgroup, just found empty, goes back for a later
    /// program (see `CgroupParent`'s "Reused, not made anew").
    pub fn recycle_cgroup(&mut self, cgroup: Cgroup) {
        if let Some(parent) = lock(&self.daemon.cgroups).as_mut() {
            parent.recycle(cgroup);
        }
    }

    /// The key as of now: the file is checked (one `stat`) and re-read if
    /// it was replaced, so `socketlab key rotate` takes effect for the next
    /// connection without a restart.
    pub fn current_key(&mut self) -> Option<Key> {
        let mut key = lock(&self.daemon.key);
        key.refresh();
        key.key.clone()
    }

    pub fn workdir(&self) -> &Path {
        &self.daemon.workdir
    }

    /// Programs running over the whole daemon.
    pub fn running(&self) -> usize {
        self.daemon.running.count()
    }

    /// A session is about to start a program: takes its place, or refuses
    /// when `max_running` programs run over the whole daemon.
    pub fn try_start(&mut self, max_running: usize) -> bool {
        self.daemon.running.try_take(max_running)
    }

    /// A program is counted although it may not have a place: a child that
    /// arrived after its session stopped waiting, killed at once and
    /// counted until the reaper is done with it.
    pub fn program_started(&mut self) {
        self.daemon.running.take_anyway();
    }

    /// A session's program ended and was reaped by the session itself (or
    /// never started).
    pub fn program_reaped(&mut self) {
        self.daemon.running.give_back(1);
    }

    /// A session hands over a program still dying; it keeps counting as
    /// running until this reactor's reaper is done with it.
    pub fn adopt(&mut self, dying: Dying) {
        self.reaper.adopt(dying);
    }

    /// Moves the reaper along, then gives the subreaper its turn (so a
    /// group the reaper just finished is looked at in the same turn);
    /// returns when either next needs a turn.
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        let mut next = None;
        if !self.reaper.is_empty() {
            let done;
            (done, next) = self.reaper.poll(now);
            self.daemon.running.give_back(done);
            for cgroup in self.reaper.take_emptied() {
                self.recycle_cgroup(cgroup);
            }
        }
        match (next, subreaper::poll(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True while programs are still being stopped, or the subreaper still
    /// has adopted processes to finish: the daemon must not exit yet.
    pub fn is_busy(&self) -> bool {
        !self.reaper.is_empty() || subreaper::is_busy()
    }

    /// Programs handed to this reactor's reaper and not reaped yet.
    pub fn dying(&self) -> usize {
        self.reaper.len()
    }
}

/// The daemon's count of running programs, shared by every reactor.
///
/// Counted first and checked after: `try_take` adds one and, if the count
/// was already at the limit, takes it back and refuses. Two reactors
/// racing for the last place can then both be refused (a spurious `busy`
/// at the exact limit), but never both admitted, so the limit is never
/// exceeded; and no lock is taken for it. It changes once per program
/// started and once per program reaped.
#[derive(Debug, Default)]
pub struct Running(AtomicUsize);

impl Running {
    /// Takes a place if fewer than `max` are taken.
    pub fn try_take(&self, max: usize) -> bool {
        if self.0.fetch_add(1, Ordering::Relaxed) >= max {
            self.give_back(1);
            return false;
        }
        true
    }

    /// Takes a place whatever the count (see [`ExecShared::program_started`]).
    pub fn take_anyway(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back `n` places; never below zero, so a mistake in the
    /// bookkeeping cannot wrap the count and refuse every later program.
    pub fn give_back(&self, n: usize) {
        if n > 0 {
            let _ = self
                .0
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(n))
                });
        }
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Takes one of the daemon's exec locks. Nothing that holds them can
/// panic short of a bug, and what they guard stays consistent if it did,
/// so a poisoned lock is used as it is rather than spreading the panic to
/// every reactor.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key file's contents and the identity of the file they came from.
#[derive(Debug)]
struct KeyCache {
    path: PathBuf,
    /// `None` only when the exec service is disabled.
    key: Option<Key>,
    /// Device, inode, size and modification time of the file last looked
    /// at. A rotation (`rename` of a new file over the old) changes the
    /// inode; an edit in place changes the time.
    seen: Option<FileId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileId {
    fn of(path: &Path) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

impl KeyCache {
    fn empty(path: PathBuf) -> KeyCache {
        KeyCache {
            path,
            key: None,
            seen: None,
        }
    }

    /// Loads the key at start, creating the file if it does not exist; an
    /// unreadable or malformed file stops the daemon from starting.
    fn load(path: PathBuf) -> io::Result<KeyCache> {
        let file = auth::load_or_create(&path)?;
        if file.created {
            log::info!("exec: created a new key in {}", path.display());
        }
        warn_if_loose(&path, file.mode);
        let seen = FileId::of(&path);
        Ok(KeyCache {
            path,
            key: Some(file.key),
            seen,
        })
    }

    /// Re-reads the key if the file changed. A file that vanished or does
    /// not hold a key is logged once, and the last good key stays in use.
    fn refresh(&mut self) {
        if self.key.is_none() {
            return;
        }
        let now = FileId::of(&self.path);
        if now == self.seen {
            return;
        }
        self.seen = now;
        if now.is_none() {
            log::warn!(
                "exec: key file {} is gone; still using the key loaded before",
                self.path.display()
            );
            return;
        }
        match auth::load(&self.path) {
            Ok(file) => {
                warn_if_loose(&self.path, file.mode);
                if self.key.as_ref() != Some(&file.key) {
                    log::info!(
                        "exec: key file {} changed; using the new key",
                        self.path.display()
                    );
                }
                self.key = Some(file.key);
            }
            Err(e) => log::warn!("exec: {e}; still using the key loaded before"),
        }
    }
}

fn warn_if_loose(path: &Path, mode: u32) {
    if mode & 0o077 != 0 {
        log::warn!(
            "exec: key file {} has mode {mode:o}: others can read the key and run programs; run `chmod 600` on it",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_private_and_picked_up_again_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let mut exec = ExecShared::new(&config).unwrap();
        let path = dir.path().join("secret.key");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(exec.workdir().is_absolute());
        assert!(exec.workdir().ends_with("exec") && exec.workdir().is_dir());

        let first = exec.current_key().unwrap();
        assert_eq!(exec.current_key().unwrap(), first);
        let rotated = auth::rotate(&path).unwrap();
        assert_ne!(rotated, first);
        assert_eq!(exec.current_key().unwrap(), rotated);

        // A broken file keeps the last good key.
        std::fs::write(&path, "not a key\n").unwrap();
        assert_eq!(exec.current_key().unwrap(), rotated);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(exec.current_key().unwrap(), rotated);
    }

    #[test]
    fn a_disabled_service_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.exec.service.enabled = false;
        let mut exec = ExecShared::new(&config).unwrap();
        assert!(exec.current_key().is_none());
        assert!(!dir.path().join("secret.key").exists());
    }

    #[test]
    fn the_running_count_is_never_exceeded_by_racing_threads() {
        let running = Arc::new(Running::default());
        let taken: usize = (0..4)
            .map(|_| {
                let running = running.clone();
                std::thread::spawn(move || (0..1000).filter(|_| running.try_take(3)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(taken, 3);
        assert_eq!(running.count(), 3);
        running.give_back(1);
        assert!(running.try_take(3), "a place given back is taken again");
        assert!(!running.try_take(3));
    }

    #[test]
    fn the_running_count_never_goes_below_zero() {
        let running = Running::default();
        running.take_anyway();
        running.give_back(5);
        assert_eq!(running.count(), 0);
        assert!(running.try_take(1));
    }

    #[test]
    fn two_reactors_joined_to_one_daemon_share_key_workdir_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let daemon = Arc::new(ExecDaemon::new(&config).unwrap());
        let mut a = ExecShared::joined(daemon.clone());
        let mut b = ExecShared::joined(daemon);
        assert_eq!(a.current_key(), b.current_key());
        assert_eq!(a.workdir(), b.workdir());
        assert!(a.try_start(2));
        assert!(b.try_start(2));
        assert!(!a.try_start(2), "two run, one on each");
        assert_eq!(b.running(), 2);
        b.program_reaped();
        assert!(a.try_start(2));
    }
}
