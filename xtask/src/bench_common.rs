//! What every benchmark report records besides its figures: the machine, its load, the date,
//! and medians.

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use std::{fs, thread, time::SystemTime};

/// Bounds of `--rounds` and `--seconds`: a run stays well under a few hours.
const MAX_ROUNDS: u32 = 100;
const MAX_SECONDS: u32 = 600;

/// Refuses rounds or seconds outside `1..=MAX_*`.
pub(crate) fn check_plan(rounds: u32, seconds: u32) -> Result<()> {
    ensure!(
        (1..=MAX_ROUNDS).contains(&rounds),
        "--rounds must be 1..={MAX_ROUNDS}"
    );
    ensure!(
        (1..=MAX_SECONDS).contains(&seconds),
        "--seconds must be 1..={MAX_SECONDS}"
    );
    Ok(())
}

pub(crate) fn machine(load_start: f64, load_end: f64) -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "nproc": thread::available_parallelism().map_or(1, |n| n.get()),
        "kernel": kernel.trim(),
        "cpu_model": cpu,
        "mem_total_kib": mem_kib,
        "loadavg_1m_start": load_start,
        "loadavg_1m_end": load_end,
    })
}

pub(crate) fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The date a report carries: now, as `rfc3339`.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn medians_and_dates() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_869_000)),
            "2026-11-28T12:30:00Z"
        );
    }
}
