//! The policy engine: authentication (API keys, HTTP Basic, JWT), authorisation, quotas and
//! abuse detection, as plain Rust with no sockets inside. Every transport shares it: the
//! built-in TLS gateway and the auth_request / ext_authz endpoint.
//!
//! A transport builds an [`Engine`] from a [`PolicyConfig`] and a [`JwksFetcher`], turns each
//! request's metadata into a [`RequestMeta`], and calls [`Engine::check`] with the current
//! [`Now`] (or, on an event loop, [`Engine::begin`], which hands a Basic password that must be
//! hashed back as a [`PasswordCheck`] to run elsewhere, then [`Engine::finish`]). The
//! [`AccessDecision`] says whether to forward, which headers to set, strip and return,
//! and carries any [`Escalation`] for the daemon to push into the kernel. After the upstream
//! answers, the transport calls [`Engine::observe_response`] so that 404 probing and upstream
//! 401/429s feed the detector.
//!
//! Secrets never reach `Debug` output or logs: API keys are stored and compared as SHA-256
//! digests, passwords as argon2id/bcrypt hashes, HMAC secrets and JWKs are redacted, and
//! [`Headers`]' `Debug` shows only harmless header values.

pub mod apikey;
pub mod basic;
pub mod check;
pub mod config;
pub mod decision;
pub mod detector;
pub mod engine;
pub mod headers;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod password_budget;
pub mod path;
pub mod quota;
pub mod request;
pub mod time;

pub use check::InvalidPolicy;
pub use config::PolicyConfig;
pub use decision::{AccessDecision, DenyReason, Verdict};
pub use detector::{Escalation, Rule};
pub use engine::{Engine, EngineStats, Step};
pub use identity::Identity;
pub use jwks::{JwksFetchError, JwksFetcher, NoFetcher};
pub use password::{PasswordCheck, PasswordOutcome, PasswordVerdict};
pub use request::{Headers, RequestMeta};
pub use time::Now;

#[cfg(test)]
mod tests;
