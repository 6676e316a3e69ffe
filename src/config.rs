//! The daemon's configuration: one typed structure that every service reads
//! its section from.
//!
//! Configuration comes from three layers, later ones winning (PROTOCOL.md §1):
//!
//! 1. built-in defaults (`Config::default()`),
//! 2. a TOML file given with `--config FILE`,
//! 3. `--set KEY=VALUE` pairs (VALUE in TOML syntax; what is not valid TOML
//!    is taken as a string, so `--set echo.mode=upper` works),
//! 4. explicit flags (`--bind`, `--port-base`, `--data-dir`, `--listen`,
//!    `--disable`).
//!
//! An unknown key or a value of the wrong type is an error, and the daemon
//! exits with status 2 before binding anything.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::services::ServiceId;

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
    pub limits: LimitsConfig,
    pub admin: ServiceConfig,
    pub echo: EchoConfig,
    pub discard: ServiceConfig,
    pub daytime: ServiceConfig,
    pub chargen: ServiceConfig,
    pub files: ServiceConfig,
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
    /// Unsent output kept per connection before backpressure (or, for chat,
    /// before the member is cut off as too slow).
    pub max_pending_output: usize,
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
            limits: LimitsConfig::default(),
            admin: ServiceConfig::default(),
            echo: EchoConfig::default(),
            discard: ServiceConfig::default(),
            daytime: ServiceConfig::default(),
            chargen: ServiceConfig::default(),
            files: ServiceConfig {
                idle_timeout_s: 300,
                ..ServiceConfig::default()
            },
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
            ServiceId::Admin => &self.admin,
            ServiceId::Echo => &self.echo.service,
            ServiceId::Discard => &self.discard,
            ServiceId::Daytime => &self.daytime,
            ServiceId::Chargen => &self.chargen,
            ServiceId::Files => &self.files,
            ServiceId::Chat => &self.chat.service,
            ServiceId::Exec => &self.exec.service,
        }
    }

    pub fn service_mut(&mut self, id: ServiceId) -> &mut ServiceConfig {
        match id {
            ServiceId::Admin => &mut self.admin,
            ServiceId::Echo => &mut self.echo.service,
            ServiceId::Discard => &mut self.discard,
            ServiceId::Daytime => &mut self.daytime,
            ServiceId::Chargen => &mut self.chargen,
            ServiceId::Files => &mut self.files,
            ServiceId::Chat => &mut self.chat.service,
            ServiceId::Exec => &mut self.exec.service,
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
