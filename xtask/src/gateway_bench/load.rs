//! The load (wrk) and what it costs: wrk's figures, TCP connections opened, CPU time.

use super::*;
use crate::{lab::Lab, util::output};
use anyhow::{Context, Result, bail, ensure};
use std::{
    fs::{self, File},
    path::Path,
    time::Duration,
};

/// What one wrk run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p75_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) requests: u64,
    pub(crate) non_2xx: u64,
    pub(crate) socket_errors: u64,
}

/// One wrk run against `front`; fails on any non-2xx answer or socket error.
pub(crate) fn wrk(lab: &Lab, dir: &Path, front: Front, seconds: u32) -> Result<Wrk> {
    let out_path = dir.join("wrk.out");
    let out = File::create(&out_path).context("create wrk's output file")?;
    let mut child = lab.spawn(
        lab.nsenter(NS_ROLE, "wrk")
            .arg(format!("-t{WRK_THREADS}"))
            .arg(format!("-c{WRK_CONNECTIONS}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .args(["-H", &format!("x-api-key: {API_KEY}")])
            .arg(front.url())
            .stdout(out.try_clone()?)
            .stderr(out),
        "wrk",
    )?;
    let limit = Duration::from_secs(seconds.into()) + WRK_GRACE;
    let Some(status) = child.wait_timeout(limit)? else {
        child.stop()?;
        bail!("wrk did not finish within {limit:?}");
    };
    let text = fs::read_to_string(&out_path).context("read wrk's output")?;
    ensure!(status.success(), "wrk failed ({status}):\n{text}");
    let w = parse_wrk(&text).with_context(|| format!("wrk's output:\n{text}"))?;
    ensure!(
        w.non_2xx == 0 && w.socket_errors == 0,
        "{}: {} non-2xx answers and {} socket errors:\n{text}",
        front.describe(),
        w.non_2xx,
        w.socket_errors
    );
    ensure!(w.requests > 0, "{}: no request completed", front.describe());
    Ok(w)
}

pub(crate) fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let (mut rps, mut p99, mut requests) = (None, None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non_2xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                w.socket_errors = rest
                    .iter()
                    .filter_map(|t| t.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            [pct, v] if pct.ends_with('%') => {
                let ms = duration_ms(v);
                match *pct {
                    "50%" => w.p50_ms = ms.unwrap_or(f64::NAN),
                    "75%" => w.p75_ms = ms.unwrap_or(f64::NAN),
                    "90%" => w.p90_ms = ms.unwrap_or(f64::NAN),
                    "99%" => p99 = ms,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    w.rps = rps.context("no Requests/sec line")?;
    w.p99_ms = p99.context("no 99% latency line (was --latency given?)")?;
    w.requests = requests.context("no `N requests in` line")?;
    Ok(w)
}

/// wrk's durations: `812.00us`, `1.23ms`, `1.02s`, `2.00m`, `1.00h`.
pub(crate) fn duration_ms(text: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 5] = [
        ("us", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
        ("m", 60e3),
        ("h", 3_600e3),
    ];
    UNITS.iter().find_map(|(unit, scale)| {
        text.strip_suffix(unit)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * scale)
    })
}

/// `Tcp: ActiveOpens` of the namespace (/proc/net/snmp is per network namespace).
pub(crate) fn tcp_active_opens(lab: &Lab) -> Result<u64> {
    let snmp = output(
        lab.nsenter(NS_ROLE, "cat").arg("/proc/net/snmp"),
        "read /proc/net/snmp",
    )?;
    active_opens(&snmp).context("no Tcp: ActiveOpens in /proc/net/snmp")
}

pub(crate) fn active_opens(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "ActiveOpens")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

// ---- CPU time ----------------------------------------------------------------------------------

/// utime + stime (clock ticks) of `pid` and every descendant (nginx's workers), all threads.
pub(crate) fn tree_cpu_ticks(pid: i32) -> u64 {
    let mut stats: Vec<(i32, i32, u64)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some((ppid, ticks)) = proc_stat(p) {
                stats.push((p, ppid, ticks));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(stats.iter().filter(|s| s.1 == parent).map(|s| s.0));
        i += 1;
    }
    stats
        .iter()
        .filter(|s| tree.contains(&s.0))
        .map(|s| s.2)
        .sum()
}

/// `(ppid, utime + stime)` from /proc/<pid>/stat.
pub(crate) fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    /// Fields after the command name: state, ppid, ..., utime (index 11), stime (12).
    const PPID: usize = 1;
    const UTIME: usize = 11;
    const STIME: usize = 12;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((fields.get(PPID)?.parse().ok()?, num(UTIME)? + num(STIME)?))
}

pub(crate) fn ticks_to_us(ticks: u64) -> f64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 * 1e6 / hz as f64
}
