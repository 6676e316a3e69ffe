//! The length-prefixed JSON frame decoder (src/codec/frame.rs), driven as
//! the exec session drives it: every header goes through exec's request
//! validation, and a `stdin` request makes the decoder expect its payload.
//! The first byte of the input chooses how the rest is split into reads,
//! since a peer chooses that too.
//!
//! Run: `cargo +nightly fuzz run frame_decoder` in fuzz/ (docs/fuzzing.md).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use socketlab::codec::frame::{FrameDecoder, Item};
use socketlab::services::exec::request::{self, Request};

/// A small header limit, so the fuzzer reaches "too large" quickly.
const MAX_HEADER: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(split.max(1));
    let mut decoder = FrameDecoder::new(MAX_HEADER);
    let mut buf = BytesMut::new();
    for read in data.chunks(read_size) {
        buf.extend_from_slice(read);
        // Every item consumes at least one byte or ends the loop, so this
        // is bounded by the input's length (plus one empty last payload).
        for _ in 0..=data.len() + 1 {
            match decoder.decode(&mut buf) {
                Ok(Some(Item::Header(header))) => {
                    if let Ok(Request::Stdin { size }) = request::parse(&header) {
                        decoder.expect_payload(size as u64);
                    }
                }
                Ok(Some(Item::Payload { .. })) => {}
                Ok(None) => break,
                // The session closes the connection here.
                Err(_) => return,
            }
        }
        // What waits in the buffer is bounded by the header limit.
        assert!(buf.len() <= MAX_HEADER + read_size + 4, "{}", buf.len());
    }
});
