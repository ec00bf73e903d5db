//! The report: the public route's p99 per mode, the ratios, `gateway-auth.{json,md}`.

use super::*;
use crate::bench_common::median;
use crate::util::{self};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::fs::{self};
use std::path::PathBuf;

pub(crate) struct Report {
    pub(crate) date: String,
    pub(crate) machine: Value,
    pub(crate) rounds: u32,
    pub(crate) seconds: u32,
    pub(crate) smoke: bool,
    pub(crate) bin: PathBuf,
    pub(crate) runs: Vec<(Mode, Vec<Run>)>,
    pub(crate) total_seconds: f64,
}

impl Report {
    pub(crate) fn runs(&self, mode: Mode) -> &[Run] {
        self.runs
            .iter()
            .find(|(m, _)| *m == mode)
            .map_or(&[], |(_, r)| r.as_slice())
    }

    pub(crate) fn p99s(&self, mode: Mode) -> Vec<f64> {
        self.runs(mode).iter().map(|r| r.public.p99_ms).collect()
    }

    /// Per round: p99 under `mode` over p99 alone in the same round.
    pub(crate) fn round_ratios(&self, mode: Mode) -> Vec<f64> {
        self.p99s(mode)
            .iter()
            .zip(self.p99s(Mode::Alone))
            .map(|(f, a)| f / a)
            .collect()
    }

    pub(crate) fn ratio(&self, mode: Mode) -> f64 {
        median(&self.p99s(mode)) / median(&self.p99s(Mode::Alone))
    }

    pub(crate) fn json(&self) -> Value {
        let modes: Vec<Value> = MODES
            .iter()
            .map(|&m| {
                let runs = self.runs(m);
                let med = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
                json!({
                    "mode": m.key(),
                    "median_p99_ms": med(|r| r.public.p99_ms),
                    "median_p50_ms": med(|r| r.public.p50_ms),
                    "median_rps": med(|r| r.public.rps),
                    "median_flood_rps": med(|r| r.flood_rps),
                    "p99_ms_per_round": self.p99s(m),
                    "p99_ratio_to_alone": self.ratio(m),
                    "p99_ratio_per_round": self.round_ratios(m),
                    "password_outcomes_per_round": runs.iter().map(|r| &r.outcomes).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "benchmark": "gateway-auth",
            "date": self.date,
            "machine": self.machine,
            "rounds": self.rounds,
            "seconds": self.seconds,
            "smoke": self.smoke,
            "binary": self.bin.display().to_string(),
            "public_connections": PUBLIC_CONNECTIONS,
            "flood_connections": FLOOD_CONNECTIONS,
            "flood_delay_ms": FLOOD_DELAY_MS,
            "argon2id": {"m_kib": ARGON2_MEMORY_KIB, "t": ARGON2_TIME, "p": ARGON2_LANES},
            "target_p99_ratio": TARGET_RATIO,
            "modes": modes,
            "total_seconds": self.total_seconds,
        })
    }

    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# gateway-auth benchmark\n\n{} ({} round(s) of {} s; binary {}; load {} → {})\n",
            self.date,
            self.rounds,
            self.seconds,
            self.bin.display(),
            self.machine["loadavg_1m_start"],
            self.machine["loadavg_1m_end"],
        );
        let _ = writeln!(
            md,
            "| mode | p99 ms (per round) | p50 ms | req/s | bad passwords/s answered | p99 / alone (per round) |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for m in MODES {
            let runs = self.runs(m);
            let med = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let list = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                md,
                "| {} | {:.2} ({}) | {:.2} | {:.0} | {:.0} | {:.2}x ({}) |",
                m.describe(),
                med(|r| r.public.p99_ms),
                list(&self.p99s(m)),
                med(|r| r.public.p50_ms),
                med(|r| r.public.rps),
                med(|r| r.flood_rps),
                self.ratio(m),
                list(&self.round_ratios(m)),
            );
        }
        for m in [Mode::FloodManySources, Mode::FloodOneSource] {
            let r = self.ratio(m);
            let _ = writeln!(
                md,
                "\n- {}: p99 {r:.2}x alone (target <= {TARGET_RATIO}x: **{}**)",
                m.describe(),
                if r <= TARGET_RATIO { "met" } else { "missed" }
            );
        }
        md
    }

    pub(crate) fn write(&self) -> Result<()> {
        let dir = util::target_dir().join("bench");
        fs::create_dir_all(&dir).context("create target/bench")?;
        let stem = if self.smoke {
            "gateway-auth-smoke"
        } else {
            "gateway-auth"
        };
        let json_path = dir.join(format!("{stem}.json"));
        fs::write(&json_path, serde_json::to_string_pretty(&self.json())?)
            .with_context(|| format!("write {}", json_path.display()))?;
        let md = self.markdown();
        fs::write(dir.join(format!("{stem}.md")), &md).context("write the summary")?;
        println!("\n{md}\nwritten: {}", json_path.display());
        Ok(())
    }
}
