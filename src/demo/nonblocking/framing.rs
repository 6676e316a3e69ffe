//! Experiment 6: message boundaries, or why TCP "sticks packets together".
//!
//! TCP carries a stream of bytes. The sender's `send` calls are not
//! recorded anywhere on the wire, so two sends of 5 bytes can reach the
//! receiver as one read of 10, or as reads of 3 and 7. Whatever is queued
//! when `recv` runs comes out together. The fix is to put the boundaries in
//! the bytes: here a 4-byte big-endian length before each message (other
//! protocols use a delimiter such as `\n`). The receiver buffers what it
//! reads and cuts complete messages out of the buffer.
//!
//! UDP is the opposite: each `send` is one datagram and each `recv` returns
//! exactly one, never two and never part of one. But a datagram larger than
//! the buffer given to `recv` is cut to fit and the rest is discarded, not
//! kept for the next call. Linux's `MSG_TRUNC` flag makes `recv` return the
//! datagram's real length so the program can notice.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream, UdpSocket};

use serde::Serialize;

use crate::demo::report::{Finding, Mode, Observation, Outcome, printable};
use crate::demo::sys::{self, Readiness, SETUP_TIMEOUT};

/// What experiment 6 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The messages the TCP sender wrote, one `send` each.
    pub tcp_sends: Vec<String>,
    /// What one `recv` on the receiving side returned.
    pub tcp_first_recv: String,
    /// The length-prefixed version: bytes the first `recv` returned.
    pub framed_first_recv_bytes: usize,
    /// The messages the length-prefix decoder cut out of the received bytes.
    pub framed_messages: Vec<String>,
    /// The datagrams sent over UDP, one `send_to` each.
    pub udp_sends: Vec<String>,
    /// What each of the following `recv` calls returned.
    pub udp_recvs: Vec<String>,
    /// The size of the large datagram sent.
    pub large_datagram_len: usize,
    /// The size of the buffer given to `recv` for it.
    pub recv_buffer_len: usize,
    /// What `recv` with `MSG_TRUNC` returned: the datagram's real length.
    pub truncated_recv_returned: usize,
    /// What the next `recv` returned: the next datagram, not the lost tail.
    pub after_truncation: String,
}

const MESSAGES: [&str; 2] = ["hello", "world"];
/// The buffer for reading the large datagram: smaller than the datagram.
const SMALL_BUFFER: usize = 16;
const LARGE_DATAGRAM: &[u8] =
    b"a datagram longer than the sixteen-byte buffer that recv() is given for it";

pub fn run() -> io::Result<Finding<Facts>> {
    let mut observations = Vec::new();

    // TCP, no framing: two sends, one recv.
    let first_recv = tcp_two_sends_one_recv(MESSAGES.map(str::as_bytes), &mut observations)?;
    let tcp_first_recv = printable(&first_recv);
    observations.push(Observation::new(
        "recv(receiver, 64-byte buffer)",
        Mode::Blocking,
        Outcome::Bytes {
            count: first_recv.len(),
            text: Some(tcp_first_recv.clone()),
        },
        "Both sends were queued by the time the receiver read, and TCP kept no record of \
         where one ended: one recv returned them glued together. On a busy network the \
         split could as well fall in the middle of a word.",
    ));

    // TCP with a length prefix: the same glue, but the boundaries survive.
    let framed: Vec<Vec<u8>> = MESSAGES
        .iter()
        .map(|m| length_prefixed(m.as_bytes()))
        .collect();
    let framed_first = tcp_two_sends_one_recv([&framed[0], &framed[1]], &mut Vec::new())?;
    let (messages, _rest) = split_length_prefixed(&framed_first);
    let framed_messages: Vec<String> = messages.iter().map(|m| printable(m)).collect();
    observations.push(Observation::new(
        "recv(receiver, 64-byte buffer), each message sent as a 4-byte length + bytes",
        Mode::Blocking,
        Outcome::Bytes {
            count: framed_first.len(),
            text: Some(printable(&framed_first)),
        },
        format!(
            "The bytes arrived glued together again, but now each message says how long it \
             is, so the receiver cut them apart: {framed_messages:?}. A real decoder keeps \
             an incomplete tail in its buffer until the rest arrives."
        ),
    ));

    // UDP: each datagram comes out whole, one per recv.
    let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    receiver.set_read_timeout(Some(SETUP_TIMEOUT))?;
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sender.connect(receiver.local_addr()?)?;
    for message in MESSAGES {
        sender.send(message.as_bytes())?;
    }
    let mut udp_recvs = Vec::new();
    for _ in MESSAGES {
        let mut buf = [0u8; 64];
        let got = receiver.recv(&mut buf);
        let outcome = Outcome::received(&got, &buf);
        if let Outcome::Bytes {
            text: Some(text), ..
        } = &outcome
        {
            udp_recvs.push(text.clone());
        }
        observations.push(Observation::new(
            "recv(udp receiver, 64-byte buffer) after two send() of 5 bytes",
            Mode::timeout(SETUP_TIMEOUT),
            outcome,
            "UDP keeps each send as one datagram: a recv returns exactly one, even with \
             room in the buffer for more.",
        ));
    }

    // UDP: a datagram larger than the recv buffer is cut, the tail discarded.
    sender.send(LARGE_DATAGRAM)?;
    sender.send(b"next")?;
    let mut small = [0u8; SMALL_BUFFER];
    let truncated = sys::recv_with_flags(&receiver, &mut small, libc::MSG_TRUNC);
    let truncated_recv_returned = *truncated.as_ref().unwrap_or(&0);
    observations.push(Observation::new(
        format!(
            "recv(udp receiver, {SMALL_BUFFER}-byte buffer, MSG_TRUNC) for a {}-byte datagram",
            LARGE_DATAGRAM.len()
        ),
        Mode::timeout(SETUP_TIMEOUT),
        Outcome::byte_count(&truncated),
        format!(
            "Only {SMALL_BUFFER} bytes fit (\"{}\"); with MSG_TRUNC Linux returns the real \
             length so the program can tell it lost the rest. Without the flag it would \
             return {SMALL_BUFFER} and give no sign.",
            printable(&small[..truncated_recv_returned.min(SMALL_BUFFER)]),
        ),
    ));
    let mut buf = [0u8; 128];
    let next = receiver.recv(&mut buf);
    let next_outcome = Outcome::received(&next, &buf);
    let after_truncation = match &next_outcome {
        Outcome::Bytes {
            text: Some(text), ..
        } => text.clone(),
        _ => String::new(),
    };
    observations.push(Observation::new(
        "recv(udp receiver, 128-byte buffer)",
        Mode::timeout(SETUP_TIMEOUT),
        next_outcome,
        "The next recv returns the next datagram. The tail of the large one is gone: UDP \
         never splits a datagram across reads.",
    ));

    Ok(Finding {
        observations,
        summary: "In short: TCP delivers bytes, not messages, so a protocol over TCP must mark \
                  its own boundaries (a length prefix or a delimiter) and the receiver must \
                  buffer. UDP keeps boundaries but gives no second chance to a datagram that \
                  does not fit the buffer."
            .to_string(),
        facts: Facts {
            tcp_sends: MESSAGES.map(String::from).to_vec(),
            tcp_first_recv,
            framed_first_recv_bytes: framed_first.len(),
            framed_messages,
            udp_sends: MESSAGES.map(String::from).to_vec(),
            udp_recvs,
            large_datagram_len: LARGE_DATAGRAM.len(),
            recv_buffer_len: SMALL_BUFFER,
            truncated_recv_returned,
            after_truncation,
        },
    })
}

/// Sends each of `sends` with its own `send` call, then reads once.
///
/// To stand for a receiver that is busy while the sender writes, the receiver
/// reads only after the sender has shut down its side: TCP delivers in order,
/// so once the FIN is in (`POLLRDHUP`), every byte sent before it is too.
fn tcp_two_sends_one_recv(
    sends: [&[u8]; 2],
    observations: &mut Vec<Observation>,
) -> io::Result<Vec<u8>> {
    let (mut sender, mut receiver): (TcpStream, TcpStream) = sys::connected_pair()?;
    for bytes in sends {
        let sent = sender.write(bytes);
        observations.push(Observation::new(
            format!("send(sender, \"{}\")", printable(bytes)),
            Mode::Blocking,
            Outcome::byte_count(&sent),
            "One send, one call into the kernel's send buffer.",
        ));
        sent?;
    }
    sender.shutdown(Shutdown::Write)?;
    sys::ready_within(&receiver, Readiness::PeerClosed, SETUP_TIMEOUT)?;
    let mut buf = [0u8; 64];
    let n = receiver.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// One message framed as a 4-byte big-endian length followed by its bytes.
pub fn length_prefixed(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut frame = length.to_be_bytes().to_vec();
    frame.extend_from_slice(message);
    frame
}

/// Cuts every complete length-prefixed message out of `bytes`. Returns the
/// messages and the incomplete tail, which a receiver keeps in its buffer
/// until more bytes arrive.
pub fn split_length_prefixed(mut bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut messages = Vec::new();
    while let Some((header, body)) = bytes.split_first_chunk::<4>() {
        let length = usize::try_from(u32::from_be_bytes(*header)).unwrap_or(usize::MAX);
        if body.len() < length {
            break;
        }
        let (message, rest) = body.split_at(length);
        messages.push(message);
        bytes = rest;
    }
    (messages, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoder_cuts_complete_messages_and_keeps_an_incomplete_tail() {
        let mut bytes = length_prefixed(b"hello");
        bytes.extend(length_prefixed(b"world"));
        bytes.extend(&length_prefixed(b"partial")[..6]);
        let (messages, rest) = split_length_prefixed(&bytes);
        assert_eq!(messages, [&b"hello"[..], &b"world"[..]]);
        assert_eq!(rest, &length_prefixed(b"partial")[..6]);
    }
}
