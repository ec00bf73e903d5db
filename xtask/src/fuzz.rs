//! `cargo xtask fuzz`: every cargo-fuzz target of `fuzz/` for a bounded time with the nightly
//! toolchain, then the full packet fuzz (the ignored `packet_fuzz_full` test: 1,000,000 frames
//! through the real XDP program).
//!
//! Each target starts from its seed corpus (`fuzz/seeds/<target>/`, read only) and its working
//! corpus (`fuzz/corpus/<target>/`, kept between runs, not committed). An input that crashes a
//! target is copied from libFuzzer's artifacts to `fuzz/regressions/<target>/`, which
//! `api-shield/tests/fuzz_regressions.rs` replays on every `cargo test`.

use crate::{setup, util};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Instant;

const CARGO_FUZZ_VERSION_HINT: &str = "cargo install cargo-fuzz --locked";
/// Longest a single input may run before libFuzzer calls it a hang, in seconds.
const UNIT_TIMEOUT_SECS: u64 = 10;
/// Memory one fuzzing process may use, in MiB.
const RSS_LIMIT_MB: u64 = 4_096;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds each cargo-fuzz target runs
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Run only these targets (repeatable, or comma-separated); all of them by default
    #[arg(
        long = "target",
        alias = "targets",
        value_name = "NAME",
        value_delimiter = ','
    )]
    targets: Vec<String>,
    /// Skip the packet fuzz through BPF_PROG_TEST_RUN
    #[arg(long)]
    no_packets: bool,
    /// Skip the cargo-fuzz targets (run only the packet fuzz)
    #[arg(long)]
    no_targets: bool,
}

/// What one target's run found.
struct Report {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    corpus: usize,
    /// Crash inputs, as copied to `fuzz/regressions/<target>/`.
    crashes: Vec<PathBuf>,
}

pub fn fuzz(args: &Args) -> Result<()> {
    // The fuzz crate builds api-shield, whose build.rs needs the eBPF toolchain; the packet
    // fuzz loads the program.
    setup::setup()?;
    let known = targets(&fuzz_dir())?;
    let targets: Vec<String> = if args.targets.is_empty() {
        known
    } else {
        for t in &args.targets {
            if !known.contains(t) {
                bail!(
                    "unknown fuzz target `{t}`; the targets are {}",
                    known.join(", ")
                );
            }
        }
        args.targets.clone()
    };
    let mut reports = Vec::new();
    if !args.no_targets {
        ensure_nightly()?;
        ensure_cargo_fuzz()?;
        println!("==> cargo +nightly fuzz build");
        util::run(nightly_fuzz().arg("build"), "cargo +nightly fuzz build").with_context(|| {
            "building the fuzz targets failed; the nightly toolchain must be able to build \
                api-shield with -Zsanitizer=address"
        })?;
        for t in &targets {
            reports.push(run_target(t, args.seconds)?);
        }
    }
    let packets = if args.no_packets {
        None
    } else {
        Some(packet_fuzz())
    };

    println!("\nfuzz summary:");
    for r in &reports {
        println!(
            "  {:<16} {:>5.0} s  {:>12} executions  {:>6} corpus inputs  {} crash(es){}",
            r.target,
            r.seconds,
            r.executions
                .map_or_else(|| "?".to_string(), |n| n.to_string()),
            r.corpus,
            r.crashes.len(),
            if r.crashes.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    r.crashes
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    if let Some(result) = &packets {
        match result {
            Ok(()) => println!("  packet fuzz      passed (see its line above for the figures)"),
            Err(e) => println!("  packet fuzz      FAILED: {e:#}"),
        }
    }
    let crashed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.crashes.is_empty())
        .map(|r| r.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes found in {}: the inputs are in fuzz/regressions/ (replayed by \
             `cargo test -p api-shield --test fuzz_regressions`)",
            crashed.join(", ")
        );
    }
    if let Some(Err(e)) = packets {
        return Err(e);
    }
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    util::root().join("fuzz")
}

/// The targets, in name order: one `fuzz_targets/<name>.rs` each, the files `fuzz/Cargo.toml`
/// declares as bins. `fuzz/src/lib.rs` lists the same names (its test checks they agree).
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

/// `cargo +nightly fuzz` run in `fuzz/`, with the XDP object reused when one is built.
fn nightly_fuzz() -> Command {
    let mut cmd = util::command("cargo");
    cmd.current_dir(fuzz_dir())
        .arg("+nightly")
        .arg("fuzz")
        // The stable toolchain that runs xtask must not leak into the nightly build.
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS");
    let object = util::target_dir().join("bpf/bpfel-unknown-none/release/api-shield");
    if object.is_file() && std::env::var_os("API_SHIELD_BPF_OBJ").is_none() {
        // The targets never load it: reusing the workspace's object spares a second eBPF build.
        cmd.env("API_SHIELD_BPF_OBJ", object);
    }
    cmd
}

fn ensure_nightly() -> Result<()> {
    let list = util::output(
        util::command("rustup").args(["toolchain", "list"]),
        "rustup toolchain list",
    )?;
    if !list.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "cargo-fuzz needs a nightly toolchain (for -Zsanitizer) and rustup lists none:\n{list}\
             install one with `rustup toolchain install nightly`"
        );
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let works = |cmd: &mut Command| util::output(cmd, "cargo +nightly fuzz --version").is_ok();
    if works(nightly_fuzz().arg("--version")) {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz ({CARGO_FUZZ_VERSION_HINT})");
    util::run(
        util::command("cargo").args(["install", "cargo-fuzz", "--locked"]),
        "cargo install cargo-fuzz",
    )?;
    if !works(nightly_fuzz().arg("--version")) {
        bail!(
            "cargo-fuzz was installed into {} but `cargo +nightly fuzz --version` still fails",
            util::cargo_bin_dir().display()
        );
    }
    Ok(())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn run_target(target: &str, seconds: u64) -> Result<Report> {
    println!("==> fuzz {target} for {seconds} s");
    let dir = fuzz_dir();
    let corpus = dir.join("corpus").join(target);
    let seeds = dir.join("seeds").join(target);
    let artifacts = dir.join("artifacts").join(target);
    for d in [&corpus, &artifacts] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let logs = util::target_dir().join("fuzz");
    fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    let mut cmd = nightly_fuzz();
    cmd.args(["run", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={UNIT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", util::describe(&cmd)))?;
    let elapsed = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let executions = text
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .find_map(|n| n.trim().parse().ok());
    // libFuzzer names what it wrote: "Test unit written to <path>".
    let written: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split("Test unit written to ").nth(1))
        .map(|p| PathBuf::from(p.trim()))
        .collect();
    let crashes = if status.success() && written.is_empty() {
        Vec::new()
    } else {
        keep_crashes(target, status, &written, &text, &log_path)?
    };
    let report = Report {
        target: target.to_string(),
        seconds: elapsed,
        executions,
        corpus: files_in(&corpus).len(),
        crashes,
    };
    println!(
        "fuzz {target}: {} executions in {elapsed:.0} s, {} crash(es); log in {}",
        report
            .executions
            .map_or_else(|| "?".to_string(), |n| n.to_string()),
        report.crashes.len(),
        log_path.display()
    );
    Ok(report)
}

/// Copies the inputs libFuzzer wrote to `fuzz/regressions/<target>/` and shows the end of
/// the log; fails if the run failed without leaving one.
fn keep_crashes(
    target: &str,
    status: ExitStatus,
    written: &[PathBuf],
    log_text: &str,
    log_path: &Path,
) -> Result<Vec<PathBuf>> {
    const LOG_TAIL_LINES: usize = 40;
    let dir = fuzz_dir();
    let regressions = dir.join("regressions").join(target);
    fs::create_dir_all(&regressions)?;
    let mut crashes = Vec::new();
    for path in written {
        let path = if path.is_absolute() {
            path.clone()
        } else {
            dir.join(path)
        };
        let Some(name) = path.file_name() else {
            continue;
        };
        let kept = regressions.join(name);
        fs::copy(&path, &kept)
            .with_context(|| format!("copying {} to {}", path.display(), kept.display()))?;
        crashes.push(kept);
    }
    let tail: Vec<&str> = log_text.lines().rev().take(LOG_TAIL_LINES).collect();
    eprintln!(
        "fuzz {target}: {status}; the last lines of {}:\n{}",
        log_path.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    if crashes.is_empty() {
        bail!(
            "fuzz {target} failed without a crash input ({status}); see {}",
            log_path.display()
        );
    }
    Ok(crashes)
}

/// The ignored full packet fuzz of the `tests` crate (needs root: it loads the XDP program).
fn packet_fuzz() -> Result<()> {
    println!("==> packet fuzz: packet_fuzz_full (PACKET_FUZZ_FRAMES overrides 1,000,000 frames)");
    if !util::is_root() {
        bail!("the packet fuzz loads an XDP program: run `cargo xtask fuzz` as root");
    }
    util::run(
        util::cargo()
            .args(["test", "--release", "-p", "tests", "--test", "packet_fuzz"])
            .args([
                "--",
                "--ignored",
                "--exact",
                "packet_fuzz_full",
                "--nocapture",
            ]),
        "the packet fuzz",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_are_the_files_of_fuzz_targets() {
        let names = targets(&fuzz_dir()).unwrap();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for name in ["jwt", "config", "route_path"] {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from {names:?}"
            );
        }
        assert!(targets(Path::new("/nonexistent")).is_err());
    }
}
