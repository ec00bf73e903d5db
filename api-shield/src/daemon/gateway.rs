//! The daemon's gateway: the check endpoint and the TLS-terminating listeners, one policy
//! engine behind both, JWKS refreshed in the background, everything swapped on SIGHUP.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::escalate::StateEscalator;
use super::inventory;
use super::ops::State;
use crate::audit::AuditLog;
use crate::gateway::config::GatewayConfig;
use crate::gateway::contracts::Contracts;
use crate::gateway::jwks_http::HttpJwksFetcher;
use crate::gateway::live::{Live, LiveError, SharedLive};
use crate::gateway::password_pool::PasswordPool;
use crate::gateway::proxy::{self, Serving};
use crate::gateway::quota_store::{self, QuotaStore};
use crate::gateway::{Escalator, GatewayMetrics};
use crate::inventory::{InventoryConfig, SharedInventory};
use crate::policy::JwksFetcher;

/// How often stale JWKS caches are refreshed (each respects its own cooldown).
const JWKS_REFRESH_EVERY: Duration = Duration::from_secs(5);

pub struct Gateway {
    pub live: SharedLive,
    fetcher: Arc<dyn JwksFetcher>,
    /// The inventory the gateway records into, when `[inventory]` is on.
    pub inventory: Option<Arc<SharedInventory>>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The interface's state directory.
fn state_path(state: &Mutex<State>) -> std::path::PathBuf {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .snapshot
        .path()
        .to_owned()
}

/// Opened at start, as root, before any request is served: the counters continue from the
/// last save, and the directory stays reachable once the process runs as `run_as`. A store
/// that cannot be opened is logged, and the counters are not saved.
fn open_quota_store(
    cfg: &GatewayConfig,
    state: &Mutex<State>,
    live: &SharedLive,
) -> Option<Arc<QuotaStore>> {
    if !cfg.quota_state.enabled {
        return None;
    }
    let dir = state_path(state);
    match QuotaStore::open(&dir, cfg.quota_state.clone()) {
        Ok(store) => {
            quota_store::restore_at_start(&store, live);
            Some(Arc::new(store))
        }
        Err(e) => {
            tracing::error!(error = %e, "quota counters will not be saved");
            None
        }
    }
}

/// Binds the check endpoint and the listeners and serves them; returns the tasks that count
/// requests.
async fn serve(
    cfg: &GatewayConfig,
    serving: Serving,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut counting = Vec::new();
    let check = crate::gateway::bind(cfg).await?;
    tracing::info!(addr = %check.local_addr()?, "gateway check endpoint listening");
    counting.push(tokio::spawn(check.serve(
        Arc::clone(&serving.live),
        Arc::clone(&serving.escalator),
        Arc::clone(&serving.metrics),
        Arc::clone(&serving.passwords),
        serving.recorder.clone(),
        stopped(stop.clone()),
    )));
    let threads = cfg.serving_threads();
    let listeners = proxy::bind(&cfg.listeners, threads)?;
    for l in &listeners {
        let addr = l.local_addr().context("gateway listener address")?;
        tracing::info!(%addr, tls = l.is_tls(), threads, "gateway listening");
    }
    if !listeners.is_empty() {
        let handles = proxy::spawn_threads(listeners, &serving, stop)
            .context("starting the gateway threads")?;
        counting.push(tokio::task::spawn_blocking(move || {
            for h in handles {
                if h.join().is_err() {
                    tracing::error!("a gateway thread panicked");
                }
            }
        }));
    }
    Ok(counting)
}

/// Refreshes stale JWKS caches in the background until the stop.
fn refresh_jwks(live: SharedLive, rx: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(JWKS_REFRESH_EVERY);
        let mut stop = std::pin::pin!(stopped(rx));
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => {
                    let engine = Arc::clone(&live.load().engine);
                    let refreshed = tokio::task::spawn_blocking(move || engine.refresh_jwks(Instant::now())).await;
                    if let Ok(n) = refreshed && n > 0 {
                        tracing::info!(key_sets = n, "JWKS refreshed");
                    }
                }
            }
        }
    })
}

impl Gateway {
    /// Loads the policy, routes and certificates (a problem refuses the start, naming it),
    /// binds every listener and starts serving. Returns the serving tasks beside the gateway.
    pub async fn start(
        cfg: GatewayConfig,
        inventory_cfg: InventoryConfig,
        state: Arc<Mutex<State>>,
        audit: Arc<AuditLog>,
        metrics: Arc<GatewayMetrics>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(Self, Vec<JoinHandle<()>>)> {
        let fetcher: Arc<dyn JwksFetcher> = Arc::new(HttpJwksFetcher::default());
        let live =
            Live::load(cfg.clone(), None, Arc::clone(&fetcher)).map_err(anyhow::Error::msg)?;
        let live: SharedLive = Arc::new(ArcSwap::from_pointee(live));
        let quota_store = open_quota_store(&cfg, &state, &live);
        let inventory = inventory::open(inventory_cfg, &state_path(&state), &audit).map(Arc::new);
        let recorder = inventory.as_ref().map(|i| Arc::clone(&i.shared));
        if let Some(shared) = &recorder {
            metrics.set_inventory(Arc::clone(shared));
            register_spec_paths(shared, &live.load().contracts);
        }
        let escalator: Arc<dyn Escalator> = Arc::new(StateEscalator { state, audit });
        let mut tasks = Vec::new();
        // Bound at start, like the serving threads: a reload does not resize it.
        let passwords = PasswordPool::start(cfg.password_workers(), cfg.limits.password_queue)
            .context("starting the password hashing threads")?;
        let serving = Serving {
            live: Arc::clone(&live),
            escalator,
            metrics,
            passwords,
            recorder: recorder.clone(),
        };
        // Tasks that count requests: the last save waits for them.
        let mut counting = serve(&cfg, serving, stop).await?;
        if let Some(inventory) = inventory {
            // Its last save waits for the requests in flight; the quota saver waits for it.
            counting = vec![tokio::spawn(inventory::run_saver(
                inventory,
                inventory_cfg.save_interval,
                stopped(stop.clone()),
                counting,
            ))];
        }
        match quota_store {
            Some(store) => tasks.push(tokio::spawn(quota_store::run_saver(
                store,
                Arc::clone(&live),
                stopped(stop.clone()),
                counting,
            ))),
            None => tasks.extend(counting),
        }
        tasks.push(refresh_jwks(Arc::clone(&live), stop.clone()));
        Ok((
            Self {
                live,
                fetcher,
                inventory: recorder,
            },
            tasks,
        ))
    }

    /// Reads `cfg`, its policy file and certificates into the gateway's next value without
    /// swapping it in, or names every problem. Listener addresses are bound once: a change to
    /// them comes back as a warning (it needs a restart), the rest is reloaded.
    pub fn prepare_reload(&self, cfg: GatewayConfig) -> Result<(Live, Option<String>), LiveError> {
        let current = self.live.load_full();
        let addresses = |c: &GatewayConfig| {
            (
                c.check_listen,
                c.listeners
                    .iter()
                    .map(|l| (l.listen, l.proxy_protocol, l.tls_cert.is_some()))
                    .collect::<Vec<_>>(),
            )
        };
        let warning = (addresses(&cfg) != addresses(&current.cfg)).then(|| {
            "gateway listener addresses, TLS on/off and PROXY settings change at restart; the \
             rest is reloaded"
                .to_string()
        });
        let next = Live::load(cfg, Some(&current), Arc::clone(&self.fetcher))?;
        Ok((next, warning))
    }

    /// Swaps in a value `prepare_reload` built: the next request of every connection sees it.
    pub fn commit_reload(&self, next: Live) {
        if let Some(inventory) = &self.inventory {
            register_spec_paths(inventory, &next.contracts);
        }
        self.live.store(Arc::new(next));
    }
}

/// Tells the inventory the paths the OpenAPI documents declare, so their templates win over
/// learned ones. A document path the templater cannot take is logged and left to learning:
/// the inventory is an observer and must not refuse a contract the gateway enforces.
fn register_spec_paths(inventory: &SharedInventory, contracts: &Contracts) {
    for (host, templates) in contracts.spec_paths() {
        let paths: Vec<&str> = templates.iter().map(String::as_str).collect();
        let registered = inventory.update(|inv| match host {
            Some(host) => inv.register_host_spec_paths(host, &paths),
            None => inv.register_spec_paths(&paths),
        });
        if let Err(e) = registered {
            tracing::warn!(host = host.unwrap_or("*"), error = %e, "inventory: spec paths not registered");
        }
    }
}
