//! Datagrams: UDP services answer each datagram on its own, no connection.

use std::io;

use super::{DATAGRAM_BATCH, Reactor, Source};

use super::trace::trace;

impl Reactor {
    pub(super) fn serve_datagrams(&mut self, key: usize) {
        let core = &mut self.core;
        let Some(Source::Datagram(u)) = self.sources.get_mut(key) else {
            return;
        };
        // Replies the kernel refused earlier go first, in order.
        while !u.write_blocked {
            let Some((to, reply)) = u.backlog.front() else {
                break;
            };
            match u.socket.send_to(reply, *to) {
                Ok(n) => {
                    core.metrics.service_mut(u.service).bytes_sent += n as u64;
                    u.backlog_bytes -= reply.len();
                    u.backlog.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.write_blocked = true,
                Err(_) => {
                    // The reply cannot be sent (an ICMP error for an earlier
                    // datagram, say); UDP gives no delivery promise.
                    u.backlog_bytes -= reply.len();
                    u.backlog.pop_front();
                }
            }
        }
        let limit = core.limits[u.service as usize].high_water;
        let mut served = 0;
        while u.read_ready && u.backlog_bytes < limit {
            if served == DATAGRAM_BATCH {
                self.requeue(key);
                return;
            }
            served += 1;
            let (n, from) = match u.socket.recv_from(&mut self.read_buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    u.read_ready = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // An ICMP error queued on the socket; nothing is lost by
                    // going on.
                    log::debug!("{} udp recv: {e}", u.service);
                    continue;
                }
            };
            let counters = core.metrics.service_mut(u.service);
            counters.bytes_received += n as u64;
            counters.messages_received += 1;
            trace!(
                core.trace,
                "#{key} {} udp {from} datagram of {n} bytes", u.service
            );
            core.reply_buf.clear();
            core.turn.callbacks[u.service as usize] += 1;
            let datagram = &self.read_buf[..n];
            if !core
                .shared
                .answer_datagram(u.service, datagram, core.wall, &mut core.reply_buf)
            {
                continue;
            }
            if u.write_blocked {
                u.backlog_bytes += core.reply_buf.len();
                u.backlog.push_back((from, core.reply_buf.clone()));
                continue;
            }
            match u.socket.send_to(&core.reply_buf, from) {
                Ok(n) => core.metrics.service_mut(u.service).bytes_sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    u.write_blocked = true;
                    u.backlog_bytes += core.reply_buf.len();
                    u.backlog.push_back((from, core.reply_buf.clone()));
                }
                Err(e) => log::debug!("{} udp send to {from}: {e}", u.service),
            }
        }
    }
}
