//! Tests of the inventory, one file per concern.

mod inventory;
mod openapi;
mod persist;
mod props;
mod segment;
mod sketch;
mod template;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::exchange::{BodySample, Exchange, Identity};
use crate::policy::config::AuthMethod;

/// A client in the benchmarking range the tests use.
pub(super) const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

/// An exchange the upstream answered with `status` in 2 ms.
pub(super) fn answered(host: &str, method: &str, path: &str, status: u16) -> Exchange {
    let method = hyper::Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut exchange = Exchange::new(1_000, CLIENT, host, method, path);
    exchange.status = Some(status);
    exchange.upstream_latency = Some(Duration::from_millis(2));
    exchange
}

pub(super) fn get(path: &str) -> Exchange {
    answered("api.example", "GET", path, 200)
}

pub(super) fn with_identity(mut exchange: Exchange, id: &str) -> Exchange {
    exchange.identity = Some(Identity {
        id: id.to_owned(),
        method: AuthMethod::ApiKey,
    });
    exchange
}

pub(super) fn with_body(mut exchange: Exchange, json: &str) -> Exchange {
    exchange.content_type = Some("application/json".to_owned());
    exchange.body_sample = Some(BodySample::parse(json.as_bytes()).expect("valid JSON"));
    exchange
}
