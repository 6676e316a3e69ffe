//! The frames of the exec service's handshake (PROTOCOL.md §5.2), for both
//! ends: the daemon encodes the hello and checks the answer, the client
//! reads the hello and encodes the answer.
//!
//! # Format
//!
//! ```text
//! daemon: {"type":"hello","service":"exec","version":1,"auth":"hmac-sha256","challenge":"<64 hex>"}
//! client: {"type":"auth","mac":"<64 hex: HMAC-SHA256(key, challenge bytes)>"}
//! daemon: {"type":"ok"}
//!      or {"type":"error","error":"authentication failed"}, then close
//! ```
//!
//! A throttled address gets, in place of the hello,
//! `{"type":"error","code":"throttled","error":"too many failed attempts; retry later"}`,
//! and a client too slow to answer gets
//! `{"type":"error","error":"authentication timed out"}`; both are then
//! closed. The files service sends the same two frames, so they live here.
//!
//! The exact strings matter: other programs compare them, so each is a
//! constant below and every frame is written from a struct whose fields are
//! in the order shown above.

use std::fmt;

use bytes::BytesMut;
use serde::Serialize;
use serde_json::Value;

use super::challenge::{self, Challenge};
use super::key::Key;
use crate::codec::frame::{self, Header, frame_type};
use crate::codec::hex;

/// The reason sent when the MAC (or a files proof) is wrong.
pub const AUTH_FAILED: &str = "authentication failed";
/// The reason sent when the handshake is not done within
/// `auth.handshake_timeout_s`.
pub const AUTH_TIMED_OUT: &str = "authentication timed out";
/// The reason sent, in place of the hello, to a throttled address.
pub const THROTTLED: &str = "too many failed attempts; retry later";
/// The machine-readable code sent with [`THROTTLED`].
pub const THROTTLED_CODE: &str = "throttled";

/// The exec hello's `"version"`.
pub const EXEC_VERSION: u64 = 1;
/// The exec hello's `"auth"`.
pub const EXEC_AUTH: &str = "hmac-sha256";

/// Appends the exec hello carrying `challenge` to `out`.
pub fn encode_hello(challenge: &Challenge, out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Hello<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        service: &'static str,
        version: u64,
        auth: &'static str,
        challenge: &'a str,
    }
    let challenge = challenge.to_hex();
    frame::encode_fixed(
        &Hello {
            kind: "hello",
            service: "exec",
            version: EXEC_VERSION,
            auth: EXEC_AUTH,
            challenge: &challenge,
        },
        out,
    );
}

/// Appends `{"type":"ok"}` to `out`: the handshake succeeded.
pub fn encode_ok(out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Ok {
        #[serde(rename = "type")]
        kind: &'static str,
    }
    frame::encode_fixed(&Ok { kind: "ok" }, out);
}

/// Appends the error frame for a handshake not done in time.
pub fn encode_timed_out(out: &mut BytesMut) {
    frame::encode_error(AUTH_TIMED_OUT, None, out);
}

/// Appends the error frame a throttled address gets instead of a hello.
pub fn encode_throttled(out: &mut BytesMut) {
    frame::encode_error(THROTTLED, Some(THROTTLED_CODE), out);
}

/// Why a client's first frame does not authenticate it. Every variant is a
/// failed handshake: the daemon sends [`AuthFailure::encode`], closes, and
/// counts a failure against the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// An auth frame whose `"mac"` is not the right answer (including one
    /// that is not 64 hex characters).
    WrongMac,
    /// Some other frame, or an auth frame without a string `"mac"`.
    NotAnAuthFrame,
}

impl AuthFailure {
    /// Appends the error frame that answers this failure.
    pub fn encode(&self, out: &mut BytesMut) {
        frame::encode_error(&self.to_string(), None, out);
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::WrongMac => f.write_str(AUTH_FAILED),
            AuthFailure::NotAnAuthFrame => write!(
                f,
                "{AUTH_FAILED}: expected {{\"type\":\"auth\",\"mac\":\"<64 hex>\"}}"
            ),
        }
    }
}

impl std::error::Error for AuthFailure {}

/// Checks a client's answer to `challenge`: `Ok` when `header` is
/// `{"type":"auth","mac":<the right MAC>}` (other fields are ignored).
pub fn check_auth(key: &Key, challenge: &Challenge, header: &Header) -> Result<(), AuthFailure> {
    if frame_type(header) != "auth" {
        return Err(AuthFailure::NotAnAuthFrame);
    }
    let Some(Value::String(mac)) = header.get("mac") else {
        return Err(AuthFailure::NotAnAuthFrame);
    };
    if challenge::verify(key, challenge, mac) {
        Ok(())
    } else {
        Err(AuthFailure::WrongMac)
    }
}

/// Appends the client's answer `{"type":"auth","mac":"<64 hex>"}` to `out`.
pub fn encode_auth(key: &Key, challenge: &Challenge, out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Auth<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        mac: &'a str,
    }
    let mac = hex::encode(&challenge::mac(key, challenge));
    frame::encode_fixed(
        &Auth {
            kind: "auth",
            mac: &mac,
        },
        out,
    );
}

/// Why a client cannot answer the daemon's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// The daemon sent an error frame instead (for example, throttled).
    Refused { error: String, code: Option<String> },
    /// The daemon sent something that is not an exec hello this client
    /// speaks; the string says what was wrong.
    Unexpected(String),
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Refused { error, .. } => write!(f, "refused: {error}"),
            HelloError::Unexpected(what) => write!(f, "unexpected greeting: {what}"),
        }
    }
}

impl std::error::Error for HelloError {}

/// Reads the daemon's first frame on the client side and returns the
/// challenge to answer.
pub fn parse_hello(header: &Header) -> Result<Challenge, HelloError> {
    let text = |name: &str| header.get(name).and_then(Value::as_str);
    match frame_type(header) {
        "hello" => {}
        "error" => {
            return Err(HelloError::Refused {
                error: text("error").unwrap_or("(no reason given)").to_string(),
                code: text("code").map(str::to_string),
            });
        }
        other => return Err(HelloError::Unexpected(format!("a {other:?} frame"))),
    }
    if text("service") != Some("exec") {
        return Err(HelloError::Unexpected("not the exec service".to_string()));
    }
    if header.get("version").and_then(Value::as_u64) != Some(EXEC_VERSION) {
        return Err(HelloError::Unexpected(format!(
            "protocol version other than {EXEC_VERSION}"
        )));
    }
    if text("auth") != Some(EXEC_AUTH) {
        return Err(HelloError::Unexpected(format!(
            "authentication other than {EXEC_AUTH}"
        )));
    }
    text("challenge")
        .and_then(Challenge::from_hex)
        .ok_or_else(|| HelloError::Unexpected("challenge is not 64 hex characters".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::{FrameDecoder, Item};
    use serde_json::json;

    /// The JSON text of the one frame in `out`, checking its length prefix.
    fn json_of(out: &BytesMut) -> &str {
        let (prefix, json) = out.split_at(4);
        assert_eq!(
            u32::from_be_bytes(prefix.try_into().unwrap()) as usize,
            json.len()
        );
        std::str::from_utf8(json).unwrap()
    }

    fn header(value: Value) -> Header {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn fixture() -> (Key, Challenge) {
        (
            Key::from_bytes([0x42; 32]),
            Challenge::from_bytes(std::array::from_fn(|i| i as u8)),
        )
    }

    // ---- Daemon side ----

    #[test]
    fn hello_is_exactly_the_protocol_text() {
        let (_, challenge) = fixture();
        let mut out = BytesMut::new();
        encode_hello(&challenge, &mut out);
        assert_eq!(
            json_of(&out),
            format!(
                r#"{{"type":"hello","service":"exec","version":1,"auth":"hmac-sha256","challenge":"{}"}}"#,
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
            )
        );
    }

    #[test]
    fn fixed_frames_are_exactly_the_protocol_text() {
        type Encoder = fn(&mut BytesMut);
        let cases: [(Encoder, &str); 3] = [
            (encode_ok, r#"{"type":"ok"}"#),
            (
                encode_timed_out,
                r#"{"type":"error","error":"authentication timed out"}"#,
            ),
            (
                encode_throttled,
                r#"{"type":"error","code":"throttled","error":"too many failed attempts; retry later"}"#,
            ),
        ];
        for (encode, expected) in cases {
            let mut out = BytesMut::new();
            encode(&mut out);
            assert_eq!(json_of(&out), expected);
        }
        let mut out = BytesMut::new();
        AuthFailure::WrongMac.encode(&mut out);
        assert_eq!(
            json_of(&out),
            r#"{"type":"error","error":"authentication failed"}"#
        );
    }

    #[test]
    fn check_auth_accepts_the_right_mac() {
        let (key, challenge) = fixture();
        let mac = hex::encode(&challenge::mac(&key, &challenge));
        let answer = header(json!({"type": "auth", "mac": mac}));
        assert_eq!(check_auth(&key, &challenge, &answer), Ok(()));
    }

    #[test]
    fn check_auth_refuses_wrong_macs() {
        let (key, challenge) = fixture();
        for mac in ["", "zz", &"00".repeat(32)] {
            let answer = header(json!({"type": "auth", "mac": mac}));
            assert_eq!(
                check_auth(&key, &challenge, &answer),
                Err(AuthFailure::WrongMac)
            );
        }
    }

    #[test]
    fn check_auth_refuses_other_frames() {
        let (key, challenge) = fixture();
        for answer in [
            json!({"type": "run", "argv": ["true"]}),
            json!({"type": "auth"}),
            json!({"type": "auth", "mac": 7}),
        ] {
            let failure = check_auth(&key, &challenge, &header(answer)).unwrap_err();
            assert_eq!(failure, AuthFailure::NotAnAuthFrame);
            assert!(failure.to_string().starts_with(AUTH_FAILED));
        }
    }

    // ---- Both sides together ----

    #[test]
    fn client_answer_to_a_hello_passes_the_daemon_check() {
        let (key, challenge) = fixture();
        let mut wire = BytesMut::new();
        encode_hello(&challenge, &mut wire);
        let mut decoder = FrameDecoder::default();
        let Ok(Some(Item::Header(hello))) = decoder.decode(&mut wire) else {
            panic!("no hello decoded");
        };
        let received = parse_hello(&hello).unwrap();
        assert_eq!(received, challenge);

        encode_auth(&key, &received, &mut wire);
        let Ok(Some(Item::Header(answer))) = decoder.decode(&mut wire) else {
            panic!("no answer decoded");
        };
        assert_eq!(check_auth(&key, &challenge, &answer), Ok(()));
        let other_key = Key::from_bytes([0x43; 32]);
        assert_eq!(
            check_auth(&other_key, &challenge, &answer),
            Err(AuthFailure::WrongMac)
        );
    }

    // ---- Client side ----

    #[test]
    fn parse_hello_reports_a_refusal() {
        let refusal = header(json!({"type": "error", "code": "throttled", "error": THROTTLED}));
        assert_eq!(
            parse_hello(&refusal),
            Err(HelloError::Refused {
                error: THROTTLED.to_string(),
                code: Some("throttled".to_string())
            })
        );
    }

    #[test]
    fn parse_hello_refuses_what_it_does_not_speak() {
        let good = json!({"type": "hello", "service": "exec", "version": 1,
                          "auth": "hmac-sha256", "challenge": "ab".repeat(32)});
        assert!(parse_hello(&header(good.clone())).is_ok());
        for (field, value) in [
            ("type", json!("welcome")),
            ("service", json!("files")),
            ("version", json!(2)),
            ("auth", json!("scram-sha-256")),
            ("challenge", json!("abcd")),
            ("challenge", json!(null)),
        ] {
            let mut hello = header(good.clone());
            hello.insert(field.to_string(), value);
            assert!(
                matches!(parse_hello(&hello), Err(HelloError::Unexpected(_))),
                "{field}"
            );
        }
    }
}
