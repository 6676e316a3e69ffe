//! Logging to stderr with levels, for the `log` facade.
//!
//! The level comes from `--log-level`, else `RUST_LOG`, else `info`. Each
//! line is `<time> <LEVEL> <message>`; the time is UTC with milliseconds so
//! lines from a load test can be lined up with a client's.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = jiff::Timestamp::now();
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        // One write per line, so lines from helper threads never interleave.
        let line = format!(
            "{} {level} {}\n",
            now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger. `level` is a name (`error` ... `trace`, or `off`).
pub fn init(level: Option<&str>) -> Result<(), String> {
    let name = level
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter: LevelFilter = name.trim().parse().map_err(|_| {
        format!("unknown log level `{name}` (error, warn, info, debug, trace, off)")
    })?;
    static LOGGER: Stderr = Stderr;
    // A second call (tests) keeps the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(filter);
    Ok(())
}
