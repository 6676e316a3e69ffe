//! The daemon's configuration: one typed structure that every service reads
//! its section from.
//!
//! # Layers
//!
//! Configuration comes from four layers, later ones winning (PROTOCOL.md §1):
//!
//! 1. built-in defaults (`Config::default()`),
//! 2. a TOML file given with `--config FILE`,
//! 3. `--set KEY=VALUE` pairs, in the order given (VALUE in TOML syntax; what
//!    is not valid TOML is taken as a string, so `--set echo.mode=upper`
//!    works),
//! 4. explicit flags (`--bind`, `--port-base`, `--data-dir`, `--listen`,
//!    `--disable`).
//!
//! The file and every `--set` are first turned into TOML tables and merged
//! key by key ("deep merge"): `--set echo.mode=upper` replaces one key of the
//! `[echo]` section and leaves its other keys as the file had them. Only the
//! merged table is turned into the typed [`Config`]. The merge starts from
//! the defaults written out as TOML, so keys that no layer mentions keep their
//! defaults (see `load_layers` for why `#[serde(default)]` alone would not
//! do). The flags are applied last, to the typed value, because they are
//! already typed.
//!
//! # Strictness
//!
//! An unknown key or a value of the wrong type is an error, and the daemon
//! exits with status 2 before binding anything. A typo such as `echo.moed`
//! that was silently ignored would leave the operator wondering why the echo
//! service does not do what the file says.
//!
//! serde's `deny_unknown_fields` would normally catch typos, but it cannot
//! be combined with `#[serde(flatten)]`, which the service sections use to
//! share [`ServiceConfig`]. So each layer is checked against a *schema*: the
//! TOML form of `Config::default()` with every optional key filled in. Its
//! tables and keys are exactly the ones the types accept. A key missing from
//! the schema is unknown; a leaf is type-checked by deserializing a `Config`
//! from that one leaf alone, so serde's own message (integer out of range,
//! unknown variant, ...) can be reported next to the key that caused it.
//!
//! # Validation
//!
//! Once typed, the configuration is checked as a whole: addresses parse, ports
//! fit, limits are large enough to work. Every problem is reported as one
//! line naming the key, which is what an operator reading stderr needs.

//!
//! # Where things are
//!
//! - this file: the typed structure, its defaults, and where a service
//!   listens ([`Config::listen_addr`]);
//! - `load.rs`: the layers (file, `--set`, flags) and how they merge;
//! - `schema.rs`: the strict check of each layer against the known keys;
//! - `validate.rs`: the checks on the whole, typed configuration;
//! - `print.rs`: `serve --print-config`;
//! - `error.rs`: [`ConfigError`], the one-line message an operator reads.

mod error;
mod load;
mod print;
mod schema;
mod validate;

#[cfg(test)]
mod fixtures;

pub use error::ConfigError;
pub use load::load;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::services::ServiceId;
use validate::{parse_bind, parse_listen, port_overflow};

/// The whole configuration. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address every listener binds unless `<service>.listen` says otherwise.
    pub bind: String,
    /// Every service listens on `port_base + offset`; 0 = ephemeral ports.
    pub port_base: u16,
    /// Where the daemon keeps its state (keys, users, exec workdir).
    pub data_dir: PathBuf,
    /// How many event loops to run (PROTOCOL.md §8), each on its own
    /// thread; `serve --reactors` sets it too.
    pub reactors: Reactors,
    pub limits: LimitsConfig,
    pub admin: AdminConfig,
    pub echo: EchoConfig,
    pub discard: ServiceConfig,
    pub daytime: ServiceConfig,
    pub chargen: ServiceConfig,
    pub files: FilesConfig,
    pub chat: ChatConfig,
    pub exec: ExecConfig,
    pub frames: FramesConfig,
    pub auth: AuthConfig,
}

/// Limits that apply to the daemon as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Connections open at once, over all services. `None` until resolved at
    /// start: the open-file limit minus 32, as Redis does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections open at once from one client IP address, over all
    /// services; 0 = no limit.
    pub max_connections_per_ip: usize,
    /// A loop turn that takes longer than this many milliseconds is logged.
    pub slow_turn_ms: u64,
}

/// How many reactors (event loops) the daemon runs: a number, or `"auto"`
/// for one per CPU the process may use. In TOML it is either an integer or
/// the string `"auto"`, so it has its own serde code rather than a derive
/// (a derived enum would want `{ Fixed = 2 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reactors {
    /// Exactly this many loops; at least 1 (checked by validation).
    Fixed(usize),
    /// One loop per CPU in the process's affinity mask.
    Auto,
}

/// The keys every service has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// `HOST:PORT` or `unix:/path`; `None` = derived from `bind` and `port_base`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    pub enabled: bool,
    /// 0 = no per-service limit.
    pub max_connections: usize,
    /// Whole seconds; 0 = never close an idle connection.
    pub idle_timeout_s: u64,
    /// Unsent output kept per connection before backpressure (for chat,
    /// also the mark a member that does not read must stay over for
    /// `STALL_GRACE` to be cut off as too slow).
    pub max_pending_output: usize,
}

/// The admin section: the shared service keys plus the HTTP header deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Seconds a client has to send a complete request header before it
    /// gets 408 and a close.
    pub header_timeout_s: u64,
}

/// The files section: the shared service keys plus how long an unfinished
/// upload stays resumable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Seconds a partial upload is kept for resuming (PROTOCOL.md §5.5).
    pub resume_ttl_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EchoMode {
    Echo,
    Upper,
    Stamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EchoConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    pub mode: EchoMode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Longest line in bytes, without `\n` and a `\r` before it.
    pub max_line: usize,
    /// Members one room may hold; 0 = no limit.
    pub max_room_members: usize,
    /// Rooms that may exist at once; 0 = no limit.
    pub max_rooms: usize,
    /// Where daemons sharing one chat meet: `redis://HOST:PORT` or
    /// `unix:/path` (PROTOCOL.md §8); `None` = this daemon's chat is its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Seconds a nick claimed in the cluster's Redis outlives its daemon:
    /// the daemon refreshes its claims every third of this, so a daemon
    /// that dies frees its nicks this long after (an extension,
    /// docs/protocol-notes.md).
    pub cluster_nick_ttl_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Programs that may be run, matched against `argv[0]` exactly as sent;
    /// `["*"]` = any program found on PATH.
    pub allow: Vec<String>,
    pub allow_shell: bool,
    pub max_running: usize,
    pub default_timeout_ms: u64,
    pub kill_grace_ms: u64,
    /// Working directory of programs, relative to the data dir.
    pub workdir: PathBuf,
    /// Whether each program gets a cgroup where the daemon may create one
    /// (true); false uses the subreaper fallback even where it may.
    pub cgroups: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FramesConfig {
    /// Largest frame header (the JSON object) in bytes.
    pub max_header: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    pub handshake_timeout_s: u64,
    /// Failed handshakes from one IP within 60 s before it is locked out;
    /// 0 turns throttling off.
    pub max_failures: u32,
    pub lockout_s: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind: "127.0.0.1".to_string(),
            port_base: 7000,
            data_dir: PathBuf::from("socketlab-data"),
            reactors: Reactors::Fixed(1),
            limits: LimitsConfig::default(),
            admin: AdminConfig::default(),
            echo: EchoConfig::default(),
            discard: ServiceConfig::default(),
            daytime: ServiceConfig::default(),
            chargen: ServiceConfig::default(),
            files: FilesConfig::default(),
            chat: ChatConfig::default(),
            exec: ExecConfig::default(),
            frames: FramesConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_connections: None,
            max_connections_per_ip: 0,
            slow_turn_ms: 50,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            service: ServiceConfig::default(),
            header_timeout_s: 10,
        }
    }
}

impl Default for FilesConfig {
    fn default() -> FilesConfig {
        FilesConfig {
            service: ServiceConfig {
                idle_timeout_s: 300,
                ..ServiceConfig::default()
            },
            resume_ttl_s: 86_400,
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            listen: None,
            enabled: true,
            max_connections: 0,
            idle_timeout_s: 0,
            max_pending_output: 256 * 1024,
        }
    }
}

impl Default for EchoConfig {
    fn default() -> EchoConfig {
        EchoConfig {
            service: ServiceConfig::default(),
            mode: EchoMode::Echo,
        }
    }
}

impl Default for ChatConfig {
    fn default() -> ChatConfig {
        ChatConfig {
            service: ServiceConfig {
                max_pending_output: 1024 * 1024,
                ..ServiceConfig::default()
            },
            max_line: 4096,
            max_room_members: 0,
            max_rooms: 0,
            cluster: None,
            cluster_nick_ttl_s: 30,
        }
    }
}

impl Default for ExecConfig {
    fn default() -> ExecConfig {
        ExecConfig {
            service: ServiceConfig {
                idle_timeout_s: 300,
                ..ServiceConfig::default()
            },
            allow: vec!["*".to_string()],
            allow_shell: false,
            max_running: 16,
            default_timeout_ms: 30_000,
            kill_grace_ms: 2_000,
            workdir: PathBuf::from("exec"),
            cgroups: true,
        }
    }
}

impl Default for FramesConfig {
    fn default() -> FramesConfig {
        FramesConfig { max_header: 65_536 }
    }
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            handshake_timeout_s: 10,
            max_failures: 5,
            lockout_s: 60,
        }
    }
}

impl Config {
    /// The keys every service has, whatever else its section holds.
    pub fn service(&self, id: ServiceId) -> &ServiceConfig {
        match id {
            ServiceId::Admin => &self.admin.service,
            ServiceId::Echo => &self.echo.service,
            ServiceId::Discard => &self.discard,
            ServiceId::Daytime => &self.daytime,
            ServiceId::Chargen => &self.chargen,
            ServiceId::Files => &self.files.service,
            ServiceId::Chat => &self.chat.service,
            ServiceId::Exec => &self.exec.service,
        }
    }

    pub fn service_mut(&mut self, id: ServiceId) -> &mut ServiceConfig {
        match id {
            ServiceId::Admin => &mut self.admin.service,
            ServiceId::Echo => &mut self.echo.service,
            ServiceId::Discard => &mut self.discard,
            ServiceId::Daytime => &mut self.daytime,
            ServiceId::Chargen => &mut self.chargen,
            ServiceId::Files => &mut self.files.service,
            ServiceId::Chat => &mut self.chat.service,
            ServiceId::Exec => &mut self.exec.service,
        }
    }
}

/// Flags given explicitly on the command line; they win over `--set` and the
/// file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<String>,
    pub port_base: Option<u16>,
    pub data_dir: Option<PathBuf>,
    /// `--listen SERVICE=ADDR`, repeatable, raw strings as typed.
    pub listen: Vec<String>,
    /// `--disable SERVICE`, repeatable.
    pub disable: Vec<String>,
}

impl Serialize for Reactors {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Reactors::Fixed(n) => serializer.serialize_u64(*n as u64),
            Reactors::Auto => serializer.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Reactors {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Reactors, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Reactors;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of reactors (1 or more) or \"auto\"")
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Reactors, E> {
                usize::try_from(n)
                    .map(Reactors::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Reactors, E> {
                usize::try_from(n)
                    .map(Reactors::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Reactors, E> {
                match s {
                    "auto" => Ok(Reactors::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Display for Reactors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reactors::Fixed(n) => write!(f, "{n}"),
            Reactors::Auto => f.write_str("\"auto\""),
        }
    }
}

/// Where a service listens, once `listen`, `bind` and `port_base` are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// TCP (and UDP, for the services that have it) on this address.
    Inet(std::net::SocketAddr),
    /// A Unix domain stream socket in place of the TCP listener.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    /// The form `<service>.listen` takes, so a printed address reads back:
    /// `127.0.0.1:7007`, `[::1]:7007` or `unix:/run/echo.sock`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Inet(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Config {
    /// Where a service listens: its `listen` key if set (`HOST:PORT` with an
    /// IP address as host, `[v6]:PORT`, or `unix:/path`), else `bind` and
    /// `port_base + offset`, or port 0 (ephemeral) when `port_base` is 0.
    pub fn listen_addr(&self, id: ServiceId) -> Result<ListenAddr, ConfigError> {
        if let Some(text) = &self.service(id).listen {
            return parse_listen(text)
                .map_err(|reason| ConfigError(format!("`{id}.listen` = {text:?}: {reason}")));
        }
        let ip = parse_bind(&self.bind)?;
        let port = if self.port_base == 0 {
            0
        } else {
            self.port_base
                .checked_add(id.port_offset())
                .ok_or_else(|| port_overflow(self.port_base))?
        };
        Ok(ListenAddr::Inet(SocketAddr::new(ip, port)))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::path::PathBuf;

    use super::fixtures::*;
    use super::*;

    // ---- Defaults -------------------------------------------------------

    #[test]
    fn defaults_match_the_protocol() {
        let c = load(None, &[], &Overrides::default()).expect("defaults load");
        assert_eq!(c, Config::default());
        assert_eq!(c.bind, "127.0.0.1");
        assert_eq!(c.port_base, 7000);
        assert_eq!(c.data_dir, PathBuf::from("socketlab-data"));
        assert_eq!(c.limits.max_connections, None);
        for id in ServiceId::ALL {
            let s = c.service(id);
            assert_eq!(s.listen, None, "{id}");
            assert!(s.enabled, "{id}");
            assert_eq!(s.max_connections, 0, "{id}");
            let idle = if matches!(id, ServiceId::Exec | ServiceId::Files) {
                300
            } else {
                0
            };
            assert_eq!(s.idle_timeout_s, idle, "{id}");
            let pending = if id == ServiceId::Chat {
                1_048_576
            } else {
                262_144
            };
            assert_eq!(s.max_pending_output, pending, "{id}");
        }
        assert_eq!(c.echo.mode, EchoMode::Echo);
        assert_eq!(c.chat.max_line, 4096);
        assert_eq!(c.exec.allow, vec!["*".to_string()]);
        assert!(!c.exec.allow_shell);
        assert_eq!(c.exec.max_running, 16);
        assert_eq!(c.exec.default_timeout_ms, 30_000);
        assert_eq!(c.exec.kill_grace_ms, 2_000);
        assert_eq!(c.exec.workdir, PathBuf::from("exec"));
        assert!(
            c.exec.cgroups,
            "cgroups wherever the daemon may create them"
        );
        assert_eq!(c.frames.max_header, 65_536);
        assert_eq!(c.auth.handshake_timeout_s, 10);
        assert_eq!(c.auth.max_failures, 5);
        assert_eq!(c.auth.lockout_s, 60);
        assert_eq!(c.admin.header_timeout_s, 10);
        assert_eq!(c.limits.max_connections_per_ip, 0);
        assert_eq!(c.limits.slow_turn_ms, 50);
        assert_eq!(c.files.resume_ttl_s, 86_400);
        assert_eq!(c.reactors, Reactors::Fixed(1));
        assert_eq!(c.chat.cluster, None);
    }

    #[test]
    fn the_newer_keys_load_from_a_file_and_from_set() {
        let c = load_text(
            "reactors = \"auto\"\n[admin]\nheader_timeout_s = 3\n\
             [limits]\nmax_connections_per_ip = 8\nslow_turn_ms = 20\n\
             [files]\nresume_ttl_s = 60\n[chat]\ncluster = \"redis://127.0.0.1:6379\"\n",
            &[],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.reactors, Reactors::Auto);
        assert_eq!(c.admin.header_timeout_s, 3);
        assert_eq!(c.limits.max_connections_per_ip, 8);
        assert_eq!(c.limits.slow_turn_ms, 20);
        assert_eq!(c.files.resume_ttl_s, 60);
        assert_eq!(c.chat.cluster.as_deref(), Some("redis://127.0.0.1:6379"));
        // The sections keep their shared keys and their own defaults.
        assert_eq!(c.files.service.idle_timeout_s, 300);
        assert!(c.admin.service.enabled);

        let c = load_sets(&["reactors=4", "chat.cluster=unix:/run/redis.sock"]).unwrap();
        assert_eq!(c.reactors, Reactors::Fixed(4));
        assert_eq!(c.chat.cluster.as_deref(), Some("unix:/run/redis.sock"));
        let c = load_sets(&["reactors=auto"]).unwrap();
        assert_eq!(c.reactors, Reactors::Auto);
    }

    #[test]
    fn default_ports_follow_the_protocol_table() {
        let c = Config::default();
        let expected = [
            (ServiceId::Admin, 7000),
            (ServiceId::Echo, 7007),
            (ServiceId::Discard, 7009),
            (ServiceId::Daytime, 7013),
            (ServiceId::Chargen, 7019),
            (ServiceId::Files, 7021),
            (ServiceId::Chat, 7194),
            (ServiceId::Exec, 7512),
        ];
        for (id, port) in expected {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            assert_eq!(c.listen_addr(id).unwrap(), ListenAddr::Inet(addr), "{id}");
        }
    }

    #[test]
    fn port_base_zero_gives_every_service_an_ephemeral_port() {
        let c = load_sets(&["port_base=0"]).unwrap();
        for id in ServiceId::ALL {
            assert_eq!(c.listen_addr(id).unwrap(), inet("127.0.0.1:0"), "{id}");
        }
    }
}
