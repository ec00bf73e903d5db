//! Network-namespace labs for the end-to-end tests, and real-socket traffic inside them.
//!
//! A lab is four namespaces of its own: a switch holding a Linux bridge, the server (where the
//! shield attaches to `srv0`) and two clients, `good` and `bad`, each joined to the bridge by a
//! veth pair created inside the lab's namespaces, so nothing touches the host's interfaces.
//! Neighbour entries are permanent, so no ARP or neighbour discovery has to cross the shield
//! (a blocked client could otherwise not even resolve the server). Everything the lab creates
//! is removed when it is dropped, also while a test panics.
//!
//! Traffic is sent and received by real sockets on threads that entered a namespace with
//! `setns`, so counts are exact and nothing has to be parsed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest any helper command (`ip`, the CLI) may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a receiver keeps running even if nobody stops it.
const RECEIVER_LIFETIME: Duration = Duration::from_secs(120);
/// How long the receiver waits in one `recv` before checking whether it must stop.
const RECEIVER_POLL: Duration = Duration::from_millis(20);
/// Receive buffer of the counting socket, so a burst is never lost in the socket itself.
const RECEIVE_BUFFER_BYTES: libc::c_int = 8 << 20;
/// Bytes of payload per datagram.
const PAYLOAD: [u8; 32] = [0x5a; 32];

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A name suffix unique to this test run and this call: `<pid>-<counter>`.
pub fn unique_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// The exit code, stdout and stderr of a finished command.
#[derive(Debug)]
pub struct Outcome {
    /// `None` if killed by a signal (including the timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` with stdin closed, killing it after `timeout`; output is captured. Panics if it
/// cannot be started or does not finish in time.
pub fn run(cmd: &mut Command, timeout: Duration) -> Outcome {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Why a helper command gave no outcome.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot start {command}: {source}")]
    Start { command: String, source: io::Error },
    #[error("waiting for {command}: {source}")]
    Wait { command: String, source: io::Error },
    #[error("{command} did not finish within {timeout:?}: {outcome:?}")]
    Timeout {
        command: String,
        timeout: Duration,
        outcome: Outcome,
    },
}

/// `run` without panicking, for drop guards.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Outcome, CommandError> {
    let described = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Start {
            command: described.clone(),
            source,
        })?;
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Wait {
                    command: described,
                    source: e,
                });
            }
        }
    };
    let outcome = Outcome {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    match status {
        Some(_) => Ok(outcome),
        None => Err(CommandError::Timeout {
            command: described,
            timeout,
            outcome,
        }),
    }
}

/// Reads a pipe to its end on a thread of its own, so neither pipe can fill up and block.
fn drain(pipe: Option<Box<dyn Read + Send>>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `ip ARGS`, panicking with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let outcome = run(Command::new("ip").args(args), COMMAND_TIMEOUT);
    assert!(
        outcome.success(),
        "ip {} failed: {}",
        args.join(" "),
        outcome.stderr.trim()
    );
}

/// One host of the lab.
#[derive(Clone, Debug)]
pub struct Host {
    /// Namespace name.
    pub netns: String,
    /// Its interface inside the namespace.
    pub iface: &'static str,
    pub mac: &'static str,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Host {
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

/// Every host shares one IPv4 /24 and one IPv6 /48; each client has a /64 of its own, so a
/// /64 block can cover one client without covering the server.
pub const V4_LEN: u8 = 24;
pub const V6_LEN: u8 = 48;
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const GOOD_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// Alone in 198.18.1.32/28.
pub const BAD_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 35);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, 1);
pub const GOOD_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 2);
/// Alone in 2001:db8:1:3::/64.
pub const BAD_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 3);

/// Every lab namespace is named `<NETNS_PREFIX><pid>-<n>-<role>`.
pub const NETNS_PREFIX: &str = "ase2e-";

/// The server's interface, where the shield attaches.
pub const SERVER_IFACE: &str = "srv0";

/// Namespaces joined by a bridge; removed on drop.
pub struct Lab {
    pub id: String,
    pub server: Host,
    pub good: Host,
    pub bad: Host,
    switch: String,
    /// Namespaces created so far, in creation order.
    created: Vec<String>,
}

impl Lab {
    /// Builds the lab under a fresh unique id.
    pub fn new() -> Lab {
        let id = unique_id();
        let ns = |role: &str| format!("{NETNS_PREFIX}{id}-{role}");
        let mut lab = Lab {
            server: Host {
                netns: ns("srv"),
                iface: SERVER_IFACE,
                mac: "02:5e:00:00:01:01",
                v4: SERVER_V4,
                v6: SERVER_V6,
            },
            good: Host {
                netns: ns("good"),
                iface: "good0",
                mac: "02:5e:00:00:01:02",
                v4: GOOD_V4,
                v6: GOOD_V6,
            },
            bad: Host {
                netns: ns("bad"),
                iface: "bad0",
                mac: "02:5e:00:00:01:03",
                v4: BAD_V4,
                v6: BAD_V6,
            },
            switch: ns("sw"),
            created: Vec::new(),
            id,
        };
        // A panic from here on drops `lab`, which removes whatever was created.
        lab.build();
        lab
    }

    fn build(&mut self) {
        let switch = self.switch.clone();
        self.add_namespace(&switch);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let hosts = [self.server.clone(), self.good.clone(), self.bad.clone()];
        for host in &hosts {
            self.add_namespace(&host.netns);
            let port = format!("p-{}", host.iface);
            ip(&[
                "-n",
                &switch,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                host.iface,
                "netns",
                &host.netns,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            let ns = host.netns.as_str();
            ip(&["-n", ns, "link", "set", host.iface, "address", host.mac]);
            let v4 = format!("{}/{V4_LEN}", host.v4);
            let v6 = format!("{}/{V6_LEN}", host.v6);
            ip(&["-n", ns, "addr", "add", &v4, "dev", host.iface]);
            ip(&["-n", ns, "addr", "add", &v6, "dev", host.iface, "nodad"]);
            ip(&["-n", ns, "link", "set", host.iface, "up"]);
        }
        for host in &hosts {
            for peer in hosts.iter().filter(|p| p.netns != host.netns) {
                for addr in [peer.v4.to_string(), peer.v6.to_string()] {
                    ip(&[
                        "-n",
                        &host.netns,
                        "neigh",
                        "replace",
                        &addr,
                        "lladdr",
                        peer.mac,
                        "dev",
                        host.iface,
                        "nud",
                        "permanent",
                    ]);
                }
            }
        }
    }

    fn add_namespace(&mut self, ns: &str) {
        ip(&["netns", "add", ns]);
        self.created.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// The lab's namespaces, switch first.
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            // Never panics: a panic here, during a test's own panic, would abort the run.
            let outcome = try_run(
                Command::new("ip").args(["netns", "delete", ns]),
                COMMAND_TIMEOUT,
            );
            let failure = match outcome {
                Ok(o) if o.success() => continue,
                Ok(o) => o.stderr.trim().to_owned(),
                Err(e) => e.to_string(),
            };
            if Path::new("/run/netns").join(ns).exists() {
                eprintln!("e2e: cannot delete namespace {ns}: {failure}");
            }
        }
    }
}

/// Runs `f` on a new thread that has entered the network namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    thread::spawn(move || {
        // SAFETY: `file` is an open network namespace file; setns changes only this thread's
        // network namespace, and the thread never leaves it.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns into {path}: {}", io::Error::last_os_error());
        }
        drop(file);
        f()
    })
}

/// A UDP socket in the server's namespace counting datagrams per source address. Both IPv4
/// and IPv6 (one dual-stack socket). Stops when dropped, or by itself after two minutes.
pub struct Receiver {
    pub port: u16,
    counts: Arc<Mutex<HashMap<IpAddr, u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn start(host: &Host, port: u16) -> Receiver {
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let thread = {
            let counts = Arc::clone(&counts);
            let stop = Arc::clone(&stop);
            in_netns(&host.netns, move || {
                let socket = match bind_receiver(port) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let started = Instant::now();
                let mut buf = [0_u8; 2048];
                while !stop.load(Ordering::Relaxed) && started.elapsed() < RECEIVER_LIFETIME {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        *counts
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(from.ip().to_canonical())
                            .or_default() += 1;
                    }
                }
            })
        };
        let receiver = Receiver {
            port,
            counts,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => receiver,
            Ok(Err(e)) => panic!("receiver: bind [::]:{port}: {e}"),
            Err(e) => panic!("the receiver never bound: {e}"),
        }
    }

    /// Datagrams received so far from `src`.
    pub fn count(&self, src: IpAddr) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&src)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// Waits until nothing has arrived for 300 ms (at most 5 s), so every datagram still in
    /// flight is counted.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.total();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            let now = self.total();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(300) {
                return;
            }
        }
    }

    /// The server address this receiver listens on, for the given family.
    pub fn target(&self, server: &Host, v6: bool) -> SocketAddr {
        SocketAddr::new(server.addr(v6), self.port)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_receiver(port: u16) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))?;
    let size = RECEIVE_BUFFER_BYTES;
    // SAFETY: setsockopt on a socket we own, with a pointer to an int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.set_read_timeout(Some(RECEIVER_POLL))?;
    Ok(socket)
}

/// How a sender paces its datagrams.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Datagrams to send.
    pub count: u64,
    /// Pause between datagrams; `None` sends as fast as the socket takes them.
    pub gap: Option<Duration>,
    /// Stop after this long even if not all were sent.
    pub limit: Duration,
}

impl Pace {
    /// Gently paced: no socket, queue or ring on the path can overflow.
    pub const fn steady(count: u64) -> Pace {
        Pace {
            count,
            gap: Some(Duration::from_micros(200)),
            limit: Duration::from_secs(10),
        }
    }

    /// As fast as possible, bounded by `count` and 10 s.
    pub const fn flood(count: u64) -> Pace {
        Pace {
            count,
            gap: None,
            limit: Duration::from_secs(10),
        }
    }
}

/// Starts sending UDP datagrams from `from` (its address of the target's family) to `to`;
/// the handle yields how many the socket accepted.
pub fn spawn_udp(from: &Host, to: SocketAddr, pace: Pace) -> JoinHandle<u64> {
    let src = SocketAddr::new(from.addr(to.is_ipv6()), 0);
    in_netns(&from.netns, move || {
        let socket = UdpSocket::bind(src).unwrap_or_else(|e| panic!("bind {src}: {e}"));
        let started = Instant::now();
        let mut sent = 0;
        for _ in 0..pace.count {
            if started.elapsed() >= pace.limit {
                break;
            }
            if socket.send_to(&PAYLOAD, to).is_ok() {
                sent += 1;
            }
            if let Some(gap) = pace.gap {
                thread::sleep(gap);
            }
        }
        sent
    })
}

/// Sends from `from` to `to` and waits until done; returns how many the socket accepted.
pub fn send_udp(from: &Host, to: SocketAddr, pace: Pace) -> u64 {
    spawn_udp(from, to, pace).join().expect("sender thread")
}
