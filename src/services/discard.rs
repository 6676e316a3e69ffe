//! discard (RFC 863): reads everything and throws it away.
//!
//! # Format
//!
//! ```text
//! client: <any bytes>...        daemon: (nothing, ever)
//! UDP datagrams are ignored.
//! ```
//!
//! The simplest possible session: it consumes all input and never writes,
//! so the reactor's read path alone is exercised. A client that sends
//! without pause is read as fast as it sends.

use super::Cx;

/// A discard connection has no state at all (and so costs no allocation:
/// a `Box` of a zero-sized type does not allocate).
pub struct Session;

impl super::Session for Session {
    fn on_input(&mut self, input: &[u8], _cx: &mut Cx<'_>) -> usize {
        input.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::service_id::ServiceId;
    use crate::services::testing::{Ending, harness};

    #[test]
    fn discard_takes_every_byte_and_never_answers() {
        let mut h = harness(Config::default());
        let c = h.open(ServiceId::Discard);
        h.input(c, b"anything\n");
        h.input(c, &[0u8; 70_000]);
        assert!(h.unconsumed(c).is_empty());
        assert!(h.output(c).is_empty());
        h.peer_closed(c);
        assert!(h.output(c).is_empty());
        assert_eq!(h.recorded(c).ending, Some(Ending::Closed));
    }
}
