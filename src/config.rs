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

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

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
    pub admin: AdminConfig,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Connections open at once, over all services. `None` until resolved at
    /// start: the open-file limit minus 32, as Redis does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections open at once from one client (an IPv4 address or an
    /// IPv6 /64); 0 = no limit.
    pub max_connections_per_ip: usize,
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
pub struct AdminConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Whole seconds a client has to finish an HTTP request head, counted
    /// from the connection or the previous answer; then 408 and a close.
    pub header_timeout_s: u64,
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
            admin: AdminConfig::default(),
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

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            service: ServiceConfig::default(),
            header_timeout_s: 10,
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
            ServiceId::Admin => &self.admin.service,
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
            ServiceId::Admin => &mut self.admin.service,
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

/// A configuration that cannot be used, with a one-line reason naming the
/// key, flag or file at fault. The daemon prints it and exits with status 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The contract is one line on stderr. Messages built here are one
        // line already; folding stray newlines keeps the promise even for a
        // message some other module builds.
        let one_line = self.0.trim().replace('\n', "; ");
        write!(f, "config: {one_line}")
    }
}

impl std::error::Error for ConfigError {}

/// Builds the configuration: defaults, then `file` (TOML), then each
/// `--set KEY=VALUE` in `sets` in order, then the explicit `flags`; then
/// validates the result.
pub fn load(
    file: Option<&Path>,
    sets: &[String],
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let file_layer = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            Some((path.display().to_string(), text))
        }
        None => None,
    };
    let file_layer = file_layer
        .as_ref()
        .map(|(name, text)| (name.as_str(), text.as_str()));
    load_layers(file_layer, sets, flags)
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

    /// The effective configuration as TOML, for `--print-config`: every
    /// `<service>.listen` is written out resolved, and
    /// `limits.max_connections` appears once the daemon has resolved it.
    /// Loading the text again gives the same configuration.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for id in ServiceId::ALL {
            // A listen that does not resolve is left as written; `load`
            // never returns such a configuration, so this only matters for
            // one built by hand.
            if let Ok(addr) = self.listen_addr(id) {
                shown.service_mut(id).listen = Some(addr.to_string());
            }
        }
        // TOML strings are UTF-8 and paths need not be. `load` refuses a
        // path that is not UTF-8, so the lossy conversion changes nothing
        // for a loaded configuration; it only keeps this function total.
        shown.data_dir = PathBuf::from(shown.data_dir.to_string_lossy().into_owned());
        shown.exec.workdir = PathBuf::from(shown.exec.workdir.to_string_lossy().into_owned());
        toml::to_string(&shown).expect("a Config with UTF-8 paths is always valid TOML")
    }

    /// Checks the configuration as a whole, after every layer is applied.
    fn validate(&self) -> Result<(), ConfigError> {
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

/// Does the work of [`load`] once the file, if any, has been read: `file` is
/// its name (for messages) and its text.
fn load_layers(
    file: Option<(&str, &str)>,
    sets: &[String],
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let schema = schema();
    // The layers merge onto the defaults written out in full, not onto an
    // empty table. `#[serde(default)]` alone is not enough: a flattened
    // `ServiceConfig` is built from `ServiceConfig::default()`, so a file
    // saying only `[chat] max_line = 100` would silently reset chat's own
    // defaults (1 MiB of pending output) to the generic ones (256 KiB).
    // With every key present, serde never has to invent a value.
    let mut merged = Table::try_from(Config::default())
        .expect("the default configuration serializes to a TOML table");

    if let Some((name, text)) = file {
        let table: Table = toml::from_str(text)
            .map_err(|e| ConfigError(format!("{name}:{}", describe_parse_error(text, &e))))?;
        check_against_schema(&table, &schema, &[])
            .map_err(|reason| ConfigError(format!("{name}: {reason}")))?;
        deep_merge(&mut merged, table);
    }

    for set in sets {
        let table = parse_set(set)?;
        check_against_schema(&table, &schema, &[])
            .map_err(|reason| ConfigError(format!("--set {set}: {reason}")))?;
        deep_merge(&mut merged, table);
    }

    // Each layer was checked leaf by leaf, so this cannot fail on a key the
    // layers mention; the message is a fallback, not an expected path.
    let mut config: Config = merged
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError(e.message().trim().to_string()))?;

    apply_flags(&mut config, flags)?;
    config.validate()?;
    Ok(config)
}

/// Applies the explicit flags to the typed configuration.
fn apply_flags(config: &mut Config, flags: &Overrides) -> Result<(), ConfigError> {
    if let Some(bind) = &flags.bind {
        config.bind = bind.clone();
    }
    if let Some(port_base) = flags.port_base {
        config.port_base = port_base;
    }
    if let Some(data_dir) = &flags.data_dir {
        config.data_dir = data_dir.clone();
    }
    for listen in &flags.listen {
        let Some((name, addr)) = listen.split_once('=') else {
            return Err(ConfigError(format!(
                "--listen {listen}: expected SERVICE=ADDR, e.g. echo=127.0.0.1:9000"
            )));
        };
        let id = service_named(name)
            .map_err(|reason| ConfigError(format!("--listen {listen}: {reason}")))?;
        config.service_mut(id).listen = Some(addr.to_string());
    }
    for name in &flags.disable {
        let id = service_named(name)
            .map_err(|reason| ConfigError(format!("--disable {name}: {reason}")))?;
        config.service_mut(id).enabled = false;
    }
    Ok(())
}

fn service_named(name: &str) -> Result<ServiceId, String> {
    ServiceId::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = ServiceId::ALL.iter().map(|id| id.name()).collect();
        format!("unknown service `{name}` (services: {})", known.join(", "))
    })
}

/// Turns one `--set KEY=VALUE` into a table holding just that key, so it can
/// be checked and merged exactly like a file.
fn parse_set(set: &str) -> Result<Table, ConfigError> {
    let Some((key, raw)) = set.split_once('=') else {
        return Err(ConfigError(format!(
            "--set {set}: expected KEY=VALUE, e.g. echo.mode=upper"
        )));
    };
    let path: Vec<&str> = key.trim().split('.').collect();
    match path.split_first() {
        Some((first, rest)) if path.iter().all(|part| !part.is_empty()) => {
            Ok(nest(first, rest, parse_set_value(raw)))
        }
        _ => Err(ConfigError(format!(
            "--set {set}: `{}` is not a key",
            key.trim()
        ))),
    }
}

/// A table holding `leaf` at the key path `first.rest...`:
/// `nest("echo", &["mode"], v)` is `{ echo = { mode = v } }`.
fn nest(first: &str, rest: &[&str], leaf: Value) -> Table {
    let value = match rest.split_first() {
        None => leaf,
        Some((next, rest)) => Value::Table(nest(next, rest, leaf)),
    };
    let mut table = Table::new();
    table.insert(first.to_string(), value);
    table
}

/// Reads the VALUE of `--set KEY=VALUE`: TOML if it parses as one TOML value,
/// otherwise the text itself as a string.
///
/// Parsing `x = VALUE` as a whole document is the simplest way to reuse the
/// TOML parser for a lone value. The document must hold exactly the key `x`:
/// a VALUE with a newline could otherwise smuggle in other keys. No key takes
/// a date or time, so a VALUE that TOML reads as one (`2026-01-02`) is taken
/// as the string the user typed: passing the date on would give the string
/// TOML writes for it, which can differ (`1979-05-27 07:32:00` comes back
/// with a `T` in place of the space).
fn parse_set_value(raw: &str) -> Value {
    let as_string = || Value::String(raw.trim().to_string());
    match toml::from_str::<Table>(&format!("x = {raw}")) {
        Ok(mut document) if document.len() == 1 => match document.remove("x") {
            Some(Value::Datetime(_)) | None => as_string(),
            Some(value) => value,
        },
        _ => as_string(),
    }
}

/// The TOML form of every key the configuration accepts: `Config::default()`
/// with the optional keys filled in, since `None` would not be serialized.
fn schema() -> Table {
    let mut full = Config::default();
    full.limits.max_connections = Some(0);
    for id in ServiceId::ALL {
        full.service_mut(id).listen = Some(String::new());
    }
    Table::try_from(&full).expect("the default configuration serializes to a TOML table")
}

/// Checks one layer against the schema: every key must exist there, every
/// section must be a table, and every leaf must deserialize into its field.
/// `path` is where `table` sits in the whole document.
fn check_against_schema(table: &Table, schema: &Table, path: &[&str]) -> Result<(), String> {
    for (key, value) in table {
        let mut key_path = path.to_vec();
        key_path.push(key);
        let dotted = key_path.join(".");
        match (schema.get(key), value) {
            (None, _) => {
                let known: Vec<&str> = schema.keys().map(String::as_str).collect();
                let place = if path.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in [{}]", path.join("."))
                };
                return Err(format!(
                    "unknown key `{dotted}` (keys {place}: {})",
                    known.join(", ")
                ));
            }
            (Some(Value::Table(section)), Value::Table(inner)) => {
                check_against_schema(inner, section, &key_path)?;
            }
            (Some(Value::Table(_)), other) => {
                return Err(format!(
                    "`{dotted}` must be a table, not {}",
                    type_name(other)
                ));
            }
            // A table where a plain value belongs (`--set echo.mode.loud=1`)
            // is caught here: serde would read `{ loud = 1 }` as an enum
            // variant named `loud` and report that instead.
            (Some(expected), Value::Table(_)) => {
                return Err(format!(
                    "`{dotted}` has no keys below it; it takes {}",
                    type_name(expected)
                ));
            }
            (Some(_), leaf) => {
                check_leaf(&key_path, leaf).map_err(|reason| format!("`{dotted}`: {reason}"))?
            }
        }
    }
    Ok(())
}

/// Type-checks one leaf by deserializing a `Config` from a table that holds
/// only that leaf (the other keys fall back to serde defaults, which is all a
/// type check needs). serde then reports the exact problem (wrong type, out
/// of range, unknown variant) for this key.
fn check_leaf(path: &[&str], leaf: &Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    nest(first, rest, leaf.clone())
        .try_into::<Config>()
        .map(|_| ())
        .map_err(|e| e.message().trim().to_string())
}

/// Deep merge: tables merge key by key, anything else in `overlay` replaces
/// what `base` had (an array is replaced whole, not appended to).
fn deep_merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_section)), Value::Table(overlay_section)) => {
                deep_merge(base_section, overlay_section);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A TOML syntax error as `LINE:COLUMN: message`, on one line (toml's own
/// `Display` draws a multi-line excerpt).
fn describe_parse_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{line}:{column}: {message}")
        }
        None => format!(" {message}"),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn parse_bind(bind: &str) -> Result<IpAddr, ConfigError> {
    bind.parse().map_err(|_| {
        ConfigError(format!(
            "`bind` = {bind:?} is not an IP address (e.g. 127.0.0.1 or ::1)"
        ))
    })
}

fn port_overflow(port_base: u16) -> ConfigError {
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
fn parse_listen(text: &str) -> Result<ListenAddr, String> {
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
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    // ---- Fixtures -------------------------------------------------------

    fn sets(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// Loads from a file body, `--set` pairs and flags, without touching the
    /// file system.
    fn load_text(file: &str, set: &[&str], flags: &Overrides) -> Result<Config, ConfigError> {
        load_layers(Some(("test.toml", file)), &sets(set), flags)
    }

    fn load_sets(set: &[&str]) -> Result<Config, ConfigError> {
        load_layers(None, &sets(set), &Overrides::default())
    }

    /// The error message of a load that must fail.
    fn error_of(result: Result<Config, ConfigError>) -> String {
        match result {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Asserts that `message` mentions every one of `parts`.
    fn assert_mentions(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(
                message.contains(part),
                "{message:?} should mention {part:?}"
            );
        }
        assert!(!message.contains('\n'), "{message:?} should be one line");
        assert!(message.starts_with("config: "), "{message:?}");
    }

    /// A file in the system's temp directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn with(text: &str) -> TempFile {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "socketlab-config-test-{}-{}.toml",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).expect("write temp config");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn inet(text: &str) -> ListenAddr {
        ListenAddr::Inet(text.parse().expect("test address"))
    }

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
        assert_eq!(c.frames.max_header, 65_536);
        assert_eq!(c.auth.handshake_timeout_s, 10);
        assert_eq!(c.auth.max_failures, 5);
        assert_eq!(c.auth.lockout_s, 60);
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

    // ---- Layers and precedence -----------------------------------------

    #[test]
    fn file_values_replace_defaults_and_leave_the_rest() {
        let c = load_text(
            "port_base = 8000\n[echo]\nmode = \"stamp\"\n[chat]\nmax_line = 100\n",
            &[],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.port_base, 8000);
        assert_eq!(c.echo.mode, EchoMode::Stamp);
        assert_eq!(c.chat.max_line, 100);
        // Untouched keys of a touched section keep their defaults.
        assert_eq!(c.chat.service.max_pending_output, 1024 * 1024);
        let c = load_sets(&["exec.allow_shell=true"]).unwrap();
        assert_eq!(c.exec.service.idle_timeout_s, 300, "exec's own default");
        assert_eq!(c.bind, "127.0.0.1");
    }

    #[test]
    fn set_wins_over_file_and_flags_win_over_both() {
        let file = "bind = \"127.0.0.2\"\nport_base = 8000\ndata_dir = \"from-file\"\n\
                    [echo]\nmode = \"stamp\"\nlisten = \"127.0.0.1:1\"\n\
                    [chat]\nmax_line = 100\n";
        let flags = Overrides {
            bind: Some("::1".to_string()),
            port_base: Some(9000),
            data_dir: Some(PathBuf::from("/var/lib/from-flag")),
            listen: vec!["echo=127.0.0.1:3".to_string()],
            disable: vec!["chargen".to_string()],
        };
        let c = load_text(
            file,
            &[
                "echo.mode=upper",
                "port_base=8500",
                "echo.listen=\"127.0.0.1:2\"",
                "bind=\"127.0.0.3\"",
            ],
            &flags,
        )
        .unwrap();
        // --set beats the file ...
        assert_eq!(c.echo.mode, EchoMode::Upper);
        // ... and flags beat both.
        assert_eq!(c.bind, "::1");
        assert_eq!(c.port_base, 9000);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/from-flag"));
        assert_eq!(c.listen_addr(ServiceId::Echo).unwrap(), inet("127.0.0.1:3"));
        assert!(!c.chargen.enabled);
        // A key only the file sets survives the other layers.
        assert_eq!(c.chat.max_line, 100);
    }

    #[test]
    fn later_set_wins_over_earlier_set() {
        let c = load_sets(&["echo.mode=upper", "echo.mode=stamp"]).unwrap();
        assert_eq!(c.echo.mode, EchoMode::Stamp);
    }

    #[test]
    fn set_merges_into_a_section_instead_of_replacing_it() {
        let c = load_text(
            "[exec]\nallow_shell = true\nmax_running = 3\n",
            &["exec={ max_running = 4 }"],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.exec.max_running, 4);
        assert!(
            c.exec.allow_shell,
            "the file's other key in [exec] must survive"
        );
    }

    #[test]
    fn data_dir_is_kept_as_given() {
        let c = load_sets(&["data_dir=../relative/dir"]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("../relative/dir"));
        let flags = Overrides {
            data_dir: Some(PathBuf::from("./here")),
            ..Overrides::default()
        };
        let c = load(None, &[], &flags).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./here"));
    }

    #[test]
    fn load_reads_a_real_file() {
        let file = TempFile::with("[echo]\nmode = \"upper\"\n");
        let c = load(Some(&file.0), &[], &Overrides::default()).unwrap();
        assert_eq!(c.echo.mode, EchoMode::Upper);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let path = std::env::temp_dir().join("socketlab-no-such-config.toml");
        let message = error_of(load(Some(&path), &[], &Overrides::default()));
        assert_mentions(&message, &["cannot read", "socketlab-no-such-config.toml"]);
    }

    #[test]
    fn a_toml_syntax_error_is_one_line_with_its_position() {
        let message = error_of(load_text("[echo]\nmode = \n", &[], &Overrides::default()));
        assert_mentions(&message, &["test.toml:2:"]);
    }

    // ---- --set values ----------------------------------------------------

    #[test]
    fn set_value_in_toml_syntax() {
        let c = load_sets(&[
            "echo.mode=\"upper\"",
            "chat.max_line=12",
            "exec.allow_shell=true",
            "exec.allow=[\"echo\",\"cat\"]",
        ])
        .unwrap();
        assert_eq!(c.echo.mode, EchoMode::Upper);
        assert_eq!(c.chat.max_line, 12);
        assert!(c.exec.allow_shell);
        assert_eq!(c.exec.allow, vec!["echo".to_string(), "cat".to_string()]);
    }

    #[test]
    fn set_value_that_is_not_toml_is_a_string() {
        let c = load_sets(&[
            "echo.mode=upper",
            "bind=::1",
            "data_dir=/tmp/some dir",
            "chat.listen=127.0.0.1:9100",
            "exec.workdir=2026-01-02",
            "files.listen=unix:1979-05-27 07:32:00",
        ])
        .unwrap();
        assert_eq!(c.echo.mode, EchoMode::Upper);
        assert_eq!(c.bind, "::1");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/some dir"));
        assert_eq!(
            c.listen_addr(ServiceId::Chat).unwrap(),
            inet("127.0.0.1:9100")
        );
        // A date is valid TOML, but no key takes one: it stays the text typed.
        assert_eq!(c.exec.workdir, PathBuf::from("2026-01-02"));
        assert_eq!(
            parse_set_value("1979-05-27 07:32:00"),
            Value::String("1979-05-27 07:32:00".to_string())
        );
    }

    #[test]
    fn set_value_cannot_smuggle_in_other_keys() {
        // Read as TOML, this would also set `y`; it must be one plain string.
        assert_eq!(
            parse_set_value("1\ny = 2"),
            Value::String("1\ny = 2".to_string())
        );
        assert_eq!(parse_set_value("12"), Value::Integer(12));
        assert_eq!(parse_set_value("upper"), Value::String("upper".to_string()));
        assert_eq!(parse_set_value(""), Value::String(String::new()));
    }

    #[test]
    fn set_replaces_an_array_whole() {
        let c = load_text(
            "[exec]\nallow = [\"a\", \"b\", \"c\"]\n",
            &["exec.allow=[\"ls\"]"],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.exec.allow, vec!["ls".to_string()]);
        let c = load_sets(&["exec.allow=[]"]).unwrap();
        assert!(c.exec.allow.is_empty());
    }

    #[test]
    fn set_without_equals_is_an_error() {
        let message = error_of(load_sets(&["echo.mode"]));
        assert_mentions(&message, &["--set echo.mode", "KEY=VALUE"]);
    }

    #[test]
    fn set_with_an_empty_key_part_is_an_error() {
        for bad in ["=1", "echo.=upper", ".mode=upper", "echo..mode=upper"] {
            let message = error_of(load_sets(&[bad]));
            assert_mentions(&message, &["not a key"]);
        }
    }

    // ---- Unknown keys ----------------------------------------------------

    #[test]
    fn unknown_top_level_key_in_file() {
        let message = error_of(load_text("prot_base = 1\n", &[], &Overrides::default()));
        assert_mentions(
            &message,
            &["test.toml", "unknown key `prot_base`", "port_base"],
        );
    }

    #[test]
    fn unknown_key_in_a_service_section_in_file() {
        let message = error_of(load_text(
            "[echo]\nmoed = \"upper\"\n",
            &[],
            &Overrides::default(),
        ));
        assert_mentions(&message, &["unknown key `echo.moed`", "[echo]", "mode"]);
    }

    #[test]
    fn unknown_key_in_a_plain_service_section_in_file() {
        // `discard` has no key of its own: only the shared service keys.
        let message = error_of(load_text(
            "[discard]\nmode = \"upper\"\n",
            &[],
            &Overrides::default(),
        ));
        assert_mentions(&message, &["unknown key `discard.mode`"]);
    }

    #[test]
    fn unknown_key_inside_limits_in_file() {
        let message = error_of(load_text(
            "[limits]\nmax_conections = 5\n",
            &[],
            &Overrides::default(),
        ));
        assert_mentions(
            &message,
            &["unknown key `limits.max_conections`", "max_connections"],
        );
    }

    #[test]
    fn unknown_section_in_file() {
        let message = error_of(load_text(
            "[ftp]\nenabled = true\n",
            &[],
            &Overrides::default(),
        ));
        assert_mentions(&message, &["unknown key `ftp`"]);
    }

    #[test]
    fn unknown_top_level_key_in_set() {
        let message = error_of(load_sets(&["colour=blue"]));
        assert_mentions(&message, &["--set colour=blue", "unknown key `colour`"]);
    }

    #[test]
    fn unknown_key_in_a_section_in_set() {
        let message = error_of(load_sets(&["echo.moed=upper"]));
        assert_mentions(
            &message,
            &["--set echo.moed=upper", "unknown key `echo.moed`"],
        );
    }

    #[test]
    fn unknown_key_inside_limits_in_set() {
        let message = error_of(load_sets(&["limits.max=5"]));
        assert_mentions(&message, &["unknown key `limits.max`"]);
    }

    #[test]
    fn unknown_key_too_deep_in_set() {
        let message = error_of(load_sets(&["echo.mode.loud=true"]));
        assert_mentions(&message, &["`echo.mode` has no keys below it", "a string"]);
    }

    #[test]
    fn unknown_key_inside_an_inline_table_in_set() {
        let message = error_of(load_sets(&["chat={ max_lines = 5 }"]));
        assert_mentions(&message, &["unknown key `chat.max_lines`"]);
    }

    #[test]
    fn optional_keys_are_known() {
        // `listen` and `limits.max_connections` are absent from the default's
        // TOML, yet they are real keys.
        let c = load_text(
            "[limits]\nmax_connections = 100\n[exec]\nlisten = \"unix:/tmp/exec.sock\"\n",
            &[],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.limits.max_connections, Some(100));
        assert_eq!(
            c.exec.service.listen.as_deref(),
            Some("unix:/tmp/exec.sock")
        );
    }

    // ---- Wrong types -----------------------------------------------------

    #[test]
    fn wrong_type_in_file_names_the_key() {
        let message = error_of(load_text(
            "[echo]\nenabled = \"yes\"\n",
            &[],
            &Overrides::default(),
        ));
        assert_mentions(&message, &["test.toml", "`echo.enabled`", "bool"]);
    }

    #[test]
    fn wrong_type_in_set_names_the_key() {
        let message = error_of(load_sets(&["chat.max_line=\"long\""]));
        assert_mentions(&message, &["--set", "`chat.max_line`"]);
        let message = error_of(load_sets(&["exec.allow=[1, 2]"]));
        assert_mentions(&message, &["`exec.allow`"]);
        let message = error_of(load_sets(&["bind=7"]));
        assert_mentions(&message, &["`bind`"]);
    }

    #[test]
    fn out_of_range_integer_names_the_key() {
        let message = error_of(load_sets(&["port_base=70000"]));
        assert_mentions(&message, &["`port_base`", "70000"]);
        let message = error_of(load_sets(&["chat.max_line=-1"]));
        assert_mentions(&message, &["`chat.max_line`"]);
    }

    #[test]
    fn a_section_given_as_a_value_is_a_type_error() {
        let message = error_of(load_text("echo = 3\n", &[], &Overrides::default()));
        assert_mentions(&message, &["`echo` must be a table"]);
        let message = error_of(load_sets(&["bind.ip=1"]));
        assert_mentions(&message, &["`bind` has no keys below it"]);
    }

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

    // ---- Flags -----------------------------------------------------------

    #[test]
    fn listen_and_disable_flags() {
        let flags = Overrides {
            listen: vec![
                "chat=unix:/tmp/chat.sock".to_string(),
                "exec=[::1]:0".to_string(),
            ],
            disable: vec!["daytime".to_string(), "files".to_string()],
            ..Overrides::default()
        };
        let c = load(None, &[], &flags).unwrap();
        assert_eq!(
            c.listen_addr(ServiceId::Chat).unwrap(),
            ListenAddr::Unix(PathBuf::from("/tmp/chat.sock"))
        );
        assert_eq!(c.listen_addr(ServiceId::Exec).unwrap(), inet("[::1]:0"));
        assert!(!c.daytime.enabled);
        assert!(!c.files.enabled);
        assert!(c.echo.service.enabled);
    }

    #[test]
    fn listen_flag_with_an_unknown_service() {
        let flags = Overrides {
            listen: vec!["ftp=127.0.0.1:21".to_string()],
            ..Overrides::default()
        };
        let message = error_of(load(None, &[], &flags));
        assert_mentions(
            &message,
            &["--listen ftp=127.0.0.1:21", "unknown service `ftp`", "echo"],
        );
    }

    #[test]
    fn listen_flag_without_equals_or_with_a_bad_address() {
        let flags = Overrides {
            listen: vec!["echo".to_string()],
            ..Overrides::default()
        };
        assert_mentions(
            &error_of(load(None, &[], &flags)),
            &["--listen echo", "SERVICE=ADDR"],
        );
        let flags = Overrides {
            listen: vec!["echo=nowhere".to_string()],
            ..Overrides::default()
        };
        assert_mentions(
            &error_of(load(None, &[], &flags)),
            &["`echo.listen`", "nowhere"],
        );
    }

    #[test]
    fn disable_flag_with_an_unknown_service() {
        let flags = Overrides {
            disable: vec!["gopher".to_string()],
            ..Overrides::default()
        };
        let message = error_of(load(None, &[], &flags));
        assert_mentions(&message, &["--disable gopher", "unknown service `gopher`"]);
    }

    // ---- Printing --------------------------------------------------------

    /// Prints `config`, loads the text back from a real file, and checks
    /// that nothing changed but the listens, which come back resolved.
    fn assert_round_trip(config: &Config) {
        let printed = config.to_toml();
        let file = TempFile::with(&printed);
        let reloaded = load(Some(&file.0), &[], &Overrides::default())
            .unwrap_or_else(|e| panic!("printed config must load: {e}\n{printed}"));
        let mut expected = config.clone();
        for id in ServiceId::ALL {
            expected.service_mut(id).listen = Some(config.listen_addr(id).unwrap().to_string());
        }
        assert_eq!(reloaded, expected, "\n{printed}");
        assert_eq!(reloaded.to_toml(), printed, "printing must be stable");
    }

    #[test]
    fn to_toml_round_trips_the_defaults() {
        assert_round_trip(&Config::default());
    }

    #[test]
    fn to_toml_round_trips_a_busy_configuration() {
        let flags = Overrides {
            bind: Some("::1".to_string()),
            port_base: Some(0),
            data_dir: Some(PathBuf::from("rel/data")),
            listen: vec!["chat=unix:/tmp/chat.sock".to_string()],
            disable: vec!["chargen".to_string()],
        };
        let mut c = load_sets(&[
            "echo.mode=stamp",
            "exec.allow=[\"echo\", \"cat\"]",
            "exec.allow_shell=true",
            "files.max_connections=7",
            "auth.max_failures=0",
        ])
        .unwrap();
        assert_round_trip(&c);
        c = load(None, &sets(&["echo.mode=upper"]), &flags).unwrap();
        // The daemon fills this in at start; once known it is printed too.
        c.limits.max_connections = Some(1000);
        assert_round_trip(&c);
    }

    #[test]
    fn to_toml_shows_resolved_listens_and_limits() {
        let mut c = Config::default();
        let printed = c.to_toml();
        assert!(printed.contains("listen = \"127.0.0.1:7007\""), "{printed}");
        assert!(printed.contains("listen = \"127.0.0.1:7512\""), "{printed}");
        assert!(!printed.contains("max_connections = 1000"), "{printed}");
        c.limits.max_connections = Some(1000);
        let printed = c.to_toml();
        assert!(
            printed.contains("[limits]\nmax_connections = 1000"),
            "{printed}"
        );
    }

    #[test]
    fn config_error_is_one_line() {
        let e = ConfigError("first\nsecond".to_string());
        assert_eq!(e.to_string(), "config: first; second");
    }
}
