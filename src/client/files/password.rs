//! Where the client's password comes from, in this order:
//!
//! 1. `--password-stdin`: the first line of stdin, without its newline (so
//!    `printf '%s\n' "$PW" | socketlab files ...` works, and a shell script
//!    can follow on the next lines).
//! 2. The environment variable `SOCKETLAB_PASSWORD`.
//! 3. For the user `demo` only: the demo password file the daemon writes,
//!    `<data-dir>/demo.password`, so that a first try on one machine needs
//!    no setup.
//! 4. A prompt on the terminal, with echo turned off.
//!
//! The password is never taken from a command-line argument: the process
//! list would show it to every user of the machine.

use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::FilesError;

/// The environment variable a password may come from.
pub const PASSWORD_ENV: &str = "SOCKETLAB_PASSWORD";
/// The user whose password may come from the demo password file.
pub const DEMO_USER: &str = "demo";
/// The demo password file's name in the data dir.
pub const DEMO_PASSWORD_FILE: &str = "demo.password";

/// The sources a password may come from, as the command line gave them.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    pub user: &'a str,
    pub from_stdin: bool,
    pub data_dir: &'a Path,
}

/// Finds the password, trying each source in turn.
pub fn find(sources: &Sources<'_>) -> Result<String, FilesError> {
    if sources.from_stdin {
        return read_stdin_line();
    }
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    if sources.user == DEMO_USER {
        let path = demo_password_path(sources.data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(first_line(&text).to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(FilesError::Local(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
    }
    prompt(sources.user)
}

/// `<data-dir>/demo.password`.
pub fn demo_password_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DEMO_PASSWORD_FILE)
}

/// A line without its `\n` and a `\r` before it.
pub fn first_line(text: &str) -> &str {
    let line = text.split('\n').next().unwrap_or("");
    line.strip_suffix('\r').unwrap_or(line)
}

fn read_stdin_line() -> Result<String, FilesError> {
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) => Err(FilesError::Usage(
            "--password-stdin: stdin is empty".to_string(),
        )),
        Ok(_) => Ok(first_line(&line).to_string()),
        Err(e) => Err(FilesError::Usage(format!("--password-stdin: {e}"))),
    }
}

/// Asks on the terminal (`/dev/tty`, so it works with stdin redirected),
/// with echo off while the password is typed.
fn prompt(user: &str) -> Result<String, FilesError> {
    let no_password = || {
        FilesError::Usage(format!(
            "no password for {user}: use --password-stdin or set {PASSWORD_ENV}"
        ))
    };
    let tty = match File::options().read(true).write(true).open("/dev/tty") {
        Ok(tty) if tty.is_terminal() => tty,
        _ => return Err(no_password()),
    };
    let mut out = &tty;
    let _ = write!(out, "password for {user}: ");
    let _ = out.flush();
    let echo = EchoOff::new(&tty);
    let mut line = String::new();
    let read = io::BufReader::new(&tty).read_line(&mut line);
    drop(echo);
    let _ = writeln!(out);
    match read {
        Ok(0) | Err(_) => Err(no_password()),
        Ok(_) => Ok(first_line(&line).to_string()),
    }
}

/// Turns the terminal's echo off until dropped.
struct EchoOff<'a> {
    tty: &'a File,
    saved: Option<libc::termios>,
}

impl<'a> EchoOff<'a> {
    fn new(tty: &'a File) -> EchoOff<'a> {
        let fd = tty.as_raw_fd();
        // SAFETY: tcgetattr and tcsetattr only read and write the struct
        // passed, on a descriptor this function holds open.
        let saved = unsafe {
            let mut termios: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut termios) != 0 {
                None
            } else {
                let mut quiet = termios;
                quiet.c_lflag &= !libc::ECHO;
                libc::tcsetattr(fd, libc::TCSANOW, &quiet);
                Some(termios)
            }
        };
        EchoOff { tty, saved }
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: as in `new`.
            unsafe {
                libc::tcsetattr(self.tty.as_raw_fd(), libc::TCSANOW, saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_line_drops_its_line_ending() {
        assert_eq!(first_line("pw\n"), "pw");
        assert_eq!(first_line("pw\r\nrest\n"), "pw");
        assert_eq!(first_line("pw"), "pw");
        assert_eq!(first_line(""), "");
    }

    #[test]
    fn the_demo_password_lives_in_the_data_dir() {
        assert_eq!(
            demo_password_path(Path::new("socketlab-data")),
            PathBuf::from("socketlab-data/demo.password")
        );
    }
}
