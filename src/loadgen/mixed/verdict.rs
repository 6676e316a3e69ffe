//! The verdict of `bench mixed`: pure functions over the recorded
//! samples, so what passes and what fails is tested without a daemon.
//! The module opening of [`super`] ("When it passes") says why each check
//! and each slack is what it is.

use std::time::Duration;

use serde::Serialize;

use crate::units;

/// Descriptors the daemon may hold above its baseline at the end.
pub const FD_SLACK: u64 = 8;
/// Resident memory the daemon may hold above its baseline at the end:
/// room for the allocator's kept pages and buffers grown under load (a
/// debug daemon's baseline is about 11 MB, and a 2-minute soak leaves it
/// within 2 MB of that), and far below what a leak of even a few bytes per
/// client life adds up to over a long soak's hundreds of thousands of
/// lives.
pub const RSS_SLACK: u64 = 16 << 20;
/// How much the memory peak of the last third of the load may exceed
/// that of the middle third.
pub const GROWTH_FRACTION: f64 = 0.10;
/// Below this many load samples the growth check is skipped: thirds of a
/// shorter run are too short to tell a trend from noise.
pub const MIN_TREND_SAMPLES: usize = 9;
/// The longest loop turn allowed. Generous, because the machine running a
/// soak is often busy with other things, and a turn is measured in wall
/// time; a blocked loop shows as seconds.
pub const MAX_TURN: Duration = Duration::from_secs(2);

/// The daemon as seen at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the load started (negative for the baseline).
    pub t_s: f64,
    pub rss_bytes: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: u64,
    /// CPU time used since the daemon started, all threads.
    pub cpu_s: f64,
    /// CPU used over the second before, in percent of one core.
    pub cpu_percent: f64,
    /// The loop's longest turn so far, from `/stats` (absent without it).
    pub max_turn_s: Option<f64>,
    /// Client connections open, all services but admin (absent without
    /// `/stats`).
    pub connections_open: Option<u64>,
}

/// The limits [`judge`] applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub fd_slack: u64,
    pub rss_slack: u64,
    pub max_turn: Duration,
}

/// One pass/fail finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

/// Judges a run from its samples: see the module's "When it passes".
pub fn judge(
    baseline: &Sample,
    load: &[Sample],
    end: &Sample,
    settled: bool,
    limits: &Limits,
) -> Vec<Check> {
    let mib = |b: u64| units::bytes(b as f64);
    let mut checks = vec![
        Check {
            name: "settled",
            pass: settled,
            detail: match end.connections_open {
                Some(n) => format!("{n} client connections open at the end"),
                None => "no /stats to count open connections".into(),
            },
        },
        Check {
            name: "descriptors",
            pass: end.fds <= baseline.fds + limits.fd_slack,
            detail: format!(
                "{} at the end, {} at the baseline, slack {}",
                end.fds, baseline.fds, limits.fd_slack
            ),
        },
        Check {
            name: "memory",
            pass: end.rss_bytes <= baseline.rss_bytes + limits.rss_slack,
            detail: format!(
                "{} at the end, {} at the baseline, slack {}",
                mib(end.rss_bytes),
                mib(baseline.rss_bytes),
                mib(limits.rss_slack)
            ),
        },
    ];
    checks.push(match growth(load) {
        None => Check {
            name: "no growth",
            pass: true,
            detail: format!(
                "skipped: {} samples, fewer than {MIN_TREND_SAMPLES}",
                load.len()
            ),
        },
        Some(((rss_mid, rss_last), (fds_mid, fds_last))) => {
            let rss_ok = rss_last as f64 <= rss_mid as f64 * (1.0 + GROWTH_FRACTION);
            let fds_ok = fds_last <= fds_mid + limits.fd_slack;
            Check {
                name: "no growth",
                pass: rss_ok && fds_ok,
                detail: format!(
                    "peaks, middle third → last third: memory {} → {}, descriptors {fds_mid} → {fds_last}",
                    mib(rss_mid),
                    mib(rss_last)
                ),
            }
        }
    });
    let longest = load
        .iter()
        .chain([end])
        .filter_map(|s| s.max_turn_s)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    checks.push(Check {
        name: "loop turns",
        pass: longest.is_none_or(|t| t <= limits.max_turn.as_secs_f64()),
        detail: match longest {
            Some(t) => format!(
                "longest {:.1} ms, limit {:.0} ms",
                t * 1e3,
                limits.max_turn.as_secs_f64() * 1e3
            ),
            None => "no loop figures in /stats".into(),
        },
    });
    checks
}

/// The peaks of the middle and last thirds of the load, for memory and
/// for descriptors; `None` when the run is too short to tell.
fn growth(load: &[Sample]) -> Option<((u64, u64), (u64, u64))> {
    if load.len() < MIN_TREND_SAMPLES {
        return None;
    }
    let third = load.len() / 3;
    let (middle, last) = (&load[third..2 * third], &load[2 * third..]);
    let peak = |s: &[Sample], f: fn(&Sample) -> u64| s.iter().map(f).max().unwrap_or(0);
    Some((
        (peak(middle, |s| s.rss_bytes), peak(last, |s| s.rss_bytes)),
        (peak(middle, |s| s.fds), peak(last, |s| s.fds)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sample(t_s: f64, rss_mib: u64, fds: u64) -> Sample {
        Sample {
            t_s,
            rss_bytes: rss_mib * MIB,
            fds,
            cpu_s: 0.0,
            cpu_percent: 0.0,
            max_turn_s: Some(0.004),
            connections_open: Some(0),
        }
    }

    fn limits() -> Limits {
        Limits {
            fd_slack: FD_SLACK,
            rss_slack: RSS_SLACK,
            max_turn: MAX_TURN,
        }
    }

    fn failed(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().filter(|c| !c.pass).map(|c| c.name).collect()
    }

    /// A working set that levels off: 30 seconds at 40 MiB, 100 fds.
    fn plateau() -> Vec<Sample> {
        (1..=30).map(|t| sample(t as f64, 40, 100)).collect()
    }

    #[test]
    fn a_run_that_returns_to_its_baseline_passes() {
        let checks = judge(
            &sample(0.0, 6, 20),
            &plateau(),
            &sample(31.0, 12, 22),
            true,
            &limits(),
        );
        assert_eq!(failed(&checks), Vec::<&str>::new());
    }

    #[test]
    fn leaked_descriptors_fail() {
        let end = sample(31.0, 8, 20 + FD_SLACK + 1);
        let checks = judge(&sample(0.0, 6, 20), &plateau(), &end, true, &limits());
        assert_eq!(failed(&checks), ["descriptors"]);
    }

    #[test]
    fn memory_kept_past_the_slack_fails() {
        let end = sample(31.0, 6 + RSS_SLACK / MIB + 1, 20);
        let checks = judge(&sample(0.0, 6, 20), &plateau(), &end, true, &limits());
        assert_eq!(failed(&checks), ["memory"]);
    }

    #[test]
    fn memory_that_grows_with_time_fails_even_if_it_comes_back() {
        // A steady climb of 2 MiB a second: the last third's peak is far
        // above the middle third's.
        let load: Vec<Sample> = (1..=30)
            .map(|t| sample(t as f64, 20 + 2 * t, 100))
            .collect();
        let checks = judge(
            &sample(0.0, 6, 20),
            &load,
            &sample(31.0, 8, 20),
            true,
            &limits(),
        );
        assert_eq!(failed(&checks), ["no growth"]);
    }

    #[test]
    fn descriptors_that_grow_with_time_fail() {
        let load: Vec<Sample> = (1..=30)
            .map(|t| sample(t as f64, 40, 100 + 3 * t))
            .collect();
        let checks = judge(
            &sample(0.0, 6, 20),
            &load,
            &sample(31.0, 8, 20),
            true,
            &limits(),
        );
        assert_eq!(failed(&checks), ["no growth"]);
    }

    #[test]
    fn a_short_run_skips_the_trend_but_not_the_rest() {
        let load: Vec<Sample> = (1..MIN_TREND_SAMPLES as u64)
            .map(|t| sample(t as f64, 10 * t, 100))
            .collect();
        let checks = judge(
            &sample(0.0, 6, 20),
            &load,
            &sample(9.0, 8, 20),
            true,
            &limits(),
        );
        let trend = checks.iter().find(|c| c.name == "no growth").unwrap();
        assert!(
            trend.pass && trend.detail.starts_with("skipped"),
            "{trend:?}"
        );
        assert_eq!(failed(&checks), Vec::<&str>::new());
    }

    #[test]
    fn connections_left_open_fail() {
        let mut end = sample(31.0, 8, 20);
        end.connections_open = Some(3);
        let checks = judge(&sample(0.0, 6, 20), &plateau(), &end, false, &limits());
        assert_eq!(failed(&checks), ["settled"]);
        assert!(checks[0].detail.starts_with("3 client connections"));
    }

    #[test]
    fn a_long_loop_turn_fails() {
        let mut load = plateau();
        load[12].max_turn_s = Some(MAX_TURN.as_secs_f64() + 0.5);
        let checks = judge(
            &sample(0.0, 6, 20),
            &load,
            &sample(31.0, 8, 20),
            true,
            &limits(),
        );
        assert_eq!(failed(&checks), ["loop turns"]);
    }

    #[test]
    fn without_stats_the_loop_check_says_so() {
        let mut load = plateau();
        for s in &mut load {
            s.max_turn_s = None;
        }
        let mut end = sample(31.0, 8, 20);
        end.max_turn_s = None;
        let checks = judge(&sample(0.0, 6, 20), &load, &end, true, &limits());
        let turns = checks.iter().find(|c| c.name == "loop turns").unwrap();
        assert!(turns.pass);
        assert_eq!(turns.detail, "no loop figures in /stats");
    }
}
