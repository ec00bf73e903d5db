//! The HTTP client of the local API's decision stream.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Body as _;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

use super::config::{CrowdsecConfig, stream_base};
use super::decisions::Filter;
use super::decode::{Keep, StreamAnswer, decode};
use super::{API_KEY_HEADER, CrowdsecError, MAX_ERROR_BODY_CHARS, REQUEST_TIMEOUT, STREAM_PATH};

/// Most bytes of an error answer read: enough for `MAX_ERROR_BODY_CHARS` characters of
/// UTF-8 (at most four bytes each).
const MAX_ERROR_BODY_BYTES: usize = MAX_ERROR_BODY_CHARS * 4;

pub(super) struct Lapi {
    client: Client<HttpConnector, Empty<Bytes>>,
    pub(super) base: String,
    scopes: String,
    key: HeaderValue,
    max_answer_bytes: usize,
}

impl Lapi {
    pub(super) fn new(cfg: &CrowdsecConfig, api_key: &str) -> Result<Self, CrowdsecError> {
        let base = stream_base(&cfg.url).map_err(|e| CrowdsecError::Config {
            field: "url",
            reason: e.to_string(),
        })?;
        let mut key = HeaderValue::from_str(api_key).map_err(|_| CrowdsecError::KeyHeader)?;
        // Keeps the key out of any debug print of the request.
        key.set_sensitive(true);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            base,
            scopes: cfg.scopes.join(","),
            key,
            max_answer_bytes: cfg.max_answer_bytes(),
        })
    }

    /// One stream request; `startup` asks for the full state instead of the changes. The
    /// answer is read within `REQUEST_TIMEOUT`, then decoded off the async threads.
    pub(super) async fn stream(
        &self,
        startup: bool,
        filter: &Filter,
    ) -> Result<StreamAnswer, CrowdsecError> {
        let url = format!(
            "{}{STREAM_PATH}?startup={startup}&scopes={}",
            self.base, self.scopes
        );
        let body = tokio::time::timeout(REQUEST_TIMEOUT, self.fetch(&url))
            .await
            .map_err(|_| CrowdsecError::Timeout { url: url.clone() })??;
        let keep = if startup {
            Keep::NewOnly
        } else {
            Keep::NewAndDeleted
        };
        let filter = filter.clone();
        let decode_error = |reason: String| CrowdsecError::Decode {
            url: url.clone(),
            reason,
        };
        // Tens of megabytes take a noticeable fraction of a second to read.
        tokio::task::spawn_blocking(move || decode(&body, &filter, keep))
            .await
            .map_err(|e| decode_error(e.to_string()))?
            .map_err(|e| decode_error(e.to_string()))
    }

    /// The answer's body, read frame by frame and refused as soon as it passes the cap.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, CrowdsecError> {
        let failed = |reason: String| CrowdsecError::Request {
            url: url.to_string(),
            reason,
        };
        let request = Request::get(url)
            .header(HeaderName::from_static(API_KEY_HEADER), self.key.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            // Only the start of an error answer is shown; the rest is not read.
            let body = read_capped(response.into_body(), MAX_ERROR_BODY_BYTES, None)
                .await
                .unwrap_or_else(|partial| partial.read);
            let text = String::from_utf8_lossy(&body);
            return Err(CrowdsecError::Status {
                url: url.to_string(),
                status,
                // Logged and shown by `lists`: escaped, so the answer cannot forge log lines
                // or drive a terminal.
                body: crate::text::escape(&text)
                    .chars()
                    .take(MAX_ERROR_BODY_CHARS)
                    .collect(),
            });
        }
        let announced = response.body().size_hint().exact();
        read_capped(response.into_body(), self.max_answer_bytes, announced)
            .await
            .map_err(|stop| match stop.cause {
                Stop::TooLarge => CrowdsecError::TooLarge {
                    url: url.to_string(),
                    limit: self.max_answer_bytes,
                },
                Stop::Failed(reason) => failed(format!("reading the answer: {reason}")),
            })
    }
}

/// Why reading a body stopped early, and what had been read by then.
struct Partial {
    read: Vec<u8>,
    cause: Stop,
}

enum Stop {
    /// The body (announced or as read so far) is longer than the cap.
    TooLarge,
    Failed(String),
}

/// Reads `body` up to `cap` bytes, one frame at a time, so an answer over the cap is refused
/// after at most `cap` bytes (at once when its announced length says so) and memory never
/// holds more than the cap and one frame.
async fn read_capped(
    mut body: hyper::body::Incoming,
    cap: usize,
    announced: Option<u64>,
) -> Result<Vec<u8>, Partial> {
    let mut read = Vec::new();
    if let Some(length) = announced {
        match usize::try_from(length) {
            // One allocation of the right size instead of doublings.
            Ok(length) if length <= cap => read.reserve_exact(length),
            _ => {
                return Err(Partial {
                    read,
                    cause: Stop::TooLarge,
                });
            }
        }
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                return Err(Partial {
                    read,
                    cause: Stop::Failed(error_chain(&e)),
                });
            }
        };
        // Trailers carry nothing a decision stream needs.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.len() > cap - read.len() {
            let room = cap - read.len();
            read.extend_from_slice(&data[..room]);
            return Err(Partial {
                read,
                cause: Stop::TooLarge,
            });
        }
        read.extend_from_slice(&data);
    }
    Ok(read)
}

/// An error with its causes (hyper's top-level message alone says little: "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
