//! The shape of the source tree, checked on every `cargo xtask test` so that it cannot drift:
//!
//! - the top-level modules of the `api-shield` library import each other without a cycle, so
//!   every import points down a layer and the layers can be printed in order;
//! - nothing below the daemon imports the daemon (adapters live in `daemon/`);
//! - no source file carries more than [`MAX_SOURCE_LINES`] lines of non-test code.
//!
//! `cargo test -p api-shield --test structure -- --nocapture` prints the module dependency list
//! and the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Past this many lines of non-test code a file holds more than one concern.
const MAX_SOURCE_LINES: usize = 600;

/// The only modules allowed to import the daemon: the binary's dispatch.
const DAEMON_USERS: &[&str] = &["main", "commands", "lib"];

/// Source folders of the workspace whose files count for the size rule.
const SOURCE_ROOTS: &[&str] = &[
    "api-shield/src",
    "api-shield-common/src",
    "api-shield-ebpf/src",
    "xtask/src",
    "tests/src",
    "fuzz/src",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Whether a file holds only tests: `tests.rs`, anything under a `tests/` folder of a source tree.
fn is_test_file(relative: &Path) -> bool {
    relative.file_name().is_some_and(|n| n == "tests.rs")
        || relative
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "tests"))
}

/// The lines before the file's inline test module (`#[cfg(test)]` at the start of a line,
/// followed by `mod name {`), which by convention closes the file. A `mod tests;` declaration
/// points at a test file and ends nothing.
fn non_test_code(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| {
            w[0].starts_with("#[cfg(test)]")
                && w[1].split_whitespace().any(|t| t == "mod")
                && w[1].trim_end().ends_with('{')
        })
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// The first path segment of every `crate::` path in `code`, including each member of a
/// `crate::{a, b::c}` group.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut member_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => member_start = true,
                    c if member_start && (c.is_alphanumeric() || c == '_') => {
                        found.insert(leading_ident(&group[i..]));
                        member_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(leading_ident(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

fn leading_ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Module name → the top-level modules its non-test code imports.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace().join("api-shield/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        if is_test_file(relative) {
            continue;
        }
        let first = relative.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&file).expect("source text");
        let imports = crate_imports(&non_test_code(&text).join("\n"));
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(imports.into_iter().filter(|m| *m != module));
    }
    // Items of the crate root (`crate::BPF_OBJECT`) are not modules.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// The modules in layers, lowest first: each layer imports only from layers below it. `Err`
/// holds the modules left on a cycle.
fn layers(graph: &BTreeMap<String, BTreeSet<String>>) -> Result<Vec<Vec<String>>, Vec<String>> {
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut layers = Vec::new();
    while placed.len() < graph.len() {
        let layer: Vec<String> = graph
            .iter()
            .filter(|(m, deps)| {
                !placed.contains(*m)
                    && deps
                        .iter()
                        .all(|d| placed.contains(d) || !graph.contains_key(d))
            })
            .map(|(m, _)| m.clone())
            .collect();
        if layer.is_empty() {
            return Err(on_cycles(graph, &placed));
        }
        placed.extend(layer.iter().cloned());
        layers.push(layer);
    }
    Ok(layers)
}

/// The unplaced modules that lie on a cycle: those that import, and are imported by, other
/// unplaced modules (pruned until nothing changes), so the report names the cycle, not
/// everything above it.
fn on_cycles(graph: &BTreeMap<String, BTreeSet<String>>, placed: &BTreeSet<String>) -> Vec<String> {
    let mut left: BTreeSet<String> = graph
        .keys()
        .filter(|m| !placed.contains(*m))
        .cloned()
        .collect();
    loop {
        let keep: BTreeSet<String> = left
            .iter()
            .filter(|m| {
                let imports_left = graph[*m].iter().any(|d| left.contains(d));
                let imported_by_left = left.iter().any(|o| graph[o].contains(*m));
                imports_left && imported_by_left
            })
            .cloned()
            .collect();
        if keep == left {
            return left.into_iter().collect();
        }
        left = keep;
    }
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = module_graph();
    println!("module dependency list (api-shield/src, non-test code):");
    for (module, deps) in &graph {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("  {module} -> {}", deps.join(" "));
    }
    match layers(&graph) {
        Ok(layers) => {
            println!("layers, lowest first:");
            for (i, layer) in layers.iter().enumerate() {
                println!("  {i}: {}", layer.join(" "));
            }
        }
        Err(cycle) => {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|d| cycle.contains(d))
                        .map(move |d| format!("{m} -> {d}"))
                })
                .collect();
            panic!("modules import each other in a cycle: {}", edges.join(", "));
        }
    }
}

#[test]
fn nothing_below_the_daemon_imports_the_daemon() {
    let offenders: Vec<String> = module_graph()
        .into_iter()
        .filter(|(m, deps)| deps.contains("daemon") && !DAEMON_USERS.contains(&m.as_str()))
        .map(|(m, _)| m)
        .collect();
    assert!(
        offenders.is_empty(),
        "modules below the daemon import it: {offenders:?}"
    );
}

#[test]
fn no_source_file_is_over_the_size_limit() {
    let root = workspace();
    let mut sizes = Vec::new();
    for dir in SOURCE_ROOTS {
        let base = root.join(dir);
        let mut files = Vec::new();
        rust_files(&base, &mut files);
        for file in files {
            let relative = file.strip_prefix(&base).expect("under its root");
            if is_test_file(relative) {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("source text");
            sizes.push((
                non_test_code(&text).len(),
                format!("{dir}/{}", relative.display()),
            ));
        }
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    println!("largest source files (non-test lines):");
    for (lines, file) in sizes.iter().take(10) {
        println!("  {lines:5} {file}");
    }
    let over: Vec<String> = sizes
        .iter()
        .filter(|(lines, _)| *lines > MAX_SOURCE_LINES)
        .map(|(lines, file)| format!("{file} ({lines})"))
        .collect();
    assert!(
        over.is_empty(),
        "files over {MAX_SOURCE_LINES} lines of non-test code: {}",
        over.join(", ")
    );
}

#[test]
fn imports_are_read_from_single_paths_and_groups() {
    let code =
        "use crate::a::B;\nuse crate::{c, d::{E, F}, self};\nlet x = crate::g::h();\nmy_crate::z;";
    let found: Vec<String> = crate_imports(code).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "g"]);
}

#[test]
fn a_cycle_is_found_and_named() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, d)| (m.to_string(), d.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        layers(&graph),
        Err(vec!["a".into(), "b".into(), "c".into()])
    );
}
