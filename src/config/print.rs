//! `serve --print-config`: the effective configuration as a TOML file that
//! can be edited and fed back with `--config`.
//!
//! # Derived values are comments
//!
//! Some values are not set by any layer but worked out at start: a
//! service's `listen` (from `bind`, `port_base` and its offset) and
//! `limits.max_connections` (from the open-file limit). Printing them as
//! keys would freeze them: a file printed with `port_base = 7000` and then
//! edited to `port_base = 8000` would still listen on 7007, because the
//! printed `listen` keys win over the derivation. So a derived value is
//! printed as a comment in its section (`# listen = "127.0.0.1:7007"`),
//! where it informs the reader and does nothing; a value some layer set is
//! printed as a key, as it was set.

use std::path::PathBuf;

use super::Config;
use crate::services::ServiceId;

impl Config {
    /// The configuration as TOML, for `--print-config`. Values some layer
    /// set are keys; derived values are comments: each service's resolved
    /// `listen` when the configuration leaves it derived, and
    /// `limits.max_connections` as `derived_max_connections` (what the
    /// daemon would resolve it to) when the configuration leaves it unset.
    /// Loading the text again gives the same configuration.
    pub fn to_toml(&self, derived_max_connections: Option<usize>) -> String {
        // TOML strings are UTF-8 and paths need not be. `load` refuses a
        // path that is not UTF-8, so the lossy conversion changes nothing
        // for a loaded configuration; it only keeps this function total.
        let mut shown = self.clone();
        shown.data_dir = PathBuf::from(shown.data_dir.to_string_lossy().into_owned());
        shown.exec.workdir = PathBuf::from(shown.exec.workdir.to_string_lossy().into_owned());
        let body = toml::to_string(&shown).expect("a Config with UTF-8 paths is always valid TOML");

        let mut out = String::from(
            "# socketlab configuration, as `socketlab serve --print-config` printed it.\n\
             # Feed it back with `socketlab serve --config FILE`. Commented lines show\n\
             # values worked out at start; uncomment one to pin it.\n\n",
        );
        for line in body.lines() {
            out.push_str(line);
            out.push('\n');
            let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                continue;
            };
            if section == "limits" && self.limits.max_connections.is_none() {
                if let Some(max) = derived_max_connections {
                    out.push_str(&format!(
                        "# max_connections = {max}  (derived: the open-file limit minus 32)\n"
                    ));
                }
                continue;
            }
            let Some(id) = ServiceId::from_name(section) else {
                continue;
            };
            // A listen that does not resolve is left out; `load` never
            // returns such a configuration, so this only matters for one
            // built by hand.
            if self.service(id).listen.is_none()
                && let Ok(addr) = self.listen_addr(id)
            {
                out.push_str(&format!(
                    "# listen = \"{addr}\"  (derived from bind and port_base)\n"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::fixtures::*;
    use crate::config::{Config, Overrides, load};
    use crate::services::ServiceId;

    // ---- Printing --------------------------------------------------------

    /// Prints `config`, loads the text back from a real file, and checks
    /// that nothing changed, and that printing again gives the same text.
    fn assert_round_trip(config: &Config) {
        let printed = config.to_toml(Some(1000));
        let file = TempFile::with(&printed);
        let reloaded = load(Some(&file.0), &[], &Overrides::default())
            .unwrap_or_else(|e| panic!("printed config must load: {e}\n{printed}"));
        assert_eq!(&reloaded, config, "\n{printed}");
        assert_eq!(
            reloaded.to_toml(Some(1000)),
            printed,
            "printing must be stable"
        );
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
            "reactors=auto",
            "chat.cluster=redis://127.0.0.1:6379",
            "files.resume_ttl_s=60",
            "admin.header_timeout_s=2",
            "limits.max_connections_per_ip=3",
        ])
        .unwrap();
        assert_round_trip(&c);
        c = load(None, &sets(&["echo.mode=upper"]), &flags).unwrap();
        // Set explicitly, it is printed as a key.
        c.limits.max_connections = Some(1234);
        assert_round_trip(&c);
    }

    #[test]
    fn derived_listens_and_limits_are_comments_and_set_ones_are_keys() {
        let c = load_sets(&["echo.listen=127.0.0.1:9007"]).unwrap();
        let printed = c.to_toml(Some(1000));
        let table: toml::Table = printed.parse().unwrap();
        // Set: a key.
        assert_eq!(table["echo"]["listen"].as_str(), Some("127.0.0.1:9007"));
        // Derived: a comment in its own section, and no key.
        assert!(table["chat"].get("listen").is_none(), "{printed}");
        let chat = printed.split("[chat]\n").nth(1).unwrap();
        assert!(
            chat.starts_with("# listen = \"127.0.0.1:7194\""),
            "{printed}"
        );
        assert!(table["limits"].get("max_connections").is_none());
        assert!(
            printed.contains("[limits]\n# max_connections = 1000"),
            "{printed}"
        );
        assert!(!printed.contains("listen = \"127.0.0.1:9007\"  (derived"));
    }

    #[test]
    fn an_edited_port_base_in_a_printed_file_moves_the_derived_listens() {
        let printed = Config::default().to_toml(Some(1000));
        let edited = printed.replace("port_base = 7000", "port_base = 8000");
        assert_ne!(edited, printed);
        let file = TempFile::with(&edited);
        let c = load(Some(&file.0), &[], &Overrides::default()).unwrap();
        assert_eq!(
            c.listen_addr(ServiceId::Echo).unwrap(),
            inet("127.0.0.1:8007")
        );
        assert_eq!(
            c.listen_addr(ServiceId::Exec).unwrap(),
            inet("127.0.0.1:8512")
        );
    }
}
