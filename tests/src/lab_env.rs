//! The namespace lab most end-to-end tests share: a lab, the daemon attached to its server
//! and a receiver counting the datagrams that reach the server, with the probes and files
//! those tests use. Fields drop in order: receiver, daemon, then the lab's namespaces.

use crate::daemon::Daemon;
use crate::netns::{Host, Lab, Pace, Receiver, ip, spawn_udp};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The UDP port the receiver listens on.
pub const UDP_PORT: u16 = 9000;
/// Datagrams a `probe` sends unless `with_probes` says otherwise.
pub const DEFAULT_PROBES: u64 = 100;

/// A lab, its daemon and its receiver; everything is removed on drop.
pub struct Env {
    pub rx: Receiver,
    pub daemon: Daemon,
    pub lab: Lab,
    probes: u64,
}

impl Env {
    /// A fresh lab with a daemon started with the `extra` config.
    pub fn new(extra: &str) -> Env {
        Env::start_with(|_| extra.to_owned())
    }

    /// Like `new`, for a config that names files in the daemon's directory: `extra` gets the
    /// directory, may write files there, and returns the extra TOML.
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Env {
        let lab = Lab::new();
        let mut daemon = Daemon::prepare_with(&lab, extra);
        daemon.spawn();
        let rx = Receiver::start(&lab.server, UDP_PORT);
        Env {
            rx,
            daemon,
            lab,
            probes: DEFAULT_PROBES,
        }
    }

    /// Sets how many datagrams `probe` sends.
    #[must_use]
    pub fn with_probes(mut self, probes: u64) -> Env {
        self.probes = probes;
        self
    }

    /// The bad client speaking from another of its addresses (added with `add_bad_address`).
    pub fn bad_as(&self, v4: Ipv4Addr) -> Host {
        Host {
            v4,
            ..self.lab.bad.clone()
        }
    }

    /// Gives the bad client one more IPv4 address.
    pub fn add_bad_address(&self, v4: Ipv4Addr) {
        let addr = format!("{v4}/32");
        let bad = &self.lab.bad;
        ip(&["-n", &bad.netns, "addr", "add", &addr, "dev", bad.iface]);
    }

    /// Sends the configured number of gently paced datagrams from `host` over the family
    /// and returns how many arrived.
    pub fn probe(&self, host: &Host, v6: bool) -> u64 {
        self.probe_n(host, v6, self.probes)
    }

    /// Sends `n` gently paced datagrams from `host` over the family and returns how many
    /// arrived.
    pub fn probe_n(&self, host: &Host, v6: bool, n: u64) -> u64 {
        let target = self.rx.target(&self.lab.server, v6);
        let src = host.addr(v6);
        let before = self.rx.count(src);
        let sent = spawn_udp(host, target, Pace::steady(n))
            .join()
            .expect("sender thread");
        assert_eq!(sent, n, "the socket of {src} refused datagrams");
        self.rx.settle();
        self.rx.count(src) - before
    }

    /// Both clients send `n` datagrams (gently paced, at the same time) to the server over
    /// the given family; returns how many of each arrived (good, bad).
    pub fn exchange(&self, v6: bool, n: u64) -> (u64, u64) {
        let target = self.rx.target(&self.lab.server, v6);
        let (good, bad) = (self.lab.good.addr(v6), self.lab.bad.addr(v6));
        let before = (self.rx.count(good), self.rx.count(bad));
        let g = spawn_udp(&self.lab.good, target, Pace::steady(n));
        let b = spawn_udp(&self.lab.bad, target, Pace::steady(n));
        let sent = (
            g.join().expect("good sender"),
            b.join().expect("bad sender"),
        );
        assert_eq!(
            sent,
            (n, n),
            "the client sockets did not take every datagram"
        );
        self.rx.settle();
        (
            self.rx.count(good) - before.0,
            self.rx.count(bad) - before.1,
        )
    }

    /// Writes `contents` to `name` in the daemon's directory.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.daemon.dir.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Like `file`, with the file's permission bits set to `mode`.
    pub fn file_with_mode(&self, name: &str, contents: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let path = self.file(name, contents);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        path
    }

    /// `api-shield lists --json`.
    pub fn lists(&self) -> Vec<Value> {
        match self.daemon.json(&["lists", "--json"]) {
            Value::Array(items) => items,
            other => panic!("`lists` did not print an array: {other}"),
        }
    }

    /// The entry of `lists` named `name`, if any.
    pub fn list_info(&self, name: &str) -> Option<Value> {
        self.lists().into_iter().find(|l| l["name"] == name)
    }

    /// The names of the lists.
    pub fn list_names(&self) -> Vec<String> {
        self.lists()
            .iter()
            .filter_map(|l| l["name"].as_str().map(str::to_owned))
            .collect()
    }
}
