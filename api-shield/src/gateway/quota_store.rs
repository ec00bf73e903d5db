//! Quota counters across restarts: the policy engine's long-window limit state (calendar
//! quotas, slow token buckets) saved in `state_dir/<iface>/quotas.json` every
//! `quota_state.save_interval` when it changed and once more at shutdown, and restored when
//! the gateway starts. A crash loses at most one save interval of consumption.
//!
//! A damaged, oversize or foreign file is reported and ignored: the gateway starts with fresh
//! counters rather than not at all. Writes are crash-safe and never follow a link the service
//! user planted ([`crate::state_dir`]); the directory is opened at start, as root, and used by
//! the unprivileged process afterwards.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::task::JoinHandle;

use super::config::QuotaStateConfig;
use super::live::SharedLive;
use crate::policy::quota::{FORMAT_VERSION, RestoreReport, SavedLimits, SavedSlot};
use crate::policy::{Engine, Now};
use crate::state_dir::{StateDir, StateDirError};

/// The file, in the interface's state directory.
pub const FILE_NAME: &str = "quotas.json";
/// Longest limit key saved (an identity is far shorter); longer ones are left out, which
/// keeps the file's size bounded by the limiter's capacity.
const MAX_KEY_BYTES: usize = 1024;
/// Bytes one saved slot takes at most: the key, the limit id and the numbers.
const MAX_SLOT_BYTES: u64 = 2048;
/// Room for the file's header and an empty list.
const FILE_OVERHEAD_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum QuotaStoreError {
    #[error(transparent)]
    File(#[from] StateDirError),
    #[error("{path} is damaged ({source}); ignored, counters start afresh")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has format version {found}; this build reads {FORMAT_VERSION}; ignored")]
    Version { path: PathBuf, found: u32 },
    #[error("encoding the quota counters: {0}")]
    Encode(#[source] serde_json::Error),
}

/// The largest file a limiter of `max_tracked_keys` slots writes.
fn max_file_bytes(max_tracked_keys: usize) -> u64 {
    u64::try_from(max_tracked_keys)
        .unwrap_or(u64::MAX)
        .saturating_mul(MAX_SLOT_BYTES)
        .saturating_add(FILE_OVERHEAD_BYTES)
}

/// Where the counters live and which of them are saved.
#[derive(Debug)]
pub struct QuotaStore {
    dir: StateDir,
    cfg: QuotaStateConfig,
}

impl QuotaStore {
    /// Opens (creating it if missing) the state directory `dir`.
    pub fn open(dir: &Path, cfg: QuotaStateConfig) -> Result<Self, QuotaStoreError> {
        Ok(Self {
            dir: StateDir::open(dir)?,
            cfg,
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(FILE_NAME)
    }

    /// Puts the saved counters back into `engine`'s limiter (nothing when there is no file).
    pub fn restore(&self, engine: &Engine, now: Now) -> Result<RestoreReport, QuotaStoreError> {
        let max = max_file_bytes(engine.config().limiter.max_tracked_keys);
        let Some(bytes) = self.dir.read(FILE_NAME, max)? else {
            return Ok(RestoreReport::default());
        };
        let corrupt = |source| QuotaStoreError::Corrupt {
            path: self.path(),
            source,
        };
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let found = serde_json::from_slice::<Version>(&bytes)
            .map_err(corrupt)?
            .version;
        if found != FORMAT_VERSION {
            return Err(QuotaStoreError::Version {
                path: self.path(),
                found,
            });
        }
        let saved: SavedLimits = serde_json::from_slice(&bytes).map_err(corrupt)?;
        Ok(engine.limiter().restore(&saved, &engine.limit_specs(), now))
    }

    /// Writes `engine`'s long-window counters; returns how many were saved.
    pub fn save(&self, engine: &Engine, now: Now) -> Result<usize, QuotaStoreError> {
        let mut saved = engine
            .limiter()
            .export(&engine.limit_specs(), self.cfg.min_window, now);
        saved.slots.retain(|s| {
            let (SavedSlot::Window { key, .. } | SavedSlot::Bucket { key, .. }) = s;
            key.len() <= MAX_KEY_BYTES
        });
        let bytes = serde_json::to_vec(&saved).map_err(QuotaStoreError::Encode)?;
        self.dir.write_atomic(FILE_NAME, &bytes)?;
        Ok(saved.slots.len())
    }
}

/// Restores the counters into the engine `live` holds now, logging what came of it.
pub fn restore_at_start(store: &QuotaStore, live: &SharedLive) {
    let engine = Arc::clone(&live.load().engine);
    match store.restore(&engine, Now::system()) {
        Ok(r) => tracing::info!(
            restored = r.restored,
            unknown_limit = r.unknown_limit,
            expired = r.expired,
            no_room = r.no_room,
            file = %store.path().display(),
            "quota counters restored"
        ),
        Err(e) => tracing::error!(error = %e, "quota counters not restored"),
    }
}

async fn save_now(store: &Arc<QuotaStore>, live: &SharedLive) {
    let engine = Arc::clone(&live.load().engine);
    let store = Arc::clone(store);
    let saved = tokio::task::spawn_blocking(move || store.save(&engine, Now::system())).await;
    match saved {
        Ok(Ok(n)) => tracing::debug!(counters = n, "quota counters saved"),
        Ok(Err(e)) => tracing::error!(error = %e, "saving quota counters failed"),
        Err(e) => tracing::error!(error = %e, "the quota saver panicked"),
    }
}

/// Saves every `save_interval` when the counters changed, until `stop`; then waits for the
/// serving tasks (requests in flight still count) and saves once more.
pub async fn run_saver(
    store: Arc<QuotaStore>,
    live: SharedLive,
    stop: impl Future<Output = ()>,
    serving: Vec<JoinHandle<()>>,
) {
    let mut tick = tokio::time::interval(store.cfg.save_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and what was just restored needs no saving.
    tick.tick().await;
    let changes = |live: &SharedLive| {
        let engine = Arc::clone(&live.load().engine);
        (Arc::as_ptr(&engine).addr(), engine.limiter().changes())
    };
    let mut last = changes(&live);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                let now = changes(&live);
                if now != last {
                    save_now(&store, &live).await;
                    last = now;
                }
            }
        }
    }
    for task in serving {
        let _ = task.await;
    }
    save_now(&store, &live).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{NoFetcher, PolicyConfig};
    use std::time::Duration;

    fn engine(max_tracked_keys: usize) -> Engine {
        let policy = format!(
            "[limiter]\nmax_tracked_keys = {max_tracked_keys}\n\
             [plans.p]\nquota = [{{ name = \"daily\", limit = 3, window = \"day\" }}]\n"
        );
        Engine::new(
            PolicyConfig::from_toml_str(&policy).unwrap(),
            Arc::new(NoFetcher),
        )
        .unwrap()
    }

    fn consume(engine: &Engine, key: &str, now: Now) {
        let specs = engine.limit_specs();
        assert!(engine.limiter().check(&[(specs[0], key.into())], now)[0].allowed);
    }

    #[test]
    fn saved_counters_come_back_in_a_new_engine() {
        let dir = tempfile::tempdir().unwrap();
        let store = QuotaStore::open(dir.path(), QuotaStateConfig::default()).unwrap();
        let (before, now) = (engine(100), Now::system());
        consume(&before, "id:a", now);
        consume(&before, "id:a", now);
        assert_eq!(store.save(&before, now).unwrap(), 1);
        let after = engine(100);
        assert_eq!(store.restore(&after, now).unwrap().restored, 1);
        let specs = after.limit_specs();
        let s = after.limiter().check(&[(specs[0], "id:a".into())], now);
        assert_eq!((s[0].allowed, s[0].remaining), (true, 0));
    }

    #[test]
    fn a_damaged_foreign_or_oversize_file_is_reported_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = QuotaStore::open(dir.path(), QuotaStateConfig::default()).unwrap();
        let path = dir.path().join(FILE_NAME);
        let e = engine(1);
        for (text, want) in [
            ("{\"version\": 1, \"slots\": [", "damaged"),
            ("\0\u{1}garbage", "damaged"),
            ("{\"version\": 99, \"slots\": []}", "format version 99"),
            (
                "{\"version\": 1, \"saved_at\": 0, \"slots\": [{\"kind\": \"window\"}]}",
                "damaged",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = store.restore(&e, Now::system()).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(FILE_NAME), "{err}");
            assert_eq!(e.limiter().stats().tracked, 0);
        }
        // One tracked key allows a file of a few kilobytes, not more.
        let big = format!(
            "{{\"version\": 1, \"saved_at\": 0, \"slots\": [], \"pad\": \"{}\"}}",
            "x".repeat(usize::try_from(max_file_bytes(1)).unwrap())
        );
        std::fs::write(&path, big).unwrap();
        let err = store.restore(&e, Now::system()).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn over_long_keys_and_short_limits_are_not_saved() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = QuotaStateConfig {
            min_window: Duration::from_secs(2 * 86_400),
            ..QuotaStateConfig::default()
        };
        let store = QuotaStore::open(dir.path(), cfg).unwrap();
        let (e, now) = (engine(100), Now::system());
        consume(&e, "id:a", now);
        assert_eq!(store.save(&e, now).unwrap(), 0, "a day is below min_window");
        let store = QuotaStore::open(dir.path(), QuotaStateConfig::default()).unwrap();
        consume(&e, &"k".repeat(MAX_KEY_BYTES + 1), now);
        assert_eq!(store.save(&e, now).unwrap(), 1, "only the short key");
    }
}
