//! The daemon's TOML configuration: a validated struct, kept apart from CLI flags.
//!
//! Every key has a default, so an empty file (or no file) is a valid configuration.
//! `parse_config` reports every problem of a file at once, each with its line.

mod error;
mod fields;
mod reread;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use api_shield_common::NS_PER_SEC;
use api_shield_common::config::{FLAG_PORT_SCOPED, RateParams, ShieldConfig, port_word};
use api_shield_common::maps;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::kernel::capacity::Capacity;
pub use crate::model::Mode;
pub use error::{ConfigError, ConfigErrors};
pub use reread::RereadFile;

const SECS_PER_MINUTE: u64 = 60;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `enforce` drops what the policy refuses; `monitor` only counts it.
    pub mode: Mode,
    /// Root of the pinned maps and links; an interface's pins go under `pin_root/<iface>/`.
    #[serde(deserialize_with = "fields::absolute_path")]
    pub pin_root: PathBuf,
    /// Root of the persisted state; an interface's snapshot is `state_dir/<iface>/` (`index.json` and one file per list under `origins/`).
    #[serde(deserialize_with = "fields::absolute_path")]
    pub state_dir: PathBuf,
    /// JSON-lines audit log of every control request.
    #[serde(deserialize_with = "fields::absolute_path")]
    pub audit_log: PathBuf,
    /// Group whose members may use the control socket besides root; `""` (the default) is
    /// root only.
    #[serde(with = "fields::group")]
    pub control_group: Option<String>,
    /// Prefixes that are always allowed in the kernel and that a block may only cover with
    /// `--force`, so an operator cannot lock out their own management access.
    #[serde(deserialize_with = "fields::nets")]
    pub management_allow: Vec<IpNet>,
    pub limits: Limits,
    pub autoblock: Autoblock,
    pub capacity: Capacity,
    /// List files the daemon watches, each replacing its named list when it changes.
    pub feeds: Vec<crate::feeds::file::FileFeed>,
    /// The HTTP push API for other tools; off unless the section is present.
    pub push: Option<crate::push::PushConfig>,
    /// Act as a CrowdSec bouncer of a local API; off unless the section is present.
    pub crowdsec: Option<crate::feeds::crowdsec::CrowdsecConfig>,
    /// The Prometheus endpoint (`GET /metrics`); off unless the section is present.
    pub metrics: Option<crate::metrics::MetricsConfig>,
    /// The gateway's check endpoint (auth_request / ForwardAuth / ext_authz); off unless the
    /// section is present.
    pub gateway: Option<crate::gateway::GatewayConfig>,
    /// The unprivileged user the daemon continues as once the kernel side is set up (see
    /// `privilege`). Required with gateway listeners: internet-facing code never runs as root.
    pub run_as: Option<String>,
    /// Longest TTL a block may have, from any path (CLI, push API, feeds, CrowdSec, snapshot).
    #[serde(with = "humantime_serde")]
    pub max_ttl: std::time::Duration,
    /// Limits on the list bytes `api-shield import` sends.
    pub import: Import,
    /// The API inventory the gateway and the check endpoint learn from traffic.
    pub inventory: crate::inventory::InventoryConfig,
}

/// What the daemon accepts from `api-shield import`, which streams the list's bytes over the
/// control socket (the daemon never opens a path a client names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Import {
    /// Largest list accepted, in bytes.
    #[serde(deserialize_with = "fields::positive_u64")]
    pub max_bytes: u64,
    /// Longest wait for the next bytes of a list; a stalled pipe is dropped after it.
    #[serde(with = "fields::duration")]
    pub read_timeout: Duration,
}

impl Default for Import {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_IMPORT_MAX_BYTES,
            read_timeout: DEFAULT_IMPORT_READ_TIMEOUT,
        }
    }
}

/// Generous for the largest public blocklists (a million CIDRs is about 20 MB).
pub const DEFAULT_IMPORT_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Long enough for a slow producer on a pipe, short enough that a stalled one is noticed.
pub const DEFAULT_IMPORT_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Import {
    /// The control socket's limits on an import's body.
    pub const fn body_limits(&self) -> crate::control::BodyLimits {
        crate::control::BodyLimits {
            max_bytes: self.max_bytes,
            read_timeout: self.read_timeout,
        }
    }
}

/// Per-source rate limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Packets per second allowed per source; 0 disables the limit.
    pub packets_per_second: u32,
    /// Packets a source may send at once above its rate; at least 1 while the rate is set.
    pub burst: u32,
    /// TCP SYNs (SYN without ACK) per second allowed per source; 0 disables the limit.
    pub syn_per_second: u32,
    /// SYN burst; at least 1 while the SYN rate is set.
    pub syn_burst: u32,
    /// Destination ports the limits apply to; empty applies them to all traffic.
    #[serde(deserialize_with = "fields::ports")]
    pub ports: Vec<u16>,
    /// IPv4 sources share a bucket per prefix of this length (0..=32).
    #[serde(deserialize_with = "fields::v4_prefix")]
    pub v4_prefix: u8,
    /// IPv6 sources share a bucket per prefix of this length (0..=128); a /64 is what one
    /// subscriber usually holds.
    #[serde(deserialize_with = "fields::v6_prefix")]
    pub v6_prefix: u8,
}

/// Blocks the kernel decides itself when a source keeps exceeding its limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Autoblock {
    /// Over-limit packets within `window` that get a source blocked; 0 disables auto-blocking.
    pub strikes: u32,
    /// Window over which strikes are counted.
    #[serde(with = "fields::duration")]
    pub window: Duration,
    /// How long an auto-block lasts.
    #[serde(with = "fields::duration")]
    pub ttl: Duration,
    /// Auto-block events sent to userspace per second, at least 1; the rest are counted as
    /// suppressed.
    #[serde(deserialize_with = "fields::positive")]
    pub events_per_second: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            pin_root: PathBuf::from("/sys/fs/bpf/api-shield"),
            state_dir: PathBuf::from("/var/lib/api-shield"),
            audit_log: PathBuf::from("/var/log/api-shield/audit.jsonl"),
            control_group: None,
            management_allow: Vec::new(),
            limits: Limits::default(),
            autoblock: Autoblock::default(),
            capacity: Capacity::default(),
            feeds: Vec::new(),
            push: None,
            crowdsec: None,
            metrics: None,
            gateway: None,
            run_as: None,
            max_ttl: crate::parse::DEFAULT_MAX_TTL,
            import: Import::default(),
            inventory: crate::inventory::InventoryConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            packets_per_second: 1_000,
            burst: 2_000,
            syn_per_second: 100,
            syn_burst: 200,
            ports: Vec::new(),
            v4_prefix: fields::V4_BITS,
            v6_prefix: 64,
        }
    }
}

impl Default for Autoblock {
    fn default() -> Self {
        Self {
            strikes: 500,
            window: Duration::from_secs(10),
            ttl: Duration::from_secs(10 * SECS_PER_MINUTE),
            events_per_second: 100,
        }
    }
}

impl Config {
    /// The `CONFIG` map value for these settings.
    pub fn kernel_config(&self, seeds: [u64; 2], active_table: u32) -> ShieldConfig {
        let limits = &self.limits;
        let autoblock = &self.autoblock;
        let events = u64::from(autoblock.events_per_second);
        ShieldConfig {
            mode: self.mode.kernel_value(),
            active_table,
            v4_nodes: self.capacity.v4_nodes,
            flags: if limits.ports.is_empty() {
                0
            } else {
                FLAG_PORT_SCOPED
            },
            v4_rate_prefix: u32::from(limits.v4_prefix),
            v6_rate_prefix: u32::from(limits.v6_prefix),
            sketch_mask: self.capacity.sketch_width - 1,
            autoblock_strikes: autoblock.strikes,
            seeds,
            pkt: RateParams::new(
                u64::from(limits.packets_per_second),
                u64::from(limits.burst),
            ),
            syn: RateParams::new(
                u64::from(limits.syn_per_second),
                u64::from(limits.syn_burst),
            ),
            autoblock_window_ns: duration_ns(autoblock.window),
            autoblock_ttl_ns: duration_ns(autoblock.ttl),
            events: RateParams::new(events, events),
        }
    }

    /// The `PORTS` map contents: `maps::PORT_WORDS` words with a bit per port in scope.
    pub fn port_bitmap(&self) -> Vec<u32> {
        let mut words = vec![0u32; maps::PORT_WORDS as usize];
        for &port in &self.limits.ports {
            let (word, bit) = port_word(port);
            words[word as usize] |= bit;
        }
        words
    }
}

/// Validation bounds durations to `u64` nanoseconds, so this only saturates on a `Config`
/// built by hand.
fn duration_ns(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(NS_PER_SEC)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// Parses and validates a config file's text; `file` only names it in errors.
pub fn parse_config(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    validate::parse(text, file)
}

/// Reads, parses and validates a config file.
pub fn load_config(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::from(ConfigError {
            file: path.to_owned(),
            line: None,
            message: format!("cannot read the config file: {e}"),
        })
    })?;
    parse_config(&text, path)
}
