//! The daemon as a CrowdSec bouncer: it polls the local API's decision stream and keeps one
//! list (origin `crowdsec` by default) equal to the bans CrowdSec currently holds.
//!
//! The first request (`startup=true`) returns every active decision and replaces the list;
//! later requests return what changed since this bouncer's previous pull and update it. When
//! the local API cannot be reached the list stays as it is (enforcement must not lapse because
//! a log analyser restarts) and, once it answers again, a full resync replaces the list,
//! because the deltas of the gap are lost.
//!
//! Files: `config` (the `[crowdsec]` section, the key), `client` (the HTTP request, its body
//! read up to `max_answer_bytes`), `decode` (the answer, one decision at a time),
//! `decisions` (filter and state behind the list), `go_duration` (CrowdSec's lifetimes).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rand::Rng;

use super::{FeedHealth, FeedSink, SharedHealth, SinkError};
use crate::kernel::clock;

mod client;
mod config;
mod decisions;
mod decode;
mod go_duration;

use client::Lapi;
pub use config::{CrowdsecConfig, DEFAULT_MIN_PREFIX_V4, DEFAULT_MIN_PREFIX_V6, read_api_key};
pub use decisions::{Change, Decisions, Filter, MapStats, WireDecision};
pub use decode::{Keep, StreamAnswer, decode};
pub use go_duration::{GoDurationError, parse_go_duration};

/// Where `crowdsec` listens by default (its `api.server.listen_uri`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The firewall bouncer's default poll period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_LIST: &str = "crowdsec";
/// CrowdSec's spelling of the scopes that name addresses.
pub const SCOPE_IP: &str = "Ip";
pub const SCOPE_RANGE: &str = "Range";
pub const DEFAULT_TYPE: &str = "ban";

/// Below this a bouncer would mostly measure the local API's latency.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Above this new bans would take too long to arrive to be worth having.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3_600);
/// Longest one request (connect, answer, body) may take before it counts as a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failure; it doubles per failure up to the poll interval.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Retry delays are drawn from `[(1 - JITTER) * base, base]`, so bouncers restarted together
/// do not retry in lockstep.
const JITTER: f64 = 0.5;
/// How much of an error answer's body goes into `last_error`.
const MAX_ERROR_BODY_CHARS: usize = 200;
/// Lifetimes are capped here (a century: as good as forever for a ban), so adding one to the
/// monotonic clock can never overflow.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);
/// The permission bits of a mode (without file type, setuid, setgid, sticky).
const PERMISSION_BITS: u32 = 0o777;
/// Group and world permission bits: a bouncer key must be readable by its owner alone.
const GROUP_WORLD_BITS: u32 = 0o077;
const API_KEY_HEADER: &str = "x-api-key";
const STREAM_PATH: &str = "/v1/decisions/stream";

// ---- errors --------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum CrowdsecError {
    #[error("crowdsec.{field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot read the bouncer key {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the bouncer key {} has mode {mode:04o}; make it readable by its owner only (chmod 600)",
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    // The key itself is never part of a message.
    #[error("the bouncer key {} must be one line of visible ASCII", .0.display())]
    KeyFormat(PathBuf),
    #[error("the bouncer key is not a valid header value")]
    KeyHeader,
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error(
        "{url}: no answer within {}",
        humantime::format_duration(REQUEST_TIMEOUT)
    )]
    Timeout { url: String },
    #[error("{url}: answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: the answer is longer than crowdsec.max_answer_bytes ({limit} bytes)")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: the answer is not a decision stream: {reason}")]
    Decode { url: String, reason: String },
    #[error("list `{list}` refused the change: {reason}")]
    Sink { list: String, reason: String },
}

// ---- retries -------------------------------------------------------------------------------

/// The retry delay before jitter after `failures` consecutive failures (1 for the first):
/// `INITIAL_BACKOFF` doubling per failure, never more than the poll interval.
pub fn backoff_base(failures: u32, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1);
    let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
    INITIAL_BACKOFF
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(interval)
}

/// `base` shortened by up to `JITTER` of itself; `unit` is uniform in `[0, 1)`.
pub fn jittered(base: Duration, unit: f64) -> Duration {
    base.mul_f64(1.0 - JITTER * unit.clamp(0.0, 1.0))
}

fn backoff(failures: u32, interval: Duration) -> Duration {
    jittered(
        backoff_base(failures, interval),
        rand::rng().random::<f64>(),
    )
}

// ---- the feed ------------------------------------------------------------------------------

fn lock(health: &SharedHealth) -> std::sync::MutexGuard<'_, FeedHealth> {
    health.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record_success(health: &SharedHealth) {
    let mut h = lock(health);
    h.last_success_ms = Some(clock::now_unix_ms());
    h.syncs_total += 1;
    h.degraded = false;
}

fn record_failure(health: &SharedHealth, error: &CrowdsecError) {
    let mut h = lock(health);
    h.last_error = Some(error.to_string());
    h.errors_total += 1;
    h.degraded = true;
}

/// Counts the decisions of an answer that could not be read or used, whether or not the
/// answer is then applied: they were sent either way.
fn record_malformed(health: &SharedHealth, list: &str, stats: &MapStats) {
    let unusable = stats.invalid + stats.malformed;
    if unusable == 0 {
        return;
    }
    tracing::warn!(
        list,
        malformed = stats.malformed,
        invalid = stats.invalid,
        "crowdsec: decisions skipped that could not be read or used"
    );
    let mut h = lock(health);
    h.malformed_skipped_total = h
        .malformed_skipped_total
        .saturating_add(u64::try_from(unusable).unwrap_or(u64::MAX));
}

/// Runs a sink call off the async threads: applying a list may wait for the kernel.
async fn in_sink<F>(sink: &Arc<dyn FeedSink>, list: &str, f: F) -> Result<(), CrowdsecError>
where
    F: FnOnce(&dyn FeedSink) -> Result<(), SinkError> + Send + 'static,
{
    let sink = Arc::clone(sink);
    let sink_error = |reason: &dyn std::fmt::Display| CrowdsecError::Sink {
        list: list.to_string(),
        reason: reason.to_string(),
    };
    tokio::task::spawn_blocking(move || f(sink.as_ref()))
        .await
        .map_err(|e| sink_error(&e))?
        .map_err(|e| sink_error(&e))
}

struct Feed {
    lapi: Lapi,
    filter: Filter,
    list: String,
    source: String,
    sink: Arc<dyn FeedSink>,
    health: SharedHealth,
    /// `None` until a full sync succeeded, and again after any failure.
    synced: Option<Decisions>,
}

impl Feed {
    async fn sync(&mut self) -> Result<(), CrowdsecError> {
        let startup = self.synced.is_none();
        if let Some(max) = self.sink.max_ttl() {
            self.filter.max_ttl = max.min(MAX_TTL);
        }
        let answer = self.lapi.stream(startup, &self.filter).await?;
        let now = Instant::now();
        record_malformed(&self.health, &self.list, &answer.stats);
        match self.synced.take() {
            None => {
                let (state, entries, stats) = Decisions::from_startup(answer, now);
                let count = entries.len();
                let (list, source) = (self.list.clone(), self.source.clone());
                in_sink(&self.sink, &self.list, move |s| {
                    s.replace(&list, &source, entries)
                })
                .await?;
                tracing::info!(list = %self.list, entries = count, ?stats, "crowdsec: full sync");
                self.synced = Some(state);
            }
            Some(mut state) => {
                let (change, stats) = state.apply_delta(answer, now);
                if !change.is_empty() {
                    let (adds, removes) = (change.add.len(), change.remove.len());
                    let (list, source) = (self.list.clone(), self.source.clone());
                    // On failure `state` is dropped with the `take` above: the next round
                    // resyncs in full, since this delta will not be sent again.
                    in_sink(&self.sink, &self.list, move |s| {
                        s.update(&list, &source, change.add, change.remove)
                    })
                    .await?;
                    tracing::debug!(list = %self.list, adds, removes, ?stats, "crowdsec: delta");
                } else if stats.skipped() > 0 {
                    tracing::debug!(list = %self.list, ?stats, "crowdsec: nothing to apply");
                }
                self.synced = Some(state);
            }
        }
        Ok(())
    }
}

/// Keeps list `cfg.list` equal to CrowdSec's active decisions until `shutdown` completes.
///
/// Failures never clear the list: they mark `health` degraded and are retried with a
/// jittered exponential backoff (from `INITIAL_BACKOFF` up to `cfg.interval`); the first
/// success after a failure is a full resync. `api_key` is never logged nor put in `health`.
pub async fn run(
    cfg: CrowdsecConfig,
    api_key: String,
    sink: Arc<dyn FeedSink>,
    health: SharedHealth,
    shutdown: impl Future<Output = ()>,
) {
    if let Err(e) = cfg.validate() {
        tracing::error!(error = %e, "crowdsec feed not started");
        record_failure(&health, &e);
        return;
    }
    run_unchecked(cfg, api_key, sink, health, shutdown).await;
}

/// `run` without the bounds on the configuration, so tests can poll faster than an operator may.
async fn run_unchecked(
    cfg: CrowdsecConfig,
    api_key: String,
    sink: Arc<dyn FeedSink>,
    health: SharedHealth,
    shutdown: impl Future<Output = ()>,
) {
    let lapi = match Lapi::new(&cfg, &api_key) {
        Ok(lapi) => lapi,
        Err(e) => {
            tracing::error!(error = %e, "crowdsec feed not started");
            record_failure(&health, &e);
            return;
        }
    };
    drop(api_key);
    let mut feed = Feed {
        source: lapi.base.clone(),
        lapi,
        filter: Filter::new(&cfg),
        list: cfg.list.clone(),
        sink,
        health: health.clone(),
        synced: None,
    };
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            () = &mut shutdown => return,
            outcome = feed.sync() => outcome,
        };
        let delay = match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(list = %cfg.list, failures, "crowdsec: local API back, resynced");
                }
                failures = 0;
                record_success(&health);
                cfg.interval
            }
            Err(e) => {
                feed.synced = None;
                failures = failures.saturating_add(1);
                record_failure(&health, &e);
                let delay = backoff(failures, cfg.interval);
                tracing::warn!(
                    list = %cfg.list,
                    error = %e,
                    failures,
                    retry_in = %humantime::format_duration(delay),
                    "crowdsec: sync failed; the list stays as it is"
                );
                delay
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The feed on its own thread with its own runtime, for callers without one (tests, tools).
/// Stops when the handle is stopped or dropped.
pub struct FeedThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts `run` on a new thread.
pub fn spawn(
    cfg: CrowdsecConfig,
    api_key: String,
    sink: Arc<dyn FeedSink>,
    health: SharedHealth,
) -> std::io::Result<FeedThread> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("crowdsec-feed".into())
        .spawn(move || {
            runtime.block_on(run(cfg, api_key, sink, health, async {
                // A dropped sender stops the feed as well.
                let _ = stopped.await;
            }));
        })?;
    Ok(FeedThread {
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl FeedThread {
    /// Stops the feed and waits for its thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FeedThread {
    fn drop(&mut self) {
        self.shut();
    }
}

#[cfg(test)]
mod tests;
