//! The files login's SCRAM messages (src/services/files/login.rs): any JSON
//! object as the login frame, then any JSON object as the proof against a
//! challenge built for the name it carried (a real user's secrets or a
//! fake challenge alike). A proof that is not the right one must be refused,
//! never accepted and never a panic.
//!
//! Run: `cargo +nightly fuzz run files_login` in fuzz/ (docs/fuzzing.md).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use socketlab::auth::scram::StoredSecrets;
use socketlab::codec::frame::Header;
use socketlab::services::files::login;

fuzz_target!(|data: &[u8]| {
    // The input is the login frame and the proof frame, split at the
    // first NUL (JSON text never holds one).
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = serde_json::from_slice::<Header>(first) else {
        return;
    };
    let Ok((user, nonce)) = login::parse_login(&header) else {
        return;
    };
    // A cheap iteration count: the fuzzer explores messages, not PBKDF2.
    let secrets = (user.len() % 2 == 0).then(|| StoredSecrets::derive("pencil", b"salt", 1));
    let mut out = BytesMut::new();
    let pending = login::challenge(&user, &nonce, &[7; 24], secrets, &[9; 32], &mut out);
    assert!(out.len() > 4, "a challenge is a frame");
    let Ok(proof) = serde_json::from_slice::<Header>(second) else {
        return;
    };
    let mut out = BytesMut::new();
    // Whatever the fuzzer sends is not the proof for "pencil" (it would
    // have to invert HMAC-SHA256), so it must be refused.
    assert!(login::finish(&pending, &proof, &mut out).is_err());
});
