//! Reading and writing the quantities the command line talks about:
//! durations (`10s`, `500ms`), sizes (`64`, `64K`), and the figures in the
//! load generator's reports (`1,523,456`, `85.2µs`, `9.27 MiB/s`). One
//! parser for each, shared by the clients and the load generator.
//!
//! The parsers are used as clap value parsers, so a bad value is a usage
//! error (exit status 2) with a message naming what was expected.

use std::time::Duration;

/// Parses a duration: a number with an optional unit, `ms`, `s`, `m` or `h`
/// (seconds when there is none), e.g. `10`, `2.5s`, `500ms`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{unit}` is not a time unit (use ms, s, m or h)")),
    };
    // A week is far beyond any sensible load test; the bound keeps
    // `Duration::from_secs_f64` away from values it would reject.
    if !(0.0..=604_800.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 7 days)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a byte count: a whole number with an optional `K`, `M` or `G`
/// suffix, powers of 1024 as in PROTOCOL.md's quotas (`64K` = 65,536),
/// optionally followed by `B` or `iB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    // `64KiB`, `64KB` and `64K` all mean 65,536; `64B` means 64.
    let unit_free = text
        .strip_suffix("iB")
        .or_else(|| text.strip_suffix('B'))
        .unwrap_or(text);
    let (number, multiplier) = match unit_free.char_indices().last() {
        Some((i, 'K' | 'k')) => (&unit_free[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&unit_free[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&unit_free[..i], 1 << 30),
        _ => (unit_free, 1),
    };
    let value: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 64, 4K, 1M)"))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Writes a whole number with thousands separators: `1,523,456`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Writes a rate per second with thousands separators, rounded to whole units.
pub fn rate(per_second: f64) -> String {
    if per_second.is_finite() && per_second >= 0.0 {
        count(per_second.round() as u64)
    } else {
        "-".to_string()
    }
}

/// Writes a latency given in nanoseconds with a unit that keeps three
/// significant figures readable: `850ns`, `85.2µs`, `3.10ms`, `1.20s`.
pub fn nanos(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// Writes a byte count in binary units: `512 B`, `9.75 MiB`, `1.20 GiB`.
/// Every figure socketlab prints uses these (the echo client, the load
/// generator, the dashboard), as sizes on its command line do (`64K` is
/// 65,536), so a rate read off one can be compared with another.
pub fn bytes(n: f64) -> String {
    const KIB: f64 = 1024.0;
    if n < KIB {
        format!("{n:.0} B")
    } else if n < KIB * KIB {
        format!("{:.2} KiB", n / KIB)
    } else if n < KIB * KIB * KIB {
        format!("{:.2} MiB", n / (KIB * KIB))
    } else {
        format!("{:.2} GiB", n / (KIB * KIB * KIB))
    }
}

/// Seconds as a float, for rates and JSON.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_default_to_seconds() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("9999999h").is_err());
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("64KB"), Ok(65_536));
        assert_eq!(parse_size("64B"), Ok(64));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("K").is_err());
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_523_456), "1,523,456");
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.50 KiB");
        assert_eq!(bytes(9.75 * 1024.0 * 1024.0), "9.75 MiB");
        assert_eq!(bytes(1.2 * 1024.0 * 1024.0 * 1024.0), "1.20 GiB");
    }

    #[test]
    fn latencies_keep_three_figures() {
        assert_eq!(nanos(850), "850ns");
        assert_eq!(nanos(85_240), "85.2µs");
        assert_eq!(nanos(3_100_000), "3.10ms");
        assert_eq!(nanos(1_200_000_000), "1.20s");
    }
}
