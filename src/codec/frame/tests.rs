//! Tests of the frame codec: decoding whole and in pieces, the header
//! limit, each way a header can be malformed, encoding, and two properties:
//! any split of a valid stream decodes the same, and no bytes make it panic.

use super::*;
use proptest::prelude::*;
use serde_json::json;

/// A header and the payload bytes that followed it, the unit the tests
/// compare: payload chunking may differ between runs, their content not.
type Exchange = (Header, Vec<u8>);

/// The raw bytes of one frame with the given JSON text as its header.
fn raw_frame(json: &str) -> Vec<u8> {
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

fn object(value: Value) -> Header {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Decodes everything `buf` holds the way a service does: a header with
/// a `"size"` announces that many payload bytes. Appends to `exchanges`,
/// and returns once the buffer holds no whole item.
fn drain(
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
    exchanges: &mut Vec<Exchange>,
) -> Result<(), FrameError> {
    // Each item consumes at least one byte except an empty payload's
    // chunk, which follows a header, so the items are bounded.
    for _ in 0..=2 * buf.len() + 2 {
        match decoder.decode(buf)? {
            None => return Ok(()),
            Some(Item::Header(header)) => {
                if let Some(size) = header.get("size").and_then(Value::as_u64) {
                    decoder.expect_payload(size);
                }
                exchanges.push((header, Vec::new()));
            }
            Some(Item::Payload { chunk, last }) => {
                let (_, payload) = exchanges.last_mut().expect("payload before any header");
                payload.extend_from_slice(&chunk);
                assert_eq!(last, decoder.payload_remaining() == 0);
            }
        }
    }
    panic!("decode did not stop");
}

/// Feeds `stream` to a fresh decoder in pieces of the given sizes
/// (cycled), and returns every exchange decoded.
fn decode_in_pieces(stream: &[u8], pieces: &[usize]) -> Result<Vec<Exchange>, FrameError> {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut exchanges = Vec::new();
    let mut rest = stream;
    let mut sizes = pieces.iter().copied().cycle();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (piece, after) = rest.split_at(size);
        buf.extend_from_slice(piece);
        rest = after;
        drain(&mut decoder, &mut buf, &mut exchanges)?;
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    assert!(decoder.is_at_item_boundary());
    Ok(exchanges)
}

fn error_of(stream: &[u8]) -> FrameError {
    match decode_in_pieces(stream, &[stream.len()]) {
        Err(e) => e,
        Ok(exchanges) => panic!("decoded {exchanges:?}, wanted an error"),
    }
}

// ---- Decoding whole frames ----

#[test]
fn decodes_one_header() {
    let exchanges = decode_in_pieces(&raw_frame(r#"{"type":"pwd"}"#), &[]).unwrap();
    assert_eq!(exchanges, vec![(object(json!({"type": "pwd"})), vec![])]);
}

#[test]
fn decodes_back_to_back_frames_from_one_read() {
    let mut stream = raw_frame(r#"{"type":"a"}"#);
    stream.extend(raw_frame(r#" { "type" : "b", "n": [1, 2] } "#));
    let exchanges = decode_in_pieces(&stream, &[stream.len()]).unwrap();
    assert_eq!(
        exchanges,
        vec![
            (object(json!({"type": "a"})), vec![]),
            (object(json!({"type": "b", "n": [1, 2]})), vec![]),
        ]
    );
}

#[test]
fn any_split_point_gives_the_same_frames() {
    let mut stream = raw_frame(r#"{"type":"stdout","size":5}"#);
    stream.extend_from_slice(b"hello");
    stream.extend(raw_frame(r#"{"type":"exit","code":0}"#));
    let whole = decode_in_pieces(&stream, &[stream.len()]).unwrap();
    assert_eq!(whole[0].1, b"hello");
    assert_eq!(whole.len(), 2);
    for first in 1..stream.len() {
        let split = decode_in_pieces(&stream, &[first, stream.len()]).unwrap();
        assert_eq!(split, whole, "split at {first}");
    }
    assert_eq!(decode_in_pieces(&stream, &[1]).unwrap(), whole);
}

#[test]
fn incomplete_header_stays_in_the_buffer_and_reserves_room() {
    let stream = raw_frame(r#"{"type":"quota"}"#);
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(&stream[..6]);
    assert!(decoder.decode(&mut buf).unwrap().is_none());
    // The prefix is consumed; the two header bytes wait for the rest.
    assert_eq!(&buf[..], &stream[4..6]);
    assert!(buf.capacity() >= stream.len() - 4);
    assert!(!decoder.is_at_item_boundary());
    buf.extend_from_slice(&stream[6..]);
    let item = decoder.decode(&mut buf).unwrap();
    assert_eq!(item, Some(Item::Header(object(json!({"type": "quota"})))));
    assert!(decoder.is_at_item_boundary());
}

// ---- Payloads ----

#[test]
fn payload_is_handed_out_as_it_arrives() {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(&raw_frame(r#"{"type":"stdin","size":6}"#)[..]);
    buf.extend_from_slice(b"abc");
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Item::Header(_)))
    ));
    decoder.expect_payload(6);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Item::Payload {
            chunk: Bytes::from_static(b"abc"),
            last: false
        })
    );
    assert_eq!(decoder.payload_remaining(), 3);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    // The rest of the payload arrives with the next frame glued on.
    buf.extend_from_slice(b"def");
    buf.extend(raw_frame(r#"{"type":"stdin_eof"}"#));
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Item::Payload {
            chunk: Bytes::from_static(b"def"),
            last: true
        })
    );
    assert_eq!(decoder.payload_remaining(), 0);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Item::Header(object(json!({"type": "stdin_eof"}))))
    );
}

#[test]
fn empty_payload_is_one_empty_last_chunk() {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    decoder.expect_payload(0);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Item::Payload {
            chunk: Bytes::new(),
            last: true
        })
    );
    assert!(decoder.is_at_item_boundary());
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
}

#[test]
fn payload_that_looks_like_frames_is_still_payload() {
    let inner = raw_frame(r#"{"type":"not-a-frame"}"#);
    let mut stream = raw_frame(&format!(r#"{{"type":"stdout","size":{}}}"#, inner.len()));
    stream.extend_from_slice(&inner);
    let exchanges = decode_in_pieces(&stream, &[3]).unwrap();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].1, inner);
}

#[test]
#[should_panic(expected = "middle of an item")]
fn expect_payload_inside_a_header_is_a_caller_bug() {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(&[0, 0, 0, 9, b'{'][..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    decoder.expect_payload(1);
}

// ---- Fatal errors ----

#[test]
fn oversized_header_is_refused_on_its_prefix_alone() {
    let mut decoder = FrameDecoder::new(16);
    let mut buf = BytesMut::from(&17u32.to_be_bytes()[..]);
    let e = decoder.decode(&mut buf).unwrap_err();
    assert!(matches!(e, FrameError::HeaderTooLarge { len: 17, max: 16 }));
    assert_eq!(e.to_string(), "header too large: 17 bytes, the limit is 16");
    assert_eq!(e.code(), "frame_too_large");
}

#[test]
fn header_of_exactly_the_limit_is_accepted() {
    let json = r#"{"type":"x","pad":"......"}"#;
    let mut decoder = FrameDecoder::new(json.len());
    let mut buf = BytesMut::from(&raw_frame(json)[..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Item::Header(_)))
    ));
}

#[test]
fn default_limit_is_64_kib() {
    let mut decoder = FrameDecoder::default();
    assert_eq!(decoder.max_header(), 65_536);
    let mut buf = BytesMut::from(&65_537u32.to_be_bytes()[..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(FrameError::HeaderTooLarge { len: 65_537, .. })
    ));
    let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    assert!(decoder.decode(&mut buf).is_err());
}

#[test]
fn invalid_utf8_is_refused() {
    let mut stream = vec![0, 0, 0, 4];
    stream.extend_from_slice(b"{\"\xff\"");
    let e = error_of(&stream);
    assert!(matches!(e, FrameError::InvalidUtf8));
    assert_eq!(e.to_string(), "header is not valid UTF-8");
}

#[test]
fn invalid_json_is_refused() {
    for json in ["", "{", r#"{"type":"a"} x"#, "{'type':'a'}", "nul"] {
        let e = error_of(&raw_frame(json));
        assert!(matches!(e, FrameError::InvalidJson(_)), "{json:?}: {e}");
        assert!(e.to_string().starts_with("header is not valid JSON: "));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let json = format!(
        r#"{{"type":"a","x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(matches!(
        error_of(&raw_frame(&json)),
        FrameError::InvalidJson(_)
    ));
}

#[test]
fn non_objects_are_refused() {
    for json in ["[]", r#""type""#, "1", "null"] {
        assert!(matches!(
            error_of(&raw_frame(json)),
            FrameError::NotAnObject
        ));
    }
}

#[test]
fn type_must_be_present_and_a_string() {
    let e = error_of(&raw_frame(r#"{"kind":"pwd"}"#));
    assert!(matches!(e, FrameError::MissingType));
    assert_eq!(e.to_string(), "header has no \"type\" field");
    for json in [r#"{"type":1}"#, r#"{"type":null}"#, r#"{"type":["a"]}"#] {
        let e = error_of(&raw_frame(json));
        assert!(matches!(e, FrameError::TypeNotString), "{json}");
    }
    assert_eq!(
        FrameError::TypeNotString.to_string(),
        "header field \"type\" is not a string"
    );
}

// ---- Encoding ----

#[test]
fn encode_patches_the_length_after_existing_output() {
    let mut out = BytesMut::from(&b"xy"[..]);
    let len = encode(&json!({"type": "ok"}), &mut out).unwrap();
    assert_eq!(len, 13);
    assert_eq!(&out[..], b"xy\x00\x00\x00\x0d{\"type\":\"ok\"}");
}

#[test]
fn encode_leaves_output_untouched_on_error() {
    let mut bad = std::collections::HashMap::new();
    bad.insert(vec![1u8], 2);
    let mut out = BytesMut::from(&b"keep"[..]);
    assert!(matches!(
        encode(&bad, &mut out),
        Err(EncodeError::Serialize(_))
    ));
    assert_eq!(&out[..], b"keep");
}

#[test]
fn encode_error_writes_the_protocol_shape() {
    let mut out = BytesMut::new();
    encode_error(
        "too many failed attempts; retry later",
        Some("throttled"),
        &mut out,
    );
    let json =
        r#"{"type":"error","code":"throttled","error":"too many failed attempts; retry later"}"#;
    assert_eq!(out, raw_frame(json));

    let mut out = BytesMut::new();
    encode_error("authentication failed", None, &mut out);
    assert_eq!(
        out,
        raw_frame(r#"{"type":"error","error":"authentication failed"}"#)
    );
}

#[test]
fn frame_errors_encode_with_their_reason_and_code() {
    let mut out = BytesMut::new();
    FrameError::NotAnObject.encode(&mut out);
    assert_eq!(
        out,
        raw_frame(r#"{"type":"error","code":"bad_frame","error":"header is not a JSON object"}"#)
    );
}

#[test]
fn encode_chunk_writes_header_then_bytes() {
    let mut out = BytesMut::new();
    encode_chunk("stdout", b"hi\x00", &mut out);
    let mut expected = raw_frame(r#"{"type":"stdout","size":3}"#);
    expected.extend_from_slice(b"hi\x00");
    assert_eq!(out, expected);
}

#[test]
fn frame_type_reads_the_type() {
    assert_eq!(frame_type(&object(json!({"type": "run"}))), "run");
    assert_eq!(frame_type(&Header::new()), "");
}

// ---- Properties ----

/// A header with a string type and a few scalar fields; `"size"` is
/// added by the stream builder when a payload follows.
fn arb_header() -> impl Strategy<Value = Header> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    (
        "[a-z_]{1,10}",
        proptest::collection::btree_map("[a-z]{1,6}", scalar, 0..4),
    )
        .prop_map(|(kind, fields)| {
            let mut header: Header = fields.into_iter().collect();
            header.remove("size");
            header.insert("type".to_string(), Value::from(kind));
            header
        })
}

/// Exchanges (some with payloads, some without) and their encoding.
fn arb_stream() -> impl Strategy<Value = (Vec<Exchange>, Vec<u8>)> {
    let exchange = (
        arb_header(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
    );
    proptest::collection::vec(exchange, 0..8).prop_map(|exchanges| {
        let mut out = BytesMut::new();
        let mut expected = Vec::new();
        for (mut header, payload) in exchanges {
            if let Some(payload) = &payload {
                header.insert("size".to_string(), Value::from(payload.len()));
            }
            encode(&header, &mut out).unwrap();
            let payload = payload.unwrap_or_default();
            out.extend_from_slice(&payload);
            expected.push((header, payload));
        }
        (expected, out.to_vec())
    })
}

/// Bytes that look like frames often enough to get past the length
/// prefix: segments of a small announced length and JSON-ish text.
fn arb_hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        (0u32..80, r#"[{}\[\]":,a-z0-9 ]{0,60}"#).prop_map(|(len, text)| {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend_from_slice(text.as_bytes());
            bytes
        }),
        Just(raw_frame(r#"{"type":"stdout","size":7}"#)),
        Just(raw_frame(r#"{"type":"x","size":18446744073709551615}"#)),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(segment, 0..10).prop_map(|segments| segments.concat())
}

proptest! {
    #[test]
    fn any_split_of_a_valid_stream_decodes_the_same(
        (expected, stream) in arb_stream(),
        pieces in proptest::collection::vec(1usize..64, 1..10),
    ) {
        prop_assert_eq!(&decode_in_pieces(&stream, &pieces).unwrap(), &expected);
        prop_assert_eq!(&decode_in_pieces(&stream, &[1]).unwrap(), &expected);
    }

    #[test]
    fn any_bytes_never_panic_and_buffer_at_most_one_header(
        stream in arb_hostile_bytes(),
        max_header in 0usize..64,
        pieces in proptest::collection::vec(1usize..32, 1..6),
    ) {
        let mut decoder = FrameDecoder::new(max_header);
        let mut buf = BytesMut::new();
        let mut exchanges = Vec::new();
        let mut rest = &stream[..];
        let mut sizes = pieces.iter().copied().cycle();
        while let Some(size) = sizes.next().filter(|_| !rest.is_empty()) {
            let (piece, after) = rest.split_at(size.min(rest.len()));
            buf.extend_from_slice(piece);
            rest = after;
            if drain(&mut decoder, &mut buf, &mut exchanges).is_err() {
                break;
            }
            // What waits in the buffer is part of a length prefix or of a
            // header no longer than the limit; a payload is never held.
            prop_assert!(buf.len() < LENGTH_PREFIX.max(max_header));
        }
    }
}
