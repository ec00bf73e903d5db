//! Saving and loading: round trip through the crash-safe writer, and refusal of damaged,
//! foreign, oversize or over-limit files with nothing half-loaded.

use super::{answered, get, with_body, with_identity};
use crate::inventory::{
    INVENTORY_FILE, Inventory, InventoryConfig, InventoryError, MAX_INVENTORY_BYTES,
};
use crate::state_dir::{StateDir, StateDirError};

fn sample() -> Inventory {
    let mut inv = Inventory::default();
    for i in 0..50u64 {
        inv.record(&with_identity(
            get(&format!("/users/{i}")),
            &format!("id{i}"),
        ));
        inv.record(&get(&format!(
            "/docs/page{}",
            char::from(b'a' + (i % 20) as u8)
        )));
    }
    inv.record(&with_body(
        answered("api.example", "POST", "/users", 201),
        r#"{"a":[1]}"#,
    ));
    inv.record(&answered("other.example", "DELETE", "/x/1", 204));
    inv
}

fn dir() -> (tempfile::TempDir, StateDir) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = StateDir::open(&temp.path().join("inventory")).expect("open");
    (temp, dir)
}

fn listing(inv: &Inventory) -> String {
    inv.openapi_text(None)
}

#[test]
fn saved_inventory_loads_back_the_same() {
    let (_temp, dir) = dir();
    let inv = sample();
    inv.save(&dir, 42).expect("save");
    let back = Inventory::load(&dir, InventoryConfig::default()).expect("load");
    assert_eq!(listing(&back), listing(&inv));
    assert_eq!(back.endpoint_count(), inv.endpoint_count());
    // The learned tree came back too: the collapsed position stays collapsed.
    let mut back = back;
    back.record(&get("/docs/brandnew"));
    assert_eq!(back.endpoint_count(), inv.endpoint_count());
}

#[test]
fn a_missing_file_is_an_empty_inventory() {
    let (_temp, dir) = dir();
    let inv = Inventory::load(&dir, InventoryConfig::default()).expect("load");
    assert_eq!(inv.endpoint_count(), 0);
}

#[test]
fn damaged_files_are_refused_whole() {
    let (_temp, dir) = dir();
    sample().save(&dir, 1).expect("save");
    let bytes = dir
        .read(INVENTORY_FILE, MAX_INVENTORY_BYTES)
        .expect("read")
        .expect("file");
    let truncated = &bytes[..bytes.len() / 2];
    dir.write_atomic(INVENTORY_FILE, truncated).expect("write");
    let err = Inventory::load(&dir, InventoryConfig::default()).expect_err("refused");
    assert!(matches!(err, InventoryError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(INVENTORY_FILE), "{err}");
    dir.write_atomic(INVENTORY_FILE, b"\xff\xfe not json")
        .expect("write");
    assert!(Inventory::load(&dir, InventoryConfig::default()).is_err());
}

#[test]
fn another_version_is_refused_by_name() {
    let json = r#"{"version":999,"saved_at_ms":0,"hosts":[],"future":true}"#;
    let err = Inventory::from_json(json.as_bytes(), InventoryConfig::default()).expect_err("v");
    assert!(
        matches!(err, InventoryError::Version { found: 999, .. }),
        "{err}"
    );
}

#[test]
fn unknown_fields_are_refused() {
    let json = r#"{"version":1,"saved_at_ms":0,"hosts":[],"extra":1}"#;
    let err = Inventory::from_json(json.as_bytes(), InventoryConfig::default()).expect_err("x");
    assert!(matches!(err, InventoryError::Corrupt { .. }), "{err}");
}

#[test]
fn files_over_the_limits_are_refused() {
    let inv = sample();
    let (_temp, dir) = dir();
    inv.save(&dir, 1).expect("save");
    let bytes = dir
        .read(INVENTORY_FILE, MAX_INVENTORY_BYTES)
        .expect("read")
        .expect("file");
    let small = InventoryConfig {
        max_endpoints_per_host: 1,
        ..InventoryConfig::default()
    };
    let err = Inventory::from_json(&bytes, small).expect_err("over the cap");
    assert!(matches!(err, InventoryError::OverLimit { .. }), "{err}");
    assert!(err.to_string().contains("max_endpoints_per_host"), "{err}");
    let few_hosts = InventoryConfig {
        max_hosts: 0,
        ..InventoryConfig::default()
    };
    assert!(Inventory::from_json(&bytes, few_hosts).is_err());
    let narrow = InventoryConfig {
        template: crate::inventory::TemplateConfig {
            sibling_threshold: 1,
            ..Default::default()
        },
        ..InventoryConfig::default()
    };
    assert!(
        Inventory::from_json(&bytes, narrow).is_err(),
        "learned tree wider than allowed"
    );
}

#[test]
fn oversize_files_are_refused_before_parsing() {
    let (_temp, dir) = dir();
    let file = std::fs::File::create(dir.path().join(INVENTORY_FILE)).expect("create");
    file.set_len(MAX_INVENTORY_BYTES + 1).expect("sparse file");
    let err = Inventory::load(&dir, InventoryConfig::default()).expect_err("too large");
    assert!(
        matches!(err, InventoryError::State(StateDirError::TooLarge { .. })),
        "{err}"
    );
}

#[test]
fn bad_templates_and_duplicates_are_refused() {
    let host = |endpoints: &str| {
        format!(
            r#"{{"version":1,"saved_at_ms":0,"hosts":[{{"host":"h","saturated":false,"learned":{{}},"endpoints":[{endpoints}]}}]}}"#
        )
    };
    let stats = serde_json::to_string(&crate::inventory::EndpointStats::default()).expect("s");
    let one = |t: &str| format!(r#"{{"method":"GET","template":"{t}","stats":{stats}}}"#);
    let config = InventoryConfig::default();
    let ok = host(&one("/a"));
    assert!(Inventory::from_json(ok.as_bytes(), config).is_ok());
    let relative = host(&one("a"));
    assert!(Inventory::from_json(relative.as_bytes(), config).is_err());
    let twice = host(&format!("{},{}", one("/a"), one("/a")));
    assert!(Inventory::from_json(twice.as_bytes(), config).is_err());
}
