//! The inventory as rows: what `api-shield inventory` shows, as JSON (`--json`) or as a
//! table. Rows are plain data made under the lock and formatted after it.

use serde::{Deserialize, Serialize};

use super::endpoint::STATUS_CLASSES;
use super::host::HttpMethod;
use super::{Inventory, OTHER_HOST};

const MS_PER_S: f64 = 1000.0;
/// Status class indexes of 2xx, 4xx and 5xx in [`super::EndpointStats::status_classes`].
const CLASS_2XX: usize = 1;
const CLASS_4XX: usize = 3;
const CLASS_5XX: usize = 4;

/// One endpoint with its figures. Fields a reader does not find keep their defaults (an
/// older or newer daemon).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointRow {
    pub host: String,
    pub method: String,
    /// The path template (`/users/{id}`), or `{overflow}` for what a saturated host could
    /// not hold.
    pub template: String,
    pub requests: u64,
    /// Answers by class, 1xx to 5xx.
    pub status_classes: [u64; STATUS_CLASSES],
    /// Upstream latency quantiles, in milliseconds; `None` without an upstream answer.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Distinct identities (estimated).
    pub identities: u64,
    /// Requests without an identity.
    pub anonymous: u64,
    pub auth_methods: Vec<String>,
    pub content_types: Vec<String>,
    pub query_names: Vec<String>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Whether the host's endpoint cap refused an endpoint (its figures are incomplete).
    pub host_saturated: bool,
}

fn method_name(method: HttpMethod) -> String {
    serde_json::to_value(method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Inventory {
    /// Every endpoint of `host` (of every host when `None`, the catch-all host included), sorted
    /// by host, template and method.
    pub fn listing(&self, host: Option<&str>) -> Vec<EndpointRow> {
        let mut rows = Vec::new();
        for (name, inventory) in self.hosts() {
            if host.is_some_and(|h| h != name) {
                continue;
            }
            for e in inventory.endpoints() {
                let s = e.stats;
                let ms = |q| s.latency.quantile(q).map(|d| d.as_secs_f64() * MS_PER_S);
                rows.push(EndpointRow {
                    host: name.to_owned(),
                    method: method_name(e.method),
                    template: e.template.to_owned(),
                    requests: s.requests,
                    status_classes: s.status_classes,
                    latency_p50_ms: ms(0.5),
                    latency_p99_ms: ms(0.99),
                    identities: s.distinct_identities(),
                    anonymous: s.anonymous,
                    auth_methods: s
                        .auth_methods
                        .iter()
                        .map(|m| m.as_str().to_owned())
                        .collect(),
                    content_types: s.content_types.items.iter().cloned().collect(),
                    query_names: s.query_names.items.iter().cloned().collect(),
                    first_seen_ms: s.first_seen_ms,
                    last_seen_ms: s.last_seen_ms,
                    host_saturated: inventory.is_saturated(),
                });
            }
        }
        rows
    }
}

/// `hh:mm:ss` of a wall-clock time in milliseconds, with the date when it is not `today_ms`'s.
fn when(ms: u64, now_ms: u64) -> String {
    let full = crate::kernel::clock::format_rfc3339_ms(ms);
    const MS_PER_DAY: u64 = 86_400_000;
    // `YYYY-MM-DDThh:mm:ss...`: the time alone for today, else date and time.
    let (date, time) = full.split_once('T').unwrap_or((full.as_str(), ""));
    let time = time.get(..8).unwrap_or(time);
    if ms / MS_PER_DAY == now_ms / MS_PER_DAY {
        time.to_owned()
    } else {
        format!("{date} {time}")
    }
}

fn latency(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The rows as a table for a terminal. Every text from traffic (host, template) is escaped:
/// a client chose it.
pub fn render_table(rows: &[EndpointRow], now_ms: u64) -> String {
    use std::fmt::Write;
    let esc = |s: &str| crate::text::escape(s).into_owned();
    let host_w = rows
        .iter()
        .map(|r| esc(&r.host).chars().count())
        .max()
        .unwrap_or(0)
        .max("host".len());
    let tmpl_w = rows
        .iter()
        .map(|r| esc(&r.template).chars().count())
        .max()
        .unwrap_or(0)
        .max("template".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<host_w$} {:<7} {:<tmpl_w$} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}  first / last seen",
        "host",
        "method",
        "template",
        "requests",
        "2xx",
        "4xx",
        "5xx",
        "p50 ms",
        "p99 ms",
        "identities",
    );
    for r in rows {
        let saturated = if r.host_saturated { " (saturated)" } else { "" };
        let _ = writeln!(
            out,
            "{:<host_w$} {:<7} {:<tmpl_w$} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}  {} / {}{saturated}",
            esc(&r.host),
            esc(&r.method),
            esc(&r.template),
            r.requests,
            r.status_classes[CLASS_2XX],
            r.status_classes[CLASS_4XX],
            r.status_classes[CLASS_5XX],
            latency(r.latency_p50_ms),
            latency(r.latency_p99_ms),
            r.identities,
            when(r.first_seen_ms, now_ms),
            when(r.last_seen_ms, now_ms),
        );
    }
    if rows.is_empty() {
        out.push_str("no endpoints learned yet\n");
    }
    if rows.iter().any(|r| r.host == OTHER_HOST) {
        let _ = writeln!(
            out,
            "{OTHER_HOST}: hosts past inventory.max_hosts, counted together"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Exchange, Identity};
    use crate::inventory::InventoryConfig;
    use crate::policy::config::AuthMethod;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    #[test]
    fn rows_carry_the_figures_and_the_table_escapes_what_clients_chose() {
        let mut inventory = Inventory::new(InventoryConfig::default());
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        for (i, status) in [200, 201, 404, 500].into_iter().enumerate() {
            let path = format!("/users/{}", 100 + i);
            let mut e = Exchange::new(
                1_000 + i as u64,
                client,
                "api.test",
                hyper::Method::GET,
                &path,
            );
            e.status = Some(status);
            e.upstream_latency = Some(Duration::from_millis(10));
            e.query_names = vec!["page".into()];
            e.identity = Some(Identity {
                id: format!("key-{}", i % 2),
                method: AuthMethod::ApiKey,
            });
            inventory.record(&e);
        }
        let mut odd = Exchange::new(5, client, "evil\u{1b}[2J.test", hyper::Method::GET, "/a");
        odd.status = Some(200);
        odd.upstream_latency = Some(Duration::from_millis(1));
        inventory.record(&odd);
        let rows = inventory.listing(Some("api.test"));
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            (row.method.as_str(), row.template.as_str()),
            ("GET", "/users/{id}")
        );
        assert_eq!(row.requests, 4);
        assert_eq!(row.status_classes, [0, 2, 0, 1, 1]);
        assert_eq!(row.identities, 2);
        assert_eq!(row.auth_methods, ["api_key"]);
        assert_eq!(row.query_names, ["page"]);
        assert_eq!((row.first_seen_ms, row.last_seen_ms), (1_000, 1_003));
        let p50 = row.latency_p50_ms.unwrap();
        assert!((9.0..=11.0).contains(&p50), "{p50}");
        assert_eq!(inventory.listing(None).len(), 2);
        let table = render_table(&inventory.listing(None), 1_000);
        assert!(!table.contains('\u{1b}'), "{table}");
        assert!(table.contains("/users/{id}"), "{table}");
        assert!(render_table(&[], 0).contains("no endpoints"));
    }
}
