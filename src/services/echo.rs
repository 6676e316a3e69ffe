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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::service_id::ServiceId;
    use crate::services::testing::{Ending, Harness, harness};

    fn echo(mode: EchoMode) -> (Harness, usize) {
        let mut config = Config::default();
        config.echo.mode = mode;
        let mut h = harness(config);
        let c = h.open(ServiceId::Echo);
        (h, c)
    }

    /// The prefix of a line stamped at [`UNIX_WALL`].
    fn stamp() -> String {
        format!("[{}] ", clock::ctime(UNIX_WALL))
    }

    /// The wall time the stamp tests set.
    const UNIX_WALL: std::time::SystemTime = std::time::SystemTime::UNIX_EPOCH;

    // ----- mode echo ----------------------------------------------------

    #[test]
    fn echo_sends_every_byte_back_as_it_comes() {
        let (mut h, c) = echo(EchoMode::Echo);
        h.input(c, b"hel");
        assert_eq!(h.output(c), b"hel");
        h.input(c, b"lo\n\x00\xff");
        assert_eq!(h.output(c), b"lo\n\x00\xff");
        assert!(h.unconsumed(c).is_empty());
    }

    #[test]
    fn echo_closes_gracefully_when_the_client_does() {
        let (mut h, c) = echo(EchoMode::Echo);
        h.input(c, b"x");
        h.peer_closed(c);
        assert_eq!(h.output(c), b"x");
        assert_eq!(h.recorded(c).ending, Some(Ending::Closed));
        assert!(!h.is_open(c));
    }

    // ----- mode upper ---------------------------------------------------

    #[test]
    fn upper_changes_ascii_letters_only() {
        let (mut h, c) = echo(EchoMode::Upper);
        h.input(c, "Hello, World é\n".as_bytes());
        assert_eq!(h.output(c), "HELLO, WORLD é\n".as_bytes());
    }

    // ----- mode stamp ---------------------------------------------------

    #[test]
    fn stamp_prefixes_each_line_with_the_wall_time() {
        let (mut h, c) = echo(EchoMode::Stamp);
        h.set_wall(UNIX_WALL);
        h.input(c, b"one\ntwo\n");
        let stamp = stamp();
        assert_eq!(h.text(c), format!("{stamp}one\n{stamp}two\n"));
    }

    #[test]
    fn stamp_keeps_a_partial_line_until_its_newline() {
        let (mut h, c) = echo(EchoMode::Stamp);
        h.set_wall(UNIX_WALL);
        h.input(c, b"hel");
        assert!(h.output(c).is_empty());
        assert_eq!(h.unconsumed(c), b"hel");
        h.input(c, b"lo\nwor");
        assert_eq!(h.text(c), format!("{}hello\n", stamp()));
        assert_eq!(h.unconsumed(c), b"wor");
    }

    #[test]
    fn stamp_sends_a_last_line_without_newline_when_the_client_closes() {
        let (mut h, c) = echo(EchoMode::Stamp);
        h.set_wall(UNIX_WALL);
        h.input(c, b"a\nlast");
        h.peer_closed(c);
        let stamp = stamp();
        assert_eq!(h.text(c), format!("{stamp}a\n{stamp}last"));
        assert_eq!(h.recorded(c).ending, Some(Ending::Closed));
    }

    #[test]
    fn stamp_sends_a_line_longer_than_max_line_in_parts_with_one_stamp() {
        let (mut h, c) = echo(EchoMode::Stamp);
        h.set_wall(UNIX_WALL);
        let long = vec![b'x'; MAX_LINE];
        h.input(c, &long);
        let stamp = stamp();
        let out = h.output(c);
        assert_eq!(out.len(), stamp.len() + MAX_LINE);
        assert!(out.starts_with(stamp.as_bytes()));
        h.input(c, b"yy\nz\n");
        assert_eq!(h.text(c), format!("yy\n{stamp}z\n"));
    }

    #[test]
    fn stamp_gives_the_same_output_however_the_input_is_split() {
        let input = b"first line\nsecond\n\nthird\n";
        let mut whole = None;
        for cut in 0..input.len() {
            let (mut h, c) = echo(EchoMode::Stamp);
            h.set_wall(UNIX_WALL);
            h.input(c, &input[..cut]);
            h.input(c, &input[cut..]);
            let out = h.output(c);
            assert_eq!(*whole.get_or_insert_with(|| out.clone()), out, "cut {cut}");
        }
    }
}
