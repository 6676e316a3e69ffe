//! daytime's strftime format parser (src/services/daytime.rs): any
//! datagram, at any time a clock can show.
//!
//! Run: `cargo +nightly fuzz run daytime_format` in fuzz/ (docs/fuzzing.md).
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use socketlab::services::daytime;

fuzz_target!(|data: &[u8]| {
    let Some((when, format)) = data.split_first_chunk::<8>() else {
        return;
    };
    // Any time from 1970 on, up to far past what calendars print.
    let secs = u64::from_le_bytes(*when);
    let Some(wall) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)) else {
        return;
    };
    let mut reply = Vec::new();
    daytime::answer_datagram(format, wall, &mut reply);
    assert!(!reply.is_empty(), "every datagram gets an answer");
    for zone_as_offset in [false, true] {
        let _ = daytime::check_format(format, zone_as_offset);
    }
});
