//! Programs whose connection is gone: stopped, waited for, reaped.
//!
//! # Why the reaper outlives sessions
//!
//! A session is dropped right after its connection closes, but the program
//! it started does not die the instant it gets TERM: it may clean up for a
//! while, or ignore TERM altogether. Someone must still send KILL when the
//! grace period ends, and collect the exit status, or the program would
//! linger as a zombie (a dead process whose status nobody collected) for
//! as long as the daemon runs. That someone is the [`Reaper`], kept in the
//! service's shared state and driven by the reactor once per loop turn
//! (`Shared::poll`). The reactor also waits for it at shutdown
//! (`Shared::is_busy`), so the daemon exits only after every program it
//! started is gone.
//!
//! ```text
//!   session closes ──> TERM to the group ──> Dying { kill_at }
//!                                              │
//!            leader reaped and group empty <───┤ every turn: try_wait()
//!                       │                      │
//!                       │           kill_at ───┴──> KILL to the group ──> reaped
//!                       v                                                   │
//!      KILL through the cgroup until it is empty (what left the group) <────┘
//!                       │
//!                       v
//!          cgroup empty: back for reuse (done)
//! ```
//!
//! Without a cgroup, what left the group is the subreaper's to find
//! (subreaper.rs): a dying program keeps its registration as the daemon's
//! own child until it is done, so that an adopted process still in its
//! group is left to it, and the reaper tells the subreaper when the leader
//! is reaped, the moment what it left behind is adopted.
//!
//! Polling `try_wait` every few milliseconds is the simple way; a
//! production daemon would keep each dying program's pidfd registered in
//! the poll and learn of its end as an event. Only dying programs are
//! polled, so an idle daemon never wakes up for the reaper.

use std::time::{Duration, Instant};

use super::subreaper::Registration;
use super::sys::{Cgroup, ChildPid, group_exists, signal_group};

/// How often dying programs are checked.
const REAP_POLL: Duration = Duration::from_millis(10);

/// A program's process group on its way out: TERM has been sent.
#[derive(Debug)]
pub struct Dying {
    /// The group's id (the leader's pid).
    pgid: i32,
    /// The leader until reaped; `None` when it was reaped already and only
    /// other members of its group were left.
    leader: Option<ChildPid>,
    /// The program's cgroup, if it has one: what left the group is still
    /// in it, and gets KILL with the group (or as soon as the group is
    /// gone). Handed back for reuse once empty (dropped before that, it
    /// is removed).
    /// (Boxed: it is rarely there, and `Dying` travels in `Result`s.)
    cgroup: Option<Box<Cgroup>>,
    /// The program's place in the registry of spawned pids, dropped with
    /// this once the group is done: until then an adopted process in the
    /// group is left to it (see subreaper.rs).
    registration: Option<Registration>,
    /// When the group gets KILL if anything is left in it.
    kill_at: Instant,
    /// KILL has been sent.
    killed: bool,
}

impl Dying {
    pub fn new(
        pgid: i32,
        leader: Option<ChildPid>,
        cgroup: Option<Cgroup>,
        registration: Option<Registration>,
        kill_at: Instant,
    ) -> Dying {
        Dying {
            pgid,
            leader,
            cgroup: cgroup.map(Box::new),
            registration,
            kill_at,
            killed: false,
        }
    }

    /// Moves along; returns true when nothing is left to do.
    fn step(&mut self, now: Instant) -> bool {
        if let Some(leader) = self.leader.as_mut() {
            match leader.try_wait() {
                Ok(None) => {}
                Ok(Some(_)) => self.leader = None,
                Err(e) => {
                    log::warn!("exec: waitpid({}): {e}", self.pgid);
                    self.leader = None;
                }
            }
            // Just reaped: what it left running has just been adopted.
            if self.leader.is_none()
                && let Some(registration) = &self.registration
            {
                registration.leader_ended();
            }
        }
        if !self.killed && self.kill_at <= now {
            // An unreaped leader keeps the group's id reserved; otherwise
            // only a live member does (see `Program::signal_group`).
            if self.leader.is_some() || group_exists(self.pgid) {
                log::info!(
                    "exec: process group {} outlived its grace period; sending KILL",
                    self.pgid
                );
                signal_group(self.pgid, libc::SIGKILL);
            }
            self.killed = true;
        }
        // Done once the leader is reaped and the rest of its group has
        // ended or been sent KILL (which cannot be ignored), and nothing is
        // left in its cgroup. What left the group (setsid) never got TERM;
        // once the group is done it gets KILL through the cgroup, on every
        // turn until the cgroup is empty. Without a cgroup, it is beyond
        // reach (docs/security.md).
        let group_done = self.leader.is_none() && (self.killed || !group_exists(self.pgid));
        match &self.cgroup {
            Some(cgroup) if group_done && cgroup.is_populated() => {
                cgroup.kill();
                false
            }
            // Empty: done, and the cgroup goes back for reuse.
            Some(_) if group_done => true,
            _ => group_done,
        }
    }
}

/// Every dying program of the daemon.
#[derive(Debug, Default)]
pub struct Reaper {
    dying: Vec<Dying>,
    /// The cgroups of programs done with, found empty: for the service to
    /// reuse ([`Reaper::take_emptied`]).
    emptied: Vec<Cgroup>,
}

impl Reaper {
    /// Takes charge of a program whose group has been sent TERM.
    pub fn adopt(&mut self, dying: Dying) {
        self.dying.push(dying);
    }

    /// Moves every dying program along. Returns how many are done (so the
    /// running count can drop) and when the reaper next needs a turn.
    pub fn poll(&mut self, now: Instant) -> (usize, Option<Instant>) {
        let before = self.dying.len();
        let emptied = &mut self.emptied;
        self.dying.retain_mut(|d| {
            if !d.step(now) {
                return true;
            }
            if let Some(cgroup) = d.cgroup.take() {
                emptied.push(*cgroup);
            }
            false
        });
        let done = before - self.dying.len();
        let next = self
            .dying
            .iter()
            .map(|d| {
                if d.killed {
                    now + REAP_POLL
                } else {
                    d.kill_at.min(now + REAP_POLL)
                }
            })
            .min();
        (done, next)
    }

    /// The cgroups of the programs done with since the last call, each
    /// found empty.
    pub fn take_emptied(&mut self) -> Vec<Cgroup> {
        std::mem::take(&mut self.emptied)
    }

    /// Programs not yet reaped.
    pub fn len(&self) -> usize {
        self.dying.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dying.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn spawn_group(script: &str) -> ChildPid {
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        take_charge(child)
    }

    /// The reaper waits for the child from now on, as it does for a
    /// program's leader.
    fn take_charge(child: std::process::Child) -> ChildPid {
        ChildPid::new(child.id())
    }

    /// Polls the reaper until it is empty, at most 10 s of real time.
    fn poll_until_empty(reaper: &mut Reaper) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reaper.is_empty() {
            assert!(Instant::now() < deadline, "reaper did not finish");
            let (_, next) = reaper.poll(Instant::now());
            if let Some(at) = next {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
        }
        Instant::now()
    }

    #[test]
    fn a_program_that_obeys_term_is_reaped_without_kill() {
        let child = spawn_group("exec sleep 30");
        let pgid = child.id() as i32;
        signal_group(pgid, libc::SIGTERM);
        let mut reaper = Reaper::default();
        let start = Instant::now();
        reaper.adopt(Dying::new(
            pgid,
            Some(child),
            None,
            None,
            start + Duration::from_secs(30),
        ));
        let end = poll_until_empty(&mut reaper);
        assert!(end - start < Duration::from_secs(10));
        assert!(!group_exists(pgid));
    }

    #[test]
    fn a_program_that_ignores_term_gets_kill_after_the_grace() {
        use std::io::BufRead;
        // The shell ignores TERM, and so does the sleep it starts (ignored
        // signals stay ignored across exec). It says when the trap is set.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; sleep 30; :"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let child = take_charge(child);
        let pgid = child.id() as i32;
        signal_group(pgid, libc::SIGTERM);
        let mut reaper = Reaper::default();
        let start = Instant::now();
        reaper.adopt(Dying::new(
            pgid,
            Some(child),
            None,
            None,
            start + Duration::from_millis(300),
        ));
        let (done, _) = reaper.poll(Instant::now());
        assert_eq!(done, 0, "TERM was ignored, so nothing is done yet");
        poll_until_empty(&mut reaper);
        assert!(Instant::now() - start >= Duration::from_millis(300));
    }

    #[test]
    fn leftover_members_are_waited_for_without_a_leader() {
        let mut child = spawn_group("sleep 30 & exit 0");
        let pgid = child.id() as i32;
        child.wait().unwrap();
        assert!(
            group_exists(pgid),
            "the background sleep is still in the group"
        );
        signal_group(pgid, libc::SIGTERM);
        let mut reaper = Reaper::default();
        reaper.adopt(Dying::new(
            pgid,
            None,
            None,
            None,
            Instant::now() + Duration::from_secs(5),
        ));
        poll_until_empty(&mut reaper);
        assert_eq!(reaper.len(), 0);
    }
}
