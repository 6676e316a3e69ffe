//! `socketlab exec`: run a program on the daemon, like `ssh host cmd`.
//!
//! ```text
//! $ socketlab exec -- uname -a
//! $ tar cf - src | socketlab exec --stdin -- sh -c 'tar tf - | wc -l'
//! $ socketlab exec --shell 'ls | sort -r' --timeout 5s
//! ```
//!
//! The remote program's stdout goes to this program's stdout and its
//! stderr to stderr, as they arrive. With `--stdin`, local stdin is sent
//! as it is read (a pipe of any length works; it is never read whole).
//! Ctrl-C sends INT to the remote program instead of ending this client;
//! a third Ctrl-C before the program ends disconnects, which makes the
//! daemon stop the program.
//!
//! # Exit status
//!
//! As with ssh, the remote program's exit code, or 128 + the number of the
//! signal that ended it (130 for INT, 143 for TERM). The client's own
//! failures use codes a program rarely does:
//!
//! | status | meaning |
//! |---|---|
//! | 255 | cannot connect, authentication failed or throttled, the daemon is busy, the connection broke |
//! | 127 | the program was not found |
//! | 126 | the program is not allowed, shell runs are disabled, or it could not be started |
//! | 141 | local stdout was closed (as if killed by SIGPIPE) |
//! | 2 | bad arguments |
//!
//! # Threads
//!
//! The main thread reads frames from the daemon and writes the output. With
//! `--stdin` a second thread reads local stdin and sends it, and a third
//! waits for Ctrl-C. Both send through one mutex-guarded socket handle, so
//! their frames never interleave. A blocking client with threads is the
//! simple design here: it talks to one daemon, and the daemon side is
//! where the event loop earns its keep.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Endpoint, Stream};

use bytes::BytesMut;
use serde_json::{Value, json};

use crate::auth::handshake::{self, HelloError};
use crate::auth::key;
use crate::codec::frame::{self, FrameDecoder, Header, Item, frame_type};
use crate::config::AuthConfig;
use crate::services::exec::request::signal_number;

/// The exit status for the client's own failures (ssh uses the same).
const FAILED: u8 = 255;
/// The program was not found (as a shell says).
const NOT_FOUND: u8 = 127;
/// The program may not or cannot be run (as a shell says).
const CANNOT_RUN: u8 = 126;
/// Local stdout closed: the status a process killed by SIGPIPE reports.
const BROKEN_PIPE: u8 = 128 + 13;
/// How long to try to connect before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of local stdin sent per frame (the protocol's limit).
const STDIN_CHUNK: usize = 64 * 1024;
/// Ctrl-C presses that send INT; the next one disconnects.
const INTERRUPTS_FORWARDED: usize = 2;

/// `socketlab exec`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: the remote program's code, or 128 + the signal that \
ended it; 255 when connecting or authenticating fails or the daemon is busy, 127 when the \
program is not found, 126 when it is not allowed or cannot be started."
)]
pub struct Args {
    /// The exec service's address: HOST:PORT or unix:/path.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7512")]
    addr: String,
    /// The shared key file [default: <DATA_DIR>/secret.key].
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The daemon's data directory, where its key file is.
    #[arg(long, value_name = "DIR", default_value = "socketlab-data")]
    data_dir: PathBuf,
    /// Send local stdin to the program (otherwise it reads nothing).
    #[arg(long)]
    stdin: bool,
    /// Stop the program after this long: 500ms, 10s, 2m, 1h (a bare number
    /// is seconds) [default: the daemon's exec.default_timeout_ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Run CMD with /bin/sh -c as a "shell" request, which the daemon runs
    /// only with exec.allow_shell = true. (`-- sh -c CMD` is an ordinary
    /// program run instead, checked against exec.allow.)
    #[arg(long, value_name = "CMD", conflicts_with = "command")]
    shell: Option<String>,
    /// The program and its arguments (after `--`).
    #[arg(
        value_name = "PROG",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "shell"
    )]
    command: Vec<String>,
}

/// Runs the program remotely and returns its exit status as ours.
pub fn run(args: Args) -> ExitCode {
    match execute(&args) {
        Ok(status) => ExitCode::from(status),
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("socketlab exec: {}", failure.message);
            }
            ExitCode::from(failure.status)
        }
    }
}

/// Why the client stops before the remote program's exit status is known.
#[derive(Debug)]
struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    fn new(status: u8, message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status,
        }
    }

    fn lost(e: &io::Error) -> Failure {
        Failure::new(FAILED, format!("connection to the daemon lost: {e}"))
    }
}

fn execute(args: &Args) -> Result<u8, Failure> {
    let key_path = args
        .key_file
        .clone()
        .unwrap_or_else(|| key::default_path(&args.data_dir));
    let key = key::load(&key_path)
        .map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::NotFound {
                format!("; {}", key_hint(args))
            } else {
                String::new()
            };
            Failure::new(FAILED, format!("cannot read the key: {e}{hint}"))
        })?
        .key;
    let endpoint: Endpoint = args
        .addr
        .parse()
        .map_err(|e| Failure::new(FAILED, format!("bad address {}: {e}", args.addr)))?;
    let stream = endpoint
        .connect(CONNECT_TIMEOUT)
        .map_err(|e| Failure::new(FAILED, e.to_string()))?;
    let writer = Arc::new(Mutex::new(
        stream
            .try_clone()
            .map_err(|e| Failure::new(FAILED, e.to_string()))?,
    ));
    let mut reader = FrameReader::new(stream);

    // The handshake (PROTOCOL.md §5.2).
    let hello = reader.header()?;
    let challenge = handshake::parse_hello(&hello).map_err(|e| match e {
        HelloError::Refused { error, code } if code.as_deref() == Some("throttled") => {
            Failure::new(FAILED, throttled_message(&error, args))
        }
        other => Failure::new(FAILED, other.to_string()),
    })?;
    send(&writer, |out| handshake::encode_auth(&key, &challenge, out))?;
    let answer = reader.header()?;
    match frame_type(&answer) {
        "ok" => {}
        "error" => {
            return Err(Failure::new(
                FAILED,
                format!(
                    "{} (is {} the daemon's key? {})",
                    text(&answer, "error"),
                    key_path.display(),
                    key_hint(args)
                ),
            ));
        }
        other => return Err(unexpected(other)),
    }

    // The request.
    let mut run = match &args.shell {
        Some(line) => json!({"type": "run", "shell": line}),
        None => json!({"type": "run", "argv": args.command}),
    };
    run["stdin"] = Value::Bool(args.stdin);
    if let Some(timeout) = args.timeout {
        run["timeout_ms"] = json!(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1)
        );
    }
    send(&writer, |out| {
        frame::encode(&run, out).map(|_| ()).unwrap_or_else(|e| {
            unreachable!("a run request always encodes: {e}");
        })
    })?;
    let answer = reader.header()?;
    match frame_type(&answer) {
        "started" => {}
        "error" => {
            let status = match answer.get("code").and_then(Value::as_str) {
                Some("not_found") => NOT_FOUND,
                Some("not_allowed" | "shell_disabled" | "spawn_failed") => CANNOT_RUN,
                _ => FAILED,
            };
            return Err(Failure::new(status, text(&answer, "error")));
        }
        other => return Err(unexpected(other)),
    }

    forward_interrupts(Arc::clone(&writer));
    if args.stdin {
        let writer = Arc::clone(&writer);
        std::thread::spawn(move || send_stdin(&writer));
    }
    relay_output(&mut reader)
}

/// Where to look when the key is missing or wrong: the daemon's own data
/// dir, which is relative to where the daemon was started.
fn key_hint(args: &Args) -> String {
    if args.key_file.is_some() {
        "point --key-file at the key in the daemon's data dir".to_string()
    } else {
        format!(
            "the key is <data dir>/secret.key, and this looked in {}; give the daemon's data \
             dir with --data-dir DIR, or the key with --key-file FILE",
            shown_dir(&args.data_dir)
        )
    }
}

/// The daemon's throttle text (fixed by PROTOCOL.md §5.2) plus how long to
/// wait: the client cannot ask the daemon for its `auth.lockout_s`, so it
/// names the default, and says the lockout counts from the last failure.
fn throttled_message(error: &str, args: &Args) -> String {
    let lockout = AuthConfig::default().lockout_s;
    format!(
        "refused by the daemon: {error}: this address failed to authenticate too often; wait \
         {lockout} s after the last failed attempt (auth.lockout_s, {lockout} s unless the \
         daemon sets it), and make sure the key is the daemon's first ({})",
        key_hint(args)
    )
}

/// A directory as the user should read it: absolute, so a relative default
/// (`socketlab-data`) says which directory it resolved to.
fn shown_dir(dir: &std::path::Path) -> String {
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// Reads output frames until the exit frame, writing the output as it
/// comes; returns the exit status.
fn relay_output(reader: &mut FrameReader) -> Result<u8, Failure> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    loop {
        let header = reader.header()?;
        match frame_type(&header) {
            kind @ ("stdout" | "stderr") => {
                let size = header
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| Failure::new(FAILED, format!("{kind} frame without a size")))?;
                reader.decoder.expect_payload(size);
                let mut last = false;
                while !last {
                    let chunk;
                    (chunk, last) = reader.payload()?;
                    let written = if kind == "stdout" {
                        let mut out = stdout.lock();
                        out.write_all(&chunk).and_then(|()| out.flush())
                    } else {
                        let mut err = stderr.lock();
                        err.write_all(&chunk).and_then(|()| err.flush())
                    };
                    if let Err(e) = written {
                        if e.kind() == io::ErrorKind::BrokenPipe {
                            // Like a local pipeline: the reader left, so do
                            // we (and the daemon stops the program).
                            return Err(Failure::new(BROKEN_PIPE, ""));
                        }
                        return Err(Failure::new(FAILED, format!("cannot write {kind}: {e}")));
                    }
                }
            }
            "exit" => return Ok(exit_status(&header)),
            "error" => {
                // A refused stdin or signal frame; the daemon closes the
                // connection itself when the error is fatal.
                eprintln!("socketlab exec: daemon: {}", text(&header, "error"));
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// The status a local shell would report for the remote program's end.
fn exit_status(exit: &Header) -> u8 {
    if exit.get("timed_out").and_then(Value::as_bool) == Some(true) {
        let ms = exit.get("elapsed_ms").and_then(Value::as_u64).unwrap_or(0);
        eprintln!("socketlab exec: the program timed out after {ms} ms");
    }
    if let Some(code) = exit.get("code").and_then(Value::as_i64) {
        // Codes are 0-255 on Unix; anything else is reported as a shell
        // would truncate it.
        return (code & 0xff) as u8;
    }
    let signal = exit.get("signal").and_then(Value::as_str);
    match signal.and_then(signal_number) {
        Some(n) => u8::try_from(128 + n).unwrap_or(FAILED),
        None => FAILED,
    }
}

/// Sends local stdin as `stdin` frames, then `stdin_eof`. Runs on its own
/// thread; stops quietly if the connection is gone (the main thread
/// reports that).
fn send_stdin(writer: &Mutex<Stream>) {
    let mut input = io::stdin().lock();
    let mut buf = vec![0; STDIN_CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("socketlab exec: reading stdin: {e}");
                0
            }
        };
        let sent = if n == 0 {
            send(writer, |out| {
                let eof = json!({"type": "stdin_eof"});
                let _ = frame::encode(&eof, out);
            })
        } else {
            send(writer, |out| frame::encode_chunk("stdin", &buf[..n], out))
        };
        if sent.is_err() || n == 0 {
            return;
        }
    }
}

/// Turns Ctrl-C into `{"type":"signal","signal":"INT"}`; the third press
/// ends the client instead (the daemon then stops the program).
fn forward_interrupts(writer: Arc<Mutex<Stream>>) {
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("socketlab exec: Ctrl-C will not reach the program: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        for (presses, _) in signals.forever().enumerate() {
            if presses >= INTERRUPTS_FORWARDED {
                eprintln!("socketlab exec: disconnecting");
                std::process::exit(130);
            }
            let signal = json!({"type": "signal", "signal": "INT"});
            if send(&writer, |out| {
                let _ = frame::encode(&signal, out);
            })
            .is_err()
            {
                return;
            }
        }
    });
}

/// Encodes one or more frames and writes them whole, under the lock.
fn send(writer: &Mutex<Stream>, encode: impl FnOnce(&mut BytesMut)) -> Result<(), Failure> {
    let mut out = BytesMut::new();
    encode(&mut out);
    let mut stream = writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    stream.write_all(&out).map_err(|e| Failure::lost(&e))
}

fn text<'a>(header: &'a Header, field: &str) -> &'a str {
    header
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or("(no reason given)")
}

fn unexpected(kind: &str) -> Failure {
    Failure::new(FAILED, format!("unexpected {kind:?} frame from the daemon"))
}

/// Reads frames from the daemon, blocking.
struct FrameReader {
    stream: Stream,
    decoder: FrameDecoder,
    buf: BytesMut,
    scratch: Vec<u8>,
}

impl FrameReader {
    fn new(stream: Stream) -> FrameReader {
        FrameReader {
            stream,
            decoder: FrameDecoder::default(),
            buf: BytesMut::new(),
            scratch: vec![0; 64 * 1024],
        }
    }

    /// The next item, reading as much as it takes.
    fn item(&mut self) -> Result<Item, Failure> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(item)) => return Ok(item),
                Ok(None) => {}
                Err(e) => {
                    return Err(Failure::new(
                        FAILED,
                        format!("bad frame from the daemon: {e}"),
                    ));
                }
            }
            let n = loop {
                match self.stream.read(&mut self.scratch) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other.map_err(|e| Failure::lost(&e))?,
                }
            };
            if n == 0 {
                return Err(Failure::new(
                    FAILED,
                    "the daemon closed the connection before the program's exit status",
                ));
            }
            self.buf.extend_from_slice(&self.scratch[..n]);
        }
    }

    fn header(&mut self) -> Result<Header, Failure> {
        match self.item()? {
            Item::Header(header) => Ok(header),
            Item::Payload { .. } => Err(Failure::new(FAILED, "payload where a frame was expected")),
        }
    }

    /// The next piece of an announced payload, and whether it is the last.
    fn payload(&mut self) -> Result<(bytes::Bytes, bool), Failure> {
        match self.item()? {
            Item::Payload { chunk, last } => Ok((chunk, last)),
            Item::Header(_) => Err(Failure::new(FAILED, "a frame where payload was expected")),
        }
    }
}

/// Reads `500ms`, `10s`, `2m`, `1h` or a bare number of seconds (decimals
/// allowed: `1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = crate::units::parse_duration(text)?;
    if duration < Duration::from_millis(1) {
        return Err("the timeout must be at least 1ms".to_string());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: Value) -> Header {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "ten", "5d", "0", "0.0001s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_status_is_the_code_or_128_plus_the_signal() {
        let exit = |code: Value, signal: Value| {
            exit_status(&header(json!({
                "type": "exit", "code": code, "signal": signal,
                "timed_out": false, "elapsed_ms": 1
            })))
        };
        assert_eq!(exit(json!(0), Value::Null), 0);
        assert_eq!(exit(json!(3), Value::Null), 3);
        assert_eq!(exit(json!(256 + 7), Value::Null), 7);
        assert_eq!(exit(Value::Null, json!("INT")), 130);
        assert_eq!(exit(Value::Null, json!("TERM")), 143);
        assert_eq!(exit(Value::Null, json!("KILL")), 137);
        assert_eq!(exit(Value::Null, json!("WHAT")), FAILED);
    }
}
