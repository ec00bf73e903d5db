//! The limiter's long-window state as a value that outlives the process: calendar quota
//! counters and slow token buckets, saved by the daemon and restored at the next start, so a
//! restart does not refill a customer's daily or monthly quota.
//!
//! Buckets are saved on the wall clock (when the bucket is full again), since the monotonic
//! clock starts over with the process. On restore, state of limits the policy no longer has is
//! dropped, windows that have rolled over and buckets that have refilled meanwhile are left
//! out (a fresh slot is exactly what they would be), and nothing is restored past the table's
//! capacity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{KEY_SEPARATOR, LimitKind, LimitSpec, Limiter, Slot};
use crate::policy::time::Now;

/// Version of [`SavedLimits`]; a file of another version is ignored.
pub const FORMAT_VERSION: u32 = 1;

/// The saved state of a limiter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLimits {
    pub version: u32,
    /// Wall-clock time of the save, Unix seconds.
    pub saved_at: u64,
    pub slots: Vec<SavedSlot>,
}

/// One (limit, key) slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SavedSlot {
    /// A calendar-window counter: `count` requests in the window starting at `start` (Unix s).
    Window {
        limit: String,
        key: String,
        start: u64,
        count: u64,
    },
    /// A token bucket, as the wall-clock time (Unix ms) at which it is full again.
    Bucket {
        limit: String,
        key: String,
        full_at_ms: u64,
    },
}

/// What a restore did with each saved slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub restored: usize,
    /// The policy no longer has the limit (or has it as another kind).
    pub unknown_limit: usize,
    /// The window rolled over, or the bucket refilled, while the daemon was down.
    pub expired: usize,
    /// The table was full.
    pub no_room: usize,
}

/// How long an empty allowance takes to come back whole: the bucket's refill time, or the
/// window's nominal length. Limits at least `min_window` long are the ones worth saving.
pub fn span(spec: &LimitSpec) -> Duration {
    match spec.kind {
        LimitKind::Gcra { interval, burst } => interval.saturating_mul(burst),
        LimitKind::Window { window, .. } => Duration::from_secs(window.nominal_secs()),
    }
}

fn wall_ms(now: Now) -> u64 {
    now.wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn duration_ms_ceil(d: Duration) -> u64 {
    const NANOS_PER_MILLI: u32 = 1_000_000;
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(NANOS_PER_MILLI));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn by_id<'a>(specs: &[&'a LimitSpec]) -> HashMap<&'a str, &'a LimitSpec> {
    specs.iter().map(|s| (&*s.id, *s)).collect()
}

impl Limiter {
    /// Changes committed so far: the saver skips a save when this has not moved.
    pub fn changes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).changes)
            .fold(0, u64::wrapping_add)
    }

    /// The live slots of `specs` at least `min_window` long (windows not yet over, buckets
    /// not yet full), one shard locked at a time.
    pub fn export(&self, specs: &[&LimitSpec], min_window: Duration, now: Now) -> SavedLimits {
        let specs = by_id(specs);
        let now_ms = wall_ms(now);
        let mut slots = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (full, slot) in &shard.slots {
                let Some((id, key)) = full.split_once(KEY_SEPARATOR) else {
                    continue;
                };
                let Some(spec) = specs.get(id) else { continue };
                if span(spec) < min_window || slot.evictable(now) {
                    continue;
                }
                let (limit, key) = (id.to_owned(), key.to_owned());
                slots.push(match *slot {
                    Slot::Window { start, count, .. } => SavedSlot::Window {
                        limit,
                        key,
                        start,
                        count,
                    },
                    Slot::Gcra { tat } => SavedSlot::Bucket {
                        limit,
                        key,
                        full_at_ms: now_ms
                            .saturating_add(duration_ms_ceil(tat.duration_since(now.mono))),
                    },
                });
            }
        }
        SavedLimits {
            version: FORMAT_VERSION,
            saved_at: now.unix_secs(),
            slots,
        }
    }

    /// Puts `saved` back for the limits of `specs` that still exist, as of `now`.
    pub fn restore(&self, saved: &SavedLimits, specs: &[&LimitSpec], now: Now) -> RestoreReport {
        let specs = by_id(specs);
        let now_ms = wall_ms(now);
        let mut report = RestoreReport::default();
        for entry in &saved.slots {
            let (limit, key) = match entry {
                SavedSlot::Window { limit, key, .. } | SavedSlot::Bucket { limit, key, .. } => {
                    (limit, key)
                }
            };
            let Some(spec) = specs.get(limit.as_str()) else {
                report.unknown_limit += 1;
                continue;
            };
            let slot = match (entry, &spec.kind) {
                (SavedSlot::Window { start, count, .. }, LimitKind::Window { window, .. }) => {
                    let (current, end) = window.bounds(now.unix_secs());
                    if *start != current {
                        report.expired += 1;
                        continue;
                    }
                    Slot::Window {
                        start: current,
                        end,
                        count: *count,
                    }
                }
                (SavedSlot::Bucket { full_at_ms, .. }, LimitKind::Gcra { interval, burst }) => {
                    if *full_at_ms <= now_ms {
                        report.expired += 1;
                        continue;
                    }
                    // A bucket made smaller since is at most empty, not in debt.
                    let backlog = Duration::from_millis(full_at_ms - now_ms)
                        .min(interval.saturating_mul(*burst));
                    Slot::Gcra {
                        tat: now.mono + backlog,
                    }
                }
                _ => {
                    report.unknown_limit += 1;
                    continue;
                }
            };
            let full = slot_key(spec, key);
            let index = self.shard_of(&full);
            let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
            if !shard.slots.contains_key(&full) && shard.slots.len() >= self.cap_per_shard {
                report.no_room += 1;
                continue;
            }
            shard.slots.insert(full, slot);
            report.restored += 1;
        }
        report
    }
}

fn slot_key(spec: &LimitSpec, key: &str) -> String {
    let id: &Arc<str> = &spec.id;
    format!("{id}{KEY_SEPARATOR}{key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::WhenFull;
    use crate::policy::time::CalendarWindow;
    use std::time::{Instant, SystemTime};

    /// 2025-03-10 10:00:00 UTC.
    fn t0() -> Now {
        Now {
            mono: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_741_600_800),
        }
    }

    /// The same wall-clock moment in a process started later (another monotonic origin).
    fn restarted(now: Now, after: Duration) -> Now {
        Now {
            mono: Instant::now() + Duration::from_secs(1000),
            wall: now.wall + after,
        }
    }

    fn one(l: &Limiter, spec: &LimitSpec, key: &str, now: Now) -> super::super::LimitStatus {
        l.check(&[(spec, key.to_owned())], now).remove(0)
    }

    fn round_trip(saved: &SavedLimits) -> SavedLimits {
        serde_json::from_str(&serde_json::to_string(saved).unwrap()).unwrap()
    }

    #[test]
    fn a_daily_quota_continues_after_a_restart() {
        let daily = LimitSpec::window("plan/p/daily", "daily", 5, CalendarWindow::Day);
        let l = Limiter::new(100, WhenFull::Deny);
        let now = t0();
        for _ in 0..3 {
            assert!(one(&l, &daily, "id:alice", now).allowed);
        }
        let saved = round_trip(&l.export(&[&daily], Duration::from_secs(60), now));
        let later = restarted(now, Duration::from_secs(3600));
        let fresh = Limiter::new(100, WhenFull::Deny);
        let report = fresh.restore(&saved, &[&daily], later);
        assert_eq!(report.restored, 1, "{report:?}");
        let s = one(&fresh, &daily, "id:alice", later);
        assert_eq!((s.allowed, s.remaining), (true, 1), "not refilled");
        assert!(one(&fresh, &daily, "id:alice", later).allowed);
        assert!(!one(&fresh, &daily, "id:alice", later).allowed);
    }

    #[test]
    fn a_slow_bucket_is_restored_on_the_wall_clock_and_fast_ones_are_not_saved() {
        // 2 per hour: empty after two requests, one token back 30 minutes later.
        let hourly = LimitSpec::gcra("plan/p/hourly", "hourly", 2, Duration::from_secs(3600), 2);
        let fast = LimitSpec::gcra("plan/p/burst", "burst", 100, Duration::from_secs(1), 100);
        let l = Limiter::new(100, WhenFull::Deny);
        let now = t0();
        for _ in 0..2 {
            assert!(
                l.check(&[(&hourly, "k".to_owned()), (&fast, "k".to_owned())], now)
                    .iter()
                    .all(|s| s.allowed)
            );
        }
        let saved = round_trip(&l.export(&[&hourly, &fast], Duration::from_secs(60), now));
        assert_eq!(saved.slots.len(), 1, "only the long limit: {saved:?}");
        let fresh = Limiter::new(100, WhenFull::Deny);
        let later = restarted(now, Duration::from_secs(10 * 60));
        assert_eq!(fresh.restore(&saved, &[&hourly, &fast], later).restored, 1);
        let s = one(&fresh, &hourly, "k", later);
        assert!(!s.allowed, "still empty 10 minutes later");
        assert_eq!(s.retry_after, Duration::from_secs(20 * 60));
        assert!(
            one(
                &fresh,
                &hourly,
                "k",
                later.after(Duration::from_secs(20 * 60))
            )
            .allowed
        );
    }

    #[test]
    fn gone_limits_rolled_windows_and_refilled_buckets_are_dropped() {
        let daily = LimitSpec::window("plan/p/daily", "daily", 5, CalendarWindow::Day);
        let hourly = LimitSpec::gcra("plan/p/hourly", "hourly", 2, Duration::from_secs(3600), 2);
        let gone = LimitSpec::window("plan/old/daily", "daily", 5, CalendarWindow::Day);
        let l = Limiter::new(100, WhenFull::Deny);
        let now = t0();
        for spec in [&daily, &hourly, &gone] {
            assert!(one(&l, spec, "k", now).allowed);
        }
        let saved = l.export(&[&daily, &hourly, &gone], Duration::from_secs(60), now);
        assert_eq!(saved.slots.len(), 3);
        // The next day: the window rolled over, the bucket refilled, one limit was removed.
        let fresh = Limiter::new(100, WhenFull::Deny);
        let report = fresh.restore(
            &saved,
            &[&daily, &hourly],
            restarted(now, Duration::from_secs(86_400)),
        );
        assert_eq!(
            report,
            RestoreReport {
                restored: 0,
                unknown_limit: 1,
                expired: 2,
                no_room: 0
            }
        );
        assert_eq!(fresh.stats().tracked, 0);
        // A limit that changed kind under the same id is not restored as the other kind.
        let as_bucket = LimitSpec::gcra("plan/p/daily", "daily", 5, Duration::from_secs(86_400), 5);
        let report = fresh.restore(&saved, &[&as_bucket], now);
        assert_eq!(report.unknown_limit, 3);
    }

    #[test]
    fn restore_stops_at_capacity_and_changes_are_counted() {
        let daily = LimitSpec::window("plan/p/daily", "daily", 5, CalendarWindow::Day);
        let l = Limiter::new(100, WhenFull::Deny);
        let now = t0();
        assert_eq!(l.changes(), 0);
        for i in 0..10 {
            assert!(one(&l, &daily, &format!("k{i}"), now).allowed);
        }
        assert_eq!(l.changes(), 10);
        let saved = l.export(&[&daily], Duration::from_secs(60), now);
        let small = Limiter::new(4, WhenFull::Deny);
        let report = small.restore(&saved, &[&daily], now);
        assert_eq!((report.restored, report.no_room), (4, 6));
        assert_eq!(small.stats().tracked, 4);
        assert_eq!(small.changes(), 0, "a restore is not a change to save");
    }
}
