//! The typed answers to the change operations (`block`, `unblock`, `allow`, `unallow`,
//! `flush`) and to `lists`: the daemon builds them and the CLI and `top` read them, so both
//! sides share one definition of the wire form.
//!
//! The daemon sends every answer as a JSON object through `serde_json::Value`, whose keys are
//! sorted, so field order here does not change the bytes on the wire. Readers take answers with
//! fields missing (`#[serde(default)]`): an older daemon, or a hand-written test double.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::protocol::CounterBody;
use crate::feeds::FeedHealth;

/// The answer to `block`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlockBody {
    pub blocked: Vec<IpNet>,
    /// The origin the blocks went to (`cli` without a named list).
    pub list: String,
    /// `null` for a block without a lifetime.
    pub expires_at_ms: Option<u64>,
    /// What the lockout guard refused and `--force` applied anyway.
    pub forced: Vec<IpNet>,
}

/// One decision an `unblock` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemovedBody {
    pub net: IpNet,
    pub origin: String,
}

/// The answer to `unblock`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnblockBody {
    pub removed: Vec<RemovedBody>,
    /// The kernel's own auto-blocks removed (only when no list was named).
    pub auto_blocks_removed: Vec<IpNet>,
    /// What was asked for and found blocked nowhere.
    pub not_blocked: Vec<IpNet>,
}

/// The answer to `allow`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AllowBody {
    pub allowed: Vec<IpNet>,
}

/// The answer to `unallow`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnallowBody {
    pub removed: Vec<IpNet>,
    pub not_allowed: Vec<IpNet>,
}

/// The answer to `flush`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlushBody {
    pub list: String,
    /// Entries the list held.
    pub removed: usize,
}

/// One row of the answer to `lists`. Three kinds of row share it, and the wire tells them apart
/// by which keys are present, so the optional fields say exactly when they are left out:
/// - a list in the store: every field, `feed` `null` unless a feed fills the list;
/// - a feed that has loaded nothing yet: no `updated_at_ms` or `revision`;
/// - the kernel's auto-blocks: no `updated_at_ms`, `revision` or `feed`, and `drops` `null`
///   when the kernel's counter cannot be read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListsRowBody {
    pub name: String,
    pub entries: usize,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Kernel drops of this origin.
    pub drops: Option<CounterBody>,
    /// Outer `None`: the key is left out (the kernel's row); `Some(None)`: `null` (a list no
    /// feed fills). A reader sees both as `None`, which is all it needs to tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<Option<FeedHealth>>,
}

impl ListsRowBody {
    /// The feed's health, if a feed fills this list.
    pub fn feed(&self) -> Option<&FeedHealth> {
        self.feed.as_ref().and_then(Option::as_ref)
    }

    /// Packets the kernel dropped for this origin (0 when unknown).
    pub fn dropped_packets(&self) -> u64 {
        self.drops.map_or(0, |d| d.packets)
    }
}

/// The answer to a `reload` that took effect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadBody {
    /// The file read; `null` when the daemon runs without one (every setting at its default).
    pub config: Option<PathBuf>,
    /// What the reload left unapplied (settings bound at start), one line each.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::control::Response;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// The bytes the daemon writes for `answer`, as it sends every answer: a `Value` body.
    fn wire(answer: &impl Serialize) -> String {
        serde_json::to_string(&Response::ok(serde_json::to_value(answer).unwrap())).unwrap()
    }

    /// `answer` serialises to `expected` (what the daemon's `json!` built before the answers
    /// were typed), byte for byte on the wire, and reads back as itself.
    fn same_as_before<T>(answer: &T, expected: &Value)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(&serde_json::to_value(answer).unwrap(), expected);
        let before = serde_json::to_string(&Response::ok(expected.clone())).unwrap();
        assert_eq!(wire(answer), before);
        assert_eq!(
            &serde_json::from_value::<T>(expected.clone()).unwrap(),
            answer
        );
    }

    #[test]
    fn change_answers_keep_their_wire_form() {
        let nets = [net("198.18.0.0/24"), net("2001:db8::1/128")];
        let block = BlockBody {
            blocked: nets.to_vec(),
            list: "cli".into(),
            expires_at_ms: None,
            forced: vec![nets[1]],
        };
        let old =
            json!({"blocked": nets, "list": "cli", "expires_at_ms": null, "forced": [nets[1]]});
        same_as_before(&block, &old);
        assert_eq!(
            wire(&block),
            r#"{"result":"ok","body":{"blocked":["198.18.0.0/24","2001:db8::1/128"],"expires_at_ms":null,"forced":["2001:db8::1/128"],"list":"cli"}}"#
        );
        let timed = BlockBody {
            expires_at_ms: Some(1_800_000_600_000),
            forced: vec![],
            ..block
        };
        let old = json!({"blocked": nets, "list": "cli", "expires_at_ms": 1_800_000_600_000_u64, "forced": []});
        same_as_before(&timed, &old);

        let unblock = UnblockBody {
            removed: vec![RemovedBody {
                net: nets[0],
                origin: "feed".into(),
            }],
            auto_blocks_removed: vec![net("198.18.1.35/32")],
            not_blocked: vec![nets[1]],
        };
        let old = json!({
            "removed": [{"net": nets[0], "origin": "feed"}],
            "auto_blocks_removed": ["198.18.1.35/32"],
            "not_blocked": [nets[1]],
        });
        same_as_before(&unblock, &old);

        let allow = AllowBody {
            allowed: nets.to_vec(),
        };
        same_as_before(&allow, &json!({"allowed": nets}));
        let unallow = UnallowBody {
            removed: vec![nets[0]],
            not_allowed: vec![nets[1]],
        };
        same_as_before(
            &unallow,
            &json!({"removed": [nets[0]], "not_allowed": [nets[1]]}),
        );
        let flush = FlushBody {
            list: "feed".into(),
            removed: 3,
        };
        same_as_before(&flush, &json!({"list": "feed", "removed": 3}));
        let reload = ReloadBody {
            config: Some("/etc/api-shield.toml".into()),
            warnings: vec!["capacity is bound at start".into()],
        };
        same_as_before(
            &reload,
            &json!({"config": "/etc/api-shield.toml", "warnings": ["capacity is bound at start"]}),
        );
        same_as_before(
            &ReloadBody::default(),
            &json!({"config": null, "warnings": []}),
        );
    }

    /// The three kinds of `lists` row, each with exactly the keys the daemon sent before.
    #[test]
    fn lists_rows_keep_which_keys_they_carry() {
        let health = FeedHealth {
            last_success_ms: None,
            last_error: Some("no such file".into()),
            errors_total: 2,
            degraded: true,
            ..FeedHealth::default()
        };
        let health_json = json!({
            "last_success_ms": null, "last_error": "no such file", "errors_total": 2,
            "syncs_total": 0, "degraded": true, "lockout_skipped_total": 0,
            "lockout_skipped": [], "malformed_skipped_total": 0,
        });
        let drops = CounterBody {
            packets: 7,
            bytes: 420,
        };
        let rows = vec![
            ListsRowBody {
                name: "cli".into(),
                entries: 1,
                source: "cli".into(),
                updated_at_ms: Some(1_800_000_000_000),
                revision: Some(3),
                drops: Some(drops),
                feed: Some(None),
            },
            ListsRowBody {
                name: "firehol".into(),
                entries: 0,
                source: "feed (nothing loaded yet)".into(),
                updated_at_ms: None,
                revision: None,
                drops: Some(CounterBody::default()),
                feed: Some(Some(health)),
            },
            ListsRowBody {
                name: "kernel".into(),
                entries: 1,
                source: "kernel auto-block".into(),
                updated_at_ms: None,
                revision: None,
                drops: None,
                feed: None,
            },
        ];
        let old = json!([
            {"name": "cli", "entries": 1, "source": "cli", "updated_at_ms": 1_800_000_000_000_u64,
             "revision": 3, "drops": {"packets": 7, "bytes": 420}, "feed": null},
            {"name": "firehol", "entries": 0, "source": "feed (nothing loaded yet)",
             "drops": {"packets": 0, "bytes": 0}, "feed": health_json},
            {"name": "kernel", "entries": 1, "source": "kernel auto-block", "drops": null},
        ]);
        assert_eq!(serde_json::to_value(&rows).unwrap(), old);
        assert_eq!(
            wire(&rows),
            serde_json::to_string(&Response::ok(old.clone())).unwrap()
        );
        // Read back, `null` and a missing `feed` both read as no feed.
        let read: Vec<ListsRowBody> = serde_json::from_value(old).unwrap();
        assert_eq!(read[0].feed(), None);
        assert_eq!(read[1].feed().unwrap().errors_total, 2);
        assert_eq!(read[2].feed(), None);
        assert_eq!(read[2].dropped_packets(), 0);
        assert_eq!(read[0].dropped_packets(), 7);
    }

    /// Readers take answers with fields missing (an older daemon), as they did when they
    /// indexed the JSON by name.
    #[test]
    fn partial_answers_read_with_defaults() {
        let row: ListsRowBody =
            serde_json::from_value(json!({"name": "cli", "feed": {"degraded": true}})).unwrap();
        assert_eq!(row.entries, 0);
        assert_eq!(row.revision, None);
        assert_eq!(row.dropped_packets(), 0);
        assert!(row.feed().unwrap().degraded);
        assert_eq!(row.feed().unwrap().errors_total, 0);
        let block: BlockBody =
            serde_json::from_value(json!({"blocked": ["198.18.0.1/32"]})).unwrap();
        assert_eq!(block.blocked, [net("198.18.0.1/32")]);
        assert!(block.forced.is_empty());
        let unblock: UnblockBody =
            serde_json::from_value(json!({"removed": [{"net": "198.18.0.1/32"}]})).unwrap();
        assert_eq!(unblock.removed[0].origin, "");
        assert!(unblock.not_blocked.is_empty());
        let reload: ReloadBody = serde_json::from_value(json!({})).unwrap();
        assert_eq!(reload, ReloadBody::default());
        let unallow: UnallowBody = serde_json::from_value(json!({"removed": []})).unwrap();
        assert!(unallow.not_allowed.is_empty());
        let flush: FlushBody = serde_json::from_value(json!({"list": "feed"})).unwrap();
        assert_eq!(flush.removed, 0);
        serde_json::from_value::<AllowBody>(json!({})).unwrap();
    }
}
