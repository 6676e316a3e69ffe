//! files: a user's own directory tree over frames, with SCRAM login,
//! quotas, and uploads that survive a crash (PROTOCOL.md §5.1, §5.4, §5.5).
//!
//! # Format
//!
//! Length-prefixed JSON frames ([`crate::codec::frame`]); `+ N bytes` means
//! N raw bytes follow the frame.
//!
//! ```text
//! daemon: {"type":"hello","service":"files","version":1,"auth":"scram-sha-256"}
//! client: {"type":"login","user":"alice","nonce":"..."}     (see login.rs)
//! daemon: {"type":"challenge",...}
//! client: {"type":"proof","proof":"..."}
//! daemon: {"type":"ok","signature":"...","cwd":"/"}
//! client: {"type":"mkdir","path":"docs"}
//! daemon: {"type":"ok"}
//! client: {"type":"put","path":"docs/a.txt","size":5,"sha256":"<64 hex>"}
//! daemon: {"type":"ready","offset":0}
//! client: + 5 bytes
//! daemon: {"type":"ok","size":5,"sha256":"<64 hex>"}
//! client: {"type":"get","path":"/docs/a.txt","offset":1}
//! daemon: {"type":"ready","size":5,"offset":1,"sha256":"<64 hex>"} + 4 bytes
//! client: {"type":"bye"}
//! daemon: {"type":"ok"}, then FIN
//! ```
//!
//! # States
//!
//! The connection's [`Phase`] is the login; once logged in, its
//! [`Transfer`] says what the bytes on the wire are:
//!
//! ```text
//!  Phase:  AwaitingLogin ──login──> AwaitingProof ──right proof──> Serving
//!               └──── bad frame, wrong proof, deadline ───────────> Closed
//!
//!  Transfer (while Serving):
//!    Counting (pool: the user's quota book, at their first login)
//!         │
//!         v
//!    AwaitingHeader ──put──> Preparing (pool: hash the staged prefix)
//!         ^  ^  ^               │ ready{offset}
//!         │  │  │               v
//!         │  │  └──────── Receiving (raw bytes to the .part file)
//!         │  │   error:         │ last byte, digest right
//!         │  │  Discarding <────┤
//!         │  │                  v
//!         │  └─── ok ─── Committing (pool: fsync, rename, fsync dir)
//!         │
//!         └──get──> Hashing (pool: whole-file SHA-256, unless cached)
//!                        │ ready{size,offset,sha256} + the file range,
//!                        │ sent by the reactor with sendfile
//!                        └──> AwaitingHeader
//! ```
//!
//! While the daemon waits on the pool it holds the client's input
//! (`Cx::hold_input`): a client that pipelines requests waits in its own
//! buffers, not in the daemon's memory. When the pool's queue is full a
//! request that needs it is answered `busy` (an upload stays on record for
//! resuming), never waited for on the loop. The login and the
//! answers of the pool (`Session::on_done`) are handled in this file, the
//! steps of a `put` in `put.rs` and of a `get` in `get.rs`; the work behind
//! each step (hashing, committing, sending) is in [`transfer`].

mod get;
pub mod jail;
pub mod login;
mod put;
pub mod quota;
pub mod request;
mod shared;
pub mod staging;
pub mod transfer;

use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{CloseReason, Cx, SourceEvent};
use crate::auth::handshake;
use crate::codec::frame::{self, FrameDecoder, FrameError, Item};
use jail::{Home, PathError};
use login::{LoginFailure, Pending};
use request::Request;
pub use shared::{FilesDaemon, FilesShared, demo_password_path};
use transfer::{Done, Download, JobSlot, Upload, blocking};

/// One files connection.
pub struct Session {
    phase: Phase,
    transfer: Transfer,
    /// Reads frame headers out of `input`.
    decoder: FrameDecoder,
    /// Received and not yet used: a partial header, or bytes that arrived
    /// while the session held its input.
    input: BytesMut,
    /// Whether the reactor was asked to hold input.
    holding: bool,
    /// Where the pool job under way leaves its result.
    job: JobSlot,
    peer: Option<SocketAddr>,
}

/// The login, then the logged-in user.
enum Phase {
    /// Before `on_open`, after an error that ends the connection, or after
    /// `bye`: nothing more is read.
    Closed,
    /// The hello went out; the login frame must come before `deadline`.
    AwaitingLogin { deadline: Instant },
    /// The challenge went out; the proof must come before the same
    /// deadline (PROTOCOL.md §5.2: the timeout covers both steps).
    AwaitingProof { pending: Pending, deadline: Instant },
    /// Logged in.
    Serving(Box<Account>),
}

/// A logged-in user, as this connection sees them.
struct Account {
    name: String,
    /// The home, held open: every path is resolved beneath it.
    home: Home,
    /// The home relative to the files root (for the quota walk).
    home_path: std::path::PathBuf,
    /// The working directory, relative to the home (`""` = `/`).
    cwd: String,
    quota: Option<u64>,
}

/// What the bytes on the wire are now (see the module docs).
enum Transfer {
    AwaitingHeader,
    /// Just logged in: the user's quota book is being counted on the pool.
    Counting,
    Preparing(Box<Upload>),
    Receiving(Box<Upload>),
    /// Bytes of an upload that failed, read past to find the next frame.
    Discarding {
        remaining: u64,
    },
    Committing(Box<Upload>),
    Hashing(Download),
}

impl Session {
    pub fn new(max_header: usize) -> Session {
        Session {
            phase: Phase::Closed,
            transfer: Transfer::AwaitingHeader,
            decoder: FrameDecoder::new(max_header),
            input: BytesMut::new(),
            holding: false,
            job: JobSlot::default(),
            peer: None,
        }
    }

    fn who(&self) -> String {
        self.peer
            .map_or_else(|| "a unix-socket client".to_string(), |p| p.to_string())
    }

    /// Uses whatever input is buffered, as far as the state allows.
    fn process(&mut self, cx: &mut Cx<'_>) {
        loop {
            if matches!(self.phase, Phase::Closed) {
                break;
            }
            match &self.transfer {
                Transfer::Receiving(_) | Transfer::Discarding { .. } => {
                    if self.input.is_empty() {
                        break;
                    }
                    let input = std::mem::take(&mut self.input);
                    let used = self.take_raw(&input, cx);
                    self.input = BytesMut::from(&input[used..]);
                }
                Transfer::AwaitingHeader => match self.decoder.decode(&mut self.input) {
                    Ok(None) => break,
                    Ok(Some(Item::Header(header))) => self.on_header(header, cx),
                    // Payloads are never announced to the decoder: raw
                    // upload bytes are taken above, by count.
                    Ok(Some(Item::Payload { .. })) => {}
                    Err(e) => {
                        self.on_bad_frame(e, cx);
                        break;
                    }
                },
                // Waiting for the pool or for the client to read: what
                // arrives meanwhile stays buffered, and input is held.
                Transfer::Counting
                | Transfer::Preparing(_)
                | Transfer::Committing(_)
                | Transfer::Hashing(_) => break,
            }
        }
        let hold = matches!(
            self.transfer,
            Transfer::Counting
                | Transfer::Preparing(_)
                | Transfer::Committing(_)
                | Transfer::Hashing(_)
        );
        if hold != self.holding {
            self.holding = hold;
            cx.hold_input(hold);
        }
    }

    /// Raw upload bytes (or bytes being read past): returns how many of
    /// `input` belonged to the transfer.
    fn take_raw(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        match &mut self.transfer {
            Transfer::Discarding { remaining } => {
                let n = (*remaining).min(input.len() as u64);
                *remaining -= n;
                if *remaining == 0 {
                    self.transfer = Transfer::AwaitingHeader;
                }
                n as usize
            }
            Transfer::Receiving(upload) => {
                let n = upload.remaining().min(input.len() as u64) as usize;
                if let Err(e) = upload.write(&input[..n]) {
                    let remaining = upload.remaining() - n as u64;
                    self.fail_upload(&storage_error(&e), cx);
                    self.transfer = Transfer::Discarding { remaining };
                    if remaining == 0 {
                        self.transfer = Transfer::AwaitingHeader;
                    }
                    return n;
                }
                if upload.remaining() == 0 {
                    self.finish_upload(cx);
                }
                n
            }
            _ => 0,
        }
    }

    /// One whole frame header: the login steps, or a request.
    fn on_header(&mut self, header: frame::Header, cx: &mut Cx<'_>) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            // The login frame: a challenge, real or fake.
            Phase::AwaitingLogin { deadline } => match login::parse_login(&header) {
                Ok((user, nonce)) => {
                    let (secrets, secret) = {
                        let mut files = cx.shared().files.lock();
                        (files.user(&user).map(|u| u.secrets), *files.secret())
                    };
                    let mut server_nonce = [0u8; login::SERVER_NONCE_LEN];
                    if getrandom::fill(&mut server_nonce).is_err() {
                        cx.write_with(|out| frame::encode_error("internal error", None, out));
                        self.close(cx);
                        return;
                    }
                    let pending = cx.write_with(|out| {
                        login::challenge(&user, &nonce, &server_nonce, secrets, &secret, out)
                    });
                    self.phase = Phase::AwaitingProof { pending, deadline };
                }
                Err(failure) => self.fail_login(&failure, cx),
            },
            // The proof: checked only if the address is not locked out
            // meanwhile (by failures on other connections).
            Phase::AwaitingProof { pending, .. } => {
                let now = cx.now();
                if let Some(peer) = self.peer
                    && cx.shared().throttle.is_locked(peer.ip(), now)
                {
                    cx.write_with(handshake::encode_throttled);
                    self.close(cx);
                    return;
                }
                match cx.write_with(|out| login::finish(&pending, &header, out)) {
                    Ok(()) => self.logged_in(&pending.user, cx),
                    Err(failure) => self.fail_login(&failure, cx),
                }
            }
            Phase::Serving(account) => {
                self.phase = Phase::Serving(account);
                match request::parse(&header) {
                    Ok(request) => self.on_request(request, cx),
                    Err(e) => cx.write_with(|out| e.encode(out)),
                }
            }
            Phase::Closed => {}
        }
    }

    /// The proof was right: open the home and serve.
    fn logged_in(&mut self, name: &str, cx: &mut Cx<'_>) {
        let found = {
            let mut files = cx.shared().files.lock();
            files
                .user(name)
                .map(|user| (files.root().join(&user.home), user))
        };
        let Some((path, user)) = found else {
            cx.write_with(|out| frame::encode_error("no such user", None, out));
            self.close(cx);
            return;
        };
        let home = fs::create_dir_all(&path).and_then(|()| Home::open(&path));
        let now = cx.wall_time();
        // The book is counted once per user for the whole daemon: whichever
        // reactor's connection logs in first counts it, and a login on any
        // reactor after that finds it.
        let counting = {
            let mut files = cx.shared().files.lock();
            if files.has_book(name) {
                files.expire_uploads(name, &user.home, now);
                None
            } else {
                Some(files.counting_job(name, &user.home))
            }
        };
        if let Some(count) = counting {
            if blocking(cx, &self.job, move || Done::Counted(count())).is_err() {
                cx.write_with(|out| frame::encode_error(get::BUSY, Some("busy"), out));
                self.close(cx);
                return;
            }
            self.transfer = Transfer::Counting;
        }
        match home {
            Ok(home) => {
                log::info!("files: {} logged in as {name}", self.who());
                self.phase = Phase::Serving(Box::new(Account {
                    name: name.to_string(),
                    home,
                    home_path: user.home,
                    cwd: String::new(),
                    quota: user.quota,
                }));
            }
            Err(e) => {
                log::error!("files: cannot open the home of {name}: {e}");
                cx.write_with(|out| frame::encode_error("cannot open the home", None, out));
                self.close(cx);
            }
        }
    }

    /// One request from a logged-in user: every arm answers exactly once,
    /// except put and get, which answer `ready` and move the transfer on.
    fn on_request(&mut self, request: Request, cx: &mut Cx<'_>) {
        let Phase::Serving(account) = &mut self.phase else {
            return;
        };
        let outcome = match request {
            Request::Pwd => {
                cx.write_with(|out| request::encode_cwd(&jail::display(&account.cwd), out));
                Ok(())
            }
            Request::Cd { path } => jail::resolve(&account.cwd, &path).and_then(|rel| {
                account.home.is_dir(&rel)?;
                account.cwd = rel;
                cx.write_with(|out| request::encode_cwd(&jail::display(&account.cwd), out));
                Ok(())
            }),
            Request::Ls { path } => {
                let path = path.unwrap_or_default();
                jail::resolve(&account.cwd, &path).and_then(|rel| {
                    let entries = account.home.list(&rel)?;
                    let limit = self.decoder.max_header();
                    let len = cx.write_with(|out| {
                        let start = out.len();
                        let len = request::encode_listing(&entries, out);
                        if len > limit {
                            out.truncate(start);
                        }
                        len
                    });
                    if len > limit {
                        return Err(PathError::Io(format!(
                            "the listing ({} entries) is larger than a frame may be",
                            entries.len()
                        )));
                    }
                    Ok(())
                })
            }
            Request::Mkdir { path } => jail::resolve(&account.cwd, &path).and_then(|rel| {
                account.home.mkdir(&rel)?;
                cx.write_with(request::encode_ok);
                Ok(())
            }),
            Request::Rm { path } => jail::resolve(&account.cwd, &path).and_then(|rel| {
                let freed = account.home.remove(&rel)?;
                let name = account.name.clone();
                let home = account.home_path.clone();
                cx.shared().files.lock().book(&name, &home).removed(freed);
                cx.write_with(request::encode_ok);
                Ok(())
            }),
            Request::Quota => {
                let (name, home, limit) = (
                    account.name.clone(),
                    account.home_path.clone(),
                    account.quota,
                );
                let used = cx.shared().files.lock().book(&name, &home).used();
                cx.write_with(|out| request::encode_quota(used, limit, out));
                Ok(())
            }
            Request::Bye => {
                cx.write_with(request::encode_ok);
                self.close(cx);
                Ok(())
            }
            Request::Put { path, size, sha256 } => self.start_put(&path, size, sha256, cx),
            Request::Get { path, offset } => self.start_get(&path, offset, cx),
        };
        if let Err(e) = outcome {
            let code = match e {
                PathError::Nul | PathError::ComponentTooLong | PathError::Outside => "bad_path",
                _ => "refused",
            };
            cx.write_with(|out| frame::encode_error(&e.to_string(), Some(code), out));
        }
    }

    /// A pool job finished.
    fn on_done(&mut self, done: Done, cx: &mut Cx<'_>) {
        match (
            std::mem::replace(&mut self.transfer, Transfer::AwaitingHeader),
            done,
        ) {
            // The staged prefix is hashed: resume from its end.
            (Transfer::Preparing(mut upload), Done::Prefix(result)) => match result {
                Ok(hasher) => {
                    upload.hasher = hasher;
                    self.ready_to_receive(upload, cx);
                }
                Err(e) => {
                    self.transfer = Transfer::Preparing(upload);
                    self.fail_upload(&storage_error(&e), cx);
                }
            },
            // Durable and in place: only now the client hears ok.
            (Transfer::Committing(upload), Done::Committed(result)) => match result {
                Ok(committed) => {
                    staging::remove_record(&upload.dir, &upload.id);
                    let mut files = cx.shared().files.lock();
                    // Checked against every byte received: a `get` of it
                    // needs no hashing.
                    files.remember_digest(committed.key, upload.sha256);
                    if let Phase::Serving(account) = &self.phase {
                        files.book(&account.name, &account.home_path).complete(
                            &upload.id,
                            upload.size,
                            committed.replaced,
                        );
                    }
                    drop(files);
                    cx.write_with(|out| request::encode_put_done(upload.size, &upload.sha256, out));
                }
                Err(e) => {
                    self.transfer = Transfer::Committing(upload);
                    self.fail_upload(&storage_error(&e), cx);
                }
            },
            // The book is counted: requests may come.
            (Transfer::Counting, Done::Counted(book)) => {
                if let Phase::Serving(account) = &self.phase {
                    cx.shared().files.lock().counted(&account.name, book);
                }
            }
            (Transfer::Hashing(download), Done::Digest(result)) => match result {
                Ok(digest) => {
                    cx.shared()
                        .files
                        .lock()
                        .remember_digest(download.key, digest);
                    self.start_sending(download, digest, cx);
                }
                Err(e) => {
                    let reason = format!("cannot read the file: {e}");
                    cx.write_with(|out| frame::encode_error(&reason, None, out));
                }
            },
            // A result for a state this connection has left cannot happen
            // (one job at a time); keep the state as it was.
            (other, _) => self.transfer = other,
        }
        self.process(cx);
    }

    /// A failed login: the error frame, the close, and a failure counted
    /// against the address (the throttle exec shares).
    fn fail_login(&mut self, failure: &LoginFailure, cx: &mut Cx<'_>) {
        cx.write_with(|out| failure.encode(out));
        self.count_failure(&failure.to_string(), cx);
        self.close(cx);
    }

    fn count_failure(&self, reason: &str, cx: &mut Cx<'_>) {
        let (ip, now, who) = (self.peer.map(|p| p.ip()), cx.now(), self.who());
        let what = "files: failed login";
        cx.shared()
            .throttle
            .count_failure(ip, now, what, &who, reason);
    }

    fn on_bad_frame(&mut self, e: FrameError, cx: &mut Cx<'_>) {
        // Before the login is done, a broken frame is a failed handshake
        // like any other wrong frame.
        let expected = match self.phase {
            Phase::AwaitingLogin { .. } => Some(login::LOGIN_SHAPE),
            Phase::AwaitingProof { .. } => Some(login::PROOF_SHAPE),
            Phase::Serving(_) | Phase::Closed => None,
        };
        if let Some(expected) = expected {
            log::debug!("files: {}: {e}", self.who());
            self.fail_login(&LoginFailure::BadFrame(expected), cx);
            return;
        }
        cx.write_with(|out| e.encode(out));
        self.close(cx);
    }

    /// Ends the connection after what is queued; an upload under way stays
    /// on record for resuming.
    fn close(&mut self, cx: &mut Cx<'_>) {
        self.interrupt(cx);
        self.phase = Phase::Closed;
        cx.close();
    }

    /// Leaves an upload under way resumable and its quota counted.
    fn interrupt(&mut self, cx: &mut Cx<'_>) {
        let transfer = std::mem::replace(&mut self.transfer, Transfer::AwaitingHeader);
        let Phase::Serving(account) = &self.phase else {
            return;
        };
        let (name, home) = (account.name.clone(), account.home_path.clone());
        let mut files = cx.shared().files.lock();
        let book = files.book(&name, &home);
        match transfer {
            Transfer::Preparing(u) | Transfer::Receiving(u) => {
                book.interrupt(&u.id);
                log::info!(
                    "files: upload of /{} by {name} interrupted at {} of {} bytes; kept for resuming",
                    u.path,
                    u.written,
                    u.size
                );
            }
            // The commit runs on without us; count the file as in place
            // (if it fails, the next count after a restart corrects it).
            Transfer::Committing(u) => {
                let charge = book.reservations.get(&u.id).map_or(0, |r| r.charge);
                book.complete(&u.id, u.size, u.size.saturating_sub(charge));
            }
            _ => {}
        }
    }
}

impl super::Session for Session {
    /// The hello, unless the address is locked out; the login deadline.
    fn on_open(&mut self, cx: &mut Cx<'_>) {
        self.peer = cx.peer_addr();
        let now = cx.now();
        if let Some(peer) = self.peer
            && cx.shared().throttle.is_locked(peer.ip(), now)
        {
            log::warn!("files: refused {peer}: too many failed logins");
            cx.write_with(handshake::encode_throttled);
            cx.close();
            return;
        }
        cx.write_with(login::encode_hello);
        let timeout = Duration::from_secs(cx.shared().config.auth.handshake_timeout_s);
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        cx.set_timer(deadline);
        self.phase = Phase::AwaitingLogin { deadline };
    }

    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_>) -> usize {
        if matches!(self.phase, Phase::Closed) {
            return input.len();
        }
        // Upload bytes go from the reactor's buffer to the file, without a
        // copy into ours, when nothing is queued before them.
        let mut rest = input;
        if self.input.is_empty() {
            while !rest.is_empty()
                && matches!(
                    self.transfer,
                    Transfer::Receiving(_) | Transfer::Discarding { .. }
                )
            {
                let used = self.take_raw(rest, cx);
                rest = &rest[used..];
            }
        }
        self.input.extend_from_slice(rest);
        self.process(cx);
        input.len()
    }

    fn on_peer_closed(&mut self, _input: &[u8], cx: &mut Cx<'_>) {
        self.close(cx);
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>) {
        let due = match &self.phase {
            Phase::AwaitingLogin { deadline } | Phase::AwaitingProof { deadline, .. } => {
                *deadline <= cx.now()
            }
            Phase::Serving(_) | Phase::Closed => false,
        };
        if due {
            cx.write_with(handshake::encode_timed_out);
            self.count_failure(handshake::AUTH_TIMED_OUT, cx);
            self.close(cx);
        }
    }

    fn on_source(&mut self, event: SourceEvent, cx: &mut Cx<'_>) {
        let SourceEvent::Job { result, .. } = event else {
            return;
        };
        let done = match (result, self.job.take()) {
            (Ok(_), Some(done)) => done,
            // The job panicked or was cancelled: the step it was for
            // fails as if its I/O had.
            (result, _) => {
                let error = match result {
                    Err(e) => transfer::job_failure(&e),
                    Ok(_) => std::io::Error::other("the helper left no result"),
                };
                log::warn!("files: {}: {error}", self.who());
                match &self.transfer {
                    Transfer::Preparing(_) => Done::Prefix(Err(error)),
                    Transfer::Committing(_) => Done::Committed(Err(error)),
                    Transfer::Hashing(_) => Done::Digest(Err(error)),
                    // Without its quota book the user cannot be served.
                    Transfer::Counting => {
                        cx.write_with(|out| frame::encode_error(&error.to_string(), None, out));
                        self.close(cx);
                        return;
                    }
                    Transfer::AwaitingHeader
                    | Transfer::Receiving(_)
                    | Transfer::Discarding { .. } => return,
                }
            }
        };
        self.on_done(done, cx);
    }

    fn is_busy(&self) -> bool {
        matches!(
            self.transfer,
            Transfer::Counting
                | Transfer::Preparing(_)
                | Transfer::Committing(_)
                | Transfer::Hashing(_)
        )
    }

    fn on_close(&mut self, reason: CloseReason, cx: &mut Cx<'_>) {
        log::debug!("files: connection of {} closing ({reason})", self.who());
        self.interrupt(cx);
        self.phase = Phase::Closed;
    }
}

/// The error a client gets when the disk refuses an upload.
fn storage_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
            "no space left to store the file".to_string()
        }
        _ => format!("cannot store the file: {e}"),
    }
}
