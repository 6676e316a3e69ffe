//! Starting a program without copying the daemon: `clone(CLONE_VM |
//! CLONE_VFORK)`, what glibc's `posix_spawn` does, written out because
//! the child has more to do than `posix_spawn` offers (join a cgroup,
//! mark inherited descriptors close-on-exec).
//!
//! # Why not `fork`
//!
//! `fork` copies the parent's page tables, so its cost grows with the
//! daemon's memory, and the child then touches pages that must be copied
//! on write. std's `Command` uses `posix_spawn` (a `vfork`) when it can,
//! but any `pre_exec` step makes it fall back to `fork`. Measured on a
//! 2-vCPU VM (BENCHMARKS.md, "exec without fork"), the fork and the child's
//! way to `exec` were the largest part of starting `true` through the
//! daemon.
//!
//! # How a vfork-style spawn stays sound
//!
//! With `CLONE_VM` the child runs in the daemon's memory, on a stack the
//! parent allocated for it, and with `CLONE_VFORK` the calling thread
//! sleeps until the child has called `execve` (which gives it memory of
//! its own) or exited. That is cheap and dangerous in equal measure, so
//! the child follows the rules glibc's `posix_spawn` follows:
//!
//! - It allocates nothing and takes no lock: another thread of the daemon
//!   may hold the allocator's lock at that moment. Every string `execve`
//!   needs is built by the parent beforehand ([`Spawn::new`]).
//! - It runs no signal handler of the daemon's. The parent blocks every
//!   signal before the clone; the child sets every signal to `SIG_DFL`
//!   while they are blocked, and only then unblocks them.
//! - It reports failure through memory it shares with the parent: the
//!   step that failed and `errno`, written before `_exit(127)`. The
//!   parent, resumed, reads them, reaps the child and returns the error,
//!   so "no such program" is an error of the spawn, as with std.
//! - The parent's other threads go on running. They never see the child's
//!   stack or plan, which belong to the sleeping thread.
//!
//! The child's steps, in order: every signal to its default; its own
//! process group; the pipes onto 0, 1 and 2; the working directory;
//! every other inherited descriptor close-on-exec (`close_range`); the
//! program's cgroup; an empty signal mask; `execve`.

use std::ffi::{CString, OsStr, c_char, c_int, c_void};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::reactor::ChildProcess;

/// The child's stack. It calls a handful of system calls from one frame,
/// so a few KiB would do; 64 KiB leaves room for the dynamic linker
/// resolving a symbol on first use.
const CHILD_STACK: usize = 64 * 1024;

/// A program ready to start: every string the child needs, converted to
/// C strings before the clone, since the child may not allocate.
#[derive(Debug)]
pub struct Spawn {
    /// The file to execute.
    program: CString,
    /// The argument vector, `argv[0]` first.
    argv: Vec<CString>,
    /// The whole environment, as `NAME=value`.
    env: Vec<CString>,
    /// The working directory.
    workdir: CString,
    /// Stdin is a pipe from the daemon; otherwise `/dev/null`.
    stdin: bool,
}

impl Spawn {
    /// Prepares a spawn of `program` with `argv` (`argv[0]` as given)
    /// and exactly the environment `env`, in `workdir`. Fails with
    /// `InvalidInput` if a string holds a NUL byte, which `execve` could
    /// not pass on.
    pub fn new(
        program: &Path,
        argv: &[String],
        env: &[(&str, &OsStr)],
        workdir: &Path,
        stdin: bool,
    ) -> io::Result<Spawn> {
        let env = env
            .iter()
            .map(|(name, value)| {
                let mut pair = Vec::with_capacity(name.len() + 1 + value.len());
                pair.extend_from_slice(name.as_bytes());
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                c_string(pair)
            })
            .collect::<io::Result<_>>()?;
        Ok(Spawn {
            program: c_string(program.as_os_str().as_bytes().to_vec())?,
            argv: argv
                .iter()
                .map(|a| c_string(a.clone().into_bytes()))
                .collect::<io::Result<_>>()?,
            env,
            workdir: c_string(workdir.as_os_str().as_bytes().to_vec())?,
            stdin,
        })
    }

    /// Starts the program; returns once the child's `execve` has passed
    /// the point of no return (its memory replaced; the kernel closes its
    /// close-on-exec descriptors a moment later). Given a cgroup's
    /// `cgroup.procs`, the child moves itself there first; a failure to
    /// move leaves it where it is, as a weaker guarantee is better than
    /// no service (sys.rs explains the cgroup).
    ///
    /// An error is the first step that failed in the child (or in the
    /// parent's preparation): `NotFound` or `PermissionDenied` from
    /// `execve` come back as they are, for the client's refusal.
    pub fn spawn(&self, cgroup_procs: Option<BorrowedFd<'_>>) -> io::Result<ChildProcess> {
        // The daemon's ends stay here; the child's are closed when this
        // function returns, after the child has its copies at 0, 1 and 2.
        let (stdin_child, stdin_ours) = if self.stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (File::open("/dev/null")?.into(), None)
        };
        let (stdout_ours, stdout_child) = pipe()?;
        let (stderr_ours, stderr_child) = pipe()?;

        let argv = null_terminated(&self.argv);
        let env = null_terminated(&self.env);
        let plan = ChildPlan {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: env.as_ptr(),
            workdir: self.workdir.as_ptr(),
            stdio: [
                stdin_child.as_raw_fd(),
                stdout_child.as_raw_fd(),
                stderr_child.as_raw_fd(),
            ],
            cgroup_procs: cgroup_procs.map_or(-1, |fd| fd.as_raw_fd()),
            last_signal: libc::SIGRTMAX(),
            failed_step: AtomicI32::new(0),
            failed_errno: AtomicI32::new(0),
        };
        let mut stack: Vec<MaybeUninit<u128>> = Vec::with_capacity(CHILD_STACK / 16);
        // The stack grows down: the child starts at the top, which is
        // 16-byte aligned as the ABI asks, since the elements are.
        let stack_top = stack
            .as_mut_ptr()
            .wrapping_add(stack.capacity())
            .cast::<c_void>();

        let old_mask = block_all_signals()?;
        // SAFETY: `child_main` follows the rules of a CLONE_VM child (see
        // the module docs): it reads `plan` and the strings it points to,
        // which live on this thread's stack and heap and are not touched
        // until the clone returns, because CLONE_VFORK suspends this
        // thread until the child has exec'd or exited; it allocates
        // nothing and takes no lock. `stack_top` is the top of an
        // allocation of CHILD_STACK bytes that outlives the clone for the
        // same reason. Every signal is blocked, so no handler of ours runs
        // on the child's stack.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack_top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_ref(&plan).cast_mut().cast::<c_void>(),
            )
        };
        let clone_error = io::Error::last_os_error();
        set_signal_mask(&old_mask);
        drop(stack);
        if pid < 0 {
            return Err(io::Error::new(
                clone_error.kind(),
                format!("clone: {clone_error}"),
            ));
        }
        let step = plan.failed_step.load(Ordering::Relaxed);
        if step != 0 {
            // The child exited without exec: reap it, and report why.
            let mut child = ChildPid::new(pid as u32);
            let _ = child.wait();
            let errno = io::Error::from_raw_os_error(plan.failed_errno.load(Ordering::Relaxed));
            return Err(match Step::from_code(step) {
                Step::Exec => errno,
                other => io::Error::new(errno.kind(), format!("{}: {errno}", other.name())),
            });
        }
        Ok(ChildProcess {
            pid: pid as u32,
            stdin: stdin_ours,
            stdout: stdout_ours,
            stderr: stderr_ours,
        })
    }
}

/// A child of the daemon that has not been reaped yet. Its pid cannot
/// name another process until it is: only `waitpid` retires it.
#[derive(Debug)]
pub struct ChildPid {
    pid: u32,
    /// The exit status, once collected.
    status: Option<ExitStatus>,
}

impl ChildPid {
    /// Takes charge of `pid`, which must be a child of this process that
    /// nothing else waits for.
    pub fn new(pid: u32) -> ChildPid {
        ChildPid { pid, status: None }
    }

    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The exit status if the child has ended, without blocking
    /// (`waitpid(pid, WNOHANG)`); the same status again once collected.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_with(libc::WNOHANG)
    }

    /// Waits for the child to end. Only where waiting is allowed: a
    /// helper thread, or a child known to be ending.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.wait_with(0)? {
                return Ok(status);
            }
        }
    }

    fn wait_with(&mut self, flags: c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let pid = libc::pid_t::try_from(self.pid).map_err(io::Error::other)?;
        let mut status = 0;
        loop {
            // SAFETY: waitpid(2) writes the status into our local integer.
            let r = unsafe { libc::waitpid(pid, &mut status, flags) };
            if r == 0 {
                return Ok(None);
            }
            if r > 0 {
                let status = ExitStatus::from_raw(status);
                self.status = Some(status);
                return Ok(Some(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

// ----- Parent and child -------------------------------------------------------

/// What the child reads, and where it writes why it failed. Raw pointers,
/// because the child may not touch anything that could allocate or drop.
struct ChildPlan {
    program: *const c_char,
    /// NULL-terminated.
    argv: *const *const c_char,
    /// NULL-terminated.
    envp: *const *const c_char,
    workdir: *const c_char,
    /// What goes onto descriptors 0, 1 and 2.
    stdio: [RawFd; 3],
    /// The program's `cgroup.procs`, or -1.
    cgroup_procs: RawFd,
    /// `SIGRTMAX`, read by the parent (glibc computes it).
    last_signal: c_int,
    /// The child's failure: [`Step`] as a code (0 = none) and `errno`.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
}

/// The steps of the child that can fail the spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ProcessGroup = 1,
    Stdio = 2,
    Workdir = 3,
    Exec = 4,
}

impl Step {
    fn from_code(code: i32) -> Step {
        match code {
            1 => Step::ProcessGroup,
            2 => Step::Stdio,
            3 => Step::Workdir,
            _ => Step::Exec,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Step::ProcessGroup => "setpgid",
            Step::Stdio => "dup2",
            Step::Workdir => "chdir",
            Step::Exec => "execve",
        }
    }
}

/// The child, from the clone to `execve`. Only system calls: no
/// allocation, no lock, no panic (a panic could not unwind out of an
/// `extern "C"` function anyway; it would abort the child).
extern "C" fn child_main(plan: *mut c_void) -> c_int {
    // SAFETY: `plan` is the `ChildPlan` the parent passed to clone, alive
    // while the parent sleeps (see `Spawn::spawn`).
    let plan = unsafe { &*plan.cast_const().cast::<ChildPlan>() };

    // Every signal to its default, while all are still blocked: a handler
    // of the daemon's must never run here (it would run on the daemon's
    // memory), and a signal the daemon ignores (it may have been started
    // with `nohup`) must not stay ignored in the program. glibc refuses to
    // change the two real-time signals it keeps for itself; they are
    // blocked until the exec, which resets them anyway.
    // SAFETY: a zeroed sigaction is a valid value; SIG_DFL is 0.
    let default: libc::sigaction = unsafe { std::mem::zeroed() };
    for signal in 1..=plan.last_signal {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: sigaction(2) reads `default`; an error leaves that
            // signal alone.
            unsafe {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }

    // Its own process group, so the group can be signalled as a whole and
    // a Ctrl-C at the daemon's terminal does not reach it.
    // SAFETY: setpgid(2) takes integers.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return fail(plan, Step::ProcessGroup);
    }

    for (target, &fd) in plan.stdio.iter().enumerate() {
        let target = target as c_int;
        // The daemon's own 0, 1 and 2 are open (Rust's runtime opens
        // /dev/null on any that are closed), so a pipe end is never one
        // of them and dup2 never overwrites a descriptor still needed.
        // SAFETY: dup2(2) takes integers; the new descriptor is not
        // close-on-exec.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return fail(plan, Step::Stdio);
        }
    }

    // SAFETY: chdir(2) reads a NUL-terminated string the parent owns.
    if unsafe { libc::chdir(plan.workdir) } != 0 {
        return fail(plan, Step::Workdir);
    }

    // Descriptors the daemon was *given* without close-on-exec (its own
    // are all opened close-on-exec) would be open in the program: all
    // above 2 are marked close-on-exec in one call (Linux 5.11; on an
    // older kernel they stay as they are).
    // SAFETY: close_range(2) only sets flags on descriptors.
    unsafe {
        libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as c_int);
    }

    // Into the program's cgroup, before it runs an instruction: writing
    // `0` to `cgroup.procs` moves the writer. A failure leaves the child
    // guarded by its process group only (see sys.rs).
    if plan.cgroup_procs >= 0 {
        // SAFETY: write(2) reads one byte of a static.
        unsafe {
            libc::write(plan.cgroup_procs, b"0".as_ptr().cast(), 1);
        }
    }

    // The program starts with no signal blocked, whatever the daemon's
    // thread had blocked (as with std's Command).
    // SAFETY: a zeroed sigset_t is the empty set.
    let empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    set_signal_mask(&empty);

    // SAFETY: the strings and the NULL-terminated arrays were built by
    // the parent and stay alive until the parent resumes.
    unsafe {
        libc::execve(plan.program, plan.argv, plan.envp);
    }
    fail(plan, Step::Exec)
}

/// In the child: records the failed step and `errno` for the parent, and
/// exits without running anything of the daemon's (no atexit handlers,
/// no stdio flush).
fn fail(plan: &ChildPlan, step: Step) -> c_int {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    plan.failed_errno.store(errno, Ordering::Relaxed);
    plan.failed_step.store(step as i32, Ordering::Relaxed);
    // SAFETY: _exit(2) ends the child at once.
    unsafe { libc::_exit(127) }
}

/// Blocks every signal in the calling thread, glibc's own two included
/// (which `pthread_sigmask` would leave out), and returns the old mask.
fn block_all_signals() -> io::Result<libc::sigset_t> {
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: a sigset_t is plain bits; all ones is the full set.
    let all = unsafe {
        std::ptr::write_bytes(all.as_mut_ptr(), 0xff, 1);
        all.assume_init()
    };
    // SAFETY: a zeroed sigset_t is a valid (empty) set, overwritten below.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: rt_sigprocmask(2) reads `all` and writes `old`, both ours;
    // the kernel's set is 8 bytes, the start of libc's larger one.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all,
            &mut old,
            KERNEL_SIGSET,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// The size of the kernel's signal set: 64 signals.
const KERNEL_SIGSET: usize = 8;

fn set_signal_mask(mask: &libc::sigset_t) {
    // SAFETY: rt_sigprocmask(2) reads the set; a valid set cannot fail.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            mask,
            std::ptr::null_mut::<libc::sigset_t>(),
            KERNEL_SIGSET,
        );
    }
}

/// A pipe, both ends close-on-exec: `(read, write)`.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2(2) writes two descriptors into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just returned by the kernel and are owned by no
    // one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The array of pointers `execve` takes, ending in NULL. It borrows
/// `strings`, which must outlive its use.
fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the program's arguments, environment or directory",
        )
    })
}

// Real processes, checked through /proc while they wait on their stdin.
#[cfg(test)]
#[path = "spawn_tests.rs"]
mod tests;
