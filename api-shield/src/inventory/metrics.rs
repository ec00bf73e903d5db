//! The inventory's Prometheus families, read at each scrape under the inventory's lock (a copy
//! of a few numbers per host, at most `max_hosts + 1` hosts):
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `api_shield_inventory_endpoints` | gauge | `host` |
//! | `api_shield_inventory_hosts_saturated` | gauge | |
//! | `api_shield_inventory_exchanges_total` | counter | |
//!
//! `host` values are bounded by `inventory.max_hosts` (later hosts are `{other}`).

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::SharedInventory;

/// Reads the inventory at each scrape.
#[derive(Debug)]
pub struct InventoryCollector(pub Arc<SharedInventory>);

/// No labels: a family of one sample.
const NONE: [(&str, &str); 0] = [];

impl Collector for InventoryCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let hosts = self.0.host_figures();
        let mut family = enc.encode_descriptor(
            "api_shield_inventory_endpoints",
            "Endpoints (method and path template) the inventory learned, by host",
            None,
            MetricType::Gauge,
        )?;
        for h in &hosts {
            let count = i64::try_from(h.endpoints).unwrap_or(i64::MAX);
            ConstGauge::new(count).encode(family.encode_family(&[("host", h.host.as_str())])?)?;
        }
        let saturated = hosts.iter().filter(|h| h.saturated).count();
        let mut family = enc.encode_descriptor(
            "api_shield_inventory_hosts_saturated",
            "Hosts whose endpoint cap (inventory.max_endpoints_per_host) refused an endpoint: \
             their new paths are counted under {overflow}",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(saturated).unwrap_or(i64::MAX))
            .encode(family.encode_family(&NONE)?)?;
        let mut family = enc.encode_descriptor(
            "api_shield_inventory_exchanges",
            "Requests the gateway and the check endpoint handed to the inventory",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.exchanges()).encode(family.encode_family(&NONE)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::Exchange;
    use crate::gateway::GatewayMetrics;
    use crate::inventory::{Inventory, InventoryConfig};
    use prometheus_client::registry::Registry;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    #[test]
    fn the_gateway_scrape_carries_the_inventory_families() {
        let config = InventoryConfig {
            max_endpoints_per_host: 1,
            ..InventoryConfig::default()
        };
        let shared = Arc::new(SharedInventory::new(Inventory::new(config)));
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        for path in ["/a", "/b", "/c"] {
            let mut e = Exchange::new(1, client, "api.test", hyper::Method::GET, path);
            e.status = Some(200);
            e.upstream_latency = Some(Duration::from_millis(1));
            shared.record(&e);
        }
        let metrics = GatewayMetrics::new();
        let render = |m: &GatewayMetrics| {
            let mut registry = Registry::default();
            m.register(&mut registry);
            let mut out = String::new();
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
            out
        };
        assert!(!render(&metrics).contains("api_shield_inventory"));
        metrics.set_inventory(Arc::clone(&shared));
        let text = render(&metrics);
        assert!(
            text.contains("api_shield_inventory_endpoints{host=\"api.test\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("api_shield_inventory_hosts_saturated 1"),
            "{text}"
        );
        assert!(
            text.contains("api_shield_inventory_exchanges_total 3"),
            "{text}"
        );
    }
}
