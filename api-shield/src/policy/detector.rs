//! Abuse detection per client prefix. A firing rule yields an [`Escalation`], which the daemon
//! turns into a kernel block of that prefix with origin `gateway`.
//!
//! Clients are counted per prefix, like the kernel's rate limiter: an IPv6 host usually owns a
//! whole /64 and can speak from any of its addresses, so counting per /128 would let it make
//! a fresh start with every new address. `v6_prefix` (64 by default) and `v4_prefix` (32) set
//! the lengths, and the block covers the same prefix.
//!
//! Rules ("N within T" are exact sliding windows):
//! - `auth_failures`: N invalid credentials within T;
//! - `too_many_requests`: N 429s within T;
//! - `not_found_paths`: N *distinct* paths answered 404 within T (reconnaissance);
//! - `over_quota`: rejections by one limit within that limit's window reaching `factor × q`.
//!
//! Memory per IP is bounded by the rules' counts (one timestamp per counted event, at most
//! [`MAX_RULE_COUNT`] each, one hash per distinct 404 path), and at most `max_tracked_ips` IPs are
//! tracked. When full, IPs whose windows have all expired are dropped (sweeps at most every
//! [`SWEEP_INTERVAL`] per shard); if none has, the least recently seen IP of the shard goes. Its
//! partial counts are lost, which can delay (never cause) a block. After a rule fires, that rule's
//! count for the IP starts again from zero, so one burst yields one escalation.
//!
//! [`MAX_RULE_COUNT`]: super::config::MAX_RULE_COUNT

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::Serialize;

use super::config::{CountRule, DetectorConfig, OverQuotaRule};

/// Least time between two idle sweeps of a full shard.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Which rule fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Invalid credentials, N within T.
    AuthFailures,
    /// 429s, N within T.
    TooManyRequests,
    /// Distinct 404 paths, N within T.
    NotFoundPaths,
    /// Rejections far beyond a limit.
    OverQuota,
}

impl Rule {
    /// Every rule, for metrics that report each one from the start.
    pub const ALL: [Rule; 4] = [
        Self::AuthFailures,
        Self::TooManyRequests,
        Self::NotFoundPaths,
        Self::OverQuota,
    ];

    /// Config spelling, also the audit reason's prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailures => "auth_failures",
            Self::TooManyRequests => "too_many_requests",
            Self::NotFoundPaths => "not_found_paths",
            Self::OverQuota => "over_quota",
        }
    }
}

/// A request to block `net` in the kernel for `ttl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Escalation {
    /// The client whose request fired the rule.
    pub ip: IpAddr,
    /// What to block: the prefix the detector counted `ip` under.
    pub net: IpNet,
    /// The rule that fired.
    pub rule: Rule,
    /// How long to block.
    pub ttl: Duration,
    /// Human-readable reason for `api-shield list` and the audit log.
    pub reason: String,
    /// The detector runs in dry-run: log, do not block.
    pub dry_run: bool,
}

/// Timestamps of the last counted events, oldest first; never more than the rule's count.
#[derive(Default)]
struct Window(VecDeque<Instant>);

impl Window {
    /// Counts an event; true when `count` events fall within `within`.
    fn hit(&mut self, now: Instant, rule: &CountRule) -> bool {
        while self
            .0
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= rule.within)
        {
            self.0.pop_front();
        }
        self.0.push_back(now);
        if self.0.len() >= rule.count as usize {
            self.0.clear();
            return true;
        }
        false
    }
}

#[derive(Default)]
struct IpState {
    last_seen: Option<Instant>,
    auth: Window,
    too_many: Window,
    /// (hash of path, last seen), at most `count` entries.
    paths: Vec<(u64, Instant)>,
    /// Per rejecting limit is too much state; the current over-quota window is per IP:
    /// (start, window, rejections).
    over: Option<(Instant, Duration, u64)>,
}

/// The detector.
pub struct Detector {
    cfg: DetectorConfig,
    shards: Box<[Mutex<HashMap<IpNet, IpState>>]>,
    next_sweep: Box<[Mutex<Option<Instant>>]>,
    cap_per_shard: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("tracked_ips", &self.tracked_ips())
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector with validated settings.
    pub fn new(cfg: DetectorConfig) -> Self {
        let shards = if cfg.max_tracked_ips >= 1024 { 16 } else { 1 };
        Self {
            cap_per_shard: cfg.max_tracked_ips.max(1).div_ceil(shards),
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            next_sweep: (0..shards).map(|_| Mutex::new(None)).collect(),
            hasher: RandomState::new(),
            cfg,
        }
    }

    /// The settings.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// IPs tracked now.
    pub fn tracked_ips(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Longest window of any rule: an IP silent for this long carries no state worth keeping.
    fn horizon(&self) -> Duration {
        self.cfg
            .auth_failures
            .within
            .max(self.cfg.too_many_requests.within)
            .max(self.cfg.not_found_paths.within)
    }

    /// The prefix `ip` is counted under: IPv4-mapped IPv6 as the IPv4 address it carries (the
    /// kernel sees those sources as IPv4), then truncated to the configured length.
    pub fn key(&self, ip: IpAddr) -> IpNet {
        let (ip, len) = match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => (v4, self.cfg.v4_prefix),
            v6 @ IpAddr::V6(_) => (v6, self.cfg.v6_prefix),
        };
        // A length beyond the family's is refused by validation; clamp rather than panic.
        let max = if ip.is_ipv4() { 32 } else { 128 };
        IpNet::new(ip, len.min(max))
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(ip))
    }

    fn with_ip<R>(
        &self,
        ip: IpAddr,
        now: Instant,
        f: impl FnOnce(&mut IpState) -> Option<R>,
    ) -> Option<R> {
        let ip = self.key(ip);
        let i = (self.hasher.hash_one(ip) as usize) % self.shards.len();
        let mut map = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&ip) && map.len() >= self.cap_per_shard {
            self.make_room(i, &mut map, now);
        }
        let state = map.entry(ip).or_default();
        state.last_seen = Some(now);
        f(state)
    }

    fn make_room(&self, i: usize, map: &mut HashMap<IpNet, IpState>, now: Instant) {
        let mut next = self.next_sweep[i].lock().unwrap_or_else(|e| e.into_inner());
        if next.is_none_or(|t| now >= t) {
            *next = Some(now + SWEEP_INTERVAL);
            let horizon = self.horizon();
            map.retain(|_, s| {
                s.last_seen
                    .is_some_and(|t| now.saturating_duration_since(t) < horizon)
                    || s.over
                        .is_some_and(|(start, w, _)| now.saturating_duration_since(start) < w)
            });
        }
        if map.len() >= self.cap_per_shard
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(ip, _)| *ip)
        {
            map.remove(&oldest);
        }
    }

    fn escalate(&self, ip: IpAddr, rule: Rule, ttl: Duration, reason: String) -> Escalation {
        Escalation {
            ip: ip.to_canonical(),
            net: self.key(ip),
            rule,
            ttl,
            reason,
            dry_run: self.cfg.dry_run,
        }
    }

    fn count(&self, ip: IpAddr, now: Instant, rule: Rule) -> Option<Escalation> {
        let cfg = match rule {
            Rule::AuthFailures => &self.cfg.auth_failures,
            Rule::TooManyRequests => &self.cfg.too_many_requests,
            _ => return None,
        };
        if !self.cfg.enabled || !cfg.enabled {
            return None;
        }
        let fired = self.with_ip(ip, now, |s| {
            let w = match rule {
                Rule::AuthFailures => &mut s.auth,
                _ => &mut s.too_many,
            };
            w.hit(now, cfg).then_some(())
        });
        fired.map(|()| {
            let what = match rule {
                Rule::AuthFailures => "authentication failures",
                _ => "rate-limited requests (429)",
            };
            let reason = format!(
                "{}: {} {what} within {}",
                rule.as_str(),
                cfg.count,
                humantime::format_duration(cfg.within)
            );
            self.escalate(ip, rule, cfg.ttl, reason)
        })
    }

    /// An invalid credential from `ip`.
    pub fn record_auth_failure(&self, ip: IpAddr, now: Instant) -> Option<Escalation> {
        self.count(ip, now, Rule::AuthFailures)
    }

    /// A 429 to `ip`.
    pub fn record_too_many(&self, ip: IpAddr, now: Instant) -> Option<Escalation> {
        self.count(ip, now, Rule::TooManyRequests)
    }

    /// A 404 for `path` to `ip`; counts distinct paths.
    pub fn record_not_found(&self, ip: IpAddr, path: &str, now: Instant) -> Option<Escalation> {
        let rule = &self.cfg.not_found_paths;
        if !self.cfg.enabled || !rule.enabled {
            return None;
        }
        let h = self.hasher.hash_one(path);
        let fired = self.with_ip(ip, now, |s| {
            s.paths
                .retain(|(_, t)| now.saturating_duration_since(*t) < rule.within);
            match s.paths.iter_mut().find(|(p, _)| *p == h) {
                Some(entry) => entry.1 = now,
                None => s.paths.push((h, now)),
            }
            if s.paths.len() >= rule.count as usize {
                s.paths.clear();
                return Some(());
            }
            None
        });
        fired.map(|()| {
            let reason = format!(
                "not_found_paths: {} distinct paths answered 404 within {}",
                rule.count,
                humantime::format_duration(rule.within)
            );
            self.escalate(ip, Rule::NotFoundPaths, rule.ttl, reason)
        })
    }

    /// A rejection by a limit of `quota` requests per `window` to `ip`.
    pub fn record_over_quota(
        &self,
        ip: IpAddr,
        quota: u64,
        window: Duration,
        now: Instant,
    ) -> Option<Escalation> {
        let rule: &OverQuotaRule = &self.cfg.over_quota;
        if !self.cfg.enabled || !rule.enabled {
            return None;
        }
        let threshold = ((quota as f64) * rule.factor).ceil().max(1.0) as u64;
        let fired = self.with_ip(ip, now, |s| {
            let (start, w, n) = match s.over {
                Some((start, w, n)) if now.saturating_duration_since(start) < w => (start, w, n),
                _ => (now, window.max(Duration::from_secs(1)), 0),
            };
            let n = n + 1;
            if n >= threshold {
                s.over = None;
                Some(())
            } else {
                s.over = Some((start, w, n));
                None
            }
        });
        fired.map(|()| {
            let reason = format!(
                "over_quota: {threshold} requests rejected beyond a limit of {quota} per {}",
                humantime::format_duration(window)
            );
            self.escalate(ip, Rule::OverQuota, rule.ttl, reason)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DetectorConfig {
        DetectorConfig {
            auth_failures: CountRule::new(3, 10, 600),
            too_many_requests: CountRule::new(4, 10, 60),
            not_found_paths: CountRule::new(3, 10, 3600),
            ..DetectorConfig::default()
        }
    }

    const IP: &str = "198.51.100.7";

    #[test]
    fn fires_exactly_at_n_within_t() {
        let d = Detector::new(cfg());
        let ip = IP.parse().unwrap();
        let t = Instant::now();
        assert!(d.record_auth_failure(ip, t).is_none());
        assert!(
            d.record_auth_failure(ip, t + Duration::from_secs(5))
                .is_none()
        );
        let e = d
            .record_auth_failure(ip, t + Duration::from_millis(9_999))
            .expect("third failure within 10 s fires");
        assert_eq!(e.rule, Rule::AuthFailures);
        assert_eq!(e.ttl, Duration::from_secs(600));
        assert_eq!(e.ip, ip);
        assert_eq!(
            e.reason,
            "auth_failures: 3 authentication failures within 10s"
        );
        // Counting starts over after firing.
        assert!(
            d.record_auth_failure(ip, t + Duration::from_secs(11))
                .is_none()
        );
    }

    #[test]
    fn events_older_than_t_expire() {
        let d = Detector::new(cfg());
        let ip = IP.parse().unwrap();
        let t = Instant::now();
        assert!(d.record_auth_failure(ip, t).is_none());
        assert!(
            d.record_auth_failure(ip, t + Duration::from_secs(1))
                .is_none()
        );
        // The first is exactly 10 s old: out of the window, so only two count.
        assert!(
            d.record_auth_failure(ip, t + Duration::from_secs(10))
                .is_none()
        );
        assert!(
            d.record_auth_failure(ip, t + Duration::from_secs(10))
                .is_some()
        );
        // Another IP is separate.
        assert!(
            d.record_auth_failure("198.51.100.8".parse().unwrap(), t)
                .is_none()
        );
    }

    #[test]
    fn too_many_requests_rule() {
        let d = Detector::new(cfg());
        let ip = IP.parse().unwrap();
        let t = Instant::now();
        for i in 0..3 {
            assert!(d.record_too_many(ip, t + Duration::from_secs(i)).is_none());
        }
        assert_eq!(
            d.record_too_many(ip, t + Duration::from_secs(3))
                .unwrap()
                .rule,
            Rule::TooManyRequests
        );
    }

    #[test]
    fn distinct_404_paths_fire_and_repeats_do_not_count() {
        let d = Detector::new(cfg());
        let ip = IP.parse().unwrap();
        let t = Instant::now();
        for _ in 0..10 {
            assert!(d.record_not_found(ip, "/favicon.ico", t).is_none());
        }
        assert!(d.record_not_found(ip, "/.env", t).is_none());
        // "/.env" again 9 s later refreshes it; "/favicon.ico" (from t) expires at t+10.
        assert!(
            d.record_not_found(ip, "/.env", t + Duration::from_secs(9))
                .is_none()
        );
        assert!(
            d.record_not_found(ip, "/wp-admin", t + Duration::from_secs(10))
                .is_none()
        );
        let e = d
            .record_not_found(ip, "/.git/config", t + Duration::from_secs(11))
            .unwrap();
        assert_eq!(e.rule, Rule::NotFoundPaths);
    }

    #[test]
    fn over_quota_fires_at_factor_times_q_within_the_window() {
        let mut c = cfg();
        c.over_quota.factor = 2.0;
        let d = Detector::new(c);
        let ip = IP.parse().unwrap();
        let t = Instant::now();
        let w = Duration::from_secs(60);
        for i in 0..9 {
            assert!(
                d.record_over_quota(ip, 5, w, t + Duration::from_secs(i))
                    .is_none()
            );
        }
        let e = d
            .record_over_quota(ip, 5, w, t + Duration::from_secs(9))
            .unwrap();
        assert_eq!(e.rule, Rule::OverQuota);
        // A new window starts over.
        for i in 0..5 {
            assert!(
                d.record_over_quota(ip, 5, w, t + Duration::from_secs(100 + i))
                    .is_none()
            );
        }
        assert!(
            d.record_over_quota(ip, 5, w, t + Duration::from_secs(200))
                .is_none()
        );
    }

    #[test]
    fn disabled_and_dry_run() {
        let mut c = cfg();
        c.auth_failures.enabled = false;
        c.dry_run = true;
        let d = Detector::new(c);
        let ip = IP.parse().unwrap();
        let t = Instant::now();
        for _ in 0..10 {
            assert!(d.record_auth_failure(ip, t).is_none());
        }
        let e = (0..4).find_map(|_| d.record_too_many(ip, t)).unwrap();
        assert!(e.dry_run);
    }

    #[test]
    fn ipv6_clients_are_counted_and_blocked_per_64() {
        let mut c = cfg();
        c.auth_failures = CountRule::new(6, 10, 600);
        let d = Detector::new(c);
        let t = Instant::now();
        // Six addresses of one /64, one failure each: one client as far as the rule goes.
        let fired: Vec<Escalation> = (1..=6u16)
            .filter_map(|host| {
                let ip = IpAddr::from([0x2001, 0xdb8, 0x5, 0x6, 0xa, 0, 0, host]);
                d.record_auth_failure(ip, t)
            })
            .collect();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].net, "2001:db8:5:6::/64".parse::<IpNet>().unwrap());
        assert_eq!(d.tracked_ips(), 1);
        // Another /64 is another client.
        assert!(
            d.record_auth_failure("2001:db8:5:7::1".parse().unwrap(), t)
                .is_none()
        );
        assert_eq!(d.tracked_ips(), 2);
    }

    #[test]
    fn ipv4_clients_are_counted_per_32_unless_configured() {
        let t = Instant::now();
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "198.51.100.8".parse().unwrap();
        let d = Detector::new(cfg());
        for ip in [a, b, a, b] {
            assert!(d.record_auth_failure(ip, t).is_none());
        }
        let e = d.record_auth_failure(a, t).expect("a's third failure");
        assert_eq!(e.net, "198.51.100.7/32".parse::<IpNet>().unwrap());

        let mut c = cfg();
        c.v4_prefix = 24;
        c.v6_prefix = 48;
        let d = Detector::new(c);
        assert!(d.record_auth_failure(a, t).is_none());
        assert!(d.record_auth_failure(b, t).is_none());
        let e = d
            .record_auth_failure(a, t)
            .expect("a third failure in the /24");
        assert_eq!(e.net, "198.51.100.0/24".parse::<IpNet>().unwrap());
        assert_eq!(e.ip, a, "the escalation still names the client");
        assert_eq!(
            d.key("2001:db8:1:2:3::4".parse().unwrap()),
            "2001:db8:1::/48".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn ipv4_mapped_clients_are_their_ipv4_address() {
        let d = Detector::new(cfg());
        let t = Instant::now();
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        let plain: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(d.record_auth_failure(mapped, t).is_none());
        assert!(d.record_auth_failure(plain, t).is_none());
        let e = d.record_auth_failure(mapped, t).expect("third failure");
        assert_eq!(e.net, "198.51.100.7/32".parse::<IpNet>().unwrap());
    }

    #[test]
    fn ipv4_mapped_and_plain_forms_are_one_client() {
        let d = Detector::new(cfg());
        let t = Instant::now();
        let plain: IpAddr = "198.18.0.5".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.18.0.5".parse().unwrap();
        // The count carries across the two spellings of one client...
        assert!(d.record_auth_failure(mapped, t).is_none());
        assert!(d.record_auth_failure(plain, t).is_none());
        let e = d
            .record_auth_failure(mapped, t)
            .expect("the third failure fires");
        // ... and the block names the IPv4 address the kernel matches.
        assert_eq!(e.ip, plain);
        assert_eq!(d.tracked_ips(), 1);
        // Distinct 404 paths, alternating spellings: three of them fire.
        assert!(d.record_not_found(plain, "/a", t).is_none());
        assert!(d.record_not_found(mapped, "/b", t).is_none());
        let e = d
            .record_not_found(mapped, "/c", t)
            .expect("the third distinct path fires");
        assert_eq!(e.ip, plain);
    }

    #[test]
    fn memory_is_bounded_and_idle_ips_go_first() {
        let mut c = cfg();
        c.max_tracked_ips = 8;
        let d = Detector::new(c);
        let t = Instant::now();
        let attacker: IpAddr = IP.parse().unwrap();
        assert!(d.record_auth_failure(attacker, t).is_none());
        assert!(d.record_auth_failure(attacker, t).is_none());
        for i in 0..100u8 {
            let ip = IpAddr::from([203, 0, 113, i]);
            let _ = d.record_auth_failure(ip, t + Duration::from_millis(u64::from(i)));
            assert!(d.tracked_ips() <= 8);
        }
        // Old, idle entries were dropped; a later burst from a new IP is still detected.
        let late = t + Duration::from_secs(30);
        let ip = IpAddr::from([192, 0, 2, 1]);
        assert!(d.record_auth_failure(ip, late).is_none());
        assert!(d.record_auth_failure(ip, late).is_none());
        assert!(d.record_auth_failure(ip, late).is_some());
    }
}
