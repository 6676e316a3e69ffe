//! `socketlab chat` against a stand-in chat service.
//!
//! Scripted mode (stdin a pipe) is run directly. Interactive mode needs a
//! terminal, so those tests run the client inside a detached tmux session
//! on a private tmux server: the test types with `send-keys` and reads the
//! screen with `capture-pane`, which shows what a person would see, prompt
//! line included. They are skipped, with a note, where tmux is missing.
//!
//! Run with `cargo test --test client_chat`.

mod client_support;
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use client_support::{
    ChatStub, OnQuit, STEP, STUB_TS, TAKEN_NICK, refused_addr, run_client, scratch_path,
};

// ---------------------------------------------------------------------------
// Scripted mode.
// ---------------------------------------------------------------------------

#[test]
fn scripted_sends_every_line_then_quits_and_prints_everything() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let addr = stub.addr.to_string();
    let args = ["chat", &addr, "--nick", "alice", "--room", "den"];
    let out = run_client(&args, b"hello\nsecond line\n");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "* welcome guest1; room lobby; 1 online; /help for commands\n\
             * guest1 is now alice\n\
             * alice joined den\n\
             {STUB_TS} alice: hello\n\
             {STUB_TS} alice: second line\n\
             * bye\n"
        )
    );
    assert_eq!(
        stub.received(),
        ["/nick alice", "/join den", "hello", "second line", "/quit"]
    );
}

#[test]
fn a_taken_nick_ends_the_client_with_an_error_before_anything_is_said() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let addr = stub.addr.to_string();
    let out = run_client(&["chat", &addr, "--nick", TAKEN_NICK], b"hello\n");
    assert_eq!(out.code(), Some(1), "stdout: {}", out.stdout);
    assert!(out.stderr.contains("nick in use"), "{}", out.stderr);
    assert!(out.stderr.contains("--guest-if-taken"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // The welcome and the refusal were shown; nothing was said as a guest.
    assert!(
        out.stdout.contains("! error: nick in use"),
        "{}",
        out.stdout
    );
    assert_eq!(stub.received(), vec![format!("/nick {TAKEN_NICK}")]);
}

#[test]
fn a_nick_taken_on_the_real_daemon_ends_the_client_and_says_nothing() {
    use std::io::Write;

    let d = common::Daemon::start(&[]);
    let mut ada = d.connect("chat");
    ada.write_all(b"/nick ada\n").unwrap();
    // The welcome, the join notice, then the rename: a few lines at most.
    let renamed = (0..10).any(|_| common::read_line(&mut ada).ends_with(" is now ada\n"));
    assert!(renamed, "ada did not get the nick");

    let addr = d.tcp("chat").to_string();
    let out = run_client(&["chat", "--addr", &addr, "--nick", "ada"], b"hello\n");
    assert_eq!(out.code(), Some(1), "stdout: {}", out.stdout);
    assert!(out.stderr.contains("nick in use"), "{}", out.stderr);

    // Lines reach ada in order, so everything the client could have said
    // comes before the answer to this /who.
    ada.write_all(b"/who\n").unwrap();
    let mut answered = false;
    for _ in 0..20 {
        let line = common::read_line(&mut ada);
        assert!(!line.contains(": hello"), "the client spoke: {line}");
        if line.starts_with("* in lobby:") {
            answered = true;
            break;
        }
    }
    assert!(answered, "no answer to /who");
}

#[test]
fn guest_if_taken_carries_on_as_the_guest_with_a_warning() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let addr = stub.addr.to_string();
    let args = ["chat", &addr, "--nick", TAKEN_NICK, "--guest-if-taken"];
    let out = run_client(&args, b"hello\n");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("carrying on as a guest"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains(&format!("{STUB_TS} guest1: hello")),
        "{}",
        out.stdout
    );
}

#[test]
fn scripted_with_empty_input_only_quits() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let out = run_client(&["chat", &stub.addr.to_string()], b"");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        "* welcome guest1; room lobby; 1 online; /help for commands\n* bye\n"
    );
    assert_eq!(stub.received(), ["/quit"]);
}

#[test]
fn scripted_input_that_quits_ends_the_input() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let out = run_client(
        &["chat", &stub.addr.to_string()],
        b"first\nquit\nnever sent\n",
    );
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout
            .ends_with(&format!("{STUB_TS} guest1: first\n* bye\n"))
    );
    assert_eq!(stub.received(), ["first", "quit"]);
}

#[test]
fn scripted_last_line_without_newline_is_sent_whole() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let out = run_client(&["chat", &stub.addr.to_string()], b"no newline at the end");
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(stub.received(), ["no newline at the end", "/quit"]);
}

#[test]
fn scripted_waits_for_the_close_no_longer_than_the_timeout() {
    let stub = ChatStub::start(OnQuit::Ignore);
    let args = ["chat", &stub.addr.to_string(), "--timeout", "300ms"];
    let out = run_client(&args, b"hi\n");
    assert_eq!(out.code(), Some(1));
    // What arrived before the timeout is still printed.
    assert!(
        out.stdout.contains("guest1: hi\n"),
        "stdout: {}",
        out.stdout
    );
    assert_eq!(
        out.stderr,
        "socketlab chat: timed out after 300ms waiting for the daemon to close the connection after /quit\n"
    );
}

#[test]
fn a_refused_connection_is_a_clear_error() {
    let addr = refused_addr();
    let out = run_client(&["chat", &addr.to_string()], b"hi\n");
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .starts_with(&format!("socketlab chat: cannot connect to {addr}: ")),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn names_outside_the_protocol_are_refused_before_connecting() {
    let out = run_client(&["chat", "--nick", "eve\n/quit"], b"");
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr.contains("is not a name"),
        "stderr: {}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// Interactive mode, under a pseudo-terminal.
// ---------------------------------------------------------------------------

/// A private tmux server running one client in a detached session.
struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// Starts `socketlab chat ARGS` in an 80x24 terminal, or returns `None`
    /// where tmux is not installed. When the client exits, the pane prints
    /// its exit status and stays open, so the test can read both.
    fn start(args: &[&str]) -> Option<Terminal> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        let terminal = Terminal {
            socket: scratch_path("tmux"),
        };
        let command = format!(
            "{} {}; echo \"exit status $?\"; sleep 600",
            env!("CARGO_BIN_EXE_socketlab"),
            args.join(" ")
        );
        let started = terminal.tmux(&["new-session", "-d", "-x", "80", "-y", "24", &command]);
        assert!(started.status.success(), "tmux: {started:?}");
        Some(terminal)
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux runs")
    }

    /// Types `text` as it is.
    fn type_text(&self, text: &str) {
        assert!(self.tmux(&["send-keys", "-l", text]).status.success());
    }

    /// Presses a key by its tmux name: `Enter`, `C-d`, `C-c`.
    fn press(&self, key: &str) {
        assert!(self.tmux(&["send-keys", key]).status.success());
    }

    /// The visible lines, trailing blank lines dropped.
    fn screen(&self) -> Vec<String> {
        let out = self.tmux(&["capture-pane", "-p"]);
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| line.trim_end().to_string())
            .collect();
        while lines.last().is_some_and(|line| line.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// Waits until the screen satisfies `condition`; on a timeout the
    /// failure shows the screen as it was.
    fn wait_for_screen(&self, what: &str, condition: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + STEP;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen: {screen:#?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the last line is the prompt showing `typed`.
    fn shows_prompt(screen: &[String], typed: &str) -> bool {
        screen.last().map(String::as_str) == Some(format!("> {typed}").trim_end())
    }

    /// Waits until the client has exited with `status`.
    fn wait_for_exit(&self, status: i32) {
        let line = format!("exit status {status}");
        self.wait_for_screen(&line, |screen| screen.contains(&line));
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // Only this test's own tmux server, by its own socket.
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The screen holds `line` above a prompt that still shows `typed`.
fn line_above_prompt(screen: &[String], line: &str, typed: &str) -> bool {
    screen.iter().any(|l| l.ends_with(line)) && Terminal::shows_prompt(screen, typed)
}

#[test]
fn interactive_incoming_lines_keep_the_typed_line_intact() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let addr = stub.addr.to_string();
    let Some(term) = Terminal::start(&["chat", &addr, "--nick", "alice"]) else {
        return;
    };
    stub.wait_for_line("/nick alice");
    term.wait_for_screen("the nick change and a prompt", |screen| {
        line_above_prompt(screen, "* guest1 is now alice", "")
    });

    // Half a line typed, then someone else speaks.
    term.type_text("hel");
    term.wait_for_screen("the typed text", |screen| {
        Terminal::shows_prompt(screen, "hel")
    });
    let incoming = format!("{STUB_TS} bob: said while alice types");
    stub.push(&incoming);
    term.wait_for_screen("the incoming line above the prompt", |screen| {
        line_above_prompt(screen, &incoming, "hel")
    });

    // The rest of the line completes what was typed before the interruption.
    term.type_text("lo");
    term.press("Enter");
    stub.wait_for_line("hello");
    term.wait_for_screen("alice's own line", |screen| {
        line_above_prompt(screen, &format!("{STUB_TS} alice: hello"), "")
    });

    // Ctrl-D on an empty line leaves: `/quit`, `* bye`, exit status 0.
    term.press("C-d");
    stub.wait_for_line("/quit");
    term.wait_for_exit(0);
    let screen = term.screen();
    assert!(screen.iter().any(|l| l == "* bye"), "screen: {screen:#?}");
    assert_eq!(stub.received(), ["/nick alice", "hello", "/quit"]);
}

#[test]
fn interactive_ctrl_c_leaves_cleanly_without_sending_the_typed_line() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let Some(term) = Terminal::start(&["chat", &stub.addr.to_string()]) else {
        return;
    };
    term.wait_for_screen("the welcome and a prompt", |screen| {
        line_above_prompt(screen, "/help for commands", "")
    });
    term.type_text("not finished");
    term.wait_for_screen("the typed text", |screen| {
        Terminal::shows_prompt(screen, "not finished")
    });
    term.press("C-c");
    stub.wait_for_line("/quit");
    term.wait_for_exit(0);
    assert_eq!(stub.received(), ["/quit"]);
}

#[test]
fn interactive_quit_command_leaves() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let Some(term) = Terminal::start(&["chat", &stub.addr.to_string(), "--room", "den"]) else {
        return;
    };
    stub.wait_for_line("/join den");
    term.wait_for_screen("the join notice and a prompt", |screen| {
        line_above_prompt(screen, "* guest1 joined den", "")
    });
    term.type_text("/quit");
    term.press("Enter");
    term.wait_for_exit(0);
    assert_eq!(stub.received(), ["/join den", "/quit"]);
}

#[test]
fn interactive_exits_when_the_daemon_closes_the_connection() {
    let stub = ChatStub::start(OnQuit::ByeAndClose);
    let Some(term) = Terminal::start(&["chat", &stub.addr.to_string()]) else {
        return;
    };
    term.wait_for_screen("the welcome and a prompt", |screen| {
        line_above_prompt(screen, "/help for commands", "")
    });
    term.type_text("typing when the daemon goes");
    term.wait_for_screen("the typed text", |screen| {
        screen.last().is_some_and(|l| l.ends_with("goes"))
    });
    stub.drop_first();
    term.wait_for_exit(1);
    let screen = term.screen();
    assert!(
        screen
            .iter()
            .any(|l| l == "socketlab chat: the daemon closed the connection before you left"),
        "screen: {screen:#?}"
    );
}
