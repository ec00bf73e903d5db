//! The real `api-shield` binary as the end-to-end tests drive it: the daemon running in a lab's
//! server namespace, and the CLI talking to it over the control socket.
//!
//! The daemon is started with `nsenter --net=...` rather than `ip netns exec`, which would
//! remount /sys and hide the bpffs pins. Each daemon has its own temp directory (config,
//! socket, state, audit log, daemon log) and its own `pin_root`; the guard kills the daemon,
//! detaches the shield and removes both, also while a test panics. A daemon also dies with the
//! test process (parent-death signal), and what a killed run left behind (recognised by the
//! dead pid in its names) is removed by the next run.

use crate::netns::{COMMAND_TIMEOUT, CommandError, Lab, NETNS_PREFIX, Outcome, run, try_run};
use serde_json::Value;
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

/// How long a daemon may take to answer `status` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon that must refuse to start may take to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon may take to exit after SIGTERM (its listeners drain for up to 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Each daemon's `pin_root` is `<PIN_PREFIX><pid>-<n>`.
const PIN_PREFIX: &str = "/sys/fs/bpf/api-shield-test-";
/// Each daemon's temp directory is `<temp>/<TEMP_PREFIX><pid>-<n>`.
const TEMP_PREFIX: &str = "api-shield-e2e-";

static SWEEP: Once = Once::new();

/// The binary under test: `API_SHIELD_BIN`, else `target/release/api-shield`.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("API_SHIELD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/api-shield")
        });
    assert!(
        path.is_file(),
        "the api-shield binary is missing at {}: build it with \
         `cargo build --release -p api-shield`, or point API_SHIELD_BIN at it",
        path.display()
    );
    path
}

/// Config that turns the kernel's own rate limits and auto-blocks off, for tests whose
/// traffic must reach userspace whatever its rate (the gateway's).
pub const KERNEL_QUIET: &str = "\
[limits]
packets_per_second = 0
syn_per_second = 0
[autoblock]
strikes = 0
";

/// A daemon attached to a lab's server interface; killed and cleaned up when dropped.
pub struct Daemon {
    pub bin: PathBuf,
    pub netns: String,
    pub iface: String,
    /// Private temp directory: config, socket, state, logs.
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub pin_root: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Writes a config (this daemon's paths, then `extra` TOML such as `[limits]` tables),
    /// starts the daemon on the lab's server interface and waits until it answers.
    pub fn start(lab: &Lab, extra: &str) -> Daemon {
        let mut daemon = Daemon::prepare(lab, extra);
        daemon.spawn();
        daemon
    }

    /// Creates the daemon's directory and config like `start`, without starting it: for
    /// tests that put something in place first (`spawn` starts it).
    pub fn prepare(lab: &Lab, extra: &str) -> Daemon {
        Daemon::prepare_with(lab, |_| extra.to_owned())
    }

    /// Like `prepare`, for a config that names files in the daemon's directory: `extra` gets
    /// the directory (already created), may write files there, and returns the extra TOML.
    pub fn prepare_with(lab: &Lab, extra: impl FnOnce(&Path) -> String) -> Daemon {
        let bin = binary();
        SWEEP.call_once(sweep_dead_runs);
        let dir = std::env::temp_dir().join(format!("{TEMP_PREFIX}{}", lab.id));
        let pin_root = PathBuf::from(format!("{PIN_PREFIX}{}", lab.id));
        let daemon = Daemon {
            bin,
            netns: lab.server.netns.clone(),
            iface: lab.server.iface.to_owned(),
            socket: dir.join("ctl.sock"),
            config: dir.join("cfg.toml"),
            log: dir.join("daemon.log"),
            dir,
            pin_root,
            child: None,
        };
        // From here on a panic drops `daemon`, which removes what was created.
        fs::create_dir(&daemon.dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", daemon.dir.display()));
        let extra = extra(&daemon.dir);
        let config = format!(
            "pin_root = \"{}\"\nstate_dir = \"{}\"\naudit_log = \"{}\"\n{extra}\n",
            daemon.pin_root.display(),
            daemon.dir.join("state").display(),
            daemon.dir.join("audit.jsonl").display(),
        );
        fs::write(&daemon.config, config)
            .unwrap_or_else(|e| panic!("write {}: {e}", daemon.config.display()));
        daemon
    }

    /// Starts a daemon process (again, after `kill9`) and waits until it answers `status`.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "a daemon is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        let log_err = log.try_clone().expect("clone the log file");
        let mut cmd = self.nsenter();
        // nsenter execs the daemon, which keeps the setting.
        crate::proc::die_with_parent(&mut cmd);
        let child = cmd
            .arg("--socket")
            .arg(&self.socket)
            .args(["run", "--iface", &self.iface, "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nsenter {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Runs `run` once more with this daemon's interface and config but the control socket
    /// `socket`, and expects it to refuse: exit non-zero within `REFUSAL_TIMEOUT`. Returns what
    /// it printed.
    pub fn run_expecting_refusal(&self, socket: &Path) -> Outcome {
        let mut cmd = self.nsenter();
        cmd.arg("--socket")
            .arg(socket)
            .args(["run", "--iface", &self.iface, "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let outcome = try_run(&mut cmd, REFUSAL_TIMEOUT).unwrap_or_else(|e| {
            panic!("the daemon did not refuse to start (it was killed after the timeout): {e}")
        });
        assert!(
            !outcome.success() && outcome.code.is_some(),
            "the daemon exited with {:?} instead of refusing: {}{}",
            outcome.code,
            outcome.stdout,
            outcome.stderr
        );
        outcome
    }

    /// The records of the audit log, oldest first.
    pub fn audit_records(&self) -> Vec<Value> {
        let path = self.dir.join("audit.jsonl");
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")))
            .collect()
    }

    /// `nsenter --net=/run/netns/<server> <bin>`: the server's network, the host's mounts.
    fn nsenter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg(&self.bin);
        cmd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "the daemon exited during start-up ({status}); its log:\n{}",
                    self.log()
                );
            }
            let outcome = self.cli(&["status", "--json"]);
            if outcome.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer `status` within {READY_TIMEOUT:?}: {}\nits log:\n{}",
                outcome.stderr.trim(),
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's pid, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (nsenter execs the binary, so the child's pid is the daemon's) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the daemon to exit on its own; returns whether it
    /// exited cleanly. One still running after the wait is killed and counts as a failure.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return false;
        };
        // SAFETY: kill(2) with the pid of the daemon this guard started and has not reaped.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return false;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Runs the CLI as root against this daemon's socket.
    pub fn cli(&self, args: &[&str]) -> Outcome {
        run(&mut self.cli_command(args), COMMAND_TIMEOUT)
    }

    /// Runs the CLI as `uid:gid` (supplementary groups dropped) against this daemon's socket.
    pub fn cli_as(&self, uid: u32, gid: u32, args: &[&str]) -> Outcome {
        run(self.cli_command(args).uid(uid).gid(gid), COMMAND_TIMEOUT)
    }

    /// The CLI as a command against this daemon's socket, for a test that wires its stdin or
    /// runs it in the background itself.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd
    }

    /// Writes `bytes` to the control socket as they are (no client in between), closes the
    /// writing side and returns the daemon's one-line JSON answer.
    pub fn raw_request(&self, bytes: &[u8]) -> Value {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)
            .expect("connect to the control socket");
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .expect("timeout");
        stream.write_all(bytes).expect("send");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down the writing side");
        let mut answer = String::new();
        BufReader::new(&stream)
            .read_line(&mut answer)
            .expect("answer");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
    }

    /// Runs a CLI verb that must succeed and print JSON; returns the JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let outcome = self.cli(args);
        assert!(
            outcome.success(),
            "`api-shield {}` failed ({:?}): {}",
            args.join(" "),
            outcome.code,
            outcome.stderr.trim()
        );
        serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| {
            panic!(
                "`api-shield {}` printed no JSON ({e}): {}",
                args.join(" "),
                outcome.stdout
            )
        })
    }

    /// Runs a CLI verb that must succeed.
    pub fn ok(&self, args: &[&str]) -> Outcome {
        let outcome = self.cli(args);
        assert!(
            outcome.success(),
            "`api-shield {}` failed ({:?}): {}",
            args.join(" "),
            outcome.code,
            outcome.stderr.trim()
        );
        outcome
    }

    pub fn status(&self) -> Value {
        self.json(&["status", "--json"])
    }

    pub fn stats(&self) -> Value {
        self.json(&["stats", "--json"])
    }

    /// `list [blocked|allowed] --json` as an array.
    pub fn list(&self, kind: Option<&str>) -> Vec<Value> {
        let mut args = vec!["list"];
        args.extend(kind);
        args.push("--json");
        match self.json(&args) {
            Value::Array(items) => items,
            other => panic!("`list` did not print an array: {other}"),
        }
    }

    /// `detach --iface <iface> --config <cfg>`, run in the server namespace.
    pub fn detach(&self) -> Result<Outcome, CommandError> {
        let mut cmd = self.nsenter();
        cmd.args(["detach", "--iface", &self.iface, "--config"])
            .arg(&self.config);
        try_run(&mut cmd, COMMAND_TIMEOUT)
    }

    /// Everything the daemon(s) logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where the pins of the protected interface live.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.iface)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Nothing here may panic: this also runs while a test panics.
        self.kill9();
        if thread::panicking() {
            eprintln!(
                "e2e: log of the daemon on {} in {}:\n{}",
                self.iface,
                self.netns,
                self.log()
            );
        }
        if self.config.is_file() && Path::new("/run/netns").join(&self.netns).exists() {
            match self.detach() {
                Ok(o) if o.success() => {}
                Ok(o) => eprintln!("e2e: detach failed: {}", o.stderr.trim()),
                Err(e) => eprintln!("e2e: detach failed: {e}"),
            }
        }
        for (what, path) in [("pins", &self.pin_root), ("temp dir", &self.dir)] {
            if let Err(e) = remove_all(path) {
                eprintln!("e2e: cannot remove the {what} {}: {e}", path.display());
            }
        }
    }
}

/// Removes the pins, namespaces and temp dirs left by test runs that were killed before their
/// guards ran (a SIGKILLed or interrupted `cargo test`): only names carrying the pid of a process
/// that no longer exists, so a run in progress is never touched.
fn sweep_dead_runs() {
    let dead = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
            .is_some_and(|pid| pid > 0 && !pid_exists(pid))
    };
    let entries = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let pins = Path::new(PIN_PREFIX);
    let (pin_dir, pin_prefix) = (
        pins.parent().unwrap_or(Path::new("/")),
        pins.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default(),
    );
    for name in entries(pin_dir) {
        if dead(&name, pin_prefix) {
            eprintln!("e2e: removing pins left by a dead run: {name}");
            let _ = remove_all(&pin_dir.join(&name));
        }
    }
    for name in entries(Path::new("/run/netns")) {
        if dead(&name, NETNS_PREFIX) {
            eprintln!("e2e: removing a namespace left by a dead run: {name}");
            let _ = try_run(
                Command::new("ip").args(["netns", "delete", &name]),
                COMMAND_TIMEOUT,
            );
        }
    }
    let temp = std::env::temp_dir();
    for name in entries(&temp) {
        if dead(&name, TEMP_PREFIX) {
            let _ = remove_all(&temp.join(&name));
        }
    }
}

fn pid_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; it only asks whether the pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes `path` and everything below it; a path that is not there is removed already.
fn remove_all(path: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `stats[section][name].packets`, panicking if it is missing.
pub fn packets(stats: &Value, section: &str, name: &str) -> u64 {
    stats[section][name]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("stats have no {section}.{name}.packets: {stats}"))
}
