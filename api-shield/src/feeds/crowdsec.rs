//! The daemon as a CrowdSec bouncer: it polls the local API's decision stream and keeps one
//! list (origin `crowdsec` by default) equal to the bans CrowdSec currently holds.
//!
//! The first request (`startup=true`) returns every active decision and replaces the list;
//! later requests return what changed since this bouncer's previous pull and update it. When
//! the local API cannot be reached the list stays as it is (enforcement must not lapse because
//! a log analyser restarts) and, once it answers again, a full resync replaces the list,
//! because the deltas of the gap are lost.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{FeedHealth, FeedSink, SharedHealth};
use crate::kernel::clock;
use crate::lists::{ListEntry, valid_list_name};
use crate::parse::{InputError, parse_net};

/// Where `crowdsec` listens by default (its `api.server.listen_uri`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The firewall bouncer's default poll period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_LIST: &str = "crowdsec";
/// CrowdSec's spelling of the scopes that name addresses.
pub const SCOPE_IP: &str = "Ip";
pub const SCOPE_RANGE: &str = "Range";
pub const DEFAULT_TYPE: &str = "ban";

/// Below this a bouncer would mostly measure the local API's latency.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Above this new bans would take too long to arrive to be worth having.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3_600);
/// Longest one request (connect, answer, body) may take before it counts as a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failure; it doubles per failure up to the poll interval.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Retry delays are drawn from `[(1 - JITTER) * base, base]`, so bouncers restarted together
/// do not retry in lockstep.
const JITTER: f64 = 0.5;
/// Largest answer accepted: a startup answer with community blocklists holds some 10^5
/// decisions of about 250 bytes; anything far beyond is not a decision stream.
const MAX_BODY_BYTES: usize = 256 << 20;
/// How much of an error answer's body goes into `last_error`.
const MAX_ERROR_BODY_CHARS: usize = 200;
/// Lifetimes are capped here (a century: as good as forever for a ban), so adding one to the
/// monotonic clock can never overflow.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);
/// The permission bits of a mode (without file type, setuid, setgid, sticky).
const PERMISSION_BITS: u32 = 0o777;
/// Group and world permission bits: a bouncer key must be readable by its owner alone.
const GROUP_WORLD_BITS: u32 = 0o077;
const API_KEY_HEADER: &str = "x-api-key";
const STREAM_PATH: &str = "/v1/decisions/stream";

// ---- configuration -------------------------------------------------------------------------

/// The `[crowdsec]` section of the daemon's configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CrowdsecConfig {
    /// Base URL of the local API; plain `http` (it listens on loopback by default).
    #[serde(default = "default_url")]
    pub url: String,
    /// File holding the bouncer key (`cscli bouncers add NAME -o raw`), mode 0600 or stricter.
    pub api_key_file: PathBuf,
    /// Poll period for deltas.
    #[serde(default = "default_interval", with = "humantime_duration")]
    pub interval: Duration,
    /// The list (origin) the decisions go to.
    #[serde(default = "default_list")]
    pub list: String,
    /// Decision scopes to enforce; only `Ip` and `Range` name addresses.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Decision types to enforce (`ban`; `captcha` and others mean nothing at layer 3).
    #[serde(default = "default_types")]
    pub types: Vec<String>,
    /// IPv4 ranges shorter than this are skipped and counted: a compromised or mistaken
    /// LAPI must not be able to ban a continent.
    #[serde(default = "default_min_prefix_v4")]
    pub min_prefix_v4: u8,
    /// The same for IPv6.
    #[serde(default = "default_min_prefix_v6")]
    pub min_prefix_v6: u8,
}

/// Shortest IPv4 range taken from CrowdSec unless configured.
pub const DEFAULT_MIN_PREFIX_V4: u8 = 8;
/// Shortest IPv6 range taken from CrowdSec unless configured.
pub const DEFAULT_MIN_PREFIX_V6: u8 = 16;
const V4_BITS: u8 = 32;
const V6_BITS: u8 = 128;

fn default_min_prefix_v4() -> u8 {
    DEFAULT_MIN_PREFIX_V4
}

fn default_min_prefix_v6() -> u8 {
    DEFAULT_MIN_PREFIX_V6
}

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

fn default_list() -> String {
    DEFAULT_LIST.to_string()
}

fn default_scopes() -> Vec<String> {
    vec![SCOPE_IP.to_string(), SCOPE_RANGE.to_string()]
}

fn default_types() -> Vec<String> {
    vec![DEFAULT_TYPE.to_string()]
}

/// `interval = "10s"` in humantime syntax.
mod humantime_duration {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(D::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl CrowdsecConfig {
    /// A configuration with every default and `api_key_file`.
    pub fn new(api_key_file: PathBuf) -> Self {
        Self {
            url: default_url(),
            api_key_file,
            interval: DEFAULT_INTERVAL,
            list: default_list(),
            scopes: default_scopes(),
            types: default_types(),
            min_prefix_v4: DEFAULT_MIN_PREFIX_V4,
            min_prefix_v6: DEFAULT_MIN_PREFIX_V6,
        }
    }

    pub fn validate(&self) -> Result<(), CrowdsecError> {
        let invalid = |field: &'static str, reason: String| CrowdsecError::Config { field, reason };
        stream_base(&self.url).map_err(|reason| invalid("url", reason))?;
        if self.api_key_file.as_os_str().is_empty() {
            return Err(invalid("api_key_file", "must not be empty".into()));
        }
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&self.interval) {
            return Err(invalid(
                "interval",
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(MIN_INTERVAL),
                    humantime::format_duration(MAX_INTERVAL)
                ),
            ));
        }
        valid_list_name(&self.list).map_err(|reason| invalid("list", reason))?;
        if self.min_prefix_v4 > V4_BITS {
            return Err(invalid("min_prefix_v4", format!("must be 0-{V4_BITS}")));
        }
        if self.min_prefix_v6 > V6_BITS {
            return Err(invalid("min_prefix_v6", format!("must be 0-{V6_BITS}")));
        }
        if self.scopes.is_empty() {
            return Err(invalid("scopes", "must name at least one scope".into()));
        }
        for scope in &self.scopes {
            if !is_address_scope(scope) {
                return Err(invalid(
                    "scopes",
                    format!(
                        "`{scope}` names no addresses; only `{SCOPE_IP}` and `{SCOPE_RANGE}` \
                         can be enforced"
                    ),
                ));
            }
        }
        if self.types.is_empty() {
            return Err(invalid(
                "types",
                "must name at least one decision type".into(),
            ));
        }
        if let Some(bad) = self.types.iter().find(|t| t.trim().is_empty()) {
            return Err(invalid("types", format!("`{bad}` is not a decision type")));
        }
        Ok(())
    }

    /// Reads the bouncer key from `api_key_file` (see [`read_api_key`]).
    pub fn read_api_key(&self) -> Result<String, CrowdsecError> {
        read_api_key(&self.api_key_file)
    }
}

fn is_address_scope(scope: &str) -> bool {
    scope.eq_ignore_ascii_case(SCOPE_IP) || scope.eq_ignore_ascii_case(SCOPE_RANGE)
}

/// The URL with the stream path's prefix checked and its trailing `/` removed.
fn stream_base(url: &str) -> Result<String, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`{url}`: https is not supported; point it at the local API's plain listener"
            ));
        }
        _ => return Err(format!("`{url}` must start with `http://`")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("`{url}` has no host"));
    };
    // Credentials in the URL would end up in logs and in `api-shield lists`.
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{url}` holds credentials; the key goes in api_key_file"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}` must not have a query"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Reads a bouncer key: the file must be readable by its owner alone (it is a credential that
/// lets anyone read every ban), and hold one non-empty line of visible ASCII.
pub fn read_api_key(path: &Path) -> Result<String, CrowdsecError> {
    let key_file = |source| CrowdsecError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(key_file)?;
    let mode = meta.permissions().mode();
    if mode & GROUP_WORLD_BITS != 0 {
        return Err(CrowdsecError::KeyPermissions {
            path: path.to_path_buf(),
            mode: mode & PERMISSION_BITS,
        });
    }
    let text = std::fs::read_to_string(path).map_err(key_file)?;
    let key = text.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CrowdsecError::KeyFormat(path.to_path_buf()));
    }
    Ok(key.to_string())
}

// ---- errors --------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum CrowdsecError {
    #[error("crowdsec.{field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot read the bouncer key {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the bouncer key {} has mode {mode:04o}; make it readable by its owner only (chmod 600)",
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    // The key itself is never part of a message.
    #[error("the bouncer key {} must be one line of visible ASCII", .0.display())]
    KeyFormat(PathBuf),
    #[error("the bouncer key is not a valid header value")]
    KeyHeader,
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error(
        "{url}: no answer within {}",
        humantime::format_duration(REQUEST_TIMEOUT)
    )]
    Timeout { url: String },
    #[error("{url}: answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: the answer is not a decision stream: {reason}")]
    Decode { url: String, reason: String },
    #[error("list `{list}` refused the change: {reason}")]
    Sink { list: String, reason: String },
}

// ---- Go durations --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` is not a Go duration")]
    Invalid(String),
    #[error("`{0}` lacks a unit (h, m, s, ms, us, ns)")]
    MissingUnit(String),
    #[error("`{token}` has the unknown unit `{unit}`")]
    UnknownUnit { token: String, unit: String },
    #[error("`{0}` is out of range (about ±292 years)")]
    Overflow(String),
}

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;
const SECS_PER_MIN: u128 = 60;
const MINS_PER_HOUR: u128 = 60;
/// Fraction digits beyond these weigh less than a nanosecond even in hours (10^-13 h is
/// 0.36 ns), so they are read but not counted.
const MAX_FRACTION_DIGITS: u32 = 18;
const DECIMAL: u128 = 10;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => SECS_PER_MIN * NANOS_PER_SEC,
        "h" => MINS_PER_HOUR * SECS_PER_MIN * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a duration as Go's `time.ParseDuration` does (`3h59m58.123s`, `-1.5s`, `0`) into
/// signed nanoseconds. CrowdSec prints remaining lifetimes this way, negative once expired.
pub fn parse_go_duration(token: &str) -> Result<i64, GoDurationError> {
    let invalid = || GoDurationError::Invalid(token.to_string());
    let overflow = || GoDurationError::Overflow(token.to_string());
    if token.is_empty() {
        return Err(GoDurationError::Empty);
    }
    let (negative, mut rest) = match token.as_bytes()[0] {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    // Go's one unit-less form.
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    // The most a result may weigh: i64::MIN's magnitude is one more than i64::MAX.
    let limit = i64::MAX.unsigned_abs() as u128 + u128::from(negative);
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(f) => f.split_at(f.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(GoDurationError::MissingUnit(token.to_string()));
        }
        let scale = unit_nanos(unit).ok_or_else(|| GoDurationError::UnknownUnit {
            token: token.to_string(),
            unit: unit.to_string(),
        })?;
        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole
                .checked_mul(DECIMAL)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .filter(|w| *w <= limit)
                .ok_or_else(overflow)?;
        }
        let (mut fraction, mut denominator) = (0u128, 1u128);
        for d in frac_digits.bytes().take(MAX_FRACTION_DIGITS as usize) {
            fraction = fraction * DECIMAL + u128::from(d - b'0');
            denominator *= DECIMAL;
        }
        total = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction * scale / denominator))
            .and_then(|w| w.checked_add(total))
            .filter(|t| *t <= limit)
            .ok_or_else(overflow)?;
        rest = after;
    }
    let magnitude = i128::try_from(total).map_err(|_| overflow())?;
    i64::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| overflow())
}

/// The lifetime left, `None` once expired (zero or negative).
fn remaining(nanos: i64) -> Option<Duration> {
    u64::try_from(nanos)
        .ok()
        .filter(|n| *n > 0)
        .map(Duration::from_nanos)
}

// ---- the decision stream -------------------------------------------------------------------

/// One answer of `/v1/decisions/stream`. Either list may be `null`.
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamAnswer {
    #[serde(default)]
    pub new: Option<Vec<WireDecision>>,
    #[serde(default)]
    pub deleted: Option<Vec<WireDecision>>,
}

/// A decision as the local API sends it. Every field is optional here so that one malformed
/// decision is counted and skipped instead of failing the whole answer; unknown fields are
/// accepted because newer CrowdSec versions add some.
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct WireDecision {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub scenario: Option<String>,
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
}

impl Filter {
    pub fn new(cfg: &CrowdsecConfig) -> Self {
        Self {
            scopes: cfg.scopes.clone(),
            types: cfg.types.clone(),
            min_prefix_v4: cfg.min_prefix_v4,
            min_prefix_v6: cfg.min_prefix_v6,
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
struct Mapped {
    net: IpNet,
    id: Option<i64>,
    ttl: Duration,
    reason: Option<String>,
}

fn map_new(d: &WireDecision, filter: &Filter, stats: &mut MapStats) -> Option<Mapped> {
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
        ttl: ttl.min(MAX_TTL),
        reason: d.scenario.clone(),
    })
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
    pub fn from_startup(
        answer: &StreamAnswer,
        filter: &Filter,
        now: Instant,
    ) -> (Self, Vec<ListEntry>, MapStats) {
        let mut stats = MapStats::default();
        let mut state = Decisions::default();
        for d in answer.new.iter().flatten() {
            if let Some(m) = map_new(d, filter, &mut stats) {
                stats.duplicates += usize::from(state.by_net.contains_key(&m.net));
                state.insert(m, now);
            }
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
    pub fn apply_delta(
        &mut self,
        answer: &StreamAnswer,
        filter: &Filter,
        now: Instant,
    ) -> (Change, MapStats) {
        let mut stats = MapStats::default();
        let mut touched = BTreeSet::new();
        let mut fresh = BTreeSet::new();
        for d in answer.new.iter().flatten() {
            if let Some(m) = map_new(d, filter, &mut stats) {
                stats.duplicates += usize::from(!fresh.insert(m.net));
                touched.insert(m.net);
                self.insert(m, now);
            }
        }
        for d in answer.deleted.iter().flatten() {
            // A deletion needs only the net and the id: its duration is already negative, and
            // ids we never took (other types, other scopes) are simply not found.
            let (Some(scope), Some(value)) = (&d.scope, &d.value) else {
                continue;
            };
            let Ok((net, _)) = decision_net(scope, value) else {
                continue;
            };
            // CrowdSec repeats a deletion in later answers; only the first one finds the id.
            if let Some(ids) = self.by_net.get_mut(&net)
                && ids.remove(&d.id).is_some()
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

// ---- retries -------------------------------------------------------------------------------

/// The retry delay before jitter after `failures` consecutive failures (1 for the first):
/// `INITIAL_BACKOFF` doubling per failure, never more than the poll interval.
pub fn backoff_base(failures: u32, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1);
    let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
    INITIAL_BACKOFF
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(interval)
}

/// `base` shortened by up to `JITTER` of itself; `unit` is uniform in `[0, 1)`.
pub fn jittered(base: Duration, unit: f64) -> Duration {
    base.mul_f64(1.0 - JITTER * unit.clamp(0.0, 1.0))
}

fn backoff(failures: u32, interval: Duration) -> Duration {
    jittered(
        backoff_base(failures, interval),
        rand::rng().random::<f64>(),
    )
}

// ---- the local API client ------------------------------------------------------------------

struct Lapi {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
    scopes: String,
    key: HeaderValue,
}

impl Lapi {
    fn new(cfg: &CrowdsecConfig, api_key: &str) -> Result<Self, CrowdsecError> {
        let base = stream_base(&cfg.url).map_err(|reason| CrowdsecError::Config {
            field: "url",
            reason,
        })?;
        let mut key = HeaderValue::from_str(api_key).map_err(|_| CrowdsecError::KeyHeader)?;
        // Keeps the key out of any debug print of the request.
        key.set_sensitive(true);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            base,
            scopes: cfg.scopes.join(","),
            key,
        })
    }

    /// One stream request; `startup` asks for the full state instead of the changes.
    async fn stream(&self, startup: bool) -> Result<StreamAnswer, CrowdsecError> {
        let url = format!(
            "{}{STREAM_PATH}?startup={startup}&scopes={}",
            self.base, self.scopes
        );
        tokio::time::timeout(REQUEST_TIMEOUT, self.fetch(&url))
            .await
            .map_err(|_| CrowdsecError::Timeout { url: url.clone() })?
    }

    async fn fetch(&self, url: &str) -> Result<StreamAnswer, CrowdsecError> {
        let failed = |reason: String| CrowdsecError::Request {
            url: url.to_string(),
            reason,
        };
        let request = Request::get(url)
            .header(HeaderName::from_static(API_KEY_HEADER), self.key.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(CrowdsecError::Status {
                url: url.to_string(),
                status,
                body: text.chars().take(MAX_ERROR_BODY_CHARS).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| CrowdsecError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
}

/// An error with its causes (hyper's top-level message alone says little: "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

// ---- the feed ------------------------------------------------------------------------------

fn lock(health: &SharedHealth) -> std::sync::MutexGuard<'_, FeedHealth> {
    health.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record_success(health: &SharedHealth) {
    let mut h = lock(health);
    h.last_success_ms = Some(clock::now_unix_ms());
    h.syncs_total += 1;
    h.degraded = false;
}

fn record_failure(health: &SharedHealth, error: &CrowdsecError) {
    let mut h = lock(health);
    h.last_error = Some(error.to_string());
    h.errors_total += 1;
    h.degraded = true;
}

/// Runs a sink call off the async threads: applying a list may wait for the kernel.
async fn in_sink<F>(sink: &Arc<dyn FeedSink>, list: &str, f: F) -> Result<(), CrowdsecError>
where
    F: FnOnce(&dyn FeedSink) -> Result<(), String> + Send + 'static,
{
    let sink = Arc::clone(sink);
    let sink_error = |reason| CrowdsecError::Sink {
        list: list.to_string(),
        reason,
    };
    tokio::task::spawn_blocking(move || f(sink.as_ref()))
        .await
        .map_err(|e| sink_error(e.to_string()))?
        .map_err(sink_error)
}

struct Feed {
    lapi: Lapi,
    filter: Filter,
    list: String,
    source: String,
    sink: Arc<dyn FeedSink>,
    /// `None` until a full sync succeeded, and again after any failure.
    synced: Option<Decisions>,
}

impl Feed {
    async fn sync(&mut self) -> Result<(), CrowdsecError> {
        let startup = self.synced.is_none();
        let answer = self.lapi.stream(startup).await?;
        let now = Instant::now();
        match self.synced.take() {
            None => {
                let (state, entries, stats) = Decisions::from_startup(&answer, &self.filter, now);
                let count = entries.len();
                let (list, source) = (self.list.clone(), self.source.clone());
                in_sink(&self.sink, &self.list, move |s| {
                    s.replace(&list, &source, entries)
                })
                .await?;
                tracing::info!(list = %self.list, entries = count, ?stats, "crowdsec: full sync");
                self.synced = Some(state);
            }
            Some(mut state) => {
                let (change, stats) = state.apply_delta(&answer, &self.filter, now);
                if !change.is_empty() {
                    let (adds, removes) = (change.add.len(), change.remove.len());
                    let (list, source) = (self.list.clone(), self.source.clone());
                    // On failure `state` is dropped with the `take` above: the next round
                    // resyncs in full, since this delta will not be sent again.
                    in_sink(&self.sink, &self.list, move |s| {
                        s.update(&list, &source, change.add, change.remove)
                    })
                    .await?;
                    tracing::debug!(list = %self.list, adds, removes, ?stats, "crowdsec: delta");
                } else if stats.skipped() > 0 {
                    tracing::debug!(list = %self.list, ?stats, "crowdsec: nothing to apply");
                }
                self.synced = Some(state);
            }
        }
        Ok(())
    }
}

/// Keeps list `cfg.list` equal to CrowdSec's active decisions until `shutdown` completes.
///
/// Failures never clear the list: they mark `health` degraded and are retried with a
/// jittered exponential backoff (from `INITIAL_BACKOFF` up to `cfg.interval`); the first
/// success after a failure is a full resync. `api_key` is never logged nor put in `health`.
pub async fn run(
    cfg: CrowdsecConfig,
    api_key: String,
    sink: Arc<dyn FeedSink>,
    health: SharedHealth,
    shutdown: impl Future<Output = ()>,
) {
    if let Err(e) = cfg.validate() {
        tracing::error!(error = %e, "crowdsec feed not started");
        record_failure(&health, &e);
        return;
    }
    run_unchecked(cfg, api_key, sink, health, shutdown).await;
}

/// `run` without the bounds on the configuration, so tests can poll faster than an operator may.
async fn run_unchecked(
    cfg: CrowdsecConfig,
    api_key: String,
    sink: Arc<dyn FeedSink>,
    health: SharedHealth,
    shutdown: impl Future<Output = ()>,
) {
    let lapi = match Lapi::new(&cfg, &api_key) {
        Ok(lapi) => lapi,
        Err(e) => {
            tracing::error!(error = %e, "crowdsec feed not started");
            record_failure(&health, &e);
            return;
        }
    };
    drop(api_key);
    let mut feed = Feed {
        source: lapi.base.clone(),
        lapi,
        filter: Filter::new(&cfg),
        list: cfg.list.clone(),
        sink,
        synced: None,
    };
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            () = &mut shutdown => return,
            outcome = feed.sync() => outcome,
        };
        let delay = match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(list = %cfg.list, failures, "crowdsec: local API back, resynced");
                }
                failures = 0;
                record_success(&health);
                cfg.interval
            }
            Err(e) => {
                feed.synced = None;
                failures = failures.saturating_add(1);
                record_failure(&health, &e);
                let delay = backoff(failures, cfg.interval);
                tracing::warn!(
                    list = %cfg.list,
                    error = %e,
                    failures,
                    retry_in = %humantime::format_duration(delay),
                    "crowdsec: sync failed; the list stays as it is"
                );
                delay
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The feed on its own thread with its own runtime, for callers without one (tests, tools).
/// Stops when the handle is stopped or dropped.
pub struct FeedThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts `run` on a new thread.
pub fn spawn(
    cfg: CrowdsecConfig,
    api_key: String,
    sink: Arc<dyn FeedSink>,
    health: SharedHealth,
) -> std::io::Result<FeedThread> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("crowdsec-feed".into())
        .spawn(move || {
            runtime.block_on(run(cfg, api_key, sink, health, async {
                // A dropped sender stops the feed as well.
                let _ = stopped.await;
            }));
        })?;
    Ok(FeedThread {
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl FeedThread {
    /// Stops the feed and waits for its thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FeedThread {
    fn drop(&mut self) {
        self.shut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    fn go(token: &str) -> i64 {
        parse_go_duration(token).unwrap_or_else(|e| panic!("{token}: {e}"))
    }

    #[test]
    fn go_durations_as_crowdsec_prints_them() {
        assert_eq!(go("3h59m58.123s"), 3 * H + 59 * M + 58 * S + 123 * MS);
        assert_eq!(go("59m59s"), 59 * M + 59 * S);
        assert_eq!(go("1h"), H);
        assert_eq!(go("59m59.0s"), 59 * M + 59 * S);
        assert_eq!(go("1m29.177866383s"), M + 29 * S + 177_866_383 * NS);
        assert_eq!(go("1h59m59.177861971s"), H + 59 * M + 59 * S + 177_861_971);
        assert_eq!(go("-13.955867ms"), -(13 * MS + 955_867 * NS));
        assert_eq!(go("-35.706207799s"), -(35 * S + 706_207_799));
        assert_eq!(go("-1.5s"), -(S + S / 2));
    }

    #[test]
    fn go_durations_every_unit_and_form() {
        assert_eq!(go("7ns"), 7 * NS);
        assert_eq!(go("10us"), 10 * US);
        assert_eq!(go("10\u{b5}s"), 10 * US, "micro sign");
        assert_eq!(go("10\u{3bc}s"), 10 * US, "Greek mu");
        assert_eq!(go("100ms"), 100 * MS);
        assert_eq!(go("1.5h"), H + 30 * M);
        assert_eq!(go(".5s"), S / 2);
        assert_eq!(go("1.s"), S);
        assert_eq!(go("1h30m"), H + 30 * M);
        assert_eq!(go("1m1m"), 2 * M, "Go adds repeated units");
        assert_eq!(go("+5s"), 5 * S);
        assert_eq!(go("1.000000001s"), S + 1);
        assert_eq!(go("0.1ns"), 0, "below a nanosecond truncates");
        // Digits beyond what can weigh a nanosecond are read and ignored.
        assert_eq!(go("1.00000000000000000000000009s"), S);
        assert_eq!(go("2562047h47m16.854775807s"), i64::MAX);
        assert_eq!(go("-2562047h47m16.854775808s"), i64::MIN);
    }

    #[test]
    fn go_durations_zero() {
        for zero in ["0", "-0", "+0", "0s", "0h0m0s", "0.0ms", "-0s"] {
            assert_eq!(go(zero), 0, "{zero}");
        }
    }

    #[test]
    fn go_durations_invalid() {
        use GoDurationError::*;
        assert_eq!(parse_go_duration(""), Err(Empty));
        for bad in [
            "-", "+", ".s", "s", "h5", "+-1s", "--1s", "1h 30m", " 1h", "1h ", "s5",
        ] {
            let err = parse_go_duration(bad).unwrap_err();
            assert!(
                matches!(err, Invalid(_) | UnknownUnit { .. }),
                "{bad}: {err:?}"
            );
        }
        for bad in ["5", "1h5", "1.5.5s", "00"] {
            assert_eq!(
                parse_go_duration(bad),
                Err(MissingUnit(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_go_duration("3d"),
            Err(UnknownUnit {
                token: "3d".into(),
                unit: "d".into()
            })
        );
        assert!(matches!(parse_go_duration("1hh"), Err(UnknownUnit { .. })));
        for big in [
            "2562047h47m16.854775808s",
            "3000000h",
            "99999999999999999999999999999999999999999s",
            "-2562047h47m16.854775809s",
        ] {
            assert_eq!(parse_go_duration(big), Err(Overflow(big.into())), "{big}");
        }
        assert!(
            parse_go_duration("3d")
                .unwrap_err()
                .to_string()
                .contains("3d")
        );
    }

    // ---- mapping -------------------------------------------------------------------------

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn filter() -> Filter {
        Filter::new(&CrowdsecConfig::new("/k".into()))
    }

    fn answer(json: &str) -> StreamAnswer {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn decision(id: i64, scope: &str, value: &str, kind: &str, duration: &str) -> String {
        format!(
            r#"{{"duration":"{duration}","id":{id},"origin":"cscli","scenario":"s{id}","scope":"{scope}","type":"{kind}","value":"{value}","simulated":false}}"#
        )
    }

    /// A stream answer's JSON text; an empty part is `null`, as CrowdSec sends it.
    fn stream_json(new: &[String], deleted: &[String]) -> String {
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
        let (state, entries, stats) = Decisions::from_startup(&a, &filter(), now);
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
            Some(Duration::from_nanos(go("59m59.177863863s") as u64))
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
            let (mut state, entries, stats) =
                Decisions::from_startup(&answer(json), &filter(), now);
            assert!(entries.is_empty() && state.is_empty(), "{json}");
            assert_eq!(stats, MapStats::default());
            let (change, _) = state.apply_delta(&answer(json), &filter(), now);
            assert!(change.is_empty(), "{json}");
        }
        for not_a_stream in ["null", "42", r#""x""#, r#"{"new":{}}"#] {
            assert!(
                serde_json::from_str::<StreamAnswer>(not_a_stream).is_err(),
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
        let (mut state, entries, stats) = Decisions::from_startup(&a, &filter(), now);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].ttl, Some(Duration::from_secs(7_200)));
        assert_eq!(entries[0].reason.as_deref(), Some("s2"));
        assert_eq!(stats.duplicates, 2);

        // The longest one goes: the net stays, with the next longest lifetime.
        let (change, stats) = state.apply_delta(
            &stream(&[], &[decision(2, "Ip", "198.18.9.5", "ban", "-1s")]),
            &filter(),
            now,
        );
        assert!(change.remove.is_empty());
        assert_eq!(change.add.len(), 1);
        assert_eq!(change.add[0].ttl, Some(Duration::from_secs(3_600)));
        assert_eq!(stats.removed, 0);

        // The last two go in one answer: now it leaves.
        let (change, stats) = state.apply_delta(
            &stream(
                &[],
                &[
                    decision(1, "Ip", "198.18.9.5", "ban", "-1s"),
                    decision(3, "Ip", "198.18.9.5", "ban", "-1s"),
                ],
            ),
            &filter(),
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
        let (_, entries, _) = Decisions::from_startup(&a, &filter(), now);
        assert_eq!(entries[0].ttl, Some(MAX_TTL));
    }

    #[test]
    fn deltas_add_and_remove() {
        let t0 = Instant::now();
        let (mut state, _, _) = Decisions::from_startup(
            &stream(&[decision(1, "Ip", "198.18.9.5", "ban", "1h")], &[]),
            &filter(),
            t0,
        );
        let t1 = t0 + Duration::from_secs(1);
        let (change, stats) = state.apply_delta(
            &stream(
                &[
                    decision(2, "Range", "198.18.10.0/24", "ban", "4h"),
                    decision(3, "Ip", "198.18.9.9", "captcha", "4h"),
                ],
                &[],
            ),
            &filter(),
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
        let (change, _) = state.apply_delta(&deletion, &filter(), t1);
        assert_eq!(change.remove, vec![net("198.18.9.5/32")]);
        assert!(change.add.is_empty());
        let (change, _) = state.apply_delta(&deletion, &filter(), t1);
        assert!(change.is_empty(), "{change:?}");
    }

    #[test]
    fn a_net_deleted_and_decided_again_in_one_answer_stays() {
        let now = Instant::now();
        let (mut state, _, _) = Decisions::from_startup(
            &stream(&[decision(1, "Range", "198.18.10.0/24", "ban", "1h")], &[]),
            &filter(),
            now,
        );
        let (change, _) = state.apply_delta(
            &stream(
                &[decision(2, "Range", "198.18.10.0/24", "ban", "30m")],
                &[decision(1, "Range", "198.18.10.0/24", "ban", "-1s")],
            ),
            &filter(),
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
            &stream(
                &[
                    decision(1, "Ip", "198.18.9.5", "ban", "1h"),
                    decision(2, "Ip", "198.18.9.5", "ban", "1s"),
                ],
                &[],
            ),
            &filter(),
            t0,
        );
        let later = t0 + Duration::from_secs(2);
        let (change, _) = state.apply_delta(
            &stream(&[], &[decision(1, "Ip", "198.18.9.5", "ban", "-1s")]),
            &filter(),
            later,
        );
        assert_eq!(change.remove, vec![net("198.18.9.5/32")]);
    }

    // ---- backoff -------------------------------------------------------------------------

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_interval() {
        let interval = Duration::from_secs(10);
        let bases: Vec<u64> = (1..=7)
            .map(|f| backoff_base(f, interval).as_secs())
            .collect();
        assert_eq!(bases, vec![1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(backoff_base(u32::MAX, interval), interval);
        assert_eq!(backoff_base(0, interval), INITIAL_BACKOFF);
        let short = Duration::from_millis(300);
        assert_eq!(
            backoff_base(1, short),
            short,
            "never longer than the interval"
        );
    }

    #[test]
    fn jitter_stays_within_half_to_whole_base() {
        let base = Duration::from_secs(8);
        assert_eq!(jittered(base, 0.0), base);
        assert_eq!(jittered(base, 1.0), base / 2);
        assert_eq!(
            jittered(base, 7.0),
            base / 2,
            "out-of-range draws are clamped"
        );
        for failures in 1..64 {
            let d = backoff(failures, DEFAULT_INTERVAL);
            let b = backoff_base(failures, DEFAULT_INTERVAL);
            assert!(
                d <= b && d >= b / 2 && d <= DEFAULT_INTERVAL,
                "{failures}: {d:?}"
            );
        }
    }

    // ---- configuration -------------------------------------------------------------------

    #[test]
    fn config_defaults_and_unknown_keys() {
        let cfg: CrowdsecConfig =
            toml::from_str(r#"api_key_file = "/etc/api-shield/cs.key""#).expect("defaults");
        assert_eq!(cfg, CrowdsecConfig::new("/etc/api-shield/cs.key".into()));
        assert_eq!(cfg.url, "http://127.0.0.1:8080");
        assert_eq!(cfg.interval, Duration::from_secs(10));
        assert_eq!(cfg.list, "crowdsec");
        assert_eq!(cfg.scopes, ["Ip", "Range"]);
        assert_eq!(cfg.types, ["ban"]);
        cfg.validate().expect("defaults are valid");

        let cfg: CrowdsecConfig = toml::from_str(
            r#"
            url = "http://10.0.0.2:8081/"
            api_key_file = "k"
            interval = "30s"
            list = "cs-main"
            scopes = ["Ip"]
            types = ["ban", "captcha"]
            "#,
        )
        .expect("full");
        assert_eq!(cfg.interval, Duration::from_secs(30));
        cfg.validate().expect("valid");
        let round: CrowdsecConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(round, cfg);

        let err = toml::from_str::<CrowdsecConfig>("api_key_file = \"k\"\nkey = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key"), "{err}");
        assert!(toml::from_str::<CrowdsecConfig>(r#"url = "http://x""#).is_err());
        assert!(
            toml::from_str::<CrowdsecConfig>("api_key_file = \"k\"\ninterval = \"often\"").is_err()
        );
    }

    #[test]
    fn config_validation() {
        let base = CrowdsecConfig::new("/k".into());
        let field_of = |cfg: CrowdsecConfig| match cfg.validate() {
            Err(CrowdsecError::Config { field, .. }) => field,
            other => panic!("{cfg:?}: {other:?}"),
        };
        for url in [
            "https://127.0.0.1:8080",
            "ftp://x",
            "127.0.0.1:8080",
            "http://user:pw@127.0.0.1:8080",
            "http://127.0.0.1:8080/?a=b",
            "",
        ] {
            let cfg = CrowdsecConfig {
                url: url.into(),
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "url", "{url}");
        }
        for interval in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(7_200),
        ] {
            let cfg = CrowdsecConfig {
                interval,
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "interval");
        }
        let cfg = CrowdsecConfig {
            list: "../x".into(),
            ..base.clone()
        };
        assert_eq!(field_of(cfg), "list");
        for scopes in [vec![], vec!["Country".to_string()]] {
            let cfg = CrowdsecConfig {
                scopes,
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "scopes");
        }
        for types in [vec![], vec![" ".to_string()]] {
            let cfg = CrowdsecConfig {
                types,
                ..base.clone()
            };
            assert_eq!(field_of(cfg), "types");
        }
        let cfg = CrowdsecConfig {
            api_key_file: PathBuf::new(),
            ..base.clone()
        };
        assert_eq!(field_of(cfg), "api_key_file");
        assert_eq!(stream_base("http://h:1/").unwrap(), "http://h:1");
    }

    #[test]
    fn key_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0123abcd\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_api_key(&path).unwrap_err();
            assert!(
                matches!(err, CrowdsecError::KeyPermissions { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(!err.to_string().contains("0123abcd"));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_api_key(&path).unwrap(), "0123abcd");
        for bad in ["", "  \n", "two words", "k\u{e9}y"] {
            std::fs::write(&path, bad).unwrap();
            let err = read_api_key(&path).unwrap_err();
            assert!(matches!(err, CrowdsecError::KeyFormat(_)), "{bad:?}: {err}");
        }
        assert!(matches!(
            read_api_key(&dir.path().join("absent")),
            Err(CrowdsecError::KeyFile { .. })
        ));
    }

    // ---- the loop against a scripted local API -------------------------------------------

    /// Every sink call, in order.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl FeedSink for Recorder {
        fn replace(&self, origin: &str, _: &str, entries: Vec<ListEntry>) -> Result<(), String> {
            let nets: Vec<String> = entries.iter().map(|e| e.net.to_string()).collect();
            self.calls
                .lock()
                .unwrap()
                .push(format!("replace {origin} [{}]", nets.join(" ")));
            Ok(())
        }

        fn update(
            &self,
            origin: &str,
            _: &str,
            add: Vec<ListEntry>,
            remove: Vec<IpNet>,
        ) -> Result<(), String> {
            let add: Vec<String> = add.iter().map(|e| e.net.to_string()).collect();
            let remove: Vec<String> = remove.iter().map(ToString::to_string).collect();
            self.calls.lock().unwrap().push(format!(
                "update {origin} +[{}] -[{}]",
                add.join(" "),
                remove.join(" ")
            ));
            Ok(())
        }
    }

    /// One scripted answer: the status and body for a request whose `startup` is as given.
    struct Scripted {
        startup: bool,
        status: u16,
        body: String,
    }

    /// Serves `script` in order, one request per connection, and records the requests.
    async fn fake_lapi(script: Vec<Scripted>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for step in script {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed early");
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8(head).unwrap();
                assert!(head.contains("x-api-key: sekrit\r\n"), "{head}");
                let line = head.lines().next().unwrap().to_string();
                assert_eq!(
                    line.contains("startup=true"),
                    step.startup,
                    "request {line} out of script"
                );
                seen.push(line);
                let reply = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{}",
                    step.status,
                    step.body.len(),
                    step.body
                );
                conn.write_all(reply.as_bytes()).await.unwrap();
                conn.shutdown().await.unwrap();
            }
            seen
        });
        (url, server)
    }

    #[tokio::test]
    async fn the_loop_resyncs_after_errors_without_clearing() {
        let ok = |startup, body: String| Scripted {
            startup,
            status: 200,
            body,
        };
        let script = vec![
            ok(
                true,
                stream_json(&[decision(1, "Ip", "198.18.9.5", "ban", "1h")], &[]),
            ),
            ok(
                false,
                stream_json(&[decision(2, "Range", "198.18.10.0/24", "ban", "1h")], &[]),
            ),
            ok(false, stream_json(&[], &[])),
            Scripted {
                startup: false,
                status: 500,
                body: r#"{"message":"database is locked"}"#.into(),
            },
            Scripted {
                startup: true,
                status: 403,
                body: r#"{"message":"access forbidden"}"#.into(),
            },
            ok(
                true,
                stream_json(&[decision(2, "Range", "198.18.10.0/24", "ban", "1h")], &[]),
            ),
        ];
        let steps = script.len();
        let (url, server) = fake_lapi(script).await;
        let cfg = CrowdsecConfig {
            url,
            interval: Duration::from_millis(50),
            ..CrowdsecConfig::new("/unused".into())
        };
        let recorder = Arc::new(Recorder::default());
        let health: SharedHealth = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let feed = tokio::spawn(run_unchecked(
            cfg,
            "sekrit".into(),
            recorder.clone(),
            health.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let seen = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the feed went through the script")
            .unwrap();
        assert_eq!(seen.len(), steps);
        // Let the last answer reach the sink, then stop.
        let deadline = Instant::now() + Duration::from_secs(5);
        while recorder.calls.lock().unwrap().len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), feed)
            .await
            .expect("the feed stops")
            .unwrap();
        assert_eq!(
            *recorder.calls.lock().unwrap(),
            vec![
                "replace crowdsec [198.18.9.5/32]",
                "update crowdsec +[198.18.10.0/24] -[]",
                "replace crowdsec [198.18.10.0/24]",
            ]
        );
        let h = health.lock().unwrap().clone();
        assert_eq!(h.errors_total, 2);
        assert_eq!(h.syncs_total, 4);
        assert!(!h.degraded);
        let last = h.last_error.expect("the last error is kept");
        assert!(last.contains("403") && !last.contains("sekrit"), "{last}");
    }

    #[tokio::test]
    async fn an_unreachable_lapi_degrades_health_and_touches_nothing() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = CrowdsecConfig {
            url: format!("http://127.0.0.1:{port}"),
            interval: Duration::from_millis(50),
            ..CrowdsecConfig::new("/unused".into())
        };
        let recorder = Arc::new(Recorder::default());
        let health: SharedHealth = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let feed = tokio::spawn(run_unchecked(
            cfg,
            "sekrit".into(),
            recorder.clone(),
            health.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while health.lock().unwrap().errors_total < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(()).unwrap();
        feed.await.unwrap();
        let h = health.lock().unwrap().clone();
        assert!(
            h.degraded && h.errors_total >= 2 && h.syncs_total == 0,
            "{h:?}"
        );
        assert!(h.last_error.unwrap().contains(&port.to_string()));
        assert!(recorder.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_invalid_config_is_reported_not_run() {
        let health: SharedHealth = Arc::default();
        let cfg = CrowdsecConfig {
            url: "https://127.0.0.1:8080".into(),
            ..CrowdsecConfig::new("/k".into())
        };
        run(
            cfg,
            "k".into(),
            Arc::new(Recorder::default()),
            health.clone(),
            std::future::pending(),
        )
        .await;
        let h = health.lock().unwrap().clone();
        assert!(h.degraded && h.last_error.unwrap().contains("https"));
    }
}
