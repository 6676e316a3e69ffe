//! socketlab chat: the interactive chat client.
//!
//! ```text
//! socketlab chat [--addr ADDR | ADDR] [--nick NAME] [--room ROOM] [--timeout T]
//! ```
//!
//! After connecting, the client sends `/nick NAME` when it is given and
//! waits for the daemon's answer: `* <guest> is now NAME`, or an error such
//! as `! error: nick in use`. A nick asked for by name and not granted ends
//! the client with an error (exit status 1) instead of carrying on under
//! the guest nick, where the person would chat as someone they did not mean
//! to be; `--guest-if-taken` asks for the carry-on instead. Then it sends
//! `/join ROOM` when given, and runs in one of two modes.
//!
//! # On a terminal: two sources of input at once
//!
//! A chat client waits on two things: the person typing and the daemon
//! relaying what others say. The tutorial client reads a line from the
//! keyboard, then checks the socket, and so shows nothing that arrives
//! while someone is typing; or it prints incoming lines in the middle of
//! the half-typed one, which is then garbled on screen. Here a receiving
//! thread reads the socket, and the line editor (rustyline) reads the
//! keyboard. Incoming lines go through rustyline's `ExternalPrinter`,
//! which clears the prompt line, prints the message above it and redraws
//! the prompt with what was typed so far, cursor and all.
//!
//! Leaving: `/quit` (or `quit`), Ctrl-D on an empty line, or Ctrl-C. The
//! client sends `/quit` and waits briefly for the daemon's `* bye`.
//!
//! When the daemon closes the connection, the receiving thread must get
//! the editor out of `readline`, which blocks on the keyboard and has no
//! cancel call. What it does react to is SIGINT, which it turns into
//! `Interrupted`, as for Ctrl-C. So the receiving thread sends SIGINT to
//! the editing thread, and repeats it until the editor says it has
//! stopped: a signal that lands just before `readline` starts waiting
//! would otherwise be lost (the classic lost wake-up). Between two calls to
//! `readline` a no-op handler keeps that SIGINT from ending the process.
//!
//! # Not on a terminal: scripted
//!
//! With stdin or stdout not a terminal, the client sends each line of
//! stdin, and once stdin ends sends `/quit` (input that says `/quit` or
//! `quit` itself ends there); meanwhile it copies what it
//! receives to stdout, byte for byte, until the daemon closes the
//! connection (bounded by the timeout). Then it exits 0. So
//! `printf 'hello\n' | socketlab chat --nick bot` is a complete program.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor, ExternalPrinter};

use super::{ClientError, Deadline, Endpoint, Stream, parse_duration};

mod nick;
use nick::claim_nick;

/// The chat service's default port (PROTOCOL.md §1).
const DEFAULT_PORT: u16 = 7194;

/// How long leaving waits for `* bye` at most: long enough for any daemon
/// that is alive, short enough that a dead one does not hold the terminal.
const BYE_WAIT: Duration = Duration::from_secs(2);

/// How often the receiving thread repeats its wake-up signal until the
/// editor has noticed it (see the module documentation).
const WAKE_REPEAT: Duration = Duration::from_millis(100);

/// An incoming line longer than this is shown in pieces. The daemon's lines
/// are bounded (4 KiB of text by default); this bounds the client's memory
/// against anything else that may be listening at ADDR.
const MAX_SHOWN_LINE: usize = 64 * 1024;

/// The prompt shown while typing.
const PROMPT: &str = "> ";

/// Arguments of `socketlab chat`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the chat service listens: HOST:PORT (an IPv6 host in brackets) or unix:PATH.
    /// Also accepted as the first argument, without `--addr`.
    #[arg(
        long = "addr",
        value_name = "ADDR",
        default_value_t = Endpoint::loopback(DEFAULT_PORT)
    )]
    pub addr: Endpoint,
    /// The same address given as the first argument (`socketlab chat HOST:PORT`).
    #[arg(value_name = "ADDR", conflicts_with = "addr", hide = true)]
    pub addr_positional: Option<Endpoint>,
    /// The nick to take after connecting (1-32 of A-Z a-z 0-9 _ -).
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub nick: Option<String>,
    /// The room to join after connecting (1-32 of A-Z a-z 0-9 _ -).
    #[arg(long, value_name = "ROOM", value_parser = parse_name)]
    pub room: Option<String>,
    /// When the --nick is refused (taken), carry on under the guest nick
    /// the daemon gave, with a warning, instead of exiting with an error.
    #[arg(long, requires = "nick")]
    pub guest_if_taken: bool,
    /// How long to wait for the connection, and for the daemon to close
    /// it after the input ends, e.g. 5, 2.5s, 250ms.
    #[arg(long, value_name = "T", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn run(mut args: Args) -> ExitCode {
    if let Some(addr) = args.addr_positional.take() {
        args.addr = addr;
    }
    let outcome = args.addr.connect(args.timeout).and_then(|mut stream| {
        if let Some(nick) = &args.nick {
            let seen = claim_nick(&mut stream, nick, Deadline::after(args.timeout))?;
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(&seen.received)
                .and_then(|()| stdout.flush())
                .map_err(|source| ClientError::io("writing stdout", source))?;
            if let Some(refusal) = seen.refusal {
                if !args.guest_if_taken {
                    return Err(ClientError::Protocol(format!(
                        "cannot take the nick `{nick}`: the daemon said {refusal:?}; choose \
                         another --nick, or add --guest-if-taken to carry on as a guest"
                    )));
                }
                eprintln!(
                    "socketlab chat: nick `{nick}` refused ({refusal}); carrying on as a guest"
                );
            }
        }
        let intro = intro_lines(None, args.room.as_deref());
        stream
            .write_all(intro.as_bytes())
            .map_err(|source| ClientError::io("sending the room", source))?;
        if io::stdin().is_terminal() && io::stdout().is_terminal() {
            interactive(stream, args.timeout)
        } else {
            scripted(stream, args.timeout)
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report("chat"),
    }
}

// ---------------------------------------------------------------------------
// Line handling. Pure functions over bytes and strings, shared by both
// modes and tested without a socket or a terminal.
// ---------------------------------------------------------------------------

/// Checks a nick or room name against PROTOCOL.md §4. Checking it here,
/// and not only in the daemon, also keeps a name from smuggling a second
/// command in after a newline.
pub fn parse_name(text: &str) -> Result<String, String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if (1..=32).contains(&text.len()) && text.chars().all(valid_char) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "`{text}` is not a name: use 1 to 32 of A-Z a-z 0-9 _ -"
        ))
    }
}

/// The commands sent right after connecting.
fn intro_lines(nick: Option<&str>, room: Option<&str>) -> String {
    let mut lines = String::new();
    if let Some(nick) = nick {
        lines.push_str(&format!("/nick {nick}\n"));
    }
    if let Some(room) = room {
        lines.push_str(&format!("/join {room}\n"));
    }
    lines
}

/// What a line typed at the prompt asks the client to do.
#[derive(Debug, PartialEq, Eq)]
enum Typed {
    /// Send this line (with its `\n`) to the daemon.
    Say(String),
    /// Leave: `/quit`, or `quit` alone, as the daemon understands them.
    Quit,
    /// An empty line: the daemon would ignore it, so it is not sent.
    Nothing,
}

impl Typed {
    fn parse(line: &str) -> Typed {
        let line = line.trim_end_matches(['\r', '\n']);
        match line {
            "" => Typed::Nothing,
            "/quit" | "quit" => Typed::Quit,
            _ => Typed::Say(format!("{line}\n")),
        }
    }
}

/// Splits the received byte stream into lines. A line may arrive in
/// pieces, and several lines may arrive in one read.
#[derive(Debug, Default)]
struct LineBuffer {
    /// The start of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Adds received bytes and returns the lines they complete, without
    /// their `\n` (and a `\r` before it).
    fn push(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..end]);
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(line);
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        if self.partial.len() > MAX_SHOWN_LINE {
            lines.push(std::mem::take(&mut self.partial));
        }
        lines
    }

    /// What is left when the connection ends: a last line without `\n`.
    fn finish(self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then_some(self.partial)
    }
}

/// A received line as it is safe to show on a terminal. The daemon relays
/// what members type, and a member can type escape sequences that would
/// move the cursor, retitle the window or worse; control characters are
/// therefore shown in caret notation (`ESC` as `^[`), and invalid UTF-8 as
/// U+FFFD.
fn for_terminal(line: &[u8]) -> String {
    let mut shown = String::with_capacity(line.len());
    for c in String::from_utf8_lossy(line).chars() {
        match c {
            '\t' => shown.push(c),
            '\u{7f}' => shown.push_str("^?"),
            c if (c as u32) < 0x20 => {
                shown.push('^');
                shown.push(char::from(b'@' + c as u8));
            }
            // C1 controls (U+0080 to U+009F) act as escapes on some terminals.
            c if c.is_control() => shown.push(char::REPLACEMENT_CHARACTER),
            c => shown.push(c),
        }
    }
    shown
}

/// Whether a received line is the daemon's answer to `/quit`.
fn is_farewell(line: &[u8]) -> bool {
    line == b"* bye"
}

// ---------------------------------------------------------------------------
// Scripted mode.
// ---------------------------------------------------------------------------

/// Sends stdin line by line, then `/quit`, while another thread copies
/// everything received to stdout until the daemon closes the connection.
fn scripted(stream: Stream, timeout: Duration) -> Result<(), ClientError> {
    let mut incoming = stream
        .try_clone()
        .map_err(|source| ClientError::io("cloning the socket", source))?;
    let (closed, wait_closed) = mpsc::channel();
    thread::spawn(move || {
        let copied = copy_to_stdout(&mut incoming);
        // The main thread may have given up waiting; then nobody listens.
        let _ = closed.send(copied);
    });

    let mut outgoing = stream;
    let sent = send_script(&mut outgoing, io::stdin().lock());
    if sent.is_err() {
        // Without its `/quit` the daemon would wait for more; end our side
        // so that it closes, and the receiving thread sees the end.
        let _ = outgoing.shutdown(Shutdown::Write);
    }

    let outcome = match wait_closed.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error),
        Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout {
            awaiting: "the daemon to close the connection after /quit".to_string(),
            after: timeout,
        }),
        Err(RecvTimeoutError::Disconnected) => {
            unreachable!("the receiving thread always reports before it ends")
        }
    };
    let _ = outgoing.shutdown(Shutdown::Both);
    // A failed send is the first thing that went wrong, so it is the one
    // reported; what was received meanwhile has been printed.
    sent.and(outcome)
}

/// Sends each input line, then `/quit` unless the input already quit.
fn send_script(outgoing: &mut Stream, input: impl BufRead) -> Result<(), ClientError> {
    let sending = |source| ClientError::io("sending to the daemon", source);
    for line in input.split(b'\n') {
        let mut line = line.map_err(|source| ClientError::io("reading stdin", source))?;
        // After `/quit` the daemon closes; more lines would only meet a
        // closed connection.
        let quits = matches!(&line[..], b"/quit" | b"quit" | b"/quit\r" | b"quit\r");
        line.push(b'\n');
        outgoing.write_all(&line).map_err(sending)?;
        if quits {
            return Ok(());
        }
    }
    outgoing.write_all(b"/quit\n").map_err(sending)
}

/// Copies the connection to stdout until the daemon closes it.
fn copy_to_stdout(incoming: &mut Stream) -> Result<(), ClientError> {
    let mut stdout = io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match incoming.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(ClientError::io("reading from the daemon", source)),
        };
        stdout
            .write_all(&buf[..n])
            .and_then(|()| stdout.flush())
            .map_err(|source| ClientError::io("writing stdout", source))?;
    }
}

// ---------------------------------------------------------------------------
// Interactive mode.
// ---------------------------------------------------------------------------

/// Why the editing loop ended.
#[derive(Debug, PartialEq, Eq)]
enum Leaving {
    /// The person at the keyboard left (`/quit`, Ctrl-D, Ctrl-C).
    ByChoice,
    /// The daemon closed the connection.
    Dropped,
}

/// Runs the line editor on this thread and the receiving side on another.
fn interactive(stream: Stream, timeout: Duration) -> Result<(), ClientError> {
    let terminal_error = |error: ReadlineError| ClientError::Io {
        doing: "setting up the terminal".to_string(),
        source: io::Error::other(error),
    };
    let config = Config::builder().auto_add_history(true).build();
    let mut editor = DefaultEditor::with_config(config).map_err(terminal_error)?;
    let printer = editor.create_external_printer().map_err(terminal_error)?;

    // A SIGINT that arrives between two `readline` calls must not end the
    // process: this no-op handler (setting a flag nobody reads) is in place
    // whenever rustyline's own handler is not.
    let sigint_seen = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, sigint_seen)
        .map_err(|source| ClientError::io("installing a SIGINT handler", source))?;

    let session = Arc::new(Session::new());
    let incoming = stream
        .try_clone()
        .map_err(|source| ClientError::io("cloning the socket", source))?;
    let receiver_session = Arc::clone(&session);
    thread::spawn(move || receive_for_terminal(incoming, printer, &receiver_session));

    let mut outgoing = stream;
    let leaving = edit_lines(&mut editor, &mut outgoing, &session);
    session.stop_editing();
    match leaving? {
        Leaving::ByChoice => {
            // The daemon may already be gone; then there is nothing to wait for.
            let wait = timeout.min(BYE_WAIT);
            if outgoing.write_all(b"/quit\n").is_ok() && !session.wait_for_farewell(wait) {
                eprintln!(
                    "socketlab chat: no `* bye` within {}; leaving anyway",
                    super::show_duration(wait)
                );
            }
            Ok(())
        }
        Leaving::Dropped => Err(ClientError::Closed {
            awaiting: "you left".to_string(),
        }),
    }
}

/// Reads lines at the prompt and sends them, until someone leaves.
fn edit_lines(
    editor: &mut DefaultEditor,
    outgoing: &mut Stream,
    session: &Session,
) -> Result<Leaving, ClientError> {
    loop {
        if session.is_closed() {
            return Ok(Leaving::Dropped);
        }
        match editor.readline(PROMPT) {
            Ok(line) => match Typed::parse(&line) {
                Typed::Say(line) => match outgoing.write_all(line.as_bytes()) {
                    Ok(()) => {}
                    // The daemon closed while the line was being typed; the
                    // wake-up signal may not have arrived yet.
                    Err(_) if session.is_closed() => return Ok(Leaving::Dropped),
                    Err(source) => return Err(ClientError::io("sending to the daemon", source)),
                },
                Typed::Quit => return Ok(Leaving::ByChoice),
                Typed::Nothing => {}
            },
            // Ctrl-C, or the receiving thread's wake-up signal: which one
            // it was is told by whether the connection is still open.
            Err(ReadlineError::Interrupted) if session.is_closed() => return Ok(Leaving::Dropped),
            Err(ReadlineError::Interrupted) | Err(ReadlineError::Eof) => {
                return Ok(Leaving::ByChoice);
            }
            Err(error) => {
                return Err(ClientError::Io {
                    doing: "reading the terminal".to_string(),
                    source: io::Error::other(error),
                });
            }
        }
    }
}

/// The receiving thread: shows each complete line above the prompt, and
/// when the connection ends, wakes the editor so that the client exits.
fn receive_for_terminal(
    mut incoming: Stream,
    mut printer: impl ExternalPrinter,
    session: &Session,
) {
    let mut lines = LineBuffer::default();
    let mut buf = [0u8; 16 * 1024];
    // While the editor is between `readline` calls, the printer writes to
    // the terminal directly; so each message carries its own newline.
    let mut show = |line: &[u8]| {
        let _ = printer.print(format!("{}\n", for_terminal(line)));
    };
    loop {
        let n = match incoming.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in lines.push(&buf[..n]) {
            show(&line);
            if is_farewell(&line) {
                session.set_link(Link::SaidBye);
            }
        }
    }
    if let Some(last) = lines.finish() {
        show(&last);
    }
    session.set_link(Link::Closed);
    session.wake_editor();
}

/// What the receiving thread has seen of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Lines may still come.
    Open,
    /// The daemon answered `/quit` with `* bye`; it closes next.
    SaidBye,
    /// The connection has ended.
    Closed,
}

/// What the two threads of the interactive client tell each other.
struct Session {
    state: Mutex<SessionState>,
    /// Signalled whenever `state` changes.
    changed: Condvar,
    /// The thread that runs the editor, for the wake-up signal.
    editor_thread: libc::pthread_t,
}

struct SessionState {
    /// Set by the receiving thread only.
    link: Link,
    /// Whether the editor may still be in, or about to enter, `readline`.
    /// Cleared by the editing thread once, when it stops.
    editing: bool,
}

impl Session {
    /// Called on the thread that will run the editor.
    fn new() -> Session {
        Session {
            state: Mutex::new(SessionState {
                link: Link::Open,
                editing: true,
            }),
            changed: Condvar::new(),
            // SAFETY: pthread_self has no preconditions and cannot fail.
            editor_thread: unsafe { libc::pthread_self() },
        }
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        // Neither thread panics while holding the lock, and the state is
        // valid at every step anyway, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.lock().link == Link::Closed
    }

    fn set_link(&self, link: Link) {
        self.lock().link = link;
        self.changed.notify_all();
    }

    fn stop_editing(&self) {
        self.lock().editing = false;
        self.changed.notify_all();
    }

    /// Sends SIGINT to the editing thread until it stops editing.
    fn wake_editor(&self) {
        let mut state = self.lock();
        while state.editing {
            // SAFETY: the editing thread is the process's main thread, which
            // outlives this one, so the handle is valid. SIGINT is handled
            // (by rustyline inside `readline`, by a no-op handler outside),
            // so it interrupts the wait and does not end the process.
            unsafe { libc::pthread_kill(self.editor_thread, libc::SIGINT) };
            state = match self.changed.wait_timeout(state, WAKE_REPEAT) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Waits, at most `limit`, for `* bye` or the end of the connection,
    /// and tells whether either came.
    fn wait_for_farewell(&self, limit: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, limit, |state| state.link == Link::Open)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.link != Link::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_protocol() {
        assert_eq!(parse_name("alice_2-b"), Ok("alice_2-b".to_string()));
        assert!(parse_name(&"x".repeat(32)).is_ok());
        assert!(parse_name(&"x".repeat(33)).is_err());
        assert!(parse_name("").is_err());
        assert!(parse_name("bob smith").is_err());
        assert!(parse_name("eve\n/quit").is_err());
        assert!(parse_name("zoë").is_err());
    }

    #[test]
    fn intro_sends_nick_then_room() {
        assert_eq!(intro_lines(None, None), "");
        assert_eq!(intro_lines(Some("ann"), None), "/nick ann\n");
        assert_eq!(
            intro_lines(Some("ann"), Some("den")),
            "/nick ann\n/join den\n"
        );
        assert_eq!(intro_lines(None, Some("den")), "/join den\n");
    }

    #[test]
    fn typed_lines() {
        assert_eq!(Typed::parse("hello"), Typed::Say("hello\n".to_string()));
        assert_eq!(Typed::parse("/who"), Typed::Say("/who\n".to_string()));
        assert_eq!(Typed::parse("/quit"), Typed::Quit);
        assert_eq!(Typed::parse("quit"), Typed::Quit);
        assert_eq!(
            Typed::parse("quit now"),
            Typed::Say("quit now\n".to_string())
        );
        assert_eq!(Typed::parse(""), Typed::Nothing);
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let mut buffer = LineBuffer::default();
        assert!(buffer.push(b"<2026-01-01 00:00:00> bo").is_empty());
        assert_eq!(
            buffer.push(b"b: hi\n* bob left lob"),
            vec![b"<2026-01-01 00:00:00> bob: hi".to_vec()]
        );
        assert_eq!(buffer.push(b"by\r\n"), vec![b"* bob left lobby".to_vec()]);
        assert_eq!(buffer.finish(), None);
    }

    #[test]
    fn several_lines_in_one_read_and_a_last_one_without_newline() {
        let mut buffer = LineBuffer::default();
        assert_eq!(
            buffer.push(b"a\n\nb\nc"),
            vec![b"a".to_vec(), b"".to_vec(), b"b".to_vec()]
        );
        assert_eq!(buffer.finish(), Some(b"c".to_vec()));
    }

    #[test]
    fn an_endless_line_is_shown_in_pieces() {
        let mut buffer = LineBuffer::default();
        let lines = buffer.push(&vec![b'x'; MAX_SHOWN_LINE + 1]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_SHOWN_LINE + 1);
        assert_eq!(buffer.finish(), None);
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        assert_eq!(for_terminal(b"plain\ttext"), "plain\ttext");
        assert_eq!(for_terminal(b"\x1b]0;owned\x07"), "^[]0;owned^G");
        assert_eq!(for_terminal(b"a\rb\x7f"), "a^Mb^?");
        assert_eq!(for_terminal("x\u{9b}31m".as_bytes()), "x\u{fffd}31m");
        assert_eq!(for_terminal(b"bad \xff byte"), "bad \u{fffd} byte");
        assert_eq!(for_terminal("zoë 🙂".as_bytes()), "zoë 🙂");
    }

    #[test]
    fn the_farewell_is_exactly_bye() {
        assert!(is_farewell(b"* bye"));
        assert!(!is_farewell(b"<2026-01-01 00:00:00> bob: * bye"));
    }

    #[test]
    fn leaving_waits_for_bye_or_the_end_of_the_connection() {
        let session = Session::new();
        assert!(!session.wait_for_farewell(Duration::from_millis(1)));
        session.set_link(Link::SaidBye);
        assert!(session.wait_for_farewell(Duration::from_millis(1)));
        session.set_link(Link::Closed);
        assert!(session.wait_for_farewell(Duration::from_millis(1)));
    }

    #[test]
    fn a_farewell_from_another_thread_wakes_the_wait() {
        let session = Arc::new(Session::new());
        let receiver = Arc::clone(&session);
        let said_bye = thread::spawn(move || receiver.set_link(Link::SaidBye));
        assert!(session.wait_for_farewell(Duration::from_secs(10)));
        said_bye.join().unwrap();
    }

    #[test]
    fn the_wake_up_stops_once_the_editor_has_stopped() {
        let session = Session::new();
        session.stop_editing();
        // Returns at once: no signal is sent to a thread that is not editing.
        session.wake_editor();
        assert!(!session.lock().editing);
    }
}
