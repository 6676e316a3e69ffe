//! Checks on the whole, typed configuration once every layer is applied:
//! addresses parse, ports fit, limits are large enough to work.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::{Config, ConfigError, ListenAddr, Reactors};
use crate::services::ServiceId;

impl Config {
    /// Checks the configuration as a whole, after every layer is applied.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        fn at_least<T: PartialOrd + fmt::Display>(
            key: &str,
            value: T,
            min: T,
            unit: &str,
        ) -> Result<(), ConfigError> {
            if value < min {
                return Err(ConfigError(format!(
                    "`{key}` must be at least {min}{unit} (got {value})"
                )));
            }
            Ok(())
        }

        parse_bind(&self.bind)?;
        let largest_offset = ServiceId::ALL
            .iter()
            .map(|id| id.port_offset())
            .max()
            .unwrap_or(0);
        if self.port_base != 0 && self.port_base.checked_add(largest_offset).is_none() {
            return Err(port_overflow(self.port_base));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError("`data_dir` must not be empty".to_string()));
        }
        if self.data_dir.to_str().is_none() {
            return Err(ConfigError(format!(
                "`data_dir` {:?} is not valid UTF-8",
                self.data_dir.display()
            )));
        }
        if self.exec.workdir.to_str().is_none() {
            return Err(ConfigError(format!(
                "`exec.workdir` {:?} is not valid UTF-8",
                self.exec.workdir.display()
            )));
        }
        if let Reactors::Fixed(n) = self.reactors {
            at_least("reactors", n, 1, " (or \"auto\")")?;
        }
        if let Some(cluster) = &self.chat.cluster {
            check_cluster(cluster)
                .map_err(|reason| ConfigError(format!("`chat.cluster` = {cluster:?}: {reason}")))?;
        }
        // A nick's claim is refreshed every third of its TTL, so a TTL
        // under 3 s would be refreshed more often than once a second.
        at_least(
            "chat.cluster_nick_ttl_s",
            self.chat.cluster_nick_ttl_s,
            3,
            "",
        )?;
        if let Some(max) = self.limits.max_connections {
            at_least("limits.max_connections", max, 1, "")?;
        }

        // Every listen must parse, enabled or not: a typo in a disabled
        // section is still a typo. Two enabled services on one address would
        // fail at bind time with "address in use"; saying which two is kinder.
        let mut taken: BTreeMap<String, ServiceId> = BTreeMap::new();
        for id in ServiceId::ALL {
            let service = self.service(id);
            let addr = self.listen_addr(id)?;
            at_least(
                &format!("{id}.max_pending_output"),
                service.max_pending_output,
                1024,
                " bytes",
            )?;
            // Port 0 asks the kernel for a fresh port each time, so any
            // number of services may ask for it on one IP.
            let fixed = match &addr {
                ListenAddr::Inet(inet) => inet.port() != 0,
                ListenAddr::Unix(_) => true,
            };
            if service.enabled
                && fixed
                && let Some(other) = taken.insert(addr.to_string(), id)
            {
                return Err(ConfigError(format!(
                    "`{other}` and `{id}` both listen on {addr}"
                )));
            }
        }

        at_least("chat.max_line", self.chat.max_line, 1, " bytes")?;
        at_least("frames.max_header", self.frames.max_header, 64, " bytes")?;
        at_least("exec.max_running", self.exec.max_running, 1, "")?;
        at_least(
            "auth.handshake_timeout_s",
            self.auth.handshake_timeout_s,
            1,
            " s",
        )?;
        if self.exec.allow.iter().any(|name| name.is_empty()) {
            return Err(ConfigError(
                "`exec.allow` must not contain an empty program name".to_string(),
            ));
        }
        Ok(())
    }
}

/// Checks a `chat.cluster` value: `redis://HOST:PORT` (HOST a name or an
/// address, IPv6 in brackets) or `unix:/path` (an absolute path). Nothing
/// is resolved or connected here: the daemon that uses the value reports
/// an unreachable Redis at run time, since Redis may start after it.
fn check_cluster(text: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected redis://HOST:PORT or unix:/path";
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("a Unix socket needs an absolute path; {EXPECTED}"));
        }
        if path.contains('\0') {
            return Err("a Unix socket path cannot contain a NUL byte".to_string());
        }
        return Ok(());
    }
    let Some(authority) = text.strip_prefix("redis://") else {
        return Err(EXPECTED.to_string());
    };
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(format!("no port; {EXPECTED}"));
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if !(bracketed || plain) {
        return Err(format!(
            "`{host}` is not a host name or address; {EXPECTED}"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("`{port}` is not a port (1-65535); {EXPECTED}")),
    }
}

pub(super) fn parse_bind(bind: &str) -> Result<IpAddr, ConfigError> {
    bind.parse().map_err(|_| {
        ConfigError(format!(
            "`bind` = {bind:?} is not an IP address (e.g. 127.0.0.1 or ::1)"
        ))
    })
}

pub(super) fn port_overflow(port_base: u16) -> ConfigError {
    let largest = ServiceId::ALL
        .into_iter()
        .max_by_key(|id| id.port_offset())
        .unwrap_or(ServiceId::Admin);
    ConfigError(format!(
        "`port_base` = {port_base} is too large: {largest} would listen on {} (over 65535); use at most {} or 0 for ephemeral ports",
        u32::from(port_base) + u32::from(largest.port_offset()),
        u16::MAX - largest.port_offset(),
    ))
}

/// Parses a `<service>.listen` value. The reason says what was expected.
pub(super) fn parse_listen(text: &str) -> Result<ListenAddr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(
                "a Unix socket needs a path, e.g. unix:/run/socketlab/echo.sock".to_string(),
            );
        }
        if path.contains('\0') {
            return Err("a Unix socket path cannot contain a NUL byte".to_string());
        }
        // The path must fit in `sockaddr_un.sun_path`, with its
        // terminating NUL; checking now beats a confusing bind error later.
        let room = max_unix_path_len();
        if path.len() > room {
            return Err(format!(
                "a Unix socket path is at most {room} bytes, this one has {}",
                path.len()
            ));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    text.parse::<SocketAddr>()
        .map(ListenAddr::Inet)
        .map_err(|_| {
            if text.matches(':').count() > 1 && !text.starts_with('[') {
                "an IPv6 address takes brackets, e.g. [::1]:7007".to_string()
            } else {
                "expected IP:PORT (e.g. 127.0.0.1:9000), [IPv6]:PORT or unix:/path".to_string()
            }
        })
}

fn max_unix_path_len() -> usize {
    // SAFETY: `sockaddr_un` is plain old data; all zeroes is a valid value.
    let addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_path.len() - 1
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    use std::path::PathBuf;

    use crate::config::fixtures::*;
    use crate::config::{ListenAddr, Overrides, load};
    use crate::services::ServiceId;

    // ---- Validation ------------------------------------------------------

    #[test]
    fn bad_echo_mode() {
        let message = error_of(load_sets(&["echo.mode=loud"]));
        assert_mentions(&message, &["`echo.mode`", "loud", "upper", "stamp"]);
    }

    #[test]
    fn bad_listen_addresses() {
        for (bad, hint) in [
            ("nonsense", "IP:PORT"),
            ("localhost:9000", "IP:PORT"),
            ("127.0.0.1", "IP:PORT"),
            ("127.0.0.1:99999", "IP:PORT"),
            ("::1:7007", "brackets"),
            ("unix:", "needs a path"),
        ] {
            let message = error_of(load_sets(&[&format!("echo.listen={bad}")]));
            assert_mentions(&message, &["`echo.listen`", hint]);
        }
    }

    #[test]
    fn a_unix_path_that_does_not_fit_sun_path_is_refused() {
        let long = format!("unix:/{}", "x".repeat(200));
        let message = error_of(load_sets(&[&format!("chat.listen={long}")]));
        assert_mentions(&message, &["`chat.listen`", "at most"]);
    }

    #[test]
    fn ipv6_listen() {
        let c = load_sets(&["echo.listen=[::1]:7007"]).unwrap();
        let expected = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 7007);
        assert_eq!(
            c.listen_addr(ServiceId::Echo).unwrap(),
            ListenAddr::Inet(expected)
        );
    }

    #[test]
    fn ipv6_bind_applies_to_derived_addresses() {
        let c = load_sets(&["bind=::1"]).unwrap();
        assert_eq!(c.listen_addr(ServiceId::Echo).unwrap(), inet("[::1]:7007"));
        assert_eq!(
            c.listen_addr(ServiceId::Echo).unwrap().to_string(),
            "[::1]:7007"
        );
        let c = load_sets(&["bind=::1", "port_base=0"]).unwrap();
        assert_eq!(c.listen_addr(ServiceId::Admin).unwrap(), inet("[::1]:0"));
    }

    #[test]
    fn bind_must_be_an_ip_address() {
        for bad in ["localhost", "127.0.0.1:80", "[::1]", ""] {
            let message = error_of(load_sets(&[&format!("bind=\"{bad}\"")]));
            assert_mentions(&message, &["`bind`", "IP address"]);
        }
        let flags = Overrides {
            bind: Some("example.org".to_string()),
            ..Overrides::default()
        };
        assert_mentions(&error_of(load(None, &[], &flags)), &["`bind`"]);
    }

    #[test]
    fn unix_listen() {
        let c = load_sets(&["echo.listen=unix:/run/socketlab/echo.sock"]).unwrap();
        let addr = c.listen_addr(ServiceId::Echo).unwrap();
        assert_eq!(
            addr,
            ListenAddr::Unix(PathBuf::from("/run/socketlab/echo.sock"))
        );
        assert_eq!(addr.to_string(), "unix:/run/socketlab/echo.sock");
        // The other services keep their derived addresses.
        assert_eq!(
            c.listen_addr(ServiceId::Chat).unwrap(),
            inet("127.0.0.1:7194")
        );
    }

    #[test]
    fn port_base_plus_largest_offset_must_fit() {
        // 65023 + 512 = 65535 fits exactly.
        let c = load_sets(&["port_base=65023"]).unwrap();
        assert_eq!(
            c.listen_addr(ServiceId::Exec).unwrap(),
            inet("127.0.0.1:65535")
        );
        let message = error_of(load_sets(&["port_base=65024"]));
        assert_mentions(&message, &["`port_base`", "65024", "65023"]);
        let flags = Overrides {
            port_base: Some(65535),
            ..Overrides::default()
        };
        assert_mentions(&error_of(load(None, &[], &flags)), &["`port_base`"]);
    }

    #[test]
    fn limits_that_could_not_work_are_refused() {
        let cases = [
            ("chat.max_line=0", "`chat.max_line` must be at least 1"),
            (
                "frames.max_header=63",
                "`frames.max_header` must be at least 64",
            ),
            (
                "echo.max_pending_output=1023",
                "`echo.max_pending_output` must be at least 1024",
            ),
            ("admin.max_pending_output=0", "`admin.max_pending_output`"),
            (
                "exec.max_running=0",
                "`exec.max_running` must be at least 1",
            ),
            (
                "auth.handshake_timeout_s=0",
                "`auth.handshake_timeout_s` must be at least 1",
            ),
            (
                "limits.max_connections=0",
                "`limits.max_connections` must be at least 1",
            ),
            ("exec.allow=[\"ls\", \"\"]", "`exec.allow`"),
            ("data_dir=\"\"", "`data_dir`"),
        ];
        for (set, expected) in cases {
            let message = error_of(load_sets(&[set]));
            assert_mentions(&message, &[expected]);
        }
        // The smallest accepted values load.
        load_sets(&[
            "chat.max_line=1",
            "frames.max_header=64",
            "echo.max_pending_output=1024",
            "exec.max_running=1",
            "auth.handshake_timeout_s=1",
            "limits.max_connections=1",
        ])
        .unwrap();
    }

    #[test]
    fn reactors_must_be_at_least_one_or_auto() {
        assert_mentions(
            &error_of(load_sets(&["reactors=0"])),
            &["`reactors` must be at least 1"],
        );
        assert_mentions(
            &error_of(load_sets(&["reactors=many"])),
            &["`reactors`", "\"auto\""],
        );
        assert_mentions(
            &error_of(load_sets(&["reactors=-2"])),
            &["`reactors`", "\"auto\""],
        );
        load_sets(&["reactors=1"]).unwrap();
    }

    #[test]
    fn chat_cluster_must_be_redis_or_unix() {
        for good in [
            "redis://127.0.0.1:6379",
            "redis://redis.internal:6380",
            "redis://[::1]:6379",
            "unix:/run/redis/redis.sock",
        ] {
            load_sets(&[&format!("chat.cluster={good}")]).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "127.0.0.1:6379",
            "redis://",
            "redis://host",
            "redis://host:0",
            "redis://host:port",
            "redis://:6379",
            "redis://a/b:6379",
            "unix:relative.sock",
            "http://127.0.0.1:6379",
        ] {
            let message = error_of(load_sets(&[&format!("chat.cluster={bad}")]));
            assert_mentions(&message, &["`chat.cluster`", "redis://HOST:PORT"]);
        }
    }

    #[test]
    fn two_enabled_services_on_one_address_are_refused() {
        let message = error_of(load_sets(&[
            "echo.listen=127.0.0.1:9000",
            "chat.listen=127.0.0.1:9000",
        ]));
        assert_mentions(&message, &["`echo`", "`chat`", "127.0.0.1:9000"]);
        // Disabled services and ephemeral ports do not collide.
        load_sets(&[
            "echo.listen=127.0.0.1:9000",
            "chat.listen=127.0.0.1:9000",
            "chat.enabled=false",
        ])
        .unwrap();
        load_sets(&["echo.listen=127.0.0.1:0", "chat.listen=127.0.0.1:0"]).unwrap();
    }
}
