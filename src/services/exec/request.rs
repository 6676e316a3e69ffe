//! The exec requests and answers as data: parsing what a client asks for,
//! and encoding what the daemon says back (PROTOCOL.md §5.3).
//!
//! Nothing here runs a program or touches a socket. [`parse`] turns a
//! decoded frame header into a [`Request`] or a [`RequestError`] that says
//! exactly what was wrong, and the `encode_*` functions append the
//! daemon's frames, field by field in the order the protocol writes them,
//! to an output buffer. Both are tested with bytes in, bytes out.
//!
//! # Which errors close the connection
//!
//! A request that is well-formed but cannot be served (an unknown type, a
//! missing or mistyped field) gets an error frame and the connection stays
//! open: the stream of frames is still in step. The one exception is a
//! `stdin` frame announcing more than [`MAX_CHUNK`] bytes. Its payload
//! follows it on the wire, so the daemon would have to read and throw away
//! bytes it was never meant to accept, possibly gigabytes of them; the
//! frame is refused like an oversized header, and the connection closed.

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use serde_json::Value;

use crate::codec::frame::{self, Header, frame_type};

/// The most bytes one `stdout`, `stderr` or `stdin` frame carries.
pub const MAX_CHUNK: usize = 65_536;

/// What an authenticated client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start a program.
    Run(Run),
    /// `size` raw bytes follow, for the program's stdin.
    Stdin { size: usize },
    /// The program's stdin ends once what was sent before is written.
    StdinEof,
    /// Send a signal to the program's process group.
    Signal(Signal),
}

/// A `run` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: Command,
    /// Whether the client will send `stdin` frames; without them the
    /// program reads an empty stdin (`/dev/null`).
    pub stdin: bool,
    /// The client's `timeout_ms`; `None` = the configured default.
    pub timeout: Option<Duration>,
}

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `argv[0]` names the program, exactly as the client sent it.
    Argv(Vec<String>),
    /// A command line for `/bin/sh -c`.
    Shell(String),
}

/// The signals a client may send. Others (STOP, say) would leave a program
/// in states the service does not model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
    Kill,
}

impl Signal {
    /// The name on the wire, without `SIG`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "INT",
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }

    pub fn number(self) -> i32 {
        match self {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }

    fn from_name(name: &str) -> Option<Signal> {
        [Signal::Int, Signal::Term, Signal::Kill]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// Why a header is not a request the service can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// A `"type"` the service does not know.
    UnknownType(String),
    /// A second `auth` after the handshake succeeded.
    AlreadyAuthenticated,
    /// A field is missing or holds the wrong kind of value; `problem`
    /// completes the sentence "field `<field>` ...".
    Field {
        field: &'static str,
        problem: &'static str,
    },
    /// `run` with both `argv` and `shell`, or neither.
    ArgvOrShell,
    /// A `stdin` frame announcing more than [`MAX_CHUNK`] bytes. Fatal.
    ChunkTooLarge(u64),
}

impl RequestError {
    /// The machine-readable `"code"` of the error frame.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::UnknownType(_) => "unknown_type",
            RequestError::AlreadyAuthenticated
            | RequestError::Field { .. }
            | RequestError::ArgvOrShell => "bad_request",
            RequestError::ChunkTooLarge(_) => "frame_too_large",
        }
    }

    /// Whether the connection must be closed after the error frame (the
    /// framing can no longer be trusted; see the module docs).
    pub fn is_fatal(&self) -> bool {
        matches!(self, RequestError::ChunkTooLarge(_))
    }

    /// Appends the error frame that reports this error.
    pub fn encode(&self, out: &mut BytesMut) {
        frame::encode_error(&self.to_string(), Some(self.code()), out);
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::UnknownType(kind) => write!(f, "unknown request type {kind:?}"),
            RequestError::AlreadyAuthenticated => f.write_str("already authenticated"),
            RequestError::Field { field, problem } => write!(f, "field {field:?} {problem}"),
            RequestError::ArgvOrShell => {
                f.write_str("a run request needs either \"argv\" or \"shell\", not both")
            }
            RequestError::ChunkTooLarge(size) => write!(
                f,
                "stdin chunk too large: {size} bytes, the limit is {MAX_CHUNK}"
            ),
        }
    }
}

impl std::error::Error for RequestError {}

/// Reads an authenticated client's request from a decoded header.
pub fn parse(header: &Header) -> Result<Request, RequestError> {
    match frame_type(header) {
        "run" => parse_run(header).map(Request::Run),
        "stdin" => {
            let size = header
                .get("size")
                .ok_or(RequestError::Field {
                    field: "size",
                    problem: "is missing",
                })?
                .as_u64()
                .ok_or(RequestError::Field {
                    field: "size",
                    problem: "must be a non-negative integer",
                })?;
            match usize::try_from(size) {
                Ok(size) if size <= MAX_CHUNK => Ok(Request::Stdin { size }),
                _ => Err(RequestError::ChunkTooLarge(size)),
            }
        }
        "stdin_eof" => Ok(Request::StdinEof),
        "signal" => {
            let name = header
                .get("signal")
                .ok_or(RequestError::Field {
                    field: "signal",
                    problem: "is missing",
                })?
                .as_str()
                .and_then(Signal::from_name)
                .ok_or(RequestError::Field {
                    field: "signal",
                    problem: "must be \"INT\", \"TERM\" or \"KILL\"",
                })?;
            Ok(Request::Signal(name))
        }
        "auth" => Err(RequestError::AlreadyAuthenticated),
        other => Err(RequestError::UnknownType(other.to_string())),
    }
}

fn parse_run(header: &Header) -> Result<Run, RequestError> {
    let command = match (header.get("argv"), header.get("shell")) {
        (Some(argv), None) => Command::Argv(parse_argv(argv)?),
        (None, Some(shell)) => {
            let line = shell.as_str().ok_or(RequestError::Field {
                field: "shell",
                problem: "must be a string",
            })?;
            if line.contains('\0') {
                return Err(RequestError::Field {
                    field: "shell",
                    problem: "must not contain a NUL character",
                });
            }
            Command::Shell(line.to_string())
        }
        _ => return Err(RequestError::ArgvOrShell),
    };
    let stdin = match header.get("stdin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(RequestError::Field {
                field: "stdin",
                problem: "must be true or false",
            });
        }
    };
    let timeout = match header.get("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(ms) if ms > 0 => Some(Duration::from_millis(ms)),
            _ => {
                return Err(RequestError::Field {
                    field: "timeout_ms",
                    problem: "must be a positive integer",
                });
            }
        },
    };
    Ok(Run {
        command,
        stdin,
        timeout,
    })
}

fn parse_argv(argv: &Value) -> Result<Vec<String>, RequestError> {
    const NOT_A_LIST: RequestError = RequestError::Field {
        field: "argv",
        problem: "must be a non-empty list of strings",
    };
    let items = argv.as_array().ok_or(NOT_A_LIST)?;
    if items.is_empty() {
        return Err(NOT_A_LIST);
    }
    let mut args = Vec::with_capacity(items.len());
    for item in items {
        let arg = item.as_str().ok_or(NOT_A_LIST)?;
        // execve() takes C strings: a NUL would silently cut the argument.
        if arg.contains('\0') {
            return Err(RequestError::Field {
                field: "argv",
                problem: "must not contain a NUL character",
            });
        }
        args.push(arg.to_string());
    }
    if args[0].is_empty() {
        return Err(RequestError::Field {
            field: "argv",
            problem: "must start with a program name",
        });
    }
    Ok(args)
}

/// Why a well-formed `run` (or `signal`, `stdin`) request is turned down.
/// The connection stays open.
#[derive(Debug)]
pub enum Refusal {
    /// `argv[0]` is not in `exec.allow`.
    NotAllowed(String),
    /// `argv[0]` names no executable file.
    NotFound(String),
    /// A `shell` request while `exec.allow_shell` is false.
    ShellDisabled,
    /// `exec.max_running` programs run already, over the whole daemon.
    Busy(usize),
    /// This connection runs a program already.
    AlreadyRunning,
    /// A `stdin` or `signal` request with no program running.
    NotRunning(&'static str),
    /// A `stdin` frame for a program started without `"stdin":true`.
    NoStdin,
    /// The operating system would not start the program.
    SpawnFailed { program: String, error: String },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotAllowed(_) => "not_allowed",
            Refusal::NotFound(_) => "not_found",
            Refusal::ShellDisabled => "shell_disabled",
            Refusal::Busy(_) => "busy",
            Refusal::AlreadyRunning => "running",
            Refusal::NotRunning(_) => "not_running",
            Refusal::NoStdin => "no_stdin",
            Refusal::SpawnFailed { .. } => "spawn_failed",
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        frame::encode_error(&self.to_string(), Some(self.code()), out);
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAllowed(program) => {
                write!(f, "program not allowed: {program:?} is not in exec.allow")
            }
            Refusal::NotFound(program) => write!(f, "program not found: {program:?}"),
            Refusal::ShellDisabled => f.write_str(
                "shell disabled: exec.allow_shell is false, which refuses \"shell\" requests only; \
                 a program sent as argv (sh -c included) is checked against exec.allow instead",
            ),
            Refusal::Busy(max) => write!(f, "too many running commands (the limit is {max})"),
            Refusal::AlreadyRunning => {
                f.write_str("a program is already running on this connection")
            }
            Refusal::NotRunning(what) => write!(f, "no program running to {what}"),
            Refusal::NoStdin => {
                f.write_str("the program was started without \"stdin\":true; its stdin is empty")
            }
            Refusal::SpawnFailed { program, error } => write!(f, "cannot run {program:?}: {error}"),
        }
    }
}

/// Appends `{"type":"started","pid":<pid>}`.
pub fn encode_started(pid: u32, out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Started {
        #[serde(rename = "type")]
        kind: &'static str,
        pid: u32,
    }
    frame::encode_fixed(
        &Started {
            kind: "started",
            pid,
        },
        out,
    );
}

/// How a program ended, as the `exit` frame reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, when the program exited by itself.
    pub code: Option<i32>,
    /// The signal's name without `SIG`, when a signal ended it.
    pub signal: Option<String>,
    /// Whether the daemon stopped it because its timeout passed.
    pub timed_out: bool,
    /// From the start to the moment its exit was seen.
    pub elapsed: Duration,
}

impl Exit {
    /// Appends `{"type":"exit","code":..,"signal":..,"timed_out":..,"elapsed_ms":..}`.
    pub fn encode(&self, out: &mut BytesMut) {
        #[derive(Serialize)]
        struct ExitFrame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: Option<i32>,
            signal: Option<&'a str>,
            timed_out: bool,
            elapsed_ms: u64,
        }
        frame::encode_fixed(
            &ExitFrame {
                kind: "exit",
                code: self.code,
                signal: self.signal.as_deref(),
                timed_out: self.timed_out,
                elapsed_ms: u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            },
            out,
        );
    }
}

/// The name of signal `number` without `SIG`, as `kill -l` prints it;
/// real-time signals are `RTMIN+n`, and a number Linux does not define is
/// written as a number.
pub fn signal_name(number: i32) -> String {
    let name = match number {
        libc::SIGHUP => "HUP",
        libc::SIGINT => "INT",
        libc::SIGQUIT => "QUIT",
        libc::SIGILL => "ILL",
        libc::SIGTRAP => "TRAP",
        libc::SIGABRT => "ABRT",
        libc::SIGBUS => "BUS",
        libc::SIGFPE => "FPE",
        libc::SIGKILL => "KILL",
        libc::SIGUSR1 => "USR1",
        libc::SIGSEGV => "SEGV",
        libc::SIGUSR2 => "USR2",
        libc::SIGPIPE => "PIPE",
        libc::SIGALRM => "ALRM",
        libc::SIGTERM => "TERM",
        libc::SIGSTKFLT => "STKFLT",
        libc::SIGCHLD => "CHLD",
        libc::SIGCONT => "CONT",
        libc::SIGSTOP => "STOP",
        libc::SIGTSTP => "TSTP",
        libc::SIGTTIN => "TTIN",
        libc::SIGTTOU => "TTOU",
        libc::SIGURG => "URG",
        libc::SIGXCPU => "XCPU",
        libc::SIGXFSZ => "XFSZ",
        libc::SIGVTALRM => "VTALRM",
        libc::SIGPROF => "PROF",
        libc::SIGWINCH => "WINCH",
        libc::SIGIO => "IO",
        libc::SIGPWR => "PWR",
        libc::SIGSYS => "SYS",
        n if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) => {
            return format!("RTMIN+{}", n - libc::SIGRTMIN());
        }
        n => return n.to_string(),
    };
    name.to_string()
}

/// The number of a signal named as [`signal_name`] writes it, for the
/// client's `128 + n` exit status.
pub fn signal_number(name: &str) -> Option<i32> {
    if let Some(offset) = name.strip_prefix("RTMIN+") {
        return offset
            .parse::<i32>()
            .ok()
            .map(|n| libc::SIGRTMIN() + n)
            .filter(|&n| n <= libc::SIGRTMAX());
    }
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    (1..libc::SIGRTMIN()).find(|&n| signal_name(n) == name)
}

#[cfg(test)]
mod tests;
