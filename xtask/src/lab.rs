//! A lab of network namespaces: hosts joined by a Linux bridge that lives in a namespace of its
//! own, so nothing touches the host's interfaces. Everything the lab creates (namespaces, the
//! processes spawned in them, paths registered for removal) goes away when the `Lab` is
//! dropped, and also on Ctrl-C or SIGTERM, through a process-wide handler.

use crate::util::{self, command, output};
use anyhow::{Context, Result, bail, ensure};
use std::{
    collections::BTreeMap,
    fs::{self, File},
    net::UdpSocket,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{self, Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex, Once, PoisonError,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// One host of the star: its namespace role, interface and addresses (with prefix lengths).
pub struct Host {
    pub role: &'static str,
    pub iface: &'static str,
    pub v4: &'static str,
    pub v6: &'static str,
}

impl Host {
    pub fn v4_addr(&self) -> &'static str {
        self.v4.split('/').next().unwrap_or(self.v4)
    }

    pub fn v6_addr(&self) -> &'static str {
        self.v6.split('/').next().unwrap_or(self.v6)
    }
}

/// The demo's hosts: the protected server, a legitimate client and an attacker.
pub const DEMO_HOSTS: [Host; 3] = [
    Host {
        role: "srv",
        iface: "srv0",
        v4: "198.18.0.1/24",
        v6: "2001:db8::1/64",
    },
    Host {
        role: "cli",
        iface: "cli0",
        v4: "198.18.0.2/24",
        v6: "2001:db8::2/64",
    },
    Host {
        role: "atk",
        iface: "atk0",
        v4: "198.18.0.66/24",
        v6: "2001:db8::66/64",
    },
];

const SWITCH: &str = "switch";
const BRIDGE: &str = "br0";

/// What one lab owns, kept where the interrupt handler can reach it.
#[derive(Default)]
struct Resources {
    namespaces: Vec<String>,
    pids: Vec<i32>,
    paths: Vec<PathBuf>,
}

static LIVE: Mutex<BTreeMap<u32, Resources>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU32 = AtomicU32::new(0);
static HANDLER: Once = Once::new();

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u32, Resources>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn install_interrupt_handler() {
    HANDLER.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            eprintln!("\nxtask: interrupted; tearing the lab down");
            let mut labs = live();
            for (_, res) in std::mem::take(&mut *labs) {
                for err in release(res) {
                    eprintln!("xtask: {err:#}");
                }
            }
            process::exit(130);
        });
        if let Err(e) = installed {
            eprintln!(
                "xtask: warning: no Ctrl-C handler ({e}); an interrupt may leave the lab behind"
            );
        }
    });
}

/// Stops the processes, removes the paths, then deletes the namespaces; returns what failed.
fn release(res: Resources) -> Vec<anyhow::Error> {
    let mut errors = Vec::new();
    for pid in res.pids {
        stop_pid(pid);
    }
    for path in res.paths {
        if let Err(e) = remove_path(&path) {
            errors.push(e);
        }
    }
    for ns in res.namespaces.iter().rev() {
        if let Err(e) = output(
            command("ip").args(["netns", "delete", ns]),
            "ip netns delete",
        ) {
            errors.push(e);
        }
    }
    errors
}

fn remove_path(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// SIGTERM, a grace period, then SIGKILL, for a child known only by its pid.
fn stop_pid(pid: i32) {
    // SAFETY: plain syscalls on a pid this process spawned; no memory is shared.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped != 0 {
            return; // reaped now, or not (any more) our child
        }
        if Instant::now() > deadline {
            // SAFETY: as above; the blocking wait reaps the killed child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub struct Lab {
    id: u32,
    suffix: String,
    released: bool,
}

impl Lab {
    /// A bridge in `as-switch-<pid>` and one namespace `as-<role>-<pid>` per host, each joined
    /// to the bridge by a veth pair created inside the lab's namespaces.
    pub fn star(hosts: &[Host]) -> Result<Lab> {
        install_interrupt_handler();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let suffix = match id {
            0 => process::id().to_string(),
            n => format!("{}-{n}", process::id()),
        };
        live().insert(id, Resources::default());
        let lab = Lab {
            id,
            suffix,
            released: false,
        };
        lab.build(hosts)
            .context("create the lab's network namespaces")?;
        Ok(lab)
    }

    fn build(&self, hosts: &[Host]) -> Result<()> {
        let switch = self.ns(SWITCH);
        self.add_namespace(&switch)?;
        ip(&["-n", &switch, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", BRIDGE, "up"])?;
        for host in hosts {
            let ns = self.ns(host.role);
            let port = format!("p-{}", host.role);
            self.add_namespace(&ns)?;
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", host.iface,
                "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", BRIDGE, "up"])?;
            ip(&["-n", &ns, "addr", "add", host.v4, "dev", host.iface])?;
            ip(&[
                "-n", &ns, "addr", "add", host.v6, "dev", host.iface, "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", host.iface, "up"])?;
        }
        Ok(())
    }

    /// Creates a namespace, registers it for removal, brings up `lo` and turns off IPv6 DAD.
    fn add_namespace(&self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.with(|res| res.namespaces.push(ns.to_owned()));
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        output(
            self.exec_ns(ns, "sysctl").args([
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]),
            "sysctl accept_dad=0",
        )?;
        Ok(())
    }

    fn with(&self, f: impl FnOnce(&mut Resources)) {
        if let Some(res) = live().get_mut(&self.id) {
            f(res);
        }
    }

    /// The namespace name of a role: `as-<role>-<pid>`.
    pub fn ns(&self, role: &str) -> String {
        format!("as-{role}-{}", self.suffix)
    }

    /// Every namespace this lab created.
    pub fn namespaces(&self) -> Vec<String> {
        live()
            .get(&self.id)
            .map(|res| res.namespaces.clone())
            .unwrap_or_default()
    }

    fn exec_ns(&self, ns: &str, program: &str) -> Command {
        let mut cmd = command("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    /// `ip netns exec as-<role>-<pid> PROGRAM` (remounts /sys: bpffs pins are not visible).
    pub fn exec(&self, role: &str, program: impl AsRef<Path>) -> Command {
        let mut cmd = command("ip");
        cmd.args(["netns", "exec", &self.ns(role)])
            .arg(program.as_ref());
        cmd
    }

    /// `nsenter --net=/run/netns/as-<role>-<pid> PROGRAM`: keeps the host's mounts (bpffs).
    pub fn nsenter(&self, role: &str, program: impl AsRef<Path>) -> Command {
        let mut cmd = command("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns(role)))
            .arg(program.as_ref());
        cmd
    }

    /// Spawns a process that the lab stops (SIGTERM, then SIGKILL) when torn down.
    pub fn spawn(&self, cmd: &mut Command, what: &str) -> Result<LabChild> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {what}: {}", util::describe(cmd)))?;
        let pid = child.id() as i32;
        self.with(|res| res.pids.push(pid));
        Ok(LabChild {
            child,
            lab: self.id,
            what: what.to_owned(),
            status: None,
        })
    }

    /// Removes `path` (a file or a whole directory) at teardown, before the namespaces go.
    pub fn remove_on_teardown(&self, path: &Path) {
        self.with(|res| res.paths.push(path.to_owned()));
    }

    /// Runs `f` on a thread that has entered the role's network namespace.
    pub fn in_ns<T: Send + 'static>(
        &self,
        role: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<JoinHandle<Result<T>>> {
        let path = format!("/run/netns/{}", self.ns(role));
        let file = File::open(&path).with_context(|| format!("open {path}"))?;
        Ok(thread::spawn(move || {
            // SAFETY: `file` is an open namespace file; setns changes only this thread's netns.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("setns into the lab");
            }
            f()
        }))
    }

    /// Stops the lab's processes, removes its paths and deletes its namespaces.
    pub fn teardown(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let res = live().remove(&self.id).unwrap_or_default();
        let errors = release(res);
        if let Some(first) = errors.into_iter().next() {
            return Err(first.context("tear the lab down"));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("xtask: {e:#}");
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    output(command("ip").args(args), "ip").map(drop)
}

/// A process running in the lab; stopped when dropped.
pub struct LabChild {
    child: Child,
    lab: u32,
    what: String,
    status: Option<ExitStatus>,
}

impl LabChild {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The exit status if it has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("wait for {}", self.what))?;
            if self.status.is_some() {
                self.forget();
            }
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for it to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        if let Some(status) = self.wait_timeout(Duration::from_secs(5))? {
            return Ok(status);
        }
        eprintln!("xtask: {} ignored SIGTERM; killing it", self.what);
        self.child.kill().ok();
        let status = self
            .child
            .wait()
            .with_context(|| format!("wait for {}", self.what))?;
        self.status = Some(status);
        self.forget();
        Ok(status)
    }

    fn forget(&self) {
        let pid = self.pid();
        if let Some(res) = live().get_mut(&self.lab) {
            res.pids.retain(|p| *p != pid);
        }
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: {e:#}");
        }
    }
}

/// `xtask lab-smoke`: build the demo lab, check it forwards IPv4, IPv6 and a bounded flood,
/// tear it down and check that no namespace, interface or process is left.
pub fn smoke(hold: u64) -> Result<()> {
    let host_links_before = host_links()?;
    let mut lab = Lab::star(&DEMO_HOSTS)?;
    println!("lab-smoke: created {}", lab.namespaces().join(" "));
    let srv = &DEMO_HOSTS[0];
    for from in ["cli", "atk"] {
        for to in [srv.v4_addr(), srv.v6_addr()] {
            output(
                lab.exec(from, "ping").args(["-c", "1", "-W", "2", to]),
                &format!("ping {to} from {from}"),
            )?;
            println!("lab-smoke: {from} -> {to}: ping ok");
        }
    }

    smoke_flood(&lab)?;

    let mut sleeper = lab.spawn(lab.exec("srv", "sleep").arg("600"), "sleep")?;
    let sleeper_pid = sleeper.pid();
    if hold > 0 {
        println!("lab-smoke: holding the lab for {hold} s (Ctrl-C tests the interrupt path)");
        thread::sleep(Duration::from_secs(hold));
    }
    let namespaces = lab.namespaces();
    sleeper.stop()?;
    lab.teardown()?;

    let listed = output(command("ip").args(["netns", "list"]), "ip netns list")?;
    let left: Vec<&String> = namespaces
        .iter()
        .filter(|ns| listed.contains(ns.as_str()) || Path::new("/run/netns").join(ns).exists())
        .collect();
    ensure!(left.is_empty(), "namespaces left behind: {left:?}");
    // SAFETY: signal 0 only checks whether the pid exists.
    if unsafe { libc::kill(sleeper_pid, 0) } == 0 {
        bail!("process {sleeper_pid} left behind");
    }
    ensure!(
        host_links()? == host_links_before,
        "the host's interfaces changed"
    );
    println!("lab-smoke: torn down; no namespace, process or host interface left");
    Ok(())
}

fn host_links() -> Result<Vec<String>> {
    let out = output(command("ip").args(["-o", "link", "show"]), "ip link show")?;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// A bounded flood from the attacker to the server: at least 90 % must cross the bridge.
fn smoke_flood(lab: &Lab) -> Result<()> {
    let srv = &DEMO_HOSTS[0];
    let (ready_tx, ready_rx) = mpsc::channel();
    let bind = format!("{}:9999", srv.v4_addr());
    let receiver = lab.in_ns("srv", move || {
        let socket = UdpSocket::bind(&bind).with_context(|| format!("bind {bind}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        ready_tx.send(()).ok();
        let (mut count, mut buf, start) = (0_u64, [0_u8; 128], Instant::now());
        while start.elapsed() < Duration::from_secs(5) {
            match socket.recv(&mut buf) {
                Ok(_) => count += 1,
                Err(_) if count > 0 => break,
                Err(_) => {}
            }
        }
        Ok(count)
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the receiver never bound")?;
    let exe = std::env::current_exe().context("path of xtask")?;
    let sent = 500;
    print!(
        "lab-smoke: {}",
        output(
            lab.exec("atk", &exe).args([
                "flood",
                "--target",
                &format!("{}:9999", srv.v4_addr()),
                "--pps",
                "1000",
                "--seconds",
                "3",
                "--max-packets",
                &sent.to_string(),
            ]),
            "xtask flood",
        )?
    );
    let received = receiver.join().expect("receiver thread")?;
    println!("lab-smoke: server received {received} of {sent} flood packets");
    ensure!(
        received * 10 >= sent * 9,
        "the bridge lost too many packets"
    );
    Ok(())
}
