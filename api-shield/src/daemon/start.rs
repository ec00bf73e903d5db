//! Everything `run` does before it serves: refuse what would fail later, take the interface,
//! set the kernel up, start every listener and feed, give up root. A failure at any step is
//! the failed start that `run` audits.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, RingBuf};
use serde_json::json;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::handler::{DaemonHandler, audit_self};
use super::ops::{self, State, capacity_of};
use super::reload::Reloader;
use super::{RunOptions, events, gateway, sink};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::control::{self, PeerPolicy};
use crate::decisions::{snapshot::SnapshotDir, store::Store};
use crate::kernel::{clock, loader::Kernel, shield::Shield};
use crate::privilege::{ServiceUser, check_run_as};
use crate::state_dir::{StateDir, StateLock};

/// The lock file in `state_dir/<iface>/` held for the daemon's life: one daemon per interface.
pub const LOCK_FILE: &str = "daemon.lock";

/// A started daemon: what the serving loop drives and, at stop, waits for.
pub struct Running {
    pub state: Arc<Mutex<State>>,
    /// Config reloads, by SIGHUP or over the control socket.
    pub reloader: Arc<Reloader>,
    pub gateway_tasks: Vec<JoinHandle<()>>,
    pub stop_tx: watch::Sender<bool>,
    pub hup: Signal,
    pub server: JoinHandle<()>,
    pub events_task: Option<JoinHandle<()>>,
    pub feed_tasks: Vec<JoinHandle<()>>,
    pub push_task: Option<PushTask>,
    pub metrics_task: Option<JoinHandle<()>>,
    /// Released when the daemon exits, however it exits.
    pub _lock: StateLock,
}

/// Resolves when the stop signal is sent.
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What `restore_shield` hands on: the shield enforcing its restored decisions, attached.
struct Restored {
    state: State,
    lock: StateLock,
    state_root: StateDir,
    service_user: Option<ServiceUser>,
    policy: PeerPolicy,
    adopted: bool,
    /// The `start` audit record's detail.
    started: serde_json::Value,
}

pub async fn start(opts: &RunOptions, config: Config, audit: &Arc<AuditLog>) -> Result<Running> {
    let Restored {
        mut state,
        lock,
        state_root,
        service_user,
        policy,
        adopted,
        started,
    } = restore_shield(opts, config, audit)?;
    let ring = state.shield.kernel.maps.events.take();
    let state = Arc::new(Mutex::new(state));
    let current = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .config
        .clone();

    let listener = control::bind(&opts.socket, policy.group())
        .with_context(|| format!("binding the control socket {}", opts.socket.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let events_task = ring.map(|ring| follow_events(ring, &state, audit, stop_rx.clone()));
    let (feed_tasks, push_task) = start_sources(&current, &state, audit, &stop_rx).await?;
    let (gateway, gateway_tasks, metrics_task) =
        start_gateway_and_metrics(&current, &state, audit, &stop_rx).await?;

    // The control socket is served once everything it can reach has started: a `status` that
    // answers means the daemon is up, and a `reload` finds the gateway it reloads.
    let inventory = gateway.as_ref().and_then(|g| g.inventory.clone());
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
        body_limits: current.import.body_limits(),
        inventory,
    });
    let server = tokio::spawn(control::serve(
        listener,
        policy,
        handler,
        stopped(stop_rx.clone()),
    ));

    let hup = signal(SignalKind::hangup())?;
    if let Some(user) = service_user {
        give_up_root(&user, &state_root, audit, &opts.socket)?;
        audit_self(
            audit,
            "drop_privileges",
            json!({"run_as": user.name}),
            true,
            json!(null),
        );
    }
    audit_self(
        audit,
        "start",
        json!({"iface": opts.iface, "adopted": adopted}),
        true,
        started,
    );
    Ok(Running {
        state,
        reloader,
        gateway_tasks,
        stop_tx,
        hup,
        server,
        events_task,
        feed_tasks,
        push_task,
        metrics_task,
        _lock: lock,
    })
}

/// Takes the interface, opens or adopts the shield, restores the decisions of the snapshot and
/// attaches: from here on the shield enforces what was acknowledged before.
fn restore_shield(opts: &RunOptions, config: Config, audit: &Arc<AuditLog>) -> Result<Restored> {
    let iface = opts.iface.clone();
    let state_root = StateDir::open(&config.state_dir).context("opening state_dir")?;
    let iface_dir = state_root
        .subdir(&iface)
        .context("opening the interface's state directory")?;
    // Before anything is read or changed: a second daemon on the interface would adopt the
    // same pins and overwrite the first one's lists.
    let lock = iface_dir
        .lock_exclusive(LOCK_FILE)
        .with_context(|| format!("taking {iface} for this daemon"))?;
    // Before anything is changed: a start that cannot become `run_as`, or whose first reload
    // would fail as that user, is refused now.
    let service_user = match &config.run_as {
        Some(name) => {
            let files = config.files_read_after_start(opts.config_path.as_deref());
            Some(check_run_as(name, &files)?)
        }
        None => None,
    };
    let caps = capacity_of(&config);
    let kernel = Kernel::open(&iface, &config.pin_root, &caps)
        .with_context(|| format!("opening the shield on {iface}"))?;
    let adopted = kernel.attachment.is_some();
    let mut shield = Shield::new(kernel).context("reading the kernel state")?;
    let snapshot = SnapshotDir::open(iface_dir)?;
    let (store, restored) = load_snapshot(&snapshot, &mut shield, adopted, &iface)?;
    let current = *shield.settings();
    let seeds = if adopted && current.seeds != [0, 0] {
        current.seeds
    } else {
        [rand::random(), rand::random()]
    };
    let settings = config.kernel_config(seeds, 0);
    let ports = config.port_bitmap();
    let policy = control_policy(&config)?;
    let mut state = State {
        shield,
        store,
        config,
        snapshot,
        started: Instant::now(),
        requested_capacity: caps,
        feeds: Default::default(),
        audit: audit.clone(),
        rules_reported: Default::default(),
        expiry_pending: None,
    };
    if restored {
        drop_invalid_restored(&mut state, audit);
        drop_restored_lockouts(&mut state, audit)?;
    }
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
    let started = json!({"program_id": attachment.program_id, "xdp_mode": attachment.xdp_mode, "decisions": state.store.len()});
    Ok(Restored {
        state,
        lock,
        state_root,
        service_user,
        policy,
        adopted,
        started,
    })
}

/// Who may use the control socket: root, and the members of `control_group`.
fn control_policy(config: &Config) -> Result<PeerPolicy> {
    Ok(match &config.control_group {
        Some(g) => PeerPolicy::with_group(
            control::resolve_group(g).with_context(|| format!("control_group {g}"))?,
        ),
        None => PeerPolicy::root_only(),
    })
}

/// The snapshot's decisions (and whether there was one); refuses to clear an adopted shield
/// that holds decisions when there is no snapshot.
fn load_snapshot(
    snapshot: &SnapshotDir,
    shield: &mut Shield,
    adopted: bool,
    iface: &str,
) -> Result<(Store, bool)> {
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
            snapshot.path().display()
        );
    }
    Ok(match snap {
        Some((store, index)) => {
            shield.restore_origins(&index.origin_ids);
            (store, true)
        }
        None => (Store::default(), false),
    })
}

/// Logs and audits each auto-block the kernel reports, until the stop.
fn follow_events(
    ring: RingBuf<MapData>,
    state: &Arc<Mutex<State>>,
    audit: &Arc<AuditLog>,
    rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let audit = audit.clone();
    let state = state.clone();
    tokio::spawn(async move {
        let on_event = move |ev: api_shield_common::state::AutoBlockEvent| {
            let net = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .shield
                .key_net(&ev.key);
            let net = net.map(|n| n.to_string()).unwrap_or_default();
            tracing::warn!(
                source = net,
                strikes = ev.strikes,
                "kernel auto-blocked a source"
            );
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
}

type PushTask = JoinHandle<Result<(), crate::push::PushError>>;

/// Starts every source of decisions besides the control socket: watched list files, the
/// CrowdSec bouncer and the push API.
async fn start_sources(
    current: &Config,
    state: &Arc<Mutex<State>>,
    audit: &Arc<AuditLog>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(Vec<JoinHandle<()>>, Option<PushTask>)> {
    let mut feed_tasks = Vec::new();
    let sink = || {
        Arc::new(sink::StateSink {
            state: state.clone(),
            audit: audit.clone(),
        })
    };
    let health = |name: &str| {
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .feed_health(name)
    };
    for feed in current.feeds.clone() {
        let health = health(&feed.name);
        feed_tasks.push(tokio::spawn(crate::feeds::file::watch(
            feed,
            sink(),
            health,
            stopped(stop_rx.clone()),
        )));
    }
    if let Some(cfg) = current.crowdsec.clone() {
        // A bad key file stops the start: a bouncer that silently enforces nothing is worse.
        let key = cfg
            .read_api_key()
            .map_err(|e| anyhow::anyhow!("crowdsec: {e}"))?;
        let health = health(&cfg.list);
        tracing::info!(url = cfg.url, list = cfg.list, "CrowdSec bouncer starting");
        feed_tasks.push(tokio::spawn(crate::feeds::crowdsec::run(
            cfg,
            key,
            sink(),
            health,
            stopped(stop_rx.clone()),
        )));
    }
    let push_task = match current.push.clone() {
        Some(cfg) => {
            let token = crate::push::Token::from_file(&cfg.token_file)?;
            let listener = crate::push::bind(&cfg).await?;
            tracing::info!(addr = %listener.local_addr()?, tls = listener.is_tls(), "push API listening");
            Some(tokio::spawn(listener.serve(
                token,
                sink(),
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    Ok((feed_tasks, push_task))
}

/// Starts the gateway (when configured) and the metrics listener, which reads the shield's
/// state and the gateway's counters at each scrape.
async fn start_gateway_and_metrics(
    current: &Config,
    state: &Arc<Mutex<State>>,
    audit: &Arc<AuditLog>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(
    Option<Arc<gateway::Gateway>>,
    Vec<JoinHandle<()>>,
    Option<JoinHandle<()>>,
)> {
    // One set shared by the gateway listeners (which count) and the metrics listener (which
    // reads it at each scrape, when a gateway runs).
    let gateway_metrics = Arc::new(crate::gateway::GatewayMetrics::new());
    let scraped_gateway = current
        .gateway
        .is_some()
        .then(|| Arc::clone(&gateway_metrics));
    let (gateway, gateway_tasks) = match current.gateway.clone() {
        Some(cfg) => {
            let (gateway, tasks) = gateway::Gateway::start(
                cfg,
                current.inventory,
                state.clone(),
                audit.clone(),
                Arc::clone(&gateway_metrics),
                stop_rx,
            )
            .await?;
            (Some(Arc::new(gateway)), tasks)
        }
        None => (None, Vec::new()),
    };
    let metrics_task = match current.metrics.clone() {
        Some(cfg) => {
            let listener = crate::metrics::bind(&cfg).await?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening on /metrics");
            let scraped = Arc::clone(state);
            let source: crate::metrics::SnapshotSource = Arc::new(move || {
                let state = scraped.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(state.shield_snapshot()?)
            });
            Some(tokio::spawn(listener.serve(
                source,
                scraped_gateway,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    Ok((gateway, gateway_tasks, metrics_task))
}

/// Hands the state directory and the audit log to `user`, then switches the whole process to
/// it: every map is already open and every socket bound.
fn give_up_root(
    user: &ServiceUser,
    state_root: &StateDir,
    audit: &AuditLog,
    socket: &std::path::Path,
) -> Result<()> {
    state_root
        .chown_tree(user.uid, user.gid)
        .context("handing state_dir to the service user")?;
    audit.hand_over(user.uid.as_raw(), user.gid.as_raw())?;
    // Only to remove it at stop; its mode and group keep deciding who may connect. `lchown`:
    // whatever is at the path now is changed itself, never what a link there points to.
    let _ = std::os::unix::fs::lchown(socket, Some(user.uid.as_raw()), None);
    user.become_user()
        .with_context(|| format!("giving up root for run_as = \"{}\"", user.name))?;
    tracing::info!(
        user = user.name,
        uid = user.uid.as_raw(),
        "running unprivileged from here on"
    );
    Ok(())
}

/// Leaves out of a restored snapshot every entry fresh input would be refused for (see
/// `State::drop_invalid_restored`), logging and auditing each one.
fn drop_invalid_restored(state: &mut State, audit: &AuditLog) {
    for r in state.drop_invalid_restored() {
        tracing::warn!(
            list = r.list,
            net = %r.net,
            why = r.why,
            "not restored: the snapshot entry breaks the input rules"
        );
        audit_self(
            audit,
            "restore_refused",
            json!({"list": r.list, "net": r.net, "action": r.action}),
            false,
            json!(r.why),
        );
    }
}

/// Leaves out of a restored snapshot every block that would now cut this host off (see
/// `State::drop_restored_lockouts`), logging and auditing each one.
fn drop_restored_lockouts(state: &mut State, audit: &AuditLog) -> Result<()> {
    let dropped = state
        .drop_restored_lockouts()
        .map_err(|e| anyhow::anyhow!("restoring decisions: {e}"))?;
    for (list, conflict) in dropped {
        tracing::warn!(
            list,
            net = %conflict.net,
            why = %conflict,
            "not restored: the entry would cut this host off (block it again with --force to keep it)"
        );
        audit_self(
            audit,
            "restore_lockout_skipped",
            json!({"list": list, "net": conflict.net}),
            true,
            json!(conflict.to_string()),
        );
    }
    Ok(())
}
