//! What a stream answer's decisions become: the filter, the counts of what was skipped, and
//! the state of decisions behind the list.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Serialize;
use std::borrow::Cow;

use super::config::CrowdsecConfig;
use super::decode::StreamAnswer;
use super::go_duration::{parse_go_duration, remaining};
use super::{MAX_TTL, SCOPE_IP, SCOPE_RANGE};
use crate::lists::ListEntry;
use crate::parse::{InputError, parse_net};

/// A decision as the local API sends it, its text borrowed from the answer where it has no
/// escapes. Every field is optional here so that an incomplete decision is counted and skipped
/// instead of failing the whole answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WireDecision<'a> {
    pub id: Option<i64>,
    pub scope: Option<Cow<'a, str>>,
    pub value: Option<Cow<'a, str>>,
    pub kind: Option<Cow<'a, str>>,
    pub duration: Option<Cow<'a, str>>,
    pub scenario: Option<Cow<'a, str>>,
}

/// What one answer's decisions became.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MapStats {
    /// New decisions taken into the list.
    pub accepted: usize,
    /// Skipped: a scope not configured (`Country`, `AS`, ...).
    pub other_scope: usize,
    /// Skipped: a type not configured (`captcha`, ...).
    pub other_type: usize,
    /// Skipped: the lifetime left was zero or negative.
    pub expired: usize,
    /// Skipped: no usable value or duration.
    pub invalid: usize,
    /// Skipped, in either list: not an object, or a field of the wrong type or given twice.
    pub malformed: usize,
    /// Taken after normalising an IPv4-mapped address to the IPv4 one.
    pub normalised: usize,
    /// Skipped: a range with host bits set (`2001:db8:1::/0`): never widened into a guess.
    pub host_bits: usize,
    /// Skipped: a range shorter than `min_prefix_v4` / `min_prefix_v6`.
    pub too_wide: usize,
    /// A second decision for a net already in this answer (the longest lifetime counts).
    pub duplicates: usize,
    /// Deleted decisions that took their net out of the list.
    pub removed: usize,
}

impl MapStats {
    pub fn skipped(&self) -> usize {
        self.other_scope
            + self.other_type
            + self.expired
            + self.invalid
            + self.malformed
            + self.host_bits
            + self.too_wide
    }
}

/// The scopes and types to enforce, matched case-insensitively (CrowdSec itself is lenient
/// about the case of scopes, `cscli --scope ip`).
#[derive(Clone, Debug)]
pub struct Filter {
    scopes: Vec<String>,
    types: Vec<String>,
    min_prefix_v4: u8,
    min_prefix_v6: u8,
    /// Lifetimes are capped here (the daemon's `max_ttl`): CrowdSec writes "for ever" as the
    /// longest duration Go can hold, which must still block, for as long as any block may.
    pub(super) max_ttl: Duration,
}

impl Filter {
    pub fn new(cfg: &CrowdsecConfig) -> Self {
        Self {
            scopes: cfg.scopes.clone(),
            types: cfg.types.clone(),
            min_prefix_v4: cfg.min_prefix_v4,
            min_prefix_v6: cfg.min_prefix_v6,
            max_ttl: MAX_TTL,
        }
    }

    fn too_wide(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => n.prefix_len() < self.min_prefix_v4,
            IpNet::V6(n) => n.prefix_len() < self.min_prefix_v6,
        }
    }

    fn scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope))
    }

    fn kind(&self, kind: &str) -> bool {
        self.types.iter().any(|t| t.eq_ignore_ascii_case(kind))
    }
}

/// Why a decision's value names no net to enforce.
enum Unusable {
    /// A scope that names no addresses, or a value that is not an address.
    Invalid,
    /// A range with host bits set: masking `2001:db8:1::/0` would ban `::/0`.
    HostBits,
}

/// The net a decision names, and whether it had to be normalised (an IPv4-mapped address is
/// the IPv4 source the kernel sees).
fn decision_net(scope: &str, value: &str) -> Result<(IpNet, bool), Unusable> {
    let single = scope.eq_ignore_ascii_case(SCOPE_IP);
    if !single && !scope.eq_ignore_ascii_case(SCOPE_RANGE) {
        return Err(Unusable::Invalid);
    }
    if single && value.contains('/') {
        return Err(Unusable::Invalid);
    }
    match parse_net(value) {
        Ok(net) => Ok((net, false)),
        Err(InputError::V4Mapped { suggestion, .. }) => Ok((suggestion, true)),
        Err(InputError::HostBits { .. }) => Err(Unusable::HostBits),
        Err(_) => Err(Unusable::Invalid),
    }
}

/// A decision that passed the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Mapped {
    net: IpNet,
    id: Option<i64>,
    ttl: Duration,
    reason: Option<String>,
}

pub(super) fn map_new(
    d: &WireDecision<'_>,
    filter: &Filter,
    stats: &mut MapStats,
) -> Option<Mapped> {
    let (Some(scope), Some(value), Some(kind), Some(duration)) =
        (&d.scope, &d.value, &d.kind, &d.duration)
    else {
        stats.invalid += 1;
        return None;
    };
    if !filter.scope(scope) {
        stats.other_scope += 1;
        return None;
    }
    if !filter.kind(kind) {
        stats.other_type += 1;
        return None;
    }
    let Ok(nanos) = parse_go_duration(duration) else {
        stats.invalid += 1;
        return None;
    };
    let Some(ttl) = remaining(nanos) else {
        stats.expired += 1;
        return None;
    };
    let (net, normalised) = match decision_net(scope, value) {
        Ok(found) => found,
        Err(Unusable::HostBits) => {
            stats.host_bits += 1;
            return None;
        }
        Err(Unusable::Invalid) => {
            stats.invalid += 1;
            return None;
        }
    };
    if filter.too_wide(&net) {
        stats.too_wide += 1;
        return None;
    }
    stats.normalised += usize::from(normalised);
    stats.accepted += 1;
    Some(Mapped {
        net,
        id: d.id,
        ttl: ttl.min(filter.max_ttl),
        // Shown by `list` and `top`: escaped and cut, never refused (the block still counts).
        reason: d
            .scenario
            .as_deref()
            .map(|s| crate::text::sanitize(s).into_owned()),
    })
}

#[cfg(test)]
impl Mapped {
    pub(super) fn id_for_test(&self) -> Option<i64> {
        self.id
    }

    pub(super) fn reason_for_test(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// The net a deleted decision names, if any: a deletion needs no type nor duration.
pub(super) fn deleted_net(d: &WireDecision<'_>) -> Option<IpNet> {
    let (Some(scope), Some(value)) = (&d.scope, &d.value) else {
        return None;
    };
    decision_net(scope, value).ok().map(|(net, _)| net)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Active {
    deadline: Instant,
    reason: Option<String>,
}

/// The decisions behind the list, by net and decision id. Several decisions may name one net
/// (two scenarios, a manual ban); the net leaves the list only when the last one is deleted,
/// and its entry carries the longest lifetime.
#[derive(Clone, Debug, Default)]
pub struct Decisions {
    by_net: BTreeMap<IpNet, BTreeMap<Option<i64>, Active>>,
}

/// The change one delta answer makes to the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub add: Vec<ListEntry>,
    pub remove: Vec<IpNet>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

impl Decisions {
    /// The state a `startup=true` answer describes, and the list entries for it. The answer's
    /// `deleted` part (recently expired or deleted decisions) does not matter for a full state.
    pub fn from_startup(answer: StreamAnswer, now: Instant) -> (Self, Vec<ListEntry>, MapStats) {
        let mut stats = answer.stats;
        let mut state = Decisions::default();
        for m in answer.new {
            stats.duplicates += usize::from(state.by_net.contains_key(&m.net));
            state.insert(m, now);
        }
        let entries = state
            .by_net
            .keys()
            .filter_map(|net| state.entry(net, now))
            .collect();
        (state, entries, stats)
    }

    /// Applies a delta answer: new decisions first, then deletions, so a net deleted and
    /// re-decided in one answer stays.
    pub fn apply_delta(&mut self, answer: StreamAnswer, now: Instant) -> (Change, MapStats) {
        let mut stats = answer.stats;
        let mut touched = BTreeSet::new();
        let mut fresh = BTreeSet::new();
        for m in answer.new {
            stats.duplicates += usize::from(!fresh.insert(m.net));
            touched.insert(m.net);
            self.insert(m, now);
        }
        // A deletion needs only the net and the id: its duration is already negative, and ids
        // we never took (other types, other scopes) are simply not found.
        for (net, id) in answer.deleted {
            // CrowdSec repeats a deletion in later answers; only the first one finds the id.
            if let Some(ids) = self.by_net.get_mut(&net)
                && ids.remove(&id).is_some()
            {
                touched.insert(net);
            }
        }
        let mut change = Change::default();
        for net in touched {
            match self.entry(&net, now) {
                Some(entry) => change.add.push(entry),
                None => {
                    self.by_net.remove(&net);
                    stats.removed += 1;
                    change.remove.push(net);
                }
            }
        }
        (change, stats)
    }

    fn insert(&mut self, m: Mapped, now: Instant) {
        let deadline = now + m.ttl;
        self.by_net.entry(m.net).or_default().insert(
            m.id,
            Active {
                deadline,
                reason: m.reason,
            },
        );
    }

    /// The list entry for `net`: the longest-lived decision still active, if any.
    fn entry(&self, net: &IpNet, now: Instant) -> Option<ListEntry> {
        let best = self
            .by_net
            .get(net)?
            .values()
            .filter(|a| a.deadline > now)
            .max_by_key(|a| a.deadline)?;
        Some(ListEntry {
            net: *net,
            ttl: Some(best.deadline - now),
            reason: best.reason.clone(),
        })
    }

    /// Nets with at least one decision behind them.
    pub fn len(&self) -> usize {
        self.by_net.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_net.is_empty()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::feeds::crowdsec::decode::{Keep, decode};
    // ---- mapping -------------------------------------------------------------------------

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn filter() -> Filter {
        Filter::new(&CrowdsecConfig::new("/k".into()))
    }

    fn answer(json: &str) -> StreamAnswer {
        decode(json.as_bytes(), &filter(), Keep::NewAndDeleted)
            .unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    pub(in crate::feeds::crowdsec) fn decision(
        id: i64,
        scope: &str,
        value: &str,
        kind: &str,
        duration: &str,
    ) -> String {
        format!(
            r#"{{"duration":"{duration}","id":{id},"origin":"cscli","scenario":"s{id}","scope":"{scope}","type":"{kind}","value":"{value}","simulated":false}}"#
        )
    }

    /// A stream answer's JSON text; an empty part is `null`, as CrowdSec sends it.
    pub(in crate::feeds::crowdsec) fn stream_json(new: &[String], deleted: &[String]) -> String {
        let list = |d: &[String]| {
            if d.is_empty() {
                "null".to_string()
            } else {
                format!("[{}]", d.join(","))
            }
        };
        format!(r#"{{"deleted":{},"new":{}}}"#, list(deleted), list(new))
    }

    fn stream(new: &[String], deleted: &[String]) -> StreamAnswer {
        answer(&stream_json(new, deleted))
    }

    fn nets(entries: &[ListEntry]) -> Vec<IpNet> {
        entries.iter().map(|e| e.net).collect()
    }

    #[test]
    fn startup_maps_ips_and_ranges_and_skips_the_rest() {
        let now = Instant::now();
        let a = stream(
            &[
                decision(1, "Ip", "198.18.9.5", "ban", "59m59.177863863s"),
                decision(2, "Range", "198.18.10.0/24", "ban", "1h59m59s"),
                decision(3, "Ip", "2001:db8::5", "ban", "1m29s"),
                decision(4, "Range", "198.18.11.7/24", "ban", "1h"),
                decision(5, "Country", "XX", "ban", "1h"),
                decision(6, "Ip", "198.18.9.9", "captcha", "1h"),
                decision(7, "Ip", "198.18.9.10", "ban", "-1.5s"),
                decision(8, "Ip", "198.18.9.11", "ban", "0s"),
                decision(9, "Ip", "not-an-ip", "ban", "1h"),
                decision(10, "Ip", "198.18.9.12", "ban", "soon"),
                decision(11, "Ip", "198.18.9.0/24", "ban", "1h"),
                decision(12, "ip", "::ffff:198.18.9.13", "BAN", "1h"),
                r#"{"id":13,"scope":"Ip","type":"ban"}"#.to_string(),
                decision(15, "Range", "2001:db8:1::/0", "ban", "1h"),
                decision(16, "Range", "0.0.0.0/0", "ban", "1h"),
                decision(17, "Range", "2001::/15", "ban", "1h"),
                decision(18, "Range", "198.0.0.0/7", "ban", "1h"),
                decision(19, "Range", "198.0.0.0/8", "ban", "1h"),
            ],
            &[decision(14, "Ip", "198.18.9.77", "ban", "-3s")],
        );
        let (state, entries, stats) = Decisions::from_startup(a, now);
        assert_eq!(
            nets(&entries),
            vec![
                net("198.0.0.0/8"),
                net("198.18.9.5/32"),
                net("198.18.9.13/32"),
                net("198.18.10.0/24"),
                net("2001:db8::5/128"),
            ]
        );
        assert_eq!(
            stats,
            MapStats {
                accepted: 5,
                other_scope: 1,
                other_type: 1,
                expired: 2,
                invalid: 4,
                malformed: 0,
                normalised: 1,
                // 198.18.11.7/24, 2001:db8:1::/0 and 2001::/15 (0x2001 has bit 16 set).
                host_bits: 3,
                // 0.0.0.0/0 and 198.0.0.0/7, under the /8 minimum.
                too_wide: 2,
                duplicates: 0,
                removed: 0,
            }
        );
        assert_eq!(state.len(), 5);
        let first = &entries[1];
        assert_eq!(first.reason.as_deref(), Some("s1"));
        assert_eq!(
            first.ttl,
            Some(Duration::from_nanos(
                parse_go_duration("59m59.177863863s").unwrap() as u64
            ))
        );
    }

    #[test]
    fn null_and_missing_lists_are_empty() {
        let now = Instant::now();
        for json in [
            r#"{"deleted":null,"new":null}"#,
            r#"{"new":null}"#,
            r#"{}"#,
            r#"{"deleted":[],"new":[]}"#,
        ] {
            let (mut state, entries, stats) = Decisions::from_startup(answer(json), now);
            assert!(entries.is_empty() && state.is_empty(), "{json}");
            assert_eq!(stats, MapStats::default());
            let (change, _) = state.apply_delta(answer(json), now);
            assert!(change.is_empty(), "{json}");
        }
        for not_a_stream in ["null", "42", r#""x""#, r#"{"new":{}}"#] {
            assert!(
                decode(not_a_stream.as_bytes(), &filter(), Keep::NewAndDeleted).is_err(),
                "{not_a_stream}"
            );
        }
    }

    #[test]
    fn duplicates_keep_the_longest_lifetime() {
        let now = Instant::now();
        let a = stream(
            &[
                decision(1, "Ip", "198.18.9.5", "ban", "10m"),
                decision(2, "Ip", "198.18.9.5", "ban", "2h"),
                decision(3, "Ip", "198.18.9.5", "ban", "1h"),
            ],
            &[],
        );
        let (mut state, entries, stats) = Decisions::from_startup(a, now);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].ttl, Some(Duration::from_secs(7_200)));
        assert_eq!(entries[0].reason.as_deref(), Some("s2"));
        assert_eq!(stats.duplicates, 2);

        // The longest one goes: the net stays, with the next longest lifetime.
        let (change, stats) = state.apply_delta(
            stream(&[], &[decision(2, "Ip", "198.18.9.5", "ban", "-1s")]),
            now,
        );
        assert!(change.remove.is_empty());
        assert_eq!(change.add.len(), 1);
        assert_eq!(change.add[0].ttl, Some(Duration::from_secs(3_600)));
        assert_eq!(stats.removed, 0);

        // The last two go in one answer: now it leaves.
        let (change, stats) = state.apply_delta(
            stream(
                &[],
                &[
                    decision(1, "Ip", "198.18.9.5", "ban", "-1s"),
                    decision(3, "Ip", "198.18.9.5", "ban", "-1s"),
                ],
            ),
            now,
        );
        assert_eq!(change.remove, vec![net("198.18.9.5/32")]);
        assert!(change.add.is_empty());
        assert_eq!(stats.removed, 1);
        assert!(state.is_empty());
    }

    #[test]
    fn lifetimes_are_capped() {
        let now = Instant::now();
        let a = stream(
            &[decision(
                1,
                "Ip",
                "198.18.9.5",
                "ban",
                "2562047h47m16.854775807s",
            )],
            &[],
        );
        let (_, entries, _) = Decisions::from_startup(a, now);
        assert_eq!(entries[0].ttl, Some(MAX_TTL));
    }

    #[test]
    fn lifetimes_are_capped_at_the_daemons_max_ttl() {
        let mut f = filter();
        f.max_ttl = Duration::from_secs(3_600);
        let json = stream_json(&[decision(1, "Ip", "198.18.9.5", "ban", "876000h")], &[]);
        let a = decode(json.as_bytes(), &f, Keep::NewAndDeleted).unwrap();
        let (_, entries, _) = Decisions::from_startup(a, Instant::now());
        assert_eq!(entries[0].ttl, Some(Duration::from_secs(3_600)));
    }

    #[test]
    fn scenarios_are_escaped_and_cut_never_refused() {
        let long = "s".repeat(100_000);
        let json = format!(
            r#"{{"new":[{{"duration":"1h","id":1,"scenario":"\u001b]0;owned\u0007\u202e","scope":"Ip","type":"ban","value":"198.18.9.5"}},{{"duration":"1h","id":2,"scenario":"{long}","scope":"Ip","type":"ban","value":"198.18.9.6"}}],"deleted":null}}"#
        );
        let (_, entries, _) = Decisions::from_startup(answer(&json), Instant::now());
        assert_eq!(
            entries.len(),
            2,
            "a strange scenario must not drop the block"
        );
        let reasons: Vec<&str> = entries.iter().filter_map(|e| e.reason.as_deref()).collect();
        assert!(
            reasons.contains(&"\\u{001B}]0;owned\\u{0007}\\u{202E}"),
            "{reasons:?}"
        );
        for r in reasons {
            assert!(crate::text::check("reason", r).is_ok(), "{r:?}");
        }
    }

    #[test]
    fn deltas_add_and_remove() {
        let t0 = Instant::now();
        let (mut state, _, _) = Decisions::from_startup(
            stream(&[decision(1, "Ip", "198.18.9.5", "ban", "1h")], &[]),
            t0,
        );
        let t1 = t0 + Duration::from_secs(1);
        let (change, stats) = state.apply_delta(
            stream(
                &[
                    decision(2, "Range", "198.18.10.0/24", "ban", "4h"),
                    decision(3, "Ip", "198.18.9.9", "captcha", "4h"),
                ],
                &[],
            ),
            t1,
        );
        assert_eq!(nets(&change.add), vec![net("198.18.10.0/24")]);
        assert!(change.remove.is_empty());
        assert_eq!((stats.accepted, stats.other_type), (1, 1));

        // Deleting a decision we never took (a captcha) touches nothing, and a deletion that
        // CrowdSec repeats in the next answer is a no-op the second time.
        let deletion = stream(
            &[],
            &[
                decision(1, "Ip", "198.18.9.5", "ban", "-13.9ms"),
                decision(3, "Ip", "198.18.9.9", "captcha", "-1s"),
                decision(99, "Country", "XX", "ban", "-1s"),
            ],
        );
        let (change, _) = state.apply_delta(deletion.clone(), t1);
        assert_eq!(change.remove, vec![net("198.18.9.5/32")]);
        assert!(change.add.is_empty());
        let (change, _) = state.apply_delta(deletion.clone(), t1);
        assert!(change.is_empty(), "{change:?}");
    }

    #[test]
    fn a_net_deleted_and_decided_again_in_one_answer_stays() {
        let now = Instant::now();
        let (mut state, _, _) = Decisions::from_startup(
            stream(&[decision(1, "Range", "198.18.10.0/24", "ban", "1h")], &[]),
            now,
        );
        let (change, _) = state.apply_delta(
            stream(
                &[decision(2, "Range", "198.18.10.0/24", "ban", "30m")],
                &[decision(1, "Range", "198.18.10.0/24", "ban", "-1s")],
            ),
            now,
        );
        assert!(change.remove.is_empty());
        assert_eq!(change.add.len(), 1);
        assert_eq!(change.add[0].ttl, Some(Duration::from_secs(1_800)));
        assert_eq!(change.add[0].net, net("198.18.10.0/24"));
    }

    #[test]
    fn a_net_whose_other_decisions_expired_leaves_with_the_deleted_one() {
        let t0 = Instant::now();
        let (mut state, _, _) = Decisions::from_startup(
            stream(
                &[
                    decision(1, "Ip", "198.18.9.5", "ban", "1h"),
                    decision(2, "Ip", "198.18.9.5", "ban", "1s"),
                ],
                &[],
            ),
            t0,
        );
        let later = t0 + Duration::from_secs(2);
        let (change, _) = state.apply_delta(
            stream(&[], &[decision(1, "Ip", "198.18.9.5", "ban", "-1s")]),
            later,
        );
        assert_eq!(change.remove, vec![net("198.18.9.5/32")]);
    }
}
