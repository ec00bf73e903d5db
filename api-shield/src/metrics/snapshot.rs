//! What one scrape reports, read from the daemon's live state in one short lock.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api_shield_common::state::{Counter, ORIGIN_KERNEL};
use api_shield_common::verdict;

use crate::config::Mode;
use crate::daemon::link_watch::LinkState;
use crate::daemon::ops::State;
use crate::feeds::FeedHealth;
use crate::model::Action;
use crate::model::{ORIGIN_CONFIG, ORIGIN_KERNEL_NAME};
use crate::table::expiry::ExpiryPlan;

/// Fill level of one kernel map; `used` is `None` where the daemon does not track it.
#[derive(Clone, Debug, PartialEq)]
pub struct MapFill {
    pub map: &'static str,
    pub used: Option<u64>,
    pub capacity: u64,
}

/// Everything a scrape exports, as plain data: encoding it needs no lock and no kernel.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// `(iface, xdp mode)` while attached.
    pub attachment: Option<(String, String)>,
    /// Whether the kernel runs the shield's program on its interface; `None` if it could not
    /// be asked.
    pub attached: Option<bool>,
    pub monitor: bool,
    /// Unix time at which the daemon started.
    pub start_time: Duration,
    /// The kernel's counters, indexed like `verdict::NAMES`.
    pub counters: Vec<Counter>,
    /// Kernel drops per origin name.
    pub origin_drops: BTreeMap<String, Counter>,
    /// Entries per `(origin, action)`.
    pub origin_entries: BTreeMap<(String, Action), u64>,
    pub maps: Vec<MapFill>,
    /// How the rule table holds kernel expiries (coarsened grid, entries left without).
    pub rules: ExpiryPlan,
    pub feeds: BTreeMap<String, FeedHealth>,
}

impl Snapshot {
    /// Reads the state; the caller holds its lock for this call only.
    pub fn gather(state: &State) -> Result<Snapshot, String> {
        let shield = &state.shield;
        let counters = shield.reported_counters().map_err(|e| e.to_string())?;
        let by_id = shield.origin_counters().map_err(|e| e.to_string())?;
        let origin_drops = shield
            .origins()
            .iter()
            .map(|(name, id)| (name.as_str(), *id))
            .chain([(ORIGIN_KERNEL_NAME, ORIGIN_KERNEL)])
            .filter_map(|(name, id)| Some((name.to_owned(), *by_id.get(id as usize)?)))
            .collect();

        let mut origin_entries = BTreeMap::new();
        for (name, list) in state.store.origins() {
            for (action, _) in list.entries.keys() {
                *origin_entries
                    .entry((name.to_owned(), *action))
                    .or_insert(0) += 1;
            }
        }
        // A feed that has loaded nothing yet is still a list, of no entries.
        for name in state.feeds.keys() {
            origin_entries
                .entry((name.clone(), Action::Block))
                .or_insert(0);
        }
        let auto_blocks = shield.kernel.maps.auto_blocks().len() as u64;
        origin_entries.insert((ORIGIN_KERNEL_NAME.to_owned(), Action::Block), auto_blocks);
        origin_entries.insert(
            (ORIGIN_CONFIG.to_owned(), Action::Allow),
            state.config.management_allow.len() as u64,
        );

        // The same maps, in the same terms, as `api-shield status`.
        let cap = shield.kernel.maps.capacity;
        let last = shield.last_apply();
        let maps = vec![
            fill("v4_nodes", Some(u64::from(last.v4_nodes)), cap.v4_nodes),
            fill("rules", Some(last.rules as u64), cap.rules),
            fill("v6_entries", Some(last.v6_trie_keys as u64), cap.v6_entries),
            fill("auto_blocks", Some(auto_blocks), cap.auto_blocks),
            fill("sketch_width", None, cap.sketch_width),
            fill("offenders", None, cap.offenders),
        ];

        let feeds = state
            .feeds
            .iter()
            .map(|(name, health)| {
                let health = health
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                (name.clone(), health)
            })
            .collect();

        let start = SystemTime::now()
            .checked_sub(state.started.elapsed())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        Ok(Snapshot {
            attached: LinkState::read(shield.kernel.attachment.as_ref()).attached(),
            attachment: shield
                .kernel
                .attachment
                .as_ref()
                .map(|a| (a.iface.clone(), a.xdp_mode.clone())),
            monitor: state.config.mode == Mode::Monitor,
            start_time: start,
            counters,
            origin_drops,
            origin_entries,
            maps,
            rules: ExpiryPlan {
                level: last.expiry_level,
                unbounded: last.unbounded_expiries,
            },
            feeds,
        })
    }

    /// The counter named `name` in `verdict::NAMES`, zero if the kernel has no such slot.
    pub fn counter(&self, name: &str) -> Counter {
        verdict::NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.counters.get(i).copied())
            .unwrap_or_default()
    }
}

fn fill(map: &'static str, used: Option<u64>, capacity: u32) -> MapFill {
    MapFill {
        map,
        used,
        capacity: u64::from(capacity),
    }
}
