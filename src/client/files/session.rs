//! One logged-in connection to the files service: frames out, frames in,
//! and the raw bytes of transfers between them (PROTOCOL.md §5.1, §5.5).
//!
//! The client is blocking, like the other clients (see [`crate::client`]):
//! it has one conversation, and every request gets one answer before the
//! next is sent. Every read is bounded by the session's timeout, so a
//! daemon that stops answering ends the command with a message instead of
//! a hang. A header is read whole (`read_exact` of its announced length,
//! once that length is known to be within the frame limit), which the
//! blocking socket makes simple; the raw bytes of a download are read in
//! pieces of whatever size arrives and handed on as they come, so a file
//! of any size passes through a buffer of [`CHUNK`] bytes.

use std::io::{self, BufReader, Read, Write};
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;

use super::FilesError;
use super::login;
use crate::client::{Endpoint, Stream, is_timeout, show_duration};
use crate::codec::frame::{self, DEFAULT_MAX_HEADER, Header, frame_type};

/// The size of the pieces transfers are read and written in.
pub const CHUNK: usize = 64 * 1024;

/// A connection that has completed the login.
#[derive(Debug)]
pub struct Session {
    /// Reads the daemon's frames and bytes; buffered, so a header and the
    /// start of the bytes after it may arrive in one read.
    reader: BufReader<Stream>,
    /// A second handle on the same socket, for writing.
    writer: Stream,
    /// The working directory the daemon last named (after the login or a
    /// `cd`); the shell shows it in its prompt.
    pub cwd: String,
    /// How long any one read or write may wait.
    timeout: Duration,
    /// Set when a transfer stopped half-way, so the daemon and the client
    /// no longer agree on where the next frame starts; the shell then ends
    /// instead of sending requests into the middle of a file.
    broken: bool,
}

impl Session {
    /// Connects and logs in as `user` (PROTOCOL.md §5.4), checking the
    /// daemon's signature before anything else is sent.
    pub fn open(
        endpoint: &Endpoint,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Session, FilesError> {
        let stream = endpoint
            .connect(timeout)
            .map_err(|e| FilesError::Connection(e.to_string()))?;
        let writer = stream
            .try_clone()
            .map_err(|e| FilesError::Connection(format!("cannot use the socket: {e}")))?;
        for handle in [&stream, &writer] {
            handle
                .set_read_timeout(Some(timeout))
                .and_then(|()| handle.set_write_timeout(Some(timeout)))
                .map_err(|e| FilesError::Connection(format!("cannot set a timeout: {e}")))?;
        }
        let mut session = Session {
            reader: BufReader::with_capacity(CHUNK, stream),
            writer,
            cwd: "/".to_string(),
            timeout,
            broken: false,
        };
        session.login(user, password)?;
        Ok(session)
    }

    fn login(&mut self, user: &str, password: &str) -> Result<(), FilesError> {
        let hello = self.recv("the daemon's hello")?;
        login::check_hello(&hello)?;
        let nonce = login::new_client_nonce()
            .map_err(|e| FilesError::Connection(format!("no random source for the nonce: {e}")))?;
        self.send(&login::login_frame(user, &nonce))?;
        let challenge = self.recv("the login challenge")?;
        let proof = login::answer_challenge(user, password, &nonce, &challenge)?;
        self.send(&proof.frame)?;
        let answer = self.recv("the answer to the login proof")?;
        self.cwd = login::check_ok(&answer, &proof)?;
        Ok(())
    }

    /// Sends one request and reads its one answer: the `ok` header, or the
    /// daemon's refusal as [`FilesError::Refused`].
    pub fn request(&mut self, request: &Value) -> Result<Header, FilesError> {
        self.send(request)?;
        let kind = request["type"].as_str().unwrap_or("request");
        let answer = self.recv(&format!("the answer to {kind}"))?;
        expect_type(answer, "ok")
    }

    /// Marks the connection as out of step (see the field).
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether further requests can be sent on this connection.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Says goodbye, reading the daemon's `ok` when it comes; the
    /// connection is closed either way.
    pub fn close(mut self) {
        if self.broken {
            return;
        }
        if self.send(&serde_json::json!({"type": "bye"})).is_ok() {
            let _ = self.recv("the answer to bye");
        }
    }

    /// Writes one frame.
    pub fn send(&mut self, header: &Value) -> Result<(), FilesError> {
        let mut out = BytesMut::new();
        let len = frame::encode(header, &mut out)
            .map_err(|e| FilesError::Usage(format!("the request cannot be sent: {e}")))?;
        // The daemon would answer an oversized header with an error and a
        // close; refusing it here keeps the connection, and says why.
        if len > DEFAULT_MAX_HEADER {
            return Err(FilesError::Usage(format!(
                "the request would be a {len}-byte frame, over the {DEFAULT_MAX_HEADER}-byte limit"
            )));
        }
        self.send_bytes(&out)
    }

    /// Writes raw bytes (an upload's contents).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), FilesError> {
        self.writer
            .write_all(bytes)
            .map_err(|e| self.lost("sending", &e))
    }

    /// Reads one frame's header. `awaiting` names it for a timeout or a
    /// close.
    pub fn recv(&mut self, awaiting: &str) -> Result<Header, FilesError> {
        let mut prefix = [0u8; 4];
        self.read_exact(&mut prefix, awaiting)?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > DEFAULT_MAX_HEADER {
            return Err(FilesError::Protocol(format!(
                "the daemon announced a {len}-byte header, over the {DEFAULT_MAX_HEADER}-byte limit"
            )));
        }
        let mut json = vec![0u8; len];
        self.read_exact(&mut json, awaiting)?;
        match serde_json::from_slice::<Value>(&json) {
            Ok(Value::Object(header)) if header.get("type").is_some_and(Value::is_string) => {
                Ok(header)
            }
            _ => Err(FilesError::Protocol(format!(
                "the daemon sent a frame that is not a JSON object with a type while this client \
                 awaited {awaiting}"
            ))),
        }
    }

    /// Reads some of a transfer's raw bytes: at least one, at most
    /// `buf.len()`. The daemon closing the connection is an error here,
    /// because the caller knows more bytes are due.
    pub fn recv_bytes(&mut self, buf: &mut [u8], awaiting: &str) -> Result<usize, FilesError> {
        loop {
            match self.reader.read(buf) {
                Ok(0) => {
                    self.broken = true;
                    return Err(FilesError::Connection(format!(
                        "the daemon closed the connection during {awaiting}"
                    )));
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.lost(awaiting, &e)),
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], awaiting: &str) -> Result<(), FilesError> {
        match self.reader.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.broken = true;
                Err(FilesError::Connection(format!(
                    "the daemon closed the connection before {awaiting}"
                )))
            }
            Err(e) => Err(self.lost(awaiting, &e)),
        }
    }

    /// The error for a failed read or write: a timeout says how long was
    /// waited, anything else that the connection is gone.
    fn lost(&mut self, doing: &str, e: &io::Error) -> FilesError {
        self.broken = true;
        if is_timeout(e) {
            FilesError::Connection(format!(
                "timed out after {} waiting for {doing}",
                show_duration(self.timeout)
            ))
        } else {
            FilesError::Connection(format!("connection to the daemon lost ({doing}): {e}"))
        }
    }
}

/// Passes an answer of type `wanted` through; turns an error frame into
/// [`FilesError::Refused`] and anything else into a protocol error.
pub fn expect_type(answer: Header, wanted: &str) -> Result<Header, FilesError> {
    match frame_type(&answer) {
        kind if kind == wanted => Ok(answer),
        "error" => Err(FilesError::refused(&answer)),
        other => Err(FilesError::Protocol(format!(
            "the daemon answered with a {other:?} frame where {wanted:?} was due"
        ))),
    }
}
