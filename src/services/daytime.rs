//! daytime (RFC 867): the time, as text.
//!
//! # Format
//!
//! ```text
//! TCP:  (connect)               daemon: 2026-11-03 09:05:01\n  then FIN
//! UDP:  client: (empty)         daemon: 2026-11-03 09:05:01
//!       client: %H:%M           daemon: 09:05
//!       client: %Q              daemon: error: unknown specifier %Q
//! ```
//!
//! Times are local. A UDP datagram that is not empty is a `strftime`
//! format, checked before it is used: only the specifiers PROTOCOL.md §3
//! lists are allowed, so a client can neither reach formatting features
//! the contract does not promise nor make the reply depend on the library.

use std::time::SystemTime;

use super::Cx;
use super::clock;

/// Longest format accepted, in bytes.
pub const MAX_FORMAT: usize = 256;

/// The specifiers a format may use (after `%`).
const ALLOWED: &[u8] = b"YmdHMSXxaAbBjpyZz%";

pub struct Session;

impl super::Session for Session {
    fn on_open(&mut self, cx: &mut Cx<'_>) {
        let mut line = clock::datetime(cx.wall_time());
        line.push('\n');
        cx.write(line.as_bytes());
        cx.close();
    }

    fn on_input(&mut self, input: &[u8], _cx: &mut Cx<'_>) -> usize {
        input.len()
    }
}

/// Answers one datagram: the time, in the format it holds if any.
pub fn answer_datagram(datagram: &[u8], wall: SystemTime, reply: &mut Vec<u8>) -> bool {
    match format_time(datagram, wall) {
        Ok(text) => reply.extend_from_slice(text.as_bytes()),
        Err(reason) => {
            reply.extend_from_slice(b"error: ");
            reply.extend_from_slice(reason.as_bytes());
        }
    }
    true
}

/// Formats `wall` as the datagram asks, or says why it cannot.
pub fn format_time(datagram: &[u8], wall: SystemTime) -> Result<String, String> {
    if datagram.is_empty() {
        return Ok(clock::datetime(wall));
    }
    let zoned = clock::local(wall);
    let format = check_format(datagram, false)?;
    match jiff::fmt::strtime::format(&format, &zoned) {
        Ok(text) => Ok(text),
        // A zone without a known abbreviation: the contract says the
        // numeric offset stands in for it.
        Err(_) => jiff::fmt::strtime::format(&check_format(datagram, true)?, &zoned)
            .map_err(|e| format!("cannot format: {e}")),
    }
}

/// Validates a format (UTF-8, at most [`MAX_FORMAT`] bytes, only allowed
/// specifiers, no lone `%` at the end) and translates it for jiff: `%x` and
/// `%X` become the C locale's `%m/%d/%y` and `%H:%M:%S` (jiff's own defaults
/// differ), and with `offset_for_zone` `%Z` becomes `%z`.
pub fn check_format(datagram: &[u8], offset_for_zone: bool) -> Result<String, String> {
    if datagram.len() > MAX_FORMAT {
        return Err(format!("format longer than {MAX_FORMAT} bytes"));
    }
    let format =
        std::str::from_utf8(datagram).map_err(|_| "format is not valid UTF-8".to_string())?;
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => return Err("lone % at the end of the format".into()),
            Some('x') => out.push_str("%m/%d/%y"),
            Some('X') => out.push_str("%H:%M:%S"),
            Some('Z') if offset_for_zone => out.push_str("%z"),
            Some(s) if s.is_ascii() && ALLOWED.contains(&(s as u8)) => {
                out.push('%');
                out.push(s);
            }
            Some(s) => return Err(format!("unknown specifier %{s}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_793_696_701)
    }

    #[test]
    fn every_listed_specifier_is_accepted() {
        for spec in [
            "%Y", "%m", "%d", "%H", "%M", "%S", "%X", "%x", "%a", "%A", "%b", "%B", "%j", "%p",
            "%y", "%Z", "%z", "%%",
        ] {
            assert!(format_time(spec.as_bytes(), t()).is_ok(), "{spec}");
        }
    }

    #[test]
    fn bad_formats_say_why() {
        assert_eq!(
            check_format(b"%Q", false).unwrap_err(),
            "unknown specifier %Q"
        );
        assert_eq!(
            check_format(b"abc %", false).unwrap_err(),
            "lone % at the end of the format"
        );
        assert!(
            check_format(&[0xff, 0xfe], false)
                .unwrap_err()
                .contains("UTF-8")
        );
        assert!(
            check_format(&[b'a'; 257], false)
                .unwrap_err()
                .contains("256")
        );
        assert!(check_format(&[b'a'; 256], false).is_ok());
        assert!(check_format("%é".as_bytes(), false).is_err());
        assert_eq!(format_time(b"%%x", t()).unwrap(), "%x");
    }

    #[test]
    fn percent_percent_is_a_literal_percent() {
        assert_eq!(format_time(b"100%%", t()).unwrap(), "100%");
    }

    #[test]
    fn x_and_big_x_use_the_c_locale() {
        let x = format_time(b"%x|%X", t()).unwrap();
        let (date, time) = x.split_once('|').unwrap();
        assert_eq!(date.len(), 8, "{x}"); // mm/dd/yy
        assert_eq!(time.len(), 8, "{x}"); // HH:MM:SS
        assert_eq!(&date[2..3], "/");
        assert_eq!(&time[2..3], ":");
    }

    // ----- A session, through the test harness --------------------------

    #[test]
    fn a_connection_gets_the_time_then_a_graceful_close() {
        use crate::config::Config;
        use crate::service_id::ServiceId;
        use crate::services::testing::{Ending, harness};

        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut h = harness(Config::default());
        h.set_wall(wall);
        let c = h.open(ServiceId::Daytime);
        assert_eq!(h.text(c), format!("{}\n", clock::datetime(wall)));
        assert_eq!(h.recorded(c).ending, Some(Ending::Closed));
        assert!(!h.is_open(c));
    }
}
