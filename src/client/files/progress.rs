//! The progress bar of a transfer: bytes done, rate, time left.
//!
//! ```text
//! get big.iso [#############>-----------]  412.0 MiB / 1.0 GiB  38.5 MiB/s  ETA 0:16
//! ```
//!
//! A resumed transfer starts the bar at its offset, and its rate counts
//! only the bytes moved in this run: a download that resumes at 900 MiB of
//! 1 GiB did not move 900 MiB in its first second. That is why the figures
//! come from [`stats`], a pure function of the position, the offset and
//! the time elapsed, instead of indicatif's own estimate.
//!
//! The bar is drawn on stderr and only when stderr is a terminal (and the
//! output is not `--json`): piped into a script or a file, the client is
//! quiet apart from its one result line.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Bytes in a mebibyte, the unit of the rate.
const MIB: f64 = (1u64 << 20) as f64;

/// A transfer's progress bar, or nothing when progress is not shown.
#[derive(Debug)]
pub struct Meter {
    bar: Option<ProgressBar>,
}

impl Meter {
    /// A meter that shows nothing.
    pub fn hidden() -> Meter {
        Meter { bar: None }
    }

    /// A bar for moving bytes `start..total`, labelled `label`, drawn on
    /// stderr when `show` is true.
    pub fn new(show: bool, label: &str, total: u64, start: u64) -> Meter {
        if !show {
            return Meter::hidden();
        }
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {stats}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>-")
            .with_key(
                "stats",
                move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                    let total = state.len().unwrap_or(0);
                    let _ = out.write_str(&stats(state.pos(), total, start, state.elapsed()));
                },
            );
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(label.to_string())
            .with_position(start);
        Meter { bar: Some(bar) }
    }

    /// Counts `n` more bytes moved.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Removes the bar (the result line follows it).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        // A transfer that failed half-way leaves its bar where it stopped,
        // so the error line below it says where that was.
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}

/// The figures after the bar: `done / total  rate  ETA`, the rate over the
/// bytes moved since `start` (the resume offset).
pub fn stats(position: u64, total: u64, start: u64, elapsed: Duration) -> String {
    let moved = position.saturating_sub(start);
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        moved as f64 / seconds
    } else {
        0.0
    };
    let mut text = format!("{} / {}", size(position), size(total));
    let _ = write!(text, "  {:.1} MiB/s", rate / MIB);
    let left = total.saturating_sub(position);
    if left == 0 {
        text.push_str("  done");
    } else if rate > 0.0 {
        let _ = write!(text, "  ETA {}", clock((left as f64 / rate).ceil() as u64));
    } else {
        text.push_str("  ETA -");
    }
    text
}

/// A byte count in the largest binary unit that keeps it at least 1:
/// `512 B`, `1.5 KiB`, `412.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Seconds as `m:ss`, or `h:mm:ss` from an hour up.
pub fn clock(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_the_largest_binary_unit() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(412 << 20), "412.0 MiB");
        assert_eq!(size(1 << 30), "1.0 GiB");
    }

    #[test]
    fn clocks_show_minutes_and_hours() {
        assert_eq!(clock(0), "0:00");
        assert_eq!(clock(75), "1:15");
        assert_eq!(clock(3600 + 61), "1:01:01");
    }

    #[test]
    fn the_rate_counts_only_bytes_moved_since_the_resume_offset() {
        // Resumed at 900 MiB of 1000 MiB; 50 MiB moved in 2 s.
        let line = stats(950 << 20, 1000 << 20, 900 << 20, Duration::from_secs(2));
        assert_eq!(line, "950.0 MiB / 1000.0 MiB  25.0 MiB/s  ETA 0:02");
    }

    #[test]
    fn before_any_time_has_passed_there_is_no_eta() {
        assert_eq!(
            stats(0, 2048, 0, Duration::ZERO),
            "0 B / 2.0 KiB  0.0 MiB/s  ETA -"
        );
        assert_eq!(
            stats(2048, 2048, 0, Duration::from_secs(1)),
            "2.0 KiB / 2.0 KiB  0.0 MiB/s  done"
        );
    }
}
