//! [`ConfigError`]: what the daemon prints, as one line, when a
//! configuration cannot be used.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_is_one_line() {
        let e = ConfigError("first\nsecond".to_string());
        assert_eq!(e.to_string(), "config: first; second");
    }
}
