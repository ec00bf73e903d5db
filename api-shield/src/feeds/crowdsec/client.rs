//! The HTTP client of the local API's decision stream.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

use super::config::{CrowdsecConfig, stream_base};
use super::decisions::StreamAnswer;
use super::{
    API_KEY_HEADER, CrowdsecError, MAX_BODY_BYTES, MAX_ERROR_BODY_CHARS, REQUEST_TIMEOUT,
    STREAM_PATH,
};

pub(super) struct Lapi {
    client: Client<HttpConnector, Empty<Bytes>>,
    pub(super) base: String,
    scopes: String,
    key: HeaderValue,
}

impl Lapi {
    pub(super) fn new(cfg: &CrowdsecConfig, api_key: &str) -> Result<Self, CrowdsecError> {
        let base = stream_base(&cfg.url).map_err(|reason| CrowdsecError::Config {
            field: "url",
            reason,
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
        })
    }

    /// One stream request; `startup` asks for the full state instead of the changes.
    pub(super) async fn stream(&self, startup: bool) -> Result<StreamAnswer, CrowdsecError> {
        let url = format!(
            "{}{STREAM_PATH}?startup={startup}&scopes={}",
            self.base, self.scopes
        );
        tokio::time::timeout(REQUEST_TIMEOUT, self.fetch(&url))
            .await
            .map_err(|_| CrowdsecError::Timeout { url: url.clone() })?
    }

    async fn fetch(&self, url: &str) -> Result<StreamAnswer, CrowdsecError> {
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
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(CrowdsecError::Status {
                url: url.to_string(),
                status,
                body: text.chars().take(MAX_ERROR_BODY_CHARS).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| CrowdsecError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
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
