//! The one writer of the kernel maps: settings, list tables, and the kernel's own auto-blocks.
//!
//! List changes (IPv4 tables, IPv6 trie and filter alike) are built into the copy packets are
//! not reading, published by one config write, and followed by an RCU grace period before that
//! copy is touched again, so a packet sees the old lists or the new ones, never a mix.

use super::{KernelError, clock, loader::Kernel, mmap};
use crate::model::{Action, Decision, DecisionRef};
use crate::table::expiry::{self, ExpiryPlan, KernelRule};
use crate::table::{Compiled, TableError, rules::RuleTable, v4, v6};
use api_shield_common::{
    config::ShieldConfig,
    entry,
    maps::{self as names, MAX_ORIGINS, NODE_SLOTS, TBL24_SLOTS, V6_FILTER_WORDS},
    state::{Counter, FAMILY_V4, FAMILY_V6, FIRST_USER_ORIGIN, ORIGIN_KERNEL, RateKey},
    verdict,
};
use aya::maps::lpm_trie::Key;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error)]
pub enum ShieldError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("too many origins: the kernel counts drops for at most {MAX_ORIGINS}")]
    Origins,
    #[error("waiting for in-flight packets: {0}")]
    Grace(std::io::Error),
}

/// What an `apply` wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyStats {
    pub v4_entries: usize,
    pub v6_entries: usize,
    /// Nodes of the IPv4 table in use (see `Capacity::v4_nodes`).
    pub v4_nodes: u32,
    pub v6_trie_keys: usize,
    pub rules: usize,
    /// The expiry grid the rules were compiled on (`table::expiry`); above 0 the rule table
    /// was too small for the finest, and kernel expiries are later than they could be.
    pub expiry_level: u32,
    /// Expiring blocks the kernel holds with no expiry, the rule table being full even at the
    /// coarsest grid: enforced, and removed on time by the daemon, but not if it is down.
    pub unbounded_expiries: usize,
}

/// An auto-block as users see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AutoBlockView {
    pub net: IpNet,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// How late the kernel may drop an expired entry by itself (its rule's expiry being its exact
/// deadline rounded up) for the daemon to leave the tables as they are: the sweep interval, so
/// an entry leaves the kernel no later than a sweep rebuilding the tables would remove it.
pub const KERNEL_EXPIRY_SLACK_NS: u64 = 1_000_000_000;

pub struct Shield {
    pub kernel: Kernel,
    cfg: ShieldConfig,
    rules: RuleTable,
    /// What each IPv6 trie copy holds, so a rebuild writes only the difference.
    v6_tries: [BTreeMap<(u128, u8), u32>; 2],
    origins: BTreeMap<String, u32>,
    last: ApplyStats,
    /// Until this monotonic time, every entry of the live tables that expires is dropped by
    /// the kernel itself within `KERNEL_EXPIRY_SLACK_NS`; from then on one needs a rebuild.
    self_expiring_until_ns: u64,
}

impl Shield {
    /// Takes over the kernel state as it is (fresh and zeroed, or adopted from pins).
    pub fn new(kernel: Kernel) -> Result<Self, ShieldError> {
        // A fresh config map is zeroed; the node count must be right before any apply, or
        // node entries would read as absent.
        let cfg = ShieldConfig {
            v4_nodes: kernel.maps.capacity.v4_nodes,
            ..kernel.maps.read_config()?
        };
        let rules = RuleTable::adopt(
            kernel.maps.capacity.rules,
            kernel
                .maps
                .rules
                .as_slice()
                .iter()
                .enumerate()
                .map(|(i, r)| (i as u32, *r)),
        );
        let mut v6_tries = [BTreeMap::new(), BTreeMap::new()];
        for (copy, trie) in kernel.maps.v6_lists.iter().enumerate() {
            for item in trie.iter() {
                let (key, value) = item.map_err(|e| KernelError::map(names::V6_LISTS[copy], e))?;
                let len = key.prefix_len() as u8;
                v6_tries[copy].insert((u128::from_be_bytes(key.data()), len), value);
            }
        }
        Ok(Self {
            kernel,
            cfg,
            rules,
            v6_tries,
            origins: BTreeMap::new(),
            last: ApplyStats::default(),
            // Adopted tables were compiled by another run: rebuild at the first expiry.
            self_expiring_until_ns: 0,
        })
    }

    pub fn settings(&self) -> &ShieldConfig {
        &self.cfg
    }

    /// Writes run-time settings; `cfg.active_table` is ignored (the shield owns it).
    pub fn set_settings(&mut self, cfg: &ShieldConfig, ports: &[u32]) -> Result<(), ShieldError> {
        // Ports first: a newly scoped port list must be in place before the flag turns it on.
        self.kernel.maps.write_ports(ports)?;
        let active = self.cfg.active_table;
        self.cfg = ShieldConfig {
            active_table: active,
            v4_nodes: self.kernel.maps.capacity.v4_nodes,
            ..*cfg
        };
        self.kernel.maps.write_config(&self.cfg)?;
        Ok(())
    }

    /// Known origins and their counter ids, for snapshots and statistics.
    pub fn origins(&self) -> &BTreeMap<String, u32> {
        &self.origins
    }

    /// Restores origin ids from a snapshot, so per-origin counters keep their meaning.
    pub fn restore_origins(&mut self, origins: &BTreeMap<String, u32>) {
        for (name, id) in origins {
            if (FIRST_USER_ORIGIN..MAX_ORIGINS).contains(id) {
                self.origins.insert(name.clone(), *id);
            }
        }
    }

    pub fn origin_id(&mut self, origin: &str) -> Result<u32, ShieldError> {
        if let Some(id) = self.origins.get(origin) {
            return Ok(*id);
        }
        let used: HashSet<u32> = self.origins.values().copied().collect();
        let id = (FIRST_USER_ORIGIN..MAX_ORIGINS)
            .find(|i| !used.contains(i))
            .ok_or(ShieldError::Origins)?;
        self.origins.insert(origin.to_string(), id);
        Ok(id)
    }

    pub fn last_apply(&self) -> ApplyStats {
        self.last
    }

    /// See `KERNEL_EXPIRY_SLACK_NS`: before this monotonic time, a sweep that only removes
    /// expired entries need not rebuild the tables.
    pub fn self_expiring_until_ns(&self) -> u64 {
        self.self_expiring_until_ns
    }

    /// Replaces the whole list state with `decisions` (expired ones are left out). On error
    /// nothing packets can see has changed.
    pub fn apply(&mut self, decisions: &[Decision]) -> Result<ApplyStats, ShieldError> {
        self.apply_refs(decisions.iter().map(Decision::as_ref))
    }

    /// `apply` over borrowed decisions, as the daemon's store hands them out.
    pub fn apply_refs<'a>(
        &mut self,
        decisions: impl IntoIterator<Item = DecisionRef<'a>>,
    ) -> Result<ApplyStats, ShieldError> {
        let now_ms = clock::now_unix_ms();
        let mut v4s: Vec<Compiled<Ipv4Net>> = Vec::new();
        let mut v6s: Vec<Compiled<Ipv6Net>> = Vec::new();
        let before: HashSet<u32> = self.rules.indices().collect();
        let mut plan = ExpiryPlan::default();
        let mut self_expiring_until_ns = u64::MAX;
        let result = (|| {
            // First pass: what each entry is; expiring blocks wait for their rules, which are
            // interned all together so the grid can be chosen for the whole table.
            let mut pending: Vec<(IpNet, u32, u32, bool)> = Vec::new();
            let mut expiring: Vec<(u32, u64)> = Vec::new();
            for d in decisions.into_iter().filter(|d| !d.is_expired(now_ms)) {
                let origin = self.origin_id(d.origin)?;
                // Allows do not expire in the kernel; the daemon removes them when due.
                let (action, expires) = match d.action {
                    Action::Allow => (entry::ACTION_ALLOW, None),
                    Action::Block => (entry::ACTION_BLOCK, d.expires_at_ms),
                };
                match (d.action, d.expires_at_ms) {
                    (Action::Block, Some(at_ms)) => {
                        expiring.push((origin, clock::mono_deadline(at_ms)));
                    }
                    // The kernel never drops an allow: its expiry needs a rebuild.
                    (Action::Allow, Some(at_ms)) => {
                        self_expiring_until_ns =
                            self_expiring_until_ns.min(clock::mono_deadline(at_ms));
                    }
                    (_, None) => {}
                }
                pending.push((d.net, action, origin, expires.is_some()));
            }
            let (kernel_rules, chosen) =
                expiry::intern_all(&mut self.rules, &expiring, clock::monotonic_ns());
            plan = chosen;
            for (k, &(_, exact)) in kernel_rules.iter().zip(&expiring) {
                let by_itself = matches!(*k, KernelRule::Interned { expires_at_ns, .. }
                    if expires_at_ns.saturating_sub(exact) <= KERNEL_EXPIRY_SLACK_NS);
                if !by_itself {
                    self_expiring_until_ns = self_expiring_until_ns.min(exact);
                }
            }
            let mut kernel_rules = kernel_rules.into_iter();
            for (net, action, origin, expires) in pending {
                let kernel_rule = if expires { kernel_rules.next() } else { None };
                // Permanent entries name their origin directly; only expiring ones need a
                // rule, and one left without (the table is full) is held as permanent: the
                // daemon still removes it on time.
                let (rule, expires_at_ns) = match kernel_rule {
                    Some(KernelRule::Interned {
                        rule,
                        expires_at_ns,
                    }) => (rule, expires_at_ns),
                    Some(KernelRule::Unbounded) | None => (entry::direct_origin(origin), 0),
                };
                match net {
                    IpNet::V4(net) => v4s.push(Compiled {
                        net,
                        action,
                        rule,
                        expires_at_ns,
                    }),
                    IpNet::V6(net) => v6s.push(Compiled {
                        net,
                        action,
                        rule,
                        expires_at_ns,
                    }),
                }
            }
            self.publish(&v4s, &v6s)
        })();
        if result.is_err() {
            // Rules interned for a refused change are not referenced by anything live.
            let keep: HashSet<u32> = before;
            self.rules.retain(&keep);
        }
        let stats = ApplyStats {
            expiry_level: plan.level,
            unbounded_expiries: plan.unbounded,
            ..result?
        };
        self.last = stats;
        self.self_expiring_until_ns = self_expiring_until_ns;
        Ok(stats)
    }

    fn publish(
        &mut self,
        v4s: &[Compiled<Ipv4Net>],
        v6s: &[Compiled<Ipv6Net>],
    ) -> Result<ApplyStats, ShieldError> {
        let trie = v6::trie_values(v6s);
        let cap = self.kernel.maps.capacity;
        if trie.len() > cap.v6_entries as usize {
            return Err(TableError::V6EntriesExhausted {
                needed: trie.len(),
                limit: cap.v6_entries,
            }
            .into());
        }
        let maps = &mut self.kernel.maps;
        // Rules are written before any table names them; indices in use keep their content.
        let rules = maps.rules.as_mut_slice();
        for (index, rule) in self.rules.rules() {
            rules[index as usize] = rule;
        }

        // Everything is written into the copy packets are not reading, then published by one
        // config write: a packet sees the old lists or the new ones, for both families.
        let inactive = 1 - (self.cfg.active_table & 1);
        let copy = inactive as usize;
        let slots24 = TBL24_SLOTS as usize;
        let node_slots = cap.v4_nodes as usize * NODE_SLOTS as usize;
        let t24 = &mut maps.tbl24.as_mut_slice()[copy * slots24..][..slots24];
        // The whole copy: `paint` writes only the nodes it uses.
        let nodes = &mut maps.tbl8.as_mut_slice()[copy * node_slots..][..node_slots];
        let v4_nodes = v4::paint(v4s, t24, nodes)?;

        let words = V6_FILTER_WORDS as usize;
        let filter = v6::filter(v6s);
        maps.v6_filter.as_mut_slice()[copy * words..][..words].copy_from_slice(&filter);
        let held = &mut self.v6_tries[copy];
        let trie_map = &mut maps.v6_lists[copy];
        for (&(addr, len), &value) in &trie {
            if held.get(&(addr, len)) != Some(&value) {
                let key = Key::new(u32::from(len), addr.to_be_bytes());
                trie_map
                    .insert(&key, value, 0)
                    .map_err(|e| KernelError::map(names::V6_LISTS[copy], e))?;
                held.insert((addr, len), value);
            }
        }
        let stale: Vec<(u128, u8)> = held
            .keys()
            .filter(|k| !trie.contains_key(k))
            .copied()
            .collect();
        for (addr, len) in stale {
            let key = Key::new(u32::from(len), addr.to_be_bytes());
            trie_map
                .remove(&key)
                .map_err(|e| KernelError::map(names::V6_LISTS[copy], e))?;
            held.remove(&(addr, len));
        }

        self.cfg.active_table = inactive;
        maps.write_config(&self.cfg)?;
        // The copy just retired may still be read by packets in flight; the next rebuild
        // writes into it, so wait until none can be.
        mmap::wait_for_readers().map_err(ShieldError::Grace)?;

        let used: HashSet<u32> = v4s
            .iter()
            .map(|c| c.rule)
            .chain(v6s.iter().map(|c| c.rule))
            .filter(|r| entry::as_direct_origin(*r).is_none())
            .collect();
        self.rules.retain(&used);
        Ok(ApplyStats {
            v4_entries: v4s.len(),
            v6_entries: v6s.len(),
            v4_nodes,
            v6_trie_keys: trie.len(),
            rules: self.rules.len(),
            ..ApplyStats::default()
        })
    }

    pub fn counters(&self) -> Result<Vec<Counter>, ShieldError> {
        Ok(self.kernel.maps.counters()?)
    }

    /// The counters as users see them: the kernel skips the `block_list` detail on the
    /// enforcing hot path (see `verdict::BLOCK_LIST`), so it is completed here from
    /// `blocklisted - block_auto`. Exact across mode switches, since each mode counts one side.
    pub fn reported_counters(&self) -> Result<Vec<Counter>, ShieldError> {
        let mut c = self.counters()?;
        let (list, blocked, auto) = (
            verdict::BLOCK_LIST as usize,
            verdict::BLOCKLISTED as usize,
            verdict::BLOCK_AUTO as usize,
        );
        c[list].packets += c[blocked].packets.saturating_sub(c[auto].packets);
        c[list].bytes += c[blocked].bytes.saturating_sub(c[auto].bytes);
        Ok(c)
    }

    pub fn origin_counters(&self) -> Result<Vec<Counter>, ShieldError> {
        Ok(self.kernel.maps.origin_counters()?)
    }

    /// The kernel's own blocks that have not expired.
    pub fn auto_blocks(&self) -> Vec<AutoBlockView> {
        let now = clock::monotonic_ns();
        self.kernel
            .maps
            .auto_blocks()
            .into_iter()
            .filter(|(_, b)| b.expires_at_ns > now)
            .filter_map(|(key, b)| {
                Some(AutoBlockView {
                    net: self.key_net(&key)?,
                    created_at_ms: clock::wall_ms(b.created_ns),
                    expires_at_ms: clock::wall_ms(b.expires_at_ns),
                })
            })
            .collect()
    }

    /// Removes the auto-block whose source prefix is exactly `net`. Returns whether one was.
    pub fn remove_auto_block(&mut self, net: &IpNet) -> bool {
        let Some(key) = self.net_key(net) else {
            return false;
        };
        self.kernel.maps.auto_blocks.remove(&key).is_ok()
    }

    /// Drops expired entries of the kernel's auto-block map, so it never fills with dead ones.
    pub fn sweep_auto_blocks(&mut self) -> usize {
        let now = clock::monotonic_ns();
        let dead: Vec<RateKey> = self
            .kernel
            .maps
            .auto_blocks()
            .into_iter()
            .filter(|(_, b)| b.expires_at_ns <= now)
            .map(|(k, _)| k)
            .collect();
        dead.iter()
            .filter(|k| self.kernel.maps.auto_blocks.remove(k).is_ok())
            .count()
    }

    /// The source prefix a rate key stands for.
    pub fn key_net(&self, key: &RateKey) -> Option<IpNet> {
        match key.family {
            FAMILY_V4 => Ipv4Net::new(Ipv4Addr::from(key.addr[0]), self.cfg.v4_rate_prefix as u8)
                .ok()
                .map(IpNet::V4),
            FAMILY_V6 => {
                let bits = key
                    .addr
                    .iter()
                    .fold(0u128, |acc, w| (acc << 32) | u128::from(*w));
                Ipv6Net::new(Ipv6Addr::from(bits), self.cfg.v6_rate_prefix as u8)
                    .ok()
                    .map(IpNet::V6)
            }
            _ => None,
        }
    }

    fn net_key(&self, net: &IpNet) -> Option<RateKey> {
        match net {
            IpNet::V4(n) if u32::from(n.prefix_len()) == self.cfg.v4_rate_prefix => Some(RateKey {
                family: FAMILY_V4,
                addr: [u32::from(n.network()), 0, 0, 0],
            }),
            IpNet::V6(n) if u32::from(n.prefix_len()) == self.cfg.v6_rate_prefix => {
                let b = u128::from(n.network());
                Some(RateKey {
                    family: FAMILY_V6,
                    addr: [
                        (b >> 96) as u32,
                        (b >> 64) as u32,
                        (b >> 32) as u32,
                        b as u32,
                    ],
                })
            }
            _ => None,
        }
    }

    /// The rate key of a single address, for matching CLI input against auto-blocks.
    pub fn address_net(&self, addr: std::net::IpAddr) -> IpNet {
        match addr {
            std::net::IpAddr::V4(a) => IpNet::V4(
                Ipv4Net::new(a, self.cfg.v4_rate_prefix as u8)
                    .map(|n| n.trunc())
                    .unwrap_or_else(|_| Ipv4Net::from(a)),
            ),
            std::net::IpAddr::V6(a) => IpNet::V6(
                Ipv6Net::new(a, self.cfg.v6_rate_prefix as u8)
                    .map(|n| n.trunc())
                    .unwrap_or_else(|_| Ipv6Net::from(a)),
            ),
        }
    }

    /// The origin id used for kernel auto-blocks, for statistics.
    pub const fn kernel_origin() -> u32 {
        ORIGIN_KERNEL
    }
}
