//! The room of `bench chat`: every member, the run's counters, and the one
//! thread's loop that moves the run through its phases, opens members,
//! has the sender say its lines, and reads and checks every line each
//! member receives.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::super::link::{ConnectResult, Link, connect_result, promote};
use super::super::pacing::Pacer;
use super::super::report::Failure;
use super::super::stats::{Interval, Latency};
use super::super::{Outcome, Session};
use super::lines::{ChatLine, classify, lines, read_probe, write_probe};
use super::member::{Member, Voice};
use super::{ChatArgs, ChatFigures};

/// The phases of a chat run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Joining,
    Sending,
    Draining { until: Instant },
    Done,
}

const SENDER: usize = 0;
const MAX_PENDING_CONNECTS: usize = 256;
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);

/// The room: every member, and the run's counters.
pub(super) struct Room {
    /// The daemons to join; member `i` joins `addrs[i % addrs.len()]`.
    addrs: Vec<SocketAddr>,
    size: usize,
    messages: u64,
    window: u64,
    /// Lines per second for the sender, if paced.
    rate: Option<f64>,
    time_limit: Instant,
    drain_timeout: Duration,
    start: Instant,
    stop: Arc<AtomicBool>,
    progress: Sender<Interval>,
    poll: Poll,
    members: Vec<Member>,
    voice: Voice,
    connect_pacer: Pacer,
    next_to_open: usize,
    pending_connects: usize,
    welcomed: u64,
    open: u64,
    phase: Phase,
    join_s: f64,
    /// When the room was complete and the sender began.
    sending_since: Option<Instant>,
    scratch: Vec<u8>,
    latency: Latency,
    interval: Interval,
    deliveries: u64,
    last_delivery: Option<Instant>,
    foreign_lines: u64,
    failures: Vec<Failure>,
}

impl Room {
    pub(super) fn new(
        args: &ChatArgs,
        addrs: Vec<SocketAddr>,
        session: &Session,
        progress: Sender<Interval>,
    ) -> io::Result<Room> {
        Ok(Room {
            addrs,
            size: args.size,
            messages: args.messages,
            window: args.window,
            rate: args.rate,
            time_limit: session.start + args.time_limit,
            drain_timeout: args.drain_timeout,
            start: session.start,
            stop: Arc::clone(&session.stop),
            progress,
            poll: Poll::new()?,
            members: (0..args.members).map(|_| Member::new()).collect(),
            voice: Voice::new(session.start, args.rate),
            connect_pacer: Pacer::new(session.start, Some(args.connect_rate)),
            next_to_open: 0,
            pending_connects: 0,
            welcomed: 0,
            open: 0,
            phase: Phase::Joining,
            join_s: 0.0,
            sending_since: None,
            scratch: vec![0; 64 * 1024],
            latency: Latency::new(),
            interval: Interval::default(),
            deliveries: 0,
            last_delivery: None,
            foreign_lines: 0,
            failures: Vec::new(),
        })
    }

    pub(super) fn run(mut self) -> io::Result<Outcome<ChatFigures>> {
        let mut events = Events::with_capacity(1024);
        let mut next_report = self.start + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            self.advance_phase(now);
            match self.phase {
                Phase::Joining => self.open_members(now),
                Phase::Sending => self.say(now),
                Phase::Draining { .. } => {}
                Phase::Done => break,
            }
            if now >= next_report {
                self.interval.open = self.open;
                let _ = self.progress.send(self.interval.take());
                while next_report <= now {
                    next_report += Duration::from_secs(1);
                }
            }
            let mut wake = next_report.min(self.time_limit);
            match self.phase {
                Phase::Joining if self.can_open_more() => {
                    wake = wake.min(self.connect_pacer.next_due().unwrap_or(now));
                }
                Phase::Sending if self.voice.issued < self.messages => {
                    wake = wake.min(self.voice.pacer.next_due().unwrap_or(now + MAX_POLL_WAIT));
                }
                Phase::Draining { until } => wake = wake.min(until),
                _ => {}
            }
            let timeout = wake.saturating_duration_since(now).min(MAX_POLL_WAIT);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if super::super::interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                self.handle(event.token().0, readable, event.is_writable());
            }
        }
        for member in &mut self.members {
            member.link = Link::Closed;
        }
        let _ = self.progress.send(self.interval.take());
        Ok(self.outcome())
    }

    fn can_open_more(&self) -> bool {
        // Everyone else waits for the sender's welcome, so that the sender
        // sees every other member's join notice.
        let sender_ready = self.next_to_open == 0 || self.members[SENDER].nick.is_some();
        sender_ready
            && self.next_to_open < self.members.len()
            && self.pending_connects < MAX_PENDING_CONNECTS
    }

    fn advance_phase(&mut self, now: Instant) {
        let stopped = self.stop.load(Ordering::Relaxed);
        match self.phase {
            Phase::Joining => {
                if !self.failures.is_empty() {
                    // A member lost while joining: the room can never be
                    // complete, so there is nothing to measure.
                    self.phase = Phase::Done;
                } else if self.room_complete() {
                    self.join_s = now.duration_since(self.start).as_secs_f64();
                    self.sending_since = Some(now);
                    // The sender's schedule starts now, not when joining
                    // began: lines are not due before there is a room.
                    self.voice.pacer = Pacer::new(now, self.rate);
                    self.phase = Phase::Sending;
                } else if now >= self.time_limit || stopped {
                    self.failures.push(Failure::run(format!(
                        "only {} of {} members joined (welcomed and announced to the sender) in time",
                        self.welcomed,
                        self.members.len()
                    )));
                    self.phase = Phase::Done;
                }
            }
            Phase::Sending => {
                let all_said = self.voice.issued == self.messages;
                if all_said || now >= self.time_limit || stopped || self.open == 0 {
                    self.phase = Phase::Draining {
                        until: now + self.drain_timeout,
                    };
                }
            }
            Phase::Draining { until } => {
                let issued = self.voice.issued;
                let all_in = self
                    .members
                    .iter()
                    .all(|m| !m.link.is_open() || m.next_seq == issued);
                if all_in {
                    self.phase = Phase::Done;
                } else if now >= until {
                    for index in 0..self.members.len() {
                        let m = &self.members[index];
                        if m.link.is_open() && m.next_seq < issued {
                            let error = format!(
                                "{} never arrived within {:?} (lost)",
                                lines(m.next_seq, issued - 1),
                                self.drain_timeout
                            );
                            self.fail(index, error);
                        }
                    }
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// Every member welcomed, and the sender has seen each one join.
    fn room_complete(&self) -> bool {
        self.welcomed == self.members.len() as u64
            && self.voice.seen_joining.len() >= self.members.len()
            && self.members.iter().all(|m| {
                m.nick
                    .as_ref()
                    .is_some_and(|n| self.voice.seen_joining.contains(n))
            })
    }

    fn open_members(&mut self, now: Instant) {
        while self.can_open_more() && self.connect_pacer.take(now).is_some() {
            let index = self.next_to_open;
            self.next_to_open += 1;
            let addr = self.addrs[index % self.addrs.len()];
            let connect = TcpStream::connect(addr).and_then(|mut stream| {
                self.poll.registry().register(
                    &mut stream,
                    Token(index),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(stream)
            });
            match connect {
                Ok(stream) => {
                    self.members[index].link = Link::Connecting { stream, since: now };
                    self.pending_connects += 1;
                }
                Err(e) => self.fail(index, super::super::connect_failed(&e)),
            }
        }
    }

    /// The sender issues lines while the window, the pacer and the count
    /// allow, then writes what it can.
    fn say(&mut self, now: Instant) {
        if !self.members[SENDER].link.is_open() {
            return;
        }
        // The slowest member still connected sets the window.
        let slowest = self
            .members
            .iter()
            .filter(|m| m.link.is_open())
            .map(|m| m.next_seq)
            .min()
            .unwrap_or(self.voice.issued);
        while self.voice.issued < self.messages && self.voice.issued - slowest < self.window {
            let Some(due) = self.voice.pacer.take(now) else {
                break;
            };
            let sent_ns = due.saturating_duration_since(self.start).as_nanos() as u64;
            write_probe(
                self.voice.issued,
                sent_ns,
                self.size,
                &mut self.voice.outbox,
            );
            self.voice.issued += 1;
        }
        self.flush_sender();
    }

    fn flush_sender(&mut self) {
        let outbox = &mut self.voice.outbox;
        let Link::Open(stream) = &mut self.members[SENDER].link else {
            return;
        };
        let mut written = 0;
        let error = loop {
            if written == outbox.len() {
                break None;
            }
            match stream.write(&outbox[written..]) {
                Ok(n) => written += n,
                Err(e) if super::super::would_block(&e) => break None,
                Err(e) if super::super::interrupted(&e) => {}
                Err(e) => break Some(e),
            }
        };
        outbox.drain(..written);
        if let Some(e) = error {
            self.fail(SENDER, format!("the sender's write failed: {e}"));
        }
    }

    fn handle(&mut self, index: usize, readable: bool, writable: bool) {
        let Some(member) = self.members.get_mut(index) else {
            return;
        };
        if let Link::Connecting { stream, .. } = &member.link {
            match connect_result(stream) {
                ConnectResult::Pending => return,
                ConnectResult::Failed(e) => {
                    self.fail(index, super::super::connect_failed(&e));
                    return;
                }
                ConnectResult::Connected => {
                    if let Some(stream) = promote(&mut member.link) {
                        let _ = stream.set_nodelay(true);
                    }
                    self.pending_connects -= 1;
                    self.open += 1;
                }
            }
        }
        if readable {
            self.receive(index);
        }
        if writable && index == SENDER {
            self.flush_sender();
        }
    }

    /// Reads what member `index` received and handles each complete line.
    fn receive(&mut self, index: usize) {
        loop {
            let Link::Open(stream) = &mut self.members[index].link else {
                return;
            };
            let result = stream.read(&mut self.scratch);
            let now = Instant::now();
            let n = match result {
                Ok(0) => {
                    self.fail(index, "the server closed the connection".into());
                    return;
                }
                Ok(n) => n,
                Err(e) if super::super::would_block(&e) => return,
                Err(e) if super::super::interrupted(&e) => continue,
                Err(e) => {
                    self.fail(index, format!("read failed: {e}"));
                    return;
                }
            };
            self.interval.bytes += n as u64;
            let mut inbox = std::mem::take(&mut self.members[index].inbox);
            inbox.extend_from_slice(&self.scratch[..n]);
            let mut consumed = 0;
            while let Some(end) = inbox[consumed..].iter().position(|&b| b == b'\n') {
                let line = &inbox[consumed..consumed + end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                consumed += end + 1;
                if let Err(error) = self.on_line(index, line, now) {
                    self.fail(index, error);
                    return;
                }
            }
            inbox.drain(..consumed);
            self.members[index].inbox = inbox;
            if n < self.scratch.len() {
                return; // A short read empties the receive buffer.
            }
        }
    }

    /// Handles one line received by member `index`; an error fails it.
    fn on_line(&mut self, index: usize, line: &[u8], now: Instant) -> Result<(), String> {
        let line = std::str::from_utf8(line).map_err(|_| "received a line that is not UTF-8")?;
        match classify(line) {
            ChatLine::Welcome { nick } => {
                let member = &mut self.members[index];
                if member.nick.is_none() {
                    member.nick = Some(nick.to_string());
                    self.welcomed += 1;
                }
            }
            ChatLine::Joined { nick } => {
                if index == SENDER && self.phase == Phase::Joining {
                    self.voice.seen_joining.insert(nick.to_string());
                }
            }
            ChatLine::Notice | ChatLine::Unknown => {}
            ChatLine::Error(reason) => return Err(format!("the server said `! {reason}`")),
            ChatLine::Said { nick, text } => {
                if self.members[SENDER].nick.as_deref() != Some(nick) {
                    self.foreign_lines += 1;
                    return Ok(());
                }
                let probe = read_probe(text, self.size)
                    .map_err(|e| format!("line after {}: {e}", self.members[index].next_seq))?;
                let expected = self.members[index].next_seq;
                if probe.seq > expected {
                    return Err(format!(
                        "{} missing: line {} came next (lost)",
                        lines(expected, probe.seq - 1),
                        probe.seq
                    ));
                }
                if probe.seq < expected {
                    return Err(format!(
                        "line {} arrived again after line {} (duplicated or reordered)",
                        probe.seq,
                        expected - 1
                    ));
                }
                self.members[index].next_seq += 1;
                let sent = self.start + Duration::from_nanos(probe.sent_ns);
                let latency = now.saturating_duration_since(sent);
                self.latency.record(latency);
                self.interval.latency.record(latency);
                self.interval.completed += 1;
                self.deliveries += 1;
                self.last_delivery = Some(now);
            }
        }
        Ok(())
    }

    fn fail(&mut self, index: usize, error: String) {
        let member = &mut self.members[index];
        match std::mem::replace(&mut member.link, Link::Closed) {
            Link::Open(mut stream) => {
                let _ = self.poll.registry().deregister(&mut stream);
                self.open -= 1;
            }
            Link::Connecting { mut stream, .. } => {
                let _ = self.poll.registry().deregister(&mut stream);
                self.pending_connects -= 1;
            }
            Link::Closed => {}
        }
        self.interval.errors += 1;
        self.failures.push(Failure::on(index as u64, error));
    }

    fn outcome(self) -> Outcome<ChatFigures> {
        let (send_s, elapsed) = match self.sending_since {
            Some(since) => {
                let end = self.last_delivery.unwrap_or(since).max(since);
                (
                    end.duration_since(since).as_secs_f64(),
                    end.duration_since(self.start),
                )
            }
            None => (0.0, Instant::now().duration_since(self.start)),
        };
        let members = self.members.len() as u64;
        let figures = ChatFigures {
            members,
            joined: self.welcomed,
            join_s: self.join_s,
            sender_nick: self.members[SENDER].nick.clone(),
            messages: self.messages,
            size: self.size,
            lines_sent: self.voice.issued,
            deliveries: self.deliveries,
            deliveries_expected: self.voice.issued * members,
            deliveries_per_s: self.deliveries as f64 / send_s.max(1e-9),
            send_s,
            latency: self.latency.summary(),
            foreign_lines: self.foreign_lines,
        };
        Outcome {
            completed: self.deliveries,
            figures,
            elapsed,
            failures: self.failures,
        }
    }
}
