//! Properties over arbitrary input: no panic, templating idempotent, spec paths always win,
//! the endpoint cap always holds.

use proptest::prelude::*;

use super::answered;
use crate::inventory::{Inventory, InventoryConfig, TemplateConfig, Templater};

/// Segments of the shapes that matter: names, numbers, tokens, escapes, unicode, dots,
/// braces, empty.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,12}",
        "[0-9]{1,20}",
        "[A-Za-z0-9_-]{14,40}",
        "[0-9a-f]{16,40}",
        "(%[0-9A-F]{2}){1,4}",
        "\\PC{0,20}",
        Just(String::new()),
        Just("..".to_owned()),
        Just("{id}".to_owned()),
        Just("{x}".to_owned()),
        "[a-z]{1,8}@[a-z]{1,8}\\.com",
    ]
    .prop_map(|s| s.replace(['/', '?', '#'], "_"))
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..40).prop_map(|segs| format!("/{}", segs.join("/")))
}

fn small_config() -> TemplateConfig {
    TemplateConfig {
        sibling_threshold: 3,
        max_segments: 8,
        max_segment_len: 24,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn templating_is_idempotent(learned in prop::collection::vec(path(), 0..30), probe in path()) {
        let mut t = Templater::new(small_config());
        for p in &learned {
            t.learn(p);
        }
        let once = t.template(&probe);
        prop_assert_eq!(t.template(&once), once.clone());
        prop_assert!(once.starts_with('/'));
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in "\\PC{0,300}", learned in prop::collection::vec("\\PC{0,60}", 0..20)) {
        let mut t = Templater::new(small_config());
        for p in &learned {
            t.learn(p);
        }
        let _ = t.template(&raw);
    }

    #[test]
    fn a_spec_path_always_wins(
        literals in prop::collection::vec("[a-z]{1,8}", 1..6),
        param_at in prop::collection::vec(any::<bool>(), 6),
        values in prop::collection::vec(segment(), 6),
        learned in prop::collection::vec(path(), 0..30),
    ) {
        let spec_segments: Vec<String> = literals
            .iter()
            .enumerate()
            .map(|(i, l)| if param_at[i] { format!("{{p{i}}}") } else { l.clone() })
            .collect();
        let spec = format!("/{}", spec_segments.join("/"));
        let concrete: Vec<String> = literals
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if param_at[i] && !values[i].is_empty() { values[i].clone() } else { l.clone() }
            })
            .collect();
        let concrete = format!("/{}", concrete.join("/"));
        let mut t = Templater::new(small_config());
        for p in &learned {
            t.learn(p);
        }
        t.register_spec_paths(&[&spec]).expect("valid spec path");
        prop_assert_eq!(t.template(&concrete), spec.clone());
        prop_assert_eq!(t.template(&spec), spec);
    }

    #[test]
    fn the_endpoint_cap_always_holds(paths in prop::collection::vec(path(), 1..100)) {
        let cap = 7;
        let mut inv = Inventory::new(InventoryConfig {
            max_endpoints_per_host: cap,
            template: small_config(),
            ..InventoryConfig::default()
        });
        for (i, p) in paths.iter().enumerate() {
            let method = ["GET", "POST", "PUT", "FOO"][i % 4];
            inv.record(&answered("h.example", method, p, 200));
            let host = inv.host("h.example").expect("host");
            prop_assert!(host.endpoint_count() <= cap);
        }
        // Overflow endpoints are one per method at most.
        prop_assert!(inv.endpoint_count() <= cap + 4);
    }
}
