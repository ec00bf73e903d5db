//! The daemon's state and every operation the control socket offers. Plain Rust, no sockets:
//! the handler and the tests call these directly.

use crate::audit::AuditLog;
use crate::config::Config;
use crate::control::{AllowBody, BlockBody, RemovedBody, UnallowBody, UnblockBody};
use crate::decisions::{
    snapshot::{SnapshotDir, SnapshotError},
    store::Store,
};
use crate::kernel::{clock, maps::Capacity, shield::Shield};
use crate::lists::valid_list_name;
use crate::lockout::{Lockout, Protected};
use crate::model::{Action, Decision};
use crate::parse::{check_net, parse_net};
use ipnet::IpNet;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

pub use super::lists::UpdateError;

pub use crate::model::{ORIGIN_CLI, ORIGIN_CONFIG, ORIGIN_KERNEL_NAME};
/// Longest reason text kept with a decision.

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Bad input: exit code 2, nothing applied.
    #[error("{0}")]
    Invalid(String),
    /// Valid but refused (lockout, capacity): exit code 2, nothing applied.
    #[error("{0}")]
    Refused(String),
    /// Would cut this host off (the lockout guard): exit code 2, nothing applied.
    #[error("{message}")]
    Lockout { refused: Lockout, message: String },
    #[error("{0}")]
    Internal(String),
}

pub struct State {
    pub shield: Shield,
    pub store: Store,
    pub config: Config,
    pub snapshot: SnapshotDir,
    pub started: Instant,
    pub requested_capacity: Capacity,
    /// Health of each feed, by list name.
    pub feeds: std::collections::BTreeMap<String, crate::feeds::SharedHealth>,
    pub audit: Arc<AuditLog>,
    /// Whether the rule table was last reported coarsened / overflowing (audited on change).
    pub rules_reported: RulesHealth,
    /// Expiries removed from the store but not yet from the kernel tables nor the snapshot
    /// (see `sweep`).
    pub expiry_pending: Option<PendingExpiry>,
}

/// How well the rule table holds the kernel expiries, as last audited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RulesHealth {
    pub coarsened: bool,
    pub unbounded: bool,
}

/// Lists whose expired entries left the store only: the next commit writes them.
#[derive(Clone, Debug)]
pub struct PendingExpiry {
    pub origins: std::collections::BTreeSet<String>,
    pub since: Instant,
}

/// Longest a sweep defers writing expiries to the kernel tables and the snapshot while the
/// kernel drops the expired entries by itself: bounds how long their rules stay taken and how
/// stale (by expired entries only) the snapshot gets.
const MAX_EXPIRY_DEFERRAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Addresses or prefixes as a client typed them, every one checked: the edge where the control
/// socket's strings become the typed nets the operations take.
pub fn parse_nets(tokens: &[String]) -> Result<Vec<IpNet>, OpError> {
    if tokens.is_empty() {
        return Err(OpError::Invalid("no address given".into()));
    }
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for t in tokens {
        match parse_net(t) {
            Ok(n) => nets.push(n),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(nets)
    } else {
        Err(OpError::Invalid(errors.join("; ")))
    }
}

/// The typed entry points' own check of what they are given, as strict as `parse_nets`: a net
/// with host bits or an IPv4-mapped one is refused whoever sends it.
fn check_nets(nets: &[IpNet]) -> Result<(), OpError> {
    if nets.is_empty() {
        return Err(OpError::Invalid("no address given".into()));
    }
    let errors: Vec<String> = nets
        .iter()
        .filter_map(|n| check_net(*n).err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OpError::Invalid(errors.join("; ")))
    }
}

/// How a `block` is applied, besides what it blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockOptions {
    /// Lifetime; permanent without one.
    pub ttl_secs: Option<u64>,
    pub reason: Option<String>,
    /// The named list (origin) the blocks belong to; `cli` without one.
    pub list: Option<String>,
    /// Block even what would cut this host off (marked as forced so a restore keeps it).
    pub force: bool,
}

impl State {
    /// The config's management allowlist, which the kernel enforces beside the store.
    fn config_decisions(&self) -> Vec<Decision> {
        let now = clock::now_unix_ms();
        self.config
            .management_allow
            .iter()
            .map(|net| Decision {
                net: *net,
                action: Action::Allow,
                origin: ORIGIN_CONFIG.into(),
                reason: Some("management_allow".into()),
                created_at_ms: now,
                expires_at_ms: None,
            })
            .collect()
    }

    /// Makes `next` the state: on disk first (so nothing acknowledged is ever lost), then in
    /// the kernel. If the kernel refuses it, the previous snapshot is written back and the
    /// current state stays as it was.
    pub fn commit(&mut self, next: Store) -> Result<(), OpError> {
        let changed = next.changed_origins(&self.store);
        self.commit_changed(next, &changed)
    }

    pub(super) fn commit_changed(
        &mut self,
        next: Store,
        changed: &[String],
    ) -> Result<(), OpError> {
        // Lists whose expiries a sweep deferred are written along (see `sweep`).
        let with_pending: Vec<String>;
        let changed = match &self.expiry_pending {
            Some(p) => {
                with_pending = changed
                    .iter()
                    .chain(p.origins.iter().filter(|o| !changed.contains(o)))
                    .cloned()
                    .collect();
                &with_pending[..]
            }
            None => changed,
        };
        let config = self.config_decisions();
        let names: Vec<String> = next
            .origins()
            .map(|(n, _)| n.to_string())
            .chain([ORIGIN_CONFIG.to_string()])
            .collect();
        for name in &names {
            self.shield
                .origin_id(name)
                .map_err(|e| OpError::Refused(format!("{e}; nothing was applied")))?;
        }
        let now = clock::now_unix_ms();
        let origin_ids = self.shield.origins().clone();
        // The snapshot and the kernel are written at the same time (they are independent, and
        // a million-entry list takes a while to serialise), and the change is acknowledged only
        // once both hold it. If either fails, the other is put back.
        let (saved, applied) = {
            let snapshot = &self.snapshot;
            let shield = &mut self.shield;
            let next_ref = &next;
            std::thread::scope(|scope| {
                let writer = scope.spawn(|| snapshot.save(next_ref, &origin_ids, changed, now));
                let applied =
                    shield.apply_refs(next_ref.iter().chain(config.iter().map(Decision::as_ref)));
                let saved = writer.join().unwrap_or(Err(SnapshotError::Panicked));
                (saved, applied)
            })
        };
        match (saved, applied) {
            (Ok(()), Ok(_)) => {}
            (saved, Ok(_)) => {
                // On disk failed: the kernel must not hold what the snapshot does not.
                let restore = self.store.iter().chain(config.iter().map(Decision::as_ref));
                if let Err(e) = self.shield.apply_refs(restore) {
                    tracing::error!(
                        error = %e,
                        "putting the kernel back after a failed snapshot write failed: the \
                         kernel may enforce a change that was not acknowledged"
                    );
                }
                let e = saved.err().map(|e| e.to_string()).unwrap_or_default();
                return Err(OpError::Internal(format!("{e}; nothing was applied")));
            }
            (_, Err(e)) => {
                if let Err(undo) = self.snapshot.save(&self.store, &origin_ids, changed, now) {
                    tracing::error!(
                        error = %undo,
                        "putting the snapshot back after the kernel refused a change failed: a \
                         restart may restore a change that was not acknowledged"
                    );
                }
                return Err(OpError::Refused(format!("{e}; nothing was applied")));
            }
        }
        self.store = next;
        self.expiry_pending = None;
        self.report_rules();
        Ok(())
    }

    /// Says loudly (log and audit) when the rule table starts or stops being too small for the
    /// expiries it holds: once per change, not at every sweep.
    fn report_rules(&mut self) {
        let last = self.shield.last_apply();
        let now = RulesHealth {
            coarsened: last.expiry_level > 0,
            unbounded: last.unbounded_expiries > 0,
        };
        if now == self.rules_reported {
            return;
        }
        self.rules_reported = now;
        let cap = self.shield.kernel.maps.capacity.rules;
        let detail = json!({
            "rules": last.rules,
            "capacity": cap,
            "expiry_level": last.expiry_level,
            "unbounded_expiries": last.unbounded_expiries,
        });
        let ok = !now.coarsened && !now.unbounded;
        if ok {
            tracing::info!(
                rules = last.rules,
                capacity = cap,
                "the rule table holds every expiry on its finest grid again"
            );
        } else if now.unbounded {
            tracing::error!(
                unbounded = last.unbounded_expiries,
                capacity = cap,
                "the rule table is full: expiring blocks are held in the kernel without expiry \
                 (still enforced and removed on time by the daemon, but not while it is down); \
                 raise rules"
            );
        } else {
            tracing::warn!(
                level = last.expiry_level,
                capacity = cap,
                "the rule table is too small for the finest expiry grid: kernel expiries are \
                 rounded further up (the daemon still removes blocks on time); raise rules"
            );
        }
        super::handler::audit_self(&self.audit, "rule_table", json!({}), ok, detail);
    }

    /// Re-applies the current store (after a settings change or on start), and writes all of
    /// it to the snapshot.
    pub fn reapply(&mut self) -> Result<(), OpError> {
        let names: Vec<String> = self.store.origins().map(|(n, _)| n.to_string()).collect();
        self.commit_changed(self.store.clone(), &names)
    }

    /// Blocks `nets` (into `opts.list`, or `cli`); refuses what would cut this host off unless
    /// `opts.force`.
    pub fn block(&mut self, nets: &[IpNet], opts: BlockOptions) -> Result<BlockBody, OpError> {
        let protected = self.protected()?;
        self.block_guarded(nets, opts, &protected)
            .map_err(|e| match e {
                OpError::Lockout { refused, message } => OpError::Lockout {
                    refused,
                    message: format!("{message} (use --force to block anyway)"),
                },
                other => other,
            })
    }

    /// `block` against `protected` (the gateway adds its trusted proxies to what the CLI
    /// protects): all or nothing, unless `opts.force` applies what the guard refuses.
    pub fn block_guarded(
        &mut self,
        nets: &[IpNet],
        opts: BlockOptions,
        protected: &Protected,
    ) -> Result<BlockBody, OpError> {
        let BlockOptions {
            ttl_secs,
            reason,
            list,
            force,
        } = opts;
        let origin = origin_of(list.as_deref())?;
        check_nets(nets)?;
        if let Some(t) = ttl_secs {
            crate::parse::check_ttl(t, self.config.max_ttl)
                .map_err(|e| OpError::Invalid(e.to_string()))?;
        }
        let reason = check_reason(reason)?;
        let forced = match (protected.check(nets), force) {
            (Ok(()), _) => Vec::new(),
            (Err(refused), true) => refused.refused.into_iter().map(|c| c.net).collect(),
            (Err(refused), false) => {
                let message = format!("refusing to block: {refused}; nothing was applied");
                return Err(OpError::Lockout { refused, message });
            }
        };
        let now = clock::now_unix_ms();
        let expires_at_ms =
            ttl_secs.map(|t| clock::expiry_after(now, std::time::Duration::from_secs(t)));
        let mut next = self.store.clone();
        for net in nets {
            next.upsert(Decision {
                net: *net,
                action: Action::Block,
                origin: origin.clone(),
                reason: reason.clone(),
                created_at_ms: now,
                expires_at_ms,
            });
        }
        for net in &forced {
            next.mark_forced(&origin, Action::Block, net);
        }
        self.commit(next)?;
        Ok(BlockBody {
            blocked: nets.to_vec(),
            list: origin,
            expires_at_ms,
            forced,
        })
    }

    /// Removes blocks of `nets`: from `list` only, or from every origin (and the kernel's
    /// own auto-blocks) when no list is named.
    pub fn unblock(&mut self, nets: &[IpNet], list: Option<&str>) -> Result<UnblockBody, OpError> {
        if let Some(l) = list {
            valid_list_name(l).map_err(|e| OpError::Invalid(e.to_string()))?;
        }
        check_nets(nets)?;
        let mut next = self.store.clone();
        let mut removed = Vec::new();
        let mut auto_removed = Vec::new();
        let mut not_blocked = Vec::new();
        for net in nets {
            let gone = next.remove(Action::Block, net, list);
            let auto = list.is_none() && self.shield.remove_auto_block(net);
            if auto {
                auto_removed.push(*net);
            }
            if gone.is_empty() && !auto {
                not_blocked.push(*net);
            }
            removed.extend(gone.into_iter().map(|d| RemovedBody {
                net: d.net,
                origin: d.origin,
            }));
        }
        self.commit(next)?;
        Ok(UnblockBody {
            removed,
            auto_blocks_removed: auto_removed,
            not_blocked,
        })
    }

    pub fn allow(&mut self, nets: &[IpNet]) -> Result<AllowBody, OpError> {
        check_nets(nets)?;
        let now = clock::now_unix_ms();
        let mut next = self.store.clone();
        for net in nets {
            next.upsert(Decision {
                net: *net,
                action: Action::Allow,
                origin: ORIGIN_CLI.into(),
                reason: None,
                created_at_ms: now,
                expires_at_ms: None,
            });
        }
        self.commit(next)?;
        Ok(AllowBody {
            allowed: nets.to_vec(),
        })
    }

    pub fn unallow(&mut self, nets: &[IpNet]) -> Result<UnallowBody, OpError> {
        check_nets(nets)?;
        let mut next = self.store.clone();
        let mut removed = Vec::new();
        let mut not_allowed = Vec::new();
        for net in nets {
            let gone = next.remove(Action::Allow, net, None);
            if gone.is_empty() {
                not_allowed.push(*net);
            }
            removed.extend(gone.into_iter().map(|d| d.net));
        }
        self.commit(next)?;
        Ok(UnallowBody {
            removed,
            not_allowed,
        })
    }

    /// Entries with origin, reason and expiry; the kernel's auto-blocks are listed with origin
    /// `kernel`.
    pub fn list(&self, action: Option<Action>, origin: Option<&str>) -> Value {
        let config = self.config_decisions();
        let mut out: Vec<Value> = self
            .store
            .iter()
            .chain(config.iter().map(Decision::as_ref))
            .filter(|d| action.is_none_or(|a| a == d.action))
            .filter(|d| origin.is_none_or(|o| o == d.origin))
            .map(|d| serde_json::to_value(d.to_owned()).expect("serialisable"))
            .collect();
        let kernel_wanted = origin.is_none_or(|o| o == ORIGIN_KERNEL_NAME);
        if action.is_none_or(|a| a == Action::Block) && kernel_wanted {
            for b in self.shield.auto_blocks() {
                out.push(json!({
                    "net": b.net,
                    "action": "block",
                    "origin": ORIGIN_KERNEL_NAME,
                    "reason": "rate limit exceeded repeatedly",
                    "created_at_ms": b.created_at_ms,
                    "expires_at_ms": b.expires_at_ms,
                }));
            }
        }
        Value::Array(out)
    }

    /// Removes expired decisions and dead auto-blocks. Returns what expired.
    ///
    /// Expired entries leave the store (what `list` and `status` show) at once. The kernel
    /// tables are rebuilt only when the kernel would not drop an expired entry by itself within
    /// `shield::KERNEL_EXPIRY_SLACK` (an allow, an entry held without expiry, or one whose rule
    /// was rounded up by more than that), or `MAX_EXPIRY_DEFERRAL` after the first expiry not
    /// yet written: a rebuild with a million entries costs about a second of CPU, and a million
    /// distinct expiries would otherwise cost one every second.
    pub fn sweep(&mut self) -> Result<Vec<Decision>, OpError> {
        self.shield.sweep_auto_blocks();
        let mut next = self.store.clone();
        let expired = next.remove_expired(clock::now_unix_ms());
        if expired.is_empty() && self.expiry_pending.is_none() {
            return Ok(expired);
        }
        let pending = self.expiry_pending.get_or_insert_with(|| PendingExpiry {
            origins: Default::default(),
            since: Instant::now(),
        });
        pending
            .origins
            .extend(expired.iter().map(|d| d.origin.clone()));
        let due = clock::monotonic_ns() >= self.shield.self_expiring_until_ns()
            || pending.since.elapsed() >= MAX_EXPIRY_DEFERRAL;
        if due {
            self.commit(next)?;
        } else {
            self.store = next;
        }
        Ok(expired)
    }
}

/// The origin a CLI change goes to: a named list, or `cli`.
pub(super) fn origin_of(list: Option<&str>) -> Result<String, OpError> {
    match list {
        Some(l) => {
            valid_list_name(l).map_err(|e| OpError::Invalid(e.to_string()))?;
            if l == ORIGIN_CONFIG || l == ORIGIN_KERNEL_NAME {
                return Err(OpError::Invalid(format!(
                    "list name `{l}` is reserved for the daemon"
                )));
            }
            Ok(l.to_string())
        }
        None => Ok(ORIGIN_CLI.to_string()),
    }
}

fn check_reason(reason: Option<String>) -> Result<Option<String>, OpError> {
    if let Some(r) = &reason {
        crate::text::check("reason", r).map_err(|e| OpError::Invalid(e.to_string()))?;
    }
    Ok(reason)
}

/// The capacity the config asks for, in the kernel module's terms.
pub fn capacity_of(config: &Config) -> Capacity {
    config.capacity
}
