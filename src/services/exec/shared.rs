//! What the exec service keeps across connections: the shared key, the
//! count of running programs, the working directory, the reaper, and how
//! what programs leave behind is contained (a cgroup per program, or the
//! subreaper fallback).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::reaper::{Dying, Reaper};
use super::subreaper::{self, Subreaper};
use super::sys::{Cgroup, CgroupParent};
use crate::auth::{self, Key};
use crate::config::Config;

/// The exec service's part of `Shared`.
#[derive(Debug)]
pub struct ExecShared {
    /// The key clients must prove they hold, re-read when the file changes.
    key: KeyCache,
    /// Programs started and not yet reaped, over the whole daemon: those
    /// that sessions run plus those the reaper is finishing. Compared with
    /// `exec.max_running` before each start.
    running: usize,
    reaper: Reaper,
    /// `<data-dir>/<exec.workdir>`, absolute: programs run here, and it is
    /// their `HOME`.
    workdir: PathBuf,
    /// Why programs get no cgroup (`exec.cgroups = false`, or the error
    /// that made creating one fail); `None` when they get one.
    no_cgroups: Option<String>,
    /// The daemon's subreaper, where it has become one (see
    /// [`ExecShared::become_subreaper`]); dropping it at exit sweeps.
    /// Declared after the reaper, so that the reaper's programs are
    /// released first.
    subreaper: Option<Subreaper>,
    /// Where each program gets its own cgroup; `None` where the daemon may
    /// not create cgroups (logged once at start). Declared last so that it
    /// is dropped after the reaper's cgroups, which live inside it.
    cgroups: Option<CgroupParent>,
}

impl ExecShared {
    /// Loads (or creates, mode 0600) the key file and creates the working
    /// directory. With the exec service disabled, neither is touched.
    pub fn new(config: &Config) -> io::Result<ExecShared> {
        let workdir = config.data_dir.join(&config.exec.workdir);
        if !config.exec.service.enabled {
            return Ok(ExecShared {
                key: KeyCache::empty(auth::key::default_path(&config.data_dir)),
                running: 0,
                reaper: Reaper::default(),
                workdir,
                no_cgroups: None,
                subreaper: None,
                cgroups: None,
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
        Ok(ExecShared {
            key,
            running: 0,
            reaper: Reaper::default(),
            workdir,
            no_cgroups,
            subreaper: None,
            cgroups,
        })
    }

    /// Where programs get no cgroup, makes the daemon the child subreaper
    /// of their descendants (subreaper.rs) and logs which containment is
    /// in use, and why. Called once, by the daemon at start, for the first
    /// reactor: the subreaper is process-wide, and a process that merely
    /// hosts sessions (a unit test's) must not adopt and kill children it
    /// did not start.
    pub fn become_subreaper(&mut self) {
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
                self.subreaper = Some(subreaper);
            }
            Err(e) => log::warn!(
                "exec: no cgroup for programs ({why}) and no subreaper (prctl: {e}); \
                 a program that leaves its process group may outlive its session"
            ),
        }
    }

    /// A fresh cgroup for the next program, where the daemon may make one.
    pub fn new_cgroup(&mut self) -> Option<Cgroup> {
        let parent = self.cgroups.as_mut()?;
        parent
            .child()
            .inspect_err(|e| log::warn!("exec: no cgroup for a program: {e}"))
            .ok()
    }

    /// The key as of now: the file is checked (one `stat`) and re-read if
    /// it was replaced, so `socketlab key rotate` takes effect for the next
    /// connection without a restart.
    pub fn current_key(&mut self) -> Option<Key> {
        self.key.refresh();
        self.key.key.clone()
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// A session started a program.
    pub fn program_started(&mut self) {
        self.running += 1;
    }

    /// A session's program ended and was reaped by the session itself.
    pub fn program_reaped(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// A session hands over a program still dying; it keeps counting as
    /// running until the reaper is done with it.
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
            self.running = self.running.saturating_sub(done);
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

    /// Programs handed to the reaper and not reaped yet.
    pub fn dying(&self) -> usize {
        self.reaper.len()
    }
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
}
