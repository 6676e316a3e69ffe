//! The client's half of the files login (PROTOCOL.md §5.4), as pure
//! functions: frames in, frames out, no socket and no clock.
//!
//! # The exchange, from the client's side
//!
//! ```text
//!   daemon  {"type":"hello","service":"files","version":1,"auth":"scram-sha-256"}
//!   client  {"type":"login","user":U,"nonce":CLIENT_NONCE}            login_frame
//!   daemon  {"type":"challenge","salt":HEX,"iterations":I,"nonce":CLIENT_NONCE+SERVER_NONCE}
//!   client  {"type":"proof","proof":HEX}                              answer_challenge
//!   daemon  {"type":"ok","signature":HEX,"cwd":"/"}                   check_ok
//! ```
//!
//! # What the client checks, and why
//!
//! SCRAM authenticates both ends. The proof tells the daemon that the
//! client knows the password; the daemon's signature tells the client that
//! the daemon holds the user's `ServerKey`, which only whoever set the
//! password (or stole the user file) can have. A client that sent its
//! requests without checking the signature would hand its files to any
//! program listening on the port, so [`check_ok`] refuses a wrong or
//! missing signature, and the caller must not send anything after that.
//!
//! The client also refuses a challenge whose nonce does not begin with the
//! nonce it sent: the full nonce ties the exchange to this connection, and
//! a daemon that replays another exchange's challenge is not to be trusted.

use std::fmt;

use serde_json::{Value, json};

use crate::auth::scram::{self, KEY_LEN};
use crate::codec::frame::{Header, frame_type};
use crate::codec::hex;

/// The hello's `"auth"` for the files service.
pub const FILES_AUTH: &str = "scram-sha-256";

/// Characters a client nonce is drawn from: printable, no comma, and
/// 64 of them, so each random byte gives one character without bias.
const NONCE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Client nonce length: 32 characters of 6 random bits each, 192 bits in
/// all (the contract asks for 24 to 256 characters).
pub const CLIENT_NONCE_LEN: usize = 32;

/// Why the login cannot go on. Every one of these ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// The daemon sent an error frame (a wrong password, throttling, a
    /// timeout): its words, and its code if it gave one.
    Refused { error: String, code: Option<String> },
    /// The daemon's frame is not what §5.4 says at this step.
    Unexpected(String),
    /// The daemon's signature is not the one the password gives: whatever
    /// answered does not hold the user's keys.
    BadSignature,
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Refused { error, .. } => write!(f, "login refused: {error}"),
            LoginError::Unexpected(what) => write!(f, "login failed: {what}"),
            LoginError::BadSignature => write!(
                f,
                "login failed: the daemon's signature is wrong, so it does not hold this \
                 user's keys (an impostor, or a user file out of step); nothing was sent"
            ),
        }
    }
}

/// A fresh client nonce from the OS's secure random source.
pub fn new_client_nonce() -> std::io::Result<String> {
    let mut bytes = [0u8; CLIENT_NONCE_LEN];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes
        .iter()
        .map(|b| char::from(NONCE_ALPHABET[usize::from(b & 63)]))
        .collect())
}

/// Checks the daemon's first frame: a files hello with SCRAM, or an error
/// frame (a throttled address gets one in its place).
pub fn check_hello(hello: &Header) -> Result<(), LoginError> {
    match frame_type(hello) {
        "hello" => {}
        "error" => return Err(refused(hello)),
        other => {
            return Err(LoginError::Unexpected(format!(
                "a {other:?} frame, not hello"
            )));
        }
    }
    let service = hello.get("service").and_then(Value::as_str);
    if service != Some("files") {
        return Err(LoginError::Unexpected(format!(
            "the service is {}, not files (is this the files port?)",
            service.unwrap_or("not named")
        )));
    }
    match hello.get("auth").and_then(Value::as_str) {
        Some(FILES_AUTH) => Ok(()),
        other => Err(LoginError::Unexpected(format!(
            "unsupported authentication {}",
            other.unwrap_or("(none)")
        ))),
    }
}

/// The login frame, step 2.
pub fn login_frame(user: &str, client_nonce: &str) -> Value {
    json!({"type": "login", "user": user, "nonce": client_nonce})
}

/// What the client keeps between sending its proof and reading the answer.
#[derive(Debug, Clone)]
pub struct Proof {
    /// The proof frame to send, step 4.
    pub frame: Value,
    /// The signature a genuine daemon will send back.
    pub expected_signature: [u8; KEY_LEN],
}

/// Answers the challenge (step 3) with a proof (step 4). This runs
/// PBKDF2 with the daemon's iteration count: the slow part of a login.
pub fn answer_challenge(
    user: &str,
    password: &str,
    client_nonce: &str,
    challenge: &Header,
) -> Result<Proof, LoginError> {
    match frame_type(challenge) {
        "challenge" => {}
        "error" => return Err(refused(challenge)),
        other => {
            return Err(LoginError::Unexpected(format!(
                "a {other:?} frame, not challenge"
            )));
        }
    }
    let salt_hex = challenge
        .get("salt")
        .and_then(Value::as_str)
        .ok_or_else(|| LoginError::Unexpected("the challenge has no salt".into()))?;
    let salt = hex::decode(salt_hex)
        .ok_or_else(|| LoginError::Unexpected("the challenge's salt is not hex".into()))?;
    let iterations = challenge
        .get("iterations")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .filter(|&i| i > 0)
        .ok_or_else(|| {
            LoginError::Unexpected("the challenge's iterations is not a positive count".into())
        })?;
    let nonce = challenge
        .get("nonce")
        .and_then(Value::as_str)
        .ok_or_else(|| LoginError::Unexpected("the challenge has no nonce".into()))?;
    // The server's part must be there (a daemon that adds nothing adds no
    // freshness of its own) and keep to the same characters.
    if !nonce.starts_with(client_nonce)
        || nonce.len() == client_nonce.len()
        || !nonce
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b',')
    {
        return Err(LoginError::Unexpected(
            "the challenge's nonce does not extend the one this client sent".into(),
        ));
    }
    let message = scram::auth_message(user, nonce, salt_hex, iterations);
    let salted = scram::salted_password(password, &salt, iterations);
    let client_key = scram::client_key(&salted);
    let proof = scram::client_proof(&client_key, message.as_bytes());
    let expected_signature =
        scram::server_signature(&scram::server_key(&salted), message.as_bytes());
    Ok(Proof {
        frame: json!({"type": "proof", "proof": hex::encode(&proof)}),
        expected_signature,
    })
}

/// Checks the daemon's answer to the proof (step 5) and returns the
/// working directory it names.
pub fn check_ok(answer: &Header, proof: &Proof) -> Result<String, LoginError> {
    match frame_type(answer) {
        "ok" => {}
        "error" => return Err(refused(answer)),
        other => return Err(LoginError::Unexpected(format!("a {other:?} frame, not ok"))),
    }
    let signature = answer
        .get("signature")
        .and_then(Value::as_str)
        .and_then(hex::decode_array::<KEY_LEN>)
        .ok_or(LoginError::BadSignature)?;
    // Not secret, so a plain comparison is fine: the client learns
    // nothing an impostor could use from how long it took.
    if signature != proof.expected_signature {
        return Err(LoginError::BadSignature);
    }
    Ok(answer
        .get("cwd")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string())
}

fn refused(frame: &Header) -> LoginError {
    LoginError::Refused {
        error: frame
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("(no reason given)")
            .to_string(),
        code: frame.get("code").and_then(Value::as_str).map(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::StoredSecrets;

    fn header(value: Value) -> Header {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    const NONCE: &str = "abcdefghijklmnopqrstuvwxyz012345";

    fn challenge(nonce: &str) -> Header {
        header(json!({"type": "challenge", "salt": "00ff10", "iterations": 64, "nonce": nonce}))
    }

    /// What a genuine daemon holding the password's secrets answers.
    fn genuine_ok(password: &str, full_nonce: &str) -> Header {
        let secrets = StoredSecrets::derive(password, &[0x00, 0xff, 0x10], 64);
        let message = scram::auth_message("ada", full_nonce, "00ff10", 64);
        let signature = scram::server_signature(&secrets.server_key, message.as_bytes());
        header(json!({"type": "ok", "signature": hex::encode(&signature), "cwd": "/"}))
    }

    #[test]
    fn client_nonces_are_valid_and_fresh() {
        let a = new_client_nonce().unwrap();
        let b = new_client_nonce().unwrap();
        assert!(scram::valid_client_nonce(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_proof_is_accepted_by_the_stored_secrets() {
        let full = format!("{NONCE}SERVER");
        let proof = answer_challenge("ada", "pw", NONCE, &challenge(&full)).unwrap();
        let sent = hex::decode(proof.frame["proof"].as_str().unwrap()).unwrap();
        let secrets = StoredSecrets::derive("pw", &[0x00, 0xff, 0x10], 64);
        let message = scram::auth_message("ada", &full, "00ff10", 64);
        assert!(secrets.verify(message.as_bytes(), &sent).is_some());
    }

    #[test]
    fn a_genuine_signature_passes_and_gives_the_cwd() {
        let full = format!("{NONCE}SERVER");
        let proof = answer_challenge("ada", "pw", NONCE, &challenge(&full)).unwrap();
        assert_eq!(check_ok(&genuine_ok("pw", &full), &proof), Ok("/".into()));
    }

    #[test]
    fn a_signature_from_other_keys_or_none_is_refused() {
        let full = format!("{NONCE}SERVER");
        let proof = answer_challenge("ada", "pw", NONCE, &challenge(&full)).unwrap();
        let impostor = genuine_ok("another password", &full);
        assert_eq!(check_ok(&impostor, &proof), Err(LoginError::BadSignature));
        let unsigned = header(json!({"type": "ok", "cwd": "/"}));
        assert_eq!(check_ok(&unsigned, &proof), Err(LoginError::BadSignature));
    }

    #[test]
    fn a_challenge_that_does_not_extend_our_nonce_is_refused() {
        for bad in [
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzSERVER",
            NONCE,
            &format!("{NONCE}a,b"),
        ] {
            assert!(
                matches!(
                    answer_challenge("ada", "pw", NONCE, &challenge(bad)),
                    Err(LoginError::Unexpected(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_frames_at_any_step_are_refusals_with_their_code() {
        let throttled =
            header(json!({"type": "error", "code": "throttled", "error": "retry later"}));
        assert_eq!(
            check_hello(&throttled),
            Err(LoginError::Refused {
                error: "retry later".into(),
                code: Some("throttled".into())
            })
        );
        let hello = header(json!({"type": "hello", "service": "exec", "auth": "hmac-sha256"}));
        assert!(matches!(
            check_hello(&hello),
            Err(LoginError::Unexpected(_))
        ));
        let hello =
            header(json!({"type": "hello", "service": "files", "version": 1, "auth": FILES_AUTH}));
        assert_eq!(check_hello(&hello), Ok(()));
    }
}
