//! Taking the nick asked for with `--nick`: send `/nick NAME`, then read
//! up to the daemon's answer, and no further (see the module documentation
//! of `client::chat` for why a refusal ends the client).

use std::io::Write;

use super::MAX_SHOWN_LINE;
use crate::client::{ClientError, Deadline, Stream};

/// What came back while taking the nick.
#[derive(Debug, Default)]
pub(super) struct NickAnswer {
    /// Every byte received up to and including the answer, to be shown
    /// as if the client had been copying all along.
    pub(super) received: Vec<u8>,
    /// The daemon's error line when the nick was refused.
    pub(super) refusal: Option<String>,
}

/// Sends `/nick NICK` and reads lines until the daemon answers it. The
/// reads are one byte at a time, so nothing after the answer is consumed:
/// the modes that follow read the rest of the stream themselves.
pub(super) fn claim_nick(
    stream: &mut Stream,
    nick: &str,
    deadline: Deadline,
) -> Result<NickAnswer, ClientError> {
    stream
        .write_all(format!("/nick {nick}\n").as_bytes())
        .map_err(|source| ClientError::io("sending the nick", source))?;
    let awaiting = "the answer to /nick";
    let mut answer = NickAnswer::default();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read_by(&mut byte, deadline, awaiting)? == 0 {
            return Err(ClientError::Closed {
                awaiting: awaiting.to_string(),
            });
        }
        answer.received.push(byte[0]);
        if byte[0] != b'\n' {
            line.push(byte[0]);
            if line.len() > MAX_SHOWN_LINE {
                line.clear();
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_string();
        line.clear();
        match nick_reply(&text, nick) {
            Some(Ok(())) => return Ok(answer),
            Some(Err(refusal)) => {
                answer.refusal = Some(refusal);
                return Ok(answer);
            }
            None => {}
        }
    }
}

/// Whether `line` answers `/nick NICK`: `* <anyone> is now NICK` grants it
/// (only the renamed member's room hears that, and NICK is unique, so it is
/// ours), and any `! error:` line refuses it (the daemon answers commands
/// in order, and `/nick` is the first one sent). Other lines (the welcome,
/// join notices, what others say) are not the answer.
fn nick_reply(line: &str, nick: &str) -> Option<Result<(), String>> {
    if line.starts_with("! error:") {
        return Some(Err(line.to_string()));
    }
    let granted = line.starts_with("* ") && line.ends_with(&format!(" is now {nick}"));
    granted.then_some(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nick_answer_is_the_rename_or_an_error_and_nothing_else() {
        assert_eq!(nick_reply("* guest3 is now ada", "ada"), Some(Ok(())));
        assert_eq!(
            nick_reply("! error: nick in use", "ada"),
            Some(Err("! error: nick in use".to_string()))
        );
        for other in [
            "* welcome guest3; room lobby; 2 online; /help for commands",
            "* guest3 joined lobby",
            "* guest3 is now adam",
            "<2026-01-01 00:00:00> bob: I am now ada",
        ] {
            assert_eq!(nick_reply(other, "ada"), None, "{other}");
        }
    }
}
