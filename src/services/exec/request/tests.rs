//! Tests of exec's request parsing and validation.

use super::*;
use serde_json::json;

fn header(value: Value) -> Header {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn parse_json(value: Value) -> Result<Request, RequestError> {
    parse(&header(value))
}

/// The JSON text of the one frame in `out`, checking its length prefix.
fn json_of(out: &BytesMut) -> &str {
    let (prefix, json) = out.split_at(4);
    assert_eq!(
        u32::from_be_bytes(prefix.try_into().unwrap()) as usize,
        json.len()
    );
    std::str::from_utf8(json).unwrap()
}

// ---- run ----

#[test]
fn run_with_argv_and_defaults() {
    assert_eq!(
        parse_json(json!({"type": "run", "argv": ["echo", "hi"]})),
        Ok(Request::Run(Run {
            command: Command::Argv(vec!["echo".into(), "hi".into()]),
            stdin: false,
            timeout: None,
        }))
    );
}

#[test]
fn run_with_every_field() {
    let request = json!({"type": "run", "argv": ["cat"], "stdin": true, "timeout_ms": 1500});
    assert_eq!(
        parse_json(request),
        Ok(Request::Run(Run {
            command: Command::Argv(vec!["cat".into()]),
            stdin: true,
            timeout: Some(Duration::from_millis(1500)),
        }))
    );
}

#[test]
fn run_with_shell() {
    assert_eq!(
        parse_json(json!({"type": "run", "shell": "ls | wc -l"})),
        Ok(Request::Run(Run {
            command: Command::Shell("ls | wc -l".into()),
            stdin: false,
            timeout: None,
        }))
    );
}

#[test]
fn run_needs_exactly_one_of_argv_and_shell() {
    for request in [
        json!({"type": "run"}),
        json!({"type": "run", "argv": ["a"], "shell": "a"}),
    ] {
        let e = parse_json(request).unwrap_err();
        assert_eq!(e, RequestError::ArgvOrShell);
        assert_eq!(e.code(), "bad_request");
        assert!(!e.is_fatal());
    }
}

#[test]
fn run_refuses_bad_argv() {
    for argv in [
        json!([]),
        json!("echo hi"),
        json!(["echo", 1]),
        json!([null]),
        json!([""]),
        json!(["echo", "a\u{0}b"]),
    ] {
        let e = parse_json(json!({"type": "run", "argv": argv})).unwrap_err();
        assert!(
            matches!(e, RequestError::Field { field: "argv", .. }),
            "{argv}: {e}"
        );
    }
}

#[test]
fn run_refuses_mistyped_options() {
    let cases = [
        (
            json!({"type": "run", "argv": ["a"], "stdin": "yes"}),
            "stdin",
        ),
        (
            json!({"type": "run", "argv": ["a"], "timeout_ms": 0}),
            "timeout_ms",
        ),
        (
            json!({"type": "run", "argv": ["a"], "timeout_ms": -5}),
            "timeout_ms",
        ),
        (
            json!({"type": "run", "argv": ["a"], "timeout_ms": 1.5}),
            "timeout_ms",
        ),
        (json!({"type": "run", "shell": 7}), "shell"),
    ];
    for (request, field) in cases {
        let e = parse_json(request.clone()).unwrap_err();
        assert!(
            matches!(e, RequestError::Field { field: f, .. } if f == field),
            "{request}: {e}"
        );
    }
    assert_eq!(
        parse_json(json!({"type": "run", "argv": ["a"], "timeout_ms": "x"}))
            .unwrap_err()
            .to_string(),
        "field \"timeout_ms\" must be a positive integer"
    );
}

// ---- stdin, stdin_eof, signal ----

#[test]
fn stdin_announces_its_size() {
    assert_eq!(
        parse_json(json!({"type": "stdin", "size": 3})),
        Ok(Request::Stdin { size: 3 })
    );
    assert_eq!(
        parse_json(json!({"type": "stdin", "size": 65536})),
        Ok(Request::Stdin { size: 65_536 })
    );
    assert_eq!(
        parse_json(json!({"type": "stdin_eof"})),
        Ok(Request::StdinEof)
    );
}

#[test]
fn stdin_over_the_chunk_limit_is_fatal() {
    let e = parse_json(json!({"type": "stdin", "size": 65537})).unwrap_err();
    assert_eq!(e, RequestError::ChunkTooLarge(65_537));
    assert!(e.is_fatal());
    assert_eq!(e.code(), "frame_too_large");
    let e = parse_json(json!({"type": "stdin", "size": u64::MAX})).unwrap_err();
    assert!(e.is_fatal());
}

#[test]
fn stdin_without_a_usable_size_is_not_fatal() {
    for request in [
        json!({"type": "stdin"}),
        json!({"type": "stdin", "size": "3"}),
        json!({"type": "stdin", "size": -1}),
    ] {
        let e = parse_json(request).unwrap_err();
        assert!(matches!(e, RequestError::Field { field: "size", .. }));
        assert!(!e.is_fatal());
    }
}

#[test]
fn signal_takes_three_names() {
    for (name, signal) in [
        ("INT", Signal::Int),
        ("TERM", Signal::Term),
        ("KILL", Signal::Kill),
    ] {
        assert_eq!(
            parse_json(json!({"type": "signal", "signal": name})),
            Ok(Request::Signal(signal))
        );
    }
    for bad in [json!("SIGINT"), json!("STOP"), json!(2), json!(null)] {
        assert!(matches!(
            parse_json(json!({"type": "signal", "signal": bad})),
            Err(RequestError::Field {
                field: "signal",
                ..
            })
        ));
    }
}

#[test]
fn unknown_types_and_a_second_auth_are_errors() {
    let e = parse_json(json!({"type": "launch"})).unwrap_err();
    assert_eq!(e.to_string(), "unknown request type \"launch\"");
    assert_eq!(e.code(), "unknown_type");
    assert_eq!(
        parse_json(json!({"type": "auth", "mac": "00"})),
        Err(RequestError::AlreadyAuthenticated)
    );
}

// ---- Answers ----

#[test]
fn started_is_exactly_the_protocol_text() {
    let mut out = BytesMut::new();
    encode_started(4242, &mut out);
    assert_eq!(json_of(&out), r#"{"type":"started","pid":4242}"#);
}

#[test]
fn exit_by_code() {
    let mut out = BytesMut::new();
    Exit {
        code: Some(3),
        signal: None,
        timed_out: false,
        elapsed: Duration::from_micros(12_345_678),
    }
    .encode(&mut out);
    assert_eq!(
        json_of(&out),
        r#"{"type":"exit","code":3,"signal":null,"timed_out":false,"elapsed_ms":12345}"#
    );
}

#[test]
fn exit_by_signal_after_a_timeout() {
    let mut out = BytesMut::new();
    Exit {
        code: None,
        signal: Some(signal_name(libc::SIGKILL)),
        timed_out: true,
        elapsed: Duration::from_millis(2_001),
    }
    .encode(&mut out);
    assert_eq!(
        json_of(&out),
        r#"{"type":"exit","code":null,"signal":"KILL","timed_out":true,"elapsed_ms":2001}"#
    );
}

#[test]
fn refusals_carry_a_code() {
    let mut out = BytesMut::new();
    Refusal::Busy(16).encode(&mut out);
    assert_eq!(
        json_of(&out),
        r#"{"type":"error","code":"busy","error":"too many running commands (the limit is 16)"}"#
    );
    let mut out = BytesMut::new();
    Refusal::NotFound("nope".into()).encode(&mut out);
    assert_eq!(
        json_of(&out),
        r#"{"type":"error","code":"not_found","error":"program not found: \"nope\""}"#
    );
}

#[test]
fn signal_names_have_no_sig_prefix_and_round_trip() {
    assert_eq!(signal_name(libc::SIGTERM), "TERM");
    assert_eq!(signal_name(libc::SIGSEGV), "SEGV");
    assert_eq!(signal_name(libc::SIGRTMIN() + 2), "RTMIN+2");
    assert_eq!(signal_name(200), "200");
    for n in 1..=libc::SIGRTMAX() {
        assert_eq!(signal_number(&signal_name(n)), Some(n), "signal {n}");
    }
    assert_eq!(signal_number("NOPE"), None);
}
