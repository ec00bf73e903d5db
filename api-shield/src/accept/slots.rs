//! A listener's connection slots: at most `max` connections at once, and at most
//! `per_source` of them from one source (an IPv4 address, an IPv6 prefix of `v6_prefix`
//! bits; `::ffff:a.b.c.d` counts as `a.b.c.d`), so one client cannot hold every slot.
//! Sources in `exempt` (trusted proxies and load balancers, which carry many clients) are held
//! only to the total. A listener whose slots are at least [`SCARCE_PERCENT`] in use says so
//! through [`Slots::scarce`], so that its connections can close idle keep-alives early.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

/// Slots in use from which the listener counts as short of them.
pub const SCARCE_PERCENT: usize = 80;
const PERCENT: usize = 100;

/// Why a new connection was closed at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot of the listener is taken.
    Full,
    /// Its source holds `per_source` connections already.
    PerSource,
}

/// Where refusals are counted (handles on metric series; fresh ones count for nobody).
#[derive(Clone, Debug, Default)]
pub struct RefusalCounters {
    pub full: Counter,
    pub per_source: Counter,
}

/// How a listener's slots are shared.
#[derive(Clone, Debug)]
pub struct SlotLimits {
    pub max: usize,
    pub per_source: usize,
    /// IPv6 sources are grouped by this prefix length.
    pub v6_prefix: u8,
    /// Peers held only to `max`.
    pub exempt: Vec<IpNet>,
}

impl SlotLimits {
    /// `max` slots and no per-source cap.
    pub fn total(max: usize) -> Self {
        Self {
            max,
            per_source: max,
            v6_prefix: 64,
            exempt: Vec::new(),
        }
    }
}

/// The slots of one listener, shared by all its sockets.
pub struct Slots {
    limits: SlotLimits,
    in_use: AtomicUsize,
    sources: Mutex<HashMap<IpAddr, usize>>,
    scarce: watch::Sender<bool>,
    refused: RefusalCounters,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("limits", &self.limits)
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

/// A connection's slot; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    /// The source it counts against (`None`: an exempt peer).
    source: Option<IpAddr>,
}

impl Slots {
    pub fn new(limits: SlotLimits, refused: RefusalCounters) -> Arc<Self> {
        Arc::new(Self {
            limits,
            in_use: AtomicUsize::new(0),
            sources: Mutex::default(),
            scarce: watch::channel(false).0,
            refused,
        })
    }

    /// Connections held now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Turns true while at least [`SCARCE_PERCENT`] of the slots are in use.
    pub fn scarce(&self) -> watch::Receiver<bool> {
        self.scarce.subscribe()
    }

    /// The slot for a connection from `peer`, or why there is none (counted).
    pub fn acquire(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let peer = canonical(peer);
        let source = (!self.limits.exempt.iter().any(|n| n.contains(&peer)))
            .then(|| group(peer, self.limits.v6_prefix));
        // One lock for both counts, so two sockets of the listener cannot both take the last
        // slot of a source or of the listener.
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if self.in_use.load(Ordering::Relaxed) >= self.limits.max {
            self.refused.full.inc();
            return Err(Refusal::Full);
        }
        if let Some(source) = source {
            let held = sources.entry(source).or_insert(0);
            if *held >= self.limits.per_source {
                self.refused.per_source.inc();
                return Err(Refusal::PerSource);
            }
            *held += 1;
        }
        let now = self.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        drop(sources);
        self.update_scarcity(now);
        Ok(Slot {
            slots: Arc::clone(self),
            source,
        })
    }

    fn release(&self, source: Option<IpAddr>) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = source
            && let Some(held) = sources.get_mut(&source)
        {
            *held -= 1;
            if *held == 0 {
                sources.remove(&source);
            }
        }
        let now = self.in_use.fetch_sub(1, Ordering::Relaxed) - 1;
        drop(sources);
        self.update_scarcity(now);
    }

    fn update_scarcity(&self, in_use: usize) {
        let scarce = in_use * PERCENT >= self.limits.max * SCARCE_PERCENT;
        self.scarce.send_if_modified(|s| {
            let changed = *s != scarce;
            *s = scarce;
            changed
        });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.source);
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The source `ip` counts as: itself for IPv4, its `/v6_prefix` for IPv6.
fn group(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize, per_source: usize) -> Arc<Slots> {
        Slots::new(
            SlotLimits {
                max,
                per_source,
                v6_prefix: 64,
                exempt: vec!["198.18.9.0/24".parse().unwrap()],
            },
            RefusalCounters::default(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_is_held_to_its_share_and_others_still_get_slots() {
        let s = slots(10, 2);
        let a = [s.acquire(ip("198.18.0.1")), s.acquire(ip("198.18.0.1"))];
        assert!(a.iter().all(Result::is_ok));
        assert_eq!(s.acquire(ip("198.18.0.1")).unwrap_err(), Refusal::PerSource);
        // The same address written as IPv4-mapped IPv6 is the same source.
        assert_eq!(
            s.acquire(ip("::ffff:198.18.0.1")).unwrap_err(),
            Refusal::PerSource
        );
        let b = s.acquire(ip("198.18.0.2")).unwrap();
        assert_eq!(s.in_use(), 3);
        drop(a);
        assert!(
            s.acquire(ip("198.18.0.1")).is_ok(),
            "slots come back on drop"
        );
        drop(b);
        assert_eq!(s.in_use(), 0);
        assert_eq!(s.refused.per_source.get(), 2);
    }

    #[test]
    fn ipv6_sources_share_their_64_and_exempt_peers_only_the_total() {
        let s = slots(5, 1);
        let _a = s.acquire(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            s.acquire(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refusal::PerSource
        );
        let _b = s.acquire(ip("2001:db8:1:3::1")).unwrap();
        let proxy: Vec<_> = (0..3)
            .map(|_| s.acquire(ip("198.18.9.7")).unwrap())
            .collect();
        assert_eq!(s.acquire(ip("198.18.9.7")).unwrap_err(), Refusal::Full);
        assert_eq!(s.refused.full.get(), 1);
        drop(proxy);
    }

    #[test]
    fn scarcity_turns_on_at_80_percent_and_off_below() {
        let s = slots(10, 10);
        let scarce = s.scarce();
        let mut held: Vec<Slot> = (0..7)
            .map(|i| s.acquire(IpAddr::from([198, 18, 0, i])).unwrap())
            .collect();
        assert!(!*scarce.borrow());
        held.push(s.acquire(ip("198.18.0.100")).unwrap());
        assert!(*scarce.borrow(), "8 of 10");
        held.pop();
        assert!(!*scarce.borrow());
    }
}
