//! The daemon's state and every operation the control socket offers. Plain Rust, no sockets:
//! the handler and the tests call these directly.

use crate::config::Config;
use crate::decisions::{
    snapshot::{self, FORMAT_VERSION, Snapshot},
    store::Store,
};
use crate::kernel::{clock, maps::Capacity, shield::Shield};
use crate::lockout;
use crate::model::{Action, Decision};
use crate::parse::parse_net;
use api_shield_common::{state::ORIGIN_KERNEL, verdict};
use ipnet::IpNet;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Instant;

/// Origin of decisions made through the CLI.
pub const ORIGIN_CLI: &str = "cli";
/// Origin of the config's management allowlist.
pub const ORIGIN_CONFIG: &str = "config";
/// Origin name shown for the kernel's own auto-blocks.
pub const ORIGIN_KERNEL_NAME: &str = "kernel";
/// Longest reason text kept with a decision.
const MAX_REASON_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Bad input: exit code 2, nothing applied.
    #[error("{0}")]
    Invalid(String),
    /// Valid but refused (lockout, capacity): exit code 2, nothing applied.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Internal(String),
}

pub struct State {
    pub shield: Shield,
    pub store: Store,
    pub config: Config,
    pub snapshot_path: PathBuf,
    pub started: Instant,
    pub requested_capacity: Capacity,
}

fn parse_all(tokens: &[String]) -> Result<Vec<IpNet>, OpError> {
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

impl State {
    /// Everything the kernel must enforce: the store plus the config's management allowlist.
    fn kernel_decisions(&self, store: &Store) -> Vec<Decision> {
        let now = clock::now_unix_ms();
        store
            .iter()
            .cloned()
            .chain(self.config.management_allow.iter().map(|net| Decision {
                net: *net,
                action: Action::Allow,
                origin: ORIGIN_CONFIG.into(),
                reason: Some("management_allow".into()),
                created_at_ms: now,
                expires_at_ms: None,
            }))
            .collect()
    }

    /// Makes `next` the state: on disk first (so nothing acknowledged is ever lost), then in
    /// the kernel. If the kernel refuses it, the previous snapshot is written back.
    pub fn commit(&mut self, next: Store) -> Result<(), OpError> {
        let decisions = self.kernel_decisions(&next);
        for d in &decisions {
            self.shield
                .origin_id(&d.origin)
                .map_err(|e| OpError::Refused(e.to_string()))?;
        }
        self.save(&next)?;
        if let Err(e) = self.shield.apply(&decisions) {
            let _ = self.save(&self.store.clone());
            return Err(OpError::Refused(format!("not applied: {e}")));
        }
        self.store = next;
        Ok(())
    }

    pub fn save(&self, store: &Store) -> Result<(), OpError> {
        let snap = Snapshot {
            version: FORMAT_VERSION,
            saved_at_ms: clock::now_unix_ms(),
            origins: self.shield.origins().clone(),
            decisions: store.iter().cloned().collect(),
        };
        snapshot::save(&self.snapshot_path, &snap).map_err(|e| OpError::Internal(e.to_string()))
    }

    /// Re-applies the current store (after a settings change or on start).
    pub fn reapply(&mut self) -> Result<(), OpError> {
        self.commit(self.store.clone())
    }

    pub fn block(
        &mut self,
        tokens: &[String],
        ttl_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    ) -> Result<Value, OpError> {
        let nets = parse_all(tokens)?;
        if ttl_secs == Some(0) {
            return Err(OpError::Invalid("ttl must be positive".into()));
        }
        let reason = check_reason(reason)?;
        if !force {
            let host = lockout::host_addresses().map_err(|e| OpError::Internal(e.to_string()))?;
            let conflicts: Vec<String> = nets
                .iter()
                .flat_map(|n| lockout::lockout_conflicts(n, &host, &self.config.management_allow))
                .collect();
            if !conflicts.is_empty() {
                return Err(OpError::Refused(format!(
                    "refusing to block: {}; nothing was applied (use --force to block anyway)",
                    conflicts.join("; ")
                )));
            }
        }
        let now = clock::now_unix_ms();
        let expires_at_ms = ttl_secs.map(|t| now.saturating_add(t.saturating_mul(1000)));
        let mut next = self.store.clone();
        for net in &nets {
            next.upsert(Decision {
                net: *net,
                action: Action::Block,
                origin: ORIGIN_CLI.into(),
                reason: reason.clone(),
                created_at_ms: now,
                expires_at_ms,
            });
        }
        self.commit(next)?;
        Ok(json!({"blocked": nets, "expires_at_ms": expires_at_ms}))
    }

    pub fn unblock(&mut self, tokens: &[String]) -> Result<Value, OpError> {
        let nets = parse_all(tokens)?;
        let mut next = self.store.clone();
        let mut removed = Vec::new();
        let mut auto_removed = Vec::new();
        let mut not_blocked = Vec::new();
        for net in &nets {
            let gone = next.remove(Action::Block, net, None);
            let auto = self.shield.remove_auto_block(net);
            if auto {
                auto_removed.push(*net);
            }
            if gone.is_empty() && !auto {
                not_blocked.push(*net);
            }
            removed.extend(
                gone.into_iter()
                    .map(|d| json!({"net": d.net, "origin": d.origin})),
            );
        }
        self.commit(next)?;
        Ok(
            json!({"removed": removed, "auto_blocks_removed": auto_removed, "not_blocked": not_blocked}),
        )
    }

    pub fn allow(&mut self, tokens: &[String]) -> Result<Value, OpError> {
        let nets = parse_all(tokens)?;
        let now = clock::now_unix_ms();
        let mut next = self.store.clone();
        for net in &nets {
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
        Ok(json!({"allowed": nets}))
    }

    pub fn unallow(&mut self, tokens: &[String]) -> Result<Value, OpError> {
        let nets = parse_all(tokens)?;
        let mut next = self.store.clone();
        let mut removed = Vec::new();
        let mut not_allowed = Vec::new();
        for net in &nets {
            let gone = next.remove(Action::Allow, net, None);
            if gone.is_empty() {
                not_allowed.push(*net);
            }
            removed.extend(gone.into_iter().map(|d| d.net));
        }
        self.commit(next)?;
        Ok(json!({"removed": removed, "not_allowed": not_allowed}))
    }

    /// Entries with origin, reason and expiry; the kernel's auto-blocks are listed with origin
    /// `kernel`.
    pub fn list(&self, action: Option<Action>) -> Value {
        let mut out: Vec<Value> = self
            .kernel_decisions(&self.store)
            .iter()
            .filter(|d| action.is_none_or(|a| a == d.action))
            .map(|d| serde_json::to_value(d).expect("serialisable"))
            .collect();
        if action.is_none_or(|a| a == Action::Block) {
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

    pub fn stats(&self) -> Result<Value, OpError> {
        let counters = self
            .shield
            .counters()
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let counter =
            |i: usize| json!({"packets": counters[i].packets, "bytes": counters[i].bytes});
        let verdicts: serde_json::Map<String, Value> = (0..verdict::VERDICTS as usize)
            .map(|i| (verdict::NAMES[i].to_string(), counter(i)))
            .collect();
        let details: serde_json::Map<String, Value> = (verdict::VERDICTS as usize
            ..verdict::SLOTS as usize)
            .map(|i| (verdict::NAMES[i].to_string(), counter(i)))
            .collect();
        let by_origin = self
            .shield
            .origin_counters()
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let mut origins = serde_json::Map::new();
        let named = self
            .shield
            .origins()
            .iter()
            .map(|(n, id)| (n.clone(), *id))
            .chain([(ORIGIN_KERNEL_NAME.to_string(), ORIGIN_KERNEL)]);
        for (name, id) in named {
            if let Some(c) = by_origin.get(id as usize) {
                origins.insert(name, json!({"packets": c.packets, "bytes": c.bytes}));
            }
        }
        Ok(json!({"verdicts": verdicts, "details": details, "origins": origins}))
    }

    pub fn status(&self) -> Value {
        let cfg = self.shield.settings();
        let cap = self.shield.kernel.maps.capacity;
        let last = self.shield.last_apply();
        let attachment = self.shield.kernel.attachment.as_ref();
        let auto_blocks = self.shield.kernel.maps.auto_blocks().len();
        json!({
            "iface": attachment.map(|a| a.iface.clone()),
            "ifindex": attachment.map(|a| a.ifindex),
            "xdp_mode": attachment.map(|a| a.xdp_mode.clone()),
            "program_id": attachment.map(|a| a.program_id),
            "adopted": attachment.map(|a| a.adopted),
            "pid": std::process::id(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "mode": self.config.mode,
            "decisions": self.store.len(),
            "capacity_differs_from_config": cap != self.requested_capacity,
            "maps": {
                "v4_host_groups": {"used": last.v4_groups, "capacity": cap.v4_host_groups},
                "rules": {"used": last.rules, "capacity": cap.rules},
                "v6_entries": {"used": last.v6_trie_keys, "capacity": cap.v6_entries},
                "auto_blocks": {"used": auto_blocks, "capacity": cap.auto_blocks},
                "sketch_width": {"capacity": cap.sketch_width},
                "offenders": {"capacity": cap.offenders},
            },
            "limits": {
                "packets_per_second": cfg.pkt.rate_per_sec,
                "syn_per_second": cfg.syn.rate_per_sec,
                "autoblock_strikes": cfg.autoblock_strikes,
            },
        })
    }

    /// Removes expired decisions and dead auto-blocks. Returns what expired.
    pub fn sweep(&mut self) -> Result<Vec<Decision>, OpError> {
        self.shield.sweep_auto_blocks();
        let mut next = self.store.clone();
        let expired = next.remove_expired(clock::now_unix_ms());
        if !expired.is_empty() {
            self.commit(next)?;
        }
        Ok(expired)
    }
}

fn check_reason(reason: Option<String>) -> Result<Option<String>, OpError> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(OpError::Invalid(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        ))),
        Some(r) if r.chars().any(char::is_control) => Err(OpError::Invalid(
            "reason contains control characters".into(),
        )),
        other => Ok(other),
    }
}

/// The capacity the config asks for, in the kernel module's terms.
pub fn capacity_of(config: &Config) -> Capacity {
    let c = &config.capacity;
    Capacity {
        v4_host_groups: c.v4_host_groups,
        rules: c.rules,
        v6_entries: c.v6_entries,
        sketch_width: c.sketch_width,
        offenders: c.offenders,
        auto_blocks: c.auto_blocks,
    }
}
