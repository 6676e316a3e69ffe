//! Challenge and response: proving knowledge of the key without sending it.
//!
//! The daemon sends 32 fresh random bytes, the challenge; the client answers
//! with `HMAC-SHA256(key, challenge)`. Only someone holding the key can
//! compute that MAC, and because the challenge is new on every connection,
//! a MAC overheard on one connection is worthless on the next (no replay).
//! The key itself never crosses the wire.
//!
//! The daemon checks the answer in constant time: a comparison that stops at
//! the first differing byte would tell an attacker, through its timing, how
//! many leading bytes of a guess were right, and let them find a valid MAC
//! byte by byte. `hmac`'s `verify_slice` compares every byte whatever the
//! outcome.

use std::io;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::key::Key;
use crate::codec::hex;

/// The challenge's length in bytes (64 hex characters on the wire).
pub const CHALLENGE_LEN: usize = 32;

/// A HMAC-SHA256 tag's length in bytes (64 hex characters on the wire).
pub const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The random bytes a daemon sends in its hello, one per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge([u8; CHALLENGE_LEN]);

impl Challenge {
    /// A fresh challenge from the operating system's secure random source.
    /// It fails only if that source does, in which case the connection
    /// cannot be served safely and should be closed.
    pub fn new() -> io::Result<Challenge> {
        let mut bytes = [0u8; CHALLENGE_LEN];
        super::fill_random(&mut bytes)?;
        Ok(Challenge(bytes))
    }

    pub fn from_bytes(bytes: [u8; CHALLENGE_LEN]) -> Challenge {
        Challenge(bytes)
    }

    /// Reads the 64 hex characters of a hello's `"challenge"`.
    pub fn from_hex(text: &str) -> Option<Challenge> {
        hex::decode_array(text).map(Challenge)
    }

    pub fn as_bytes(&self) -> &[u8; CHALLENGE_LEN] {
        &self.0
    }

    /// The challenge as sent on the wire: 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

/// `HMAC-SHA256(key, challenge)`: the answer a client sends, as bytes.
pub fn mac(key: &Key, challenge: &Challenge) -> [u8; MAC_LEN] {
    let mut hmac = keyed(key);
    hmac.update(challenge.as_bytes());
    hmac.finalize().into_bytes().into()
}

/// Whether `mac_hex` is the right answer to `challenge` under `key`.
///
/// Anything but 64 hex characters is simply wrong. Refusing those early
/// reveals only the expected length, which is public; the comparison of the
/// MAC itself takes the same time wherever it differs.
pub fn verify(key: &Key, challenge: &Challenge, mac_hex: &str) -> bool {
    let Some(claimed) = hex::decode_array::<MAC_LEN>(mac_hex) else {
        return false;
    };
    let mut hmac = keyed(key);
    hmac.update(challenge.as_bytes());
    hmac.verify_slice(&claimed).is_ok()
}

/// A HMAC-SHA256 instance keyed with `key`.
fn keyed(key: &Key) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed first), so this
    // cannot fail for 32 bytes; `KeyInit::new` avoids the fallible path.
    <HmacSha256 as KeyInit>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key and challenge of recognisable bytes, and their MAC as computed
    /// independently, e.g. with
    /// `python3 -c 'import hmac,hashlib; print(hmac.new(bytes(range(32)),
    /// bytes(range(32,64)), hashlib.sha256).hexdigest())'`.
    fn known_vector() -> (Key, Challenge, &'static str) {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let challenge: [u8; 32] = std::array::from_fn(|i| 32 + i as u8);
        (
            Key::from_bytes(key),
            Challenge::from_bytes(challenge),
            "62215de7bddcea7e2c4047ff6bb94f8d18262fc8b3f3648134bb7d44158ff84d",
        )
    }

    #[test]
    fn mac_matches_a_known_vector() {
        let (key, challenge, expected) = known_vector();
        assert_eq!(hex::encode(&mac(&key, &challenge)), expected);
    }

    #[test]
    fn mac_matches_rfc_4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe" is shorter than ours, so this checks the
        // HMAC primitive itself rather than `mac`.
        let mut hmac = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        hmac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&hmac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_the_right_mac_in_either_case() {
        let (key, challenge, expected) = known_vector();
        assert!(verify(&key, &challenge, expected));
        assert!(verify(&key, &challenge, &expected.to_uppercase()));
    }

    #[test]
    fn verify_rejects_a_wrong_mac() {
        let (key, challenge, expected) = known_vector();
        // The last nibble flipped.
        let mut wrong = expected[..63].to_string();
        wrong.push(if expected.ends_with('0') { '1' } else { '0' });
        assert!(!verify(&key, &challenge, &wrong));
        // The right MAC for another challenge or another key.
        let other = Challenge::from_bytes([7; 32]);
        assert!(!verify(&key, &other, expected));
        assert!(!verify(&Key::from_bytes([1; 32]), &challenge, expected));
    }

    #[test]
    fn verify_rejects_short_long_and_non_hex_macs() {
        let (key, challenge, expected) = known_vector();
        assert!(!verify(&key, &challenge, ""));
        assert!(!verify(&key, &challenge, &expected[..62]));
        assert!(!verify(&key, &challenge, &format!("{expected}00")));
        let non_hex = format!("{}zz", &expected[..62]);
        assert!(!verify(&key, &challenge, &non_hex));
    }

    #[test]
    fn challenges_are_fresh_and_round_trip_through_hex() {
        let a = Challenge::new().unwrap();
        let b = Challenge::new().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_hex().len(), 64);
        assert_eq!(Challenge::from_hex(&a.to_hex()), Some(a));
        assert_eq!(Challenge::from_hex("abcd"), None);
    }
}
