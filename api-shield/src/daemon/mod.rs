//! `api-shield run`: load or adopt the shield, restore decisions, serve the control socket,
//! follow kernel events, expire decisions, reload on SIGHUP. Exiting leaves the program
//! attached and enforcing.

pub mod events;
pub mod gateway;
pub mod handler;
pub mod instance_lock;
pub mod link_watch;
pub mod ops;
pub mod reload;
pub mod sink;

use crate::audit::AuditLog;
use crate::config::{Config, load_config};
use crate::control::{self, PeerPolicy};
use crate::decisions::{snapshot::SnapshotDir, store::Store};
use crate::kernel::{
    clock,
    loader::{AttachMode, Kernel},
    shield::Shield,
};
use anyhow::{Context, Result, bail};
use handler::{DaemonHandler, audit_self};
use link_watch::{LinkState, LinkWatch};
use ops::{State, capacity_of};
use reload::Reloader;
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};

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

/// Runs the daemon until `shutdown` resolves or SIGTERM / SIGINT arrives.
pub async fn run(opts: RunOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let config = read_config(opts.config_path.as_ref())?;
    let caps = capacity_of(&config);
    let iface = opts.iface.clone();
    // Before anything touches the kernel: one daemon per interface. Held until `run` returns.
    let _instance = instance_lock::InstanceLock::acquire(&config.state_dir, &iface)?;
    let kernel = Kernel::open(&iface, &config.pin_root, &caps)
        .with_context(|| format!("opening the shield on {iface}"))?;
    let adopted = kernel.attachment.is_some();
    let mut shield = Shield::new(kernel).context("reading the kernel state")?;
    let snapshot = SnapshotDir::new(config.state_dir.join(&iface));
    let snap = snapshot.load()?;
    if adopted
        && snap.is_none()
        && shield
            .kernel
            .maps
            .rules
            .as_slice()
            .iter()
            .any(|r| *r != Default::default())
    {
        bail!(
            "the shield on {iface} holds decisions but there is no snapshot in {}: refusing to \
             clear them (was state_dir changed?). Restore the snapshot or `api-shield detach` first",
            snapshot.dir.display()
        );
    }
    let store = match snap {
        Some((store, index)) => {
            shield.restore_origins(&index.origin_ids);
            store
        }
        None => Store::default(),
    };
    let current = *shield.settings();
    let seeds = if adopted && current.seeds != [0, 0] {
        current.seeds
    } else {
        [rand::random(), rand::random()]
    };
    let settings = config.kernel_config(seeds, 0);
    let ports = config.port_bitmap();
    let audit = Arc::new(AuditLog::open(&config.audit_log)?);
    let policy = match &config.control_group {
        Some(g) => PeerPolicy::with_group(
            control::resolve_group(g).with_context(|| format!("control_group {g}"))?,
        ),
        None => PeerPolicy::root_only(),
    };
    let mut state = State {
        shield,
        store,
        config,
        snapshot,
        started: Instant::now(),
        requested_capacity: caps,
        feeds: Default::default(),
    };
    // Lists first, settings second: if the lists cannot be applied the start is refused and
    // an adopted program keeps enforcing exactly what it had, settings included.
    state
        .reapply()
        .map_err(|e| anyhow::anyhow!("restoring decisions: {e}"))?;
    state
        .shield
        .set_settings(&settings, &ports)
        .context("writing settings")?;
    let attachment = state
        .shield
        .kernel
        .attach(opts.attach_mode)
        .with_context(|| format!("attaching to {iface}"))?
        .clone();
    tracing::info!(
        iface,
        mode = attachment.xdp_mode,
        program_id = attachment.program_id,
        adopted,
        decisions = state.store.len(),
        "shield running"
    );
    audit_self(
        &audit,
        "start",
        json!({"iface": iface, "adopted": adopted}),
        true,
        json!({"program_id": attachment.program_id, "xdp_mode": attachment.xdp_mode, "decisions": state.store.len()}),
    );
    let ring = state.shield.kernel.maps.events.take();
    let state = Arc::new(Mutex::new(state));

    let listener = control::bind(&opts.socket, policy.group())
        .with_context(|| format!("binding the control socket {}", opts.socket.display()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let events_task = ring.map(|ring| {
        let audit = audit.clone();
        let state = state.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move {
            let on_event = move |ev: api_shield_common::state::AutoBlockEvent| {
                let net = state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .shield
                    .key_net(&ev.key);
                let net = net.map(|n| n.to_string()).unwrap_or_default();
                tracing::warn!(source = net, strikes = ev.strikes, "kernel auto-blocked a source");
                audit_self(
                    &audit,
                    "auto_block",
                    json!({"net": net, "origin": ops::ORIGIN_KERNEL_NAME}),
                    true,
                    json!({"strikes": ev.strikes, "expires_at_ms": clock::wall_ms(ev.expires_at_ns)}),
                );
            };
            if let Err(e) = events::read_events(ring, on_event, stopped(rx)).await {
                tracing::error!(error = %e, "reading kernel events failed");
            }
        })
    });

    let mut feed_tasks = Vec::new();
    let feeds = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .config
        .feeds
        .clone();
    for feed in feeds {
        let health = state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .feed_health(&feed.name);
        let sink = Arc::new(sink::StateSink {
            state: state.clone(),
            audit: audit.clone(),
        });
        feed_tasks.push(tokio::spawn(crate::feeds::file::watch(
            feed,
            sink,
            health,
            stopped(stop_rx.clone()),
        )));
    }

    let crowdsec_config = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .config
        .crowdsec
        .clone();
    if let Some(cfg) = crowdsec_config {
        // A bad key file stops the start: a bouncer that silently enforces nothing is worse.
        let key = cfg
            .read_api_key()
            .map_err(|e| anyhow::anyhow!("crowdsec: {e}"))?;
        let health = state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .feed_health(&cfg.list);
        let sink = Arc::new(sink::StateSink {
            state: state.clone(),
            audit: audit.clone(),
        });
        tracing::info!(url = cfg.url, list = cfg.list, "CrowdSec bouncer starting");
        feed_tasks.push(tokio::spawn(crate::feeds::crowdsec::run(
            cfg,
            key,
            sink,
            health,
            stopped(stop_rx.clone()),
        )));
    }

    let push_config = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .config
        .push
        .clone();
    let push_task = match push_config {
        Some(cfg) => {
            let token = crate::push::Token::from_file(&cfg.token_file)?;
            let listener = crate::push::bind(&cfg).await?;
            tracing::info!(addr = %listener.local_addr()?, tls = listener.is_tls(), "push API listening");
            let backend = Arc::new(sink::StateSink {
                state: state.clone(),
                audit: audit.clone(),
            });
            Some(tokio::spawn(listener.serve(
                token,
                backend,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };

    let gateway_config = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .config
        .gateway
        .clone();
    // One set shared by the gateway listeners (which count) and the metrics listener (which
    // reads it at each scrape, when a gateway runs).
    let gateway_metrics = Arc::new(crate::gateway::GatewayMetrics::new());
    let scraped_gateway = gateway_config
        .is_some()
        .then(|| Arc::clone(&gateway_metrics));
    let (gateway, gateway_tasks) = match gateway_config {
        Some(cfg) => {
            let (gateway, tasks) = gateway::Gateway::start(
                cfg,
                state.clone(),
                audit.clone(),
                Arc::clone(&gateway_metrics),
                &stop_rx,
            )
            .await?;
            (Some(Arc::new(gateway)), tasks)
        }
        None => (None, Vec::new()),
    };

    let metrics_config = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .config
        .metrics
        .clone();
    let metrics_task = match metrics_config {
        Some(cfg) => {
            let listener = crate::metrics::bind(&cfg).await?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening on /metrics");
            Some(tokio::spawn(listener.serve(
                state.clone(),
                scraped_gateway,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };

    // The control socket is served once everything it can reach has started: a `status` that
    // answers means the daemon is up, and a `reload` finds the gateway it reloads.
    let reloader = Arc::new(Reloader::new(
        state.clone(),
        audit.clone(),
        opts.config_path.clone(),
        gateway,
    ));
    let handler = Arc::new(DaemonHandler {
        state: state.clone(),
        audit: audit.clone(),
        reloader: Arc::clone(&reloader),
    });
    let server = tokio::spawn(control::serve(
        listener,
        policy,
        handler,
        stopped(stop_rx.clone()),
    ));

    let mut hup = signal(SignalKind::hangup())?;
    let run_as = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .config
        .run_as
        .clone();
    if let Some(name) = run_as {
        give_up_root(&name, &state, &opts.socket)?;
        audit_self(
            &audit,
            "drop_privileges",
            json!({"run_as": name}),
            true,
            json!(null),
        );
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
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
            _ = sweep.tick() => {
                let attachment = state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .shield
                    .kernel
                    .attachment
                    .clone();
                link_watch.observe(&LinkState::read(attachment.as_ref()), &iface, &audit);
                let expired = state.lock().unwrap_or_else(PoisonError::into_inner).sweep();
                match expired {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(count = gone.len(), "decisions expired");
                        audit_self(&audit, "expire", json!({"nets": gone.iter().map(|d| d.net).collect::<Vec<_>>()}), true, json!(null));
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
    for t in gateway_tasks {
        let _ = t.await;
    }
    if let Some(t) = events_task {
        let _ = t.await;
    }
    if let Err(e) = std::fs::remove_file(&opts.socket) {
        tracing::debug!(error = %e, socket = %opts.socket.display(), "control socket left behind");
    }
    audit_self(
        &audit,
        "stop",
        json!({"iface": iface}),
        true,
        json!("program left attached and enforcing"),
    );
    tracing::info!(
        iface,
        "daemon stopped; the XDP program stays attached and enforcing"
    );
    Ok(())
}

/// Hands the snapshot and audit log to `name`, then switches the whole process to it: every
/// map is already open and every socket bound.
fn give_up_root(name: &str, state: &Arc<Mutex<State>>, socket: &std::path::Path) -> Result<()> {
    let user = crate::privilege::ServiceUser::resolve(name)?;
    {
        let s = state.lock().unwrap_or_else(PoisonError::into_inner);
        user.hand_over(&s.config.state_dir)?;
        user.hand_over(&s.config.audit_log)?;
    }
    // Only to remove it at stop; its mode and group keep deciding who may connect.
    let _ = std::os::unix::fs::chown(socket, Some(user.uid.as_raw()), None);
    user.become_user()
        .with_context(|| format!("giving up root for run_as = \"{name}\""))?;
    tracing::info!(
        user = name,
        uid = user.uid.as_raw(),
        "running unprivileged from here on"
    );
    Ok(())
}
