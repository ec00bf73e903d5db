//! The control protocol: newline-delimited JSON over a Unix stream socket.
//!
//! A connection carries any number of exchanges in sequence: the client writes one request
//! line, the server answers with one response line, and so on until the client closes its side.
//! The bundled client sends one request per connection. A request line is at most
//! `MAX_REQUEST_BYTES` long; a longer one is answered with `invalid_input` and the connection
//! is closed, since the rest of the line cannot be told from the next request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Action;
use crate::model::Mode;

/// Longest request line, newline excluded.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Exit code of a failure inside the daemon or of talking to it.
pub const EXIT_INTERNAL: u8 = 1;
/// Exit code of a request the daemon refused as invalid or unsafe: the operator must change it.
pub const EXIT_REFUSED: u8 = 2;
/// Exit code of a caller that may not use the control socket. Distinct from `EXIT_REFUSED` so
/// scripts can tell "fix the request" from "run as root or join the control group".
pub const EXIT_PERMISSION: u8 = 3;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A field the daemon does not know is refused, naming it: `ttl` for `ttl_secs` would otherwise
// make a permanent block.
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Stats,
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<Action>,
        /// Only entries of this origin (a list name, `cli`, `kernel`, `config`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// Every origin with its size, source, last update, revision and drops.
    Lists,
    /// Replaces a named list with the bytes that follow the request line on the same connection,
    /// framed as [`body`] describes. The daemon never opens a path a client names: the client
    /// reads the file with its own rights and sends what it read.
    Import {
        list: String,
        /// What the bytes came from (a file name, `stdin`), shown in `lists` and messages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        #[serde(default = "default_format")]
        format: crate::lists::formats::Format,
        #[serde(default)]
        skip_invalid: bool,
        /// Import even lines that would cut off this host or a management prefix.
        #[serde(default)]
        force: bool,
        /// Replace the list even if that empties it or removes more than half of it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_shrink: bool,
    },
    /// Empties a named list.
    Flush {
        list: String,
    },
    Block {
        /// Addresses or prefixes as typed; the daemon validates them with `parse::parse_net`.
        nets: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Block even what would cut off this host or a management prefix.
        #[serde(default)]
        force: bool,
        /// The named list (origin) the blocks belong to; `cli` without one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list: Option<String>,
    },
    Unblock {
        nets: Vec<String>,
        /// Remove from this list only; from every origin without one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list: Option<String>,
    },
    Allow {
        nets: Vec<String>,
    },
    Unallow {
        nets: Vec<String>,
    },
    /// Re-reads the config file (as SIGHUP does) and answers once it is applied or refused.
    Reload,
    /// The endpoints the inventory learned, of one host or all.
    Inventory {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// The learned API as an OpenAPI 3.1 document, of one host or all.
    InventoryExport {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
}

/// Operations without fields: serde ignores extra keys on unit variants even with
/// `deny_unknown_fields`, so [`parse_request`] checks these itself.
const FIELDLESS_OPS: [&str; 3] = ["status", "stats", "lists"];

/// One request line, refusing any field the operation does not take (with its name).
pub fn parse_request(line: &[u8]) -> Result<Request, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(line)?;
    if let Some(map) = value.as_object()
        && let Some(op) = map.get("op").and_then(serde_json::Value::as_str)
        && FIELDLESS_OPS.contains(&op)
        && let Some(extra) = map.keys().find(|k| *k != "op")
    {
        return Err(serde::de::Error::custom(format_args!(
            "unknown field `{extra}`: `{op}` takes no fields"
        )));
    }
    serde_json::from_value(value)
}

fn default_format() -> crate::lists::formats::Format {
    crate::lists::formats::Format::Auto
}

impl Request {
    /// True for a request whose line is followed by a framed body ([`body`]).
    pub const fn carries_body(&self) -> bool {
        matches!(self, Request::Import { .. })
    }

    /// The `op` tag, as written on the wire and in the audit log.
    pub const fn op(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Stats => "stats",
            Request::List { .. } => "list",
            Request::Lists => "lists",
            Request::Import { .. } => "import",
            Request::Flush { .. } => "flush",
            Request::Block { .. } => "block",
            Request::Unblock { .. } => "unblock",
            Request::Allow { .. } => "allow",
            Request::Unallow { .. } => "unallow",
            Request::Reload => "reload",
            Request::Inventory { .. } => "inventory",
            Request::InventoryExport { .. } => "inventory_export",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok {
        body: serde_json::Value,
    },
    Error {
        code: ControlErrorCode,
        message: String,
    },
}

impl Response {
    pub fn ok(body: serde_json::Value) -> Self {
        Response::Ok { body }
    }

    pub fn error(code: ControlErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlErrorCode {
    /// The request is malformed or names something invalid (a bad address, a zero TTL).
    InvalidInput,
    /// The request is valid but refused, e.g. a block that would lock out this host.
    Refused,
    /// The caller is neither root nor in the control group.
    PermissionDenied,
    /// The daemon failed.
    Internal,
    /// A reload found problems and changed nothing; the message names each, one a line.
    ReloadRefused,
}

impl ControlErrorCode {
    /// The CLI's exit code for this error.
    pub const fn exit_code(self) -> u8 {
        match self {
            ControlErrorCode::InvalidInput | ControlErrorCode::Refused => EXIT_REFUSED,
            ControlErrorCode::PermissionDenied => EXIT_PERMISSION,
            // The daemon runs on with its previous config, but what was asked did not happen.
            ControlErrorCode::Internal | ControlErrorCode::ReloadRefused => EXIT_INTERNAL,
        }
    }
}

/// One entry of the answer to `list`: a decision, or one of the kernel's auto-blocks (origin
/// `kernel`). Fields a reader does not find keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListedBody {
    pub net: String,
    /// `block` or `allow`.
    pub action: String,
    pub origin: String,
    pub reason: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

/// Packets and bytes of one kernel counter, as `stats` and `lists` report them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CounterBody {
    pub packets: u64,
    pub bytes: u64,
}

/// The answer to `stats`. Fields a reader does not find are empty (an older daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsBody {
    /// Per final verdict, named as in `verdict::NAMES`.
    pub verdicts: BTreeMap<String, CounterBody>,
    /// Per detail counter (the `verdict::NAMES` past the verdicts).
    pub details: BTreeMap<String, CounterBody>,
    /// Kernel drops per origin (list) name.
    pub origins: BTreeMap<String, CounterBody>,
}

/// The answer to `status`. Fields a reader does not find keep their defaults (an older daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusBody {
    /// Whether the kernel runs the shield's program; `None` if it could not be asked.
    pub attached: Option<bool>,
    /// Why it is not attached, or why that cannot be told.
    pub attached_detail: Option<String>,
    pub iface: Option<String>,
    pub ifindex: Option<u32>,
    pub xdp_mode: Option<String>,
    pub program_id: Option<u32>,
    pub adopted: Option<bool>,
    pub pid: u32,
    pub uptime_secs: u64,
    pub mode: Mode,
    /// Decisions in the store.
    pub decisions: usize,
    /// Origins (lists) in the store.
    pub lists: usize,
    pub capacity_differs_from_config: bool,
    /// Limits that cost enforcement quality, for the operator.
    pub warnings: Vec<String>,
    /// Fill of each kernel map, by map name.
    pub maps: BTreeMap<String, MapBody>,
    pub limits: LimitsBody,
}

/// Fill of one kernel map; `used` is absent where the daemon does not track it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MapBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    pub capacity: u64,
    /// The rule table only: the expiry grid level in use (0 = finest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_level: Option<u32>,
    /// The rule table only: expiring blocks held in the kernel without expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unbounded_expiries: Option<u64>,
}

/// The kernel's rate limits, as `status` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsBody {
    pub packets_per_second: u64,
    pub syn_per_second: u64,
    pub autoblock_strikes: u32,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let block = Request::Block {
            nets: vec!["198.18.0.0/24".into()],
            ttl_secs: Some(600),
            reason: Some("scan".into()),
            force: false,
            list: None,
        };
        assert_eq!(
            serde_json::to_value(&block).unwrap(),
            json!({"op": "block", "nets": ["198.18.0.0/24"], "ttl_secs": 600, "reason": "scan", "force": false})
        );
        assert_eq!(
            serde_json::to_value(Request::Status).unwrap(),
            json!({"op": "status"})
        );
        assert_eq!(
            serde_json::to_value(Request::List {
                action: Some(Action::Allow),
                origin: None,
            })
            .unwrap(),
            json!({"op": "list", "action": "allow"})
        );
        // Optional fields may be left out by hand-written clients.
        let minimal: Request =
            serde_json::from_str(r#"{"op":"block","nets":["198.18.0.1"]}"#).unwrap();
        assert_eq!(
            minimal,
            Request::Block {
                nets: vec!["198.18.0.1".into()],
                ttl_secs: None,
                reason: None,
                force: false,
                list: None,
            }
        );
        for req in [
            Request::Stats,
            Request::List {
                action: None,
                origin: Some("feed".into()),
            },
            Request::Lists,
            Request::Flush {
                list: "feed".into(),
            },
            block,
            Request::Unallow { nets: vec![] },
            Request::Reload,
        ] {
            let text = serde_json::to_string(&req).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
            assert_eq!(serde_json::to_value(&req).unwrap()["op"], req.op());
        }
    }

    #[test]
    fn responses_have_a_stable_wire_form() {
        assert_eq!(
            serde_json::to_value(Response::ok(json!({"n": 1}))).unwrap(),
            json!({"result": "ok", "body": {"n": 1}})
        );
        assert_eq!(
            serde_json::to_value(Response::error(ControlErrorCode::PermissionDenied, "no"))
                .unwrap(),
            json!({"result": "error", "code": "permission_denied", "message": "no"})
        );
    }

    #[test]
    fn unknown_fields_are_refused_and_named() {
        for (line, field) in [
            (r#"{"op":"block","nets":["198.18.0.1"],"ttl":60}"#, "ttl"),
            (
                r#"{"op":"unblock","nets":["198.18.0.1"],"origin":"x"}"#,
                "origin",
            ),
            (r#"{"op":"status","verbose":true}"#, "verbose"),
            (r#"{"op":"flush","list":"a","all":true}"#, "all"),
        ] {
            let err = parse_request(line.as_bytes()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("unknown field `{field}`")),
                "{line}: {err}"
            );
        }
        let ok = parse_request(br#"{"op":"block","nets":["198.18.0.1"],"ttl_secs":60}"#).unwrap();
        assert!(matches!(
            ok,
            Request::Block {
                ttl_secs: Some(60),
                ..
            }
        ));
    }

    #[test]
    fn status_and_stats_bodies_keep_their_wire_form() {
        let mut maps = BTreeMap::new();
        let rules = MapBody {
            used: Some(3),
            capacity: 10,
            expiry_level: Some(0),
            unbounded_expiries: Some(0),
        };
        maps.insert("rules".to_owned(), rules);
        let sketch = MapBody {
            capacity: 4,
            ..MapBody::default()
        };
        maps.insert("sketch_width".to_owned(), sketch);
        let status = StatusBody {
            maps,
            ..StatusBody::default()
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(
            v["maps"]["rules"],
            json!({"used": 3, "capacity": 10, "expiry_level": 0, "unbounded_expiries": 0})
        );
        // What a map does not track is left out, not null.
        assert_eq!(v["maps"]["sketch_width"], json!({"capacity": 4}));
        // Attachment fields are null while detached, never missing.
        assert_eq!(v.get("iface"), Some(&json!(null)));
        assert_eq!(v["mode"], json!("enforce"));
        assert_eq!(serde_json::from_value::<StatusBody>(v).unwrap(), status);
        // A reader takes an answer with fields missing (an older daemon).
        let stats: StatsBody =
            serde_json::from_value(json!({"verdicts": {"pass": {"packets": 2}}})).unwrap();
        assert_eq!(stats.verdicts["pass"].packets, 2);
        assert_eq!(stats.verdicts["pass"].bytes, 0);
        assert!(stats.origins.is_empty());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ControlErrorCode::InvalidInput.exit_code(), 2);
        assert_eq!(ControlErrorCode::Refused.exit_code(), 2);
        assert_eq!(ControlErrorCode::PermissionDenied.exit_code(), 3);
        assert_eq!(ControlErrorCode::Internal.exit_code(), 1);
        assert_eq!(ControlErrorCode::ReloadRefused.exit_code(), 1);
    }
}
