//! The JSON bodies of the push API (`docs/push-api.schema.json`) and the checks that turn a
//! batch into list entries.
//!
//! The types are public so a client (the CLI, a test) can build and read the same bodies.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use hyper::StatusCode;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lists::ListEntry;
use crate::parse::parse_net;

/// Longest `reason`, in characters: enough for a scenario name and a short note, short
/// enough that reasons do not dominate the size of a batch.
pub const MAX_REASON_CHARS: usize = crate::text::MAX_TEXT_CHARS;
/// Longest `ttl_secs`: one year. More is almost surely a unit mistake (milliseconds), and it
/// keeps deadline arithmetic far from overflow; omit the TTL for an entry that stays.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 60 * 60;

/// `POST /v1/lists/{name}/batch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The list's revision the writer last saw (0 for a list that does not exist yet).
    pub revision: u64,
    #[serde(default)]
    pub add: Vec<AddItem>,
    /// Addresses or prefixes, as `parse_net` accepts them.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    /// An address or a prefix without host bits, as `parse_net` accepts it.
    pub net: String,
    /// Seconds the entry lasts; absent for an entry that lasts until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// 200 to a batch. `added` and `removed` count the batch's items, not the changes they made
/// (removing an absent prefix counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub revision: u64,
    pub added: usize,
    pub removed: usize,
}

/// 200 to `GET /v1/lists/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    pub revision: u64,
    pub entries: Vec<Value>,
}

/// The `error` of an error body; each code has one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    InvalidListName,
    /// The body is not a batch: bad JSON, a missing or unknown key, a wrong type.
    InvalidRequest,
    /// One entry is not acceptable; `field` and `index` say which.
    InvalidEntry,
    /// The backend refused the batch as a whole.
    InvalidBatch,
    RevisionConflict,
    RequestTimeout,
    BodyTooLarge,
    BatchTooLarge,
    CapacityExceeded,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidListName
            | Self::InvalidRequest
            | Self::InvalidEntry
            | Self::InvalidBatch => StatusCode::BAD_REQUEST,
            Self::RevisionConflict => StatusCode::CONFLICT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyTooLarge | Self::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::CapacityExceeded => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Which array of a batch an entry error points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryField {
    Add,
    Remove,
}

impl fmt::Display for EntryField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add => "add",
            Self::Remove => "remove",
        })
    }
}

/// Every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub message: String,
    /// With `revision_conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<u64>,
    /// With `invalid_entry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<EntryField>,
    /// With `invalid_entry`: the 0-based position in `field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// A batch whose every entry passed.
#[derive(Debug)]
pub(crate) struct Batch {
    pub expected: u64,
    pub add: Vec<ListEntry>,
    pub remove: Vec<IpNet>,
}

/// The first entry of a batch that did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EntryError {
    pub field: EntryField,
    pub index: usize,
    /// Starts with `field[index]: `.
    pub message: String,
}

impl BatchRequest {
    pub fn len(&self) -> usize {
        self.add.len() + self.remove.len()
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Checks every entry, stopping at the first bad one. A prefix may appear once per batch:
    /// twice would leave its TTL, reason or presence to the order the backend applies them.
    pub(crate) fn validate(self) -> Result<Batch, EntryError> {
        let mut seen: HashMap<IpNet, (EntryField, usize)> = HashMap::with_capacity(self.len());
        let mut check = |field, index, token: &str| -> Result<IpNet, EntryError> {
            let fail = |detail: String| EntryError {
                field,
                index,
                message: format!("{field}[{index}]: {detail}"),
            };
            let net = parse_net(token).map_err(|e| fail(e.to_string()))?;
            if let Some((first_field, first_index)) = seen.insert(net, (field, index)) {
                return Err(fail(format!(
                    "`{token}` is also {first_field}[{first_index}]; a batch names each prefix \
                     once"
                )));
            }
            Ok(net)
        };

        let mut add = Vec::with_capacity(self.add.len());
        for (index, item) in self.add.into_iter().enumerate() {
            let net = check(EntryField::Add, index, &item.net)?;
            let fail = |detail: AddError| EntryError {
                field: EntryField::Add,
                index,
                message: format!("add[{index}]: {detail}"),
            };
            let ttl = item.ttl_secs.map(checked_ttl).transpose().map_err(fail)?;
            if let Some(reason) = &item.reason {
                crate::text::check("reason", reason).map_err(|e| fail(e.into()))?;
            }
            add.push(ListEntry {
                net,
                ttl,
                reason: item.reason,
            });
        }
        let remove = self
            .remove
            .iter()
            .enumerate()
            .map(|(index, token)| check(EntryField::Remove, index, token))
            .collect::<Result<_, _>>()?;
        Ok(Batch {
            expected: self.revision,
            add,
            remove,
        })
    }
}

/// What is wrong with an entry to add, besides its prefix.
#[derive(Debug, thiserror::Error)]
enum AddError {
    #[error("ttl_secs must be at least 1; omit it for an entry that stays")]
    ZeroTtl,
    #[error("ttl_secs {0} is more than a year ({MAX_TTL_SECS}); omit it for an entry that stays")]
    LongTtl(u64),
    #[error(transparent)]
    Reason(#[from] crate::text::TextError),
}

fn checked_ttl(secs: u64) -> Result<Duration, AddError> {
    match secs {
        0 => Err(AddError::ZeroTtl),
        s if s > MAX_TTL_SECS => Err(AddError::LongTtl(s)),
        s => Ok(Duration::from_secs(s)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn batch(value: Value) -> BatchRequest {
        serde_json::from_value(value).unwrap()
    }

    fn entry_error(value: Value) -> EntryError {
        batch(value).validate().unwrap_err()
    }

    #[test]
    fn a_good_batch_becomes_entries() {
        let checked = batch(json!({
            "revision": 7,
            "add": [
                {"net": "198.18.0.0/24", "ttl_secs": 600, "reason": "scanner"},
                {"net": "2001:db8::1"},
            ],
            "remove": ["198.18.9.9"],
        }))
        .validate()
        .unwrap();
        assert_eq!(checked.expected, 7);
        assert_eq!(
            checked.add,
            [
                ListEntry {
                    net: "198.18.0.0/24".parse().unwrap(),
                    ttl: Some(Duration::from_secs(600)),
                    reason: Some("scanner".into()),
                },
                ListEntry {
                    net: "2001:db8::1/128".parse().unwrap(),
                    ttl: None,
                    reason: None,
                },
            ]
        );
        assert_eq!(checked.remove, ["198.18.9.9/32".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn keys_default_and_unknown_ones_are_refused() {
        assert_eq!(batch(json!({"revision": 0})), BatchRequest::default());
        assert!(serde_json::from_value::<BatchRequest>(json!({"add": []})).is_err());
        assert!(
            serde_json::from_value::<BatchRequest>(json!({"revision": 0, "replace": []})).is_err()
        );
        assert!(
            serde_json::from_value::<BatchRequest>(
                json!({"revision": 0, "add": [{"net": "10.0.0.1", "ttl": 5}]})
            )
            .is_err()
        );
    }

    #[test]
    fn bad_nets_name_their_field_index_and_token() {
        let err = entry_error(json!({
            "revision": 0,
            "add": [{"net": "10.0.0.1"}, {"net": "198.18.0.7/24"}],
        }));
        assert_eq!((err.field, err.index), (EntryField::Add, 1));
        assert!(
            err.message
                .starts_with("add[1]: `198.18.0.7/24` has host bits set")
                && err.message.contains("198.18.0.0/24"),
            "{}",
            err.message
        );

        let err = entry_error(json!({"revision": 0, "remove": ["10.0.0.1", "::ffff:10.0.0.2"]}));
        assert_eq!((err.field, err.index), (EntryField::Remove, 1));
        assert!(err.message.starts_with("remove[1]: "), "{}", err.message);
    }

    #[test]
    fn ttls_must_be_positive_and_at_most_a_year() {
        let err = entry_error(json!({"revision": 0, "add": [{"net": "10.0.0.1", "ttl_secs": 0}]}));
        assert_eq!(err.index, 0);
        assert!(err.message.contains("ttl_secs"), "{}", err.message);
        let err = entry_error(
            json!({"revision": 0, "add": [{"net": "10.0.0.1", "ttl_secs": MAX_TTL_SECS + 1}]}),
        );
        assert!(err.message.contains("more than a year"), "{}", err.message);
        assert!(
            batch(json!({"revision": 0, "add": [{"net": "10.0.0.1", "ttl_secs": MAX_TTL_SECS}]}))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn reasons_are_short_and_printable() {
        let long = "r".repeat(MAX_REASON_CHARS + 1);
        let err = entry_error(json!({"revision": 0, "add": [{"net": "10.0.0.1", "reason": long}]}));
        assert!(
            err.message.contains(&format!("at most {MAX_REASON_CHARS}")),
            "{}",
            err.message
        );
        // Counted in characters, not bytes.
        let wide = "\u{e9}".repeat(MAX_REASON_CHARS);
        assert!(
            batch(json!({"revision": 0, "add": [{"net": "10.0.0.1", "reason": wide}]}))
                .validate()
                .is_ok()
        );
        let err = entry_error(
            json!({"revision": 0, "add": [{"net": "10.0.0.1", "reason": "ok\nforged line"}]}),
        );
        assert!(
            err.message.contains("control character at position 2"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_prefix_appears_once_per_batch() {
        let err = entry_error(json!({
            "revision": 0,
            "add": [{"net": "10.0.0.1"}],
            "remove": ["10.0.0.0/8", "10.0.0.1/32"],
        }));
        assert_eq!((err.field, err.index), (EntryField::Remove, 1));
        assert!(err.message.contains("also add[0]"), "{}", err.message);
    }

    #[test]
    fn error_bodies_leave_out_what_does_not_apply() {
        let body = ErrorBody {
            error: ErrorCode::RevisionConflict,
            message: "stale".into(),
            current_revision: Some(3),
            field: None,
            index: None,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": "revision_conflict", "message": "stale", "current_revision": 3})
        );
    }
}
