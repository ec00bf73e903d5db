//! OpenAPI contracts: a 3.0 or 3.1 document (YAML or JSON, one self-contained file) compiled
//! once into an operation table and JSON Schema validators, then used per request to find the
//! operation (method + path template) and check the request against it.
//!
//! Plain Rust, no sockets: the gateway and the check endpoint call [`Contract::validate`] on
//! the exchange record (see the design notes, "one event pipeline"), the inventory uses
//! [`Contract::lookup`] and [`Contract::spec_templates`] for known paths, the policy reads
//! [`Operation::security`]. Loading refuses what it cannot check (external references,
//! cycles, oversized or alias-bomb documents) with an error naming where.

mod config;
mod document;
mod error;
mod operation;
mod params;
mod problem;
mod refs;
mod schema;
mod security;
mod template;
mod validate;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

pub use config::{
    ApiConfig, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_VIOLATIONS, Mode, OperationConfig,
};
pub use document::{LoadLimits, Version};
pub use error::LoadError;
pub use operation::{MediaType, Operation, ParamLocation, Parameter, RequestBody, Shape};
pub use problem::{PROBLEM_CONTENT_TYPE, PROBLEM_STATUS, PROBLEM_TYPE, problem_body};
pub use security::{SchemeKind, SchemeRequirement, SecurityRequirement};
pub use validate::{MAX_MESSAGE_CHARS, Request, Violation, Where};

use validate::{Checks, Collector};

/// A compiled contract for one API.
#[derive(Debug)]
pub struct Contract {
    version: Version,
    base_path: String,
    operations: Vec<Operation>,
    modes: Vec<Mode>,
    /// Operation indexes by (method, segment count), most specific template first.
    index: HashMap<(String, usize), Vec<usize>>,
    config: ApiConfig,
}

/// The operation a request matched.
#[derive(Debug)]
pub struct Match<'c, 'p> {
    /// The operation.
    pub operation: &'c Operation,
    /// Its template, base path included (`/v1/users/{id}`) as the inventory keys it.
    pub template: String,
    /// Raw (percent-encoded) path parameter values.
    pub params: Vec<(&'c str, &'p str)>,
    /// The mode in force for it.
    pub mode: Mode,
}

/// The result of validating one request.
#[derive(Debug)]
pub struct Report<'c> {
    /// The operation matched, if any.
    pub operation: Option<&'c Operation>,
    /// Mode in force (the API's when no operation matched).
    pub mode: Mode,
    /// What is wrong, at most `max_violations`.
    pub violations: Vec<Violation>,
    /// More violations were found than listed.
    pub truncated: bool,
}

impl Report<'_> {
    /// The request must be refused: it broke the contract and the mode is enforce.
    pub fn refuse(&self) -> bool {
        self.mode == Mode::Enforce && !self.violations.is_empty()
    }

    /// The RFC 9457 body for a refusal.
    pub fn problem_body(&self) -> Vec<u8> {
        let name = self
            .operation
            .map(|op| op.operation_id.as_deref().unwrap_or(op.template.text()));
        problem_body(&self.violations, self.truncated, name)
    }
}

impl Contract {
    /// Loads `config.spec` from disk, reading at most the size cap.
    pub fn from_config(config: ApiConfig, limits: &LoadLimits) -> Result<Self, LoadError> {
        let bytes = read_capped(&config.spec, limits.max_document_bytes)?;
        Self::from_bytes(&bytes, config, limits)
    }

    /// Compiles a document held in memory.
    pub fn from_bytes(
        bytes: &[u8],
        config: ApiConfig,
        limits: &LoadLimits,
    ) -> Result<Self, LoadError> {
        let (doc, version) = document::parse(bytes, limits)?;
        let operations = operation::compile_all(&doc, version, limits.max_operations)?;
        let base_path = config
            .base_path
            .clone()
            .unwrap_or_else(|| servers_base_path(&doc));
        let base_path = base_path.trim_end_matches('/').to_owned();
        let modes = operations.iter().map(|op| mode_for(&config, op)).collect();
        let mut index: HashMap<(String, usize), Vec<usize>> = HashMap::new();
        for (i, op) in operations.iter().enumerate() {
            index
                .entry((op.method.clone(), op.template.len()))
                .or_default()
                .push(i);
        }
        for list in index.values_mut() {
            // Stable: among equal ranks, document order decides.
            list.sort_by_key(|&i| std::cmp::Reverse(operations[i].template.ranks()));
        }
        Ok(Self {
            version,
            base_path,
            operations,
            modes,
            index,
            config,
        })
    }

    /// The document's OpenAPI line.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The base path in front of every template (empty for none).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// Every operation, in document order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// (method, template with base path) of every operation: the "known paths" of the
    /// inventory and the left side of its diff.
    pub fn spec_templates(&self) -> Vec<(String, String)> {
        self.operations
            .iter()
            .map(|op| (op.method.clone(), self.full_template(op)))
            .collect()
    }

    fn full_template(&self, op: &Operation) -> String {
        format!("{}{}", self.base_path, op.template.text())
    }

    /// The operation for `method` and the normalised `path` (no query), if any.
    pub fn lookup<'p>(&self, method: &str, path: &'p str) -> Option<Match<'_, 'p>> {
        let rest = path.strip_prefix(self.base_path.as_str())?;
        let rest = rest.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        let method = method.to_ascii_uppercase();
        let candidates = self.index.get(&(method, segments.len()))?;
        candidates.iter().find_map(|&i| {
            let op = &self.operations[i];
            op.template.matches(&segments).map(|params| Match {
                operation: op,
                template: self.full_template(op),
                params,
                mode: self.modes[i],
            })
        })
    }

    /// Finds the operation of `req` and checks the request against it.
    pub fn validate(&self, req: &Request<'_>) -> Report<'_> {
        self.validate_with(req, true)
    }

    /// As [`Contract::validate`], for a caller that never sees the body (the check endpoint:
    /// nginx's `auth_request` sends none): size, content type and schema are not checked.
    pub fn validate_head(&self, req: &Request<'_>) -> Report<'_> {
        self.validate_with(req, false)
    }

    fn validate_with(&self, req: &Request<'_>, body_seen: bool) -> Report<'_> {
        let mut out = Collector::new(self.config.max_violations);
        let Some(found) = self.lookup(req.method, req.path) else {
            if self.config.refuse_unknown_operations && self.config.mode != Mode::Off {
                out.push(Violation::new(
                    Where::Operation,
                    "",
                    "",
                    "no operation of the contract has this method and path",
                ));
            }
            return Report {
                operation: None,
                mode: self.config.mode,
                violations: out.list,
                truncated: out.truncated,
            };
        };
        if found.mode != Mode::Off {
            let checks = Checks {
                refuse_unknown_query: self.config.refuse_unknown_query,
                max_body_bytes: self.config.max_body_bytes,
                body_seen,
            };
            validate::check(found.operation, req, &found.params, checks, &mut out);
        }
        Report {
            operation: Some(found.operation),
            mode: found.mode,
            violations: out.list,
            truncated: out.truncated,
        }
    }
}

/// The operation's own mode (by `operationId`, else by `"METHOD /template"`), else the API's.
fn mode_for(config: &ApiConfig, op: &Operation) -> Mode {
    let by_id = op
        .operation_id
        .as_ref()
        .and_then(|id| config.operations.get(id));
    let by_route = || {
        config
            .operations
            .get(&format!("{} {}", op.method, op.template.text()))
    };
    by_id
        .or_else(by_route)
        .and_then(|o| o.mode)
        .unwrap_or(config.mode)
}

/// Path of the first `servers` URL (`https://h/v1` gives `/v1`; relative `/v1` too).
fn servers_base_path(doc: &serde_json::Value) -> String {
    let url = doc
        .pointer("/servers/0/url")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let after_scheme = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    // Server variables (`{version}`) cannot be known here: no base path rather than a wrong one.
    if after_scheme.contains('{') {
        String::new()
    } else {
        after_scheme.to_owned()
    }
}

/// The file, refused once it passes `limit` bytes (read one byte past it to know).
fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limit {
        return Err(LoadError::TooLarge { size, limit });
    }
    Ok(bytes)
}
