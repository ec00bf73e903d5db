//! The report: medians per front end, the targets, `gateway.json` and `gateway.md`.

use super::*;
use crate::bench_common::median;
use crate::util::{self, command};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
};

pub(crate) struct Report {
    pub(crate) date: String,
    pub(crate) machine: Value,
    pub(crate) rounds: u32,
    pub(crate) seconds: u32,
    pub(crate) smoke: bool,
    pub(crate) runs: Vec<(Front, Vec<Run>)>,
    pub(crate) orders: Vec<[&'static str; 3]>,
    pub(crate) tls: Value,
    pub(crate) versions: Value,
    pub(crate) total_seconds: f64,
}

/// Medians of one front end's runs.
pub(crate) struct Summary {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
}

impl Summary {
    pub(crate) fn of(runs: &[Run]) -> Summary {
        let m = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Summary {
            rps: m(|r| r.wrk.rps),
            p50_ms: m(|r| r.wrk.p50_ms),
            p99_ms: m(|r| r.wrk.p99_ms),
            cpu_us: m(|r| r.cpu_us_per_request),
        }
    }
}

/// A target and whether the measurement met it.
pub(crate) struct Target {
    name: &'static str,
    measured: f64,
    per_round: Vec<f64>,
    bound: f64,
    at_least: bool,
}

impl Target {
    pub(crate) fn met(&self) -> bool {
        if self.at_least {
            self.measured >= self.bound
        } else {
            self.measured <= self.bound
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "measured": self.measured,
            "per_round": self.per_round,
            "target": format!("{} {:.2}", if self.at_least { ">=" } else { "<=" }, self.bound),
            "met": self.met(),
        })
    }
}

impl Report {
    pub(crate) fn runs(&self, f: Front) -> &[Run] {
        self.runs
            .iter()
            .find(|(g, _)| *g == f)
            .map_or(&[], |(_, r)| r)
    }

    pub(crate) fn targets(&self) -> Vec<Target> {
        let (a, b, c) = (
            self.runs(Front::Auth),
            self.runs(Front::Open),
            self.runs(Front::Nginx),
        );
        let (sa, sb, sc) = (Summary::of(a), Summary::of(b), Summary::of(c));
        let per_round = |x: &[Run], y: &[Run], f: fn(&Run) -> f64| -> Vec<f64> {
            x.iter().zip(y).map(|(x, y)| f(x) / f(y)).collect()
        };
        vec![
            Target {
                name: "auth_quota_over_passthrough_rps",
                measured: sa.rps / sb.rps,
                per_round: per_round(a, b, |r| r.wrk.rps),
                bound: TARGET_AUTH_OVER_OPEN,
                at_least: true,
            },
            Target {
                name: "auth_quota_over_nginx_rps",
                measured: sa.rps / sc.rps,
                per_round: per_round(a, c, |r| r.wrk.rps),
                bound: TARGET_OURS_OVER_NGINX,
                at_least: true,
            },
            Target {
                name: "auth_quota_over_nginx_p99",
                measured: sa.p99_ms / sc.p99_ms,
                per_round: per_round(a, c, |r| r.wrk.p99_ms),
                bound: TARGET_P99_RATIO,
                at_least: false,
            },
        ]
    }

    pub(crate) fn json(&self) -> Value {
        let mut fronts = serde_json::Map::new();
        for (f, runs) in &self.runs {
            let s = Summary::of(runs);
            let each = |g: fn(&Run) -> f64| runs.iter().map(g).collect::<Vec<_>>();
            fronts.insert(
                f.key().to_owned(),
                json!({
                    "what": f.describe(),
                    "url": f.url(),
                    "rps": s.rps,
                    "p50_ms": s.p50_ms,
                    "p99_ms": s.p99_ms,
                    "cpu_us_per_request": s.cpu_us,
                    "rps_runs": each(|r| r.wrk.rps),
                    "p50_ms_runs": each(|r| r.wrk.p50_ms),
                    "p75_ms_runs": each(|r| r.wrk.p75_ms),
                    "p90_ms_runs": each(|r| r.wrk.p90_ms),
                    "p99_ms_runs": each(|r| r.wrk.p99_ms),
                    "cpu_us_per_request_runs": each(|r| r.cpu_us_per_request),
                    "tcp_connections_opened_runs": runs.iter().map(|r| r.tcp_opens).collect::<Vec<_>>(),
                    "requests": runs.iter().map(|r| r.wrk.requests).sum::<u64>(),
                    "non_2xx": runs.iter().map(|r| r.wrk.non_2xx).sum::<u64>(),
                    "socket_errors": runs.iter().map(|r| r.wrk.socket_errors).sum::<u64>(),
                    "tls": self.tls[f.key()],
                }),
            );
        }
        let targets: serde_json::Map<String, Value> = self
            .targets()
            .iter()
            .map(|t| (t.name.to_owned(), t.json()))
            .collect();
        json!({
            "date": self.date,
            "command": self.command(),
            "smoke": self.smoke,
            "machine": self.machine,
            "versions": self.versions,
            "rounds": self.rounds,
            "seconds_per_run": self.seconds,
            "total_seconds": self.total_seconds,
            "order_per_round": self.orders,
            "load": {
                "wrk": format!("wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s --latency -H 'x-api-key: <key>'", self.seconds),
                "front_end_workers": FRONT_WORKERS,
                "upstream": format!("nginx return 200 \"{UPSTREAM_BODY}\", {UPSTREAM_WORKERS} worker, keep-alive"),
                "limits_per_second": RATE_PER_SECOND,
                "api_shield_daily_quota": DAILY_QUOTA,
            },
            "front_ends": fronts,
            "targets": targets,
            "cpu_note": "front-end process CPU (utime+stime of the daemon, or of nginx's master \
                         and workers) over the run, per request; tick-sampled",
        })
    }

    pub(crate) fn command(&self) -> String {
        if self.smoke {
            "cargo xtask bench gateway --smoke".to_owned()
        } else {
            format!(
                "cargo xtask bench gateway --rounds {} --seconds {}",
                self.rounds, self.seconds
            )
        }
    }

    /// One line per target: the median ratio, per round, and whether it was met.
    fn targets_markdown(&self, md: &mut String) {
        for t in self.targets() {
            let (what, op) = match t.name {
                "auth_quota_over_passthrough_rps" => {
                    ("auth + quota / pass-through, throughput", ">=")
                }
                "auth_quota_over_nginx_rps" => ("auth + quota / nginx, throughput", ">="),
                _ => ("auth + quota / nginx, p99 latency", "<="),
            };
            let _ = writeln!(
                md,
                "- {what}: **{:.2}** (per round {}; target {op} {:.2}: {})",
                t.measured,
                t.per_round
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.bound,
                if t.met() { "met" } else { "MISSED" }
            );
        }
    }

    pub(crate) fn markdown(&self) -> String {
        let m = &self.machine;
        let mut md = String::new();
        let _ = writeln!(md, "# Gateway benchmark\n");
        let _ = writeln!(
            md,
            "{}; {} CPUs ({}), kernel {}; load average {:.2} at the start, {:.2} at the end. \
             `{}`: {} round(s) of `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s --latency`, \
             front ends alternating (order rotated every round), medians. One upstream (nginx \
             `return 200 \"{UPSTREAM_BODY}\"`, {UPSTREAM_WORKERS} worker) shared by all, \
             keep-alive on every hop; {FRONT_WORKERS} worker threads/processes per front end; \
             everything on the loopback of one namespace.\n",
            self.date,
            m["nproc"],
            m["cpu_model"].as_str().unwrap_or("?"),
            m["kernel"].as_str().unwrap_or("?"),
            m["loadavg_1m_start"].as_f64().unwrap_or(f64::NAN),
            m["loadavg_1m_end"].as_f64().unwrap_or(f64::NAN),
            self.command(),
            self.rounds,
            self.seconds,
        );
        let _ = writeln!(
            md,
            "| front end | req/s (runs) | p50 ms | p99 ms (runs) | front-end CPU us/req | TCP \
             connections opened per run | TLS |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---|");
        for (f, runs) in &self.runs {
            let s = Summary::of(runs);
            let list = |g: fn(&Run) -> f64, digits: usize| {
                runs.iter()
                    .map(|r| format!("{:.*}", digits, g(r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let tls = &self.tls[f.key()];
            let _ = writeln!(
                md,
                "| {} | {:.0} ({}) | {:.2} | {:.2} ({}) | {:.1} | {} | {} {} |",
                f.describe(),
                s.rps,
                list(|r| r.wrk.rps, 0),
                s.p50_ms,
                s.p99_ms,
                list(|r| r.wrk.p99_ms, 2),
                s.cpu_us,
                list(|r| r.tcp_opens as f64, 0),
                tls["protocol"].as_str().unwrap_or("?"),
                tls["cipher"].as_str().unwrap_or("?"),
            );
        }
        let _ = writeln!(md);
        self.targets_markdown(&mut md);
        let _ = writeln!(
            md,
            "- front-end CPU: utime + stime of the daemon (all threads), or of nginx's master and \
             workers, over the run, per request (tick-sampled; the upstream and wrk excluded). \
             TCP connections opened: `ActiveOpens` of the namespace over the run, wrk's {WRK_CONNECTIONS} \
             plus the front end's to the upstream (keep-alive holds when it stays near {WRK_CONNECTIONS})"
        );
        let _ = writeln!(
            md,
            "- every run: 0 non-2xx answers, 0 socket errors ({} requests in all); before the \
             runs each front end answered the keyed request with 200, and a request without the \
             key with 401 (pass-through: 200)",
            self.runs
                .iter()
                .flat_map(|(_, r)| r)
                .map(|r| r.wrk.requests)
                .sum::<u64>()
        );
        md
    }

    pub(crate) fn write(&self) -> Result<()> {
        let dir = util::target_dir().join("bench");
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let stem = if self.smoke {
            "gateway-smoke"
        } else {
            "gateway"
        };
        let json_path = dir.join(format!("{stem}.json"));
        fs::write(
            &json_path,
            serde_json::to_string_pretty(&self.json())? + "\n",
        )
        .with_context(|| format!("write {}", json_path.display()))?;
        let md = self.markdown();
        let md_path = dir.join(format!("{stem}.md"));
        fs::write(&md_path, &md).with_context(|| format!("write {}", md_path.display()))?;
        println!("\n{md}");
        println!("wrote {} and {}", json_path.display(), md_path.display());
        Ok(())
    }
}

pub(crate) fn versions(bin: &Path) -> Value {
    let first_line = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .output()
            .ok()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_default()
    };
    json!({
        "api_shield": bin.display().to_string(),
        "git": first_line(command("git").args(["describe", "--always", "--dirty"])),
        "nginx": first_line(command("nginx").arg("-v")),
        "wrk": first_line(command("wrk").arg("-v")),
        "openssl": first_line(command("openssl").arg("version")),
    })
}
