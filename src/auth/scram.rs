//! SCRAM-SHA-256 computations (RFC 5802, with RFC 7677's hash), as the
//! files login uses them (PROTOCOL.md §5.4).
//!
//! # Why SCRAM
//!
//! A login must prove that the client knows the password without the
//! password crossing the wire, and without the daemon keeping anything that
//! would let a thief of the user file log in. SCRAM does both:
//!
//! ```text
//!   SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, iterations)   slow, client only
//!   ClientKey      = HMAC(SaltedPassword, "Client Key")
//!   StoredKey      = H(ClientKey)                                      kept by the daemon
//!   ServerKey      = HMAC(SaltedPassword, "Server Key")                kept by the daemon
//!
//!   ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)      sent by the client
//!   ServerSignature = HMAC(ServerKey, AuthMessage)                    sent by the daemon
//! ```
//!
//! The daemon recovers `ClientKey` from the proof (XOR with the signature it
//! can compute from `StoredKey`) and checks that its hash is `StoredKey`. A
//! stolen user file holds `StoredKey`, from which no proof can be made, and
//! the expensive PBKDF2 step runs on the client alone: on the daemon's loop a
//! login costs two HMACs and a hash. The daemon's signature, in turn, proves
//! to the client that it talks to a holder of `ServerKey`, not an impostor.
//!
//! # Where the messages come from
//!
//! RFC 5802 builds `AuthMessage` from its own `n=…,r=…` text messages; the
//! socketlab protocol carries the same values in JSON frames and builds the
//! message as `"<user>,<full nonce>,<salt hex>,<iterations>"`
//! ([`auth_message`]). Everything else is the RFC's arithmetic, which is
//! why the functions below take `AuthMessage` as plain bytes: the tests run
//! them on RFC 7677's own example exchange.
//!
//! Nothing here touches a socket or the clock.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The length of every key, proof and signature: one SHA-256 output.
pub const KEY_LEN: usize = 32;

/// The secrets a daemon keeps for one user (never the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecrets {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

impl StoredSecrets {
    /// Derives what the daemon stores from a password: the costly step,
    /// run by `socketlab user add|passwd`, never by the daemon's loop.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> StoredSecrets {
        let salted = salted_password(password, salt, iterations);
        let client_key = client_key(&salted);
        StoredSecrets {
            salt: salt.to_vec(),
            iterations,
            stored_key: stored_key(&client_key),
            server_key: server_key(&salted),
        }
    }

    /// Checks a client's proof for `auth_message`. On success returns the
    /// signature the daemon sends back.
    pub fn verify(&self, auth_message: &[u8], proof: &[u8]) -> Option<[u8; KEY_LEN]> {
        verify_proof(&self.stored_key, auth_message, proof)
            .then(|| server_signature(&self.server_key, auth_message))
    }
}

/// `PBKDF2-HMAC-SHA256(password, salt, iterations, 32)`.
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations.max(1), &mut out);
    out
}

/// `HMAC(SaltedPassword, "Client Key")`.
pub fn client_key(salted_password: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    hmac(salted_password, b"Client Key")
}

/// `HMAC(SaltedPassword, "Server Key")`.
pub fn server_key(salted_password: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    hmac(salted_password, b"Server Key")
}

/// `H(ClientKey)`.
pub fn stored_key(client_key: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    Sha256::digest(client_key).into()
}

/// `ClientKey XOR HMAC(StoredKey, AuthMessage)`: what the client sends.
pub fn client_proof(client_key: &[u8; KEY_LEN], auth_message: &[u8]) -> [u8; KEY_LEN] {
    let signature = hmac(&stored_key(client_key), auth_message);
    xor(client_key, &signature)
}

/// `HMAC(ServerKey, AuthMessage)`: what the daemon sends back.
pub fn server_signature(server_key: &[u8; KEY_LEN], auth_message: &[u8]) -> [u8; KEY_LEN] {
    hmac(server_key, auth_message)
}

/// Whether `proof` proves knowledge of the `ClientKey` whose hash is
/// `stored_key`. A proof of the wrong length is simply wrong; the final
/// comparison takes the same time wherever the keys differ.
pub fn verify_proof(stored_key: &[u8; KEY_LEN], auth_message: &[u8], proof: &[u8]) -> bool {
    let Ok(proof) = <[u8; KEY_LEN]>::try_from(proof) else {
        return false;
    };
    let client_signature = hmac(stored_key, auth_message);
    let client_key = xor(&proof, &client_signature);
    let candidate: [u8; KEY_LEN] = Sha256::digest(client_key).into();
    constant_time_eq(&candidate, stored_key)
}

/// The socketlab protocol's `AuthMessage`:
/// `"<user>,<full nonce>,<salt hex>,<iterations>"` (PROTOCOL.md §5.4).
pub fn auth_message(user: &str, nonce: &str, salt_hex: &str, iterations: u32) -> String {
    format!("{user},{nonce},{salt_hex},{iterations}")
}

/// Whether a client nonce is acceptable: 24 to 256 characters from `!` to
/// `~`, no comma (PROTOCOL.md §5.4).
pub fn valid_client_nonce(nonce: &str) -> bool {
    (24..=256).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b',')
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; KEY_LEN] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Compares without stopping at the first difference, so the time taken
/// tells an attacker nothing about where a guess went wrong.
fn constant_time_eq(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;

    /// RFC 7677 §3's example exchange: user `user`, password `pencil`,
    /// 4,096 iterations. The RFC gives salt, proof and signature in
    /// base64; here they are the same bytes in hex.
    const RFC_SALT: &str = "5b6d99689d12358eeca04b141236fa81";
    const RFC_PROOF: &str = "747cdb65aa56224e2352137e52d7bdcad6a0f738df30782caa69a2cfb0277554";
    const RFC_SIGNATURE: &str = "eabae24d1062db75a9451ff0b6ea7e98c8546549ff741e672d3251b2397de46e";

    /// The RFC's AuthMessage: client-first-bare, server-first and
    /// client-final-without-proof, joined by commas.
    fn rfc_auth_message() -> String {
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        format!("{client_first_bare},{server_first},{client_final}")
    }

    fn rfc_secrets() -> StoredSecrets {
        StoredSecrets::derive("pencil", &hex::decode(RFC_SALT).unwrap(), 4096)
    }

    #[test]
    fn client_proof_matches_rfc_7677() {
        let salted = salted_password("pencil", &hex::decode(RFC_SALT).unwrap(), 4096);
        let proof = client_proof(&client_key(&salted), rfc_auth_message().as_bytes());
        assert_eq!(hex::encode(&proof), RFC_PROOF);
    }

    #[test]
    fn server_signature_matches_rfc_7677() {
        let secrets = rfc_secrets();
        let signature = server_signature(&secrets.server_key, rfc_auth_message().as_bytes());
        assert_eq!(hex::encode(&signature), RFC_SIGNATURE);
    }

    #[test]
    fn the_daemon_accepts_the_rfc_proof_from_stored_secrets_alone() {
        let secrets = rfc_secrets();
        let proof = hex::decode(RFC_PROOF).unwrap();
        let signature = secrets.verify(rfc_auth_message().as_bytes(), &proof);
        assert_eq!(
            signature.map(|s| hex::encode(&s)),
            Some(RFC_SIGNATURE.into())
        );
    }

    #[test]
    fn a_proof_with_any_bit_flipped_is_refused() {
        let secrets = rfc_secrets();
        let message = rfc_auth_message();
        let proof = hex::decode(RFC_PROOF).unwrap();
        for byte in 0..KEY_LEN {
            let mut bad = proof.clone();
            bad[byte] ^= 0x01;
            assert!(
                secrets.verify(message.as_bytes(), &bad).is_none(),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn a_proof_for_another_message_or_of_another_length_is_refused() {
        let secrets = rfc_secrets();
        let proof = hex::decode(RFC_PROOF).unwrap();
        assert!(secrets.verify(b"another message", &proof).is_none());
        assert!(
            secrets
                .verify(rfc_auth_message().as_bytes(), &proof[..31])
                .is_none()
        );
        assert!(secrets.verify(rfc_auth_message().as_bytes(), &[]).is_none());
    }

    #[test]
    fn the_protocol_auth_message_joins_its_four_parts_with_commas() {
        assert_eq!(
            auth_message("ada", "abcdefghijklmnopqrstuvwxSERVER", "00ff", 600000),
            "ada,abcdefghijklmnopqrstuvwxSERVER,00ff,600000"
        );
    }

    #[test]
    fn client_nonces_are_24_to_256_printable_characters_without_commas() {
        assert!(valid_client_nonce(&"a".repeat(24)));
        assert!(valid_client_nonce(&"~".repeat(256)));
        assert!(!valid_client_nonce(&"a".repeat(23)));
        assert!(!valid_client_nonce(&"a".repeat(257)));
        assert!(!valid_client_nonce(&format!("{},", "a".repeat(24))));
        assert!(!valid_client_nonce(&format!("{} ", "a".repeat(24))));
        assert!(!valid_client_nonce(&format!("{}é", "a".repeat(24))));
    }
}
