//! Sources of decisions that run inside the daemon: watched list files and the CrowdSec local
//! API. Each writes through a `FeedSink`, the same decision path the CLI uses.

use crate::lists::ListEntry;
use ipnet::IpNet;
pub mod crowdsec;
pub mod file;

use std::sync::{Arc, Mutex};

/// Why a sink did not make a change: the message of the refusing layer (the daemon's
/// operation error, a kernel write), kept as the feed's `last_error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

impl SinkError {
    /// The refusal `error` describes.
    pub fn new(error: impl std::fmt::Display) -> Self {
        Self(error.to_string())
    }
}

/// How a feed changes its list. Implemented by the daemon; every call is all-or-nothing.
pub trait FeedSink: Send + Sync + 'static {
    /// Replaces the whole list `origin` with `entries`.
    fn replace(&self, origin: &str, source: &str, entries: Vec<ListEntry>)
    -> Result<(), SinkError>;
    /// Adds and removes entries of `origin`.
    fn update(
        &self,
        origin: &str,
        source: &str,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
    ) -> Result<(), SinkError>;
    /// Entries `origin` holds now (`None`: unknown), to tell a shrinking feed.
    fn current_len(&self, _origin: &str) -> Option<usize> {
        None
    }
    /// Records a change a feed refused to make (audit), with why.
    fn refused(&self, _origin: &str, _source: &str, _why: &str) {}
    /// The longest TTL an entry may have (`max_ttl`); `None` leaves the feed's own bound.
    fn max_ttl(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What a feed reports about itself, for `api-shield lists` and metrics. The `lists` answer
/// carries it as is, so readers take it with fields missing (an older daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FeedHealth {
    /// Wall-clock Unix ms of the last successful sync.
    pub last_success_ms: Option<u64>,
    pub last_error: Option<String>,
    pub errors_total: u64,
    pub syncs_total: u64,
    /// The source is unreachable right now: the last state it gave stays enforced.
    pub degraded: bool,
    /// Entries the lockout guard left out, over every sync: each would have cut this host off
    /// (it covers one of its addresses or a management prefix).
    pub lockout_skipped_total: u64,
    /// The entries the last sync that left any out left out, and why (at most
    /// [`MAX_SKIPPED_SHOWN`]).
    pub lockout_skipped: Vec<String>,
    /// Entries the source sent that could not be read or used, skipped, over every sync: for
    /// CrowdSec a decision that is not an object, has a field of the wrong type, or lacks a
    /// usable value, type or duration. List files log their skipped lines instead (0 here).
    pub malformed_skipped_total: u64,
}

/// Most left-out entries a feed's health names; the count covers all of them.
pub const MAX_SKIPPED_SHOWN: usize = 16;

impl FeedHealth {
    /// Records the entries the lockout guard left out of one sync.
    pub fn record_lockout_skips(&mut self, skipped: &[crate::lockout::Conflict]) {
        if skipped.is_empty() {
            return;
        }
        self.lockout_skipped_total = self
            .lockout_skipped_total
            .saturating_add(u64::try_from(skipped.len()).unwrap_or(u64::MAX));
        self.lockout_skipped = skipped
            .iter()
            .take(MAX_SKIPPED_SHOWN)
            .map(ToString::to_string)
            .collect();
    }
}

pub type SharedHealth = Arc<Mutex<FeedHealth>>;
