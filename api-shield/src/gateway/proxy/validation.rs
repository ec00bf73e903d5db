//! OpenAPI validation of a request the policy allowed, before it goes upstream.
//!
//! The body is read only for an operation with a JSON body schema (and not in mode `off`),
//! within the gateway's own `limits.max_body_bytes` and `timeouts.body`, then forwarded from
//! memory; every other body streams through untouched and is judged by its `Content-Length`
//! and `Content-Type` alone. A body declared larger than the API's `max_body_bytes` is not
//! read: the declared size is the violation.

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};

use super::body::{self, BodyStop, Guarded, ProxyBody, StopFlag};
use crate::contract::{Mode, Operation, PROBLEM_CONTENT_TYPE, Request as Checked};
use crate::gateway::contracts::judge;
use crate::gateway::live::Live;
use crate::gateway::metrics::GatewayMetrics;
use crate::policy::AccessDecision;

/// A request body after validation: still streaming from the client, or read whole.
#[derive(Debug)]
pub enum GateBody {
    Streamed(Incoming),
    /// `None` once sent.
    Buffered(Option<Bytes>),
}

impl Body for GateBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Streamed(b) => Pin::new(b).poll_frame(cx),
            Self::Buffered(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(b) => b.is_end_stream(),
            Self::Buffered(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(b) => b.size_hint(),
            Self::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// What the request is judged on, borrowed from the handler.
pub struct Target<'a> {
    pub host: &'a str,
    /// The normalised path the route matched (what the upstream gets).
    pub path: &'a str,
    /// The query as the client sent it.
    pub query: Option<&'a str>,
    /// Query parameters the policy removes before the upstream (an API key).
    pub strip_query: &'a [String],
    pub client: IpAddr,
}

impl<'a> Target<'a> {
    /// The request as `decision` routed it.
    pub fn of(
        decision: &'a AccessDecision,
        host: &'a str,
        query: Option<&'a str>,
        client: IpAddr,
    ) -> Self {
        Self {
            host,
            path: &decision.path,
            query,
            strip_query: &decision.strip_query_params,
            client,
        }
    }
}

/// Passes `req` on (its body streaming or read) or refuses it with the answer to send.
pub async fn gate(
    req: Request<Incoming>,
    live: &Live,
    metrics: &GatewayMetrics,
    target: Target<'_>,
) -> Result<Request<GateBody>, Response<ProxyBody>> {
    let (parts, incoming) = req.into_parts();
    let Some(api) = live.contracts.find(target.host, target.path) else {
        return Ok(Request::from_parts(parts, GateBody::Streamed(incoming)));
    };
    // Judged as the upstream will get it.
    let query = super::forward::strip_query(target.query, target.strip_query);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limits = &live.cfg.limits;
    let within = |n: u64| n <= api.contract.config().max_body_bytes && n <= limits.max_body_bytes;
    let read = api
        .contract
        .lookup(parts.method.as_str(), target.path)
        .is_some_and(|m| m.mode != Mode::Off && takes_json(m.operation))
        && declared.is_none_or(within);
    let (body, bytes) = if read {
        let bytes = read_body(incoming, live, parts.version).await?;
        (GateBody::Buffered(Some(bytes.clone())), bytes)
    } else {
        (GateBody::Streamed(incoming), Bytes::new())
    };
    // A streamed body of unknown length is at least one byte: enough for "a body was sent".
    let declared_length = match &body {
        GateBody::Buffered(_) => None,
        GateBody::Streamed(b) => declared.or_else(|| (!b.is_end_stream()).then_some(1)),
    };
    let headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let checked = Checked {
        method: parts.method.as_str(),
        path: target.path,
        query: query.as_deref(),
        headers: &headers,
        body: &bytes,
        declared_length,
    };
    let report = api.contract.validate(&checked);
    let Some(problem) = judge(api, &report, metrics, target.client) else {
        return Ok(Request::from_parts(parts, body));
    };
    if let GateBody::Streamed(rest) = body {
        // As for a 413: an unread HTTP/2 body resets the stream, an HTTP/1.1 client still
        // writing gets a broken pipe instead of the answer.
        body::drain(rest, live.cfg.timeouts.body);
    }
    Err(problem_response(problem))
}

/// The operation takes a JSON body with a schema: the only bodies worth reading.
fn takes_json(op: &Operation) -> bool {
    op.body
        .as_ref()
        .is_some_and(|b| b.media.iter().any(|m| m.json && m.validator.is_some()))
}

async fn read_body(
    incoming: Incoming,
    live: &Live,
    version: Version,
) -> Result<Bytes, Response<ProxyBody>> {
    let (limits, timeouts) = (&live.cfg.limits, &live.cfg.timeouts);
    let flag = StopFlag::default();
    let mut guarded = Guarded::new(incoming, limits.max_body_bytes, timeouts.body, flag.clone());
    if version == Version::HTTP_2 {
        guarded = guarded.drain_when_too_large(timeouts.body);
    }
    match guarded.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(match flag.get() {
            Some(BodyStop::TooLarge) => {
                super::forward::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            }
            Some(BodyStop::TimedOut) => super::forward::text(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ),
            None => super::forward::text(StatusCode::BAD_REQUEST, "request body cut short"),
        }),
    }
}

fn problem_response(problem: Vec<u8>) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(problem));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    r
}
