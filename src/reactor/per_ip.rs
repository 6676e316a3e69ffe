//! Who counts as "one client" when the daemon counts per address.
//!
//! Two rules count clients by address: the handshake throttle (PROTOCOL.md
//! §5.2) and the per-address connection cap (`limits.max_connections_per_ip`,
//! §6). Both must agree on what one client is, or an attacker slips
//! between them, so the rule lives here once.
//!
//! # An address, or a network?
//!
//! An IPv4 host usually has one address, and addresses are scarce enough
//! that counting by address means something. An IPv6 host is normally
//! handed a whole /64 (RFC 4291 §2.5.1: the low 64 bits are the interface
//! identifier, and SLAAC and privacy extensions pick them freely), so one
//! attacker can use 2^64 addresses without asking anyone. Counting IPv6
//! clients by their /64 prefix treats that subnet as the one client it
//! usually is, as fail2ban and most rate limiters do. An IPv4 address
//! written as IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports)
//! is the IPv4 address it carries.
//!
//! The price is that the hosts of one shared /64 count as one client. A
//! network where many users share a /64, or many users share one IPv4
//! address behind NAT, should keep these limits loose.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// The key a client is counted under: its IPv4 address, or its IPv6
/// address with the low 64 bits cleared.
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Open connections per client (by [`address_group`]), for the
/// `limits.max_connections_per_ip` cap. The reactor counts a connection
/// when it admits it and releases it, by token, when it frees it.
///
/// The address is remembered per token rather than asked of the socket
/// again at the end: `getpeername()` fails with `ENOTCONN` once the peer
/// has reset the connection, and a release that could not find its
/// address would leave the client counted forever.
#[derive(Debug, Default)]
pub struct PerIp {
    /// The most connections one client may hold open; 0 = no limit, and
    /// nothing is counted.
    limit: usize,
    /// Open connections per client with at least one: a client with none
    /// has no entry.
    open: HashMap<IpAddr, usize>,
    /// The client each counted connection (by slab token) was counted
    /// under; one entry per open connection from a TCP client.
    counted: HashMap<usize, IpAddr>,
}

impl PerIp {
    /// A counter enforcing `limit` (0 = off).
    pub fn new(limit: usize) -> PerIp {
        PerIp {
            limit,
            ..PerIp::default()
        }
    }

    /// Counts the connection `token` from `ip` and returns true if its
    /// client is under the limit; returns false, counting nothing, if the
    /// client is at the limit. Always true when the cap is off.
    pub fn admit(&mut self, token: usize, ip: IpAddr) -> bool {
        if self.limit == 0 {
            return true;
        }
        let group = address_group(ip);
        let open = self.open.entry(group).or_insert(0);
        if *open >= self.limit {
            return false;
        }
        *open += 1;
        self.counted.insert(token, group);
        true
    }

    /// Uncounts the connection `token`, if [`PerIp::admit`] counted it.
    pub fn release(&mut self, token: usize) {
        let Some(group) = self.counted.remove(&token) else {
            return;
        };
        if let Some(open) = self.open.get_mut(&group) {
            *open -= 1;
            if *open == 0 {
                self.open.remove(&group);
            }
        }
    }

    /// Connections counted as open from `ip`'s client.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open.get(&address_group(ip)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v6(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    // ---- Grouping ----

    #[test]
    fn ipv6_addresses_in_one_slash_64_are_one_group() {
        assert_eq!(
            address_group(v6("2001:db8:1:2:aaaa::1")),
            address_group(v6("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_eq!(
            address_group(v6("2001:db8:1:2:aaaa::1")),
            v6("2001:db8:1:2::")
        );
        assert_ne!(
            address_group(v6("2001:db8:1:2::1")),
            address_group(v6("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn ipv4_addresses_are_their_own_group_even_when_mapped() {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(address_group(a), a);
        assert_ne!(address_group(a), address_group(b));
        assert_eq!(address_group(v6("::ffff:192.0.2.1")), a);
    }

    // ---- Counting ----

    #[test]
    fn admits_up_to_the_limit_per_group_and_again_after_a_release() {
        let mut per_ip = PerIp::new(2);
        let (a, a2) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let other = v6("2001:db8:0:1::1");
        assert!(per_ip.admit(1, a));
        assert!(per_ip.admit(2, a2));
        assert!(!per_ip.admit(3, a), "a third from the same /64");
        assert!(per_ip.admit(3, other), "another /64 is another client");
        assert_eq!(per_ip.open_from(a), 2);
        per_ip.release(2);
        assert!(per_ip.admit(4, a));
        for token in [1, 3, 4] {
            per_ip.release(token);
        }
        assert!(
            per_ip.open.is_empty(),
            "no entry for a client with none open"
        );
        assert!(per_ip.counted.is_empty());
    }

    #[test]
    fn releasing_a_connection_never_counted_changes_nothing() {
        let mut per_ip = PerIp::new(1);
        let a = v6("::1");
        assert!(per_ip.admit(7, a));
        per_ip.release(8);
        per_ip.release(8);
        assert_eq!(per_ip.open_from(a), 1);
        assert!(!per_ip.admit(9, a));
    }

    #[test]
    fn a_limit_of_zero_counts_nothing() {
        let mut per_ip = PerIp::new(0);
        let a = v6("::1");
        for token in 0..1000 {
            assert!(per_ip.admit(token, a));
        }
        assert_eq!(per_ip.open_from(a), 0);
        per_ip.release(0);
    }
}
