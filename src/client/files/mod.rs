//! `socketlab files`: upload, download and manage files on the daemon's
//! files service, one command at a time or from an ftp-like shell.
//!
//! ```text
//! $ socketlab files put photos.tar              # to the remote working directory
//! $ socketlab files get photos.tar restored.tar # verified, resumable
//! $ socketlab files ls /
//! $ socketlab files --user ada --password-stdin shell < script.txt
//! ```
//!
//! # How the pieces fit
//!
//! | file | what it does |
//! |---|---|
//! | [`login`] | the SCRAM-SHA-256 login, client side: pure functions |
//! | [`session`] | one logged-in connection: frames and raw bytes, every wait bounded |
//! | [`transfer`] | `get` into a `.part` file and `put`, both verified by SHA-256 and resumable |
//! | [`commands`] | each command as a [`commands::Request`], its [`commands::Outcome`], how it prints |
//! | [`progress`] | the progress bar: bytes, MiB/s and time left, resume-aware |
//! | [`password`] | where the password comes from |
//! | [`shell`] | the interactive prompt, and scripts fed on stdin |
//!
//! # Trust
//!
//! The login proves the password to the daemon without sending it, and the
//! daemon's signature proves to the client that the daemon holds the
//! user's keys: the client checks it before it sends any request, and
//! stops with status 255 when it is wrong. Every byte transferred is
//! checked against the SHA-256 of the whole file, both ways.
//!
//! # Exit status
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | the daemon refused the request (an error frame), a checksum did not match, or a local file could not be read or written |
//! | 2 | bad arguments, or no password to be had |
//! | 255 | cannot connect, the login failed, or the connection broke |

pub mod commands;
pub mod login;
pub mod password;
pub mod progress;
pub mod session;
pub mod shell;
pub mod transfer;

use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Endpoint;
use crate::codec::frame::Header;
use commands::{Outcome, Request};
use login::LoginError;
use session::Session;

/// The files service's default address: port base 7000 + offset 21
/// (PROTOCOL.md §1).
pub const DEFAULT_ADDR: &str = "127.0.0.1:7021";

/// `socketlab files`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Password: --password-stdin, else $SOCKETLAB_PASSWORD, else for the user demo \
<DATA_DIR>/demo.password, else a prompt on the terminal.\n\
Exit status: 0 done; 1 refused by the daemon, checksum mismatch or a local file error; \
2 bad arguments; 255 cannot connect, login failed or connection lost."
)]
pub struct Args {
    /// The files service's address: HOST:PORT or unix:/path.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADDR, global = true)]
    pub addr: String,
    /// The user to log in as.
    #[arg(long, value_name = "NAME", default_value = password::DEMO_USER, global = true)]
    pub user: String,
    /// Read the password from the first line of stdin.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// The daemon's data directory, where the demo user's password is.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "socketlab-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Print each result as one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long any one wait for the daemon may take: 500ms, 10s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = crate::client::parse_duration, global = true)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub action: Action,
}

/// What `socketlab files` does.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Action {
    /// Upload LOCAL as REMOTE (default: its own name, in the working directory).
    Put {
        local: PathBuf,
        remote: Option<String>,
    },
    /// Download REMOTE into LOCAL (default: its own name, here), verified;
    /// an interrupted get resumes from LOCAL.part.
    Get {
        remote: String,
        local: Option<PathBuf>,
    },
    /// List a directory like `ls -l` (default: the working directory).
    Ls { path: Option<String> },
    /// Make a directory (its parent must exist).
    Mkdir { path: String },
    /// Remove a file or an empty directory.
    Rm { path: String },
    /// Change the working directory and print it (for this connection only).
    Cd { path: String },
    /// Print the working directory.
    Pwd,
    /// Show the space used and the quota.
    Quota,
    /// An interactive prompt like sftp's; reads commands from stdin when it
    /// is not a terminal.
    Shell,
}

impl Action {
    /// The request a one-shot action makes; `None` for the shell.
    pub fn request(&self) -> Option<Request> {
        Some(match self.clone() {
            Action::Put { local, remote } => Request::Put { local, remote },
            Action::Get { remote, local } => Request::Get { remote, local },
            Action::Ls { path } => Request::Ls { path },
            Action::Mkdir { path } => Request::Mkdir { path },
            Action::Rm { path } => Request::Rm { path },
            Action::Cd { path } => Request::Cd { path },
            Action::Pwd => Request::Pwd,
            Action::Quota => Request::Quota,
            Action::Shell => return None,
        })
    }
}

/// Everything that makes a command fail, grouped by exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesError {
    /// Bad arguments, or no password to be had (status 2).
    Usage(String),
    /// The daemon answered with an error frame (status 1).
    Refused {
        error: String,
        code: Option<String>,
        /// With `code: "quota"`: the bytes still free.
        free: Option<u64>,
    },
    /// A SHA-256 did not match (status 1).
    Checksum(String),
    /// A local file could not be read or written (status 1).
    Local(String),
    /// Cannot connect, or the connection broke or timed out (status 255).
    Connection(String),
    /// The login failed (status 255).
    Login(LoginError),
    /// The daemon broke the protocol (status 255).
    Protocol(String),
}

impl FilesError {
    /// The refusal an error frame carries.
    pub fn refused(frame: &Header) -> FilesError {
        FilesError::Refused {
            error: frame
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("(no reason given)")
                .to_string(),
            code: frame.get("code").and_then(Value::as_str).map(String::from),
            free: frame.get("free").and_then(Value::as_u64),
        }
    }

    /// The exit status this failure ends the client with.
    pub fn exit_status(&self) -> u8 {
        match self {
            FilesError::Usage(_) => 2,
            FilesError::Refused { .. } | FilesError::Checksum(_) | FilesError::Local(_) => 1,
            FilesError::Connection(_) | FilesError::Login(_) | FilesError::Protocol(_) => 255,
        }
    }

    /// A one-word kind, for the JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            FilesError::Usage(_) => "usage",
            FilesError::Refused { .. } => "refused",
            FilesError::Checksum(_) => "checksum",
            FilesError::Local(_) => "local",
            FilesError::Connection(_) => "connection",
            FilesError::Login(_) => "login",
            FilesError::Protocol(_) => "protocol",
        }
    }

    /// The failure as one JSON object: `command`, `ok: false`, `error`,
    /// `kind`, and the daemon's `code` and `free` when it gave them.
    pub fn to_json(&self, command: &str) -> Value {
        let mut value = json!({
            "command": command, "ok": false, "error": self.to_string(), "kind": self.kind()
        });
        if let FilesError::Refused { code, free, .. } = self {
            value["code"] = json!(code);
            if let Some(free) = free {
                value["free"] = json!(free);
            }
        }
        value
    }
}

impl fmt::Display for FilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilesError::Refused { error, free, .. } => {
                write!(f, "refused: {error}")?;
                if let Some(free) = free {
                    write!(f, " ({} free)", progress::size(*free))?;
                }
                Ok(())
            }
            FilesError::Login(e) => write!(f, "{e}"),
            FilesError::Usage(what)
            | FilesError::Checksum(what)
            | FilesError::Local(what)
            | FilesError::Connection(what)
            | FilesError::Protocol(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for FilesError {}

impl From<LoginError> for FilesError {
    fn from(e: LoginError) -> FilesError {
        FilesError::Login(e)
    }
}

/// How results are shown.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON object per result on stdout.
    pub json: bool,
    /// Draw progress bars (stderr is a terminal, and not `--json`).
    pub progress: bool,
}

impl Output {
    /// Prints one outcome on stdout.
    pub fn outcome(&self, outcome: &Outcome) {
        let text = if self.json {
            format!("{}\n", outcome.to_json())
        } else {
            outcome.render(&jiff::tz::TimeZone::system())
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    /// Prints one failure: a line on stderr, and with `--json` its object
    /// on stdout as well.
    pub fn failure(&self, command: &str, error: &FilesError) {
        eprintln!("socketlab files: {command}: {error}");
        if self.json {
            // A closed stdout is not worth a panic; the status says it all.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", error.to_json(command)).and_then(|()| out.flush());
        }
    }
}

/// Runs `socketlab files`.
pub fn run(args: Args) -> ExitCode {
    let output = Output {
        json: args.json,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let command = args.action.request().map_or("shell", |r| r.name());
    let mut session = match connect(&args) {
        Ok(session) => session,
        Err(error) => {
            output.failure(command, &error);
            return ExitCode::from(error.exit_status());
        }
    };
    let status = match args.action.request() {
        None => shell::run(&mut session, output),
        Some(request) => match commands::perform(&mut session, &request, output.progress) {
            Ok(outcome) => {
                output.outcome(&outcome);
                0
            }
            Err(error) => {
                output.failure(command, &error);
                error.exit_status()
            }
        },
    };
    session.close();
    ExitCode::from(status)
}

/// Finds the password, connects and logs in.
fn connect(args: &Args) -> Result<Session, FilesError> {
    let endpoint: Endpoint = args
        .addr
        .parse()
        .map_err(|e| FilesError::Usage(format!("bad address {}: {e}", args.addr)))?;
    let password = password::find(&password::Sources {
        user: &args.user,
        from_stdin: args.password_stdin,
        data_dir: &args.data_dir,
    })?;
    Session::open(&endpoint, &args.user, &password, args.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("files").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_are_the_files_port_and_the_demo_user() {
        let args = parse(&["pwd"]).unwrap();
        assert_eq!(args.addr, "127.0.0.1:7021");
        assert_eq!(args.user, "demo");
        assert_eq!(args.data_dir, PathBuf::from("socketlab-data"));
        assert_eq!(args.timeout, Duration::from_secs(30));
        assert!(!args.json && !args.password_stdin);
        assert_eq!(args.action, Action::Pwd);
    }

    #[test]
    fn options_may_follow_the_command() {
        let args = parse(&[
            "get", "/a/b", "--json", "--user", "ada", "--addr", "[::1]:9",
        ])
        .unwrap();
        assert!(args.json);
        assert_eq!(args.user, "ada");
        assert_eq!(args.addr, "[::1]:9");
        assert_eq!(
            args.action,
            Action::Get {
                remote: "/a/b".into(),
                local: None
            }
        );
    }

    #[test]
    fn missing_or_extra_operands_are_usage_errors() {
        for argv in [
            &["put"][..],
            &["mkdir"],
            &["get", "a", "b", "c"],
            &["frobnicate"],
            &[],
        ] {
            let error = parse(argv)
                .err()
                .unwrap_or_else(|| panic!("{argv:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn each_failure_has_its_exit_status() {
        let refused = FilesError::Refused {
            error: "no such file".into(),
            code: None,
            free: None,
        };
        assert_eq!(refused.exit_status(), 1);
        assert_eq!(FilesError::Checksum("x".into()).exit_status(), 1);
        assert_eq!(FilesError::Usage("x".into()).exit_status(), 2);
        assert_eq!(
            FilesError::Login(LoginError::BadSignature).exit_status(),
            255
        );
        assert_eq!(FilesError::Connection("x".into()).exit_status(), 255);
    }

    #[test]
    fn a_quota_refusal_says_what_is_free() {
        let error = FilesError::Refused {
            error: "over quota".into(),
            code: Some("quota".into()),
            free: Some(2048),
        };
        assert_eq!(error.to_string(), "refused: over quota (2.0 KiB free)");
        let json = error.to_json("put");
        assert_eq!(json["code"], "quota");
        assert_eq!(json["free"], 2048);
        assert_eq!(json["ok"], false);
    }
}
