//! A real CrowdSec local API (Debian's `crowdsec` 1.4.6) for the bouncer tests, run offline.
//!
//! The package registers with CrowdSec's online API while it installs, which fails without
//! internet and leaves it unconfigured; pre-creating `online_api_credentials.yaml` (with a
//! comment line, so it is not empty) makes the script skip that step, and removing the
//! `online_client:` block from `config.yaml` keeps the local API from trying later.
//! `crowdsec -no-cs` then runs the local API alone, without the log-reading agent.
//!
//! Each `Lapi` starts its own `crowdsec` process (it dies with the test process too: parent-
//! death signal), on 127.0.0.1:8080 when that is free and otherwise on a free port through a
//! private copy of the configuration. It adds a bouncer with a unique name; dropping it deletes
//! the decisions it added and that bouncer, and kills the process. Bouncers left by a run that
//! was killed (recognised by the dead pid in their names) are deleted by the next run.

use crate::netns::{COMMAND_TIMEOUT, CommandError, Outcome, try_run, unique_id};
use anyhow::{Context, Result, bail};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

const CONFIG_DIR: &str = "/etc/crowdsec";
const CONFIG: &str = "/etc/crowdsec/config.yaml";
/// Read by crowdsec and cscli on top of `config.yaml` (Debian turns on SQLite's WAL there).
const LOCAL_SUFFIX: &str = ".local";
const ONLINE_CREDENTIALS: &str = "/etc/crowdsec/online_api_credentials.yaml";
const ONLINE_CREDENTIALS_TEXT: &str = "# offline: no central API\n";
const LOCAL_CREDENTIALS: &str = "/etc/crowdsec/local_api_credentials.yaml";
/// Where the package's configuration has the local API listen.
pub const DEFAULT_PORT: u16 = 8080;
/// Installing the package (31 MB) and, if needed, refreshing the package index.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// From starting `crowdsec` until `cscli` can talk to it (about a second here).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `crowdsec` may take to exit on SIGTERM (about two seconds here) before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// Bouncers are named `<BOUNCER_PREFIX><pid>-<n>`.
const BOUNCER_PREFIX: &str = "api-shield-test-";
/// Temp directories are `<temp>/<TEMP_PREFIX><pid>-<n>`.
const TEMP_PREFIX: &str = "api-shield-crowdsec-";

/// One install at a time within the test process (apt and dpkg take their own locks too).
static INSTALL: Mutex<()> = Mutex::new(());
/// One local API at a time within the test process: two tests that both found 8080 free
/// would both bind it, and they share the package's database.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A `crowdsec -no-cs` process of our own, with a bouncer key for the tests.
pub struct Lapi {
    pub port: u16,
    /// The bouncer key: what the feed sends as `X-Api-Key`.
    pub api_key: String,
    pub bouncer: String,
    /// Private directory: process output and, on a port other than 8080, the configuration.
    pub dir: PathBuf,
    /// The configuration `crowdsec` and `cscli` are given.
    config: PathBuf,
    child: Option<Child>,
    /// Decisions added through this value, as (`-i` or `-r`, value), deleted on drop.
    added: Vec<(&'static str, String)>,
    /// Released after `Drop` stopped the process (fields drop after `drop` runs).
    _exclusive: std::sync::MutexGuard<'static, ()>,
}

impl Lapi {
    /// Installs crowdsec if needed, starts the local API and adds a bouncer. Panics with the
    /// exact error when crowdsec cannot be installed or started here.
    pub fn start() -> Lapi {
        ensure_installed().unwrap_or_else(|e| panic!("crowdsec is not available: {e:#}"));
        let exclusive = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let id = unique_id();
        let dir = std::env::temp_dir().join(format!("{TEMP_PREFIX}{id}"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let (port, config) = if port_free(DEFAULT_PORT) {
            (DEFAULT_PORT, PathBuf::from(CONFIG))
        } else {
            // Something that is not ours listens on 8080: run on another port.
            let port = free_port();
            (port, private_config(&dir, port))
        };
        let mut lapi = Lapi {
            port,
            api_key: String::new(),
            bouncer: format!("{BOUNCER_PREFIX}{id}"),
            dir,
            config,
            child: None,
            added: Vec::new(),
            _exclusive: exclusive,
        };
        lapi.start_process();
        lapi.sweep_bouncers();
        let out = lapi.cscli(&["bouncers", "add", &lapi.bouncer, "-o", "raw"]);
        lapi.api_key = out.stdout.trim().to_string();
        assert!(
            !lapi.api_key.is_empty(),
            "cscli bouncers add printed no key: {out:?}"
        );
        lapi
    }

    /// The base URL of the local API.
    pub fn url(&self) -> String {
        format!("http://{}:{}", Ipv4Addr::LOCALHOST, self.port)
    }

    /// `cscli decisions add -i ip -d dur`.
    pub fn add_ip(&mut self, ip: &str, dur: &str) {
        self.add("-i", ip, dur);
    }

    /// `cscli decisions add -r cidr -d dur`.
    pub fn add_range(&mut self, cidr: &str, dur: &str) {
        self.add("-r", cidr, dur);
    }

    /// `cscli decisions delete -i ip`: every decision on that address, also ones a killed
    /// earlier run left.
    pub fn delete_ip(&mut self, ip: &str) {
        self.delete("-i", ip);
    }

    /// `cscli decisions delete -r cidr`.
    pub fn delete_range(&mut self, cidr: &str) {
        self.delete("-r", cidr);
    }

    fn add(&mut self, flag: &'static str, value: &str, dur: &str) {
        assert_test_address(value);
        self.cscli(&["decisions", "add", flag, value, "-d", dur]);
        self.added.push((flag, value.to_string()));
    }

    fn delete(&mut self, flag: &'static str, value: &str) {
        assert_test_address(value);
        self.cscli(&["decisions", "delete", flag, value]);
        self.added.retain(|(f, v)| !(*f == flag && v == value));
    }

    /// Stops the local API (SIGTERM, then SIGKILL), as an outage the feed must ride out.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_child(&mut child);
    }

    /// Starts the local API again on the same port after `stop`.
    pub fn start_again(&mut self) {
        assert!(
            port_free(self.port),
            "port {} was taken while the local API was down",
            self.port
        );
        self.start_process();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process output, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("crowdsec.log")).unwrap_or_default()
    }

    fn start_process(&mut self) {
        assert!(self.child.is_none(), "crowdsec is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("crowdsec.log"))
            .expect("open the crowdsec log");
        let log_err = log.try_clone().expect("clone the log file");
        let mut cmd = Command::new("crowdsec");
        cmd.arg("-no-cs")
            .arg("-c")
            .arg(&self.config)
            // The configuration's `working_dir` is `.`: keep whatever it writes in our dir.
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        crate::proc::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start crowdsec: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running() {
                panic!("crowdsec exited at start:\n{}", self.log());
            }
            let status = self.try_cscli(&["lapi", "status"]);
            if status.as_ref().is_ok_and(Outcome::success) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the local API on port {} did not answer cscli within {READY_TIMEOUT:?}: \
                     {status:?}\n{}",
                    self.port,
                    self.log()
                );
            }
            thread::sleep(POLL);
        }
    }

    fn try_cscli(&self, args: &[&str]) -> Result<Outcome, CommandError> {
        try_run(
            Command::new("cscli").arg("-c").arg(&self.config).args(args),
            COMMAND_TIMEOUT,
        )
    }

    /// Runs cscli; panics unless it succeeds.
    fn cscli(&self, args: &[&str]) -> Outcome {
        let out = self
            .try_cscli(args)
            .unwrap_or_else(|e| panic!("cscli {args:?}: {e}"));
        assert!(out.success(), "cscli {args:?} failed: {out:?}");
        out
    }

    /// Deletes bouncers of earlier runs whose process is gone.
    fn sweep_bouncers(&self) {
        let Ok(out) = self.try_cscli(&["bouncers", "list", "-o", "json"]) else {
            return;
        };
        let Ok(list) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
            return;
        };
        for name in list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["name"].as_str())
        {
            let Some(pid) = name
                .strip_prefix(BOUNCER_PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = self.try_cscli(&["bouncers", "delete", name]);
            }
        }
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        // Deleting decisions goes through the local API: bring it back if a test stopped it.
        if !self.added.is_empty() && self.child.is_none() && port_free(self.port) {
            let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.start_process();
            }));
            if restarted.is_err() {
                eprintln!("crowdsec: could not restart to delete the test decisions");
            }
        }
        for (flag, value) in std::mem::take(&mut self.added) {
            match self.try_cscli(&["decisions", "delete", flag, &value]) {
                Ok(o) if o.success() => {}
                Ok(o) => eprintln!("crowdsec: deleting decision {value}: {o:?}"),
                Err(e) => eprintln!("crowdsec: deleting decision {value}: {e}"),
            }
        }
        if !self.bouncer.is_empty() {
            let _ = self.try_cscli(&["bouncers", "delete", &self.bouncer]);
        }
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Test decisions name only documentation and benchmarking addresses.
fn assert_test_address(value: &str) {
    let net: ipnet::IpNet = value
        .parse()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .unwrap_or_else(|e| panic!("{value}: {e}"));
    let allowed: [ipnet::IpNet; 2] = [
        "198.18.0.0/15".parse().expect("benchmarking prefix"),
        "2001:db8::/32".parse().expect("documentation prefix"),
    ];
    assert!(
        allowed.iter().any(|a| a.contains(&net)),
        "{value} is outside 198.18.0.0/15 and 2001:db8::/32"
    );
}

fn stop_child(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet, so it is still ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether nothing listens on 127.0.0.1:`port` (binding it is the one reliable test).
fn port_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A copy of the configuration in `dir` for a local API on `port`: its own listen address,
/// client credentials naming that address (cscli reads the URL from them), and no
/// Prometheus listener (its fixed port would clash with the other crowdsec).
fn private_config(dir: &Path, port: u16) -> PathBuf {
    let credentials = dir.join("local_api_credentials.yaml");
    let creds = fs::read_to_string(LOCAL_CREDENTIALS)
        .unwrap_or_else(|e| panic!("read {LOCAL_CREDENTIALS}: {e}"));
    let creds: String = creds
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("url:") {
                format!("url: http://{}:{port}", Ipv4Addr::LOCALHOST)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write_private(&credentials, &creds);

    let text = fs::read_to_string(CONFIG).unwrap_or_else(|e| panic!("read {CONFIG}: {e}"));
    let mut section = "";
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.starts_with([' ', '#']) && line.ends_with(':') {
            section = line.trim_end_matches(':');
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let edited = if section == "api" && trimmed.starts_with("listen_uri:") {
            format!("{indent}listen_uri: {}:{port}", Ipv4Addr::LOCALHOST)
        } else if section == "api" && trimmed.starts_with("credentials_path:") {
            format!("{indent}credentials_path: {}", credentials.display())
        } else if section == "prometheus" && trimmed.starts_with("enabled:") {
            format!("{indent}enabled: false")
        } else {
            line.to_string()
        };
        out.push(edited);
    }
    let config = dir.join("config.yaml");
    write_private(&config, &out.join("\n"));
    let local = format!("{CONFIG}{LOCAL_SUFFIX}");
    if Path::new(&local).exists() {
        let copy = dir.join(format!("config.yaml{LOCAL_SUFFIX}"));
        fs::copy(&local, &copy).unwrap_or_else(|e| panic!("copy {local}: {e}"));
    }
    config
}

fn write_private(path: &Path, text: &str) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| f.write_all(b"\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---- installing ----------------------------------------------------------------------------

fn run_logged(cmd: &mut Command, timeout: Duration) -> Result<Outcome, CommandError> {
    try_run(cmd.env("DEBIAN_FRONTEND", "noninteractive"), timeout)
}

/// `dpkg`'s status of the package: `install ok installed` when usable.
fn package_status() -> String {
    try_run(
        Command::new("dpkg-query").args(["-W", "-f=${Status}", "crowdsec"]),
        COMMAND_TIMEOUT,
    )
    .map(|o| o.stdout.trim().to_string())
    .unwrap_or_default()
}

const INSTALLED: &str = "install ok installed";

/// Unpacked but not (or not fully) configured.
fn unconfigured(status: &str) -> bool {
    status.ends_with("unpacked") || status.ends_with("half-configured")
}

/// Installs and configures crowdsec for offline use; does nothing when that is done already.
pub fn ensure_installed() -> Result<()> {
    let _guard = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    if package_status() != INSTALLED {
        install()?;
    }
    remove_online_client()
}

fn install() -> Result<()> {
    fs::create_dir_all(CONFIG_DIR).with_context(|| format!("create {CONFIG_DIR}"))?;
    // The post-install script registers with the online API unless this file is non-empty.
    let present = fs::read_to_string(ONLINE_CREDENTIALS).is_ok_and(|t| !t.trim().is_empty());
    if !present {
        fs::write(ONLINE_CREDENTIALS, ONLINE_CREDENTIALS_TEXT)
            .with_context(|| format!("write {ONLINE_CREDENTIALS}"))?;
    }
    let apt_install = || {
        run_logged(
            Command::new("apt-get").args(["install", "-y", "crowdsec"]),
            INSTALL_TIMEOUT,
        )
    };
    let mut out = apt_install()?;
    let missing = |o: &Outcome| {
        o.stderr.contains("Unable to locate package")
            || o.stderr.contains("has no installation candidate")
            || o.stderr.contains("Failed to fetch")
    };
    if !out.success() && missing(&out) {
        let update = run_logged(Command::new("apt-get").arg("update"), INSTALL_TIMEOUT)?;
        if !update.success() {
            bail!("apt-get update failed: {}", update.stderr.trim());
        }
        out = apt_install()?;
    }
    // A failed post-install (an earlier attempt without the credentials file) leaves the
    // package unpacked but unconfigured.
    if unconfigured(&package_status()) {
        let configure = run_logged(
            Command::new("dpkg").args(["--configure", "-a"]),
            INSTALL_TIMEOUT,
        )?;
        if !configure.success() {
            bail!("dpkg --configure -a failed: {}", configure.stderr.trim());
        }
    }
    let status = package_status();
    if status != INSTALLED {
        bail!(
            "`apt-get install -y crowdsec` left the package as `{status}`; \
             exit {:?}, stderr: {}",
            out.code,
            out.stderr.trim()
        );
    }
    Ok(())
}

/// Removes the `online_client:` block (and its nested lines) from config.yaml, so the local
/// API never tries the central API.
fn remove_online_client() -> Result<()> {
    let text = fs::read_to_string(CONFIG).with_context(|| format!("read {CONFIG}"))?;
    let mut out = Vec::new();
    let mut block_indent: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(level) = block_indent {
            if !trimmed.is_empty() && indent > level {
                continue;
            }
            block_indent = None;
        }
        if trimmed.starts_with("online_client:") {
            block_indent = Some(indent);
            continue;
        }
        out.push(line);
    }
    if out.len() == text.lines().count() {
        return Ok(());
    }
    let tmp = format!("{CONFIG}.api-shield-tmp");
    let mut edited = out.join("\n");
    edited.push('\n');
    fs::write(&tmp, edited)
        .and_then(|()| fs::rename(&tmp, CONFIG))
        .with_context(|| format!("rewrite {CONFIG}"))
}
