//! The strict check: every layer (file or `--set`) is compared key by key
//! with the schema, the TOML form of every key the configuration accepts,
//! before it is merged. See "Strictness" in [`crate::config`].

use toml::{Table, Value};

use super::Config;
use super::load::nest;
use crate::services::ServiceId;

/// The TOML form of every key the configuration accepts: `Config::default()`
/// with the optional keys filled in, since `None` would not be serialized.
pub(super) fn schema() -> Table {
    let mut full = Config::default();
    full.limits.max_connections = Some(0);
    full.chat.cluster = Some(String::new());
    for id in ServiceId::ALL {
        full.service_mut(id).listen = Some(String::new());
    }
    Table::try_from(&full).expect("the default configuration serializes to a TOML table")
}

/// Checks one layer against the schema: every key must exist there, every
/// section must be a table, and every leaf must deserialize into its field.
/// `path` is where `table` sits in the whole document.
pub(super) fn check_against_schema(
    table: &Table,
    schema: &Table,
    path: &[&str],
) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use crate::config::Overrides;
    use crate::config::fixtures::*;

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

    // ---- The example file ----------------------------------------------

    /// `socketlab.example.toml` at the repository root.
    const EXAMPLE: &str = include_str!("../../socketlab.example.toml");

    /// Every dotted key path in a TOML table: `echo.mode`, `bind`, ...
    fn key_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => key_paths(inner, &path, out),
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn the_example_file_loads_to_the_defaults() {
        let c = load_text(EXAMPLE, &[], &Overrides::default())
            .unwrap_or_else(|e| panic!("socketlab.example.toml must load: {e}"));
        assert_eq!(c, crate::config::Config::default());
    }

    #[test]
    fn the_example_file_names_every_key_the_configuration_knows() {
        // Keys without a fixed default are written commented out
        // (`# listen = ...`); uncommenting every `# key = value` line gives
        // a file that holds every key.
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    rest.to_string()
                }
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let example: toml::Table = uncommented.parse().expect("uncommented example is TOML");
        load_text(&uncommented, &[], &Overrides::default())
            .unwrap_or_else(|e| panic!("uncommented example must load: {e}"));
        let mut named = Vec::new();
        key_paths(&example, "", &mut named);
        let mut known = Vec::new();
        key_paths(&super::schema(), "", &mut known);
        named.sort();
        known.sort();
        assert_eq!(named, known, "socketlab.example.toml and the config differ");
    }
}
