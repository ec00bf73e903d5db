//! Recording exchanges: figures per endpoint, what creates endpoints, and the memory bounds.

use std::time::Duration;

use super::{answered, get, with_body, with_identity};
use crate::inventory::{
    Inventory, InventoryConfig, OTHER_HOST, OVERFLOW_TEMPLATE, Recorded, TemplateConfig,
};
use crate::policy::config::AuthMethod;

const HOST: &str = "api.example";

fn endpoint<'a>(
    inv: &'a Inventory,
    method: &str,
    template: &str,
) -> &'a crate::inventory::EndpointStats {
    let host = inv.host(HOST).expect("host");
    host.endpoints()
        .into_iter()
        .find(|e| format!("{:?}", e.method).eq_ignore_ascii_case(method) && e.template == template)
        .unwrap_or_else(|| panic!("no endpoint {method} {template}"))
        .stats
}

#[test]
fn figures_are_kept_per_endpoint() {
    let mut inv = Inventory::default();
    for i in 0..100u64 {
        let mut ex = with_identity(get(&format!("/users/{i}?x=1")), &format!("user{}", i % 7));
        ex.at_ms = 10_000 + i;
        ex.query_names = vec!["expand".into(), "fields".into()];
        ex.upstream_latency = Some(Duration::from_millis(if i < 98 { 5 } else { 500 }));
        ex.status = Some(if i % 10 == 0 { 500 } else { 200 });
        ex.content_type = Some("application/json".into());
        inv.record(&ex);
    }
    let stats = endpoint(&inv, "get", "/users/{id}");
    assert_eq!(stats.requests, 100);
    assert_eq!(stats.status_classes, [0, 90, 0, 0, 10]);
    assert_eq!(stats.first_seen_ms, 10_000);
    assert_eq!(stats.last_seen_ms, 10_099);
    assert_eq!(stats.distinct_identities(), 7);
    assert_eq!(stats.auth_methods, vec![AuthMethod::ApiKey]);
    assert_eq!(stats.anonymous, 0);
    let p50 = stats.latency.quantile(0.5).expect("p50");
    let p99 = stats.latency.quantile(0.99).expect("p99");
    assert!(
        p50 > Duration::from_millis(4) && p50 < Duration::from_millis(6),
        "{p50:?}"
    );
    assert!(p99 > Duration::from_millis(400), "{p99:?}");
    let names: Vec<_> = stats.query_names.items.iter().map(String::as_str).collect();
    assert_eq!(names, ["expand", "fields"]);
    assert!(stats.content_types.items.contains("application/json"));
    assert_eq!(inv.host(HOST).expect("host").endpoint_count(), 1);
}

#[test]
fn json_body_shapes_are_learned_within_bounds() {
    let mut inv = Inventory::default();
    let body = r#"{"name":"a","age":3,"tags":["x"],"address":{"zip":"1","geo":{"lat":1.5,"deep":{"deeper":{"deepest":1}}}}}"#;
    inv.record(&with_body(answered(HOST, "POST", "/users", 201), body));
    inv.record(&with_body(
        answered(HOST, "POST", "/users", 201),
        r#"{"name":null}"#,
    ));
    let stats = endpoint(&inv, "post", "/users");
    assert_eq!(stats.bodies_sampled, 2);
    let props = &stats.body.properties;
    assert_eq!(
        props["name"].types,
        crate::inventory::shape::STRING | crate::inventory::shape::NULL
    );
    assert_eq!(props["age"].types, crate::inventory::shape::INTEGER);
    assert!(props["tags"].items.is_some());
    assert!(stats.body.depth() <= inv.config().max_body_depth);
    let geo = &props["address"].properties["geo"];
    assert!(
        geo.properties["deep"].truncated,
        "the deepest levels were left out"
    );
    assert!(geo.properties["deep"].properties.is_empty());

    // Many distinct keys: the node budget holds.
    let mut inv = Inventory::default();
    for i in 0..50 {
        let keys: Vec<String> = (0..50).map(|k| format!("\"k{i}_{k}\":1")).collect();
        let json = format!("{{{}}}", keys.join(","));
        inv.record(&with_body(answered(HOST, "POST", "/bulk", 200), &json));
    }
    let stats = endpoint(&inv, "post", "/bulk");
    assert_eq!(stats.body.nodes(), inv.config().max_body_nodes);
}

#[test]
fn answers_showing_no_endpoint_create_none() {
    let mut inv = Inventory::default();
    for status in crate::inventory::NOT_EXISTING_STATUSES {
        let ex = answered(HOST, "GET", "/wp-admin/setup.php", status);
        assert_eq!(inv.record(&ex), Recorded::NotExisting, "{status}");
    }
    // The shield answered itself (no upstream latency): proves nothing.
    let mut refused = get("/admin");
    refused.upstream_latency = None;
    refused.status = Some(403);
    assert_eq!(inv.record(&refused), Recorded::NotExisting);
    // No answer known (the check endpoint): off by default.
    let mut unanswered = get("/admin");
    unanswered.status = None;
    assert_eq!(inv.record(&unanswered), Recorded::NotExisting);
    assert!(inv.host(HOST).is_none(), "no host appeared for nothing");

    // A 404 on an endpoint that exists still counts there.
    assert_eq!(inv.record(&get("/users/1")), Recorded::Created);
    assert_eq!(
        inv.record(&answered(HOST, "GET", "/users/2", 404)),
        Recorded::Counted
    );
    assert_eq!(endpoint(&inv, "get", "/users/{id}").status_classes[3], 1);
    assert_eq!(inv.endpoint_count(), 1);

    let mut learning = Inventory::new(InventoryConfig {
        learn_unanswered: true,
        ..InventoryConfig::default()
    });
    assert_eq!(learning.record(&unanswered), Recorded::Created);
}

#[test]
fn sibling_collapse_merges_endpoints_figures() {
    let mut inv = Inventory::default();
    let threshold = inv.config().template.sibling_threshold;
    for i in 0..=threshold {
        let name = format!("file{}", char::from(b'a' + i as u8));
        inv.record(&with_identity(get(&format!("/files/{name}")), &name));
    }
    let host = inv.host(HOST).expect("host");
    assert_eq!(host.endpoint_count(), 1);
    let stats = endpoint(&inv, "get", "/files/{name}");
    assert_eq!(stats.requests, threshold as u64 + 1);
    assert_eq!(stats.distinct_identities(), threshold as u64 + 1);
}

#[test]
fn spec_registered_later_merges_learned_endpoints() {
    let mut inv = Inventory::default();
    inv.record(&get("/users/1"));
    inv.record(&get("/users/alice"));
    inv.record(&get("/users/bob"));
    assert_eq!(inv.endpoint_count(), 3);
    inv.register_spec_paths(&["/users/{userId}"])
        .expect("valid");
    assert_eq!(inv.endpoint_count(), 1);
    assert_eq!(endpoint(&inv, "get", "/users/{userId}").requests, 3);
    // A failing call registers nothing.
    assert!(inv.register_spec_paths(&["/ok/{x}", "bad"]).is_err());
    inv.record(&get("/ok/1"));
    assert_eq!(
        inv.host(HOST).expect("host").templater().spec_paths().len(),
        1
    );
}

#[test]
fn a_host_at_its_cap_is_flagged_and_stops_growing() {
    let cap = 20;
    let mut inv = Inventory::new(InventoryConfig {
        max_endpoints_per_host: cap,
        ..InventoryConfig::default()
    });
    // Random literal names at several depths: collapse keeps some down, the cap the rest.
    for i in 0..5_000u32 {
        let path = format!("/r{}/s{}/t{}", i % 7, (i * 31) % 9, i);
        let outcome = inv.record(&get(&path));
        assert_ne!(outcome, Recorded::NotExisting);
        assert!(inv.host(HOST).expect("host").endpoint_count() <= cap);
    }
    for i in 0..200u32 {
        inv.record(&answered(HOST, "POST", &format!("/p{i}/q{i}/z{i}"), 200));
    }
    let host = inv.host(HOST).expect("host");
    assert!(host.endpoint_count() <= cap);
    assert!(host.is_saturated());
    assert!(
        host.endpoints()
            .iter()
            .any(|e| e.template == OVERFLOW_TEMPLATE)
    );
}

#[test]
fn hosts_past_the_cap_are_counted_together() {
    let mut inv = Inventory::new(InventoryConfig {
        max_hosts: 3,
        ..InventoryConfig::default()
    });
    for i in 0..100 {
        inv.record(&answered(&format!("h{i}.example"), "GET", "/", 200));
    }
    inv.record(&answered(&"x".repeat(10_000), "GET", "/", 200));
    let hosts = inv.hosts();
    assert_eq!(hosts.len(), 4);
    assert!(hosts.iter().any(|(h, _)| *h == OTHER_HOST));
    let other = inv.host(OTHER_HOST).expect("other");
    assert_eq!(other.endpoints()[0].stats.requests, 98);
}

#[test]
fn memory_for_many_raw_paths_under_one_template_is_constant() {
    let mut inv = Inventory::default();
    let record = |inv: &mut Inventory, range: std::ops::Range<u64>| {
        for i in range {
            let ex = with_identity(get(&format!("/users/{i}/orders/{}", i * 7)), "one");
            inv.record(&ex);
        }
    };
    record(&mut inv, 0..1_000);
    let bytes = inv.heap_bytes();
    let endpoints = inv.endpoint_count();
    record(&mut inv, 1_000..101_000);
    assert_eq!(inv.endpoint_count(), endpoints);
    assert_eq!(endpoints, 1);
    assert_eq!(inv.heap_bytes(), bytes, "100,000 raw paths later");
}

#[test]
fn learned_names_at_one_level_do_not_grow_without_bound() {
    let mut inv = Inventory::new(InventoryConfig {
        template: TemplateConfig {
            sibling_threshold: 10,
            ..TemplateConfig::default()
        },
        ..InventoryConfig::default()
    });
    for i in 0..100_000u32 {
        // Letters only, so classification keeps them: only the sibling rule collapses.
        let name: String = i
            .to_string()
            .bytes()
            .map(|b| char::from(b - b'0' + b'a'))
            .collect();
        inv.record(&get(&format!("/pages/{name}")));
    }
    assert_eq!(inv.endpoint_count(), 1);
    assert_eq!(endpoint(&inv, "get", "/pages/{name}").requests, 100_000);
}
