//! What an experiment observed, in a form that can be narrated or serialised.
//!
//! Every interesting system call in a demo becomes an [`Observation`]: the
//! call as a C programmer would write it, the blocking [`Mode`] the socket was
//! in, the [`Outcome`] the kernel gave back, and a sentence on why. An
//! experiment returns its observations inside a [`Finding`], next to typed
//! facts that tests assert on. Rendering lives here too, so every demo
//! prints in the same shape:
//!
//! ```text
//!   call    recv(server, 64-byte buffer)
//!   mode    non-blocking
//!   result  error EAGAIN (Resource temporarily unavailable)
//!   why     Nothing has arrived, and a non-blocking socket never sleeps...
//! ```
//!
//! Errors are shown by their errno name (`EAGAIN`, `ECONNRESET`) because
//! that is what man pages, `strace` and other languages' docs use; Rust's
//! `io::ErrorKind` and Python's exception names are both built on it.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::Serialize;

/// What an experiment saw: the narrated calls, a closing sentence with the
/// figures measured, and typed facts for tests and JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Finding<F> {
    /// The calls worth narrating, in the order they were made.
    pub observations: Vec<Observation>,
    /// One or two sentences drawing the lesson, with the measured figures.
    pub summary: String,
    /// The same results as typed fields, for tests and machine readers.
    pub facts: F,
}

impl<F> Finding<F> {
    /// Wraps the facts in another type, keeping the narration. Used to put
    /// each experiment's own facts into one enum covering all experiments.
    pub fn map<G>(self, wrap: impl FnOnce(F) -> G) -> Finding<G> {
        Finding {
            observations: self.observations,
            summary: self.summary,
            facts: wrap(self.facts),
        }
    }
}

/// One system call and what came back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// The call, written the way a C programmer would, e.g. `recv(server, 64-byte buffer)`.
    pub call: String,
    /// Whether the call was allowed to sleep.
    #[serde(flatten)]
    pub mode: Mode,
    /// What the kernel returned.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Why it returned that, in a sentence or two.
    pub why: String,
}

impl Observation {
    pub fn new(
        call: impl Into<String>,
        mode: Mode,
        outcome: Outcome,
        why: impl Into<String>,
    ) -> Self {
        Observation {
            call: call.into(),
            mode,
            outcome,
            why: why.into(),
        }
    }
}

/// Whether a call may sleep, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// The call sleeps until it can complete: every new socket starts this way.
    Blocking,
    /// `O_NONBLOCK` is set: the call returns at once, with `EAGAIN` if it
    /// would have had to sleep (Python's `setblocking(False)`).
    NonBlocking,
    /// Blocking, but for at most this long (`SO_RCVTIMEO`, set with
    /// `setsockopt`; Rust's `set_read_timeout`). Python's `settimeout` is
    /// not this: it is `O_NONBLOCK` plus a [`Mode::Wait`] in `poll`.
    Timeout { timeout_ms: u64 },
    /// A readiness wait (`poll(2)`, or `epoll` through mio) that gives up after this long.
    Wait { timeout_ms: u64 },
}

impl Mode {
    pub fn timeout(timeout: Duration) -> Self {
        Mode::Timeout {
            timeout_ms: whole_ms(timeout),
        }
    }

    pub fn wait(timeout: Duration) -> Self {
        Mode::Wait {
            timeout_ms: whole_ms(timeout),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Blocking => write!(f, "blocking"),
            Mode::NonBlocking => write!(f, "non-blocking"),
            Mode::Timeout { timeout_ms } => write!(f, "blocking with a {timeout_ms} ms timeout"),
            Mode::Wait { timeout_ms } => write!(f, "readiness wait, up to {timeout_ms} ms"),
        }
    }
}

/// What one call gave back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Bytes were moved: how many, and (for reads of text) what they said.
    Bytes { count: usize, text: Option<String> },
    /// `recv` returned 0: the peer has closed its side, the stream is over.
    Eof,
    /// The call succeeded and there is nothing to count, e.g. `accept` gave
    /// a connection or a readiness wait saw its event.
    Done { detail: String },
    /// The call failed. `errno` is the C name when the error came from the
    /// kernel, such as `EAGAIN`.
    Error {
        errno: Option<&'static str>,
        code: Option<i32>,
        message: String,
    },
    /// A readiness wait saw nothing before its timeout.
    TimedOut { after_ms: f64 },
}

impl Outcome {
    /// The outcome of a read into `buf`: bytes, end of stream, or an error.
    pub fn received(result: &io::Result<usize>, buf: &[u8]) -> Self {
        match result {
            Ok(0) => Outcome::Eof,
            Ok(n) => Outcome::Bytes {
                count: *n,
                text: Some(printable(&buf[..*n])),
            },
            Err(error) => Outcome::error(error),
        }
    }

    /// The outcome of a call that returns a byte count with nothing to show,
    /// such as a write: how many bytes, or an error.
    pub fn byte_count(result: &io::Result<usize>) -> Self {
        match result {
            Ok(n) => Outcome::Bytes {
                count: *n,
                text: None,
            },
            Err(error) => Outcome::error(error),
        }
    }

    pub fn done(detail: impl Into<String>) -> Self {
        Outcome::Done {
            detail: detail.into(),
        }
    }

    pub fn error(error: &io::Error) -> Self {
        let code = error.raw_os_error();
        Outcome::Error {
            errno: code.and_then(errno_name),
            code,
            message: describe_error(error),
        }
    }

    /// The errno name, if this outcome is an error from the kernel.
    pub fn errno(&self) -> Option<&'static str> {
        match self {
            Outcome::Error { errno, .. } => *errno,
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Bytes {
                count,
                text: Some(text),
            } => write!(f, "{count} bytes: \"{text}\""),
            Outcome::Bytes { count, text: None } => write!(f, "{count} bytes"),
            Outcome::Eof => write!(f, "0 bytes: end of stream"),
            Outcome::Done { detail } => write!(f, "{detail}"),
            Outcome::Error {
                errno: Some(name),
                message,
                ..
            } => write!(f, "error {name} ({message})"),
            Outcome::Error {
                errno: None,
                message,
                ..
            } => write!(f, "error: {message}"),
            Outcome::TimedOut { after_ms } => write!(f, "no event within {after_ms:.0} ms"),
        }
    }
}

/// The C name of an errno value, for the errors these demos can meet.
/// On Linux `EWOULDBLOCK` is the same number as `EAGAIN`, so it is shown as
/// `EAGAIN`.
pub fn errno_name(code: i32) -> Option<&'static str> {
    let name = match code {
        libc::EAGAIN => "EAGAIN",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EALREADY => "EALREADY",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EPIPE => "EPIPE",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EINTR => "EINTR",
        libc::ENOTCONN => "ENOTCONN",
        libc::EISCONN => "EISCONN",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        _ => return None,
    };
    Some(name)
}

/// The error's text without Rust's " (os error N)" suffix, since the errno
/// name is printed beside it.
fn describe_error(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// Bytes as text a terminal can show: printable ASCII as is, the rest escaped.
pub fn printable(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// A duration in milliseconds with a fraction, for narration and JSON.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn whole_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Renders an observation as the labelled block shown in the module docs.
pub fn render_observation(observation: &Observation) -> String {
    let mut text = String::new();
    text.push_str(&labelled("call", &observation.call));
    text.push_str(&labelled("mode", &observation.mode.to_string()));
    text.push_str(&labelled("result", &observation.outcome.to_string()));
    text.push_str(&labelled("why", &observation.why));
    text
}

/// Width of the narration, in characters, before words wrap.
const WIDTH: usize = 78;

/// One `  label   text` line, with the text wrapped and indented under itself.
fn labelled(label: &str, text: &str) -> String {
    let indent = "          ";
    let mut out = String::new();
    for (i, line) in wrap(text, WIDTH - indent.len()).iter().enumerate() {
        if i == 0 {
            out.push_str(&format!("  {label:<7} {line}\n"));
        } else {
            out.push_str(&format!("{indent}{line}\n"));
        }
    }
    out
}

/// Wraps `text` at word boundaries into lines of at most `width` characters
/// (a word longer than that gets a line of its own).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_word_boundaries_within_the_width() {
        assert_eq!(wrap("one two three four", 9), ["one two", "three", "four"]);
        assert_eq!(wrap("", 9), [""]);
    }

    #[test]
    fn a_read_of_zero_bytes_is_end_of_stream_not_an_empty_message() {
        assert_eq!(Outcome::received(&Ok(0), b""), Outcome::Eof);
    }

    #[test]
    fn kernel_errors_are_named_by_their_errno() {
        let error = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(Outcome::error(&error).errno(), Some("ECONNRESET"));
        assert_eq!(
            Outcome::error(&error).to_string(),
            "error ECONNRESET (Connection reset by peer)"
        );
    }
}
