//! Experiment 8: Nagle's algorithm, delayed ACKs and `TCP_NODELAY`.
//!
//! Nagle's algorithm (RFC 896) saves the network from floods of tiny
//! packets: while a sent segment is still unacknowledged, TCP holds further
//! small writes back and sends them together once the ACK arrives. The
//! receiver, for its part, may delay its ACK (up to 40 ms on Linux) hoping
//! to piggyback it on a reply. Together they can stall a
//! *write-write-read* exchange: the client writes a header, then a body,
//! then waits for the reply. The header goes out at once; the body waits
//! for the header's ACK; the server waits for the body before replying, so
//! it has nothing to piggyback on and its ACK waits for the delayed-ACK
//! timer. Every request pays that timer.
//!
//! `TCP_NODELAY` turns Nagle off, so the body goes out at once. (Writing the
//! header and body with one call avoids the stall too, and saves a packet.)
//!
//! The figures are measured on this machine's loopback and depend on the
//! kernel (Linux acknowledges quickly at the start of a connection and when
//! it sees interactive traffic), so they are reported as measured, not
//! asserted.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Instant;

use serde::Serialize;

use crate::demo::report::{Finding, Mode, Observation, Outcome, millis};
use crate::demo::sys::{self, SETUP_TIMEOUT};

/// What experiment 8 observed.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// Request/reply rounds made on each connection.
    pub rounds: usize,
    /// Header and body sizes: two separate writes per request.
    pub header_len: usize,
    pub body_len: usize,
    /// With Nagle on (the default): rounds completed with a correct reply.
    pub nagle_rounds_completed: usize,
    /// Each round's time, from the first write to the reply, in ms.
    pub nagle_round_ms: Vec<f64>,
    /// The median of those times.
    pub nagle_median_ms: f64,
    /// With `TCP_NODELAY` set: rounds completed with a correct reply.
    pub nodelay_rounds_completed: usize,
    pub nodelay_round_ms: Vec<f64>,
    pub nodelay_median_ms: f64,
}

/// Enough rounds to get past the quick-ACK phase at the start of a
/// connection and see the steady state; with a 40 ms stall each, under a second.
const ROUNDS: usize = 16;
const BODY: &[u8] = b"a small request body";
const REPLY: &[u8] = b"ok";

pub fn run() -> io::Result<Finding<Facts>> {
    let nagle = measure(false)?;
    let nodelay = measure(true)?;
    let nagle_median = median(&nagle);
    let nodelay_median = median(&nodelay);

    let observations = vec![
        Observation::new(
            format!(
                "{ROUNDS} x [send(4-byte header); send({}-byte body); recv(reply)]",
                BODY.len()
            ),
            Mode::Blocking,
            Outcome::done(format!(
                "median {nagle_median:.3} ms per round (first {:.3} ms, slowest {:.3} ms)",
                nagle.first().copied().unwrap_or(0.0),
                max(&nagle)
            )),
            "Nagle is on, as on every new socket: the body may be held until the header is \
             acknowledged, and the server may delay that ACK because it has no reply yet.",
        ),
        Observation::new(
            format!("setsockopt(TCP_NODELAY, 1); the same {ROUNDS} x [send; send; recv]"),
            Mode::Blocking,
            Outcome::done(format!(
                "median {nodelay_median:.3} ms per round (first {:.3} ms, slowest {:.3} ms)",
                nodelay.first().copied().unwrap_or(0.0),
                max(&nodelay)
            )),
            "With Nagle off each write leaves at once, so the server has the whole request \
             without waiting for any timer.",
        ),
    ];

    let comparison = if nodelay_median > 0.0 {
        format!(
            "here the median round took {:.1} times as long with Nagle",
            nagle_median / nodelay_median
        )
    } else {
        "here the rounds were too fast to compare".to_string()
    };
    Ok(Finding {
        observations,
        summary: format!(
            "In short: small writes that wait for a reply can stall on Nagle plus delayed \
             ACKs; {comparison} ({nagle_median:.3} ms against {nodelay_median:.3} ms, \
             measured on this machine's loopback, so informational). Set TCP_NODELAY for \
             request/response protocols, or better, write each request with one call."
        ),
        facts: Facts {
            rounds: ROUNDS,
            header_len: 4,
            body_len: BODY.len(),
            nagle_rounds_completed: nagle.len(),
            nagle_round_ms: nagle,
            nagle_median_ms: nagle_median,
            nodelay_rounds_completed: nodelay.len(),
            nodelay_round_ms: nodelay,
            nodelay_median_ms: nodelay_median,
        },
    })
}

/// Runs [`ROUNDS`] write-write-read exchanges on a fresh connection, with or
/// without `TCP_NODELAY` on the client, and returns each round's time in ms.
/// A round that fails (a wrong reply, a timeout) ends the measurement, so
/// fewer times than rounds means something went wrong.
fn measure(nodelay: bool) -> io::Result<Vec<f64>> {
    let (mut client, server) = sys::connected_pair()?;
    client.set_nodelay(nodelay)?;
    client.set_read_timeout(Some(SETUP_TIMEOUT))?;
    server.set_read_timeout(Some(SETUP_TIMEOUT))?;

    thread::scope(|scope| {
        let responder = scope.spawn(move || respond(server));
        let mut times = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            if round_trip(&mut client).is_err() {
                break;
            }
            times.push(millis(started.elapsed()));
        }
        // Closing the client ends the responder's loop if a round failed.
        drop(client);
        let _ = responder.join();
        Ok(times)
    })
}

/// One request as two writes (header, then body), then the reply.
fn round_trip(client: &mut TcpStream) -> io::Result<()> {
    let header = u32::try_from(BODY.len()).unwrap_or(u32::MAX).to_be_bytes();
    client.write_all(&header)?;
    client.write_all(BODY)?;
    let mut reply = [0u8; REPLY.len()];
    client.read_exact(&mut reply)?;
    if reply != REPLY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected reply",
        ));
    }
    Ok(())
}

/// The server side: read a whole request (header, then body), reply, repeat.
/// Returns when the client closes or a read times out.
fn respond(mut server: TcpStream) -> io::Result<()> {
    for _ in 0..ROUNDS {
        let mut header = [0u8; 4];
        server.read_exact(&mut header)?;
        let length = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
        if length != BODY.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected length",
            ));
        }
        let mut body = [0u8; BODY.len()];
        server.read_exact(&mut body)?;
        server.write_all(REPLY)?;
    }
    Ok(())
}

fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn max(times: &[f64]) -> f64 {
    times.iter().copied().fold(0.0, f64::max)
}
