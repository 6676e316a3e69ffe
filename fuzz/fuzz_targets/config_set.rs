//! `socketlab serve --set KEY=VALUE` (src/config/): any text as one
//! `--set`, through the same loading, schema check and validation the
//! daemon does at start. A refusal is fine; a panic is not.
//!
//! Run: `cargo +nightly fuzz run config_set` in fuzz/ (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketlab::config::{self, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(set) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = config::load(None, &[set.to_string()], &Overrides::default()) {
        // What loaded prints and loads again (`--print-config`).
        let _ = config.to_toml(None);
    }
});
