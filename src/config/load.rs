//! The layers of the configuration (defaults, file, `--set`, flags) and how
//! they merge; see the module documentation of [`crate::config`].

use std::path::Path;

use toml::{Table, Value};

use super::schema::{check_against_schema, schema};
use super::{Config, ConfigError, Overrides};
use crate::services::ServiceId;

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

/// Does the work of [`load`] once the file, if any, has been read: `file` is
/// its name (for messages) and its text.
pub(super) fn load_layers(
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
pub(super) fn nest(first: &str, rest: &[&str], leaf: Value) -> Table {
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;

    use crate::config::fixtures::*;
    use crate::config::{EchoMode, ListenAddr};

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
            "exec.cgroups=false",
        ])
        .unwrap();
        assert_eq!(c.echo.mode, EchoMode::Upper);
        assert_eq!(c.chat.max_line, 12);
        assert!(c.exec.allow_shell);
        assert!(!c.exec.cgroups);
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
        assert!(!c.files.service.enabled);
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
}
