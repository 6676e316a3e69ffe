//! The spawn with real processes: each test starts one and checks, from
//! its output or through /proc while it waits on its stdin, one promise
//! of sys/spawn.rs.

use super::*;
use std::io::Read;
use std::path::PathBuf;

use crate::services::exec::sys::{Cgroup, CgroupParent, SPARE_CGROUPS};

/// Held by the tests that make cgroups: they share this process's parent
/// cgroup, and each names its children from 1.
static CGROUP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A parent cgroup for one test, which holds [`CGROUP_TESTS`] while it
/// runs; `None` (the test is skipped, and says so) where this process may
/// not create cgroups.
fn cgroup_parent() -> Option<(std::sync::MutexGuard<'static, ()>, CgroupParent)> {
    let one_at_a_time = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    match CgroupParent::create() {
        Ok(parent) => Some((one_at_a_time, parent)),
        Err(_) => {
            eprintln!("skipped: this process may not create cgroups");
            None
        }
    }
}

const ENV_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A spawn of `argv` (the program is `argv[0]` looked up on the usual
/// path) in `workdir`, with the three variables the daemon passes.
fn spawn_in(workdir: &Path, argv: &[&str], stdin: bool) -> Spawn {
    let program = which(argv[0]);
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    Spawn::new(
        &program,
        &argv,
        &[
            ("PATH", OsStr::new(ENV_PATH)),
            ("HOME", workdir.as_os_str()),
            ("LANG", OsStr::new("C.UTF-8")),
        ],
        workdir,
        stdin,
    )
    .unwrap()
}

fn which(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    ENV_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found"))
}

/// Everything the child writes to stdout, and its exit status.
fn output(child: ChildProcess) -> (String, ExitStatus) {
    drop(child.stdin);
    let mut out = String::new();
    File::from(child.stdout).read_to_string(&mut out).unwrap();
    let status = ChildPid::new(child.pid).wait().unwrap();
    (out, status)
}

/// A `cat` waiting for its stdin, to be looked at through /proc while
/// it waits; `finish` ends it.
///
/// The spawn returns as soon as the child's `execve` has given it memory
/// of its own, which is before the kernel has closed its close-on-exec
/// descriptors; so before it is looked at, one line goes through it and
/// back: a `cat` that echoes has finished its `execve`.
fn waiting_cat(cgroup: Option<BorrowedFd<'_>>) -> ChildProcess {
    let child = spawn_in(Path::new("/"), &["cat"], true)
        .spawn(cgroup)
        .unwrap();
    let stdin = child.stdin.as_ref().unwrap().try_clone().unwrap();
    std::io::Write::write_all(&mut File::from(stdin), b"ping\n").unwrap();
    let mut echo = [0; 5];
    let stdout = child.stdout.try_clone().unwrap();
    File::from(stdout).read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping\n");
    child
}

fn finish(child: ChildProcess) {
    let (_, status) = output(child);
    assert!(status.success(), "{status:?}");
}

/// A hexadecimal signal mask line (`SigIgn:`, `SigBlk:`) of a process.
fn status_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("{field} missing"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn bit(signal: c_int) -> u64 {
    1 << (signal - 1)
}

#[test]
fn argv0_and_the_arguments_are_passed_as_given() {
    let script = "tr '\\0' '\\n' < /proc/$$/cmdline";
    let spawn = spawn_in(Path::new("/"), &["/bin/sh", "-c", script, "x y"], false);
    // argv[0] differs from the file executed.
    let spawn = Spawn {
        argv: vec![
            CString::new("renamed").unwrap(),
            CString::new("-c").unwrap(),
            CString::new(script).unwrap(),
            CString::new("x y").unwrap(),
        ],
        ..spawn
    };
    let (out, status) = output(spawn.spawn(None).unwrap());
    assert!(status.success());
    assert_eq!(out, format!("renamed\n-c\n{script}\nx y\n"));
}

#[test]
fn the_environment_is_exactly_the_three_variables() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = output(spawn_in(dir.path(), &["env"], false).spawn(None).unwrap());
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    let home = format!("HOME={}", dir.path().display());
    let path = format!("PATH={ENV_PATH}");
    assert_eq!(lines, [home.as_str(), "LANG=C.UTF-8", path.as_str()]);
}

#[test]
fn the_program_runs_in_the_workdir() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = output(spawn_in(dir.path(), &["pwd"], false).spawn(None).unwrap());
    let expected = dir.path().canonicalize().unwrap();
    assert_eq!(Path::new(out.trim_end()).canonicalize().unwrap(), expected);
}

#[test]
fn stdin_is_a_pipe_when_asked_and_dev_null_otherwise() {
    let child = spawn_in(Path::new("/"), &["cat"], true)
        .spawn(None)
        .unwrap();
    let mut stdin = File::from(child.stdin.unwrap());
    std::io::Write::write_all(&mut stdin, b"through the pipe").unwrap();
    drop(stdin);
    let (out, _) = output(ChildProcess {
        stdin: None,
        ..child
    });
    assert_eq!(out, "through the pipe");

    let child = spawn_in(Path::new("/"), &["cat"], false)
        .spawn(None)
        .unwrap();
    assert!(child.stdin.is_none());
    let (out, status) = output(child);
    assert!(status.success());
    assert_eq!(out, "");
}

#[test]
fn stderr_has_a_pipe_of_its_own() {
    let child = spawn_in(
        Path::new("/"),
        &["sh", "-c", "echo out; echo err >&2"],
        false,
    )
    .spawn(None)
    .unwrap();
    let mut err = String::new();
    File::from(child.stderr.try_clone().unwrap())
        .read_to_string(&mut err)
        .unwrap();
    let (out, _) = output(child);
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
}

#[test]
fn the_program_leads_a_process_group_of_its_own() {
    let child = waiting_cat(None);
    assert_eq!(
        super::super::process_group_of(child.pid as i32),
        Some(child.pid as i32)
    );
    finish(child);
}

#[test]
fn a_signal_the_daemon_ignores_is_default_in_the_program() {
    // SIGWINCH: ignored by default anyway, so ignoring it here for a
    // moment changes nothing for the other tests of this process.
    // SAFETY: sets a disposition; no handler is involved.
    let before = unsafe { libc::signal(libc::SIGWINCH, libc::SIG_IGN) };
    let child = waiting_cat(None);
    // SAFETY: as above, putting back what was there.
    unsafe { libc::signal(libc::SIGWINCH, before) };
    assert_eq!(status_mask(child.pid, "SigIgn:") & bit(libc::SIGWINCH), 0);
    finish(child);
}

#[test]
fn a_signal_blocked_in_the_spawning_thread_is_not_blocked_in_the_program() {
    std::thread::spawn(|| {
        // SAFETY: a zeroed sigset_t is empty; the mask is this
        // thread's own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let child = waiting_cat(None);
        assert_eq!(status_mask(child.pid, "SigBlk:"), 0);
        finish(child);
    })
    .join()
    .unwrap();
}

#[test]
fn an_inherited_descriptor_is_not_open_in_the_program() {
    let (r, w) = pipe().unwrap();
    // SAFETY: fcntl(2) clears a flag on a descriptor we own, as if the
    // daemon had been given it without close-on-exec.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFD, 0) };
    let child = waiting_cat(None);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!fds.contains(&r.as_raw_fd().to_string()), "{fds:?}");
    let mut sorted = fds.clone();
    sorted.sort();
    assert_eq!(sorted, ["0", "1", "2"]);
    finish(child);
    drop((r, w));
}

#[test]
fn a_missing_program_is_not_found() {
    let spawn = spawn_in(Path::new("/"), &["/no/such/program"], false);
    let e = spawn.spawn(None).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
}

#[test]
fn a_file_without_execute_permission_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tool");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let spawn = spawn_in(dir.path(), &[script.to_str().unwrap()], false);
    let e = spawn.spawn(None).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
}

#[test]
fn a_missing_workdir_fails_the_spawn_and_says_where() {
    let spawn = spawn_in(Path::new("/no/such/dir"), &["true"], false);
    let e = spawn.spawn(None).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().starts_with("chdir: "), "{e}");
}

#[test]
fn a_nul_byte_is_refused_before_anything_starts() {
    let e = Spawn::new(
        Path::new("/bin/true"),
        &["true".to_string(), "a\0b".to_string()],
        &[],
        Path::new("/"),
        false,
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn the_program_joins_its_cgroup_before_it_runs() {
    let Some((_one_at_a_time, mut parent)) = cgroup_parent() else {
        return;
    };
    let cgroup = parent.child().unwrap();
    let child = waiting_cat(Some(cgroup.procs_fd()));
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid)).unwrap();
    let line = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let name = cgroup.dir.file_name().unwrap().to_str().unwrap();
    assert!(line.ends_with(&format!("/{name}")), "{line}");
    assert!(cgroup.is_populated());
    finish(child);
}

#[test]
fn an_emptied_cgroup_goes_to_the_next_program() {
    let Some((_one_at_a_time, mut parent)) = cgroup_parent() else {
        return;
    };
    let cgroup = parent.child().unwrap();
    let first = cgroup.dir.clone();
    let child = waiting_cat(Some(cgroup.procs_fd()));
    finish(child);
    assert!(!cgroup.is_populated());
    parent.recycle(cgroup);
    let again = parent.child().unwrap();
    assert_eq!(again.dir, first);
    let child = waiting_cat(Some(again.procs_fd()));
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid)).unwrap();
    assert!(
        own.trim_end()
            .ends_with(first.to_str().unwrap().rsplit('/').next().unwrap())
    );
    finish(child);
}

#[test]
fn spares_are_kept_up_to_the_limit_and_the_rest_removed() {
    let Some((_one_at_a_time, mut parent)) = cgroup_parent() else {
        return;
    };
    let cgroups: Vec<Cgroup> = (0..SPARE_CGROUPS + 1)
        .map(|_| parent.child().unwrap())
        .collect();
    let last = cgroups.last().unwrap().dir.clone();
    for cgroup in cgroups {
        parent.recycle(cgroup);
    }
    assert_eq!(parent.spare.len(), SPARE_CGROUPS);
    assert!(!last.exists(), "the one too many is removed");
}
