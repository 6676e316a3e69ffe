//! The subscriber: the thread that owns the subscribed connection, turns
//! each message into an event for the loop, counts gaps in each sender's
//! sequence, and reports the end of its subscription to the link thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Instant;

use redis::{Client, Value};

use super::link::{COMMAND_TIMEOUT, Event, Request, SUBSCRIBER_POLL, Stats, Wake, describe};
use super::wire::{self, Body, Gaps};

/// The subscribed connection's thread.
pub(super) struct Subscriber {
    pub(super) client: Client,
    pub(super) channels: Vec<String>,
    pub(super) wake: Wake,
    pub(super) lost: SyncSender<Request>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) stats: Arc<Stats>,
    pub(super) epoch: u64,
}

impl Subscriber {
    pub(super) fn run(self, ready: SyncSender<Result<(), String>>) {
        let mut conn = match self.client.get_connection_with_timeout(COMMAND_TIMEOUT) {
            Ok(conn) => conn,
            Err(e) => {
                let _ = ready.send(Err(describe(&e)));
                return;
            }
        };
        let mut pubsub = conn.as_pubsub();
        let subscribed = pubsub
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .and_then(|()| pubsub.subscribe(&self.channels))
            .and_then(|()| pubsub.set_read_timeout(Some(SUBSCRIBER_POLL)));
        if let Err(e) = subscribed {
            let _ = ready.send(Err(describe(&e)));
            return;
        }
        let _ = ready.send(Ok(()));
        let mut gaps = Gaps::default();
        let mut quiet_since = Instant::now();
        let reason = loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    quiet_since = Instant::now();
                    let envelope = match wire::Envelope::decode(msg.get_payload_bytes()) {
                        Ok(e) => e,
                        Err(e) => {
                            log::warn!(
                                "chat cluster: skipped a message on {}: {e}",
                                msg.get_channel_name()
                            );
                            continue;
                        }
                    };
                    let missed = gaps.observe(&envelope.from, envelope.seq);
                    if missed > 0 {
                        self.stats.dropped.fetch_add(missed, Ordering::Relaxed);
                        log::warn!(
                            "chat cluster: {missed} message(s) from {} lost before #{}",
                            envelope.from,
                            envelope.seq
                        );
                    }
                    if envelope.body == Body::Bye {
                        gaps.forget(&envelope.from);
                    }
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    if !self.wake.send(Event::Received(envelope)) {
                        return;
                    }
                }
                Err(e) if e.is_timeout() => {
                    // A quiet subscription: make sure Redis is still there.
                    if quiet_since.elapsed() >= SUBSCRIBER_POLL * 2 {
                        if let Err(e) = pubsub.ping::<Value>() {
                            break format!("subscription lost: {}", describe(&e));
                        }
                        quiet_since = Instant::now();
                    }
                }
                Err(e) => {
                    break format!(
                        "subscription closed ({}): Redis went away, or dropped this \
                         subscriber over its pubsub output-buffer limit",
                        describe(&e)
                    );
                }
            }
        };
        if !self.stop.load(Ordering::Acquire) {
            let lost = Request::Lost {
                epoch: self.epoch,
                reason,
            };
            // A full queue means the link is busy; it still learns of the
            // end from its own next command failing, or from this report
            // once there is room.
            if let Err(TrySendError::Full(lost)) = self.lost.try_send(lost) {
                let _ = self.lost.send(lost);
            }
        }
    }
}
