//! Replays the saved fuzz inputs on the stable toolchain: every file under
//! `fuzz/regressions/<target>/` (crash inputs `cargo xtask fuzz` kept) and
//! `fuzz/seeds/<target>/` (the seed corpus), through the very function the libFuzzer target
//! calls (`fuzz/src/lib.rs`, included here as a module). A failure names the file.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The saved inputs of `target`, by kind of folder, in name order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for kind in ["regressions", "seeds"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn replay(target: &str) {
    let (_, check) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no saved inputs for {target}: fuzz/seeds/{target}/ should hold its seed corpus"
    );
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
            failures.push(format!("{}: {}", path.display(), message(payload.as_ref())));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} saved inputs of {target} fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn list_formats() {
    replay("list_formats");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn control_request() {
    replay("control_request");
}

#[test]
fn push_batch() {
    replay("push_batch");
}

#[test]
fn crowdsec_stream() {
    replay("crowdsec_stream");
}

#[test]
fn go_duration() {
    replay("go_duration");
}

#[test]
fn http_basic() {
    replay("http_basic");
}

#[test]
fn jwt() {
    replay("jwt");
}

#[test]
fn jwk() {
    replay("jwk");
}

#[test]
fn route_path() {
    replay("route_path");
}

#[test]
fn api_key_hash() {
    replay("api_key_hash");
}

#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "list_formats",
            "config",
            "control_request",
            "push_batch",
            "crowdsec_stream",
            "go_duration",
            "http_basic",
            "jwt",
            "jwk",
            "api_key_hash",
            "route_path"
        ],
        "a target was added: give it a #[test] here"
    );
}
