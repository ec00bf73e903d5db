//! What the daemon reports about the shield: the `status` and `stats` answers and the metrics
//! snapshot, all made of the same readings (map fills, kernel counters), taken under the state
//! lock by the caller.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use api_shield_common::state::{Counter, ORIGIN_KERNEL};
use api_shield_common::verdict;

use super::link_watch::LinkState;
use super::ops::{OpError, State};
use crate::config::Mode;
use crate::control::{CounterBody, LimitsBody, MapBody, StatsBody, StatusBody};
use crate::metrics::{MapFill, ShieldSnapshot};
use crate::model::{Action, ORIGIN_CONFIG, ORIGIN_KERNEL_NAME};
use crate::table::expiry::ExpiryPlan;

/// The kernel's counters: per verdict and detail slot, and drops per origin name.
struct Traffic {
    /// Indexed like `verdict::NAMES`.
    counters: Vec<Counter>,
    origin_drops: BTreeMap<String, Counter>,
}

/// The map in `MapFill` terms whose extra fields `status` reports.
const RULES_MAP: &str = "rules";

impl State {
    fn traffic(&self) -> Result<Traffic, OpError> {
        let shield = &self.shield;
        let internal = |e: crate::kernel::shield::ShieldError| OpError::Internal(e.to_string());
        let counters = shield.reported_counters().map_err(internal)?;
        let by_id = shield.origin_counters().map_err(internal)?;
        let origin_drops = shield
            .origins()
            .iter()
            .map(|(name, id)| (name.as_str(), *id))
            .chain([(ORIGIN_KERNEL_NAME, ORIGIN_KERNEL)])
            .filter_map(|(name, id)| Some((name.to_owned(), *by_id.get(id as usize)?)))
            .collect();
        Ok(Traffic {
            counters,
            origin_drops,
        })
    }

    /// Fill of every kernel map, and how the rule table holds the expiries.
    fn map_fills(&self) -> (Vec<MapFill>, ExpiryPlan) {
        let cap = self.shield.kernel.maps.capacity;
        let last = self.shield.last_apply();
        let auto_blocks = self.shield.kernel.maps.auto_blocks().len() as u64;
        let fill = |map, used: Option<u64>, capacity: u32| MapFill {
            map,
            used,
            capacity: u64::from(capacity),
        };
        let maps = vec![
            fill("v4_nodes", Some(u64::from(last.v4_nodes)), cap.v4_nodes),
            fill(RULES_MAP, Some(last.rules as u64), cap.rules),
            fill("v6_entries", Some(last.v6_trie_keys as u64), cap.v6_entries),
            fill("auto_blocks", Some(auto_blocks), cap.auto_blocks),
            fill("sketch_width", None, cap.sketch_width),
            fill("offenders", None, cap.offenders),
        ];
        let rules = ExpiryPlan {
            level: last.expiry_level,
            unbounded: last.unbounded_expiries,
        };
        (maps, rules)
    }

    /// Everything a metrics scrape exports.
    pub fn shield_snapshot(&self) -> Result<ShieldSnapshot, OpError> {
        let Traffic {
            counters,
            origin_drops,
        } = self.traffic()?;
        let (maps, rules) = self.map_fills();
        let attachment = self.shield.kernel.attachment.as_ref();
        let start_time = SystemTime::now()
            .checked_sub(self.started.elapsed())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        Ok(ShieldSnapshot {
            attached: LinkState::read(attachment).attached(),
            attachment: attachment.map(|a| (a.iface.clone(), a.xdp_mode.clone())),
            monitor: self.config.mode == Mode::Monitor,
            start_time,
            counters,
            origin_drops,
            origin_entries: self.origin_entries(),
            maps,
            rules,
            feeds: self
                .feeds
                .iter()
                .map(|(name, health)| {
                    let health = health
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    (name.clone(), health)
                })
                .collect(),
        })
    }

    /// Entries per `(origin, action)`, the kernel's auto-blocks and the config's allowlist
    /// included.
    fn origin_entries(&self) -> BTreeMap<(String, Action), u64> {
        let mut entries = BTreeMap::new();
        for (name, list) in self.store.origins() {
            for (action, _) in list.entries.keys() {
                *entries.entry((name.to_owned(), *action)).or_insert(0) += 1;
            }
        }
        // A feed that has loaded nothing yet is still a list, of no entries.
        for name in self.feeds.keys() {
            entries.entry((name.clone(), Action::Block)).or_insert(0);
        }
        let auto_blocks = self.shield.kernel.maps.auto_blocks().len() as u64;
        entries.insert((ORIGIN_KERNEL_NAME.to_owned(), Action::Block), auto_blocks);
        entries.insert(
            (ORIGIN_CONFIG.to_owned(), Action::Allow),
            self.config.management_allow.len() as u64,
        );
        entries
    }

    /// The answer to `stats`.
    pub fn stats(&self) -> Result<StatsBody, OpError> {
        let Traffic {
            counters,
            origin_drops,
        } = self.traffic()?;
        let body = |c: &Counter| CounterBody {
            packets: c.packets,
            bytes: c.bytes,
        };
        let named = |slots: std::ops::Range<u32>| {
            slots
                .filter_map(|i| {
                    let c = counters.get(i as usize)?;
                    Some((verdict::NAMES[i as usize].to_string(), body(c)))
                })
                .collect()
        };
        Ok(StatsBody {
            verdicts: named(0..verdict::VERDICTS),
            details: named(verdict::VERDICTS..verdict::SLOTS),
            origins: origin_drops
                .iter()
                .map(|(n, c)| (n.clone(), body(c)))
                .collect(),
        })
    }

    /// The answer to `status`.
    pub fn status(&self) -> StatusBody {
        let cfg = self.shield.settings();
        let attachment = self.shield.kernel.attachment.as_ref();
        // Asked of the kernel at each call: a detach from outside shows at once.
        let link = LinkState::read(attachment);
        let (fills, rules) = self.map_fills();
        let maps = fills
            .into_iter()
            .map(|f| {
                let of_rules = f.map == RULES_MAP;
                let body = MapBody {
                    used: f.used,
                    capacity: f.capacity,
                    expiry_level: of_rules.then_some(rules.level),
                    unbounded_expiries: of_rules.then_some(rules.unbounded as u64),
                };
                (f.map.to_owned(), body)
            })
            .collect();
        StatusBody {
            attached: link.attached(),
            attached_detail: link.detail().map(str::to_owned),
            iface: attachment.map(|a| a.iface.clone()),
            ifindex: attachment.map(|a| a.ifindex),
            xdp_mode: attachment.map(|a| a.xdp_mode.clone()),
            program_id: attachment.map(|a| a.program_id),
            adopted: attachment.map(|a| a.adopted),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            mode: self.config.mode,
            decisions: self.store.len(),
            lists: self.store.origins().count(),
            capacity_differs_from_config: self.shield.kernel.maps.capacity
                != self.requested_capacity,
            warnings: self.warnings(),
            maps,
            limits: LimitsBody {
                packets_per_second: cfg.pkt.rate_per_sec,
                syn_per_second: cfg.syn.rate_per_sec,
                autoblock_strikes: cfg.autoblock_strikes,
            },
        }
    }

    /// What the operator must know about: limits that cost enforcement quality.
    fn warnings(&self) -> Vec<String> {
        let last = self.shield.last_apply();
        let mut out = Vec::new();
        if last.unbounded_expiries > 0 {
            out.push(format!(
                "the rule table is full: {} expiring blocks are held in the kernel without \
                 expiry (removed on time by the daemon, but not while it is down); raise rules",
                last.unbounded_expiries
            ));
        } else if last.expiry_level > 0 {
            out.push(format!(
                "the rule table is too small for the finest expiry grid (level {}): kernel \
                 expiries are later than needed should the daemon stop; raise rules",
                last.expiry_level
            ));
        }
        out
    }
}
