//! The control socket between the CLI and the daemon: the protocol, the daemon's server and
//! the CLI's client. See `protocol` for the wire format.

pub mod answers;
pub mod body;
pub mod client;
pub mod protocol;
pub mod server;

pub use answers::{
    AllowBody, BlockBody, FlushBody, ListsRowBody, ReloadBody, RemovedBody, UnallowBody,
    UnblockBody,
};
pub use body::{BodyError, BodyLimits};
pub use client::{ClientError, request, request_with_body};
pub use protocol::{
    ControlErrorCode, CounterBody, LimitsBody, ListedBody, MapBody, Request, Response, StatsBody,
    StatusBody, parse_request,
};
pub use server::{Handler, PeerCred, PeerPolicy, RequestBody, bind, resolve_group, serve};
