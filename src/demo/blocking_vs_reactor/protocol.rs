//! The tiny protocol the three servers speak, as pure functions.
//!
//! ```text
//! server: ready\n            (greeting, sent as soon as the connection is accepted)
//! client: ping 17\n          (after "thinking" for the configured delay)
//! server: ok ping 17\n       (then the server closes the connection)
//! ```
//!
//! The greeting is what makes a slow client cost a blocking server time:
//! the client starts thinking only once it is served, so a server that
//! serves one client at a time waits out every client's delay in turn.

/// The server's first line.
pub const GREETING: &[u8] = b"ready\n";

/// The longest request line a server accepts, newline included; a client
/// that sends more without a newline is dropped.
pub const MAX_REQUEST: usize = 256;

/// The request client number `client` sends.
pub fn request(client: usize) -> Vec<u8> {
    format!("ping {client}\n").into_bytes()
}

/// The reply to one request line (newline included): the line prefixed with `ok `.
pub fn reply_to(request_line: &[u8]) -> Vec<u8> {
    let mut reply = b"ok ".to_vec();
    reply.extend_from_slice(request_line);
    reply
}

/// The first complete line in `input`, newline included, if there is one.
pub fn complete_line(input: &[u8]) -> Option<&[u8]> {
    input
        .iter()
        .position(|&byte| byte == b'\n')
        .map(|end| &input[..=end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_echoes_the_request_line_after_ok() {
        assert_eq!(reply_to(&request(17)), b"ok ping 17\n");
    }

    #[test]
    fn a_line_is_complete_only_once_its_newline_has_arrived() {
        assert_eq!(complete_line(b"ping 1"), None);
        assert_eq!(complete_line(b"ping 1\nmore"), Some(&b"ping 1\n"[..]));
    }
}
