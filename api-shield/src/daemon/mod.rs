//! `api-shield run`: load or adopt the shield, restore decisions, serve the control socket,
//! follow kernel events, expire decisions, reload on SIGHUP. Exiting leaves the program
//! attached and enforcing.

pub mod escalate;
pub mod events;
pub mod gateway;
pub mod guard;
pub mod handler;
pub mod import;
pub mod instance_lock;
pub mod inventory;
pub mod link_watch;
pub mod lists;
pub mod ops;
pub mod readings;
pub mod reload;
pub mod restore;
pub mod sink;
pub mod start;

use crate::audit::AuditLog;
use crate::config::{Config, load_config};
use crate::kernel::loader::AttachMode;
use anyhow::Result;
use handler::audit_self;
use link_watch::{LinkState, LinkWatch};
use ops::State;
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

/// How often expired decisions and dead auto-blocks are swept, and the attachment checked.
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
        reloader,
        gateway_tasks,
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
    // Checked at each sweep: a detach from outside the daemon is reported within a second.
    let mut link_watch = LinkWatch::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reloader.on_signal(),
            _ = sweep.tick() => sweep_once(&state, &mut link_watch, iface, audit),
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    let tasks = Tasks {
        feed_tasks,
        push_task,
        metrics_task,
        gateway_tasks,
        events_task,
    };
    tasks.wait().await;
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

/// Checks the attachment, then expires decisions and dead auto-blocks.
fn sweep_once(state: &Mutex<State>, link_watch: &mut LinkWatch, iface: &str, audit: &AuditLog) {
    let attachment = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .shield
        .kernel
        .attachment
        .clone();
    link_watch.observe(&LinkState::read(attachment.as_ref()), iface, audit);
    let swept_at = std::time::Instant::now();
    let expired = state.lock().unwrap_or_else(PoisonError::into_inner).sweep();
    match expired {
        Ok(gone) if !gone.is_empty() => {
            // How long the rebuild took: with large lists it is the sweep's cost.
            let took_ms = swept_at.elapsed().as_millis() as u64;
            tracing::info!(count = gone.len(), took_ms, "decisions expired");
            audit_self(
                audit,
                "expire",
                json!({"nets": gone.iter().map(|d| d.net).collect::<Vec<_>>()}),
                true,
                json!(null),
            );
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "expiring decisions failed"),
    }
}

/// The tasks the stop waits for, once the control socket is closed.
struct Tasks {
    feed_tasks: Vec<JoinHandle<()>>,
    push_task: Option<JoinHandle<Result<(), crate::push::PushError>>>,
    metrics_task: Option<JoinHandle<()>>,
    gateway_tasks: Vec<JoinHandle<()>>,
    events_task: Option<JoinHandle<()>>,
}

impl Tasks {
    /// Waits for each, in the order they were stopped in before.
    async fn wait(self) {
        for t in self.feed_tasks {
            let _ = t.await;
        }
        if let Some(t) = self.push_task {
            match t.await {
                Ok(Err(e)) => tracing::error!(error = %e, "push API failed"),
                Err(e) => tracing::error!(error = %e, "push API task failed"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(t) = self.metrics_task {
            let _ = t.await;
        }
        for t in self.gateway_tasks {
            let _ = t.await;
        }
        if let Some(t) = self.events_task {
            let _ = t.await;
        }
    }
}
