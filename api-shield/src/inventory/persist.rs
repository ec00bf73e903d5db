//! Saving the inventory under `state_dir` and reading it back at start. Written through
//! [`StateDir::write_atomic_with`] (temporary file, fsync, rename), so a crash leaves the old
//! file or the new one. The directory belongs to the service user, so what is read back is
//! checked like any input against the configured limits: a file that is too large, damaged,
//! of another version or over a limit is refused whole, nothing is half-loaded.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::endpoint::EndpointStats;
use super::host::{HostInventory, HttpMethod, OVERFLOW_TEMPLATE};
use super::learned::LearnedNode;
use super::{Inventory, InventoryConfig, MAX_HOST_LEN};
use crate::state_dir::{StateDir, StateDirError};

/// The file's format; a file of another version is refused, not guessed at.
pub const FORMAT_VERSION: u32 = 1;
/// The file's name under its directory.
pub const INVENTORY_FILE: &str = "inventory.json";
/// Far above what the default limits can produce (64 hosts × 1000 endpoints of a few
/// kilobytes), and a bound on what a planted file can make the daemon allocate.
pub const MAX_INVENTORY_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("inventory: {0}")]
    State(#[from] StateDirError),
    #[error(
        "inventory {path} is damaged ({source}); it was left untouched: move it away to start \
         with an empty inventory"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("inventory {path} has format version {found}; this build reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "inventory {path} is refused: {reason}; it was left untouched: move it away (or raise \
         the limit) to start"
    )]
    OverLimit { path: PathBuf, reason: String },
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    saved_at_ms: u64,
    hosts: Vec<HostOut<'a>>,
}

#[derive(Serialize)]
struct HostOut<'a> {
    host: &'a str,
    saturated: bool,
    learned: &'a LearnedNode,
    endpoints: Vec<EndpointOut<'a>>,
}

#[derive(Serialize)]
struct EndpointOut<'a> {
    method: HttpMethod,
    template: &'a str,
    stats: &'a EndpointStats,
}

/// Only the version, read first so a file of another version gets a clear answer.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    version: u32,
    #[expect(dead_code, reason = "written for people reading the file")]
    saved_at_ms: u64,
    hosts: Vec<HostIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostIn {
    host: String,
    saturated: bool,
    learned: LearnedNode,
    endpoints: Vec<EndpointIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointIn {
    method: HttpMethod,
    template: String,
    stats: EndpointStats,
}

impl Inventory {
    /// Writes the inventory to `dir`/[`INVENTORY_FILE`], durably and atomically.
    pub fn save(&self, dir: &StateDir, now_ms: u64) -> Result<(), InventoryError> {
        let hosts = self
            .hosts()
            .into_iter()
            .map(|(host, inventory)| HostOut {
                host,
                saturated: inventory.saturated,
                learned: inventory.templater.learned(),
                endpoints: inventory
                    .endpoints()
                    .into_iter()
                    .map(|e| EndpointOut {
                        method: e.method,
                        template: e.template,
                        stats: e.stats,
                    })
                    .collect(),
            })
            .collect();
        let file = FileOut {
            version: FORMAT_VERSION,
            saved_at_ms: now_ms,
            hosts,
        };
        dir.write_atomic_with(INVENTORY_FILE, |out| {
            let mut capped = Capped {
                inner: out,
                left: MAX_INVENTORY_BYTES,
            };
            serde_json::to_writer(&mut capped, &file).map_err(io::Error::from)
        })?;
        Ok(())
    }

    /// Reads the inventory saved in `dir`, an empty one if there is none. Spec paths are not
    /// saved (they come from the configuration): register them after loading.
    pub fn load(dir: &StateDir, config: InventoryConfig) -> Result<Self, InventoryError> {
        let path = dir.name_path(INVENTORY_FILE)?;
        let Some(bytes) = dir.read(INVENTORY_FILE, MAX_INVENTORY_BYTES)? else {
            return Ok(Self::new(config));
        };
        Self::from_json(&bytes, config).map_err(|e| e.at(path))
    }

    /// Parses and checks a saved inventory.
    pub fn from_json(bytes: &[u8], config: InventoryConfig) -> Result<Self, InventoryError> {
        let corrupt = |source| InventoryError::Corrupt {
            path: PathBuf::new(),
            source,
        };
        let found = serde_json::from_slice::<VersionOnly>(bytes)
            .map_err(corrupt)?
            .version;
        if found != FORMAT_VERSION {
            return Err(InventoryError::Version {
                path: PathBuf::new(),
                found,
            });
        }
        let file: FileIn = serde_json::from_slice(bytes).map_err(corrupt)?;
        debug_assert_eq!(file.version, FORMAT_VERSION);
        let mut inventory = Self::new(config);
        let over = |reason: String| InventoryError::OverLimit {
            path: PathBuf::new(),
            reason,
        };
        if file.hosts.len() > config.max_hosts + 1 {
            return Err(over(format!(
                "it holds more than {} hosts",
                config.max_hosts
            )));
        }
        for host in file.hosts {
            let name = host.host.clone();
            let restored = inventory.restore_host(host).map_err(over)?;
            if inventory.hosts.insert(name.clone(), restored).is_some() {
                return Err(over(format!("host `{name}` appears twice")));
            }
        }
        Ok(inventory)
    }

    /// One host read back, checked against the limits.
    fn restore_host(&self, host: HostIn) -> Result<HostInventory, String> {
        let config = &self.config;
        if host.host.len() > MAX_HOST_LEN {
            return Err(format!("a host name is longer than {MAX_HOST_LEN} bytes"));
        }
        let mut templater = self.templater_for(&host.host);
        templater.restore_learned(host.learned)?;
        let mut inventory = HostInventory::new(templater);
        inventory.saturated = host.saturated;
        let t = config.template;
        let max_template = (t.max_segments + 1) * (t.max_segment_len + 1) + 1;
        for endpoint in host.endpoints {
            let template = endpoint.template;
            let valid = template == OVERFLOW_TEMPLATE || template.starts_with('/');
            if !valid || template.len() > max_template {
                return Err(format!("`{}` is not a template", template.escape_debug()));
            }
            endpoint.stats.check(&self.limits)?;
            let overflow = template == OVERFLOW_TEMPLATE;
            let methods = inventory.endpoints.entry(template.into()).or_default();
            if methods.iter().any(|(m, _)| *m == endpoint.method) {
                return Err("an endpoint appears twice".into());
            }
            methods.push((endpoint.method, endpoint.stats));
            if !overflow {
                inventory.endpoint_count += 1;
            }
        }
        if inventory.endpoint_count > config.max_endpoints_per_host {
            return Err(format!(
                "host `{}` has {} endpoints, more than max_endpoints_per_host ({})",
                host.host.escape_debug(),
                inventory.endpoint_count,
                config.max_endpoints_per_host
            ));
        }
        Ok(inventory)
    }
}

impl InventoryError {
    /// Names the file the error is about.
    fn at(self, at: PathBuf) -> Self {
        match self {
            Self::Corrupt { source, .. } => Self::Corrupt { path: at, source },
            Self::Version { found, .. } => Self::Version { path: at, found },
            Self::OverLimit { reason, .. } => Self::OverLimit { path: at, reason },
            other @ Self::State(_) => other,
        }
    }
}

/// A writer that fails once more than `left` bytes were asked of it: a start must be able to
/// read back whatever was written.
struct Capped<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        if len > self.left {
            return Err(io::Error::other(format!(
                "the inventory is larger than the {MAX_INVENTORY_BYTES} bytes a start reads back"
            )));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
