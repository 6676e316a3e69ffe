//! Protocol codecs: pure byte-in, byte-out code that never touches a socket.
//!
//! - [`frame`]: the length-prefixed JSON frames of the exec and files
//!   services, with raw payloads between them.
//! - [`hex`]: the text form of binary values (challenges, MACs, sums, keys).

pub mod frame;
pub mod hex;
