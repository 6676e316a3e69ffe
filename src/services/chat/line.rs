//! Lines: cutting a client's byte stream into chat lines.
//!
//! A line ends at `\n` (a `\r` before it is dropped). A line longer than
//! `chat.max_line` is refused and skipped up to its `\n` without ever
//! holding more than `max_line + 1` of its bytes, whatever a client sends.

use super::memchr;

/// Cuts a byte stream into lines of at most `max_line` bytes, dropping
/// longer ones without ever holding more than `max_line + 1` of their bytes.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    state: Framing,
}

/// Where the splitter stands in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// At a line's start or within a line short enough to keep.
    Reading,
    /// Within a line already reported too long: bytes are dropped until
    /// its `\n`.
    Discarding,
}

/// What [`LineSplitter::take_line`] found at the start of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A complete line, without its `\n` and a `\r` before it.
    Line(&'a [u8]),
    /// A line over the limit; it is dropped (the rest of it too, as it
    /// arrives). Reported once per line.
    TooLong,
    /// No complete line: the unconsumed bytes (at most `max_line + 1`) must
    /// be offered again with what arrives next.
    Incomplete,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            max_line,
            state: Framing::Reading,
        }
    }

    /// Looks at the start of `input` and returns how many bytes it
    /// consumed and what they were. Call it again on the rest until it
    /// says [`Framed::Incomplete`].
    pub fn take_line<'a>(&mut self, input: &'a [u8]) -> (usize, Framed<'a>) {
        let mut skipped = 0;
        if self.state == Framing::Discarding {
            match memchr(b'\n', input) {
                None => return (input.len(), Framed::Incomplete),
                Some(end) => {
                    self.state = Framing::Reading;
                    skipped = end + 1;
                }
            }
        }
        let rest = &input[skipped..];
        match memchr(b'\n', rest) {
            Some(end) => {
                let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
                let framed = if line.len() > self.max_line {
                    Framed::TooLong
                } else {
                    Framed::Line(line)
                };
                (skipped + end + 1, framed)
            }
            // `max_line` bytes and a `\r` may still end well; one more byte
            // cannot. Drop what is here and the rest as it comes.
            None if rest.len() > self.max_line + 1 => {
                self.state = Framing::Discarding;
                (input.len(), Framed::TooLong)
            }
            None => (skipped, Framed::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` as successive reads, keeping unconsumed bytes the way
    /// the reactor does, and lists what came out: `line:<text>` or
    /// `too long`. Also checks that no more than `max + 1` bytes are ever
    /// kept.
    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(max);
        let mut kept: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            kept.extend_from_slice(chunk);
            let mut consumed = 0;
            loop {
                let (n, framed) = splitter.take_line(&kept[consumed..]);
                consumed += n;
                match framed {
                    Framed::Line(l) => out.push(format!("line:{}", String::from_utf8_lossy(l))),
                    Framed::TooLong => out.push("too long".to_string()),
                    Framed::Incomplete => break,
                }
            }
            kept.drain(..consumed);
            assert!(kept.len() <= max + 1, "kept {} bytes", kept.len());
        }
        out
    }

    #[test]
    fn lines_come_out_without_their_newline_or_carriage_return() {
        assert_eq!(
            split(10, &[b"ab\ncd\r\n\n"]),
            ["line:ab", "line:cd", "line:"]
        );
    }

    #[test]
    fn a_carriage_return_inside_a_line_is_kept() {
        assert_eq!(split(10, &[b"a\rb\n"]), ["line:a\rb"]);
    }

    #[test]
    fn a_line_split_over_reads_comes_out_whole() {
        assert_eq!(split(10, &[b"he", b"ll", b"o\r", b"\n"]), ["line:hello"]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_with_or_without_carriage_return() {
        assert_eq!(split(3, &[b"abc\n", b"abc\r\n"]), ["line:abc", "line:abc"]);
        // The same, arriving a byte at a time.
        let bytes = b"abc\r\n";
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(split(3, &chunks), ["line:abc"]);
    }

    #[test]
    fn a_line_one_byte_over_the_limit_is_too_long() {
        assert_eq!(split(3, &[b"abcd\nok\n"]), ["too long", "line:ok"]);
        assert_eq!(split(3, &[b"abcd\r\nok\n"]), ["too long", "line:ok"]);
    }

    #[test]
    fn a_long_line_is_reported_once_and_dropped_up_to_its_newline_across_reads() {
        assert_eq!(
            split(4, &[b"abcdef", b"ghij", b"klmn", b"op\nnext\n"]),
            ["too long", "line:next"]
        );
    }

    #[test]
    fn a_long_line_is_reported_before_its_newline_arrives() {
        assert_eq!(split(4, &[b"abcdefgh"]), ["too long"]);
    }

    #[test]
    fn discarding_ends_at_the_newline_even_at_the_start_of_a_read() {
        assert_eq!(split(2, &[b"abcd", b"\nx\n"]), ["too long", "line:x"]);
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_lines() {
        let input = b"one\r\n\nthis one is far too long\ntwo\nsixsix\r\nseven77\r\n";
        let whole = split(6, &[input]);
        assert_eq!(
            whole,
            [
                "line:one",
                "line:",
                "too long",
                "line:two",
                "line:sixsix",
                "too long"
            ]
        );
        for size in 1..input.len() {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            assert_eq!(split(6, &chunks), whole, "chunks of {size}");
        }
    }
}
