//! Length-prefixed JSON frames, the framing of the exec and files services
//! (PROTOCOL.md §5.1).
//!
//! # Format
//!
//! ```text
//! +-------------------+-------------------------------+- - - - - - - - - - - -+
//! | L: u32 big-endian | L bytes: a UTF-8 JSON object  | raw bytes, only where  |
//! |                   | with a string field "type"    | a header announces them|
//! +-------------------+-------------------------------+- - - - - - - - - - - -+
//!
//! 00 00 00 0e  {"type":"pwd"}                          <- 4 + 14 bytes
//! 00 00 00 1a  {"type":"stdout","size":5}  hello       <- a header, then 5 raw bytes
//! ```
//!
//! TCP delivers a stream of bytes, not messages: one `read` may return half a
//! frame, or three frames and the start of a fourth. Something has to say
//! where one message ends. Text protocols use a delimiter (chat's `\n`);
//! these services use a length prefix instead, because a JSON header may
//! contain any character and because file contents and program output are
//! binary. The prefix also lets the receiver refuse a frame that is too large
//! *before* buffering it: a peer that announces a 4 GiB header is turned away
//! after sending four bytes.
//!
//! Raw bytes travel *between* frames, never inside JSON: an exec
//! `{"type":"stdout","size":N}` header is followed by N bytes of output, and
//! a files `ready` answer by the file's contents. Only the protocol knows
//! which headers announce bytes and how many, so the decoder cannot find out
//! by itself; the caller tells it with [`FrameDecoder::expect_payload`].
//!
//! # The decoder's states
//!
//! ```text
//!            4 bytes, L <= max_header             L bytes
//!   Length ---------------------------> Header ----------> Length   yields Item::Header
//!     |  \                                                   |
//!     |   `--- L > max_header: FrameError::HeaderTooLarge    | caller: expect_payload(n)
//!     |                                                      v
//!     +<------------------- last chunk ------------------ Payload { remaining }
//!                                                            yields Item::Payload chunks
//! ```
//!
//! # The contract, for callers
//!
//! - Append whatever the socket gave you to a `BytesMut` and call
//!   [`FrameDecoder::decode`] until it returns `Ok(None)`, which means "not a
//!   whole item yet": read more and call again. Any split of the stream works,
//!   down to one byte at a time.
//! - Handle each [`Item::Header`] **before** the next call to `decode`. If the
//!   header announces raw bytes, call `expect_payload(n)` right then; the next
//!   items are [`Item::Payload`] chunks holding exactly `n` bytes in all, and
//!   then decoding of headers resumes. If the caller decoded on without
//!   deciding, the payload's bytes would be read as the next length prefix.
//! - Payload chunks are handed out as they arrive, in pieces of whatever size
//!   the buffer holds (never beyond the announced end), so a 64 KiB payload is
//!   never held whole by the decoder. The last chunk of a payload has
//!   `last: true`; a payload of 0 bytes is one empty chunk with `last: true`,
//!   so every `expect_payload` ends with exactly one `last` chunk.
//! - A [`FrameError`] is fatal: the protocol answers it with an error frame
//!   (see [`FrameError::encode`]) and closes the connection, so the caller
//!   must stop decoding.
//!
//! # Memory
//!
//! The decoder itself holds a few words. What it makes the caller buffer is
//! bounded: at most 3 bytes of a length prefix, or fewer than `max_header`
//! bytes of a header it has already agreed to read, and nothing of a payload.
//! Parsing a header of L bytes into a `serde_json::Map` costs a bounded
//! multiple of L (each JSON value takes at least one byte of input; nesting
//! is capped at serde_json's depth limit of 128, so hostile input cannot
//! overflow the stack either).
//!
//! # Encoding
//!
//! [`encode`] serializes straight into the connection's output buffer: it
//! appends a 4-byte placeholder, lets serde_json write after it, then patches
//! in the length it measured. There is no intermediate `Vec`, which matters
//! when every byte of program output passes through here.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::{Map, Value};

/// The default limit on a header's length `L` (PROTOCOL.md §5.1, config key
/// `frames.max_header`).
pub const DEFAULT_MAX_HEADER: usize = 65_536;

/// The length prefix is a `u32`, big-endian.
const LENGTH_PREFIX: usize = 4;

/// A decoded header: a JSON object whose `"type"` is known to be a string.
pub type Header = Map<String, Value>;

/// One thing the decoder found in the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A whole frame header. Its `"type"` field is a string (use
    /// [`frame_type`] to read it).
    Header(Header),
    /// A piece of the raw bytes announced with
    /// [`FrameDecoder::expect_payload`]. `last` is true on the piece that
    /// completes the payload.
    Payload { chunk: Bytes, last: bool },
}

/// An incremental decoder for one connection's incoming frames.
///
/// It owns no buffer: the caller keeps the connection's input in a
/// `BytesMut` and passes it to every call, so the same buffer serves reads
/// from the socket and decoding without copies.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Largest header length `L` accepted; set once, from
    /// `frames.max_header`.
    max_header: usize,
    /// What the next bytes of the stream are; changes as items are decoded
    /// and when the caller announces a payload.
    state: DecodeState,
}

/// Where in the stream the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Between items: the next 4 bytes are a header's length.
    Length,
    /// The length prefix has been consumed; the next `len` bytes are the
    /// header's JSON.
    Header { len: usize },
    /// The caller announced a payload; `remaining` raw bytes of it are still
    /// to be handed out. `remaining` is 0 only for an empty payload, whose
    /// one empty chunk has not been handed out yet.
    Payload { remaining: u64 },
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new(DEFAULT_MAX_HEADER)
    }
}

impl FrameDecoder {
    /// A decoder that refuses headers longer than `max_header` bytes.
    pub fn new(max_header: usize) -> FrameDecoder {
        FrameDecoder {
            max_header,
            state: DecodeState::Length,
        }
    }

    /// The limit this decoder enforces on a header's length.
    pub fn max_header(&self) -> usize {
        self.max_header
    }

    /// Takes the next item off the front of `buf`.
    ///
    /// `Ok(None)` means `buf` does not hold a whole item yet (or, in a
    /// payload, holds no byte of it); whatever part of an item it holds stays
    /// in `buf` for the next call. While a header is incomplete, this also
    /// reserves room in `buf` for the rest of it, so the caller's next read
    /// can fill it; that room is bounded by `max_header`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, FrameError> {
        loop {
            match self.state {
                DecodeState::Length => {
                    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
                        return Ok(None);
                    };
                    let announced = u32::from_be_bytes(*prefix);
                    // Refuse on the prefix alone, before buffering the body.
                    // The prefix stays in `buf`: the error is fatal anyway.
                    let len = usize::try_from(announced)
                        .ok()
                        .filter(|&len| len <= self.max_header)
                        .ok_or(FrameError::HeaderTooLarge {
                            len: announced,
                            max: self.max_header,
                        })?;
                    buf.advance(LENGTH_PREFIX);
                    self.state = DecodeState::Header { len };
                    // Go round again: the header may already be in `buf`.
                }
                DecodeState::Header { len } => {
                    if buf.len() < len {
                        buf.reserve(len - buf.len());
                        return Ok(None);
                    }
                    let json = buf.split_to(len);
                    // Whether or not the header parses, the framing is
                    // intact: the next byte starts the next length prefix.
                    self.state = DecodeState::Length;
                    return parse_header(&json).map(|header| Some(Item::Header(header)));
                }
                DecodeState::Payload { remaining: 0 } => {
                    self.state = DecodeState::Length;
                    return Ok(Some(Item::Payload {
                        chunk: Bytes::new(),
                        last: true,
                    }));
                }
                DecodeState::Payload { remaining } => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    // Hand out what has arrived, but never bytes past the
                    // payload's end: those belong to the next frame.
                    let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let chunk = buf.split_to(take).freeze();
                    let remaining = remaining - take as u64;
                    let last = remaining == 0;
                    self.state = if last {
                        DecodeState::Length
                    } else {
                        DecodeState::Payload { remaining }
                    };
                    return Ok(Some(Item::Payload { chunk, last }));
                }
            }
        }
    }

    /// Announces that `size` raw bytes follow the header just decoded.
    ///
    /// Call it right after `decode` returned the [`Item::Header`] that
    /// announced them, before decoding again.
    ///
    /// # Panics
    ///
    /// If the decoder is in the middle of a header or of another payload:
    /// that is a bug in the caller, not something a peer can cause.
    pub fn expect_payload(&mut self, size: u64) {
        assert_eq!(
            self.state,
            DecodeState::Length,
            "expect_payload called in the middle of an item"
        );
        self.state = DecodeState::Payload { remaining: size };
    }

    /// How many bytes of an announced payload are still to come (0 when no
    /// payload is under way).
    pub fn payload_remaining(&self) -> u64 {
        match self.state {
            DecodeState::Payload { remaining } => remaining,
            DecodeState::Length | DecodeState::Header { .. } => 0,
        }
    }

    /// Whether the decoder stands between items, having consumed nothing of
    /// the next one. With an empty input buffer, this is the one place where
    /// the peer may cleanly end the stream.
    pub fn is_at_item_boundary(&self) -> bool {
        self.state == DecodeState::Length
    }
}

/// The `"type"` of a decoded header. The decoder only returns headers whose
/// type is a string, so this is empty only for a header built elsewhere.
pub fn frame_type(header: &Header) -> &str {
    header.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Why a stream of frames cannot be read on. Each of these closes the
/// connection after an error frame whose `"error"` is this value's
/// `Display`.
#[derive(Debug)]
pub enum FrameError {
    /// The length prefix announced more than the limit.
    HeaderTooLarge { len: u32, max: usize },
    /// The header's bytes are not UTF-8.
    InvalidUtf8,
    /// The header is UTF-8 but not JSON.
    InvalidJson(serde_json::Error),
    /// The header is JSON, but not an object.
    NotAnObject,
    /// The header is an object without a `"type"` field.
    MissingType,
    /// The header's `"type"` is not a string.
    TypeNotString,
}

impl FrameError {
    /// The machine-readable `"code"` sent with this error.
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::HeaderTooLarge { .. } => "frame_too_large",
            FrameError::InvalidUtf8
            | FrameError::InvalidJson(_)
            | FrameError::NotAnObject
            | FrameError::MissingType
            | FrameError::TypeNotString => "bad_frame",
        }
    }

    /// Appends the error frame that reports this error to the peer.
    pub fn encode(&self, out: &mut BytesMut) {
        encode_error(&self.to_string(), Some(self.code()), out);
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::HeaderTooLarge { len, max } => {
                write!(f, "header too large: {len} bytes, the limit is {max}")
            }
            FrameError::InvalidUtf8 => f.write_str("header is not valid UTF-8"),
            FrameError::InvalidJson(e) => write!(f, "header is not valid JSON: {e}"),
            FrameError::NotAnObject => f.write_str("header is not a JSON object"),
            FrameError::MissingType => f.write_str("header has no \"type\" field"),
            FrameError::TypeNotString => f.write_str("header field \"type\" is not a string"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::InvalidJson(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a header could not be encoded. Neither happens for a
/// `serde_json::Value` or a plain struct of strings, numbers and booleans;
/// they exist for `Serialize` implementations that can fail.
#[derive(Debug)]
pub enum EncodeError {
    /// The value refused to serialize (for example, a map with non-string
    /// keys).
    Serialize(serde_json::Error),
    /// The JSON is longer than a 4-byte length can announce.
    TooLarge { len: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Serialize(e) => write!(f, "cannot serialize header: {e}"),
            EncodeError::TooLarge { len } => {
                write!(f, "header of {len} bytes does not fit a 4-byte length")
            }
        }
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EncodeError::Serialize(e) => Some(e),
            EncodeError::TooLarge { .. } => None,
        }
    }
}

/// Appends one frame holding `header` (which should serialize to a JSON
/// object with a string `"type"`) to `out`, and returns the header's length
/// `L`.
///
/// The JSON is written straight into `out` after a placeholder prefix that
/// is then patched. On error, `out` is left as it was, so a failed encode
/// never leaves half a frame in a connection's output. Callers sending
/// headers whose size depends on data (a long directory listing) compare the
/// returned `L` with the peer's limit.
pub fn encode<T: Serialize + ?Sized>(header: &T, out: &mut BytesMut) -> Result<usize, EncodeError> {
    let start = out.len();
    out.put_u32(0);
    let written = serde_json::to_writer((&mut *out).writer(), header);
    let len = out.len() - start - LENGTH_PREFIX;
    let failure = match (written, u32::try_from(len)) {
        (Ok(()), Ok(prefix)) => {
            debug_assert_eq!(out.get(start + LENGTH_PREFIX), Some(&b'{'));
            out[start..start + LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
            return Ok(len);
        }
        (Err(e), _) => EncodeError::Serialize(e),
        (Ok(()), Err(_)) => EncodeError::TooLarge { len },
    };
    out.truncate(start);
    Err(failure)
}

/// Appends `{"type":"error","code":<code>,"error":<reason>}` to `out`
/// (without `"code"` when it is `None`).
pub fn encode_error(reason: &str, code: Option<&str>, out: &mut BytesMut) {
    /// The error frame's fields, in the order PROTOCOL.md writes them.
    #[derive(Serialize)]
    struct ErrorFrame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<&'a str>,
        error: &'a str,
    }
    let frame = ErrorFrame {
        kind: "error",
        code,
        error: reason,
    };
    encode_fixed(&frame, out);
}

/// Appends `{"type":<kind>,"size":<n>}` followed by the `n` bytes of
/// `payload` to `out`: the shape of exec's `stdout`, `stderr` and `stdin`
/// frames.
pub fn encode_chunk(kind: &str, payload: &[u8], out: &mut BytesMut) {
    #[derive(Serialize)]
    struct ChunkHeader<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        size: usize,
    }
    let header = ChunkHeader {
        kind,
        size: payload.len(),
    };
    out.reserve(LENGTH_PREFIX + 32 + kind.len() + payload.len());
    encode_fixed(&header, out);
    out.extend_from_slice(payload);
}

/// Encodes a header made only of strings, integers, booleans and nulls,
/// which cannot fail: serde_json fails only on non-string map keys,
/// unrepresentable floats or a failing writer, and a `BytesMut` writer never
/// fails. The fixed frames of every framed service go through here.
pub fn encode_fixed<T: Serialize>(header: &T, out: &mut BytesMut) {
    if let Err(e) = encode(header, out) {
        unreachable!("a header of strings and integers always encodes: {e}");
    }
}

/// Checks the header rules of PROTOCOL.md §5.1: UTF-8, JSON, an object, a
/// string `"type"`.
fn parse_header(json: &[u8]) -> Result<Header, FrameError> {
    // Checking UTF-8 first gives a clearer reason than serde_json's
    // "invalid unicode code point" somewhere inside a string.
    let text = std::str::from_utf8(json).map_err(|_| FrameError::InvalidUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(FrameError::InvalidJson)?;
    let Value::Object(header) = value else {
        return Err(FrameError::NotAnObject);
    };
    match header.get("type") {
        Some(Value::String(_)) => Ok(header),
        Some(_) => Err(FrameError::TypeNotString),
        None => Err(FrameError::MissingType),
    }
}

#[cfg(test)]
mod tests;
