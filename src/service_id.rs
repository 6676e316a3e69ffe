//! Which services exist: their names, port offsets, and what each says to
//! a client turned away at a connection limit.
//!
//! This module depends on nothing else of the crate, so that every layer
//! can name a service: the reactor (which counts and limits connections
//! per service), the configuration, the services themselves, and the
//! clients.

use std::fmt;

/// Every service the daemon knows, in the order of PROTOCOL.md §1's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceId {
    Admin,
    Echo,
    Discard,
    Daytime,
    Chargen,
    Files,
    Chat,
    Exec,
}

impl ServiceId {
    pub const ALL: [ServiceId; 8] = [
        ServiceId::Admin,
        ServiceId::Echo,
        ServiceId::Discard,
        ServiceId::Daytime,
        ServiceId::Chargen,
        ServiceId::Files,
        ServiceId::Chat,
        ServiceId::Exec,
    ];

    /// The name used in config keys, the ready file, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ServiceId::Admin => "admin",
            ServiceId::Echo => "echo",
            ServiceId::Discard => "discard",
            ServiceId::Daytime => "daytime",
            ServiceId::Chargen => "chargen",
            ServiceId::Files => "files",
            ServiceId::Chat => "chat",
            ServiceId::Exec => "exec",
        }
    }

    pub fn from_name(name: &str) -> Option<ServiceId> {
        ServiceId::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Port offset from `port_base` (PROTOCOL.md §1).
    pub fn port_offset(self) -> u16 {
        match self {
            ServiceId::Admin => 0,
            ServiceId::Echo => 7,
            ServiceId::Discard => 9,
            ServiceId::Daytime => 13,
            ServiceId::Chargen => 19,
            ServiceId::Files => 21,
            ServiceId::Chat => 194,
            ServiceId::Exec => 512,
        }
    }

    /// Whether the service also answers datagrams on the same port number.
    pub fn has_udp(self) -> bool {
        matches!(
            self,
            ServiceId::Echo | ServiceId::Discard | ServiceId::Daytime
        )
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a service sends to a client turned away by a connection limit,
/// before the daemon closes the connection (PROTOCOL.md §6).
pub fn rejection(service: ServiceId) -> &'static [u8] {
    match service {
        ServiceId::Chat => b"! error: too many connections\n",
        ServiceId::Exec | ServiceId::Files => {
            b"\x00\x00\x00\x3d{\"type\":\"error\",\"code\":\"busy\",\"error\":\"too many connections\"}"
        }
        ServiceId::Admin => {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"
        }
        _ => b"",
    }
}
