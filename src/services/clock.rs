//! Wall-clock formatting shared by the services that tell the time.
//!
//! Services are handed the turn's wall-clock time (`Cx::wall_time`) rather
//! than reading the clock themselves, so they stay testable with any time.
//! Formatting goes through jiff's `strftime`, in the local time zone (the
//! `TZ` variable, else `/etc/localtime`), which jiff looks up once and
//! caches.

use std::time::SystemTime;

use jiff::ZonedDateTime as Zoned;
use jiff::tz::TimeZone;

/// `time` in the local time zone.
pub fn local(time: SystemTime) -> Zoned {
    let ts = jiff::Timestamp::try_from(time).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.to_zoned_datetime(TimeZone::system())
}

/// `YYYY-MM-DD HH:MM:SS`, the daytime service's format and the chat's.
pub fn datetime(time: SystemTime) -> String {
    local(time).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// C's `ctime()` layout without its newline: `Mon Nov  3 09:05:01 2026`.
pub fn ctime(time: SystemTime) -> String {
    local(time).strftime("%a %b %e %H:%M:%S %Y").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ctime_pads_the_day_with_a_space() {
        // 2026-11-03 09:05:01 UTC; the zone is forced so the test holds anywhere.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_793_696_701);
        let z = jiff::Timestamp::try_from(t)
            .unwrap()
            .to_zoned_datetime(TimeZone::UTC);
        assert_eq!(
            z.strftime("%a %b %e %H:%M:%S %Y").to_string(),
            "Tue Nov  3 09:05:01 2026"
        );
    }
}
