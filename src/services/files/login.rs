//! The files login: SCRAM-SHA-256 carried in frames (PROTOCOL.md §5.4).
//! Pure: frames and secrets in, frames and a verdict out; the arithmetic
//! is [`crate::auth::scram`]'s.
//!
//! # Format
//!
//! ```text
//! daemon: {"type":"hello","service":"files","version":1,"auth":"scram-sha-256"}
//! client: {"type":"login","user":"alice","nonce":"<24 to 256 of ! to ~, no comma>"}
//! daemon: {"type":"challenge","salt":"<hex>","iterations":100000,"nonce":"<client nonce + server nonce>"}
//! client: {"type":"proof","proof":"<64 hex ClientProof>"}
//! daemon: {"type":"ok","signature":"<64 hex ServerSignature>","cwd":"/"}
//!      or {"type":"error","error":"authentication failed"}, then close
//! ```
//!
//! # Names cannot be probed
//!
//! A challenge for a name nobody has looks like a real one: the same salt
//! length, the default iteration count, and a salt that is
//! `HMAC(daemon secret, name)`, so asking twice about one name gives the
//! same salt, as it would for a real user. Only the proof then fails, for
//! every password, with the same error a wrong password gets. The secret is
//! the daemon's own (`<data-dir>/files.key`), so nobody else can compute
//! which salts are fake.

use bytes::BytesMut;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use crate::auth::handshake::AUTH_FAILED;
use crate::auth::scram::{self, KEY_LEN, StoredSecrets};
use crate::auth::users::{DEFAULT_ITERATIONS, SALT_LEN};
use crate::codec::frame::{self, Header, frame_type};
use crate::codec::hex;

/// Random bytes in the daemon's part of the nonce (sent as hex).
pub const SERVER_NONCE_LEN: usize = 24;

/// What the daemon remembers between the challenge and the proof.
#[derive(Debug, Clone)]
pub struct Pending {
    pub user: String,
    /// The user's secrets, or `None` for a name nobody has.
    secrets: Option<StoredSecrets>,
    auth_message: String,
}

/// Why a login failed. Every variant is a failed handshake: the same error
/// frame, a close, and one failure counted against the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// A proof that does not prove (or a name nobody has).
    WrongProof,
    /// Some other frame than the one expected, or a malformed one; the
    /// string says what was expected.
    BadFrame(&'static str),
}

impl std::fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginFailure::WrongProof => f.write_str(AUTH_FAILED),
            LoginFailure::BadFrame(expected) => write!(f, "{AUTH_FAILED}: expected {expected}"),
        }
    }
}

impl LoginFailure {
    pub fn encode(&self, out: &mut BytesMut) {
        frame::encode_error(&self.to_string(), None, out);
    }
}

/// The login frame's shape, quoted when another frame comes instead.
pub const LOGIN_SHAPE: &str =
    r#"{"type":"login","user":"<name>","nonce":"<24 to 256 of ! to ~, no comma>"}"#;
/// The proof frame's shape, quoted when another frame comes instead.
pub const PROOF_SHAPE: &str = r#"{"type":"proof","proof":"<64 hex>"}"#;

/// Appends the files hello.
pub fn encode_hello(out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Hello {
        #[serde(rename = "type")]
        kind: &'static str,
        service: &'static str,
        version: u64,
        auth: &'static str,
    }
    frame::encode_fixed(
        &Hello {
            kind: "hello",
            service: "files",
            version: 1,
            auth: "scram-sha-256",
        },
        out,
    );
}

/// Reads the login frame: `(user, client nonce)`.
pub fn parse_login(header: &Header) -> Result<(String, String), LoginFailure> {
    let text = |name: &str| header.get(name).and_then(Value::as_str);
    match (frame_type(header), text("user"), text("nonce")) {
        ("login", Some(user), Some(nonce)) if scram::valid_client_nonce(nonce) => {
            Ok((user.to_string(), nonce.to_string()))
        }
        _ => Err(LoginFailure::BadFrame(LOGIN_SHAPE)),
    }
}

/// The salt a challenge for a name nobody has carries.
pub fn fake_salt(secret: &[u8; 32], user: &str) -> [u8; SALT_LEN] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
    mac.update(b"socketlab files fake salt\0");
    mac.update(user.as_bytes());
    let digest: [u8; 32] = mac.finalize().into_bytes().into();
    std::array::from_fn(|i| digest[i])
}

/// Builds the challenge for `user` (with its secrets, or `None` for an
/// unknown name) and appends its frame; returns what the proof will be
/// checked against.
pub fn challenge(
    user: &str,
    client_nonce: &str,
    server_nonce: &[u8; SERVER_NONCE_LEN],
    secrets: Option<StoredSecrets>,
    secret: &[u8; 32],
    out: &mut BytesMut,
) -> Pending {
    let (salt, iterations) = match &secrets {
        Some(s) => (s.salt.clone(), s.iterations),
        None => (fake_salt(secret, user).to_vec(), DEFAULT_ITERATIONS),
    };
    let salt_hex = hex::encode(&salt);
    let nonce = format!("{client_nonce}{}", hex::encode(server_nonce));
    #[derive(Serialize)]
    struct Challenge<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        salt: &'a str,
        iterations: u32,
        nonce: &'a str,
    }
    frame::encode_fixed(
        &Challenge {
            kind: "challenge",
            salt: &salt_hex,
            iterations,
            nonce: &nonce,
        },
        out,
    );
    Pending {
        user: user.to_string(),
        secrets,
        auth_message: scram::auth_message(user, &nonce, &salt_hex, iterations),
    }
}

/// Checks the proof frame; on success appends the `ok` frame and returns
/// nothing more to do, the user being `pending.user`.
pub fn finish(pending: &Pending, header: &Header, out: &mut BytesMut) -> Result<(), LoginFailure> {
    let proof = match (frame_type(header), header.get("proof")) {
        ("proof", Some(Value::String(proof))) => proof,
        _ => return Err(LoginFailure::BadFrame(PROOF_SHAPE)),
    };
    let proof = hex::decode(proof).unwrap_or_default();
    let signature = pending
        .secrets
        .as_ref()
        .and_then(|s| s.verify(pending.auth_message.as_bytes(), &proof))
        .ok_or(LoginFailure::WrongProof)?;
    encode_ok(&signature, out);
    Ok(())
}

fn encode_ok(signature: &[u8; KEY_LEN], out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Ok<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        signature: &'a str,
        cwd: &'static str,
    }
    frame::encode_fixed(
        &Ok {
            kind: "ok",
            signature: &hex::encode(signature),
            cwd: "/",
        },
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::{FrameDecoder, Item};
    use serde_json::json;

    fn header(value: Value) -> Header {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn decode(out: &mut BytesMut) -> Header {
        match FrameDecoder::default().decode(out) {
            Ok(Some(Item::Header(h))) => h,
            _ => panic!("no frame"),
        }
    }

    const SECRET: [u8; 32] = [9; 32];
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF";

    /// Plays the client's part: the proof for `password` answering `challenge`.
    fn prove(user: &str, password: &str, challenge: &Header) -> Header {
        let salt = hex::decode(challenge["salt"].as_str().unwrap()).unwrap();
        let iterations = challenge["iterations"].as_u64().unwrap() as u32;
        let nonce = challenge["nonce"].as_str().unwrap();
        let salted = scram::salted_password(password, &salt, iterations);
        let message = scram::auth_message(user, nonce, &hex::encode(&salt), iterations);
        let proof = scram::client_proof(&scram::client_key(&salted), message.as_bytes());
        header(json!({"type": "proof", "proof": hex::encode(&proof)}))
    }

    #[test]
    fn hello_is_exactly_the_protocol_text() {
        let mut out = BytesMut::new();
        encode_hello(&mut out);
        assert_eq!(
            std::str::from_utf8(&out[4..]).unwrap(),
            r#"{"type":"hello","service":"files","version":1,"auth":"scram-sha-256"}"#
        );
    }

    #[test]
    fn the_right_password_logs_in_and_the_signature_checks() {
        let secrets = StoredSecrets::derive("pencil", b"0123456789abcdef", 4096);
        let mut out = BytesMut::new();
        let pending = challenge(
            "alice",
            NONCE,
            &[1; 24],
            Some(secrets.clone()),
            &SECRET,
            &mut out,
        );
        let c = decode(&mut out);
        assert!(c["nonce"].as_str().unwrap().starts_with(NONCE));
        finish(&pending, &prove("alice", "pencil", &c), &mut out).unwrap();
        let ok = decode(&mut out);
        assert_eq!(ok["cwd"], "/");
        let message = scram::auth_message(
            "alice",
            c["nonce"].as_str().unwrap(),
            c["salt"].as_str().unwrap(),
            4096,
        );
        let expected = scram::server_signature(&secrets.server_key, message.as_bytes());
        assert_eq!(ok["signature"], hex::encode(&expected));
    }

    #[test]
    fn a_wrong_password_fails() {
        let secrets = StoredSecrets::derive("pencil", b"0123456789abcdef", 4096);
        let mut out = BytesMut::new();
        let pending = challenge("alice", NONCE, &[1; 24], Some(secrets), &SECRET, &mut out);
        let c = decode(&mut out);
        assert_eq!(
            finish(&pending, &prove("alice", "pen", &c), &mut out),
            Err(LoginFailure::WrongProof)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn an_unknown_name_gets_a_stable_plausible_challenge_and_fails() {
        let mut first = BytesMut::new();
        let pending = challenge("nobody", NONCE, &[1; 24], None, &SECRET, &mut first);
        let a = decode(&mut first);
        challenge("nobody", NONCE, &[2; 24], None, &SECRET, &mut first);
        let b = decode(&mut first);
        assert_eq!(a["salt"], b["salt"], "repeated probes agree");
        assert_eq!(a["salt"].as_str().unwrap().len(), SALT_LEN * 2);
        assert_eq!(a["iterations"], DEFAULT_ITERATIONS);
        challenge("somebody", NONCE, &[1; 24], None, &SECRET, &mut first);
        assert_ne!(decode(&mut first)["salt"], a["salt"]);
        assert_eq!(
            finish(&pending, &prove("nobody", "", &a), &mut first),
            Err(LoginFailure::WrongProof)
        );
    }

    #[test]
    fn malformed_frames_are_failures() {
        for bad in [
            json!({"type": "login", "user": "a"}),
            json!({"type": "login", "user": "a", "nonce": "short"}),
            json!({"type": "login", "user": "a", "nonce": format!("{},", "x".repeat(30))}),
            json!({"type": "pwd"}),
        ] {
            assert!(matches!(
                parse_login(&header(bad)),
                Err(LoginFailure::BadFrame(_))
            ));
        }
        let pending = challenge("a", NONCE, &[1; 24], None, &SECRET, &mut BytesMut::new());
        assert!(matches!(
            finish(
                &pending,
                &header(json!({"type": "proof"})),
                &mut BytesMut::new()
            ),
            Err(LoginFailure::BadFrame(_))
        ));
    }
}
