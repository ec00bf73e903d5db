//! Re-reading the config (SIGHUP or `api-shield reload`): everything is checked before
//! anything is swapped, so a reload either takes effect whole or changes nothing, and its
//! outcome (every error, or the warnings of a good one) goes back to whoever asked.

use super::gateway::Gateway;
use super::handler::audit_self;
use super::ops::{State, capacity_of};
use crate::audit::AuditLog;
use crate::config::{Config, load_config};
use crate::control::ReloadBody;
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a reload changed nothing: every problem found, one line each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.join("\n"))]
pub struct ReloadError {
    pub errors: Vec<String>,
}

impl ReloadError {
    fn one(error: impl Into<String>) -> Self {
        Self {
            errors: vec![error.into()],
        }
    }
}

/// Everything a reload touches. One per daemon, shared by the signal handler and the control
/// socket; reloads run one at a time.
pub struct Reloader {
    state: Arc<Mutex<State>>,
    audit: Arc<AuditLog>,
    config_path: Option<PathBuf>,
    gateway: Option<Arc<Gateway>>,
    /// Serialises reloads: two at once could interleave their config and gateway swaps.
    running: Mutex<()>,
}

fn read_config(path: Option<&PathBuf>) -> Result<Config, ReloadError> {
    match path {
        Some(p) => load_config(p).map_err(|e| ReloadError {
            errors: e.errors().iter().map(ToString::to_string).collect(),
        }),
        None => Ok(Config::default()),
    }
}

impl Reloader {
    pub fn new(
        state: Arc<Mutex<State>>,
        audit: Arc<AuditLog>,
        config_path: Option<PathBuf>,
        gateway: Option<Arc<Gateway>>,
    ) -> Self {
        Self {
            state,
            audit,
            config_path,
            gateway,
            running: Mutex::new(()),
        }
    }

    /// SIGHUP: logs and audits the outcome as the daemon's own act.
    pub fn on_signal(&self) {
        let outcome = self.reload();
        let (ok, detail) = match &outcome {
            Ok(report) => (true, json!(report)),
            Err(e) => (false, json!(e.errors)),
        };
        audit_self(
            &self.audit,
            "reload",
            json!({"trigger": "sighup"}),
            ok,
            detail,
        );
    }

    /// Reopens the audit log (log rotation: a move, then a reload), re-reads the config file,
    /// its policy and certificates, and applies them whole, or changes nothing and names every
    /// problem. Logs the outcome; auditing it is the caller's.
    pub fn reload(&self) -> Result<ReloadBody, ReloadError> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = self.audit.reopen() {
            tracing::error!(error = %e, "reopening the audit log failed");
        }
        let outcome = self.try_reload();
        if let Ok(report) = &outcome {
            for w in &report.warnings {
                tracing::warn!("{w}");
            }
            tracing::info!("config reloaded");
        }
        outcome
    }

    fn try_reload(&self) -> Result<ReloadBody, ReloadError> {
        let refused = |e: ReloadError| {
            // One line per reload, however many problems, so a log reader counts reloads.
            let errors = e.errors.join("; ");
            tracing::error!(errors, "config reload refused; keeping the running config");
            e
        };
        let config = read_config(self.config_path.as_ref()).map_err(refused)?;
        // The gateway's next value is built (policy, routes, certificates read and checked;
        // perhaps a JWKS fetched) before the daemon's lock is taken and the kernel changes, and
        // swapped in only once the kernel holds the new lists.
        let mut warnings = Vec::new();
        let next_gateway = match (&self.gateway, &config.gateway) {
            (Some(g), Some(cfg)) => {
                let (next, warning) = g
                    .prepare_reload(cfg.clone())
                    .map_err(|e| refused(ReloadError::one(format!("gateway: {e}"))))?;
                warnings.extend(warning);
                Some((g, next))
            }
            (None, None) => None,
            _ => {
                warnings.push(
                    "adding or removing [gateway] takes effect when the daemon restarts".into(),
                );
                None
            }
        };
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        warnings.extend(restart_only_changes(&s, &config));
        let seeds = s.shield.settings().seeds;
        let settings = config.kernel_config(seeds, 0);
        let ports = config.port_bitmap();
        // The lists (with the new management allowlist) first; the new settings only once they
        // hold, so a refused reload leaves the kernel exactly as it was.
        let old = std::mem::replace(&mut s.config, config);
        let applied = s.reapply().map_err(|e| e.to_string()).and_then(|()| {
            s.shield
                .set_settings(&settings, &ports)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = applied {
            s.config = old;
            // The lists of the old config go back, so the kernel matches what is running.
            if let Err(restore) = s.reapply() {
                tracing::error!(error = %restore, "restoring the running lists failed");
            }
            tracing::error!(error = %e, "config reload failed; keeping the running config");
            return Err(ReloadError::one(format!("kernel: {e}")));
        }
        if let Some((g, next)) = next_gateway {
            g.commit_reload(next);
        }
        Ok(ReloadBody {
            config: self.config_path.clone(),
            warnings,
        })
    }
}

/// What differs between the running config and `next` but only changes at a restart.
fn restart_only_changes(s: &State, next: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if capacity_of(next) != s.requested_capacity {
        warnings
            .push("capacity changes take effect after `api-shield detach` and a new `run`".into());
    }
    if next.feeds != s.config.feeds
        || next.crowdsec != s.config.crowdsec
        || next.push != s.config.push
    {
        warnings.push("feed changes take effect when the daemon restarts".into());
    }
    if next.import != s.config.import {
        warnings.push("[import] changes take effect when the daemon restarts".into());
    }
    if next.inventory != s.config.inventory {
        warnings.push("[inventory] changes take effect when the daemon restarts".into());
    }
    if next.metrics != s.config.metrics {
        warnings.push("metrics listener changes take effect when the daemon restarts".into());
    }
    warnings
}
