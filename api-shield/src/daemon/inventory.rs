//! The daemon's inventory: read from `state_dir/<iface>/inventory.json` at start, shared with
//! the gateway and the check endpoint (which record into it), the control socket and the
//! metrics (which read it), saved every `inventory.save_interval` when it changed and once
//! more at shutdown, after the last request was counted.
//!
//! A damaged, foreign or oversize file never stops a start: it is logged, audited
//! (`inventory_load`, result `error`), renamed aside to `inventory.json.damaged` for a
//! person to look at, and the daemon starts with an empty inventory.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tokio::task::JoinHandle;

use super::handler::audit_self;
use crate::audit::AuditLog;
use crate::inventory::{INVENTORY_FILE, Inventory, InventoryConfig, SharedInventory};
use crate::kernel::clock::now_unix_ms;
use crate::state_dir::StateDir;

/// Where a file that could not be read back is kept.
pub const DAMAGED_FILE: &str = "inventory.json.damaged";

/// The daemon's inventory and where it is saved.
#[derive(Debug)]
pub struct DaemonInventory {
    pub shared: Arc<SharedInventory>,
    dir: StateDir,
}

/// Opens the inventory of the interface whose state directory is `dir`: what was saved, or an
/// empty one. `None` when `[inventory]` is off or the directory cannot be opened (logged).
pub fn open(cfg: InventoryConfig, dir: &Path, audit: &AuditLog) -> Option<DaemonInventory> {
    if !cfg.enabled {
        return None;
    }
    let dir = match StateDir::open(dir) {
        Ok(dir) => dir,
        Err(e) => {
            tracing::error!(error = %e, "the inventory is off: its directory cannot be opened");
            return None;
        }
    };
    let inventory = load(&dir, cfg, audit);
    Some(DaemonInventory {
        shared: Arc::new(SharedInventory::new(inventory)),
        dir,
    })
}

/// What was saved in `dir`, or an empty inventory when there is nothing or it cannot be read.
pub fn load(dir: &StateDir, cfg: InventoryConfig, audit: &AuditLog) -> Inventory {
    match Inventory::load(dir, cfg) {
        Ok(inventory) => {
            let endpoints = inventory.endpoint_count();
            if endpoints > 0 {
                tracing::info!(endpoints, "inventory restored");
            }
            inventory
        }
        Err(e) => {
            let aside = dir.rename(INVENTORY_FILE, DAMAGED_FILE);
            let kept = match &aside {
                Ok(()) => dir.path().join(DAMAGED_FILE).display().to_string(),
                Err(e) => format!("not moved: {e}"),
            };
            tracing::error!(error = %e, kept_as = kept, "the saved inventory cannot be read; starting with an empty one");
            audit_self(
                audit,
                "inventory_load",
                json!({"file": dir.path().join(INVENTORY_FILE)}),
                false,
                json!({"error": e.to_string(), "kept_as": kept}),
            );
            Inventory::new(cfg)
        }
    }
}

impl DaemonInventory {
    /// Writes the inventory: copied under the lock, written outside it, on a blocking thread
    /// (the write syncs to disk).
    async fn save(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let saved = tokio::task::spawn_blocking(move || {
            let copy = me.shared.read(Inventory::clone);
            copy.save(&me.dir, now_unix_ms())
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "saving the inventory failed"),
            Err(e) => tracing::error!(error = %e, "the inventory saver failed"),
        }
    }
}

/// Saves every `save_interval` while something changed; at `stop`, waits for `serving` (the
/// tasks that record) and saves once more.
pub async fn run_saver(
    inventory: Arc<DaemonInventory>,
    save_interval: std::time::Duration,
    stop: impl Future<Output = ()>,
    serving: Vec<JoinHandle<()>>,
) {
    let mut tick = tokio::time::interval(save_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and what was just loaded needs no saving.
    tick.tick().await;
    let mut last = inventory.shared.changes();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                let now = inventory.shared.changes();
                if now != last {
                    inventory.save().await;
                    last = now;
                }
            }
        }
    }
    for task in serving {
        let _ = task.await;
    }
    if inventory.shared.changes() != last {
        inventory.save().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::Exchange;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    fn audit(dir: &Path) -> AuditLog {
        AuditLog::open(&dir.join("audit.jsonl")).unwrap()
    }

    fn answered(path: &str) -> Exchange {
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut e = Exchange::new(1, client, "api.test", hyper::Method::GET, path);
        e.status = Some(200);
        e.upstream_latency = Some(Duration::from_millis(1));
        e
    }

    #[test]
    fn a_damaged_file_is_kept_aside_audited_and_the_start_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join(INVENTORY_FILE), b"{\"version\": 1, \"hosts\": [").unwrap();
        let log = audit(tmp.path());
        let opened = open(InventoryConfig::default(), &state, &log).unwrap();
        assert_eq!(opened.shared.read(Inventory::endpoint_count), 0);
        assert!(!state.join(INVENTORY_FILE).exists());
        assert_eq!(
            std::fs::read(state.join(DAMAGED_FILE)).unwrap(),
            b"{\"version\": 1, \"hosts\": ["
        );
        let audited = std::fs::read_to_string(tmp.path().join("audit.jsonl")).unwrap();
        assert!(audited.contains("inventory_load"), "{audited}");
    }

    #[tokio::test]
    async fn the_saver_writes_at_stop_after_the_serving_tasks_and_a_start_reads_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let log = audit(tmp.path());
        let cfg = InventoryConfig::default();
        let opened = Arc::new(open(cfg, tmp.path(), &log).unwrap());
        let shared = Arc::clone(&opened.shared);
        // A serving task still recording when the stop comes: its request is saved too.
        let serving = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            shared.record(&answered("/orders/17"));
        });
        let saver = tokio::spawn(run_saver(
            opened,
            Duration::from_secs(3600),
            std::future::ready(()),
            vec![serving],
        ));
        saver.await.unwrap();
        let again = open(cfg, tmp.path(), &log).unwrap();
        let rows = again.shared.read(|i| i.listing(None));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].template, "/orders/{id}");
        assert!(
            open(
                InventoryConfig {
                    enabled: false,
                    ..cfg
                },
                tmp.path(),
                &log
            )
            .is_none()
        );
    }
}
