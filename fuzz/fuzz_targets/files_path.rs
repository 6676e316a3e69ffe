//! The files jail's pure half (src/services/files/jail.rs): any working
//! directory and any path a client can send. Whatever it accepts must be
//! a clean relative path that stays beneath the home: no `..`, no empty or
//! `.` component, no NUL, no component over 255 bytes.
//!
//! Run: `cargo +nightly fuzz run files_path` in fuzz/ (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketlab::services::files::jail;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The working directory and the path, split at the first newline.
    let (cwd, path) = text.split_once('\n').unwrap_or(("", text));
    let Ok(cwd) = jail::resolve("", cwd) else {
        return;
    };
    if let Ok(resolved) = jail::resolve(&cwd, path) {
        assert!(!resolved.starts_with('/'), "{resolved:?} is relative");
        assert!(!resolved.contains('\0'));
        if !resolved.is_empty() {
            for part in resolved.split('/') {
                assert!(!part.is_empty() && part != "." && part != "..", "{resolved:?}");
                assert!(part.len() <= 255, "{resolved:?}");
            }
        }
    }
});
