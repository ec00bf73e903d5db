//! The API inventory learned from traffic: every [`Exchange`] a front door makes updates an
//! endpoint keyed by host, method and path template (`/users/{id}`), with its figures
//! (requests, status classes, latency quantiles, auth methods, distinct identities, content
//! types, query parameter names, JSON body shapes).
//!
//! Memory is bounded by construction, whatever the traffic:
//! - at most `max_hosts` hosts; exchanges for further hosts are counted under
//!   [`OTHER_HOST`], one more host;
//! - at most `max_endpoints_per_host` endpoints per host; past that the host is flagged
//!   saturated and new templates are counted in one overflow endpoint per method;
//! - identifiers in paths become parameters, and a position with more distinct values than
//!   the sibling threshold becomes one too, so a hundred thousand user ids are one endpoint;
//! - each endpoint's figures are sketches and capped sets of a fixed size
//!   ([`EndpointStats::heap_bytes`]: a few kilobytes at most).
//!
//! An answer that shows the path does not exist ([`creates_endpoint`]) never creates an
//! endpoint, so scanners probing for `/wp-admin` leave no trace in the inventory; it still
//! counts on an endpoint that exists.

mod endpoint;
mod host;
mod learned;
mod listing;
pub mod metrics;
mod openapi;
mod path;
mod persist;
mod segment;
mod shape;
mod shared;
mod sketch;
mod spec;
mod template;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use endpoint::{BoundedSet, EndpointLimits, EndpointStats, status_class};
pub use host::{EndpointRef, HostInventory, HttpMethod, OVERFLOW_TEMPLATE, Recorded};
pub use listing::{EndpointRow, render_table};
pub use persist::{FORMAT_VERSION, INVENTORY_FILE, InventoryError, MAX_INVENTORY_BYTES};
pub use segment::{Param, classify};
pub use shape::{JsonShape, ShapeLimits};
pub use shared::{HostFigures, SharedInventory};
pub use sketch::{Hll, LatencyHistogram};
pub use spec::{SpecPathError, SpecPaths};
pub use template::{Source, TemplateConfig, Templater};

use crate::exchange::Exchange;
use host::HostLimits;

/// The host exchanges for hosts past `max_hosts` are counted under. Not a valid host name,
/// so no request's host is ever it.
pub const OTHER_HOST: &str = "{other}";

/// Longest host kept as its own: a DNS name (253) with a port. Longer ones are counted under
/// [`OTHER_HOST`].
pub const MAX_HOST_LEN: usize = 300;

/// Statuses that say the path or method does not exist (404, 405, 410), was not served by
/// this origin (421, 414 refused before routing, 501 method unknown), or that a gateway in
/// between answered instead of the service (502, 503, 504). They never create an endpoint.
pub const NOT_EXISTING_STATUSES: [u16; 9] = [404, 405, 410, 414, 421, 501, 502, 503, 504];

/// How often a changed inventory is saved by default: a crash loses at most this much.
pub const DEFAULT_SAVE_INTERVAL: Duration = Duration::from_secs(60);

/// `[inventory]`: whether the daemon learns the API from traffic, how often it saves what it
/// learned, and the limits of the inventory (every one bounds memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Whether the gateway and the check endpoint record exchanges at all.
    pub enabled: bool,
    /// How often a changed inventory is written to `state_dir/<iface>/inventory.json` (and
    /// once more at shutdown).
    #[serde(with = "humantime_serde")]
    pub save_interval: Duration,
    pub max_hosts: usize,
    pub max_endpoints_per_host: usize,
    pub template: TemplateConfig,
    pub max_content_types: usize,
    pub max_query_names: usize,
    /// Longest content type or query parameter name kept.
    pub max_name_len: usize,
    /// Key paths of JSON bodies kept per endpoint.
    pub max_body_nodes: usize,
    /// JSON nesting levels looked into.
    pub max_body_depth: usize,
    /// Whether an exchange with no answer known (the check endpoint decides before the
    /// upstream answers) may create endpoints. Off: anyone could then create them.
    pub learn_unanswered: bool,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            save_interval: DEFAULT_SAVE_INTERVAL,
            max_hosts: 64,
            max_endpoints_per_host: 1000,
            template: TemplateConfig::default(),
            max_content_types: 8,
            max_query_names: 32,
            max_name_len: 128,
            max_body_nodes: 64,
            max_body_depth: 4,
            learn_unanswered: false,
        }
    }
}

impl InventoryConfig {
    /// What is wrong with these settings, one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.save_interval.is_zero() {
            problems.push(
                "inventory.save_interval: must be positive (`enabled = false` turns the \
                 inventory off)"
                    .to_owned(),
            );
        }
        let counts = [
            ("max_hosts", self.max_hosts),
            ("max_endpoints_per_host", self.max_endpoints_per_host),
            (
                "template.sibling_threshold",
                self.template.sibling_threshold,
            ),
            ("template.max_segments", self.template.max_segments),
            ("template.max_segment_len", self.template.max_segment_len),
            ("max_name_len", self.max_name_len),
        ];
        for (key, value) in counts {
            if value == 0 {
                problems.push(format!("inventory.{key}: must be at least 1"));
            }
        }
        problems
    }

    fn endpoint_limits(&self) -> EndpointLimits {
        EndpointLimits {
            max_content_types: self.max_content_types,
            max_query_names: self.max_query_names,
            max_name_len: self.max_name_len,
            shape: ShapeLimits {
                max_nodes: self.max_body_nodes,
                max_depth: self.max_body_depth,
                max_key_len: self.max_name_len,
            },
        }
    }
}

/// Whether `exchange`'s answer shows its endpoint exists: the upstream answered (the shield
/// refusing a request proves nothing about the API) with a status not in
/// [`NOT_EXISTING_STATUSES`].
pub fn creates_endpoint(exchange: &Exchange, learn_unanswered: bool) -> bool {
    match exchange.status {
        Some(status) => {
            exchange.upstream_latency.is_some() && !NOT_EXISTING_STATUSES.contains(&status)
        }
        None => learn_unanswered,
    }
}

/// The inventory of every host.
#[derive(Clone, Debug)]
pub struct Inventory {
    config: InventoryConfig,
    limits: EndpointLimits,
    hosts: HashMap<String, HostInventory>,
    /// Spec paths for every host, applied to hosts as they appear.
    spec_paths: Vec<String>,
    /// Spec paths of single hosts.
    host_spec_paths: HashMap<String, Vec<String>>,
    scratch: String,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::new(InventoryConfig::default())
    }
}

impl Inventory {
    pub fn new(config: InventoryConfig) -> Self {
        Self {
            config,
            limits: config.endpoint_limits(),
            hosts: HashMap::new(),
            spec_paths: Vec::new(),
            host_spec_paths: HashMap::new(),
            scratch: String::new(),
        }
    }

    pub fn config(&self) -> &InventoryConfig {
        &self.config
    }

    /// Counts `exchange` in.
    pub fn record(&mut self, exchange: &Exchange) -> Recorded {
        let creates = creates_endpoint(exchange, self.config.learn_unanswered);
        let host = if exchange.host.len() > MAX_HOST_LEN {
            OTHER_HOST
        } else if self.hosts.contains_key(&exchange.host) {
            exchange.host.as_str()
        } else if self.hosts.len() >= self.config.max_hosts {
            OTHER_HOST
        } else {
            exchange.host.as_str()
        };
        if !self.hosts.contains_key(host) {
            if !creates {
                return Recorded::NotExisting;
            }
            let templater = self.templater_for(host);
            self.hosts
                .insert(host.to_owned(), HostInventory::new(templater));
        }
        let limits = HostLimits {
            max_endpoints: self.config.max_endpoints_per_host,
            endpoint: &self.limits,
        };
        let Some(inventory) = self.hosts.get_mut(host) else {
            return Recorded::NotExisting;
        };
        inventory.record(exchange, creates, &limits, &mut self.scratch)
    }

    /// A templater for `host` with the spec paths that apply to it.
    fn templater_for(&self, host: &str) -> Templater {
        let mut templater = Templater::new(self.config.template);
        let own = self.host_spec_paths.get(host).into_iter().flatten();
        for path in self.spec_paths.iter().chain(own) {
            // Checked when registered.
            let _ = templater.register_spec_paths(&[path]);
        }
        templater
    }

    /// Adds spec templates (`/users/{id}`) for every host: requests matching one are counted
    /// under it verbatim, and endpoints learned before that now match it merge into it. All
    /// or nothing: an invalid path refuses the whole call.
    pub fn register_spec_paths(&mut self, paths: &[&str]) -> Result<(), SpecPathError> {
        self.register(None, paths)
    }

    /// Adds spec templates for one host only.
    pub fn register_host_spec_paths(
        &mut self,
        host: &str,
        paths: &[&str],
    ) -> Result<(), SpecPathError> {
        self.register(Some(host), paths)
    }

    fn register(&mut self, host: Option<&str>, paths: &[&str]) -> Result<(), SpecPathError> {
        let mut check = SpecPaths::default();
        for path in paths {
            check.insert(path, self.config.template.max_segments)?;
        }
        let owned = paths.iter().map(|p| (*p).to_owned());
        match host {
            None => self.spec_paths.extend(owned),
            Some(host) => self
                .host_spec_paths
                .entry(host.to_owned())
                .or_default()
                .extend(owned),
        }
        for (name, inventory) in &mut self.hosts {
            if host.is_none_or(|h| h == name) {
                // Validated above.
                let _ = inventory.templater.register_spec_paths(paths);
                inventory.rekey(&self.limits, &mut self.scratch);
            }
        }
        Ok(())
    }

    /// The host's inventory.
    pub fn host(&self, host: &str) -> Option<&HostInventory> {
        self.hosts.get(host)
    }

    /// Hosts and their inventories, sorted by host.
    pub fn hosts(&self) -> Vec<(&str, &HostInventory)> {
        let mut all: Vec<_> = self.hosts.iter().map(|(h, i)| (h.as_str(), i)).collect();
        all.sort_by_key(|(h, _)| *h);
        all
    }

    /// Endpoints over all hosts, overflow ones included.
    pub fn endpoint_count(&self) -> usize {
        self.hosts
            .values()
            .map(|h| h.endpoints.values().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// Heap bytes held, roughly: the figure the memory bound is stated and tested in.
    pub fn heap_bytes(&self) -> usize {
        self.hosts
            .iter()
            .map(|(name, host)| name.capacity() + host.heap_bytes())
            .sum()
    }
}
