//! The lines of `bench chat`: writing and reading back the probe lines the
//! sender says, and classifying what the chat service sends (PROTOCOL.md §4).
//! Pure functions, tested in `tests.rs`.

/// The fixed part of a probe line's text: 10 digits of line number, a
/// space, 15 digits of nanoseconds, a space.
pub(super) const PROBE_HEADER: usize = 27;

/// What the padding of probe lines is drawn from.
const PADDING: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Appends the text of line `seq`, sent `sent_ns` after the run started,
/// `size` bytes long, followed by `\n`.
pub(super) fn write_probe(seq: u64, sent_ns: u64, size: usize, out: &mut Vec<u8>) {
    // The widths are fixed so every line has exactly `size` bytes; the
    // modulo keeps absurd values from widening the field.
    let header = format!(
        "{:010} {:015} ",
        seq % 10_000_000_000,
        sent_ns % 1_000_000_000_000_000
    );
    out.extend_from_slice(header.as_bytes());
    out.extend((0..size - PROBE_HEADER).map(|i| padding_byte(seq, i)));
    out.push(b'\n');
}

fn padding_byte(seq: u64, i: usize) -> u8 {
    PADDING[((seq as usize % PADDING.len()) + i) % PADDING.len()]
}

/// Names the line numbers `first` to `last` inclusive: `line 7` or `lines 7..9`.
pub(super) fn lines(first: u64, last: u64) -> String {
    if first == last {
        format!("line {first}")
    } else {
        format!("lines {first}..{last}")
    }
}

/// A probe line, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Probe {
    pub(super) seq: u64,
    pub(super) sent_ns: u64,
}

/// Why a line from the sender is not a correct probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ProbeError {
    Length { expected: usize, found: usize },
    Header,
    Padding { at: usize },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Length { expected, found } => {
                write!(f, "text of {found} bytes, sent {expected} (corrupted)")
            }
            ProbeError::Header => write!(f, "line number or time garbled (corrupted)"),
            ProbeError::Padding { at } => write!(f, "byte {at} of the text differs (corrupted)"),
        }
    }
}

/// Reads and checks the text of a probe line of `size` bytes.
pub(super) fn read_probe(text: &str, size: usize) -> Result<Probe, ProbeError> {
    let bytes = text.as_bytes();
    if bytes.len() != size {
        return Err(ProbeError::Length {
            expected: size,
            found: bytes.len(),
        });
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let field = &text[range];
        field
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| field.parse().ok())
            .flatten()
    };
    let (Some(seq), Some(sent_ns)) = (digits(0..10), digits(11..26)) else {
        return Err(ProbeError::Header);
    };
    if bytes[10] != b' ' || bytes[26] != b' ' {
        return Err(ProbeError::Header);
    }
    if let Some(at) = bytes[PROBE_HEADER..]
        .iter()
        .enumerate()
        .position(|(i, &b)| b != padding_byte(seq, i))
    {
        return Err(ProbeError::Padding {
            at: PROBE_HEADER + at,
        });
    }
    Ok(Probe { seq, sent_ns })
}

/// A line from the chat service, classified (PROTOCOL.md §4).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ChatLine<'a> {
    /// `* welcome <nick>; room lobby; <N> online; /help for commands`
    Welcome { nick: &'a str },
    /// `* <nick> joined <room>`
    Joined { nick: &'a str },
    /// Any other `* ` line.
    Notice,
    /// `! error: <reason>`
    Error(&'a str),
    /// `<YYYY-MM-DD HH:MM:SS> <nick>: <text>`
    Said { nick: &'a str, text: &'a str },
    /// Anything else.
    Unknown,
}

pub(super) fn classify(line: &str) -> ChatLine<'_> {
    if let Some(notice) = line.strip_prefix("* ") {
        if let Some(rest) = notice.strip_prefix("welcome ") {
            let nick = rest.split(';').next().unwrap_or("").trim();
            return ChatLine::Welcome { nick };
        }
        let mut words = notice.split(' ');
        return match (words.next(), words.next(), words.next(), words.next()) {
            (Some(nick), Some("joined"), Some(_room), None) => ChatLine::Joined { nick },
            _ => ChatLine::Notice,
        };
    }
    if let Some(reason) = line.strip_prefix("! ") {
        return ChatLine::Error(reason);
    }
    // Date and time are two space-separated words; the nick ends at ": ".
    let mut parts = line.splitn(3, ' ');
    let (Some(_date), Some(_time), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return ChatLine::Unknown;
    };
    match rest.split_once(": ") {
        Some((nick, text)) if !nick.contains(' ') => ChatLine::Said { nick, text },
        _ => ChatLine::Unknown,
    }
}
