//! Test support for the chat service: a member is one connection with a
//! buffered reader, and helpers that check exact line shapes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use crate::common::{Daemon, wait_until};

/// One chat connection, read line by line.
pub struct Member {
    pub nick: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Member {
    /// Connects, checks the welcome and the lobby's joining notice, and
    /// learns the guest nick.
    pub fn join(d: &Daemon) -> Member {
        let mut m = Member::connect(d);
        let welcome = m.line();
        m.nick = welcome_nick(&welcome);
        m.expect(&format!("* {} joined lobby", m.nick));
        m
    }

    /// Connects without reading anything.
    pub fn connect(d: &Daemon) -> Member {
        let stream = d.connect("chat");
        Member::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Member {
        let writer = stream.try_clone().expect("clone stream");
        Member {
            nick: String::new(),
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Sends one line (a `\n` is added).
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to chat");
    }

    /// The next line, without its `\n`; fails the test on EOF or timeout.
    pub fn line(&mut self) -> String {
        self.try_line()
            .unwrap_or_else(|| panic!("{}: connection closed", self.nick))
    }

    /// The next line, or `None` at EOF.
    pub fn try_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert!(line.ends_with('\n'), "unterminated line {line:?}");
                line.pop();
                assert!(!line.ends_with('\r'), "the daemon sent a \\r: {line:?}");
                Some(line)
            }
            Err(e) => panic!("{}: reading a line: {e} (partial {line:?})", self.nick),
        }
    }

    /// Reads one line and checks it is exactly `expected`.
    pub fn expect(&mut self, expected: &str) {
        let line = self.line();
        assert_eq!(line, expected, "{} got an unexpected line", self.nick);
    }

    /// Reads a said line (`<date> <time> <rest>`), checks the time stamp
    /// and returns the rest (`nick: text` or `from -> to: text`).
    pub fn said(&mut self) -> String {
        let line = self.line();
        said_text(&line)
            .unwrap_or_else(|| panic!("{} expected a said line, got {line:?}", self.nick))
            .to_string()
    }

    /// Reads lines until one is exactly `wanted`; returns those before it.
    pub fn skip_until(&mut self, wanted: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let line = self.line();
            if line == wanted {
                return before;
            }
            before.push(line);
        }
    }

    /// Proves nothing else was queued for this member: asks `/who` and
    /// checks that its answer is the very next line.
    pub fn expect_nothing_queued(&mut self, room: &str) {
        self.send("/who");
        let line = self.line();
        assert!(
            line.starts_with(&format!("* in {room}: ")),
            "{} expected only the /who answer, got {line:?}",
            self.nick
        );
    }

    /// Reads until the daemon closes the connection; returns the lines.
    pub fn read_to_eof(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.try_line() {
            lines.push(line);
        }
        lines
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// Gives the reading half away (to a thread), keeping the writing one.
    pub fn split(self) -> (BufReader<TcpStream>, TcpStream) {
        (self.reader, self.writer)
    }
}

/// The nick in `* welcome <nick>; room lobby; <N> online; /help for commands`,
/// after checking the line's shape.
pub fn welcome_nick(line: &str) -> String {
    welcome_parts(line).0
}

/// The nick and N of a welcome line, after checking its shape.
pub fn welcome_parts(line: &str) -> (String, usize) {
    let rest = line
        .strip_prefix("* welcome ")
        .unwrap_or_else(|| panic!("not a welcome: {line:?}"));
    let (nick, rest) = rest.split_once("; room lobby; ").expect("welcome shape");
    let online = rest
        .strip_suffix(" online; /help for commands")
        .expect("welcome shape");
    (nick.to_string(), online.parse().expect("welcome count"))
}

/// For `YYYY-MM-DD HH:MM:SS <rest>`, checks the stamp's shape digit by
/// digit and returns the rest.
pub fn said_text(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    if b.len() < 20 || b[19] != b' ' {
        return None;
    }
    for (i, &c) in b[..19].iter().enumerate() {
        let ok = match i {
            4 | 7 => c == b'-',
            10 => c == b' ',
            13 | 16 => c == b':',
            _ => c.is_ascii_digit(),
        };
        if !ok {
            return None;
        }
    }
    Some(&line[20..])
}

#[test]
fn said_text_checks_the_stamp_shape() {
    assert_eq!(said_text("2026-11-03 09:05:01 ada: hi"), Some("ada: hi"));
    assert_eq!(said_text("2026-11-03T09:05:01 ada: hi"), None);
    assert_eq!(said_text("<2026-11-03 09:05:01> ada: hi"), None);
    assert_eq!(said_text("* ada joined lobby"), None);
}

/// Which reactor accepted `m`, read from the `--trace` line of its accept
/// (`trace 0.012345 r1 #13 chat 127.0.0.1:54321 accepted`): the daemon
/// must run with `--trace`.
pub fn reactor_of(d: &Daemon, m: &Member) -> usize {
    let needle = format!(" chat {} accepted", m.stream().local_addr().unwrap());
    let mut found = None;
    assert!(
        wait_until(|| {
            found = d
                .stderr()
                .lines()
                .find(|l| l.ends_with(&needle))
                .and_then(|l| l.split(' ').nth(2)?.strip_prefix('r')?.parse().ok());
            found.is_some()
        }),
        "no trace line of {needle:?}"
    );
    found.unwrap()
}
