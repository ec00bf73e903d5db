use std::path::Path;
use std::time::Duration;

use api_shield_common::NS_PER_SEC;
use api_shield_common::config::{FLAG_PORT_SCOPED, MODE_ENFORCE, MODE_MONITOR, RateParams};
use api_shield_common::maps::PORT_WORDS;

use super::*;

const FILE: &str = "/etc/api-shield/config.toml";

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_config(text, Path::new(FILE))
}

fn lines(errors: &ConfigErrors) -> Vec<Option<usize>> {
    errors.errors().iter().map(|e| e.line).collect()
}

const EVERY_KEY: &str = r#"
mode = "monitor"
pin_root = "/sys/fs/bpf/shield-test"
state_dir = "/srv/shield/state"
audit_log = "/srv/shield/audit.jsonl"
control_group = "shield-ops"
management_allow = ["192.0.2.0/24", "2001:db8::/48", "198.51.100.7"]

[limits]
packets_per_second = 5000
burst = 7000
syn_per_second = 0
syn_burst = 1
ports = [443, 8443]
v4_prefix = 24
v6_prefix = 56

[autoblock]
strikes = 0
window = "90s"
ttl = "24h"
events_per_second = 7

[capacity]
v4_nodes = 1024
rules = 4096
v6_entries = 1000
sketch_width = 1024
offenders = 333
auto_blocks = 444

[[feeds]]
name = "firehol-level1"
path = "/srv/lists/firehol_level1.netset"
format = "netset"
skip_invalid = true
interval = "30s"

[metrics]
listen = "[::1]:9100"

[inventory]
enabled = false
save_interval = "5m"
max_endpoints_per_host = 200
learn_unanswered = true

[inventory.template]
sibling_threshold = 25
"#;

fn every_key_config() -> Config {
    Config {
        mode: Mode::Monitor,
        pin_root: "/sys/fs/bpf/shield-test".into(),
        state_dir: "/srv/shield/state".into(),
        audit_log: "/srv/shield/audit.jsonl".into(),
        control_group: Some("shield-ops".into()),
        management_allow: vec![
            "192.0.2.0/24".parse().unwrap(),
            "2001:db8::/48".parse().unwrap(),
            "198.51.100.7/32".parse().unwrap(),
        ],
        limits: Limits {
            packets_per_second: 5000,
            burst: 7000,
            syn_per_second: 0,
            syn_burst: 1,
            ports: vec![443, 8443],
            v4_prefix: 24,
            v6_prefix: 56,
        },
        autoblock: Autoblock {
            strikes: 0,
            window: Duration::from_secs(90),
            ttl: Duration::from_secs(24 * 3600),
            events_per_second: 7,
        },
        capacity: Capacity {
            v4_nodes: 1024,
            rules: 4096,
            v6_entries: 1000,
            sketch_width: 1024,
            offenders: 333,
            auto_blocks: 444,
        },
        feeds: vec![crate::feeds::file::FileFeed {
            name: "firehol-level1".into(),
            path: "/srv/lists/firehol_level1.netset".into(),
            format: crate::lists::formats::Format::Netset,
            skip_invalid: true,
            interval: Duration::from_secs(30),
            max_bytes: crate::feeds::file::DEFAULT_MAX_BYTES,
            allow_shrink: false,
            max_shrink_percent: crate::feeds::file::DEFAULT_MAX_SHRINK_PERCENT,
        }],
        push: None,
        crowdsec: None,
        metrics: Some(crate::metrics::MetricsConfig {
            listen: "[::1]:9100".parse().unwrap(),
        }),
        gateway: None,
        run_as: None,
        max_ttl: crate::parse::DEFAULT_MAX_TTL,
        import: super::Import::default(),
        inventory: crate::inventory::InventoryConfig {
            enabled: false,
            save_interval: Duration::from_secs(300),
            max_endpoints_per_host: 200,
            learn_unanswered: true,
            template: crate::inventory::TemplateConfig {
                sibling_threshold: 25,
                ..Default::default()
            },
            ..Default::default()
        },
    }
}

#[test]
fn empty_file_gives_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.mode, Mode::Enforce);
    assert_eq!(config.pin_root, Path::new("/sys/fs/bpf/api-shield"));
    assert_eq!(config.state_dir, Path::new("/var/lib/api-shield"));
    assert_eq!(
        config.audit_log,
        Path::new("/var/log/api-shield/audit.jsonl")
    );
    assert_eq!(config.control_group, None);
    assert!(config.management_allow.is_empty());
    assert_eq!(config.limits.packets_per_second, 1000);
    assert_eq!(config.limits.burst, 2000);
    assert_eq!(config.limits.syn_per_second, 100);
    assert_eq!(config.limits.syn_burst, 200);
    assert!(config.limits.ports.is_empty());
    assert_eq!(config.limits.v4_prefix, 32);
    assert_eq!(config.limits.v6_prefix, 64);
    assert_eq!(config.autoblock.strikes, 500);
    assert_eq!(config.autoblock.window, Duration::from_secs(10));
    assert_eq!(config.autoblock.ttl, Duration::from_secs(600));
    assert_eq!(config.autoblock.events_per_second, 100);
    assert_eq!(config.capacity.v4_nodes, 65536);
    assert_eq!(config.capacity.rules, 65536);
    assert_eq!(config.capacity.v6_entries, 262_144);
    assert_eq!(config.capacity.sketch_width, 65536);
    assert_eq!(config.capacity.offenders, 65536);
    assert_eq!(config.capacity.auto_blocks, 65536);
    // Comments and empty sections change nothing.
    assert_eq!(
        parse("# nothing\n[limits]\n[autoblock]\n[capacity]\n").unwrap(),
        config
    );
}

#[test]
fn every_key_is_read() {
    assert_eq!(parse(EVERY_KEY).unwrap(), every_key_config());
}

#[test]
fn every_key_round_trips_through_serialization() {
    let config = every_key_config();
    let text = toml::to_string(&config).unwrap();
    assert_eq!(parse(&text).unwrap(), config, "{text}");
    let defaults = toml::to_string(&Config::default()).unwrap();
    assert_eq!(parse(&defaults).unwrap(), Config::default(), "{defaults}");
}

#[test]
fn dotted_keys_are_read_too() {
    let config = parse("limits.burst = 5\ncapacity.rules = 10\n").unwrap();
    assert_eq!(config.limits.burst, 5);
    assert_eq!(config.capacity.rules, 10);
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let errors = parse("mode = \"monitor\"\n\n[limits]\nburst = 10\nbrust = 20\n").unwrap_err();
    assert_eq!(lines(&errors), [Some(5)]);
    let text = errors.to_string();
    assert!(
        text.starts_with(&format!("{FILE}:5: limits.brust = 20:")),
        "{text}"
    );
    assert!(text.contains("unknown field `brust`"), "{text}");
}

#[test]
fn unknown_section_is_reported_at_its_header() {
    let errors = parse("mode = \"monitor\"\n[limit]\nburst = 10\n").unwrap_err();
    assert_eq!(lines(&errors), [Some(2)]);
    assert!(
        errors.to_string().contains("unknown field `limit`"),
        "{errors}"
    );
}

#[test]
fn several_problems_are_reported_together() {
    let text = "\
mode = \"enforced\"
management_allow = [
  \"192.0.2.0/24\",
  \"198.18.0.7/24\",
  \"nonsense\",
]
[limits]
v4_prefix = 33
burst = 0
ports = [80, 0]
colour = \"blue\"
[autoblock]
window = \"ten seconds\"
ttl = \"0s\"
[capacity]
sketch_width = 1000
rules = -1
";
    let errors = parse(text).unwrap_err();
    let rendered = errors.to_string();
    assert_eq!(
        lines(&errors),
        [
            Some(1),
            Some(4),
            Some(5),
            Some(8),
            Some(9),
            Some(10),
            Some(11),
            Some(13),
            Some(14),
            Some(16),
            Some(17),
        ],
        "{rendered}"
    );
    assert_eq!(rendered.lines().count(), errors.errors().len());
    for expected in [
        "config.toml:1: mode = \"enforced\": unknown variant `enforced`",
        "config.toml:4: management_allow[1] = \"198.18.0.7/24\": `198.18.0.7/24` has host bits set; \
         did you mean `198.18.0.0/24`?",
        "config.toml:5: management_allow[2] = \"nonsense\": `nonsense` is not an IP address",
        "config.toml:8: limits.v4_prefix = 33: must be between 0 and 32",
        "config.toml:9: limits.burst = 0: must be at least 1 while limits.packets_per_second is 1000",
        "config.toml:10: limits.ports[1] = 0: port 0 is not a valid destination port",
        "config.toml:11: limits.colour = \"blue\": unknown field `colour`",
        "config.toml:13: autoblock.window = \"ten seconds\": `ten seconds` is not a duration",
        "config.toml:14: autoblock.ttl = \"0s\": `0s` is not a positive duration",
        "config.toml:16: capacity.sketch_width = 1000: must be a power of two (like 1024)",
        "config.toml:17: capacity.rules = -1: invalid value: integer `-1`",
    ] {
        assert!(
            rendered.contains(expected),
            "missing {expected:?} in\n{rendered}"
        );
    }
}

#[test]
fn wrong_types_and_syntax_errors_are_located() {
    let errors = parse("[limits]\nburst = \"lots\"\n").unwrap_err();
    assert_eq!(lines(&errors), [Some(2)]);
    assert!(
        errors
            .to_string()
            .contains("limits.burst = \"lots\": invalid type")
    );

    let errors = parse("mode = \"monitor\"\nlimits = 5\n").unwrap_err();
    assert_eq!(lines(&errors), [Some(2)]);

    let errors = parse("mode = \"monitor\"\n\nburst = \n").unwrap_err();
    assert_eq!(lines(&errors), [Some(3)]);
    let text = errors.to_string();
    assert!(
        text.starts_with(&format!("{FILE}:3: invalid TOML")),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn other_field_checks() {
    for (text, needle) in [
        ("pin_root = \"relative/pins\"", "must be an absolute path"),
        ("control_group = \"two words\"", "is not a valid group name"),
        ("[limits]\nv6_prefix = 129", "must be between 0 and 128"),
        ("[limits]\nports = [70000]", "expected u16"),
        (
            "[limits]\nsyn_burst = 0",
            "must be at least 1 while limits.syn_per_second",
        ),
        (
            "[autoblock]\nevents_per_second = 0",
            "must be between 1 and",
        ),
        ("[capacity]\nv4_nodes = 0", "must be between 1 and"),
        (
            "[capacity]\nv4_nodes = 268435456",
            "must be between 1 and 268435455",
        ),
        (
            "[capacity]\nrules = 536870913",
            "must be between 1 and 536870912",
        ),
    ] {
        let errors = parse(text).unwrap_err();
        assert_eq!(errors.errors().len(), 1, "{text}: {errors}");
        assert!(errors.to_string().contains(needle), "{text}: {errors}");
    }
    // A zero burst is fine while its limit is disabled.
    let config = parse("[limits]\npackets_per_second = 0\nburst = 0\n").unwrap();
    assert!(!config.kernel_config([0, 0], 0).pkt.enabled());
}

#[test]
fn unreadable_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let errors = load_config(&path).unwrap_err();
    assert_eq!(lines(&errors), [None]);
    let text = errors.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read", path.display())),
        "{text}"
    );

    std::fs::write(&path, EVERY_KEY).unwrap();
    assert_eq!(load_config(&path).unwrap(), every_key_config());
}

#[test]
fn kernel_config_of_defaults() {
    let k = Config::default().kernel_config([11, 22], 1);
    assert_eq!(k.mode, MODE_ENFORCE);
    assert_eq!(k.active_table, 1);
    assert_eq!(k.seeds, [11, 22]);
    assert_eq!(k.flags, 0);
    assert_eq!(k.v4_nodes, 65536);
    assert_eq!(k.v4_rate_prefix, 32);
    assert_eq!(k.v6_rate_prefix, 64);
    assert_eq!(k.sketch_mask, 0xFFFF);
    assert_eq!(k.autoblock_strikes, 500);
    assert_eq!(k.autoblock_window_ns, 10 * NS_PER_SEC);
    assert_eq!(k.autoblock_ttl_ns, 600 * NS_PER_SEC);
    assert_eq!(
        k.pkt,
        RateParams {
            rate_per_sec: 1000,
            capacity: 2000 * NS_PER_SEC,
            full_refill_ns: 2 * NS_PER_SEC,
        }
    );
    assert_eq!(
        k.syn,
        RateParams {
            rate_per_sec: 100,
            capacity: 200 * NS_PER_SEC,
            full_refill_ns: 2 * NS_PER_SEC,
        }
    );
    assert_eq!(
        k.events,
        RateParams {
            rate_per_sec: 100,
            capacity: 100 * NS_PER_SEC,
            full_refill_ns: NS_PER_SEC,
        }
    );
}

#[test]
fn kernel_config_of_every_key() {
    let config = every_key_config();
    let k = config.kernel_config([1, 2], 0);
    assert_eq!(k.mode, MODE_MONITOR);
    assert_eq!(k.active_table, 0);
    assert_eq!(k.flags, FLAG_PORT_SCOPED);
    assert_eq!(k.v4_nodes, 1024);
    assert_eq!(k.v4_rate_prefix, 24);
    assert_eq!(k.v6_rate_prefix, 56);
    assert_eq!(k.sketch_mask, 1023);
    assert_eq!(k.autoblock_strikes, 0);
    assert_eq!(k.autoblock_window_ns, 90 * NS_PER_SEC);
    assert_eq!(k.autoblock_ttl_ns, 24 * 3600 * NS_PER_SEC);
    assert_eq!(k.pkt, RateParams::new(5000, 7000));
    // 7000 packets at 5000/s refill in 1.4 s.
    assert_eq!(k.pkt.full_refill_ns, 1_400_000_000);
    assert!(!k.syn.enabled());
    assert_eq!(k.events, RateParams::new(7, 7));
    // 7 packets at 7/s: one second.
    assert_eq!(k.events.full_refill_ns, NS_PER_SEC);
}

#[test]
fn port_bitmap_sets_one_bit_per_port() {
    let config = every_key_config();
    let words = config.port_bitmap();
    assert_eq!(words.len(), PORT_WORDS as usize);
    assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
    assert_eq!(words[443 / 32], 1 << (443 % 32));
    assert_eq!(words[8443 / 32], 1 << (8443 % 32));
    assert!(Config::default().port_bitmap().iter().all(|&w| w == 0));
}

#[test]
fn inventory_settings_are_checked() {
    let errors = parse("[inventory]\nsave_interval = \"0s\"\nmax_hosts = 0\n").unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("inventory.save_interval"), "{text}");
    assert!(text.contains("inventory.max_hosts"), "{text}");
    assert!(parse("[inventory]\nsurprise = 1\n").is_err());
}
