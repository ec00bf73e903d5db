//! What `top` shows, computed from what the control socket answers: rates from the difference
//! of two counter readings, short histories, offenders, latest decisions and lists.
//!
//! The kernel keeps no per-source rates (only a sketch of token buckets), so offenders are
//! what the kernel did decide about sources: its auto-blocks, newest first by default.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use api_shield_common::verdict;
use serde_json::Value;

use crate::control::{ListedBody, ListsRowBody, StatsBody};

/// Points of history kept per series: a minute at the default interval.
pub const HISTORY: usize = 60;

/// One reading of the daemon. Every field is the `body` of the answer to one request; an
/// answer of another shape (a newer daemon) reads as empty, as missing fields read as their
/// defaults.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// `status`, when it was asked for (not every tick). Kept as the daemon's JSON: `top`
    /// shows three of its strings as sent, and `StatusBody` would refuse a whole answer over
    /// a `mode` this build does not know, where `top` shows the name it got.
    pub status: Option<Value>,
    /// `stats`.
    pub stats: StatsBody,
    /// `lists`.
    pub lists: Vec<ListsRowBody>,
    /// `list blocked`, or `list blocked --origin kernel` alone when `full_blocked` is false.
    pub blocked: Vec<ListedBody>,
    /// Whether `blocked` holds every block or the kernel's alone.
    pub full_blocked: bool,
}

/// The shield as `status` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub iface: String,
    pub xdp_mode: String,
    pub mode: String,
}

/// A blocked address or prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub net: String,
    pub origin: String,
    pub reason: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

/// Feed status of a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    pub degraded: bool,
    pub errors_total: u64,
    pub last_error: Option<String>,
    pub last_success_ms: Option<u64>,
}

/// One origin (list) with its drops.
#[derive(Clone, Debug, PartialEq)]
pub struct ListRow {
    pub name: String,
    pub entries: u64,
    pub drops_total: u64,
    /// Drops per second over the last interval; `None` until two readings.
    pub drop_rate: Option<f64>,
    pub feed: Option<Feed>,
}

/// One counter (a verdict) with its rate and history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub packets_total: u64,
    pub bytes_total: u64,
    /// Packets per second over the last interval; `None` until two readings.
    pub rate: Option<f64>,
    pub byte_rate: Option<f64>,
    /// Packets per second, oldest first, at most `HISTORY`.
    pub history: VecDeque<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub identity: Option<Identity>,
    /// Per final verdict, in counter order.
    pub verdicts: Vec<(&'static str, Series)>,
    /// Every origin, by drop rate then total drops (largest first).
    pub lists: Vec<ListRow>,
    /// The kernel's auto-blocks.
    pub offenders: Vec<Blocked>,
    /// Blocks of every origin, newest first.
    pub latest: Vec<Blocked>,
    /// Wall-clock Unix ms of the last good reading.
    pub updated_at_ms: Option<u64>,
    /// What went wrong with the last reading, if it did.
    pub error: Option<String>,
    /// Counter readings behind the rates: verdict and origin totals at `at`.
    previous: Option<Reading>,
}

#[derive(Clone, Debug)]
struct Reading {
    at: Instant,
    verdicts: Vec<(u64, u64)>,
    origins: BTreeMap<String, u64>,
}

/// A string of the daemon's answer, escaped for the terminal: reasons, origins and feed
/// errors may carry outside text from before the input rules, or from a newer daemon.
fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| crate::text::escape(s).into_owned())
}

/// Text of the daemon's answer escaped for the terminal; `None` for a field it did not carry.
fn shown_nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| crate::text::escape(s).into_owned())
}

fn blocks(listed: &[ListedBody]) -> Vec<Blocked> {
    let shown = |s: &str| crate::text::escape(s).into_owned();
    // `?` for a field the answer did not carry.
    let known = |s: &str| {
        if s.is_empty() {
            "?".to_owned()
        } else {
            shown(s)
        }
    };
    listed
        .iter()
        .filter(|e| e.action != "allow")
        .map(|e| Blocked {
            net: known(&e.net),
            origin: known(&e.origin),
            reason: e.reason.as_deref().map(shown),
            created_at_ms: e.created_at_ms,
            expires_at_ms: e.expires_at_ms,
        })
        .collect()
}

/// Rate of a counter that went from `before` to `now` in `secs`; a counter that went back (the
/// program was reloaded) restarts from zero.
fn rate(before: u64, now: u64, secs: f64) -> f64 {
    let delta = if now >= before { now - before } else { now };
    delta as f64 / secs
}

impl Reading {
    /// The counters of `sample`: the verdicts of its `stats`, the drops of its `lists`.
    fn of(sample: &Sample, at: Instant) -> Self {
        let stats = &sample.stats;
        Reading {
            at,
            verdicts: verdict::NAMES[..verdict::VERDICTS as usize]
                .iter()
                .map(|name| {
                    let c = stats.verdicts.get(*name).copied().unwrap_or_default();
                    (c.packets, c.bytes)
                })
                .collect(),
            origins: sample
                .lists
                .iter()
                .filter_map(|l| Some((shown_nonempty(&l.name)?, l.dropped_packets())))
                .collect(),
        }
    }
}

/// Totals, rates and histories of the verdicts, from `reading` and the one before.
fn update_verdicts(
    verdicts: &mut [(&'static str, Series)],
    reading: &Reading,
    elapsed: Option<(&Reading, f64)>,
) {
    for (i, (_, series)) in verdicts.iter_mut().enumerate() {
        let (packets, bytes) = reading.verdicts[i];
        series.packets_total = packets;
        series.bytes_total = bytes;
        if let Some((prev, secs)) = elapsed {
            let (p0, b0) = prev.verdicts[i];
            let r = rate(p0, packets, secs);
            series.rate = Some(r);
            series.byte_rate = Some(rate(b0, bytes, secs));
            if series.history.len() == HISTORY {
                series.history.pop_front();
            }
            series.history.push_back(r.round() as u64);
        }
    }
}

/// Every origin of a `lists` answer with its drops, by drop rate then total drops (largest
/// first).
fn list_rows(lists: &[ListsRowBody], elapsed: Option<(&Reading, f64)>) -> Vec<ListRow> {
    let mut rows: Vec<ListRow> = lists
        .iter()
        .filter_map(|l| {
            // A row without a name cannot be told from the others: left out, as before.
            let name = shown_nonempty(&l.name)?;
            let drops_total = l.dropped_packets();
            let drop_rate = elapsed.map(|(prev, secs)| {
                rate(
                    prev.origins.get(&name).copied().unwrap_or(drops_total),
                    drops_total,
                    secs,
                )
            });
            let feed = l.feed().map(|f| Feed {
                degraded: f.degraded,
                errors_total: f.errors_total,
                last_error: f
                    .last_error
                    .as_deref()
                    .map(|e| crate::text::escape(e).into_owned()),
                last_success_ms: f.last_success_ms,
            });
            Some(ListRow {
                entries: u64::try_from(l.entries).unwrap_or(u64::MAX),
                name,
                drops_total,
                drop_rate,
                feed,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.drop_rate
            .unwrap_or(0.0)
            .total_cmp(&a.drop_rate.unwrap_or(0.0))
            .then(b.drops_total.cmp(&a.drops_total))
            .then(a.name.cmp(&b.name))
    });
    rows
}

impl Model {
    pub fn new() -> Self {
        Self {
            verdicts: (0..verdict::VERDICTS as usize)
                .map(|i| (verdict::NAMES[i], Series::default()))
                .collect(),
            ..Self::default()
        }
    }

    /// Records that reading the daemon failed; what was shown stays.
    pub fn failed(&mut self, error: String) {
        self.error = Some(error);
    }

    /// Takes in a reading made at `at` (monotonic) and `now_ms` (wall clock).
    pub fn apply(&mut self, sample: Sample, at: Instant, now_ms: u64) {
        if let Some(status) = &sample.status {
            self.identity = Some(Identity {
                iface: str_of(status, "iface").unwrap_or_else(|| "?".into()),
                xdp_mode: str_of(status, "xdp_mode").unwrap_or_else(|| "?".into()),
                mode: str_of(status, "mode").unwrap_or_else(|| "?".into()),
            });
        }
        let reading = Reading::of(&sample, at);
        let elapsed = self
            .previous
            .as_ref()
            .map(|p| (p, at.saturating_duration_since(p.at).as_secs_f64()))
            .filter(|(_, secs)| *secs > 0.0);
        update_verdicts(&mut self.verdicts, &reading, elapsed);
        self.lists = list_rows(&sample.lists, elapsed);
        self.update_blocks(&sample);
        self.previous = Some(reading);
        self.updated_at_ms = Some(now_ms);
        self.error = None;
    }

    /// The offenders and the latest blocks.
    fn update_blocks(&mut self, sample: &Sample) {
        let blocked = blocks(&sample.blocked);
        self.offenders = blocked
            .iter()
            .filter(|b| b.origin == crate::model::ORIGIN_KERNEL_NAME)
            .cloned()
            .collect();
        if sample.full_blocked {
            self.latest = blocked;
        } else {
            // Only the kernel's were read this time: keep the others from the last full read.
            self.latest
                .retain(|b| b.origin != crate::model::ORIGIN_KERNEL_NAME);
            self.latest.extend(self.offenders.iter().cloned());
        }
        self.latest.sort_by(|a, b| {
            b.created_at_ms
                .cmp(&a.created_at_ms)
                .then(a.net.cmp(&b.net))
        });
    }

    /// Packets per second of all traffic, if known.
    pub fn total_rate(&self) -> Option<f64> {
        self.verdicts.iter().map(|(_, s)| s.rate).sum()
    }

    /// The series of verdict `name`.
    pub fn series(&self, name: &str) -> Option<&Series> {
        self.verdicts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    pub const NOW_MS: u64 = 1_800_000_000_000;

    fn stats(pass: u64, blocklisted: u64, rate_limited: u64) -> StatsBody {
        serde_json::from_value(json!({
            "verdicts": {
                "pass": {"packets": pass, "bytes": pass * 60},
                "non_ip": {"packets": 0, "bytes": 0},
                "allowlisted": {"packets": 0, "bytes": 0},
                "blocklisted": {"packets": blocklisted, "bytes": blocklisted * 60},
                "rate_limited": {"packets": rate_limited, "bytes": rate_limited * 60},
                "malformed": {"packets": 0, "bytes": 0},
                "monitored": {"packets": 0, "bytes": 0},
            },
            "details": {},
            "origins": {},
        }))
        .unwrap()
    }

    fn lists(kernel_drops: u64) -> Vec<ListsRowBody> {
        serde_json::from_value(json!([
            {"name": "cli", "entries": 1, "revision": 3, "drops": {"packets": 7, "bytes": 420}},
            {"name": "firehol", "entries": 0, "source": "feed (nothing loaded yet)",
             "drops": {"packets": 0, "bytes": 0},
             "feed": {"last_success_ms": null, "last_error": "no such file", "errors_total": 2,
                      "syncs_total": 0, "degraded": true}},
            {"name": "kernel", "entries": 1, "source": "kernel auto-block",
             "drops": {"packets": kernel_drops, "bytes": kernel_drops * 60}},
        ]))
        .unwrap()
    }

    fn blocked() -> Vec<ListedBody> {
        serde_json::from_value(json!([
            {"net": "198.18.0.77/32", "action": "block", "origin": "cli", "reason": "scanner",
             "created_at_ms": NOW_MS - 60_000, "expires_at_ms": null},
            {"net": "198.18.1.35/32", "action": "block", "origin": "kernel",
             "reason": "rate limit exceeded repeatedly",
             "created_at_ms": NOW_MS - 5_000, "expires_at_ms": NOW_MS + 115_000},
        ]))
        .unwrap()
    }

    /// Two readings a second apart: a flood cut by the rate limit, then auto-blocked.
    pub fn flooded() -> Model {
        let mut model = Model::new();
        let t0 = Instant::now();
        let status = json!({"iface": "srv0", "xdp_mode": "skb", "mode": "enforce"});
        model.apply(
            Sample {
                status: Some(status),
                stats: stats(100, 0, 0),
                lists: lists(0),
                blocked: Vec::new(),
                full_blocked: true,
            },
            t0,
            NOW_MS - 1_000,
        );
        model.apply(
            Sample {
                status: None,
                stats: stats(120, 1_500, 2_500),
                lists: lists(1_500),
                blocked: blocked(),
                full_blocked: true,
            },
            t0 + Duration::from_secs(1),
            NOW_MS,
        );
        model
    }

    #[test]
    fn rates_histories_and_offenders() {
        let model = flooded();
        let pass = model.series("pass").unwrap();
        assert_eq!(pass.rate, Some(20.0));
        assert_eq!(pass.packets_total, 120);
        assert_eq!(pass.history, [20]);
        assert_eq!(model.series("rate_limited").unwrap().rate, Some(2_500.0));
        assert_eq!(
            model.series("blocklisted").unwrap().byte_rate,
            Some(90_000.0)
        );
        assert_eq!(model.total_rate(), Some(4_020.0));
        assert_eq!(model.lists[0].name, "kernel");
        assert_eq!(model.lists[0].drop_rate, Some(1_500.0));
        let feed = model.lists.iter().find(|l| l.name == "firehol").unwrap();
        assert!(feed.feed.as_ref().unwrap().degraded);
        assert_eq!(model.offenders.len(), 1);
        assert_eq!(model.offenders[0].net, "198.18.1.35/32");
        assert_eq!(model.latest[0].origin, "kernel");
        assert_eq!(model.latest[1].net, "198.18.0.77/32");
        assert_eq!(model.identity.as_ref().unwrap().iface, "srv0");
    }

    #[test]
    fn a_counter_reset_is_not_a_negative_rate() {
        assert_eq!(rate(1_000, 10, 1.0), 10.0);
        assert_eq!(rate(10, 30, 2.0), 10.0);
    }

    #[test]
    fn a_kernel_only_reading_keeps_the_other_blocks() {
        let mut model = flooded();
        model.apply(
            Sample {
                status: None,
                stats: stats(120, 1_500, 2_500),
                lists: lists(1_500),
                blocked: Vec::new(),
                full_blocked: false,
            },
            Instant::now() + Duration::from_secs(5),
            NOW_MS + 1_000,
        );
        assert!(model.offenders.is_empty());
        let nets: Vec<&str> = model.latest.iter().map(|b| b.net.as_str()).collect();
        assert_eq!(nets, ["198.18.0.77/32"]);
    }

    /// A `lists` answer of an older daemon: rows without drops, feed, source or revision, and a
    /// row without a name, which cannot be told apart and is left out as before.
    #[test]
    fn an_older_lists_answer_reads_with_defaults() {
        let older: Vec<ListsRowBody> = serde_json::from_value(json!([
            {"name": "cli", "entries": 4},
            {"name": "kernel", "entries": 1, "drops": null},
            {"entries": 9},
        ]))
        .unwrap();
        let rows = list_rows(&older, None);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["cli", "kernel"]);
        assert_eq!(rows[0].entries, 4);
        assert_eq!(rows[0].drops_total, 0);
        assert!(rows.iter().all(|r| r.feed.is_none()));
    }
}
