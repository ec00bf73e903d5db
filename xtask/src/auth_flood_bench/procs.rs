//! The processes of one run (the daemon, wrk) and what they answer.

use super::*;
use crate::gateway_bench::{LOOPBACK, NS_ROLE, POLL, READY_TIMEOUT, WRK_GRACE, Wrk, parse_wrk};
use crate::lab::{Lab, LabChild};
use crate::util::output;
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// The status of one request by curl, with `user:password` when given.
pub(crate) fn curl_status(lab: &Lab, path: &str, credentials: Option<&str>) -> Result<u16> {
    let mut cmd = lab.nsenter(NS_ROLE, "curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    if let Some(c) = credentials {
        cmd.args(["-u", c]);
    }
    let url = format!("http://{LOOPBACK}:{GATEWAY_PORT}{path}");
    let out = output(cmd.arg(&url), &format!("curl {url}"))?;
    out.trim()
        .parse()
        .with_context(|| format!("curl {url} printed {out:?}"))
}

pub(crate) fn wait_ready(lab: &Lab) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if matches!(curl_status(lab, OPEN_PATH, None), Ok(HTTP_OK)) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the gateway did not answer {OPEN_PATH} within {READY_TIMEOUT:?}"
        );
        thread::sleep(POLL);
    }
}

pub(crate) fn check_routes(lab: &Lab) -> Result<()> {
    let good = curl_status(lab, LOGIN_PATH, Some(&format!("{USER}:{PASSWORD}")))?;
    let bad = curl_status(lab, LOGIN_PATH, Some(&format!("{USER}:{WRONG}")))?;
    ensure!(
        good == HTTP_OK && bad == HTTP_UNAUTHORIZED,
        "{LOGIN_PATH}: the password got {good}, a wrong one {bad} (want 200 and 401)"
    );
    Ok(())
}

/// The password check counters of the daemon's `/metrics` (absent before this build).
pub(crate) fn password_outcomes(lab: &Lab) -> Result<BTreeMap<String, u64>> {
    const FAMILY: &str = "api_shield_gateway_password_checks_total{outcome=\"";
    let url = format!("http://{LOOPBACK}:{METRICS_PORT}/metrics");
    let text = output(
        lab.nsenter(NS_ROLE, "curl")
            .args(["-s", "--max-time", "5", &url]),
        "curl /metrics",
    )?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(FAMILY)?;
            let (outcome, value) = rest.split_once("\"} ")?;
            Some((outcome.to_owned(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect())
}

/// A wrk run in the lab: its output, or an error if it failed or hung.
pub(crate) fn wrk(lab: &Lab, out_path: &Path, args: &[String], seconds: u32) -> Result<LabChild> {
    let out = File::create(out_path).context("create wrk's output file")?;
    let child = lab.spawn(
        lab.nsenter(NS_ROLE, "wrk")
            .args(args)
            .arg(format!("-d{seconds}s"))
            .stdout(out.try_clone()?)
            .stderr(out),
        "wrk",
    )?;
    Ok(child)
}

pub(crate) fn finish_wrk(mut child: LabChild, out_path: &Path, seconds: u32) -> Result<Wrk> {
    let limit = Duration::from_secs(seconds.into()) + WRK_GRACE;
    let Some(status) = child.wait_timeout(limit)? else {
        child.stop()?;
        bail!("wrk did not finish within {limit:?}");
    };
    let text = fs::read_to_string(out_path).context("read wrk's output")?;
    ensure!(status.success(), "wrk failed ({status}):\n{text}");
    parse_wrk(&text).with_context(|| format!("wrk's output:\n{text}"))
}

/// One run of `mode`: the public route's load for `seconds`, the flood around it.
pub(crate) fn measure(lab: &Lab, dir: &Path, mode: Mode, seconds: u32) -> Result<Run> {
    let flood_seconds = seconds + 2 * FLOOD_LEAD.as_secs() as u32;
    let flood = match mode.script() {
        Some(script) => {
            let args = vec![
                "-t1".to_owned(),
                format!("-c{FLOOD_CONNECTIONS}"),
                "--latency".to_owned(),
                "-s".to_owned(),
                dir.join(script).display().to_string(),
                format!("http://{LOOPBACK}:{GATEWAY_PORT}{LOGIN_PATH}"),
            ];
            let out = dir.join("flood.out");
            let child = wrk(lab, &out, &args, flood_seconds)?;
            thread::sleep(FLOOD_LEAD);
            Some((child, out))
        }
        None => None,
    };
    let before = password_outcomes(lab)?;
    let args = vec![
        "-t1".to_owned(),
        format!("-c{PUBLIC_CONNECTIONS}"),
        "--latency".to_owned(),
        format!("http://{LOOPBACK}:{GATEWAY_PORT}{OPEN_PATH}"),
    ];
    let public_out = dir.join("public.out");
    let public = finish_wrk(wrk(lab, &public_out, &args, seconds)?, &public_out, seconds)?;
    let after = password_outcomes(lab)?;
    ensure!(
        public.non_2xx == 0 && public.socket_errors == 0 && public.requests > 0,
        "the public route: {} non-2xx answers, {} socket errors, {} requests",
        public.non_2xx,
        public.socket_errors,
        public.requests
    );
    let flood_rps = match flood {
        Some((child, out)) => finish_wrk(child, &out, flood_seconds)?.rps,
        None => 0.0,
    };
    let outcomes = after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(_, v)| *v > 0)
        .collect();
    Ok(Run {
        public,
        flood_rps,
        outcomes,
    })
}
