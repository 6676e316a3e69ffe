//! chat's line splitter and command parser (src/services/chat.rs), as the
//! session uses them: lines cut from a stream split into reads of a size
//! the first byte chooses, each valid UTF-8 line parsed as a command.
//!
//! Run: `cargo +nightly fuzz run chat_lines` in fuzz/ (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketlab::services::chat::{self, Framed, LineSplitter};

/// A small line limit, so the fuzzer reaches "too long" quickly.
const MAX_LINE: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(split.max(1));
    let mut splitter = LineSplitter::new(MAX_LINE);
    // The reactor keeps what a session does not consume and offers it
    // again with the next read.
    let mut pending = Vec::new();
    for read in data.chunks(read_size) {
        pending.extend_from_slice(read);
        let mut at = 0;
        loop {
            let (used, framed) = splitter.take_line(&pending[at..]);
            assert!(at + used <= pending.len());
            at += used;
            match framed {
                Framed::Line(line) => {
                    assert!(line.len() <= MAX_LINE);
                    if let Ok(text) = std::str::from_utf8(line) {
                        if !text.is_empty() {
                            let _ = chat::parse(text);
                        }
                    }
                }
                Framed::TooLong => {}
                Framed::Incomplete => break,
            }
            if used == 0 {
                break;
            }
        }
        pending.drain(..at);
        // The splitter never asks the reactor to keep more than a line.
        assert!(pending.len() <= MAX_LINE + 1, "{}", pending.len());
    }
});
