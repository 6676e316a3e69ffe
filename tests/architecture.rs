//! The layering rules of ARCHITECTURE.md, checked on the source text.
//!
//! `cargo test --test architecture`. A rule that only lives in a document
//! erodes one convenient import at a time; these tests fail the build the
//! day it happens, and name the file and line.

use std::fs;
use std::path::{Path, PathBuf};

/// The Rust files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Lines of code (not comments) in `files` that contain any of `needles`,
/// as `path:line: text`.
fn code_lines_naming(files: &[PathBuf], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for path in files {
        let text = fs::read_to_string(path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if needles.iter().any(|n| code.contains(n)) {
                found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

fn src(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path)
}

#[test]
fn the_reactor_never_names_the_services() {
    let files = rust_files(&src("reactor"));
    assert!(files.len() > 5, "src/reactor/ not found");
    let found = code_lines_naming(&files, &["crate::services", "services::"]);
    assert!(
        found.is_empty(),
        "services depend on the reactor, never the reverse:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_service_ids_depend_on_nothing_of_the_crate() {
    let found = code_lines_naming(&[src("service_id.rs")], &["crate::", "super::"]);
    assert!(
        found.is_empty(),
        "service_id.rs is a leaf:\n{}",
        found.join("\n")
    );
}
