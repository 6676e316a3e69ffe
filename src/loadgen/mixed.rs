//! `bench mixed`: a soak. Every service under load at once, for a long
//! time, while the daemon's resources are watched; the run passes when
//! they come back to where they started.
//!
//! ```text
//! socketlab bench mixed --ready-file R --pid P [--duration 2m] [--scale N] [--json]
//! ```
//!
//! # What runs
//!
//! One thread per activity ([`traffic::Activity`], times `--scale`): echo
//! lives of random sizes ending in a half-close, a close or an RST; a slow
//! reader that makes the daemon hold output back; chat members who talk,
//! check every line, then `/quit`, close or reset; exec logins that run a
//! program, or abandon a running one; logins with a wrong mac; UDP echo
//! and daytime; discard, chargen and daytime over TCP. The addresses come
//! from the daemon's `--ready-file`, the exec key from its data dir.
//!
//! # What is watched
//!
//! Each second the daemon's resident memory and CPU time (`/proc/P/stat`,
//! `/proc/P/status`), its open descriptors (the entries of `/proc/P/fd`),
//! and from `GET /stats` the open connections and the loop's longest turn
//! (`loop.max_turn_seconds`, a high-water mark since the daemon started)
//! are recorded as a [`Sample`] and printed. `--json` prints the series.
//!
//! # When it passes
//!
//! The baseline is sampled after a warm-up (one life of each activity,
//! then a wait until every connection is closed), so one-time costs are
//! not mistaken for growth: the helper pool's threads, tables grown on
//! first use. After the load stops the run waits (`--settle`) until the
//! daemon holds no client connection, then samples the end. [`judge`]
//! then checks, as pure functions over the samples (in [`verdict`], unit-tested there):
//!
//! - **settled**: no connection left open, so nothing was leaked in the
//!   slab or stuck in a state no event leaves.
//! - **descriptors**: at most `--fd-slack` (default [`FD_SLACK`]) more than
//!   the baseline. Every socket, pipe and pidfd a client caused must be
//!   closed once it is gone; the slack allows for descriptors the daemon
//!   opens on its own schedule (a rotated key file being read).
//! - **memory**: resident memory at most `--rss-slack` (default
//!   [`RSS_SLACK`](verdict::RSS_SLACK)) above the baseline. It cannot be asked to return
//!   exactly: the allocator keeps freed pages for reuse rather than giving
//!   them back, and the daemon keeps grown buffers' capacity on purpose.
//!   What is ruled out is memory that grows with the work done.
//! - **no growth under load**: in runs of at least [`MIN_TREND_SAMPLES`](verdict::MIN_TREND_SAMPLES)
//!   seconds, the peak of the last third of the load is compared with the
//!   peak of the middle third: memory may not rise by more than
//!   [`GROWTH_FRACTION`](verdict::GROWTH_FRACTION) (a leak grows with time, a working set levels
//!   off), descriptors by more than the slack.
//! - **loop turns**: the longest turn stayed under `--max-turn` (default
//!   [`MAX_TURN`](verdict::MAX_TURN)): nothing blocked the loop.
//!
//! A failed check, or a failed client life, makes the exit status 1.

pub mod traffic;
pub mod verdict;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::{Failure, Figures};
use super::units::{self, parse_duration, parse_size};
use super::{Common, Outcome, Session, UsageError, admin, process};
use traffic::{Activity, Tally, TallySnapshot, Targets};
use verdict::{Check, FD_SLACK, Limits, RSS_SLACK, Sample, judge};

/// Arguments of `socketlab bench mixed`.
#[derive(Debug, clap::Args)]
pub struct MixedArgs {
    /// The daemon's ready file (`serve --ready-file`): every service's
    /// address.
    #[arg(long, value_name = "PATH")]
    pub ready_file: PathBuf,
    /// The daemon's data directory, where the exec key is.
    #[arg(long, value_name = "DIR", default_value = "socketlab-data")]
    pub data_dir: PathBuf,
    /// The exec key file [default: <DATA_DIR>/secret.key].
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// How long the load runs.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Threads per activity.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub scale: u32,
    /// Run only these activities (comma-separated), to find which one a
    /// failed check comes from [default: all].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ACTIVITY")]
    pub only: Vec<Activity>,
    /// How long to wait, after the load, for the daemon to close every
    /// connection.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Descriptors the daemon may hold above its baseline at the end.
    #[arg(long, default_value_t = FD_SLACK)]
    pub fd_slack: u64,
    /// Resident memory the daemon may hold above its baseline at the end
    /// (bytes, or with K, M, G).
    #[arg(long, default_value_t = RSS_SLACK as usize, value_parser = parse_size)]
    pub rss_slack: usize,
    /// The longest loop turn allowed (the default is `MAX_TURN`).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub max_turn: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// The figures of a `mixed` run.
#[derive(Debug, Serialize)]
pub struct MixedFigures {
    pub duration_s: f64,
    pub scale: u32,
    pub activity: TallySnapshot,
    pub client_failures: u64,
    pub baseline: Option<Sample>,
    pub end: Option<Sample>,
    pub checks: Vec<Check>,
    pub series: Vec<Sample>,
}

impl Figures for MixedFigures {
    fn rows(&self) -> Vec<(&'static str, String)> {
        let a = &self.activity;
        let mut rows = vec![
            (
                "lives",
                format!(
                    "{} connects, {} echoes, {} slow reads, {} chat lines, {} resets",
                    units::count(a.connects),
                    units::count(a.echoed),
                    units::count(a.slow_reads),
                    units::count(a.chat_lines),
                    units::count(a.resets)
                ),
            ),
            (
                "",
                format!(
                    "exec {} runs, {} abandoned, {} bad logins refused; udp {} replies, {} lost; {} classic",
                    units::count(a.exec_runs),
                    units::count(a.exec_abandoned),
                    units::count(a.logins_refused),
                    units::count(a.udp_replies),
                    units::count(a.udp_lost),
                    units::count(a.classic)
                ),
            ),
        ];
        if let (Some(b), Some(e)) = (self.baseline, self.end) {
            let peak_rss = self.series.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
            let peak_fds = self.series.iter().map(|s| s.fds).max().unwrap_or(0);
            rows.push((
                "memory",
                format!(
                    "{} baseline, {} peak, {} end",
                    units::bytes(b.rss_bytes as f64),
                    units::bytes(peak_rss as f64),
                    units::bytes(e.rss_bytes as f64)
                ),
            ));
            rows.push((
                "descriptors",
                format!("{} baseline, {peak_fds} peak, {} end", b.fds, e.fds),
            ));
        }
        for c in &self.checks {
            let mark = if c.pass { "pass" } else { "FAIL" };
            rows.push(("check", format!("{mark} {}: {}", c.name, c.detail)));
        }
        rows
    }
}

/// Runs `socketlab bench mixed`.
pub fn run(args: MixedArgs, stop: Arc<AtomicBool>) -> ExitCode {
    let (targets, admin_addr) = match targets(&args) {
        Ok(t) => t,
        Err(e) => return super::usage_error(e),
    };
    let Some(pid) = args.common.pid else {
        return super::usage_error(UsageError(
            "bench mixed needs --pid: the daemon's memory and descriptors are what it judges"
                .into(),
        ));
    };
    let mut common = args.common.clone();
    common.admin.get_or_insert(admin_addr.clone());
    let limits = Limits {
        fd_slack: args.fd_slack,
        rss_slack: args.rss_slack as u64,
        max_turn: args.max_turn,
    };
    let scale = args.scale;
    let activities = if args.only.is_empty() {
        Activity::ALL.to_vec()
    } else {
        args.only.clone()
    };
    let duration = args.duration;
    let settle = args.settle;
    super::measure(
        "mixed",
        targets.echo,
        &common,
        None,
        "lives/s",
        stop,
        |session| {
            let plan = Plan {
                activities: &activities,
                duration,
                settle,
                scale,
                limits,
            };
            soak(session, &targets, pid, &admin_addr, &plan)
        },
    )
}

/// What one soak runs and how it is judged.
struct Plan<'a> {
    activities: &'a [Activity],
    duration: Duration,
    settle: Duration,
    scale: u32,
    limits: Limits,
}

/// Warm-up, baseline, load with a sample each second, settle, verdict.
fn soak(
    session: &Session,
    targets: &Targets,
    pid: u32,
    admin: &str,
    plan: &Plan,
) -> Outcome<MixedFigures> {
    let Plan {
        activities,
        duration,
        settle,
        scale,
        limits,
    } = *plan;
    let tally = Tally::default();
    let mut sampler = Sampler::new(pid, admin.to_string());

    // Warm-up: one life of each activity, then wait for quiet.
    eprintln!("warm-up: one life of each activity");
    let warm_until = Instant::now() + 3 * traffic::IO_TIMEOUT;
    std::thread::scope(|scope| {
        for (i, &activity) in activities.iter().enumerate() {
            let (tally, stop) = (&tally, &session.stop);
            scope.spawn(move || {
                traffic::run_lives(activity, targets, tally, 1, warm_until, stop, i as u64)
            });
        }
    });
    let _ = sampler.wait_quiet(Instant::now() + settle);
    let baseline = sampler.sample(-0.0);
    if let Some(b) = &baseline {
        eprintln!("baseline: {}", line(b));
    }

    // Load: every activity on `scale` threads, sampled once a second.
    let start = Instant::now();
    let until = start + duration;
    let mut series = Vec::new();
    std::thread::scope(|scope| {
        for round in 0..scale {
            for (i, &activity) in activities.iter().enumerate() {
                let (tally, stop) = (&tally, &session.stop);
                let seed = u64::from(round) * 97 + i as u64 + 1;
                scope.spawn(move || {
                    traffic::run_lives(activity, targets, tally, u64::MAX, until, stop, seed)
                });
            }
        }
        let mut next = start + Duration::from_secs(1);
        while next <= until && !session.stopped() {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            if let Some(s) = sampler.sample(start.elapsed().as_secs_f64()) {
                eprintln!("{}", line(&s));
                series.push(s);
            }
            next += Duration::from_secs(1);
        }
    });
    let elapsed = start.elapsed();

    eprintln!("load over; waiting for the daemon to close every connection");
    let settled = sampler.wait_quiet(Instant::now() + settle);
    let end = sampler.sample(start.elapsed().as_secs_f64());
    if let Some(e) = &end {
        eprintln!("end: {}", line(e));
    }

    let checks = match (&baseline, &end) {
        (Some(b), Some(e)) => judge(b, &series, e, settled, &limits),
        _ => vec![Check {
            name: "samples",
            pass: false,
            detail: format!("cannot read /proc/{pid}: the daemon is gone"),
        }],
    };
    let (mut failures, client_failures) = tally.take_failures();
    failures.extend(
        checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| Failure::run(format!("check {}: {}", c.name, c.detail))),
    );
    let activity = tally.snapshot();
    Outcome {
        completed: activity.connects,
        elapsed,
        failures,
        figures: MixedFigures {
            duration_s: elapsed.as_secs_f64(),
            scale,
            activity,
            client_failures,
            baseline,
            end,
            checks,
            series,
        },
    }
}

/// One sample as a progress line.
fn line(s: &Sample) -> String {
    format!(
        "{:>6.0}s  rss {:>10}  fds {:>5}  cpu {:>5.1}%  longest turn {:>9}  open {:>5}",
        s.t_s,
        units::bytes(s.rss_bytes as f64),
        s.fds,
        s.cpu_percent,
        s.max_turn_s
            .map_or_else(|| "-".into(), |t| format!("{:.1} ms", t * 1e3)),
        s.connections_open
            .map_or_else(|| "-".into(), |n| n.to_string()),
    )
}

/// Reads the daemon's side: `/proc/<pid>` and `GET /stats`.
struct Sampler {
    pid: u32,
    admin: String,
    /// The previous CPU reading, for the CPU used over the last interval.
    last_cpu: Option<(Instant, f64)>,
}

impl Sampler {
    fn new(pid: u32, admin: String) -> Sampler {
        Sampler {
            pid,
            admin,
            last_cpu: None,
        }
    }

    /// One sample; `None` when the process is gone.
    fn sample(&mut self, t_s: f64) -> Option<Sample> {
        let p = process::sample(self.pid).ok()?;
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .ok()?
            .count() as u64;
        let now = Instant::now();
        let cpu_s = p.cpu.as_secs_f64();
        let cpu_percent = self.last_cpu.map_or(0.0, |(then, cpu)| {
            (cpu_s - cpu) * 100.0 / now.duration_since(then).as_secs_f64().max(1e-3)
        });
        self.last_cpu = Some((now, cpu_s));
        let stats = admin::fetch_stats_json(&self.admin).ok();
        let max_turn_s = stats
            .as_ref()
            .and_then(|v| v["loop"]["max_turn_seconds"].as_f64());
        let connections_open = stats.as_ref().and_then(client_connections);
        Some(Sample {
            t_s,
            rss_bytes: p.rss_bytes,
            fds,
            cpu_s,
            cpu_percent,
            max_turn_s,
            connections_open,
        })
    }

    /// Waits until the daemon holds no client connection, at most until
    /// `deadline`; returns whether it got there.
    fn wait_quiet(&mut self, deadline: Instant) -> bool {
        loop {
            let open = admin::fetch_stats_json(&self.admin)
                .ok()
                .as_ref()
                .and_then(client_connections);
            if open == Some(0) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Open connections of every service but admin (whose count includes the
/// request asking).
fn client_connections(stats: &serde_json::Value) -> Option<u64> {
    let services = stats["services"].as_object()?;
    Some(
        services
            .iter()
            .filter(|(name, _)| name.as_str() != "admin")
            .filter_map(|(_, s)| s["connections_open"].as_u64())
            .sum(),
    )
}

/// The services' addresses from the ready file, the key, and the admin
/// address.
fn targets(args: &MixedArgs) -> Result<(Targets, String), UsageError> {
    let path = &args.ready_file;
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("--ready-file {}: {e}", path.display())))?;
    let ready: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("--ready-file {}: {e}", path.display())))?;
    let addr = |service: &str, transport: &str| {
        ready[service][transport]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                UsageError(format!(
                    "--ready-file {}: no {service} {transport} address (is {service} enabled, on TCP?)",
                    path.display()
                ))
            })
    };
    let key_path = args
        .key_file
        .clone()
        .unwrap_or_else(|| crate::auth::key::default_path(&args.data_dir));
    let key = crate::auth::key::load(&key_path)
        .map_err(|e| UsageError(format!("exec key: {e}")))?
        .key;
    let admin: std::net::SocketAddr = addr("admin", "tcp")?;
    Ok((
        Targets {
            echo: addr("echo", "tcp")?,
            echo_udp: addr("echo", "udp")?,
            discard: addr("discard", "tcp")?,
            chargen: addr("chargen", "tcp")?,
            daytime: addr("daytime", "tcp")?,
            daytime_udp: addr("daytime", "udp")?,
            chat: addr("chat", "tcp")?,
            exec: addr("exec", "tcp")?,
            key,
        },
        admin.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_connections_leave_out_admin() {
        let stats = serde_json::json!({"services": {
            "admin": {"connections_open": 1},
            "echo": {"connections_open": 2},
            "chat": {"connections_open": 3},
        }});
        assert_eq!(client_connections(&stats), Some(5));
        assert_eq!(client_connections(&serde_json::json!({})), None);
    }
}
