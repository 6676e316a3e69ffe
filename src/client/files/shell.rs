//! `socketlab files shell`: an ftp-like prompt, the way people use `sftp`.
//!
//! ```text
//! files:/> mkdir photos
//! files:/> cd photos
//! files:/photos> put ~/Pictures/cat.jpg
//! put /home/ada/Pictures/cat.jpg -> cat.jpg: 2.3 MiB, sha256 9f86d0...
//! files:/photos> ls
//! - 2411724 2026-12-02 04:14 cat.jpg
//! files:/photos> bye
//! ```
//!
//! On a terminal the line editor (rustyline) gives history and editing;
//! Ctrl-C clears the line and Ctrl-D leaves. Ctrl-C during a transfer ends
//! the client, as it ends any command: the protocol has no way to cancel a
//! transfer and keep the connection in step, and the transfer resumes
//! where it stopped when it is asked for again. When stdin is not a terminal
//! the shell reads commands line by line, which makes it scriptable:
//!
//! ```text
//! $ printf 'cd photos\nget cat.jpg\n' | socketlab files shell
//! ```
//!
//! # Scripts stop at the first failure
//!
//! As in `sftp -b`, a script stops at the first command that fails and the
//! shell exits with that command's status, so a script that goes wrong
//! does not carry on in the wrong place. A command written with a leading
//! `-` (`-rm old.txt`) may fail without stopping the script. At the
//! prompt, a failure is printed and the prompt comes back. Either way, a
//! broken connection ends the shell with status 255.
//!
//! # Lines
//!
//! Words are separated by spaces; `'...'` and `"..."` quote spaces, and a
//! backslash escapes the next character outside single quotes, as in a
//! POSIX shell (without expansions). `!cmd` runs `cmd` with the local
//! `/bin/sh`; `#` starts a comment line.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};

use super::commands::{self, Outcome, Request};
use super::session::Session;
use super::{FilesError, Output};

/// A line of the shell, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Nothing to do: an empty or comment line.
    Nothing,
    /// A request to the daemon.
    Remote(Request),
    /// `help`.
    Help,
    /// `lcd [DIR]`: change the local directory (default: `$HOME`).
    Lcd(Option<PathBuf>),
    /// `lpwd`.
    Lpwd,
    /// `lls [DIR]`.
    Lls(Option<PathBuf>),
    /// `!cmd`: a local shell command.
    Local(String),
    /// `bye`, `quit`, `exit`.
    Quit,
}

/// What `help` prints.
pub const HELP: &str = "\
remote:  ls [PATH]  cd PATH  pwd  mkdir PATH  rm PATH  quota
         get REMOTE [LOCAL]   put LOCAL [REMOTE]
local:   lls [DIR]  lcd [DIR]  lpwd  !COMMAND
other:   help  bye | quit | exit | Ctrl-D
         a leading - lets a command fail without stopping a script
";

/// Runs the shell until `bye`, end of input, or a broken connection, and
/// returns the exit status.
pub fn run(session: &mut Session, output: Output) -> u8 {
    if io::stdin().is_terminal() && !output.json {
        interactive(session, output)
    } else {
        scripted(session, output)
    }
}

fn interactive(session: &mut Session, output: Output) -> u8 {
    let config = Config::builder().auto_add_history(true).build();
    let mut editor = match DefaultEditor::with_config(config) {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!(
                "socketlab files: cannot use the terminal ({e}); reading commands as a script"
            );
            return scripted(session, output);
        }
    };
    loop {
        let prompt = format!("files:{}> ", session.cwd);
        let text = match editor.readline(&prompt) {
            Ok(text) => text,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return 0,
            Err(e) => {
                eprintln!("socketlab files: reading the terminal: {e}");
                return 1;
            }
        };
        let (_, line) = split_may_fail(&text);
        match step(session, output, line) {
            Step::Go(_) => {}
            Step::Quit => return 0,
            Step::Lost(status) => return status,
        }
    }
}

fn scripted(session: &mut Session, output: Output) -> u8 {
    // The same stdin that `--password-stdin` read its line from, so a
    // script may follow the password.
    for text in io::stdin().lock().lines() {
        let text = match text {
            Ok(text) => text,
            Err(e) => {
                eprintln!("socketlab files: reading stdin: {e}");
                return 1;
            }
        };
        let (may_fail, line) = split_may_fail(&text);
        match step(session, output, line) {
            Step::Go(0) => {}
            Step::Go(_) if may_fail => {}
            Step::Go(status) | Step::Lost(status) => return status,
            Step::Quit => return 0,
        }
    }
    0
}

/// What one line led to.
enum Step {
    /// Go on; the line's status (0 when it succeeded).
    Go(u8),
    /// The user asked to leave.
    Quit,
    /// The connection is unusable: leave with this status.
    Lost(u8),
}

fn step(session: &mut Session, output: Output, text: &str) -> Step {
    let line = match parse_line(text) {
        Ok(line) => line,
        Err(e) => {
            eprintln!("socketlab files: {e} (try help)");
            return Step::Go(2);
        }
    };
    match line {
        Line::Nothing => Step::Go(0),
        Line::Quit => Step::Quit,
        Line::Help => {
            let _ = io::stdout().write_all(HELP.as_bytes());
            Step::Go(0)
        }
        Line::Remote(request) => match commands::perform(session, &request, output.progress) {
            Ok(outcome) => {
                output.outcome(&outcome);
                Step::Go(0)
            }
            Err(error) => {
                output.failure(request.name(), &error);
                if error.exit_status() == 255 || !session.is_usable() {
                    Step::Lost(error.exit_status().max(1))
                } else {
                    Step::Go(error.exit_status())
                }
            }
        },
        Line::Lpwd => match std::env::current_dir() {
            Ok(dir) => {
                let _ = writeln!(io::stdout(), "{}", dir.display());
                Step::Go(0)
            }
            Err(e) => local_failure("lpwd", e),
        },
        Line::Lcd(dir) => {
            let dir = dir.or_else(|| std::env::var_os("HOME").map(PathBuf::from));
            match dir.map(std::env::set_current_dir) {
                Some(Ok(())) => Step::Go(0),
                Some(Err(e)) => local_failure("lcd", e),
                None => local_failure("lcd", io::Error::other("no directory and no $HOME")),
            }
        }
        Line::Lls(dir) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            match commands::local_entries(&dir) {
                Ok(entries) => {
                    output.outcome(&Outcome::Listing {
                        path: Some(dir.display().to_string()),
                        entries,
                    });
                    Step::Go(0)
                }
                Err(e) => local_failure("lls", e),
            }
        }
        Line::Local(command) => {
            let command = if command.trim().is_empty() {
                std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())
            } else {
                command
            };
            match std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&command)
                .status()
            {
                Ok(status) if status.success() => Step::Go(0),
                Ok(_) => Step::Go(1),
                Err(e) => local_failure("!", e),
            }
        }
    }
}

fn local_failure(command: &str, e: io::Error) -> Step {
    eprintln!(
        "socketlab files: {command}: {}",
        FilesError::Local(e.to_string())
    );
    Step::Go(1)
}

/// Splits off a leading `-`, which lets the command fail without ending a
/// script.
fn split_may_fail(text: &str) -> (bool, &str) {
    let trimmed = text.trim_start();
    match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    }
}

/// Understands one line of the shell.
pub fn parse_line(text: &str) -> Result<Line, String> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(Line::Nothing);
    }
    if let Some(command) = text.strip_prefix('!') {
        return Ok(Line::Local(command.to_string()));
    }
    let words = split_words(text)?;
    let (name, operands) = words.split_first().ok_or("empty line")?;
    let arity = |min: usize, max: usize| {
        if (min..=max).contains(&operands.len()) {
            Ok(())
        } else if min == max {
            Err(format!(
                "{name} takes {min} operand{}",
                if min == 1 { "" } else { "s" }
            ))
        } else {
            Err(format!("{name} takes {min} to {max} operands"))
        }
    };
    let nth = |i: usize| operands.get(i).cloned();
    let first = || operands[0].clone();
    Ok(match name.as_str() {
        "ls" | "dir" => {
            arity(0, 1)?;
            Line::Remote(Request::Ls { path: nth(0) })
        }
        "cd" => {
            arity(1, 1)?;
            Line::Remote(Request::Cd { path: first() })
        }
        "pwd" => {
            arity(0, 0)?;
            Line::Remote(Request::Pwd)
        }
        "mkdir" => {
            arity(1, 1)?;
            Line::Remote(Request::Mkdir { path: first() })
        }
        "rm" => {
            arity(1, 1)?;
            Line::Remote(Request::Rm { path: first() })
        }
        "quota" => {
            arity(0, 0)?;
            Line::Remote(Request::Quota)
        }
        "get" => {
            arity(1, 2)?;
            Line::Remote(Request::Get {
                remote: first(),
                local: nth(1).map(PathBuf::from),
            })
        }
        "put" => {
            arity(1, 2)?;
            Line::Remote(Request::Put {
                local: PathBuf::from(first()),
                remote: nth(1),
            })
        }
        "lcd" => {
            arity(0, 1)?;
            Line::Lcd(nth(0).map(PathBuf::from))
        }
        "lpwd" => {
            arity(0, 0)?;
            Line::Lpwd
        }
        "lls" => {
            arity(0, 1)?;
            Line::Lls(nth(0).map(PathBuf::from))
        }
        "help" | "?" => Line::Help,
        "bye" | "quit" | "exit" => Line::Quit,
        other => return Err(format!("unknown command {other:?}")),
    })
}

/// Splits a line into words: spaces separate, quotes group, a backslash
/// escapes (not inside single quotes).
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = Quote::None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (&quote, c) {
            (Quote::None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (Quote::None, '\'') => (quote, in_word) = (Quote::Single, true),
            (Quote::None, '"') => (quote, in_word) = (Quote::Double, true),
            (Quote::Single, '\'') | (Quote::Double, '"') => quote = Quote::None,
            (Quote::None | Quote::Double, '\\') => {
                word.push(chars.next().ok_or("a backslash at the end of the line")?);
                in_word = true;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote != Quote::None {
        return Err("a quote is not closed".to_string());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_spaces_and_group_in_quotes() {
        assert_eq!(
            split_words("  put a  b "),
            Ok(vec!["put".into(), "a".into(), "b".into()])
        );
        assert_eq!(
            split_words(r#"put 'my file.txt' "dir/with space" a\ b"#),
            Ok(vec![
                "put".into(),
                "my file.txt".into(),
                "dir/with space".into(),
                "a b".into()
            ])
        );
        assert_eq!(split_words("get ''"), Ok(vec!["get".into(), String::new()]));
        assert_eq!(split_words(r"'a\b'"), Ok(vec![r"a\b".into()]));
        assert!(split_words("put 'open").is_err());
        assert!(split_words("put end\\").is_err());
    }

    #[test]
    fn lines_become_requests() {
        assert_eq!(
            parse_line("ls"),
            Ok(Line::Remote(Request::Ls { path: None }))
        );
        assert_eq!(
            parse_line("get /a/b.txt here.txt"),
            Ok(Line::Remote(Request::Get {
                remote: "/a/b.txt".into(),
                local: Some(PathBuf::from("here.txt"))
            }))
        );
        assert_eq!(
            parse_line("put x.bin"),
            Ok(Line::Remote(Request::Put {
                local: PathBuf::from("x.bin"),
                remote: None
            }))
        );
        assert_eq!(parse_line("!ls -l"), Ok(Line::Local("ls -l".into())));
        assert_eq!(parse_line("lcd"), Ok(Line::Lcd(None)));
        assert_eq!(parse_line("# note"), Ok(Line::Nothing));
        assert_eq!(parse_line("   "), Ok(Line::Nothing));
        assert_eq!(parse_line("quit"), Ok(Line::Quit));
    }

    #[test]
    fn wrong_lines_say_why() {
        assert_eq!(parse_line("cd"), Err("cd takes 1 operand".into()));
        assert_eq!(
            parse_line("get a b c"),
            Err("get takes 1 to 2 operands".into())
        );
        assert_eq!(parse_line("pwd x"), Err("pwd takes 0 operands".into()));
        assert_eq!(parse_line("frob"), Err("unknown command \"frob\"".into()));
    }

    #[test]
    fn a_leading_dash_lets_a_command_fail() {
        assert_eq!(split_may_fail("-rm x"), (true, "rm x"));
        assert_eq!(split_may_fail("  rm x"), (false, "rm x"));
    }
}
