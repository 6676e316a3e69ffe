//! Fixtures shared by the configuration's unit tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::load::load_layers;
use super::{Config, ConfigError, ListenAddr, Overrides};

pub(crate) fn sets(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Loads from a file body, `--set` pairs and flags, without touching the
/// file system.
pub(crate) fn load_text(
    file: &str,
    set: &[&str],
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    load_layers(Some(("test.toml", file)), &sets(set), flags)
}

pub(crate) fn load_sets(set: &[&str]) -> Result<Config, ConfigError> {
    load_layers(None, &sets(set), &Overrides::default())
}

/// The error message of a load that must fail.
pub(crate) fn error_of(result: Result<Config, ConfigError>) -> String {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `message` mentions every one of `parts`.
pub(crate) fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} should mention {part:?}"
        );
    }
    assert!(!message.contains('\n'), "{message:?} should be one line");
    assert!(message.starts_with("config: "), "{message:?}");
}

/// A file in the system's temp directory, removed when dropped.
pub(crate) struct TempFile(pub(crate) PathBuf);

impl TempFile {
    pub(crate) fn with(text: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "socketlab-config-test-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("write temp config");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(crate) fn inet(text: &str) -> ListenAddr {
    ListenAddr::Inet(text.parse().expect("test address"))
}
