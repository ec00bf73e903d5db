//! What one scrape reports: plain data the daemon reads from its live state in one short
//! lock (the same readings its `status` and `stats` answers are made of), so encoding needs
//! no lock, no kernel and nothing of the daemon.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use api_shield_common::state::Counter;
use api_shield_common::verdict;

use crate::feeds::FeedHealth;
use crate::model::Action;
use crate::table::expiry::ExpiryPlan;

/// Why the shield's state could not be read for a scrape; its text goes to the log and the
/// scraper.
pub type ReadError = Box<dyn Error + Send + Sync>;

/// Reads the shield's state once per scrape; called off the async runtime (it may take a lock
/// and make a few syscalls).
pub type SnapshotSource = Arc<dyn Fn() -> Result<ShieldSnapshot, ReadError> + Send + Sync>;

/// Fill level of one kernel map; `used` is `None` where the daemon does not track it.
#[derive(Clone, Debug, PartialEq)]
pub struct MapFill {
    pub map: &'static str,
    pub used: Option<u64>,
    pub capacity: u64,
}

/// Everything a scrape exports, as plain data: encoding it needs no lock and no kernel.
#[derive(Clone, Debug, Default)]
pub struct ShieldSnapshot {
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

impl ShieldSnapshot {
    /// The counter named `name` in `verdict::NAMES`, zero if the kernel has no such slot.
    pub fn counter(&self, name: &str) -> Counter {
        verdict::NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.counters.get(i).copied())
            .unwrap_or_default()
    }
}
