//! The files requests and their answers, as frames (PROTOCOL.md §5.5).
//! Pure: a decoded header in, a typed [`Request`] out; typed answers in,
//! frame bytes out.
//!
//! Every answer is written from a struct whose fields are in the order the
//! protocol page shows them, so the bytes on the wire read like the page.

use std::fmt;

use bytes::BytesMut;
use serde::Serialize;
use serde_json::Value;

use super::jail::Entry;
use crate::codec::frame::{self, Header, frame_type};
use crate::codec::hex;

/// A request after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Pwd,
    Cd {
        path: String,
    },
    Ls {
        path: Option<String>,
    },
    Mkdir {
        path: String,
    },
    Rm {
        path: String,
    },
    Quota,
    Bye,
    Put {
        path: String,
        size: u64,
        sha256: [u8; 32],
    },
    Get {
        path: String,
        offset: u64,
    },
}

/// Why a well-formed frame is not a request this service serves; answered
/// with an error frame, and the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    UnknownType(String),
    /// A field missing or of the wrong type: (request type, field, what
    /// it should be).
    BadField(&'static str, &'static str, &'static str),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::UnknownType(t) => write!(f, "unknown request type {t:?}"),
            RequestError::BadField(t, field, what) => {
                write!(f, "{t}: \"{field}\" must be {what}")
            }
        }
    }
}

impl RequestError {
    pub fn encode(&self, out: &mut BytesMut) {
        let code = match self {
            RequestError::UnknownType(_) => "unknown_type",
            RequestError::BadField(..) => "bad_request",
        };
        frame::encode_error(&self.to_string(), Some(code), out);
    }
}

/// Reads a request out of a decoded header. Unknown extra fields are
/// ignored, as a newer client may send some.
pub fn parse(header: &Header) -> Result<Request, RequestError> {
    let kind = frame_type(header);
    let string = |field: &'static str, t: &'static str| match header.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(RequestError::BadField(t, field, "a string")),
    };
    Ok(match kind {
        "pwd" => Request::Pwd,
        "quota" => Request::Quota,
        "bye" => Request::Bye,
        "cd" => Request::Cd {
            path: string("path", "cd")?,
        },
        "mkdir" => Request::Mkdir {
            path: string("path", "mkdir")?,
        },
        "rm" => Request::Rm {
            path: string("path", "rm")?,
        },
        "ls" => Request::Ls {
            path: match header.get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(RequestError::BadField("ls", "path", "a string")),
            },
        },
        "put" => Request::Put {
            path: string("path", "put")?,
            size: header
                .get("size")
                .and_then(Value::as_u64)
                .ok_or(RequestError::BadField("put", "size", "a whole number"))?,
            sha256: header
                .get("sha256")
                .and_then(Value::as_str)
                .and_then(hex::decode_array::<32>)
                .ok_or(RequestError::BadField("put", "sha256", "64 hex characters"))?,
        },
        "get" => Request::Get {
            path: string("path", "get")?,
            offset: match header.get("offset") {
                None | Some(Value::Null) => 0,
                Some(v) => {
                    v.as_u64()
                        .ok_or(RequestError::BadField("get", "offset", "a whole number"))?
                }
            },
        },
        other => return Err(RequestError::UnknownType(other.to_string())),
    })
}

/// `{"type":"ok"}`.
pub fn encode_ok(out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Ok {
        #[serde(rename = "type")]
        kind: &'static str,
    }
    frame::encode_fixed(&Ok { kind: "ok" }, out);
}

/// `{"type":"ok","cwd":...}`.
pub fn encode_cwd(cwd: &str, out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Cwd<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        cwd: &'a str,
    }
    frame::encode_fixed(&Cwd { kind: "ok", cwd }, out);
}

/// `{"type":"ok","entries":[...]}`; returns the header's length so the
/// caller can compare it with the frame limit.
pub fn encode_listing(entries: &[Entry], out: &mut BytesMut) -> usize {
    #[derive(Serialize)]
    struct Line<'a> {
        name: &'a str,
        kind: &'static str,
        size: u64,
        mtime: i64,
    }
    #[derive(Serialize)]
    struct Listing<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        entries: Vec<Line<'a>>,
    }
    let listing = Listing {
        kind: "ok",
        entries: entries
            .iter()
            .map(|e| Line {
                name: &e.name,
                kind: if e.meta.is_dir { "dir" } else { "file" },
                size: if e.meta.is_dir { 0 } else { e.meta.size },
                mtime: e.meta.mtime,
            })
            .collect(),
    };
    frame::encode(&listing, out).unwrap_or(usize::MAX)
}

/// `{"type":"ok","used":N,"limit":N|null}`.
pub fn encode_quota(used: u64, limit: Option<u64>, out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Quota {
        #[serde(rename = "type")]
        kind: &'static str,
        used: u64,
        limit: Option<u64>,
    }
    frame::encode_fixed(
        &Quota {
            kind: "ok",
            used,
            limit,
        },
        out,
    );
}

/// The upload's `{"type":"ready","offset":K}`.
pub fn encode_put_ready(offset: u64, out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Ready {
        #[serde(rename = "type")]
        kind: &'static str,
        offset: u64,
    }
    frame::encode_fixed(
        &Ready {
            kind: "ready",
            offset,
        },
        out,
    );
}

/// The upload's last answer, `{"type":"ok","size":N,"sha256":...}`.
pub fn encode_put_done(size: u64, sha256: &[u8; 32], out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Done<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        size: u64,
        sha256: &'a str,
    }
    frame::encode_fixed(
        &Done {
            kind: "ok",
            size,
            sha256: &hex::encode(sha256),
        },
        out,
    );
}

/// The download's `{"type":"ready","size":N,"offset":K,"sha256":...}`.
pub fn encode_get_ready(size: u64, offset: u64, sha256: &[u8; 32], out: &mut BytesMut) {
    #[derive(Serialize)]
    struct Ready<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        size: u64,
        offset: u64,
        sha256: &'a str,
    }
    frame::encode_fixed(
        &Ready {
            kind: "ready",
            size,
            offset,
            sha256: &hex::encode(sha256),
        },
        out,
    );
}

/// The over-quota refusal, with the bytes still free.
pub fn encode_over_quota(free: u64, out: &mut BytesMut) {
    #[derive(Serialize)]
    struct OverQuota {
        #[serde(rename = "type")]
        kind: &'static str,
        code: &'static str,
        error: &'static str,
        free: u64,
    }
    frame::encode_fixed(
        &OverQuota {
            kind: "error",
            code: "quota",
            error: "over quota",
            free,
        },
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn header(value: Value) -> Header {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn json_of(out: &BytesMut) -> &str {
        std::str::from_utf8(&out[4..]).unwrap()
    }

    #[test]
    fn every_request_parses() {
        let sum = "ab".repeat(32);
        let cases = [
            (json!({"type": "pwd"}), Request::Pwd),
            (json!({"type": "quota"}), Request::Quota),
            (json!({"type": "bye"}), Request::Bye),
            (
                json!({"type": "cd", "path": "a"}),
                Request::Cd { path: "a".into() },
            ),
            (json!({"type": "ls"}), Request::Ls { path: None }),
            (
                json!({"type": "ls", "path": "/x"}),
                Request::Ls {
                    path: Some("/x".into()),
                },
            ),
            (
                json!({"type": "mkdir", "path": "d"}),
                Request::Mkdir { path: "d".into() },
            ),
            (
                json!({"type": "rm", "path": "f"}),
                Request::Rm { path: "f".into() },
            ),
            (
                json!({"type": "put", "path": "f", "size": 3, "sha256": sum}),
                Request::Put {
                    path: "f".into(),
                    size: 3,
                    sha256: [0xab; 32],
                },
            ),
            (
                json!({"type": "get", "path": "f"}),
                Request::Get {
                    path: "f".into(),
                    offset: 0,
                },
            ),
            (
                json!({"type": "get", "path": "f", "offset": 9}),
                Request::Get {
                    path: "f".into(),
                    offset: 9,
                },
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(parse(&header(frame)), Ok(expected));
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (json!({"type": "dance"}), "unknown request type \"dance\""),
            (json!({"type": "cd"}), "cd: \"path\" must be a string"),
            (
                json!({"type": "rm", "path": 3}),
                "rm: \"path\" must be a string",
            ),
            (
                json!({"type": "put", "path": "f", "size": -1, "sha256": "ab".repeat(32)}),
                "put: \"size\" must be a whole number",
            ),
            (
                json!({"type": "put", "path": "f", "size": 1, "sha256": "xyz"}),
                "put: \"sha256\" must be 64 hex characters",
            ),
            (
                json!({"type": "get", "path": "f", "offset": "0"}),
                "get: \"offset\" must be a whole number",
            ),
        ];
        for (frame, message) in cases {
            assert_eq!(parse(&header(frame)).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn answers_are_exactly_the_protocol_text() {
        let mut out = BytesMut::new();
        encode_cwd("/a/b", &mut out);
        assert_eq!(json_of(&out), r#"{"type":"ok","cwd":"/a/b"}"#);
        let mut out = BytesMut::new();
        encode_quota(5, None, &mut out);
        assert_eq!(json_of(&out), r#"{"type":"ok","used":5,"limit":null}"#);
        let mut out = BytesMut::new();
        encode_put_ready(7, &mut out);
        assert_eq!(json_of(&out), r#"{"type":"ready","offset":7}"#);
        let mut out = BytesMut::new();
        encode_over_quota(12, &mut out);
        assert_eq!(
            json_of(&out),
            r#"{"type":"error","code":"quota","error":"over quota","free":12}"#
        );
        let mut out = BytesMut::new();
        encode_get_ready(3, 1, &[0; 32], &mut out);
        assert_eq!(
            json_of(&out),
            format!(
                r#"{{"type":"ready","size":3,"offset":1,"sha256":"{}"}}"#,
                "00".repeat(32)
            )
        );
    }
}
