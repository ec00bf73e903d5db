//! The push API: other tools (SIEMs, WAFs, scripts) add and remove entries of named lists in
//! batches over HTTP, authenticated by one bearer token, optionally over TLS.
//!
//! The module owns the wire format, authentication and validation; what a batch does is up to
//! the daemon, which implements [`PushBackend`]. Every entry is checked with
//! [`crate::parse::parse_net`] before the backend sees the batch, so a batch with one bad entry
//! changes nothing. Writers pass the revision they last saw, and a stale one is refused, so two
//! tools writing the same list cannot silently undo each other.
//!
//! `docs/push-api.md` describes the endpoints and `docs/push-api.schema.json` their bodies.

mod auth;
mod backend;
mod bodies;
mod config;
mod error;
mod reply;
mod routes;
mod server;
pub(crate) mod tls;

#[cfg(test)]
mod tests;

pub use auth::Token;
pub use backend::{BatchError, PushBackend};
pub use bodies::{
    AddItem, BatchRequest, BatchResponse, EntryField, ErrorBody, ErrorCode, ListResponse,
    MAX_REASON_CHARS, MAX_TTL_SECS,
};
pub use config::PushConfig;
pub use error::PushError;
pub use server::{PushListener, bind, serve};
