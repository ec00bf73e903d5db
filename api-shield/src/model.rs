//! The decision model shared by the store, the kernel tables, the control protocol and the CLI.

use api_shield_common::config::{MODE_ENFORCE, MODE_MONITOR};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What a list entry does to a matching source. Allow wins over block, whatever the prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Block,
}

/// One decision: an address or prefix, what to do with it, who decided, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Normalised: host bits are zero (`198.18.0.7/24` is refused at parse time, not masked).
    pub net: IpNet,
    pub action: Action,
    /// Who decided: `cli`, a list name, a feed, `gateway`, `kernel`.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall-clock creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Wall-clock expiry, Unix milliseconds; `None` never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl Decision {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}

/// A decision as stored, borrowed: what the kernel compiler and the listings read, without
/// copying a million origin names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionRef<'a> {
    pub net: IpNet,
    pub action: Action,
    pub origin: &'a str,
    pub reason: Option<&'a str>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

impl DecisionRef<'_> {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }

    pub fn to_owned(&self) -> Decision {
        Decision {
            net: self.net,
            action: self.action,
            origin: self.origin.to_string(),
            reason: self.reason.map(str::to_string),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

impl Decision {
    pub fn as_ref(&self) -> DecisionRef<'_> {
        DecisionRef {
            net: self.net,
            action: self.action,
            origin: &self.origin,
            reason: self.reason.as_deref(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// Origin of decisions made through the CLI.
pub const ORIGIN_CLI: &str = "cli";
/// Origin of the config's management allowlist.
pub const ORIGIN_CONFIG: &str = "config";
/// Origin name shown for the kernel's own auto-blocks.
pub const ORIGIN_KERNEL_NAME: &str = "kernel";

/// What the data path does with traffic the policy refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Drop it.
    #[default]
    Enforce,
    /// Count it as `monitored` and let it through: a dry run.
    Monitor,
}

impl Mode {
    /// The `ShieldConfig::mode` value.
    pub const fn kernel_value(self) -> u32 {
        match self {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Monitor => MODE_MONITOR,
        }
    }
}
