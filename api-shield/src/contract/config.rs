//! Configuration of one API contract, as `[[gateway.apis]]` will hold it. Plain serde types
//! with defaults, so the gateway can embed them without knowing the contract's internals.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a failed validation does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse the request with 400 and a problem+json body.
    Enforce,
    /// Let it through and count it. The default: a contract that drifted from what the API
    /// really accepts must not break production the day it is loaded.
    #[default]
    Monitor,
    /// Do not validate (the operation is still looked up, so the inventory knows it).
    Off,
}

/// Largest request body validated by default: 1 MiB, above any JSON payload an API of this
/// kind takes, well below what would let a client make the shield buffer much.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Violations reported per request by default: enough to fix a request, bounded for the log.
pub const DEFAULT_MAX_VIOLATIONS: usize = 16;

/// One API: its OpenAPI document and where it is served.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The OpenAPI document (YAML or JSON, 3.0 or 3.1), a local file.
    pub spec: PathBuf,
    /// The host the API is served on (matched by the gateway, not here).
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix in front of the document's paths; when absent, the path of the document's
    /// first `servers` URL (`https://api.example/v1` gives `/v1`), else none.
    #[serde(default)]
    pub base_path: Option<String>,
    /// What a failed validation does for every operation without its own setting.
    #[serde(default)]
    pub mode: Mode,
    /// Refuse query parameters the operation does not declare.
    #[serde(default)]
    pub refuse_unknown_query: bool,
    /// Treat a request matching no operation of the document as a violation.
    #[serde(default)]
    pub refuse_unknown_operations: bool,
    /// Largest request body, in bytes; larger ones are a violation.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Most violations reported for one request.
    #[serde(default = "default_max_violations")]
    pub max_violations: usize,
    /// Per-operation settings, keyed by `operationId` or by `"METHOD /template"`.
    #[serde(default)]
    pub operations: BTreeMap<String, OperationConfig>,
}

/// Settings of one operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperationConfig {
    /// Overrides the API's mode for this operation.
    #[serde(default)]
    pub mode: Option<Mode>,
}

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

fn default_max_violations() -> usize {
    DEFAULT_MAX_VIOLATIONS
}

impl ApiConfig {
    /// A configuration for `spec` with every default.
    pub fn new(spec: impl Into<PathBuf>) -> Self {
        Self {
            spec: spec.into(),
            host: None,
            base_path: None,
            mode: Mode::default(),
            refuse_unknown_query: false,
            refuse_unknown_operations: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_violations: DEFAULT_MAX_VIOLATIONS,
            operations: BTreeMap::new(),
        }
    }
}
