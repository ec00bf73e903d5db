//! Prometheus metrics: the daemon serves `GET /metrics` on a listener of its own (the
//! `[metrics]` section; loopback by default) in the text exposition format 0.0.4, written by
//! `prometheus-client`. Each scrape reads the live state; nothing is sampled in between.
//!
//! Every family, all prefixed `api_shield_`:
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `build_info` | gauge (info) | `version`, `abi` |
//! | `xdp_info` | gauge (info) | `iface`, `mode` (native, skb) |
//! | `monitor_mode` | gauge | |
//! | `start_time_seconds` | gauge | |
//! | `verdict_packets_total`, `verdict_bytes_total` | counter | `verdict` (7) |
//! | `detail_packets_total`, `detail_bytes_total` | counter | `detail` (5) |
//! | `auto_blocks_total`, `auto_blocks_refused_total` | counter | |
//! | `auto_block_events_total` | counter | `outcome` (sent, suppressed) |
//! | `origin_dropped_packets_total`, `origin_dropped_bytes_total` | counter | `origin` |
//! | `origin_entries` | gauge | `origin`, `action` |
//! | `map_used`, `map_capacity` | gauge | `map` (6) |
//! | `feed_syncs_total`, `feed_errors_total`, `feed_lockout_skipped_total`, `feed_malformed_skipped_total` | counter | `feed` |
//! | `feed_last_success_timestamp_seconds`, `feed_degraded` | gauge | `feed` |
//! | `gateway_requests_total` | counter | `listener`, `route`, `status_class`, `auth` |
//! | `gateway_quota_rejections_total`, `gateway_quota_dry_run_rejections_total` | counter | `route`, `limit` |
//! | `gateway_escalations_total` | counter | `rule`, `outcome` |
//! | `gateway_escalation_latency_seconds` | histogram | `rule` |
//! | `gateway_password_checks_total` | counter | `outcome` |
//! | `gateway_connections_refused_total` | counter | `listener`, `reason` |
//!
//! The `gateway_` families are there only with a `[gateway]` section; unlike the others they
//! are live counters kept by the gateway ([`crate::gateway::metrics`] describes their labels),
//! registered beside the snapshot at each scrape.
//!
//! Label values come from fixed sets, from list names or from the policy's route and limit
//! names, and the kernel counts drops for at most `MAX_ORIGINS` (256) origins, so cardinality
//! stays bounded. Addresses and identities are never labels.

mod config;
mod encode;
mod server;
mod snapshot;

pub use config::{DEFAULT_LISTEN, MetricsConfig};
pub use encode::{CONTENT_TYPE, render};
pub use server::{BindError, MetricsListener, bind};
pub use snapshot::{MapFill, ReadError, ShieldSnapshot, SnapshotSource};
