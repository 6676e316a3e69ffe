//! The server's side as the kernel sees it: CPU time and memory of a
//! process, read from `/proc/<pid>` (`--pid`).
//!
//! # Why CPU time per message
//!
//! On a small machine the load generator and the server share the cores,
//! so messages per second mostly measure how much CPU the generator leaves
//! over. The CPU time the *server* spends per message does not depend on
//! that, which makes it the fair figure for comparing servers. The kernel
//! keeps it per process in `/proc/<pid>/stat` (user and system time, in
//! clock ticks, all threads included). Resident memory (`VmRSS` in
//! `/proc/<pid>/status`) gives the memory per connection; socket buffers
//! live in the kernel and are not part of it.

use std::fs;
use std::time::Duration;

use serde::Serialize;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// User plus system CPU time consumed so far, all threads.
    pub cpu: Duration,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> Result<ProcessSample, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| format!("unexpected /proc/{pid}/stat layout"))?;
    let rss_bytes =
        vm_rss_bytes(&status).ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(ProcessSample {
        cpu: ticks_to_duration(ticks),
        rss_bytes,
    })
}

/// What the server spent between two samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    /// CPU time (user + system) between the samples, in seconds.
    pub cpu_s: f64,
    /// That CPU time divided by the workload's completed units
    /// (messages, deliveries, datagrams), in microseconds; absent when
    /// nothing was completed.
    pub cpu_per_unit_us: Option<f64>,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
}

impl ProcessReport {
    pub fn between(
        pid: u32,
        start: ProcessSample,
        end: ProcessSample,
        completed: u64,
    ) -> ProcessReport {
        let cpu = end.cpu.saturating_sub(start.cpu).as_secs_f64();
        ProcessReport {
            pid,
            cpu_s: cpu,
            cpu_per_unit_us: (completed > 0).then(|| cpu * 1e6 / completed as f64),
            rss_start_bytes: start.rss_bytes,
            rss_end_bytes: end.rss_bytes,
        }
    }
}

/// utime + stime from the text of `/proc/<pid>/stat`. The second field is
/// the command name in parentheses, which may itself contain spaces and
/// parentheses, so fields are counted from the *last* `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (field 14) and stime
    // (field 15) are the 12th and 13th fields here, counting from 1.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS:   1234 kB` from the text of `/proc/<pid>/status`, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 {
        per_second as u64
    } else {
        100
    };
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    25 7 0 0 20 0 1 0 123 456 78";
        assert_eq!(cpu_ticks(stat), Some(32));
    }

    #[test]
    fn vm_rss_is_read_in_kibibytes() {
        let status = "Name:\tx\nVmPeak:\t  900 kB\nVmRSS:\t    1536 kB\nThreads:\t1\n";
        assert_eq!(vm_rss_bytes(status), Some(1536 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0);
    }
}
