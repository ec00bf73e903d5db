//! The lockout guard: no path that adds blocks (the CLI, `import`, the push API, watched
//! feeds, CrowdSec, the gateway's escalations, a snapshot restore) may cut this host off. A
//! prefix that covers one of the host's own addresses or overlaps a management prefix (and, for
//! the gateway, a trusted proxy) is refused unless a person forces it.
//!
//! [`Protected`] is the one check every path calls (through `daemon::guard`); what a path does
//! with a refusal differs: the CLI and the push API refuse the whole change naming the entry,
//! feeds skip the entry and count it, a restore drops it unless a person forced it when it was
//! made.

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
    let overlapping = management
        .iter()
        .filter(|m| overlaps(net, m))
        .map(|m| format!("{net} overlaps the management prefix {m}"));
    covered.chain(overlapping).collect()
}

/// Prefixes overlap exactly when one contains the other.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// What no block may cover without a person forcing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protected {
    host: Vec<IpAddr>,
    management: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
}

impl Protected {
    pub fn new(host: Vec<IpAddr>, management: Vec<IpNet>) -> Self {
        Self {
            host,
            management,
            trusted_proxies: Vec::new(),
        }
    }

    /// This host's addresses as they are now, and the management prefixes.
    pub fn of_this_host(management: &[IpNet]) -> io::Result<Self> {
        Ok(Self::new(host_addresses()?, management.to_vec()))
    }

    /// Also protects the gateway's trusted proxies: blocking one cuts off everyone behind it.
    #[must_use]
    pub fn with_trusted_proxies(mut self, proxies: &[IpNet]) -> Self {
        self.trusted_proxies = proxies.to_vec();
        self
    }

    /// Why blocking `net` could lock the operator out, one sentence each; empty if it cannot.
    pub fn conflicts(&self, net: &IpNet) -> Vec<String> {
        let mut out = lockout_conflicts(net, &self.host, &self.management);
        out.extend(
            self.trusted_proxies
                .iter()
                .filter(|p| overlaps(net, p))
                .map(|p| format!("{net} overlaps the trusted proxy {p}")),
        );
        out
    }

    /// Every net of `nets` that may not be blocked, with why.
    pub fn check<'a>(&self, nets: impl IntoIterator<Item = &'a IpNet>) -> Result<(), Lockout> {
        let refused: Vec<Conflict> = nets
            .into_iter()
            .filter_map(|net| {
                let reasons = self.conflicts(net);
                (!reasons.is_empty()).then_some(Conflict { net: *net, reasons })
            })
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(Lockout { refused })
        }
    }
}

/// One entry the guard refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub net: IpNet,
    /// One sentence per protected address or prefix it touches.
    pub reasons: Vec<String>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reasons.join("; "))
    }
}

/// Entries that would lock this host out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", join(&self.refused))]
pub struct Lockout {
    pub refused: Vec<Conflict>,
}

fn join(conflicts: &[Conflict]) -> String {
    conflicts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
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

    fn guard() -> Protected {
        Protected::new(
            vec![
                addr("198.18.1.1"),
                addr("2001:db8:1:1::1"),
                addr("127.0.0.1"),
            ],
            vec![net("198.19.200.0/24")],
        )
    }

    #[test]
    fn whole_address_space_and_host_prefixes_are_refused_naming_each_entry() {
        let g = guard();
        for bad in [
            "0.0.0.0/0",
            "::/0",
            "198.18.0.0/15",
            "2001:db8::/32",
            "127.0.0.0/8",
        ] {
            let err = g.check(&[net(bad)]).unwrap_err();
            assert_eq!(err.refused.len(), 1, "{bad}");
            assert_eq!(err.refused[0].net, net(bad));
            assert!(err.to_string().starts_with(bad), "{bad}: {err}");
        }
        let err = g.check(&[net("0.0.0.0/0")]).unwrap_err();
        // Two host addresses and the management prefix.
        assert_eq!(err.refused[0].reasons.len(), 3, "{err}");
        assert!(err.to_string().contains("198.18.1.1"), "{err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
        // Inside or around a management prefix.
        assert!(g.check(&[net("198.19.200.9/32")]).is_err());
        assert!(g.check(&[net("198.19.0.0/16")]).is_err());
        // Anything else passes, IPv4-mapped addresses being a different family.
        g.check(&[
            net("198.18.1.2/32"),
            net("198.19.201.0/24"),
            net("2001:db8:1:2::/64"),
            net("::ffff:0:0/96"),
        ])
        .unwrap();
    }

    #[test]
    fn a_batch_mixing_good_entries_names_only_the_bad_ones() {
        let nets = [
            net("198.51.100.0/24"),
            net("::/0"),
            net("203.0.113.7/32"),
            net("198.18.1.1/32"),
        ];
        let err = guard().check(&nets).unwrap_err();
        let refused: Vec<IpNet> = err.refused.iter().map(|c| c.net).collect();
        assert_eq!(refused, [net("::/0"), net("198.18.1.1/32")]);
        let text = err.to_string();
        assert!(!text.contains("198.51.100.0/24"), "{text}");
    }

    #[test]
    fn trusted_proxies_are_protected_when_asked() {
        let g = guard().with_trusted_proxies(&[net("198.51.100.10/32"), net("2001:db8:2::/64")]);
        assert!(guard().check(&[net("198.51.100.10/32")]).is_ok());
        let err = g.check(&[net("198.51.100.10/32")]).unwrap_err();
        assert!(
            err.to_string().contains("trusted proxy 198.51.100.10/32"),
            "{err}"
        );
        // A /64 escalation around one proxy address, and a /128 inside a proxy /64.
        assert!(g.check(&[net("2001:db8:2::/64")]).is_err());
        assert!(g.check(&[net("2001:db8:2::99/128")]).is_err());
        assert!(g.check(&[net("2001:db8:3::/64")]).is_ok());
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
