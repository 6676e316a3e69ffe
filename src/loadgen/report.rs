//! The summary at the end of a run: a table for people, or one JSON object
//! (`--json`) for scripts such as a comparison harness.
//!
//! The JSON object has the same fields for every workload —
//! `workload`, `addr`, `clean`, `interrupted`, `elapsed_s`, `failures`,
//! `failures_total`, `server` (from `--admin`, or null), `server_note`
//! (why there is no server side), `process` (from `--pid`, or null) — plus
//! the workload's own figures at the top level (for echo: `messages`,
//! `messages_per_s`, `latency`, ...).
//!
//! Failures also go to stderr, one line per kind of failure, naming the
//! connections it happened on, so a failing run says what was wrong even
//! when stdout goes to a file.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::loadgen::admin::ServerReport;
use crate::loadgen::process::ProcessReport;
use crate::loadgen::units;

/// A workload's own figures: serialised into the JSON, and listed as rows
/// of the table.
pub trait Figures: Serialize {
    /// `(label, value)` rows for the summary table.
    fn rows(&self) -> Vec<(&'static str, String)>;
}

/// Something that went wrong in a run, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The connection (or member, or datagram) it happened on, as numbered
    /// by the load generator from 0; absent when it concerns the whole run.
    pub connection: Option<u64>,
    /// What went wrong, in words.
    pub error: String,
}

impl Failure {
    pub fn on(connection: u64, error: impl Into<String>) -> Failure {
        Failure {
            connection: Some(connection),
            error: error.into(),
        }
    }

    pub fn run(error: impl Into<String>) -> Failure {
        Failure {
            connection: None,
            error: error.into(),
        }
    }
}

/// At most this many failures are kept in the JSON; `failures_total`
/// gives the full count.
const MAX_LISTED_FAILURES: usize = 100;

/// Everything a run reports.
#[derive(Serialize)]
pub struct Report<T> {
    pub workload: &'static str,
    pub addr: String,
    /// True when nothing failed.
    pub clean: bool,
    /// True when Ctrl-C (or SIGTERM) stopped the run early.
    pub interrupted: bool,
    pub elapsed_s: f64,
    #[serde(flatten)]
    pub figures: T,
    pub failures_total: usize,
    pub failures: Vec<Failure>,
    pub server: Option<ServerReport>,
    pub server_note: Option<String>,
    pub process: Option<ProcessReport>,
}

impl<T: Figures> Report<T> {
    /// Prints the failures to stderr, then the table or the JSON to stdout.
    pub fn print(mut self, json: bool) {
        for line in failure_lines(&self.failures) {
            eprintln!("error: {line}");
        }
        if json {
            self.failures.truncate(MAX_LISTED_FAILURES);
            match serde_json::to_string_pretty(&self) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("error: cannot write the JSON report: {e}"),
            }
        } else {
            print!("{}", self.table());
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut rows = vec![(
            "run",
            format!(
                "{} {}, {:.2} s{}",
                self.workload,
                self.addr,
                self.elapsed_s,
                if self.interrupted {
                    " (interrupted)"
                } else {
                    ""
                }
            ),
        )];
        rows.extend(self.figures.rows());
        if let Some(s) = &self.server {
            rows.push((
                "server",
                format!(
                    "service {}: {}/s in, {}/s out, {} → {} open",
                    s.service,
                    units::bytes(s.bytes_received_per_s),
                    units::bytes(s.bytes_sent_per_s),
                    s.connections_open_start,
                    s.connections_open_end
                ),
            ));
            rows.push((
                "server loop",
                format!(
                    "{} turns/s, {} events/s, {} events/turn",
                    units::rate(s.loop_iterations_per_s),
                    units::rate(s.events_per_s),
                    optional(s.events_per_iteration, 2)
                ),
            ));
            rows.push((
                "server/unit",
                format!(
                    "{} turns, {} events per {}",
                    optional(s.iterations_per_unit, 3),
                    optional(s.events_per_unit, 3),
                    unit_of_work(self.workload)
                ),
            ));
        } else if let Some(note) = &self.server_note {
            rows.push(("server", note.clone()));
        }
        if let Some(p) = &self.process {
            rows.push((
                "server cpu",
                format!(
                    "{:.3} s, {} per {} (pid {})",
                    p.cpu_s,
                    p.cpu_per_unit_us
                        .map(|us| units::nanos((us * 1e3) as u64))
                        .unwrap_or_else(|| "-".into()),
                    unit_of_work(self.workload),
                    p.pid
                ),
            ));
            rows.push((
                "server rss",
                format!(
                    "{} → {}",
                    units::bytes(p.rss_start_bytes as f64),
                    units::bytes(p.rss_end_bytes as f64)
                ),
            ));
        }
        rows.push((
            "result",
            if self.clean {
                "clean".to_string()
            } else {
                format!(
                    "FAILED ({} failures, listed on stderr)",
                    self.failures_total
                )
            },
        ));
        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(label, value)| format!("{label:<width$}  {value}\n"))
            .collect()
    }
}

/// One line per distinct error, naming up to five connections it happened
/// on: a thousand refused connections make one line, not a thousand.
pub fn failure_lines(failures: &[Failure]) -> Vec<String> {
    let mut by_error: BTreeMap<&str, Vec<Option<u64>>> = BTreeMap::new();
    let mut order = Vec::new();
    for f in failures {
        let entry = by_error.entry(&f.error).or_default();
        if entry.is_empty() {
            order.push(f.error.as_str());
        }
        entry.push(f.connection);
    }
    order
        .into_iter()
        .map(|error| {
            let connections: Vec<u64> = by_error[error].iter().flatten().copied().collect();
            match connections.len() {
                0 => error.to_string(),
                1 => format!("connection {}: {error}", connections[0]),
                n => {
                    let listed: Vec<String> =
                        connections.iter().take(5).map(u64::to_string).collect();
                    let more = if n > 5 {
                        format!(" and {} more", n - 5)
                    } else {
                        String::new()
                    };
                    format!("connections {}{more}: {error}", listed.join(", "))
                }
            }
        })
        .collect()
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// What one unit of client work is in each workload, for the labels of the
/// per-unit figures: the server's turns, events and CPU time divided by the
/// units the client completed (see `Outcome::completed`).
pub fn unit_of_work(workload: &str) -> &'static str {
    match workload {
        "echo" => "echoed message",
        "chat" => "delivered line",
        "udp" => "answered datagram",
        "conns" => "connection opened",
        _ => "unit of work",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Dummy {
        messages: u64,
    }

    impl Figures for Dummy {
        fn rows(&self) -> Vec<(&'static str, String)> {
            vec![("messages", self.messages.to_string())]
        }
    }

    fn report(failures: Vec<Failure>) -> Report<Dummy> {
        Report {
            workload: "echo",
            addr: "127.0.0.1:7".into(),
            clean: failures.is_empty(),
            interrupted: false,
            elapsed_s: 1.0,
            figures: Dummy { messages: 42 },
            failures_total: failures.len(),
            failures,
            server: None,
            server_note: Some("no admin endpoint".into()),
            process: None,
        }
    }

    #[test]
    fn json_puts_the_figures_at_the_top_level() {
        let json = serde_json::to_value(report(vec![])).unwrap();
        assert_eq!(json["messages"], 42);
        assert_eq!(json["clean"], true);
        assert!(json["server"].is_null());
    }

    #[test]
    fn the_table_aligns_labels_and_says_the_result() {
        let table = report(vec![Failure::on(3, "boom")]).table();
        assert!(table.contains("messages  42\n"), "{table}");
        assert!(table.contains("server    no admin endpoint"), "{table}");
        assert!(table.contains("FAILED (1 failures"), "{table}");
    }

    #[test]
    fn identical_failures_share_a_line() {
        let mut failures: Vec<Failure> = (0..8).map(|c| Failure::on(c, "refused")).collect();
        failures.push(Failure::on(9, "reset"));
        failures.push(Failure::run("nothing connected"));
        assert_eq!(
            failure_lines(&failures),
            [
                "connections 0, 1, 2, 3, 4 and 3 more: refused",
                "connection 9: reset",
                "nothing connected"
            ]
        );
    }
}
