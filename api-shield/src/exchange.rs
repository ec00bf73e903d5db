//! The one record every front door (TLS gateway, check endpoint, passive sensor) makes of an
//! HTTP exchange, so the consumers behind it (inventory, contract, leak scanner, detection)
//! are plain Rust that never sees a socket and all see the same normalised path.

use std::net::IpAddr;
use std::time::Duration;

use crate::policy::config::AuthMethod;

/// The most request-body bytes a front door hands to the consumers as a JSON sample: enough
/// for the key names and value types of ordinary API payloads, small enough that sampling
/// never costs more than a bounded parse.
pub const MAX_BODY_SAMPLE_BYTES: usize = 64 * 1024;

/// Who made the request, once the policy authenticated them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The stable name of the caller (key id, user name, token subject).
    pub id: String,
    /// How they proved it.
    pub method: AuthMethod,
}

/// One HTTP exchange as the front door saw it.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// When the request arrived, milliseconds since the Unix epoch (the front door's clock,
    /// which tests and replays control).
    pub at_ms: u64,
    /// The client's address (after any trusted proxy header was applied).
    pub client: IpAddr,
    /// The authenticated caller, if any.
    pub identity: Option<Identity>,
    /// The request's host, lower case, without the port.
    pub host: String,
    pub method: hyper::Method,
    /// The normalised path (percent-decoding of unreserved characters, dot segments resolved)
    /// without the query: the same string the upstream serves.
    pub path: String,
    /// The status the client got; `None` when no answer is known (the check endpoint decides
    /// before the upstream answers).
    pub status: Option<u16>,
    /// How long the upstream took to answer; `None` when the upstream never answered (the
    /// shield refused the request itself, or the upstream was unreachable).
    pub upstream_latency: Option<Duration>,
    /// The request's `Content-Type` media type, without parameters.
    pub content_type: Option<String>,
    /// The names of the query parameters, in request order (values are never kept).
    pub query_names: Vec<String>,
    /// A parsed JSON request body, when the front door sampled this one.
    pub body_sample: Option<BodySample>,
}

/// A JSON request body the front door chose to sample.
#[derive(Clone, Debug, PartialEq)]
pub struct BodySample(serde_json::Value);

/// Why a body was not sampled.
#[derive(Debug, thiserror::Error)]
pub enum BodySampleError {
    #[error("the body has {len} bytes, more than the {MAX_BODY_SAMPLE_BYTES} a sample may hold")]
    TooLarge { len: usize },
    #[error("the body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

impl BodySample {
    /// Parses `bytes` as JSON, refusing bodies over [`MAX_BODY_SAMPLE_BYTES`] before parsing
    /// (serde_json's recursion limit bounds the nesting).
    pub fn parse(bytes: &[u8]) -> Result<Self, BodySampleError> {
        if bytes.len() > MAX_BODY_SAMPLE_BYTES {
            return Err(BodySampleError::TooLarge { len: bytes.len() });
        }
        Ok(Self(serde_json::from_slice(bytes)?))
    }

    /// The parsed body.
    pub fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

impl Exchange {
    /// An exchange without status, identity or sample yet: the front door fills in the rest
    /// as it learns it.
    pub fn new(at_ms: u64, client: IpAddr, host: &str, method: hyper::Method, path: &str) -> Self {
        Self {
            at_ms,
            client,
            identity: None,
            host: host.to_owned(),
            method,
            path: path.to_owned(),
            status: None,
            upstream_latency: None,
            content_type: None,
            query_names: Vec::new(),
            body_sample: None,
        }
    }
}
