//! The gateway's escalations against the lockout guard and per-prefix detection, end to end:
//! the real daemon attached in a namespace lab, its check endpoint (the `auth_request` dialect)
//! asked by the lab's good client acting as a trusted proxy, and the outcome read back from
//! the kernel (real datagrams), `api-shield list`, the audit log and `/metrics`.
//!
//! - A client behind the proxy naming the proxy in `X-Real-IP`, or sending nothing that names
//!   another hop, never gets the proxy blocked: nothing is decided about a proxy's address.
//! - A /64 escalation that would cover a trusted proxy is refused, counted `refused` and
//!   audited.
//! - Six addresses of one /64 guessing keys are one client: one /64 block in the kernel.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tests::daemon::KERNEL_QUIET;
use tests::lab_env::Env;
use tests::metrics::scrape;
use tests::netns::{BAD_V6, GOOD_V4, GOOD_V6, SERVER_V4, in_netns};

const CHECK_PORT: u16 = 9382;
const METRICS: &str = "127.0.0.1:9381";
const PROBES: u64 = 50;
/// Invalid keys within the window that fire the auth-failure rule.
const FAILURES: u16 = 6;
/// Longest an escalation may take to show.
const WAIT: Duration = Duration::from_secs(10);

/// Every route needs an API key; six bad keys within 30 s escalate (per /64 for IPv6).
const POLICY: &str = r#"
realm = "e2e"
unmatched = "deny"

[[api_keys]]
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
identity = "nobody-has-this-key"

[[routes]]
name = "api"
path_prefix = "/"
auth = ["api_key"]
api_key_header = "x-api-key"

[detector]
auth_failures = { count = 6, within = "30s", ttl = "60s" }
"#;

/// A lab whose good client is a trusted proxy (both its addresses) of the daemon's check
/// endpoint.
fn start() -> Env {
    Env::start_with(|dir| {
        let policy = dir.join("policy.toml");
        std::fs::write(&policy, POLICY).expect("write the policy");
        format!(
            "{KERNEL_QUIET}[metrics]\nlisten = \"{METRICS}\"\n\
             [gateway]\ncheck_listen = \"{SERVER_V4}:{CHECK_PORT}\"\n\
             trusted_proxies = [\"{GOOD_V4}/32\", \"{GOOD_V6}/128\"]\n\
             policy_file = \"{}\"\n",
            policy.display()
        )
    })
    .with_probes(PROBES)
}

/// What only these tests ask of the shared lab.
trait GuardEnv {
    /// One check request from the proxy for a client it names in `X-Real-IP` (if any),
    /// presenting a wrong key. Returns the status.
    fn check(&self, real_ip: Option<&str>, attempt: u16) -> Result<u16, std::io::Error>;

    /// Bad keys for `real_ip`, each answered 401.
    fn fail(&self, real_ip: Option<&str>, times: u16);

    fn blocked(&self) -> Vec<String>;

    fn escalations(&self, outcome: &str) -> u64;

    fn audit(&self) -> String;
}

impl GuardEnv for Env {
    fn check(&self, real_ip: Option<&str>, attempt: u16) -> Result<u16, std::io::Error> {
        let mut request = format!(
            "GET /check HTTP/1.1\r\nHost: api.test\r\nX-Original-URI: /v1/items\r\n\
             X-Original-Method: GET\r\nX-Api-Key: wrong-key-{attempt}\r\nConnection: close\r\n"
        );
        if let Some(ip) = real_ip {
            request.push_str(&format!("X-Real-IP: {ip}\r\n"));
        }
        request.push_str("\r\n");
        let server = SocketAddr::new(IpAddr::V4(SERVER_V4), CHECK_PORT);
        in_netns(&self.lab.good.netns, move || {
            let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0))
        })
        .join()
        .expect("client thread")
    }

    fn fail(&self, real_ip: Option<&str>, times: u16) {
        for i in 0..times {
            let status = self
                .check(real_ip, i)
                .unwrap_or_else(|e| panic!("the proxy cannot reach the check endpoint: {e}"));
            assert_eq!(status, 401, "{real_ip:?}, attempt {i}");
        }
    }

    fn blocked(&self) -> Vec<String> {
        self.daemon
            .list(Some("blocked"))
            .iter()
            .map(|e| format!("{} {}", e["net"], e["origin"]))
            .collect()
    }

    fn escalations(&self, outcome: &str) -> u64 {
        scrape(&self.daemon.netns, METRICS).count(
            "api_shield_gateway_escalations_total",
            &[("rule", "auth_failures"), ("outcome", outcome)],
        )
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.daemon.dir.join("audit.jsonl")).unwrap_or_default()
    }
}

fn wait_until(what: &str, env: &Env, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}\n{}",
            env.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn escalations_never_block_a_trusted_proxy() {
    let env = start();
    let proxy_v4 = GOOD_V4.to_string();
    // A client behind the proxy names the proxy itself, then sends nothing naming anyone: in
    // both cases no untrusted hop exists, and nothing is counted against an address.
    env.fail(Some(&proxy_v4), 2 * FAILURES);
    env.fail(None, 2 * FAILURES);
    // A client in the proxy's own /64: the /64 escalation would cover the proxy, so the guard
    // refuses it, and says so in the metric and the audit log.
    let neighbour = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 0x99).to_string();
    env.fail(Some(&neighbour), FAILURES);
    wait_until("the refused escalation to be counted", &env, || {
        env.escalations("refused") == 1
    });
    assert_eq!(env.escalations("blocked"), 0);
    assert!(env.blocked().is_empty(), "{:?}", env.blocked());
    let audit = env.audit();
    assert!(
        audit.lines().any(|l| l.contains("gateway_escalate")
            && l.contains("2001:db8:1:2::/64")
            && l.contains("trusted proxy")),
        "the refusal must be audited naming the proxy: {audit}"
    );
    // The proxy still reaches the server, over either family.
    assert_eq!(
        env.check(Some(&proxy_v4), 0).expect("the proxy connects"),
        401
    );
    assert_eq!(env.probe(&env.lab.good, false), PROBES);
    assert_eq!(env.probe(&env.lab.good, true), PROBES);
}

#[test]
fn auth_failures_from_six_addresses_of_one_64_block_the_64_in_the_kernel() {
    let env = start();
    let bad_64 = u128::from(BAD_V6) & !u128::from(u64::MAX);
    // Six addresses of the bad client's /64, one bad key each (none of them its own address).
    for host in 1..=FAILURES {
        let ip = Ipv6Addr::from(bad_64 | 0xa0 | u128::from(host)).to_string();
        env.fail(Some(&ip), 1);
    }
    wait_until("the /64 block", &env, || !env.blocked().is_empty());
    assert_eq!(
        env.blocked(),
        ["\"2001:db8:1:3::/64\" \"gateway\""],
        "exactly one block, of the /64"
    );
    assert_eq!(env.escalations("blocked"), 1);
    // Enforced by the kernel for every address of the /64, the client's own included.
    assert_eq!(env.probe(&env.lab.bad, true), 0, "the /64 is not dropped");
    assert_eq!(
        env.probe(&env.lab.bad, false),
        PROBES,
        "IPv4 is another client"
    );
    assert_eq!(env.probe(&env.lab.good, true), PROBES);
}
