//! Fixtures for the services' unit tests: the shared state built from a
//! [`Config`], and a [`Harness`] over it that drives sessions without a
//! network (see `reactor::testing`).
//!
//! ```text
//! let mut h = testing::harness(Config::default());
//! let c = h.open(ServiceId::Echo);
//! h.input(c, b"hello\n");
//! assert_eq!(h.output(c), b"hello\n");
//! ```

use super::Shared;
use crate::config::Config;
pub use crate::reactor::testing::{Ending, Harness, Recorded};

/// The services' shared state for `config`. Exec is switched off unless
/// the test asks for it with [`shared_with_exec`], so no key file or work
/// directory is touched.
pub fn shared(mut config: Config) -> Shared {
    config.exec.service.enabled = false;
    Shared::new(config).expect("shared state without exec needs no files")
}

/// A harness over [`shared`]`(config)`.
pub fn harness(config: Config) -> Harness {
    Harness::new(shared(config))
}
