//! The failure budget for password checks: each source (an IPv4 address, an IPv6 prefix of
//! `limiter.ipv6_prefix` bits) may fail `failures` password checks per `per`; past that its
//! Basic credentials are refused with 429 **before** any hash is computed, until the budget
//! refills. A correct password costs nothing from the budget, and a client that logged in
//! recently is served from the success cache without consulting it.
//!
//! The budget is a token bucket (GCRA: one theoretical arrival time per source), so memory per
//! source is one instant. At most `max_tracked_sources` sources are held; a source whose bucket
//! has refilled completely is evicted first (dropping it changes nothing), swept at most every
//! [`SWEEP_INTERVAL`]. When the table is full of sources that still owe, a new source is not
//! tracked (counted in [`PasswordBudget::untracked`]): evicting one of those would hand an
//! active guesser a fresh budget, and the hashing pool still bounds what an untracked source
//! can cost.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::config::PasswordBudgetConfig;
use super::quota::ip_key;

/// Least time between two sweeps of a full table.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Table {
    /// Theoretical arrival time of each source's next failure.
    tat: HashMap<String, Instant>,
    next_sweep: Option<Instant>,
}

/// Failed password checks per source.
pub struct PasswordBudget {
    cfg: PasswordBudgetConfig,
    v6_prefix: u8,
    table: Mutex<Table>,
    untracked: AtomicU64,
}

impl std::fmt::Debug for PasswordBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordBudget")
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}

impl PasswordBudget {
    /// A budget with validated settings; IPv6 sources grouped by `v6_prefix` bits.
    pub fn new(cfg: PasswordBudgetConfig, v6_prefix: u8) -> Self {
        Self {
            cfg,
            v6_prefix,
            table: Mutex::default(),
            untracked: AtomicU64::new(0),
        }
    }

    /// The settings and prefix this budget was built with (a reload keeps it if unchanged).
    pub fn settings(&self) -> (&PasswordBudgetConfig, u8) {
        (&self.cfg, self.v6_prefix)
    }

    fn enabled(&self) -> bool {
        self.cfg.failures > 0
    }

    /// Time between two failures that the budget refills.
    fn interval(&self) -> Duration {
        self.cfg.per / self.cfg.failures.max(1)
    }

    /// `Some(wait)` when `ip`'s source has no failure left: refuse without hashing, and say
    /// when one more attempt will be allowed.
    pub fn spent(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let tat = *table.tat.get(&ip_key(ip, self.v6_prefix))?;
        let backlog = tat.saturating_duration_since(now);
        let after_one_more = backlog + self.interval();
        (after_one_more > self.cfg.per).then(|| after_one_more - self.cfg.per)
    }

    /// One failed password check from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let key = ip_key(ip, self.v6_prefix);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.tat.contains_key(&key) && table.tat.len() >= self.cfg.max_tracked_sources {
            table.sweep(now);
            if table.tat.len() >= self.cfg.max_tracked_sources {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let tat = table.tat.entry(key).or_insert(now);
        // Concurrent checks admitted before the first failure landed can overshoot; the debt
        // is capped at one window so the source recovers within `per` of its last failure.
        *tat = ((*tat).max(now) + self.interval()).min(now + self.cfg.per + self.interval());
    }

    /// Sources held now.
    pub fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tat
            .len()
    }

    /// Failures not recorded because the table was full of sources that still owe.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }
}

impl Table {
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        // A bucket whose arrival time has passed is full again: forgetting it changes nothing.
        self.tat.retain(|_, tat| *tat > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(failures: u32, per_secs: u64, max: usize) -> PasswordBudget {
        PasswordBudget::new(
            PasswordBudgetConfig {
                failures,
                per: Duration::from_secs(per_secs),
                max_tracked_sources: max,
            },
            64,
        )
    }

    #[test]
    fn a_source_is_refused_after_its_failures_and_recovers_at_the_refill_rate() {
        // 3 failures per 30 s: one back every 10 s.
        let b = budget(3, 30, 16);
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        let t = Instant::now();
        for i in 0..3 {
            assert_eq!(b.spent(ip, t), None, "failure {i} still allowed");
            b.record_failure(ip, t);
        }
        assert_eq!(b.spent(ip, t), Some(Duration::from_secs(10)));
        assert_eq!(
            b.spent(ip, t + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(b.spent(ip, t + Duration::from_secs(10)), None);
        // Another source is untouched.
        assert_eq!(b.spent("198.18.0.10".parse().unwrap(), t), None);
    }

    #[test]
    fn ipv6_sources_share_a_prefix_and_mapped_ipv4_is_ipv4() {
        let b = budget(1, 60, 16);
        let t = Instant::now();
        b.record_failure("2001:db8:1:2::1".parse().unwrap(), t);
        assert!(
            b.spent("2001:db8:1:2:ffff::9".parse().unwrap(), t)
                .is_some()
        );
        assert!(b.spent("2001:db8:1:3::1".parse().unwrap(), t).is_none());
        b.record_failure("::ffff:198.18.0.7".parse().unwrap(), t);
        assert!(b.spent("198.18.0.7".parse().unwrap(), t).is_some());
    }

    #[test]
    fn a_full_table_never_forgets_a_source_that_owes() {
        let b = budget(1, 60, 2);
        let t = Instant::now();
        let owing: [IpAddr; 2] = ["198.18.1.1".parse().unwrap(), "198.18.1.2".parse().unwrap()];
        for ip in owing {
            b.record_failure(ip, t);
        }
        for i in 0..50u8 {
            b.record_failure(IpAddr::from([198, 18, 2, i]), t + Duration::from_secs(1));
        }
        assert_eq!(b.tracked(), 2);
        assert_eq!(b.untracked(), 50);
        for ip in owing {
            assert!(b.spent(ip, t + Duration::from_secs(1)).is_some());
        }
        // Once they have refilled, their room goes to new sources.
        let later = t + Duration::from_secs(61);
        let newcomer = IpAddr::from([198, 18, 3, 1]);
        b.record_failure(newcomer, later);
        assert!(b.spent(newcomer, later).is_some());
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let b = budget(0, 60, 2);
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        let t = Instant::now();
        for _ in 0..100 {
            b.record_failure(ip, t);
        }
        assert_eq!(b.spent(ip, t), None);
        assert_eq!(b.tracked(), 0);
    }
}
