//! Guarding against blocks that would cut this host off: a prefix that covers one of the
//! host's own addresses, or a management prefix, is refused unless forced.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use nix::sys::socket::SockaddrStorage;

/// Every address of every interface in this network namespace, sorted, without duplicates.
pub fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let mut addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()?
        .filter_map(|ifa| ifa.address.as_ref().and_then(ip_of))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    Ok(addrs)
}

fn ip_of(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

/// Why blocking `net` could lock the operator out: one sentence per conflict, empty if none.
pub fn lockout_conflicts(net: &IpNet, host: &[IpAddr], management: &[IpNet]) -> Vec<String> {
    let covered = host
        .iter()
        .filter(|addr| net.contains(*addr))
        .map(|addr| format!("{net} covers {addr}, an address of this host"));
    // Prefixes overlap exactly when one contains the other.
    let overlapping = management
        .iter()
        .filter(|m| net.contains(*m) || m.contains(net))
        .map(|m| format!("{net} overlaps the management prefix {m}"));
    covered.chain(overlapping).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn host_addresses_are_listed_once() {
        let addrs = host_addresses().unwrap();
        assert!(addrs.windows(2).all(|w| w[0] < w[1]), "{addrs:?}");
    }

    #[test]
    fn covering_a_host_address_conflicts() {
        let host = [addr("192.0.2.10"), addr("2001:db8::10"), addr("127.0.0.1")];
        assert_eq!(
            lockout_conflicts(&net("192.0.2.0/24"), &host, &[]),
            ["192.0.2.0/24 covers 192.0.2.10, an address of this host"]
        );
        assert_eq!(
            lockout_conflicts(&net("2001:db8::10/128"), &host, &[]),
            ["2001:db8::10/128 covers 2001:db8::10, an address of this host"]
        );
        assert_eq!(lockout_conflicts(&net("0.0.0.0/0"), &host, &[]).len(), 2);
        assert!(lockout_conflicts(&net("198.51.100.0/24"), &host, &[]).is_empty());
        assert!(lockout_conflicts(&net("2001:db8:1::/48"), &host, &[]).is_empty());
    }

    #[test]
    fn overlapping_a_management_prefix_conflicts() {
        let management = [net("203.0.113.0/24"), net("2001:db8:ffff::/48")];
        // The block is inside the management prefix.
        assert_eq!(
            lockout_conflicts(&net("203.0.113.7/32"), &[], &management),
            ["203.0.113.7/32 overlaps the management prefix 203.0.113.0/24"]
        );
        // The block contains the management prefix.
        assert_eq!(
            lockout_conflicts(&net("2001:db8::/32"), &[], &management),
            ["2001:db8::/32 overlaps the management prefix 2001:db8:ffff::/48"]
        );
        assert!(lockout_conflicts(&net("203.0.112.0/24"), &[], &management).is_empty());
    }

    #[test]
    fn every_conflict_is_listed() {
        let conflicts = lockout_conflicts(
            &net("10.0.0.0/8"),
            &[addr("10.1.1.1"), addr("10.2.2.2")],
            &[net("10.9.0.0/16")],
        );
        assert_eq!(conflicts.len(), 3, "{conflicts:?}");
    }
}
