//! The fallback where the daemon may not create cgroups: it becomes a
//! child subreaper and kills what it adopts.
//!
//! # Why adoption, and what it can see
//!
//! A program that leaves its process group (`setsid sleep 1000 &`, or a
//! daemon's double fork) is beyond the signals the daemon sends the group.
//! With a cgroup per program (sys.rs) it is caught anyway. Without one, the
//! daemon makes itself a *child subreaper* at start
//! (`PR_SET_CHILD_SUBREAPER`): when a process dies, its children are
//! re-parented to the nearest living subreaper among their ancestors, the
//! daemon, instead of PID 1. So whatever a program leaves behind becomes,
//! sooner or later, a child of the daemon, and the daemon's children are
//! the programs it spawned (whose pids it knows) and what it adopted.
//!
//! ```text
//!   daemon (subreaper)                  daemon
//!     └── sh -c '...' (program 41)        ├── sh -c '...' (program 41)
//!           └── sh ── sleep      ──>      └── sleep (adopted: its parent died)
//! ```
//!
//! # Attribution
//!
//! An adopted process cannot say which program it came from; its process
//! group is the one clue:
//!
//! - **In the group of a program** (a shell's background job whose
//!   subshell exited): left alone. The group is signalled when that
//!   program ends, and the reaper (reaper.rs) waits until the group is
//!   gone.
//! - **In any other group**: it called `setsid` or `setpgid`, left its
//!   program's group, and can no longer be attributed. It gets SIGKILL at
//!   once. The daemon promises that nothing a session started outlives it,
//!   and in this mode it keeps that promise only by letting no process
//!   that left its group live, even while the session that started it
//!   lasts (docs/security.md).
//!
//! Either way, an adopted process that has ended is reaped here, with
//! `waitpid(pid, WNOHANG)` for that pid alone: `waitpid(-1)` could collect
//! the status of a program whose session is about to read it.
//!
//! # Finding the daemon's children
//!
//! `/proc/self/task/<tid>/children` lists one thread's children, and every
//! thread's is read: an orphan goes to any live thread of the subreaper,
//! and a program is the child of the helper thread that spawned it.
//! Kernels built without `CONFIG_PROC_CHILDREN` have no such file; there
//! every `/proc/<pid>/stat` is read and the processes whose parent is the
//! daemon are kept, a cost that grows with the number of processes on the
//! machine (a few microseconds each). Neither list is a snapshot, since
//! processes come and go while it is read; a child missed is found by the
//! next look.
//!
//! # Telling adopted from spawned
//!
//! The pids the daemon spawned are kept in one [`Registry`] for the whole
//! process (spawns run on helper threads, and with several reactors on
//! several pools), from just before the `clone` until the program's group
//! is done ([`Registration`]). Three races are closed there:
//!
//! - A spawn's child exists before its pid is known. While a spawn is
//!   under way, an unknown child that could be that spawn's (alone in its
//!   group, or still in the daemon's) is not judged.
//! - A program's pid is released after its leader was reaped, and the pid
//!   may then be reused at once. A pid released while a look was under way
//!   is not judged by that look: the listing may predate the reaping.
//! - An adopted child is reaped only here, so its pid cannot name another
//!   process between the look and the SIGKILL.
//!
//! # When to look
//!
//! Every reactor's `Shared::poll` offers a turn ([`poll`]); the one that
//! takes the process-wide lock looks, the others find it taken and come
//! back later, so exactly one place judges and reaps at a time. It looks
//! at once when a program was registered, when its leader was reaped
//! (that is when its leftovers are adopted) and when it was released;
//! every [`SCAN_PERIOD`] while any program is registered; and every
//! [`RESCAN`] while the last look found something to do (what it killed
//! may not be dead yet, and its children are adopted in turn). An idle
//! daemon never wakes up for it. At shutdown the reactors wait for it
//! ([`is_busy`]), and when the daemon exits a last sweep kills and reaps
//! whatever it has still adopted ([`FINAL_SWEEP`] at most; see
//! [`Subreaper`]). Each look signals and reaps at most [`MAX_PER_LOOK`]
//! processes, so one turn's work stays bounded.
//!
//! A production daemon might move the `/proc` walk off the loop thread; a
//! look costs one small read per thread where the children files exist,
//! and that is the case this code is written for.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::sys;

/// How often the daemon's children are listed while a program runs.
pub const SCAN_PERIOD: Duration = Duration::from_millis(100);

/// How soon to look again while something judged is not reaped yet (it was
/// sent KILL a moment ago) or could not be judged.
pub const RESCAN: Duration = Duration::from_millis(10);

/// The most adopted processes one look signals and reaps; the rest wait
/// for the next look, [`RESCAN`] later.
pub const MAX_PER_LOOK: usize = 256;

/// How long the last sweep, when the daemon exits, may take.
pub const FINAL_SWEEP: Duration = Duration::from_secs(2);

// ----- The registry of spawned programs --------------------------------------

/// Set once the daemon is a subreaper: only then is there anything to look
/// for.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The programs the daemon spawned, for the whole process.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

/// When to look, held by whichever reactor is looking.
static LOOKOUT: Mutex<Lookout> = Mutex::new(Lookout::new());

/// A spawn about to `clone`: counted from before the child exists until its
/// pid is registered ([`Spawning::end`]), so no look takes the child for
/// an adopted process in between.
#[derive(Debug)]
pub struct Spawning {
    /// Still counted (cleared by `end`; a panic in between uncounts it on
    /// drop).
    open: bool,
}

impl Spawning {
    pub fn begin() -> Spawning {
        registry().begin_spawn();
        Spawning { open: true }
    }

    /// The spawn is over; `pid` is its child if it started. The program is
    /// known as the daemon's own until the returned registration drops.
    pub fn end(mut self, pid: Option<u32>) -> Option<Registration> {
        self.open = false;
        let pid = pid.and_then(|p| i32::try_from(p).ok());
        registry().end_spawn(pid);
        pid.map(|pid| Registration { pid })
    }
}

impl Drop for Spawning {
    fn drop(&mut self) {
        if self.open {
            registry().end_spawn(None);
        }
    }
}

/// A program the daemon spawned, known as such while this lives: it goes
/// with the program to its session and then the reaper, and is dropped
/// when the program's group is done (its leader reaped, nothing left in
/// it). Dropped earlier, an unreaped leader would be taken for an adopted
/// process and killed, which is the safe way to be wrong.
#[derive(Debug)]
pub struct Registration {
    pid: i32,
}

impl Registration {
    /// The program's leader was reaped: whatever it left running (its
    /// background jobs, what escaped its group) has just been re-parented,
    /// to the daemon in this mode. Calls for a look at once, as a release
    /// does.
    pub fn leader_ended(&self) {
        registry().changes += 1;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().release(self.pid);
    }
}

/// What a look decides about one child of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A program the daemon spawned: its session or the reaper waits for
    /// it.
    Program,
    /// Not judged this time: released during the look, or possibly the
    /// child of a spawn not registered yet.
    Undecided,
    /// Adopted, and in the group of a program: left to that group's end,
    /// and reaped once it has ended.
    InProgramGroup,
    /// Adopted, and in the group of no program: it left its group. KILL,
    /// then reaped.
    Escaped,
}

/// The programs spawned, the spawns under way, and the releases a look
/// must know about. Plain data, so its decisions are unit-tested; the
/// process has one, [`REGISTRY`].
#[derive(Debug)]
pub struct Registry {
    /// Each program's pid, which is also its process group's id, with how
    /// many registrations hold it (a pid reused while an old registration
    /// is being dropped counts twice for a moment).
    programs: BTreeMap<i32, u32>,
    /// Spawns between `clone` and registration.
    spawning: usize,
    /// A look is under way: releases are remembered in `released`.
    looking: bool,
    /// Pids released while the current look was under way.
    released: BTreeSet<i32>,
    /// Counts registrations and releases: a look is due when it moved.
    changes: u64,
}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            programs: BTreeMap::new(),
            spawning: 0,
            looking: false,
            released: BTreeSet::new(),
            changes: 0,
        }
    }

    pub fn begin_spawn(&mut self) {
        self.spawning += 1;
    }

    pub fn end_spawn(&mut self, pid: Option<i32>) {
        self.spawning = self.spawning.saturating_sub(1);
        if let Some(pid) = pid {
            *self.programs.entry(pid).or_insert(0) += 1;
            self.changes += 1;
        }
    }

    pub fn release(&mut self, pid: i32) {
        if let Some(count) = self.programs.get_mut(&pid) {
            *count -= 1;
            if *count == 0 {
                self.programs.remove(&pid);
            }
        }
        if self.looking {
            self.released.insert(pid);
        }
        self.changes += 1;
    }

    /// A look is about to list the children.
    pub fn begin_look(&mut self) {
        self.looking = true;
        self.released.clear();
    }

    /// The look has listed the children and their groups.
    pub fn end_look(&mut self) {
        self.looking = false;
    }

    /// Decides about the child `pid`, in group `pgid` (`None` if it could
    /// not be read), listed by a look still under way. `own_pgid` is the
    /// daemon's group, where a spawn's child sits until it makes its own.
    pub fn judge(&self, pid: i32, pgid: Option<i32>, own_pgid: i32) -> Verdict {
        if self.programs.contains_key(&pid) {
            return Verdict::Program;
        }
        if self.released.contains(&pid) {
            return Verdict::Undecided;
        }
        match pgid {
            // A child whose group cannot be read is not killed: the daemon
            // signals only what it can see.
            None => Verdict::Undecided,
            Some(g) if self.programs.contains_key(&g) => Verdict::InProgramGroup,
            // A spawn's child is in the daemon's group until it makes its
            // own, whose id is its pid; either may be a child not
            // registered yet.
            Some(g) if self.spawning > 0 && (g == pid || g == own_pgid) => Verdict::Undecided,
            Some(_) => Verdict::Escaped,
        }
    }

    /// Programs registered now.
    pub fn programs(&self) -> usize {
        self.programs.len()
    }
}

fn registry() -> MutexGuard<'static, Registry> {
    // The registry's updates are single statements: a panic elsewhere while
    // it was held leaves it consistent.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

// ----- Looking ---------------------------------------------------------------

/// When the next look is due, and what the last one left undone.
#[derive(Debug)]
struct Lookout {
    /// `Registry::changes` as of the last look.
    changes_seen: u64,
    /// When to look next whatever happens; `None` when only a change in
    /// the registry calls for a look (no program registered, and the last
    /// look found nothing to do).
    next: Option<Instant>,
}

impl Lookout {
    const fn new() -> Lookout {
        Lookout {
            changes_seen: 0,
            next: None,
        }
    }
}

/// What one look did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Look {
    /// Adopted processes sent KILL.
    killed: usize,
    /// Adopted processes reaped.
    reaped: usize,
    /// Adopted (or undecided) children still there afterwards.
    left: usize,
}

/// The daemon became a subreaper; turns [`poll`] on. Returns the handle
/// that sweeps at exit (see [`Subreaper`]).
pub fn enable() -> io::Result<Subreaper> {
    sys::become_child_subreaper()?;
    ENABLED.store(true, Ordering::SeqCst);
    Ok(Subreaper { _private: () })
}

/// Whether the daemon is a subreaper.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A reactor's turn: looks if a look is due and no other reactor is at it.
/// Returns when this reactor should offer its next turn.
pub fn poll(now: Instant) -> Option<Instant> {
    if !enabled() {
        return None;
    }
    let Ok(mut lookout) = LOOKOUT.try_lock() else {
        // Another reactor is looking; come back soon in case it stops
        // looking after this look.
        return Some(now + RESCAN);
    };
    let (changes, programs) = {
        let r = registry();
        (r.changes, r.programs())
    };
    let due = changes != lookout.changes_seen || lookout.next.is_some_and(|at| at <= now);
    if due {
        lookout.changes_seen = changes;
        let look = look(false);
        if look.killed > 0 {
            log::info!(
                "exec: {} adopted process(es) had left their program's process group; sent KILL",
                look.killed
            );
        }
        // What was killed or reaped may have had children of its own, now
        // re-parented to the daemon: look again until a look finds nothing
        // to do.
        lookout.next = if look.left > 0 || look.killed > 0 || look.reaped > 0 {
            Some(now + RESCAN)
        } else if programs > 0 {
            Some(now + SCAN_PERIOD)
        } else {
            None
        };
    } else if lookout.next.is_none() && programs > 0 {
        lookout.next = Some(now + SCAN_PERIOD);
    }
    lookout.next
}

/// True while a subreaper still has work before the daemon may exit:
/// programs registered, a change not looked at, or a look due because the
/// last one found something to do.
pub fn is_busy() -> bool {
    if !enabled() {
        return false;
    }
    let (changes, programs, spawning) = {
        let r = registry();
        (r.changes, r.programs(), r.spawning)
    };
    if programs > 0 || spawning > 0 {
        return true;
    }
    // Taken by a reactor that is looking: busy until it is done.
    match LOOKOUT.try_lock() {
        Ok(l) => l.next.is_some() || l.changes_seen != changes,
        Err(_) => true,
    }
}

/// Lists the daemon's children, judges each, kills the escaped ones (all
/// adopted ones when `sweep`) and reaps the adopted ones that ended.
fn look(sweep: bool) -> Look {
    let own_pid = std::process::id() as i32;
    let own_pgid = sys::process_group_of(own_pid).unwrap_or(own_pid);
    registry().begin_look();
    let listed = list_children(own_pid);
    let judged: Vec<(i32, Verdict)> = {
        let mut r = registry();
        r.end_look();
        listed
            .iter()
            .map(|&(pid, pgid)| (pid, r.judge(pid, pgid, own_pgid)))
            .collect()
    };
    let mut look = Look::default();
    let mut handled = 0;
    for (pid, verdict) in judged {
        let kill = match verdict {
            Verdict::Program => continue,
            Verdict::Undecided => {
                look.left += 1;
                continue;
            }
            Verdict::InProgramGroup => sweep,
            Verdict::Escaped => true,
        };
        if handled == MAX_PER_LOOK {
            look.left += 1;
            continue;
        }
        handled += 1;
        if kill {
            log::debug!("exec: adopted pid {pid} is killed ({verdict:?})");
            sys::kill_child(pid);
            look.killed += 1;
        }
        if sys::reap_if_ended(pid) {
            look.reaped += 1;
        } else {
            look.left += 1;
        }
    }
    look
}

/// The handle of the daemon's subreaper, kept by the exec state of the
/// first reactor. When it drops, the reactors have stopped: a last sweep
/// then kills every process the daemon adopted and reaps it, looking again
/// as killed processes' own children are re-parented to the daemon, until
/// nothing adopted is left or [`FINAL_SWEEP`] has passed.
#[derive(Debug)]
pub struct Subreaper {
    _private: (),
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        let deadline = Instant::now() + FINAL_SWEEP;
        let mut killed = 0;
        loop {
            let look = look(true);
            killed += look.killed;
            if look.left == 0 || Instant::now() >= deadline {
                if look.left > 0 {
                    log::warn!(
                        "exec: {} adopted process(es) still there at exit",
                        look.left
                    );
                }
                break;
            }
            // Exiting: there is no loop left to keep responsive, and
            // what was sent KILL needs a moment to die.
            std::thread::sleep(RESCAN);
        }
        if killed > 0 {
            log::info!("exec: killed {killed} adopted process(es) at exit");
        }
    }
}

/// The daemon's children and their process groups.
fn list_children(own_pid: i32) -> Vec<(i32, Option<i32>)> {
    // Whether the kernel has the children files is asked once.
    static CHILDREN_FILES: OnceLock<bool> = OnceLock::new();
    if *CHILDREN_FILES.get_or_init(|| Path::new("/proc/thread-self/children").exists()) {
        children_from_tasks()
            .into_iter()
            .map(|pid| (pid, sys::process_group_of(pid)))
            .collect()
    } else {
        children_from_proc(own_pid)
    }
}

/// Every thread's `children` file.
fn children_from_tasks() -> Vec<i32> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        // A thread that ended meanwhile has no file any more; its children
        // went to another thread, whose file may or may not have been read
        // yet. The next look finds them.
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            pids.extend(parse_children(&text));
        }
    }
    pids
}

/// Every process whose parent is the daemon, from `/proc/<pid>/stat`.
fn children_from_proc(own_pid: i32) -> Vec<(i32, Option<i32>)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((ppid, pgid)) = parse_stat(&stat)
            && ppid == own_pid
        {
            found.push((pid, Some(pgid)));
        }
    }
    found
}

/// The pids in a `children` file: decimal numbers separated by spaces.
pub fn parse_children(text: &str) -> impl Iterator<Item = i32> + '_ {
    text.split_ascii_whitespace().filter_map(|p| p.parse().ok())
}

/// The parent and the process group from a `/proc/<pid>/stat` line:
/// `pid (comm) state ppid pgrp ...`. The command name may hold spaces and
/// parentheses, so the fields are counted from its last `)`.
pub fn parse_stat(stat: &str) -> Option<(i32, i32)> {
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN_GROUP: i32 = 10;

    #[test]
    fn a_children_file_gives_its_pids() {
        assert_eq!(parse_children("").count(), 0);
        assert_eq!(parse_children("41 ").collect::<Vec<_>>(), [41]);
        assert_eq!(
            parse_children("41 97 1203 \n").collect::<Vec<_>>(),
            [41, 97, 1203]
        );
    }

    #[test]
    fn a_stat_line_gives_parent_and_group_even_with_odd_command_names() {
        let stat = "1234 (sleep) S 77 1234 77 0 -1 4194304 90 0 0 0";
        assert_eq!(parse_stat(stat), Some((77, 1234)));
        let odd = "1234 (a) b (c) ) S 77 1230 77 0 -1";
        assert_eq!(parse_stat(odd), Some((77, 1230)));
        assert_eq!(parse_stat("1234 (sleep"), None);
        assert_eq!(parse_stat("1234 (sleep) S x 1"), None);
    }

    fn registry_with(programs: &[i32]) -> Registry {
        let mut r = Registry::new();
        for &pid in programs {
            r.begin_spawn();
            r.end_spawn(Some(pid));
        }
        r
    }

    #[test]
    fn a_registered_program_is_never_judged_adopted() {
        let mut r = registry_with(&[41]);
        r.begin_look();
        assert_eq!(r.judge(41, Some(41), OWN_GROUP), Verdict::Program);
    }

    #[test]
    fn an_adopted_process_in_a_programs_group_is_left_alone() {
        let mut r = registry_with(&[41]);
        r.begin_look();
        assert_eq!(r.judge(50, Some(41), OWN_GROUP), Verdict::InProgramGroup);
    }

    #[test]
    fn an_adopted_process_in_any_other_group_escaped() {
        let mut r = registry_with(&[41]);
        r.begin_look();
        // It made a session of its own (setsid), or joined a stranger's group.
        assert_eq!(r.judge(50, Some(50), OWN_GROUP), Verdict::Escaped);
        assert_eq!(r.judge(51, Some(50), OWN_GROUP), Verdict::Escaped);
        // Once the program's group is done, its group is no shelter.
        r.release(41);
        assert_eq!(r.judge(52, Some(41), OWN_GROUP), Verdict::Escaped);
    }

    #[test]
    fn while_a_spawn_is_under_way_a_child_that_may_be_its_own_is_not_judged() {
        let mut r = registry_with(&[]);
        r.begin_spawn();
        r.begin_look();
        // Alone in its group, or still in the daemon's: maybe the spawn's.
        assert_eq!(r.judge(60, Some(60), OWN_GROUP), Verdict::Undecided);
        assert_eq!(r.judge(60, Some(OWN_GROUP), OWN_GROUP), Verdict::Undecided);
        // In a third group it cannot be the spawn's child.
        assert_eq!(r.judge(61, Some(58), OWN_GROUP), Verdict::Escaped);
        r.end_spawn(Some(60));
        assert_eq!(r.judge(60, Some(60), OWN_GROUP), Verdict::Program);
        assert_eq!(r.spawning, 0);
    }

    #[test]
    fn a_pid_released_during_a_look_is_not_judged_by_it() {
        let mut r = registry_with(&[41]);
        r.begin_look();
        // Listed as a child, then reaped by its session and released: the
        // pid may be someone else's by now.
        r.release(41);
        r.end_look();
        assert_eq!(r.judge(41, Some(41), OWN_GROUP), Verdict::Undecided);
        // The next look starts afresh.
        r.begin_look();
        assert_eq!(r.judge(41, Some(41), OWN_GROUP), Verdict::Escaped);
    }

    #[test]
    fn a_child_whose_group_cannot_be_read_is_not_killed() {
        let mut r = registry_with(&[]);
        r.begin_look();
        assert_eq!(r.judge(70, None, OWN_GROUP), Verdict::Undecided);
    }

    #[test]
    fn registrations_count_so_a_reused_pid_is_released_once_per_holder() {
        let mut r = registry_with(&[41, 41]);
        assert_eq!(r.programs(), 1);
        r.release(41);
        assert_eq!(r.programs(), 1);
        r.release(41);
        assert_eq!(r.programs(), 0);
        let before = r.changes;
        r.release(41);
        assert_eq!(r.programs(), 0);
        assert!(r.changes > before, "every release calls for a look");
    }
}
