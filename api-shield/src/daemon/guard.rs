//! The lockout guard on the daemon's decision path: every operation that adds blocks screens
//! them with [`crate::lockout::Protected`] first, and says what to do with a refused entry.

use super::ops::{OpError, State};
use crate::lists::ListEntry;
use crate::lockout::{Conflict, Lockout, Protected};
use crate::model::Action;
use ipnet::IpNet;
use std::collections::BTreeMap;

/// What an operation does with entries that would cut this host off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLockout {
    /// Refuse the whole change, naming each such entry (the CLI, `import`, the push API).
    Refuse,
    /// Leave them out, apply the rest and report them (watched feeds, CrowdSec: nobody is
    /// there to confirm, and the rest of the list must still be enforced).
    Skip,
    /// A person said `--force`: apply them, marked as forced so a restore keeps them.
    Force,
}

/// What a list change did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The list's new revision.
    pub revision: u64,
    /// Entries left out by the guard (`OnLockout::Skip`).
    pub skipped: Vec<Conflict>,
    /// Entries applied past the guard (`OnLockout::Force`).
    pub forced: Vec<IpNet>,
}

/// The guard's verdict on a batch of entries, by position in the batch.
pub(super) struct Screened {
    /// Positions of the entries the guard refused, with why.
    flagged: BTreeMap<usize, Conflict>,
    on_lockout: OnLockout,
}

impl Screened {
    /// Whether entry `i` goes in: `None` if it is left out, else whether it was forced.
    pub(super) fn keep(&self, i: usize) -> Option<bool> {
        match (self.flagged.contains_key(&i), self.on_lockout) {
            (false, _) => Some(false),
            (true, OnLockout::Force) => Some(true),
            (true, OnLockout::Skip | OnLockout::Refuse) => None,
        }
    }

    pub(super) fn applied(self, revision: u64) -> Applied {
        let conflicts = self.flagged.into_values();
        match self.on_lockout {
            OnLockout::Force => Applied {
                revision,
                skipped: Vec::new(),
                forced: conflicts.map(|c| c.net).collect(),
            },
            OnLockout::Skip | OnLockout::Refuse => Applied {
                revision,
                skipped: conflicts.collect(),
                forced: Vec::new(),
            },
        }
    }
}

impl State {
    /// What no block may cover without `--force`: this host's addresses as they are now, and
    /// the management prefixes.
    pub fn protected(&self) -> Result<Protected, OpError> {
        Protected::of_this_host(&self.config.management_allow).map_err(|e| {
            OpError::Internal(format!(
                "reading this host's addresses for the lockout guard: {e}"
            ))
        })
    }

    /// Screens `entries` with the guard. With `OnLockout::Refuse`, any refused entry fails the
    /// whole batch with an error naming each one.
    pub(super) fn screen(
        &self,
        entries: &[ListEntry],
        on_lockout: OnLockout,
    ) -> Result<Screened, OpError> {
        let protected = self.protected()?;
        let flagged: BTreeMap<usize, Conflict> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let reasons = protected.conflicts(&e.net);
                (!reasons.is_empty()).then_some((
                    i,
                    Conflict {
                        net: e.net,
                        reasons,
                    },
                ))
            })
            .collect();
        if on_lockout == OnLockout::Refuse && !flagged.is_empty() {
            let refused = Lockout {
                refused: flagged.into_values().collect(),
            };
            let message = format!("refusing to block: {refused}; nothing was applied");
            return Err(OpError::Lockout { refused, message });
        }
        Ok(Screened {
            flagged,
            on_lockout,
        })
    }

    /// Takes out of a restored store every block that would cut this host off as it is now,
    /// unless a person forced it: a snapshot written before the guard existed, or before the
    /// host's addresses or `management_allow` changed, must not lock the host out at boot.
    /// Returns what was taken out, by list.
    pub fn drop_restored_lockouts(&mut self) -> Result<Vec<(String, Conflict)>, OpError> {
        let protected = self.protected()?;
        let mut dropped = Vec::new();
        for (name, list) in self.store.origins() {
            for ((action, net), entry) in &list.entries {
                if *action != Action::Block || entry.forced {
                    continue;
                }
                let reasons = protected.conflicts(net);
                if !reasons.is_empty() {
                    dropped.push((name.to_string(), Conflict { net: *net, reasons }));
                }
            }
        }
        for (name, conflict) in &dropped {
            self.store
                .remove(Action::Block, &conflict.net, Some(name.as_str()));
        }
        Ok(dropped)
    }
}
