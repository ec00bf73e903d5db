//! `api-shield run`: load or adopt the shield, restore decisions, serve the control socket,
//! follow kernel events, expire decisions, reload on SIGHUP. Exiting leaves the program
//! attached and enforcing.

pub mod events;
pub mod gateway;
pub mod guard;
pub mod handler;
pub mod lists;
pub mod ops;
pub mod sink;
pub mod start;

use crate::audit::AuditLog;
use crate::config::{Config, load_config};
use crate::kernel::loader::AttachMode;
use anyhow::Result;
use handler::audit_self;
use ops::{State, capacity_of};
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// How often expired decisions and dead auto-blocks are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct RunOptions {
    pub iface: String,
    pub config_path: Option<PathBuf>,
    pub attach_mode: AttachMode,
    pub socket: PathBuf,
}

fn read_config(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(p) => load_config(p).map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(Config::default()),
    }
}

/// Runs the daemon until `shutdown` resolves or SIGTERM / SIGINT arrives. A start that fails
/// once the audit log is open is audited (`start`, result `error`) with the reason.
pub async fn run(opts: RunOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let config = read_config(opts.config_path.as_ref())?;
    let audit = Arc::new(AuditLog::open(&config.audit_log)?);
    let running = match start::start(&opts, config, &audit).await {
        Ok(running) => running,
        Err(e) => {
            audit_self(
                &audit,
                "start",
                json!({"iface": opts.iface}),
                false,
                json!(format!("{e:#}")),
            );
            return Err(e);
        }
    };
    serve(running, &opts, &audit, shutdown).await;
    Ok(())
}

/// Reloads, sweeps and waits for the end; then stops every task and waits for them.
async fn serve(
    running: start::Running,
    opts: &RunOptions,
    audit: &Arc<AuditLog>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let start::Running {
        state,
        gateway,
        stop_tx,
        mut hup,
        server,
        events_task,
        feed_tasks,
        push_task,
        metrics_task,
        _lock,
    } = running;
    let iface = &opts.iface;
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot watch SIGTERM / SIGINT; stopping");
            return;
        }
    };
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&state, audit, opts.config_path.as_ref(), gateway.as_ref()),
            _ = sweep.tick() => {
                let expired = state.lock().unwrap_or_else(PoisonError::into_inner).sweep();
                match expired {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(count = gone.len(), "decisions expired");
                        audit_self(audit, "expire", json!({"nets": gone.iter().map(|d| d.net).collect::<Vec<_>>()}), true, json!(null));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "expiring decisions failed"),
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    for t in feed_tasks {
        let _ = t.await;
    }
    if let Some(t) = push_task {
        match t.await {
            Ok(Err(e)) => tracing::error!(error = %e, "push API failed"),
            Err(e) => tracing::error!(error = %e, "push API task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(g) = gateway {
        for t in g.tasks {
            let _ = t.await;
        }
    }
    if let Some(t) = events_task {
        let _ = t.await;
    }
    if let Err(e) = std::fs::remove_file(&opts.socket) {
        tracing::debug!(error = %e, socket = %opts.socket.display(), "control socket left behind");
    }
    audit_self(
        audit,
        "stop",
        json!({"iface": iface}),
        true,
        json!("program left attached and enforcing"),
    );
    tracing::info!(
        iface,
        "daemon stopped; the XDP program stays attached and enforcing"
    );
}

fn reload(
    state: &Arc<Mutex<State>>,
    audit: &AuditLog,
    path: Option<&PathBuf>,
    gateway: Option<&gateway::Gateway>,
) {
    if let Err(e) = audit.reopen() {
        tracing::error!(error = %e, "reopening the audit log failed");
    }
    let config = match read_config(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; keeping the running config");
            audit_self(audit, "reload", json!({}), false, json!(e.to_string()));
            return;
        }
    };
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if capacity_of(&config) != s.requested_capacity {
        tracing::warn!("capacity changes take effect after `api-shield detach` and a new `run`");
    }
    if config.feeds != s.config.feeds
        || config.crowdsec != s.config.crowdsec
        || config.push != s.config.push
    {
        tracing::warn!("feed changes take effect when the daemon restarts");
    }
    match (gateway, &config.gateway) {
        (Some(g), Some(cfg)) => match g.reload(cfg.clone()) {
            Ok(()) => tracing::info!("gateway reloaded (policy, routes, certificates)"),
            Err(e) => {
                tracing::error!(error = %e, "gateway reload refused; keeping the running gateway");
                audit_self(audit, "reload_gateway", json!({}), false, json!(e));
            }
        },
        (None, None) => {}
        _ => tracing::warn!("adding or removing [gateway] takes effect when the daemon restarts"),
    }
    if config.metrics != s.config.metrics {
        tracing::warn!("metrics listener changes take effect when the daemon restarts");
    }
    let seeds = s.shield.settings().seeds;
    let settings = config.kernel_config(seeds, 0);
    let ports = config.port_bitmap();
    // The lists (with the new management allowlist) first; the new settings only once they
    // hold, so a refused reload leaves the kernel exactly as it was.
    let old = std::mem::replace(&mut s.config, config);
    let result = match s.reapply() {
        Ok(()) => s
            .shield
            .set_settings(&settings, &ports)
            .map_err(|e| e.to_string()),
        Err(e) => {
            s.config = old;
            Err(e.to_string())
        }
    };
    match result {
        Ok(()) => {
            tracing::info!("config reloaded");
            audit_self(audit, "reload", json!({}), true, json!(null));
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload failed");
            audit_self(audit, "reload", json!({}), false, json!(e));
        }
    }
}
