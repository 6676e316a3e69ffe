//! `serve --print-config`: the effective configuration as TOML.

use std::path::PathBuf;

use super::Config;
use crate::services::ServiceId;

impl Config {
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
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::fixtures::*;
    use crate::config::{Config, Overrides, load};
    use crate::services::ServiceId;

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
            "reactors=auto",
            "chat.cluster=redis://127.0.0.1:6379",
            "files.resume_ttl_s=60",
            "admin.header_timeout_s=2",
            "limits.max_connections_per_ip=3",
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
}
