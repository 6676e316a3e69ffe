//! `--trace`: one line per readiness event and I/O outcome.

use super::connection::Connection;
use super::outbox;
use crate::services::ServiceId;

pub(super) fn trace_write(key: usize, service: ServiceId, f: outbox::Flushed) {
    eprintln!(
        "trace #{key} {service} wrote {} bytes{}",
        f.bytes,
        if f.blocked { ", WouldBlock" } else { "" }
    );
}

pub(super) fn trace_event(key: usize, conn: &Connection, event: &mio::event::Event) {
    eprintln!(
        "trace #{key} {} {}{}{}{}{}",
        conn.service,
        conn.stream.peer(),
        if event.is_readable() { " readable" } else { "" },
        if event.is_writable() { " writable" } else { "" },
        if event.is_read_closed() {
            " read-closed"
        } else {
            ""
        },
        if event.is_error() { " error" } else { "" },
    );
}
