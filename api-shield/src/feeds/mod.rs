//! Sources of decisions that run inside the daemon: watched list files and the CrowdSec local
//! API. Each writes through a `FeedSink`, the same decision path the CLI uses.

use crate::lists::ListEntry;
use ipnet::IpNet;
pub mod crowdsec;
pub mod file;

use std::sync::{Arc, Mutex};

/// How a feed changes its list. Implemented by the daemon; every call is all-or-nothing.
pub trait FeedSink: Send + Sync + 'static {
    /// Replaces the whole list `origin` with `entries`.
    fn replace(&self, origin: &str, source: &str, entries: Vec<ListEntry>) -> Result<(), String>;
    /// Adds and removes entries of `origin`.
    fn update(
        &self,
        origin: &str,
        source: &str,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
    ) -> Result<(), String>;
    /// Entries `origin` holds now (`None`: unknown), to tell a shrinking feed.
    fn current_len(&self, _origin: &str) -> Option<usize> {
        None
    }
    /// Records a change a feed refused to make (audit), with why.
    fn refused(&self, _origin: &str, _source: &str, _why: &str) {}
}

/// What a feed reports about itself, for `api-shield lists` and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FeedHealth {
    /// Wall-clock Unix ms of the last successful sync.
    pub last_success_ms: Option<u64>,
    pub last_error: Option<String>,
    pub errors_total: u64,
    pub syncs_total: u64,
    /// The source is unreachable right now: the last state it gave stays enforced.
    pub degraded: bool,
}

pub type SharedHealth = Arc<Mutex<FeedHealth>>;
