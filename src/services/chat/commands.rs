//! Commands: what a line means, and the errors a line can earn.

use std::fmt;

use super::MAX_NAME;

/// What `/help` answers, a line at a time.
pub const HELP: &[&str] = &[
    "* commands:",
    "* /nick NEW       take the nick NEW (1 to 32 of A-Z a-z 0-9 _ -)",
    "* /join ROOM      leave this room for ROOM (created on demand)",
    "* /who            list the members of this room",
    "* /rooms          list the rooms that have members",
    "* /msg NICK TEXT  say TEXT to NICK alone",
    "* /help           this help",
    "* /quit           leave (a line that is just quit does too)",
    "* any other line is said to your room",
    "* end of help",
];

/// Why a line was refused; its `Display` is the text after `! error: `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatError {
    UnknownCommand,
    NickInUse,
    NoSuchNick,
    BadName,
    MsgUsage,
    InvalidUtf8,
    LineTooLong,
    RoomFull,
    TooManyRooms,
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChatError::UnknownCommand => "unknown command",
            ChatError::NickInUse => "nick in use",
            ChatError::NoSuchNick => "no such nick",
            ChatError::BadName => "bad name",
            ChatError::MsgUsage => "usage: /msg NICK TEXT",
            ChatError::InvalidUtf8 => "invalid UTF-8",
            ChatError::LineTooLong => "line too long",
            ChatError::RoomFull => "room full",
            ChatError::TooManyRooms => "too many rooms",
        })
    }
}

/// One line, understood.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A plain line, said to the room.
    Say(&'a str),
    Nick(&'a str),
    Join(&'a str),
    Who,
    Rooms,
    Msg {
        to: &'a str,
        text: &'a str,
    },
    Help,
    Quit,
}

/// Parses one non-empty line. Names are checked here (so `/nick` and
/// `/join` with a bad name fail before touching any state); whether a nick
/// exists or is taken is for [`Rooms`](super::Rooms) to say.
pub fn parse(line: &str) -> Result<Command<'_>, ChatError> {
    if line == "quit" {
        return Ok(Command::Quit);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Command::Say(line));
    };
    let (name, args) = command.split_once(' ').unwrap_or((command, ""));
    let args = args.trim_start_matches(' ');
    match name {
        "nick" => valid_name(args.trim_end_matches(' ')).map(Command::Nick),
        "join" => valid_name(args.trim_end_matches(' ')).map(Command::Join),
        "who" => Ok(Command::Who),
        "rooms" => Ok(Command::Rooms),
        "help" => Ok(Command::Help),
        "quit" => Ok(Command::Quit),
        "msg" => {
            let (to, text) = args.split_once(' ').ok_or(ChatError::MsgUsage)?;
            let text = text.trim_start_matches(' ');
            if to.is_empty() || text.is_empty() {
                return Err(ChatError::MsgUsage);
            }
            Ok(Command::Msg { to, text })
        }
        _ => Err(ChatError::UnknownCommand),
    }
}

/// Whether `name` is a valid nick or room name: 1 to 32 of
/// `A-Z a-z 0-9 _ -`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_name(name: &str) -> Result<&str, ChatError> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(ChatError::BadName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Result<Command<'_>, ChatError>) {
        assert_eq!(parse(line), expected, "{line:?}");
    }

    #[test]
    fn plain_lines_are_said() {
        check("hello", Ok(Command::Say("hello")));
        check("  spaced  ", Ok(Command::Say("  spaced  ")));
        check("quit now", Ok(Command::Say("quit now")));
        check("Quit", Ok(Command::Say("Quit")));
    }

    #[test]
    fn every_command_parses() {
        check("/nick ada", Ok(Command::Nick("ada")));
        check("/nick  ada ", Ok(Command::Nick("ada")));
        check("/join rust-lang_2", Ok(Command::Join("rust-lang_2")));
        check("/who", Ok(Command::Who));
        check("/who cares", Ok(Command::Who));
        check("/rooms", Ok(Command::Rooms));
        check("/help", Ok(Command::Help));
        check("/quit", Ok(Command::Quit));
        check("/quit see you", Ok(Command::Quit));
        check("quit", Ok(Command::Quit));
        check(
            "/msg bob hi  there ",
            Ok(Command::Msg {
                to: "bob",
                text: "hi  there ",
            }),
        );
        check(
            "/msg  bob   hi",
            Ok(Command::Msg {
                to: "bob",
                text: "hi",
            }),
        );
    }

    #[test]
    fn unknown_commands_are_refused() {
        check("/", Err(ChatError::UnknownCommand));
        check("/NICK ada", Err(ChatError::UnknownCommand));
        check("/whois", Err(ChatError::UnknownCommand));
        check("/ who", Err(ChatError::UnknownCommand));
    }

    #[test]
    fn bad_names_are_refused() {
        check("/nick", Err(ChatError::BadName));
        check("/nick ", Err(ChatError::BadName));
        check("/nick a b", Err(ChatError::BadName));
        check("/nick émile", Err(ChatError::BadName));
        check("/nick a.b", Err(ChatError::BadName));
        check(
            &format!("/nick {}", "x".repeat(33)),
            Err(ChatError::BadName),
        );
        check(
            &format!("/nick {}", "x".repeat(32)),
            Ok(Command::Nick(&"x".repeat(32))),
        );
        check("/join", Err(ChatError::BadName));
        check("/join #rust", Err(ChatError::BadName));
    }

    #[test]
    fn msg_needs_a_nick_and_text() {
        check("/msg", Err(ChatError::MsgUsage));
        check("/msg bob", Err(ChatError::MsgUsage));
        check("/msg bob   ", Err(ChatError::MsgUsage));
    }

    #[test]
    fn error_texts_are_the_documented_ones() {
        let texts: Vec<String> = [
            ChatError::UnknownCommand,
            ChatError::NickInUse,
            ChatError::NoSuchNick,
            ChatError::BadName,
            ChatError::MsgUsage,
            ChatError::InvalidUtf8,
            ChatError::LineTooLong,
            ChatError::RoomFull,
            ChatError::TooManyRooms,
        ]
        .iter()
        .map(|e| e.to_string())
        .collect();
        assert_eq!(
            texts,
            [
                "unknown command",
                "nick in use",
                "no such nick",
                "bad name",
                "usage: /msg NICK TEXT",
                "invalid UTF-8",
                "line too long",
                "room full",
                "too many rooms"
            ]
        );
    }
}
