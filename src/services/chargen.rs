//! chargen (RFC 864): a character generator, paced by the client.
//!
//! # Format
//!
//! ```text
//! daemon: !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefgh\r\n
//!         "#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghi\r\n
//!         ... (line k starts k characters further along the 95 printable
//!         characters from space to `~`, wrapping; 72 characters a line)
//! client: anything it sends is ignored
//! ```
//!
//! # Pacing
//!
//! The stream is endless, so the question is only how fast to produce it.
//! A blocking server would loop on `send()` and let the kernel block it.
//! Here the session writes a batch, and the reactor asks for the next one
//! (`on_output_drained`) only when the unsent output has fallen below the
//! low watermark, which happens only as fast as the client reads. A client
//! that stops reading costs at most one batch plus the kernel's buffers.
//!
//! The 95 distinct lines are built once into one [`Bytes`]; every batch is
//! a set of zero-copy slices of it, so producing output copies nothing.
//!
//! ```text
//!   on_open ──> write batch ──> (reactor flushes) ──> on_output_drained ─┐
//!                  ^                                                     │
//!                  └─────────────────────────────────────────────────────┘
//! ```

use std::sync::OnceLock;

use bytes::Bytes;

use super::Cx;

/// Characters in one line, without the `\r\n`.
pub const LINE_WIDTH: usize = 72;
/// The printable ASCII characters cycled through: space to `~`.
const PRINTABLE: usize = 95;
/// Bytes produced per batch (about 16 KiB: enough to keep the socket's
/// send buffer busy, small enough to keep a stalled client cheap).
const BATCH_LINES: usize = 220;

/// Where the next line starts in the cycle.
#[derive(Default)]
pub struct Session {
    next_line: usize,
}

impl Session {
    fn produce(&mut self, cx: &mut Cx<'_>) {
        let cycle = cycle();
        let line_len = LINE_WIDTH + 2;
        let mut left = BATCH_LINES;
        while left > 0 {
            // As many consecutive lines as the cycle holds from here.
            let run = left.min(PRINTABLE - self.next_line);
            let start = self.next_line * line_len;
            cx.write_shared(cycle.slice(start..start + run * line_len));
            self.next_line = (self.next_line + run) % PRINTABLE;
            left -= run;
        }
    }
}

impl super::Session for Session {
    fn on_open(&mut self, cx: &mut Cx<'_>) {
        self.produce(cx);
    }

    fn on_input(&mut self, input: &[u8], _cx: &mut Cx<'_>) -> usize {
        input.len() // RFC 864: "any data received is thrown away".
    }

    fn wants_output_drained(&self) -> bool {
        true
    }

    fn on_output_drained(&mut self, cx: &mut Cx<'_>) {
        self.produce(cx);
    }

    /// A client that shuts down its sending side may still be reading:
    /// keep generating until it closes for good (the write then fails).
    fn on_peer_closed(&mut self, _input: &[u8], _cx: &mut Cx<'_>) {}
}

/// The 95 lines of one full cycle, each with its `\r\n`, built once.
pub fn cycle() -> Bytes {
    static CYCLE: OnceLock<Bytes> = OnceLock::new();
    CYCLE
        .get_or_init(|| {
            let mut all = Vec::with_capacity(PRINTABLE * (LINE_WIDTH + 2));
            for k in 0..PRINTABLE {
                all.extend_from_slice(&line(k));
            }
            Bytes::from(all)
        })
        .clone()
}

/// Line `k` of the stream (0 = the first), with its `\r\n`.
pub fn line(k: usize) -> Vec<u8> {
    // The RFC's first line starts with `!`, the second printable character.
    let first = (1 + k) % PRINTABLE;
    let mut l: Vec<u8> = (0..LINE_WIDTH)
        .map(|i| b' ' + ((first + i) % PRINTABLE) as u8)
        .collect();
    l.extend_from_slice(b"\r\n");
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_rfc_sample() {
        assert_eq!(
            line(0),
            b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n"
        );
    }

    #[test]
    fn each_line_starts_one_character_further_and_wraps() {
        assert_eq!(line(1)[0], b'"');
        // Line 93 starts at `~`, line 94 wraps around to the space.
        assert_eq!(line(93)[0], b'~');
        assert_eq!(line(93)[1], b' ');
        assert_eq!(line(94)[0], b' ');
        assert_eq!(line(95), line(0));
    }

    // ----- A session, through the test harness --------------------------

    use crate::config::Config;
    use crate::service_id::ServiceId;
    use crate::services::testing::harness;

    /// Lines `from..to` of the stream, concatenated.
    fn lines(from: usize, to: usize) -> Vec<u8> {
        (from..to).flat_map(line).collect()
    }

    #[test]
    fn a_batch_is_written_on_open_and_another_each_time_output_drains() {
        let mut h = harness(Config::default());
        let c = h.open(ServiceId::Chargen);
        assert_eq!(h.output(c), lines(0, BATCH_LINES));
        h.drain(c);
        assert_eq!(h.output(c), lines(BATCH_LINES, 2 * BATCH_LINES));
        h.drain(c);
        assert_eq!(h.output(c), lines(2 * BATCH_LINES, 3 * BATCH_LINES));
    }

    #[test]
    fn input_is_thrown_away_and_a_half_close_does_not_stop_the_stream() {
        let mut h = harness(Config::default());
        let c = h.open(ServiceId::Chargen);
        h.output(c);
        h.input(c, b"ignored\n");
        assert!(h.output(c).is_empty());
        assert!(h.unconsumed(c).is_empty());
        h.peer_closed(c);
        assert!(h.is_open(c));
        h.drain(c);
        assert_eq!(h.output(c), lines(BATCH_LINES, 2 * BATCH_LINES));
    }
}
