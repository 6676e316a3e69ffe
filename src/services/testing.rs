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

/// The services' shared state for `config` with exec on, keeping its key
/// and work directory under `data_dir` (a temporary directory).
pub fn shared_with_exec(mut config: Config, data_dir: &std::path::Path) -> Shared {
    config.exec.service.enabled = true;
    config.data_dir = data_dir.to_path_buf();
    Shared::new(config).expect("exec's key and work directory in a temporary directory")
}

/// The `Shared` a harness was built over.
pub fn shared_of(h: &mut Harness) -> &mut Shared {
    let services: &mut dyn std::any::Any = h.services();
    services
        .downcast_mut::<Shared>()
        .expect("the harness was built over services::Shared")
}
