//! Every system call the exec service makes that Rust's standard library
//! does not wrap: signals to process groups, pidfds, the spawn itself
//! (in sys/spawn.rs, a module of this one) and the per-program cgroup.
//! Each `unsafe` block of exec is here or in sys/spawn.rs, with the reason
//! it is sound next to it, so a reviewer reads two files to check them
//! all.
//!
//! # Why a cgroup, when there is a process group
//!
//! A program runs in its own process group, and stopping a program means
//! signalling that group. But any process may leave its group: `setsid`
//! (or `setpgid`) puts it in a new one, and `sh -c 'setsid daemon &'` is
//! all it takes. Signals to the old group then miss it, and it outlives
//! the session under PID 1. A *cgroup* (control group, version 2) cannot
//! be left that way: a process's children are born in its cgroup, and
//! only a process allowed to write to another cgroup's `cgroup.procs` can
//! move out. Writing `1` to the cgroup's `cgroup.kill` (Linux 5.14) sends
//! SIGKILL to every process in it, atomically with respect to `fork`, so
//! nothing escapes by forking at the wrong moment.
//!
//! So where the daemon may create cgroups, each program gets one: a
//! directory `<n>` under `socketlab-<daemon pid>` under the daemon's own
//! cgroup (found in `/proc/self/cgroup` and `/proc/self/mountinfo`). The
//! child joins it between `clone` and `exec`, before the program runs a
//! single instruction; the reaper kills what is left in it, and once it
//! is empty it waits, a spare, for a later program ([`CgroupParent`] says
//! why). Where the daemon may not (no cgroup v2, no
//! write access: an unprivileged daemon under systemd without delegation,
//! or `exec.cgroups = false`), it says so in its start log, and
//! docs/security.md says what is then not guaranteed.
//!
//! There it falls back on the other tool Linux offers: it becomes a
//! child *subreaper* (`PR_SET_CHILD_SUBREAPER`), so orphaned descendants
//! of its programs are re-parented to it instead of PID 1, and it can kill
//! what it adopts.
//! That is weaker than a cgroup: an escaped process is seen only once its
//! parent has died, and it cannot be told apart from its siblings by the
//! program it came from. subreaper.rs explains what it does with them.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

// ----- Process groups and pidfds ---------------------------------------------

/// `kill(-pgid, signal)`: signals every process in the group. Errors are
/// ignored: the group may have ended a moment ago.
pub fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // a negative pid names a group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Whether any process is left in the group (signal 0 checks without
/// sending anything).
pub fn group_exists(pgid: i32) -> bool {
    // SAFETY: as in `signal_group`; signal 0 only checks.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `pidfd_open(pid, 0)`: a descriptor that turns readable when the process
/// ends. It must be opened while the child is unreaped, which guarantees
/// that `pid` is still our child and not a reused number.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: the syscall takes a pid and flags, and returns a new
    // descriptor (close-on-exec) or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: from now on, a descendant of the
/// daemon whose parent dies is re-parented to the daemon (the nearest
/// living subreaper among its ancestors) instead of PID 1.
pub fn become_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl(2) with this option takes plain integers and touches
    // no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The process group of `pid` (`getpgid`), or `None` if there is no such
/// process. A zombie still has its group.
pub fn process_group_of(pid: i32) -> Option<i32> {
    // SAFETY: getpgid(2) takes an integer and touches no memory of ours.
    let pgid = unsafe { libc::getpgid(pid) };
    (pgid > 0).then_some(pgid)
}

/// SIGKILL to one process. Only for a child of the daemon that nobody else
/// waits for: until the daemon reaps it, its pid cannot name anyone else.
pub fn kill_child(pid: i32) {
    // SAFETY: as in `signal_group`; a positive pid names one process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Collects the exit status of the child `pid` if it has ended
/// (`waitpid(pid, WNOHANG)`, never `waitpid(-1)`, which could take a
/// program's status from the session watching it). True when the child is
/// gone: reaped now, or not a child at all (`ECHILD`).
pub fn reap_if_ended(pid: i32) -> bool {
    let Ok(pid) = u32::try_from(pid) else {
        return true;
    };
    !matches!(ChildPid::new(pid).try_wait(), Ok(None))
}

// ----- The spawn -------------------------------------------------------------

// Starting a program with `clone(CLONE_VM | CLONE_VFORK)`: the longest
// piece of unsafe code in exec, so it has a file of its own.
mod spawn;

pub use spawn::{ChildPid, Spawn};

// ----- Cgroups ---------------------------------------------------------------

/// How many empty program cgroups are kept for reuse (see
/// [`CgroupParent::recycle`]); beyond this they are removed.
pub const SPARE_CGROUPS: usize = 16;

/// Where this daemon's program cgroups live: `socketlab-<pid>` under the
/// daemon's own cgroup. Removed (when empty) on drop.
///
/// # Reused, not made anew
///
/// A cgroup made for one program and removed after it costs more than
/// its `mkdir` and `rmdir` (some 40 µs): starting `true` into a fresh
/// cgroup each time measured 0.14 to 0.36 ms slower per program than into
/// a reused one (BENCHMARKS.md, "exec without fork"), most likely the
/// kernel building its bookkeeping (a `css_set`) for the first process to
/// enter a cgroup.
/// So a program's cgroup, once empty, goes back to a short list of spares
/// ([`SPARE_CGROUPS`]) and the next program takes it from there. An empty
/// cgroup of ours is as good as a new one: nothing can enter it except
/// by a spawn of ours, since its members are the only processes whose
/// children are born in it.
#[derive(Debug)]
pub struct CgroupParent {
    dir: PathBuf,
    /// Names the next program's cgroup.
    next: u64,
    /// Empty cgroups waiting for a program, at most [`SPARE_CGROUPS`].
    spare: Vec<Cgroup>,
}

impl CgroupParent {
    /// Creates the parent directory, or says why it cannot.
    pub fn create() -> io::Result<CgroupParent> {
        // Under our own cgroup: that is where a delegated (systemd) or
        // container setup lets us write. A non-root cgroup that holds a
        // process (the daemon) cannot have controllers enabled for its
        // children ("no internal processes"), so nothing stops its
        // children from holding processes either.
        let base = own_cgroup_dir()?;
        remove_stale(&base);
        let dir = base.join(format!("socketlab-{}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(with_path(e, "mkdir", &dir)),
        }
        if !dir.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&dir);
            return Err(io::Error::other(
                "cgroup.kill missing (Linux 5.14 or later needed)",
            ));
        }
        Ok(CgroupParent {
            dir,
            next: 0,
            spare: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An empty cgroup for one program: a spare if there is one, else a
    /// new one.
    pub fn child(&mut self) -> io::Result<Cgroup> {
        if let Some(spare) = self.spare.pop() {
            return Ok(spare);
        }
        self.next += 1;
        let dir = self.dir.join(self.next.to_string());
        fs::create_dir(&dir).map_err(|e| with_path(e, "mkdir", &dir))?;
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| with_path(e, "open", &dir.join("cgroup.procs")));
        match procs {
            Ok(procs) => Ok(Cgroup { dir, procs }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Takes back a program's cgroup that its caller has just found empty
    /// ([`Cgroup::is_populated`]), to be given to a later program; removes
    /// it if there are spares enough.
    pub fn recycle(&mut self, cgroup: Cgroup) {
        if self.spare.len() < SPARE_CGROUPS {
            self.spare.push(cgroup);
        }
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        // The spares first: a parent with children cannot be removed.
        self.spare.clear();
        // Empty by now unless a program outlived shutdown, in which case
        // the directory stays for the operator to see.
        let _ = fs::remove_dir(&self.dir);
    }
}

/// One program's cgroup. Once it is empty it goes back to its parent for
/// the next program ([`CgroupParent::recycle`]); the reaper kills what is
/// in it and hands it back when empty. Dropped, it is removed.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for the child to join: open for as long as
    /// the cgroup is ours, so a reused cgroup costs no `open`.
    procs: fs::File,
}

impl Cgroup {
    /// The descriptor the child writes itself into (see [`Spawn::spawn`]).
    pub fn procs_fd(&self) -> BorrowedFd<'_> {
        self.procs.as_fd()
    }

    /// Whether any process is still in the cgroup (`populated 1` in
    /// `cgroup.events`). A cgroup that cannot be read counts as empty:
    /// there is nothing the daemon could do about it anyway.
    pub fn is_populated(&self) -> bool {
        fs::read_to_string(self.dir.join("cgroup.events"))
            .is_ok_and(|events| events.lines().any(|l| l == "populated 1"))
    }

    /// SIGKILL to every process in the cgroup, descendants that left the
    /// process group included.
    pub fn kill(&self) {
        let path = self.dir.join("cgroup.kill");
        if let Err(e) = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"1"))
        {
            log::warn!("exec: {}: {e}", path.display());
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Removes the empty cgroups of daemons that are gone (killed before they
/// could remove their own). `rmdir` refuses a cgroup that still holds a
/// process, so a live program of a dead daemon stays visible.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("socketlab-")) else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(children) = fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = fs::remove_dir(child.path());
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

/// The directory of this process's cgroup v2: the `0::<path>` line of
/// `/proc/self/cgroup` under the cgroup2 mount point of
/// `/proc/self/mountinfo`.
fn own_cgroup_dir() -> io::Result<PathBuf> {
    let cgroups = fs::read_to_string("/proc/self/cgroup")?;
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("no cgroup v2 hierarchy"))?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    // Fields: id parent major:minor root mount-point options... - fstype ...
    let mount = mounts
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2").then(|| left.split(' ').nth(4))?
        })
        .ok_or_else(|| io::Error::other("cgroup2 is not mounted"))?;
    Ok(Path::new(mount).join(path.trim_start_matches('/')))
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}
