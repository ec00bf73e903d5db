//! The processes of one run (the daemon, nginx) and the requests that check them.

use super::*;
use crate::{
    lab::{Lab, LabChild},
    util::{command, output},
};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::{
    fs::{self, File},
    path::Path,
    process::Stdio,
    thread,
    time::Instant,
};

pub(crate) fn start_nginx(lab: &Lab, conf: &Path, prefix: &Path) -> Result<LabChild> {
    output(
        lab.nsenter(NS_ROLE, "nginx")
            .arg("-t")
            .arg("-q")
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf),
        &format!("nginx -t -c {}", conf.display()),
    )?;
    lab.spawn(
        lab.nsenter(NS_ROLE, "nginx")
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "nginx",
    )
}

pub(crate) fn start_daemon(lab: &Lab, bin: &Path, files: &Files) -> Result<LabChild> {
    run_daemon(lab, bin, &files.config, &files.socket, &files.log)
}

/// Starts `api-shield run` on the XDP veth in the benchmark's namespace, logging to `log`,
/// and waits until it answers `status` on `socket`.
pub(crate) fn run_daemon(
    lab: &Lab,
    bin: &Path,
    config: &Path,
    socket: &Path,
    log: &Path,
) -> Result<LabChild> {
    let file = File::create(log).context("create the daemon log")?;
    let mut daemon = lab.spawn(
        lab.nsenter(NS_ROLE, bin)
            .arg("--socket")
            .arg(socket)
            .args(["run", "--iface", XDP_IF, "--config"])
            .arg(config)
            .stdout(file.try_clone()?)
            .stderr(file),
        "api-shield run",
    )?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = daemon.try_wait()? {
            bail!(
                "`api-shield run` exited ({status}) during start-up:\n{}",
                log_tail(log)
            );
        }
        let status = command(bin)
            .arg("--socket")
            .arg(socket)
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if status.is_ok_and(|o| o.status.success()) {
            return Ok(daemon);
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not answer `status` within {READY_TIMEOUT:?}:\n{}",
                log_tail(log)
            );
        }
        thread::sleep(POLL);
    }
}

pub(crate) fn log_tail(log: &Path) -> String {
    const LINES: usize = 30;
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// An HTTP/1.1 answer as curl printed it with `-i`.
pub(crate) struct Answer {
    status: u16,
    head: String,
    body: String,
}

pub(crate) fn curl(lab: &Lab, url: &str, key: Option<&str>) -> Result<Answer> {
    let mut cmd = lab.nsenter(NS_ROLE, "curl");
    // HTTP/1.1 as wrk speaks it (the gateway would otherwise negotiate h2); -k: self-signed.
    cmd.args(["-sk", "--http1.1", "-i", "--max-time", CURL_MAX_SECONDS]);
    if let Some(key) = key {
        cmd.args(["-H", &format!("x-api-key: {key}")]);
    }
    let text = output(cmd.arg(url), &format!("curl {url}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("curl {url}: no status line in {text:?}"))?;
    Ok(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Waits until `url` answers 200 to the keyed request.
pub(crate) fn wait_http(lab: &Lab, url: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match curl(lab, url, Some(API_KEY)) {
            Ok(a) if a.status == HTTP_OK => return Ok(()),
            other => {
                if Instant::now() > deadline {
                    let seen = match other {
                        Ok(a) => format!("status {}", a.status),
                        Err(e) => format!("{e:#}"),
                    };
                    bail!("{what} at {url} not ready within {READY_TIMEOUT:?}: {seen}");
                }
            }
        }
        thread::sleep(POLL);
    }
}

/// The answers that prove what each front end does: the keyed request gets the upstream's
/// body (from api-shield's authenticating route with its rate-limit headers), a request
/// without the key 401 where a key is required and 200 on the pass-through. Returns the TLS
/// parameters each front end negotiated.
pub(crate) fn check_fronts(lab: &Lab) -> Result<Value> {
    let mut tls = serde_json::Map::new();
    for f in FRONTS {
        let url = f.url();
        let keyed = curl(lab, &url, Some(API_KEY))?;
        ensure!(
            keyed.status == HTTP_OK && keyed.body == UPSTREAM_BODY,
            "{}: the keyed request got {} {:?}, not 200 {UPSTREAM_BODY:?}",
            f.describe(),
            keyed.status,
            keyed.body
        );
        if f == Front::Auth {
            ensure!(
                keyed
                    .head
                    .lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("ratelimit")),
                "{}: no RateLimit header, so the plan's limits were not evaluated:\n{}",
                f.describe(),
                keyed.head
            );
        }
        let bare = curl(lab, &url, None)?;
        let want = if f.authenticates() {
            HTTP_UNAUTHORIZED
        } else {
            HTTP_OK
        };
        ensure!(
            bare.status == want,
            "{}: a request without the key got {}, not {want}",
            f.describe(),
            bare.status
        );
        tls.insert(f.key().to_owned(), tls_params(lab, f.port())?);
    }
    Ok(Value::Object(tls))
}

/// Protocol, cipher suite and key exchange group as `openssl s_client -brief` reports them.
pub(crate) fn tls_params(lab: &Lab, port: u16) -> Result<Value> {
    let out = lab
        .nsenter(NS_ROLE, "openssl")
        .args([
            "s_client",
            "-brief",
            "-connect",
            &format!("{LOOPBACK}:{port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .context("cannot start openssl s_client")?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim_start_matches(':').trim().to_owned())
    };
    let protocol = field("Protocol version");
    ensure!(
        protocol.is_some(),
        "openssl s_client to port {port}:\n{text}"
    );
    Ok(json!({
        "protocol": protocol,
        "cipher": field("Ciphersuite"),
        "group": field("Negotiated TLS1.3 group").or_else(|| field("Server Temp Key")),
    }))
}
