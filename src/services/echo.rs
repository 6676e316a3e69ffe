//! echo (RFC 862): every byte back, unchanged and in order, and two variants.
//!
//! # Format
//!
//! ```text
//! mode echo:   client: hello\n            daemon: hello\n
//! mode upper:  client: Hello, World\n     daemon: HELLO, WORLD\n
//! mode stamp:  client: hello\n            daemon: [Mon Nov  3 09:05:01 2026] hello\n
//! ```
//!
//! Over TCP the unit is the byte stream: however the client splits its
//! writes, and however the network splits them again, the same bytes come
//! back in the same order. Over UDP the unit is the datagram: each one is
//! answered by one datagram.
//!
//! # State
//!
//! `echo` and `upper` have none: every byte is answered as it comes, so the
//! session consumes all its input at once and never holds any. `stamp`
//! works per line; a partial line stays with the reactor until its `\n`
//! arrives:
//!
//! ```text
//!   AtLineStart --bytes, no \n, short--> (kept unconsumed) --\n--> AtLineStart
//!        |
//!        '--a line longer than MAX_LINE--> stamp + part sent --> MidLine --\n--> AtLineStart
//! ```
//!
//! A line longer than [`MAX_LINE`] is not held whole (that would let a
//! client without newlines grow the daemon's memory without bound): its
//! stamp and first part are sent, and the rest follows as it comes.

use super::Cx;
use super::clock;
use crate::config::EchoMode;

/// Longest line `stamp` holds back before sending it in parts.
pub const MAX_LINE: usize = 64 * 1024;

/// Where the `stamp` mode stands within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Line {
    /// The next byte starts a line and gets a stamp.
    #[default]
    AtLineStart,
    /// A long line's stamp and first part are sent; the rest follows bare.
    MidLine,
}

/// The session for a connection in the configured mode. Each mode is its
/// own type so that `echo` and `upper`, which keep no state, are
/// zero-sized: a `Box` of them allocates nothing, and an idle echo
/// connection owns no heap memory at all.
pub fn session(mode: EchoMode) -> Box<dyn super::Session> {
    match mode {
        EchoMode::Echo => Box::new(Plain),
        EchoMode::Upper => Box::new(Upper),
        EchoMode::Stamp => Box::new(Stamp::default()),
    }
}

/// `echo`: every byte back as it comes.
pub struct Plain;

impl super::Session for Plain {
    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        cx.write(input);
        input.len()
    }
}

/// `upper`: ASCII letters upper-cased, every other byte unchanged.
pub struct Upper;

impl super::Session for Upper {
    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        cx.write_with(|out| out.extend(input.iter().map(u8::to_ascii_uppercase)));
        input.len()
    }
}

/// `stamp`: each line prefixed with the time.
#[derive(Default)]
pub struct Stamp {
    line: Line,
}

impl super::Session for Stamp {
    /// Stamps and sends the complete lines of `input`; returns the bytes
    /// consumed. An unfinished line is left unless it is too long to keep.
    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        let mut consumed = 0;
        while consumed < input.len() {
            let rest = &input[consumed..];
            let (line, complete) = match memchr(b'\n', rest) {
                Some(i) => (&rest[..=i], true),
                None if rest.len() >= MAX_LINE || self.line == Line::MidLine => (rest, false),
                None => break,
            };
            if self.line == Line::AtLineStart {
                write_stamp(cx);
            }
            cx.write(line);
            self.line = if complete {
                Line::AtLineStart
            } else {
                Line::MidLine
            };
            consumed += line.len();
        }
        consumed
    }

    /// The client is done sending: a last line without `\n` is stamped and
    /// sent, then the connection closes once everything is flushed.
    fn on_peer_closed(&mut self, input: &[u8], cx: &mut Cx<'_>) {
        if !input.is_empty() {
            if self.line == Line::AtLineStart {
                write_stamp(cx);
            }
            cx.write(input);
        }
        cx.close();
    }
}

/// Answers one UDP datagram: the same transformation, one datagram back.
/// A datagram has no "later": in `stamp` mode each line is stamped, and a
/// last line without `\n` too.
pub fn answer_datagram(
    mode: EchoMode,
    datagram: &[u8],
    wall: std::time::SystemTime,
    reply: &mut Vec<u8>,
) -> bool {
    match mode {
        EchoMode::Echo => reply.extend_from_slice(datagram),
        EchoMode::Upper => reply.extend(datagram.iter().map(u8::to_ascii_uppercase)),
        EchoMode::Stamp => {
            let stamp = clock::ctime(wall);
            for line in datagram.split_inclusive(|&b| b == b'\n') {
                reply.push(b'[');
                reply.extend_from_slice(stamp.as_bytes());
                reply.extend_from_slice(b"] ");
                reply.extend_from_slice(line);
            }
        }
    }
    true
}

/// Writes the `[<ctime>] ` prefix of a stamped line.
fn write_stamp(cx: &mut Cx<'_>) {
    let stamp = clock::ctime(cx.wall_time());
    cx.write_with(|out| {
        out.extend_from_slice(b"[");
        out.extend_from_slice(stamp.as_bytes());
        out.extend_from_slice(b"] ");
    });
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}
