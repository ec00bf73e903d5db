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

/// Mutated inputs per target in the bounded run below, unless its time budget ends first.
const MUTATIONS_PER_TARGET: u32 = 100_000;
/// Time each target may take in the bounded run: the whole run stays well under a minute.
const BUDGET_PER_TARGET: std::time::Duration = std::time::Duration::from_secs(2);

/// A small, seeded generator: the same run mutates the same way, so a failure reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Bytes that break parsers: quotes, separators, escapes, controls, high bytes.
const INTERESTING: &[u8] = b"\"\\/%{}[]:,;#\n\r\t\0\x1b\x7f\xff\xc3=-+.0123456789eE ";

/// One mutation of `seed`: flips, inserts, deletes, duplicates a slice, splices in another
/// seed, or truncates, as coverage-guided fuzzers do first.
fn mutate(rng: &mut XorShift, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < data.len() => {
                let end = (at + 1 + rng.below(8)).min(data.len());
                data.drain(at..end);
            }
            3 if at < data.len() => {
                let end = (at + 1 + rng.below(32)).min(data.len());
                let slice = data[at..end].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(
                    to..to,
                    slice
                        .iter()
                        .copied()
                        .cycle()
                        .take(slice.len() * (1 + rng.below(64))),
                );
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
            _ => data.truncate(at),
        }
    }
    data
}

/// The bounded fuzz run CI makes on the stable toolchain: every target gets mutations of its
/// saved inputs for a few seconds, checked by the same function the libFuzzer target calls.
/// `cargo xtask fuzz` runs the coverage-guided fuzzer for longer.
#[test]
fn bounded_mutation_run_of_every_target() {
    let mut failures = Vec::new();
    for (target, check) in targets::TARGETS {
        let seeds: Vec<Vec<u8>> = inputs(target)
            .iter()
            .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .collect();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
        let started = std::time::Instant::now();
        let mut runs = 0u32;
        while runs < MUTATIONS_PER_TARGET && started.elapsed() < BUDGET_PER_TARGET {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let data = mutate(&mut rng, seed, other);
            runs += 1;
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
                failures.push(format!(
                    "{target}: input {:?}: {}",
                    String::from_utf8_lossy(&data[..data.len().min(512)]),
                    message(payload.as_ref())
                ));
                break;
            }
        }
        eprintln!("{target}: {runs} mutated inputs in {:?}", started.elapsed());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
