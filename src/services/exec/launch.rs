//! Starting a program: what `argv` really executes (the allowlist, the
//! shell, the lookup in [`CHILD_PATH`]), and the spawn that starts it
//! with a clean environment in its own process group and cgroup.
//!
//! The spawn itself runs on the helper pool (running.rs): these are the
//! pure decisions before it and the shape of the command it runs, so they
//! are unit-tested without starting anything.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::program::Program;
use super::request::{Command, Refusal};
use super::sys::Spawn;

/// The `PATH` a program gets, and the directories a bare program name is
/// looked up in.
pub const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The shell for `{"type":"run","shell":...}` requests.
const SHELL: &str = "/bin/sh";

/// Decides what `argv` really executes, checking the allowlist: returns the
/// file to execute and the argument vector (whose `argv[0]` stays as sent).
///
/// - A shell request runs `/bin/sh -c LINE` if `allow_shell` is set; the
///   allowlist does not apply to it.
/// - Otherwise `argv[0]` must appear in `allow` exactly as sent (or
///   `allow` holds `"*"`). A name with a `/` is a path, relative ones taken
///   from `workdir`; a bare name is looked up in [`CHILD_PATH`].
pub fn resolve(
    command: &Command,
    allow: &[String],
    allow_shell: bool,
    workdir: &Path,
) -> Result<(PathBuf, Vec<String>), Refusal> {
    let argv = match command {
        Command::Shell(line) => {
            if !allow_shell {
                return Err(Refusal::ShellDisabled);
            }
            let argv = vec!["sh".to_string(), "-c".to_string(), line.clone()];
            return Ok((PathBuf::from(SHELL), argv));
        }
        Command::Argv(argv) => argv,
    };
    let name = &argv[0];
    if !allow.iter().any(|a| a == "*" || a == name) {
        return Err(Refusal::NotAllowed(name.clone()));
    }
    let found = if name.contains('/') {
        Some(workdir.join(name)).filter(|p| is_executable(p))
    } else {
        CHILD_PATH
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| is_executable(p))
    };
    match found {
        Some(path) => Ok((path, argv.clone())),
        None => Err(Refusal::NotFound(name.clone())),
    }
}

/// A regular file (after symlinks) with an execute bit set.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Everything needed to start a program, decided before it starts.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The file to execute (resolved by [`resolve`]).
    pub program: PathBuf,
    /// The arguments, `argv[0]` as the client sent it.
    pub argv: Vec<String>,
    /// Whether stdin is a pipe from the client (else `/dev/null`).
    pub stdin: bool,
    /// Working directory and `HOME`.
    pub workdir: PathBuf,
    /// `None` = no limit (a timeout too large for the clock).
    pub timeout: Option<Duration>,
    /// From TERM to KILL.
    pub kill_grace: Duration,
}

impl Program {
    /// The spawn that starts the program: argv with `argv[0]` as sent, a
    /// clean environment (`PATH`, `HOME`, `LANG` and nothing else), the
    /// workdir, and stdin piped or `/dev/null`. What the child does
    /// before `execve` (its own process group, signals back to their
    /// defaults, inherited descriptors closed, the cgroup joined) is
    /// sys/spawn.rs's.
    ///
    /// The spawn runs on the helper pool, not here (see the session):
    /// the child shares the daemon's memory until it calls `execve`, and
    /// the thread that spawns it sleeps until then. That is short (no page
    /// tables are copied, as a `fork` would), but it includes opening
    /// the program's file, which on a slow filesystem every client would
    /// wait out if the loop paid for it.
    ///
    /// Fails (`InvalidInput`) if an argument holds a NUL byte.
    pub fn command(launch: &Launch) -> io::Result<Spawn> {
        let home = launch.workdir.as_os_str();
        Spawn::new(
            &launch.program,
            &launch.argv,
            &[
                ("PATH", OsStr::new(CHILD_PATH)),
                ("HOME", home),
                ("LANG", OsStr::new("C.UTF-8")),
            ],
            &launch.workdir,
            launch.stdin,
        )
    }

    /// What the client is told when [`Program::command`] failed to spawn.
    pub fn refusal(launch: &Launch, e: &io::Error) -> Refusal {
        if e.kind() == io::ErrorKind::NotFound {
            Refusal::NotFound(launch.argv[0].clone())
        } else {
            Program::spawn_failed(launch, e.to_string())
        }
    }

    /// The refusal for a program of `launch` that could not be started, or
    /// not watched once started, for `error`.
    pub fn spawn_failed(launch: &Launch, error: String) -> Refusal {
        Refusal::SpawnFailed {
            program: launch.argv[0].clone(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys;
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn argv(args: &[&str]) -> Command {
        Command::Argv(args.iter().map(|s| s.to_string()).collect())
    }

    fn any() -> Vec<String> {
        vec!["*".to_string()]
    }

    #[test]
    fn a_bare_name_is_found_on_the_fixed_path() {
        let (path, args) =
            resolve(&argv(&["sh", "-c", "true"]), &any(), false, Path::new("/")).unwrap();
        assert!(path.is_absolute() && path.ends_with("sh"), "{path:?}");
        assert_eq!(args, ["sh", "-c", "true"]);
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let e = resolve(
            &argv(&["no-such-program-here"]),
            &any(),
            false,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(matches!(e, Refusal::NotFound(_)));
        assert_eq!(e.code(), "not_found");
    }

    #[test]
    fn the_allowlist_matches_argv0_exactly_as_sent() {
        let allow = vec!["sh".to_string()];
        assert!(resolve(&argv(&["sh"]), &allow, false, Path::new("/")).is_ok());
        for name in ["/bin/sh", "./sh", "bash", "sh "] {
            let e = resolve(&argv(&[name]), &allow, false, Path::new("/")).unwrap_err();
            assert!(matches!(e, Refusal::NotAllowed(_)), "{name}: {e}");
        }
        let e = resolve(&argv(&["sh"]), &[], false, Path::new("/")).unwrap_err();
        assert!(matches!(e, Refusal::NotAllowed(_)));
    }

    #[test]
    fn paths_are_absolute_or_taken_from_the_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("tool");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            resolve(&argv(&["./tool"]), &any(), false, dir.path()),
            Err(Refusal::NotFound(_))
        ));
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (path, _) = resolve(&argv(&["./tool"]), &any(), false, dir.path()).unwrap();
        assert_eq!(path, dir.path().join("./tool"));
        let absolute = script.to_str().unwrap();
        assert!(resolve(&argv(&[absolute]), &any(), false, Path::new("/")).is_ok());
        // A directory is not a program.
        assert!(resolve(&argv(&["/tmp"]), &any(), false, Path::new("/")).is_err());
    }

    #[test]
    fn shell_runs_depend_on_allow_shell_alone() {
        let line = Command::Shell("echo hi | tr a-z A-Z".to_string());
        assert!(matches!(
            resolve(&line, &any(), false, Path::new("/")),
            Err(Refusal::ShellDisabled)
        ));
        let (path, args) = resolve(&line, &[], true, Path::new("/")).unwrap();
        assert_eq!(path, Path::new("/bin/sh"));
        assert_eq!(args, ["sh", "-c", "echo hi | tr a-z A-Z"]);
    }

    #[test]
    fn group_exists_sees_a_live_group_and_not_a_finished_one() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        assert!(sys::group_exists(pgid));
        sys::signal_group(pgid, libc::SIGKILL);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!sys::group_exists(pgid));
    }
}
