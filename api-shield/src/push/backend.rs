//! What the push API asks of the daemon.

use ipnet::IpNet;
use serde_json::Value;

use crate::lists::ListEntry;

/// The daemon's side of the push API. Calls are synchronous and may block (they run on
/// Tokio's blocking pool), so an implementation may take locks and touch kernel maps directly.
pub trait PushBackend: Send + Sync + 'static {
    /// Current revision of `list` (0 if the list does not exist yet) and its size.
    fn revision(&self, list: &str) -> (u64, usize);

    /// Applies a whole batch or nothing. `expected` is the revision the writer last saw; a
    /// mismatch must be refused with `BatchError::Conflict { current }`. Returns the new
    /// revision. Every entry has already been validated; `actor` names the writer for the
    /// audit log (`push:<client address>`).
    fn apply(
        &self,
        list: &str,
        expected: u64,
        add: Vec<ListEntry>,
        remove: Vec<IpNet>,
        actor: &str,
    ) -> Result<u64, BatchError>;

    /// The revision and entries of `list`, `None` if it does not exist. Entries are sent to the
    /// client as they are.
    fn entries(&self, list: &str) -> Option<(u64, Vec<Value>)>;

    /// One JSON value per list (its name, revision, size...), sent to the client as they are.
    fn lists(&self) -> Vec<Value>;
}

/// Why the backend refused a batch; each maps to one HTTP status (see `docs/push-api.md`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The writer's revision is stale: 409, with the current one so it can re-read and retry.
    #[error("the list is at revision {current}")]
    Conflict { current: u64 },
    /// The batch is well-formed but not acceptable: 400.
    #[error("{0}")]
    Invalid(String),
    /// Entry `add[index]` would cut this host off (it covers one of its addresses or a
    /// management prefix): 400 `invalid_entry` naming it.
    #[error("add[{index}]: {message}")]
    Lockout { index: usize, message: String },
    /// The kernel tables cannot hold the batch: 507.
    #[error("{0}")]
    Capacity(String),
    /// Anything else: 500.
    #[error("{0}")]
    Internal(String),
}
