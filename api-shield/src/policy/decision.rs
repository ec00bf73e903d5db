//! What the engine answers for one request.

use std::sync::Arc;

use serde::Serialize;

use super::config::AuthMethod;
use super::detector::Escalation;
use super::identity::Identity;
use super::password::PasswordOutcome;
use super::quota::LimitStatus;

/// Allow, or deny with a status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Forward upstream (with [`AccessDecision::upstream_headers`] set and
    /// [`AccessDecision::strip_headers`] removed).
    Allow,
    /// Answer the client directly.
    Deny {
        /// 400, 401, 403 or 429; 503 when a password could not be checked now.
        status: u16,
        /// The `WWW-Authenticate` value on 401 (and on 403 for insufficient token scope).
        www_authenticate: Option<String>,
        /// `Retry-After` seconds on 429 and 503.
        retry_after: Option<u64>,
    },
}

/// Why a request was, or in dry-run would have been, denied. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DenyReason {
    /// The request path cannot be normalised safely (400).
    BadPath {
        /// What is wrong with it (names a character and an offset, never the path).
        detail: String,
    },
    /// No route matches and `unmatched = "deny"`.
    NoRoute,
    /// The route needs credentials and none were presented.
    MissingCredentials,
    /// A credential was presented and refused.
    InvalidCredentials {
        /// Which method.
        method: AuthMethod,
        /// Why, e.g. `unknown key`, `bad password`, `token expired`.
        detail: String,
    },
    /// Authenticated, but lacking a required scope or role.
    Forbidden {
        /// What is missing.
        detail: String,
    },
    /// Over a limit.
    RateLimited {
        /// The first limit that refused.
        limit: Arc<str>,
    },
    /// A Basic credential from a source that has spent its failure budget: refused (429)
    /// without checking it.
    PasswordBudgetSpent,
    /// A Basic credential the transport had no room to check now (503).
    PasswordCheckUnavailable,
}

/// The engine's answer.
#[derive(Clone, Debug, Serialize)]
pub struct AccessDecision {
    /// Allow or deny. In dry-run, always `Allow`; see [`Self::dry_run_would_deny`].
    pub verdict: Verdict,
    /// Why it was (or would have been) denied.
    pub reason: Option<DenyReason>,
    /// The normalised request path: what the route was matched on and what a transport
    /// forwards upstream. Empty when the path was refused.
    pub path: String,
    /// The matched route's name.
    pub route: Option<String>,
    /// Who the request is, when authenticated.
    pub identity: Option<Identity>,
    /// The plan whose limits applied.
    pub plan: Option<String>,
    /// Every limit checked, in `RateLimit-Policy` order.
    pub limits: Vec<LimitStatus>,
    /// Headers for the response to the client (`WWW-Authenticate`, `Retry-After`,
    /// `RateLimit-Policy`, `RateLimit`, optionally `RateLimit-Limit/-Remaining/-Reset`).
    /// On allow, a transport adds them to the upstream's response.
    pub response_headers: Vec<(String, String)>,
    /// Headers to set on the upstream request (identity, plan).
    pub upstream_headers: Vec<(String, String)>,
    /// Header names to remove from the upstream request before `upstream_headers` are set:
    /// client-sent copies of the identity headers always, credentials when configured.
    pub strip_headers: Vec<String>,
    /// Query parameters to remove upstream (an API key given in the query).
    pub strip_query_params: Vec<String>,
    /// In dry-run: the verdict that was not applied.
    pub dry_run_would_deny: Option<Verdict>,
    /// Escalations to hand to the daemon (kernel blocks).
    pub escalations: Vec<Escalation>,
    /// What happened to a Basic password, when one was presented.
    pub password: Option<PasswordOutcome>,
}

impl AccessDecision {
    /// An allow with nothing attached: where every evaluation starts.
    pub fn allowed(path: String) -> Self {
        AccessDecision {
            path,
            verdict: Verdict::Allow,
            reason: None,
            route: None,
            identity: None,
            plan: None,
            limits: Vec::new(),
            response_headers: Vec::new(),
            upstream_headers: Vec::new(),
            strip_headers: Vec::new(),
            strip_query_params: Vec::new(),
            dry_run_would_deny: None,
            escalations: Vec::new(),
            password: None,
        }
    }

    /// Whether the request goes upstream.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// 200 for allow, else the deny status (what an auth_request/ext_authz endpoint answers).
    pub fn status(&self) -> u16 {
        match self.verdict {
            Verdict::Allow => 200,
            Verdict::Deny { status, .. } => status,
        }
    }

    /// The first response header of that name (case-insensitive).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first upstream header of that name (case-insensitive).
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
