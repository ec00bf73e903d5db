//! A snapshot in the Prometheus text exposition format (0.0.4), written by `prometheus-client`
//! from a collector that reports the snapshot's values as they are, followed by the gateway's
//! live families when a gateway runs.

use std::fmt;

use api_shield_common::{ABI_VERSION, state::Counter, verdict};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::snapshot::ShieldSnapshot;
use crate::gateway::GatewayMetrics;
use crate::model::Action;

/// The `Content-Type` of what `render` writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Detail counters that count packets (the others count events, exported on their own).
const PACKET_DETAILS: [u32; 5] = [
    verdict::BLOCK_LIST,
    verdict::BLOCK_AUTO,
    verdict::SYN_LIMITED,
    verdict::BLOCK_EXPIRED,
    verdict::FRAGMENTS,
];

/// The snapshot, and the gateway's metrics if there is a gateway, as exposition text.
pub fn render(
    snapshot: ShieldSnapshot,
    gateway: Option<&GatewayMetrics>,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    if let Some(gateway) = gateway {
        gateway.register(&mut registry);
    }
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct SnapshotCollector(ShieldSnapshot);

/// One metric family: its descriptor, then one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
    family(encoder, name, help, unit, MetricType::Counter, samples)
}

fn gauges<L: EncodeLabelSet, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(encoder, name, help, unit, MetricType::Gauge, samples)
}

/// No labels: a family of one sample.
const NONE: [(&str, &str); 0] = [];

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let e = &mut enc;
        identity(e, s)?;
        kernel_counters(e, s)?;
        origins_and_maps(e, s)?;
        feeds(e, s)
    }
}

/// What runs where: build, attachment, mode, start time.
fn identity(e: &mut DescriptorEncoder, s: &ShieldSnapshot) -> fmt::Result {
    let abi = ABI_VERSION.to_string();
    family(
        e,
        "api_shield_build",
        "Version of the daemon and layout version (ABI) of its kernel maps",
        None,
        MetricType::Info,
        [(
            NONE,
            Info::new([
                ("version", env!("CARGO_PKG_VERSION")),
                ("abi", abi.as_str()),
            ]),
        )],
    )?;
    family(
        e,
        "api_shield_xdp",
        "The interface the shield is attached to and the XDP mode (native or skb)",
        None,
        MetricType::Info,
        s.attachment.iter().map(|(iface, mode)| {
            (
                NONE,
                Info::new([("iface", iface.clone()), ("mode", mode.clone())]),
            )
        }),
    )?;
    gauges(
        e,
        "api_shield_attached",
        "1 while the kernel runs the shield's XDP program on its interface, 0 once it does not \
         (detached from outside the daemon): nothing is enforced then",
        None,
        s.attached.map(|a| (NONE, u64::from(a))),
    )?;
    gauges(
        e,
        "api_shield_monitor_mode",
        "1 while the policy only counts what it would drop (mode = monitor), 0 while it enforces",
        None,
        [(NONE, u64::from(s.monitor))],
    )?;
    gauges(
        e,
        "api_shield_start_time",
        "Unix time at which the daemon started",
        Some(Unit::Seconds),
        [(NONE, s.start_time.as_secs_f64())],
    )?;
    Ok(())
}

/// The kernel's verdict, detail and auto-block counters.
fn kernel_counters(e: &mut DescriptorEncoder, s: &ShieldSnapshot) -> fmt::Result {
    let verdicts = || (0..verdict::VERDICTS).map(|i| (i, verdict::NAMES[i as usize]));
    let slot = |i: u32| s.counters.get(i as usize).copied().unwrap_or_default();
    counters(
        e,
        "api_shield_verdict_packets",
        "Packets by final verdict of the XDP program; every packet lands in exactly one",
        None,
        verdicts().map(|(i, name)| ([("verdict", name)], slot(i).packets)),
    )?;
    counters(
        e,
        "api_shield_verdict",
        "Bytes (whole frames) by final verdict of the XDP program",
        Some(Unit::Bytes),
        verdicts().map(|(i, name)| ([("verdict", name)], slot(i).bytes)),
    )?;
    let details = || {
        PACKET_DETAILS
            .iter()
            .map(|&i| (i, verdict::NAMES[i as usize]))
    };
    counters(
        e,
        "api_shield_detail_packets",
        "Packets by detail counter, beside the verdicts: block_list and block_auto split \
         blocklisted (list matches, in monitor mode too), syn_limited is part of \
         rate_limited, block_expired matched an expired entry and passed on, fragments are \
         IP fragments seen",
        None,
        details().map(|(i, name)| ([("detail", name)], slot(i).packets)),
    )?;
    counters(
        e,
        "api_shield_detail",
        "Bytes by detail counter (see api_shield_detail_packets_total)",
        Some(Unit::Bytes),
        details().map(|(i, name)| ([("detail", name)], slot(i).bytes)),
    )?;
    counters(
        e,
        "api_shield_auto_blocks",
        "Sources the kernel auto-blocked for exceeding their rate limit repeatedly",
        None,
        [(NONE, slot(verdict::AUTO_BLOCK_ADDED).packets)],
    )?;
    counters(
        e,
        "api_shield_auto_blocks_refused",
        "Auto-blocks that were due but found the auto-block map full",
        None,
        [(NONE, slot(verdict::AUTO_BLOCK_FULL).packets)],
    )?;
    counters(
        e,
        "api_shield_auto_block_events",
        "Auto-block events the kernel sent to the daemon, or held back by the event limit",
        None,
        [
            ([("outcome", "sent")], slot(verdict::EVENTS_SENT).packets),
            (
                [("outcome", "suppressed")],
                slot(verdict::EVENTS_SUPPRESSED).packets,
            ),
        ],
    )?;
    Ok(())
}

/// Drops and entries per origin (list), and the fill of the kernel maps.
fn origins_and_maps(e: &mut DescriptorEncoder, s: &ShieldSnapshot) -> fmt::Result {
    let drops = |pick: fn(&Counter) -> u64| {
        s.origin_drops
            .iter()
            .map(move |(origin, c)| ([("origin", origin.as_str())], pick(c)))
    };
    counters(
        e,
        "api_shield_origin_dropped_packets",
        "Packets dropped by the entries of each origin (list); `kernel` is the kernel's own \
         auto-blocks",
        None,
        drops(|c| c.packets),
    )?;
    counters(
        e,
        "api_shield_origin_dropped",
        "Bytes dropped by the entries of each origin (list)",
        Some(Unit::Bytes),
        drops(|c| c.bytes),
    )?;
    gauges(
        e,
        "api_shield_origin_entries",
        "Entries of each origin (list) by action; `kernel` counts live auto-blocks, `config` \
         the management_allow prefixes",
        None,
        s.origin_entries.iter().map(|((origin, action), n)| {
            let action = match action {
                Action::Allow => "allow",
                Action::Block => "block",
            };
            ([("origin", origin.as_str()), ("action", action)], *n)
        }),
    )?;
    gauges(
        e,
        "api_shield_map_used",
        "Entries in use of each kernel map, in the units of api_shield_map_capacity",
        None,
        s.maps
            .iter()
            .filter_map(|m| Some(([("map", m.map)], m.used?))),
    )?;
    gauges(
        e,
        "api_shield_map_capacity",
        "Capacity of each kernel map, fixed when the program was loaded (v4_nodes in \
         16-slot nodes, sketch_width in cells per row)",
        None,
        s.maps.iter().map(|m| ([("map", m.map)], m.capacity)),
    )?;
    gauges(
        e,
        "api_shield_rules_expiry_level",
        "Grid on which kernel expiries are rounded up (0 = finest); above 0 the rule table is \
         too small for the finest and kernel expiries are later than needed (raise rules)",
        None,
        [(NONE, u64::from(s.rules.level))],
    )?;
    gauges(
        e,
        "api_shield_rules_unbounded_expiries",
        "Expiring blocks held in the kernel without expiry because the rule table is full: \
         removed on time by the daemon, but not while it is down (raise rules)",
        None,
        [(NONE, s.rules.unbounded as u64)],
    )?;
    Ok(())
}

/// The health of each feed.
fn feeds(e: &mut DescriptorEncoder, s: &ShieldSnapshot) -> fmt::Result {
    let feeds = || {
        s.feeds
            .iter()
            .map(|(name, h)| ([("feed", name.as_str())], h))
    };
    counters(
        e,
        "api_shield_feed_syncs",
        "Successful syncs of each feed (watched list file or CrowdSec)",
        None,
        feeds().map(|(l, h)| (l, h.syncs_total)),
    )?;
    counters(
        e,
        "api_shield_feed_errors",
        "Failed syncs of each feed",
        None,
        feeds().map(|(l, h)| (l, h.errors_total)),
    )?;
    counters(
        e,
        "api_shield_feed_lockout_skipped",
        "Entries of each feed left out because they would cut this host off (they cover \
         one of its addresses or a management prefix), counted at every sync",
        None,
        feeds().map(|(l, h)| (l, h.lockout_skipped_total)),
    )?;
    counters(
        e,
        "api_shield_feed_malformed_skipped",
        "Decisions the CrowdSec feed skipped because they could not be read or used (not \
         an object, a field of the wrong type, no usable value, type or duration); list \
         files log their skipped lines instead",
        None,
        feeds().map(|(l, h)| (l, h.malformed_skipped_total)),
    )?;
    gauges(
        e,
        "api_shield_feed_last_success_timestamp",
        "Unix time of each feed's last successful sync; absent until its first",
        Some(Unit::Seconds),
        feeds().filter_map(|(l, h)| Some((l, h.last_success_ms? as f64 / 1e3))),
    )?;
    gauges(
        e,
        "api_shield_feed_degraded",
        "1 while a feed's source is unreachable (what it last gave stays enforced)",
        None,
        feeds().map(|(l, h)| (l, u64::from(h.degraded))),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::FeedHealth;
    use crate::gateway::EscalationOutcome;
    use crate::metrics::snapshot::MapFill;
    use crate::policy::Rule;
    use crate::table::expiry::ExpiryPlan;
    use std::time::Duration;

    fn sample() -> ShieldSnapshot {
        let mut counters = vec![Counter::default(); verdict::SLOTS as usize];
        counters[verdict::PASS as usize] = Counter {
            packets: 10,
            bytes: 740,
        };
        counters[verdict::BLOCKLISTED as usize] = Counter {
            packets: 3,
            bytes: 222,
        };
        counters[verdict::AUTO_BLOCK_ADDED as usize].packets = 2;
        let mut snapshot = ShieldSnapshot {
            attachment: Some(("eth0".into(), "skb".into())),
            attached: Some(false),
            monitor: false,
            start_time: Duration::from_millis(1_700_000_000_500),
            counters,
            maps: vec![
                MapFill {
                    map: "rules",
                    used: Some(4),
                    capacity: 64,
                },
                MapFill {
                    map: "offenders",
                    used: None,
                    capacity: 8,
                },
            ],
            rules: ExpiryPlan {
                level: 2,
                unbounded: 5,
            },
            ..ShieldSnapshot::default()
        };
        snapshot.origin_drops.insert(
            "kernel".into(),
            Counter {
                packets: 3,
                bytes: 222,
            },
        );
        snapshot
            .origin_entries
            .insert(("cli".into(), Action::Block), 5);
        snapshot.feeds.insert(
            "firehol".into(),
            FeedHealth {
                last_success_ms: Some(1_700_000_000_250),
                syncs_total: 4,
                errors_total: 1,
                lockout_skipped_total: 2,
                malformed_skipped_total: 3,
                ..FeedHealth::default()
            },
        );
        snapshot
    }

    #[test]
    fn exposition_names_types_and_values() {
        let text = render(sample(), None).unwrap();
        for line in [
            "# TYPE api_shield_verdict_packets_total counter",
            "api_shield_verdict_packets_total{verdict=\"pass\"} 10",
            "api_shield_verdict_packets_total{verdict=\"blocklisted\"} 3",
            "api_shield_verdict_packets_total{verdict=\"monitored\"} 0",
            "api_shield_verdict_bytes_total{verdict=\"pass\"} 740",
            "api_shield_detail_packets_total{detail=\"block_auto\"} 0",
            "api_shield_auto_blocks_total 2",
            "api_shield_auto_block_events_total{outcome=\"suppressed\"} 0",
            "api_shield_origin_dropped_packets_total{origin=\"kernel\"} 3",
            "api_shield_origin_dropped_bytes_total{origin=\"kernel\"} 222",
            "api_shield_origin_entries{origin=\"cli\",action=\"block\"} 5",
            "api_shield_map_used{map=\"rules\"} 4",
            "api_shield_map_capacity{map=\"offenders\"} 8",
            "api_shield_rules_expiry_level 2",
            "api_shield_rules_unbounded_expiries 5",
            "# TYPE api_shield_build_info gauge",
            "api_shield_xdp_info{iface=\"eth0\",mode=\"skb\"} 1",
            "api_shield_monitor_mode 0",
            "api_shield_attached 0",
            "api_shield_start_time_seconds 1700000000.5",
            "api_shield_feed_syncs_total{feed=\"firehol\"} 4",
            "api_shield_feed_errors_total{feed=\"firehol\"} 1",
            "api_shield_feed_lockout_skipped_total{feed=\"firehol\"} 2",
            "api_shield_feed_malformed_skipped_total{feed=\"firehol\"} 3",
            "api_shield_feed_last_success_timestamp_seconds{feed=\"firehol\"} 1700000000.25",
            "api_shield_feed_degraded{feed=\"firehol\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        let build = format!(
            "api_shield_build_info{{version=\"{}\",abi=\"{ABI_VERSION}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        // Untracked fill is left out rather than reported as zero.
        assert!(!text.contains("api_shield_map_used{map=\"offenders\"}"));
        // Detail counters that count events are not mixed with packet counters.
        assert!(!text.contains("detail=\"auto_block_added\""), "{text}");
    }

    fn gateway() -> GatewayMetrics {
        let gateway = GatewayMetrics::new();
        gateway.record_without_decision("check", 400);
        gateway.record_escalation(
            Rule::AuthFailures,
            EscalationOutcome::Blocked,
            Duration::from_millis(2),
        );
        gateway
    }

    #[test]
    fn gateway_families_follow_the_snapshot_when_there_is_a_gateway() {
        let text = render(sample(), Some(&gateway())).unwrap();
        for line in [
            "api_shield_verdict_packets_total{verdict=\"pass\"} 10",
            "# TYPE api_shield_gateway_requests_total counter",
            "api_shield_gateway_requests_total{listener=\"check\",route=\"none\",status_class=\"4xx\",auth=\"not_applicable\"} 1",
            "api_shield_gateway_escalations_total{rule=\"auth_failures\",outcome=\"blocked\"} 1",
            "api_shield_gateway_escalations_total{rule=\"over_quota\",outcome=\"failed\"} 0",
            "# TYPE api_shield_gateway_escalation_latency_seconds histogram",
            "api_shield_gateway_escalation_latency_seconds_count{rule=\"auth_failures\"} 1",
            "api_shield_gateway_escalation_latency_seconds_bucket{rule=\"auth_failures\",le=\"0.002\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // A family with no series yet (no quota rejection) is left out, HELP and TYPE too.
        assert!(!text.contains("quota_rejections"), "{text}");
        let without = render(sample(), None).unwrap();
        assert!(!without.contains("gateway"), "{without}");
    }

    #[test]
    fn every_sample_belongs_to_a_typed_family() {
        let text = render(sample(), Some(&gateway())).unwrap();
        let typed: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let kind = |name: &str| typed.iter().find(|(n, _)| *n == name).map(|(_, k)| *k);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("api_shield_"), "{line}");
            // A histogram's samples are its family's name with a suffix.
            let histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .any(|family| kind(family) == Some("histogram"));
            assert!(
                kind(name).is_some() || histogram,
                "`{name}` has no TYPE line"
            );
        }
        // Counters, and only counters, end in `_total`.
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
        }
    }
}
