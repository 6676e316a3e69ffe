//! exec's request validation (src/services/exec/request.rs) on any JSON
//! object a client can send, and the error frame a refusal is answered
//! with.
//!
//! Run: `cargo +nightly fuzz run exec_request` in fuzz/ (docs/fuzzing.md).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use socketlab::codec::frame::Header;
use socketlab::services::exec::request;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = serde_json::from_slice::<Header>(data) else {
        return;
    };
    if let Err(e) = request::parse(&header) {
        let mut out = BytesMut::new();
        e.encode(&mut out);
        assert!(out.len() > 4, "an error frame has a header");
    }
});
