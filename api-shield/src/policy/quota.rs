//! Exact, memory-bounded limits: token buckets (GCRA) and calendar-window quotas.
//!
//! **Exact on one host.** All limits a request is subject to are checked and committed under the
//! locks of every shard involved (taken in index order, so no deadlock): a request is allowed only
//! if every limit allows it, and only then does it consume from each. A rejected request consumes
//! nothing.
//!
//! **Bounded memory.** At most `max_tracked_keys` (limit, key) slots are held. A slot is evicted
//! only when dropping it changes nothing: a bucket whose theoretical arrival time has passed (it
//! has refilled completely, i.e. it was idle longer than its refill time) or a quota counter whose
//! calendar window has ended. Evicting therefore never hands anyone a fresher bucket than waiting
//! would have. When the table is full and nothing is evictable, new keys either share one
//! overflow slot per limit ([`WhenFull::Overflow`], the default: a flood of new keys gets one key's
//! allowance in total) or are refused with 429 ([`WhenFull::Deny`]). Tracked keys are unaffected.
//! A full table is swept at most every [`SWEEP_INTERVAL`] per shard, so a flood of new keys cannot
//! make every request scan the table.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::config::WhenFull;
use super::time::{CalendarWindow, Now};

mod saved;
pub use saved::{FORMAT_VERSION, RestoreReport, SavedLimits, SavedSlot, span};

/// Least time between two sweeps of a full shard.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Between a limit's id and the key in a slot's name (a control character: in neither).
const KEY_SEPARATOR: char = '\u{1f}';

/// What a limit counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// Token bucket as GCRA: one token every `interval`, at most `burst` tokens.
    Gcra {
        /// Emission interval (`per / rate`).
        interval: Duration,
        /// Bucket size.
        burst: u32,
    },
    /// `limit` requests per calendar window (UTC).
    Window {
        /// Requests per window.
        limit: u64,
        /// The window.
        window: CalendarWindow,
    },
}

/// One configured limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    /// Stable id (`plan/<plan>/<name>` or `route/<route>/<name>`): keys survive a reload.
    pub id: Arc<str>,
    /// Policy name in the `RateLimit*` headers.
    pub name: Arc<str>,
    /// What it counts.
    pub kind: LimitKind,
}

impl LimitSpec {
    /// A token bucket of `rate` per `per` with `burst`.
    pub fn gcra(id: &str, name: &str, rate: u32, per: Duration, burst: u32) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            kind: LimitKind::Gcra {
                interval: per / rate.max(1),
                burst: burst.max(1),
            },
        }
    }

    /// A calendar quota.
    pub fn window(id: &str, name: &str, limit: u64, window: CalendarWindow) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            kind: LimitKind::Window { limit, window },
        }
    }

    /// `q` of `RateLimit-Policy`: the bucket size, or the window's limit.
    pub fn quota(&self) -> u64 {
        match self.kind {
            LimitKind::Gcra { burst, .. } => u64::from(burst),
            LimitKind::Window { limit, .. } => limit,
        }
    }

    /// `w` of `RateLimit-Policy` in seconds: the time an empty bucket takes to refill (at
    /// least 1), or the window's nominal length.
    pub fn window_secs(&self) -> u64 {
        match self.kind {
            LimitKind::Gcra { interval, burst } => ceil_secs(interval * burst).max(1),
            LimitKind::Window { window, .. } => window.nominal_secs(),
        }
    }
}

/// The state of one limit for one request, after the check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LimitStatus {
    /// Policy name.
    pub name: Arc<str>,
    /// `q`.
    pub quota: u64,
    /// `w`, seconds.
    pub window_secs: u64,
    /// `r`: requests left after this one (0 when rejected).
    pub remaining: u64,
    /// `t`: seconds until the allowance is whole again (bucket full, or window end).
    pub reset_secs: u64,
    /// Whether this limit allows the request.
    pub allowed: bool,
    /// When rejected: how long until this limit would allow one request.
    pub retry_after: Duration,
    /// The key was not tracked (table full) and was counted in the overflow slot, or refused.
    pub untracked: bool,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Gcra { tat: Instant },
    Window { start: u64, end: u64, count: u64 },
}

impl Slot {
    /// Dropping the slot changes nothing: the bucket is full again, or the window is over.
    fn evictable(&self, now: Now) -> bool {
        match *self {
            Slot::Gcra { tat } => tat <= now.mono,
            Slot::Window { end, .. } => now.unix_secs() >= end,
        }
    }
}

/// Evaluates `spec` against `slot` (absent: a fresh key). Returns the status and, if allowed,
/// the slot to store.
fn evaluate(spec: &LimitSpec, slot: Option<&Slot>, now: Now) -> (LimitStatus, Option<Slot>) {
    let mut st = LimitStatus {
        name: spec.name.clone(),
        quota: spec.quota(),
        window_secs: spec.window_secs(),
        remaining: 0,
        reset_secs: 0,
        allowed: false,
        retry_after: Duration::ZERO,
        untracked: false,
    };
    match spec.kind {
        LimitKind::Gcra { interval, burst } => {
            let t = interval.as_nanos();
            let capacity = t * u128::from(burst);
            let tat = match slot {
                Some(Slot::Gcra { tat }) if *tat > now.mono => *tat,
                _ => now.mono,
            };
            let backlog = tat.duration_since(now.mono).as_nanos();
            let new_backlog = backlog + t;
            if new_backlog <= capacity {
                st.allowed = true;
                st.remaining = ((capacity - new_backlog) / t) as u64;
                st.reset_secs = ceil_secs(nanos(new_backlog));
                (
                    st,
                    Some(Slot::Gcra {
                        tat: now.mono + nanos(new_backlog),
                    }),
                )
            } else {
                st.remaining = (capacity.saturating_sub(backlog) / t) as u64;
                st.reset_secs = ceil_secs(nanos(backlog));
                st.retry_after = nanos(new_backlog - capacity);
                (st, None)
            }
        }
        LimitKind::Window { limit, window } => {
            let unix = now.unix_secs();
            let (start, end) = window.bounds(unix);
            let count = match slot {
                Some(Slot::Window {
                    start: s, count, ..
                }) if *s == start => *count,
                _ => 0,
            };
            st.reset_secs = end - unix;
            if count < limit {
                st.allowed = true;
                st.remaining = limit - count - 1;
                (
                    st,
                    Some(Slot::Window {
                        start,
                        end,
                        count: count + 1,
                    }),
                )
            } else {
                st.retry_after = Duration::from_secs(end - unix);
                (st, None)
            }
        }
    }
}

/// `(remaining, reset_secs)` of a limit without consuming from it.
fn peek(spec: &LimitSpec, slot: Option<&Slot>, now: Now) -> (u64, u64) {
    match spec.kind {
        LimitKind::Gcra { interval, burst } => {
            let t = interval.as_nanos();
            let backlog = match slot {
                Some(Slot::Gcra { tat }) if *tat > now.mono => {
                    tat.duration_since(now.mono).as_nanos()
                }
                _ => 0,
            };
            let capacity = t * u128::from(burst);
            (
                (capacity.saturating_sub(backlog) / t) as u64,
                ceil_secs(nanos(backlog)),
            )
        }
        LimitKind::Window { limit, window } => {
            let unix = now.unix_secs();
            let (start, end) = window.bounds(unix);
            let count = match slot {
                Some(Slot::Window {
                    start: s, count, ..
                }) if *s == start => *count,
                _ => 0,
            };
            (limit.saturating_sub(count), end - unix)
        }
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

#[derive(Default)]
struct Shard {
    slots: HashMap<String, Slot>,
    next_sweep: Option<Instant>,
    /// Slots written by requests, ever: tells the saver whether anything changed.
    changes: u64,
}

impl Shard {
    /// Sweeps evictable slots if allowed now; returns how many went.
    fn sweep(&mut self, now: Now) -> usize {
        if self.next_sweep.is_some_and(|t| now.mono < t) {
            return 0;
        }
        self.next_sweep = Some(now.mono + SWEEP_INTERVAL);
        let before = self.slots.len();
        self.slots.retain(|_, s| !s.evictable(now));
        before - self.slots.len()
    }
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Slots held now.
    pub tracked: usize,
    /// Slots evicted (all of them full buckets or ended windows).
    pub evicted: u64,
    /// Checks of untracked keys counted in an overflow slot.
    pub overflowed: u64,
    /// Checks of untracked keys refused (`when_full = "deny"`).
    pub refused: u64,
}

/// All limit state.
pub struct Limiter {
    shards: Box<[Mutex<Shard>]>,
    cap_per_shard: usize,
    when_full: WhenFull,
    overflow: Mutex<HashMap<Arc<str>, Slot>>,
    hasher: RandomState,
    evicted: AtomicU64,
    overflowed: AtomicU64,
    refused: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

enum Place {
    Tracked { shard: usize, key: String },
    Overflow,
    Refused,
}

/// The shards one check holds locked, in index order (`guards[i]` locks shard `order[i]`).
#[derive(Clone, Copy)]
struct Locked<'a> {
    order: &'a [usize],
}

impl Locked<'_> {
    /// Where shard `shard` is among the guards.
    fn index(self, shard: usize) -> usize {
        self.order.binary_search(&shard).unwrap_or(0)
    }

    /// The slot a place holds now, if any.
    fn slot<'s>(
        self,
        place: &Place,
        spec: &LimitSpec,
        guards: &'s [MutexGuard<'_, Shard>],
        overflow: Option<&'s HashMap<Arc<str>, Slot>>,
    ) -> Option<&'s Slot> {
        match place {
            Place::Tracked { shard, key } => guards[self.index(*shard)].slots.get(key),
            Place::Overflow => overflow.and_then(|m| m.get(&spec.id)),
            Place::Refused => None,
        }
    }
}

/// The status of a limit whose key found no room (`when_full = "deny"`).
fn refused(spec: &LimitSpec) -> LimitStatus {
    LimitStatus {
        name: spec.name.clone(),
        quota: spec.quota(),
        window_secs: spec.window_secs(),
        remaining: 0,
        reset_secs: ceil_secs(SWEEP_INTERVAL),
        allowed: false,
        retry_after: SWEEP_INTERVAL,
        untracked: true,
    }
}

impl Limiter {
    /// A limiter holding at most `max_keys` slots (16 shards from 1024 keys up, else one).
    pub fn new(max_keys: usize, when_full: WhenFull) -> Self {
        let shards = if max_keys >= 1024 { 16 } else { 1 };
        let max_keys = max_keys.max(1);
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            cap_per_shard: max_keys.div_ceil(shards),
            when_full,
            overflow: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
            evicted: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Counters.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            tracked: self
                .shards
                .iter()
                .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).slots.len())
                .sum(),
            evicted: self.evicted.load(Ordering::Relaxed),
            overflowed: self.overflowed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    fn shard_of(&self, full_key: &str) -> usize {
        (self.hasher.hash_one(full_key) as usize) % self.shards.len()
    }

    /// Checks every `(limit, key)` at once; commits all or nothing.
    pub fn check(&self, requests: &[(&LimitSpec, String)], now: Now) -> Vec<LimitStatus> {
        let keyed: Vec<(usize, String)> = requests
            .iter()
            .map(|(spec, key)| {
                let full = format!("{}{KEY_SEPARATOR}{key}", spec.id);
                (self.shard_of(&full), full)
            })
            .collect();
        let mut order: Vec<usize> = keyed.iter().map(|(s, _)| *s).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> = order
            .iter()
            .map(|&i| self.shards[i].lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let locked = Locked { order: &order };
        let places = self.place(keyed, locked, &mut guards, now);
        let mut overflow = places
            .iter()
            .any(|p| matches!(p, Place::Overflow))
            .then(|| self.overflow.lock().unwrap_or_else(|e| e.into_inner()));

        let mut out = Vec::with_capacity(requests.len());
        let mut commits = Vec::with_capacity(requests.len());
        for ((spec, _), place) in requests.iter().zip(&places) {
            let (mut status, next) = match place {
                Place::Refused => (refused(spec), None),
                _ => evaluate(
                    spec,
                    locked.slot(place, spec, &guards, overflow.as_deref()),
                    now,
                ),
            };
            if matches!(place, Place::Overflow) {
                status.untracked = true;
            }
            commits.push(next);
            out.push(status);
        }
        self.count_untracked(&places);
        if !out.iter().all(|s| s.allowed) {
            // Nothing is committed: report what the allowing limits hold now, unconsumed.
            for ((spec, _), (status, place)) in requests.iter().zip(out.iter_mut().zip(&places)) {
                if status.allowed {
                    let slot = locked.slot(place, spec, &guards, overflow.as_deref());
                    (status.remaining, status.reset_secs) = peek(spec, slot, now);
                }
            }
        } else {
            for ((spec, _), (place, next)) in requests.iter().zip(places.into_iter().zip(commits)) {
                let Some(next) = next else { continue };
                match place {
                    Place::Tracked { shard, key } => {
                        let shard = &mut guards[locked.index(shard)];
                        shard.slots.insert(key, next);
                        shard.changes = shard.changes.wrapping_add(1);
                    }
                    Place::Overflow => {
                        if let Some(map) = overflow.as_mut() {
                            map.insert(spec.id.clone(), next);
                        }
                    }
                    Place::Refused => {}
                }
            }
        }
        out
    }

    /// Where each key's slot lives; a new key reserves room in its shard, sweeping it when
    /// full, else goes to the overflow map or is refused, as `when_full` says.
    fn place(
        &self,
        keyed: Vec<(usize, String)>,
        locked: Locked<'_>,
        guards: &mut [MutexGuard<'_, Shard>],
        now: Now,
    ) -> Vec<Place> {
        let mut new_in_shard = vec![0usize; locked.order.len()];
        let mut places = Vec::with_capacity(keyed.len());
        for (shard, key) in keyed {
            let g = locked.index(shard);
            let sh = &mut guards[g];
            if sh.slots.contains_key(&key) || sh.slots.len() + new_in_shard[g] < self.cap_per_shard
            {
                new_in_shard[g] += usize::from(!sh.slots.contains_key(&key));
                places.push(Place::Tracked { shard, key });
                continue;
            }
            let freed = sh.sweep(now);
            self.evicted.fetch_add(freed as u64, Ordering::Relaxed);
            if sh.slots.len() + new_in_shard[g] < self.cap_per_shard {
                new_in_shard[g] += 1;
                places.push(Place::Tracked { shard, key });
            } else {
                places.push(match self.when_full {
                    WhenFull::Overflow => Place::Overflow,
                    WhenFull::Deny => Place::Refused,
                });
            }
        }
        places
    }

    fn count_untracked(&self, places: &[Place]) {
        for place in places {
            match place {
                Place::Overflow => {
                    self.overflowed.fetch_add(1, Ordering::Relaxed);
                }
                Place::Refused => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                }
                Place::Tracked { .. } => {}
            }
        }
    }
}

/// The client-IP part of a limit key: IPv4 as is, IPv6 truncated to `v6_prefix` bits.
pub fn ip_key(ip: IpAddr, v6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4.to_string();
            }
            let bits = u128::from(v6);
            let prefix = u32::from(v6_prefix.min(128));
            let masked = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - prefix))
            };
            format!("{}/{prefix}", std::net::Ipv6Addr::from(masked))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn t0() -> Now {
        Now {
            mono: Instant::now(),
            // 2025-03-10 10:00:00 UTC: a whole hour, so window arithmetic is readable.
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_741_600_800),
        }
    }

    fn one(l: &Limiter, spec: &LimitSpec, key: &str, now: Now) -> LimitStatus {
        l.check(&[(spec, key.to_owned())], now).remove(0)
    }

    #[test]
    fn gcra_burst_then_steady_rate_with_exact_header_values() {
        // 100 per minute, burst 100: q=100, w=60; one token every 600 ms.
        let spec = LimitSpec::gcra("p/default", "default", 100, Duration::from_secs(60), 100);
        assert_eq!((spec.quota(), spec.window_secs()), (100, 60));
        let l = Limiter::new(10, WhenFull::Deny);
        let now = t0();
        for i in 0..100u64 {
            let s = one(&l, &spec, "alice", now);
            assert!(s.allowed, "request {i}");
            assert_eq!(s.remaining, 99 - i);
            // Time until full again: (i + 1) × 0.6 s, rounded up.
            assert_eq!(s.reset_secs, ((i + 1) * 600).div_ceil(1000));
        }
        let s = one(&l, &spec, "alice", now);
        assert!(!s.allowed);
        assert_eq!(s.remaining, 0);
        assert_eq!(s.retry_after, Duration::from_millis(600));
        assert_eq!(s.reset_secs, 60);
        // 599 ms later: still no token; at 600 ms exactly one.
        assert!(!one(&l, &spec, "alice", now.after(Duration::from_millis(599))).allowed);
        let s = one(&l, &spec, "alice", now.after(Duration::from_millis(600)));
        assert!(s.allowed);
        assert_eq!(s.remaining, 0);
        assert!(!one(&l, &spec, "alice", now.after(Duration::from_millis(600))).allowed);
        // Another key is independent.
        assert_eq!(one(&l, &spec, "bob", now).remaining, 99);
    }

    #[test]
    fn window_quota_counts_to_the_limit_and_resets_at_the_boundary() {
        let spec = LimitSpec::window("p/hourly", "hourly", 3, CalendarWindow::Hour);
        assert_eq!((spec.quota(), spec.window_secs()), (3, 3600));
        let l = Limiter::new(10, WhenFull::Deny);
        let now = t0().after(Duration::from_secs(15 * 60)); // 10:15
        for r in [2, 1, 0] {
            let s = one(&l, &spec, "k", now);
            assert!(s.allowed);
            assert_eq!((s.remaining, s.reset_secs), (r, 45 * 60));
        }
        let s = one(&l, &spec, "k", now);
        assert!(!s.allowed);
        assert_eq!(s.retry_after, Duration::from_secs(45 * 60));
        // 10:59:59 still in the window; 11:00:00 a new one.
        assert!(!one(&l, &spec, "k", t0().after(Duration::from_secs(3599))).allowed);
        let s = one(&l, &spec, "k", t0().after(Duration::from_secs(3600)));
        assert!(s.allowed);
        assert_eq!((s.remaining, s.reset_secs), (2, 3600));
    }

    #[test]
    fn a_rejected_request_consumes_from_no_limit() {
        let burst = LimitSpec::gcra("r/b", "b", 10, Duration::from_secs(1), 10);
        let daily = LimitSpec::window("p/d", "d", 2, CalendarWindow::Day);
        let l = Limiter::new(10, WhenFull::Deny);
        let now = t0();
        let both = |now| l.check(&[(&burst, "k".to_owned()), (&daily, "k".to_owned())], now);
        assert!(both(now).iter().all(|s| s.allowed));
        assert!(both(now).iter().all(|s| s.allowed));
        let third = both(now);
        assert!(third[0].allowed && !third[1].allowed);
        // The bucket reports what it holds, unconsumed: 8 left, full again in 0.2 s (rounded up).
        assert_eq!((third[0].remaining, third[0].reset_secs), (8, 1));
        // The bucket still holds 8: the rejected request took nothing.
        assert_eq!(one(&l, &burst, "k", now).remaining, 7);
    }

    #[test]
    fn eviction_never_resets_an_abuser() {
        // Capacity 2; the abuser empties its bucket, then a flood of new keys arrives.
        let spec = LimitSpec::gcra("p/x", "x", 1, Duration::from_secs(10), 3);
        let l = Limiter::new(2, WhenFull::Deny);
        let now = t0();
        for _ in 0..3 {
            assert!(one(&l, &spec, "abuser", now).allowed);
        }
        assert!(!one(&l, &spec, "abuser", now).allowed);
        assert!(one(&l, &spec, "idle", now).allowed); // table now full
        // 11 s later "idle" has refilled (evictable); the abuser has 1 token back, not 3.
        let later = now.after(Duration::from_secs(11));
        for i in 0..20 {
            let _ = one(&l, &spec, &format!("new{i}"), later);
            let s = one(&l, &spec, "abuser", later);
            if i == 0 {
                assert!(s.allowed, "one token refilled");
            } else {
                assert!(!s.allowed, "flood {i} reset the abuser");
            }
        }
        assert!(l.stats().tracked <= 2);
        assert_eq!(l.stats().evicted, 1);
        assert!(l.stats().refused > 0);
    }

    #[test]
    fn overflow_keys_share_one_bucket_and_tracked_keys_are_untouched() {
        let spec = LimitSpec::gcra("p/x", "x", 1, Duration::from_secs(60), 2);
        let l = Limiter::new(1, WhenFull::Overflow);
        let now = t0();
        assert!(one(&l, &spec, "first", now).allowed);
        let a = one(&l, &spec, "new-a", now);
        assert!(a.allowed && a.untracked);
        assert!(one(&l, &spec, "new-b", now).allowed);
        assert!(
            !one(&l, &spec, "new-c", now).allowed,
            "overflow bucket is shared"
        );
        assert!(one(&l, &spec, "first", now).allowed);
        assert_eq!(l.stats().tracked, 1);
    }

    #[test]
    fn ended_windows_are_evictable_but_current_ones_are_not() {
        let spec = LimitSpec::window("p/h", "h", 1, CalendarWindow::Hour);
        let l = Limiter::new(1, WhenFull::Deny);
        let now = t0();
        assert!(one(&l, &spec, "a", now).allowed);
        let s = one(&l, &spec, "b", now.after(Duration::from_secs(60)));
        assert!(
            !s.allowed && s.untracked,
            "a's window is live: b is refused"
        );
        assert!(!one(&l, &spec, "a", now.after(Duration::from_secs(60))).allowed);
        assert!(one(&l, &spec, "b", now.after(Duration::from_secs(3600))).allowed);
    }

    #[test]
    fn monthly_quota_runs_to_the_calendar_month_end() {
        use crate::policy::time::days_from_civil;
        let spec = LimitSpec::window("p/m", "monthly", 2, CalendarWindow::Month);
        assert_eq!(spec.window_secs(), 30 * 86_400);
        let l = Limiter::new(10, WhenFull::Deny);
        // 2026-02-28 23:59:58 UTC: two seconds of February left.
        let feb_end = days_from_civil(2026, 3, 1) as u64 * 86_400;
        let at = |unix: u64| Now {
            mono: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(unix),
        };
        let s = one(&l, &spec, "k", at(feb_end - 2));
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (true, 1, 2));
        assert!(one(&l, &spec, "k", at(feb_end - 1)).allowed);
        let s = one(&l, &spec, "k", at(feb_end - 1));
        assert_eq!((s.allowed, s.retry_after), (false, Duration::from_secs(1)));
        let s = one(&l, &spec, "k", at(feb_end));
        assert_eq!(
            (s.allowed, s.remaining, s.reset_secs),
            (true, 1, 31 * 86_400)
        );
    }

    #[test]
    fn ipv6_keys_group_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(ip_key(a, 64), ip_key(b, 64));
        assert_ne!(ip_key(a, 128), ip_key(b, 128));
        assert_eq!(ip_key("::ffff:192.0.2.7".parse().unwrap(), 64), "192.0.2.7");
        assert_eq!(ip_key("192.0.2.7".parse().unwrap(), 64), "192.0.2.7");
    }
}
