//! Building JSON answers.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::bodies::{EntryField, ErrorBody, ErrorCode};

pub(crate) type Body = Full<Bytes>;

const JSON: &str = "application/json";
/// Sent when an answer cannot be encoded, which would take a bug; built by hand so this path
/// cannot fail in turn.
const ENCODING_FAILED: &str =
    r#"{"error":"internal","message":"the server could not encode its answer"}"#;

/// A JSON answer with `status`.
pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, Bytes::from(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "push API: cannot encode an answer");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(ENCODING_FAILED.as_bytes()),
            )
        }
    };
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// An error answer: an `ErrorBody` plus the headers its status calls for.
#[derive(Debug)]
pub(crate) struct ApiError {
    body: ErrorBody,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            body: ErrorBody {
                error: code,
                message: message.into(),
                current_revision: None,
                field: None,
                index: None,
            },
            headers: Vec::new(),
        }
    }

    pub(crate) fn conflict(current: u64, message: impl Into<String>) -> Self {
        let mut error = Self::new(ErrorCode::RevisionConflict, message);
        error.body.current_revision = Some(current);
        error
    }

    pub(crate) fn entry(field: EntryField, index: usize, message: String) -> Self {
        let mut error = Self::new(ErrorCode::InvalidEntry, message);
        error.body.field = Some(field);
        error.body.index = Some(index);
        error
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    pub(crate) fn code(&self) -> ErrorCode {
        self.body.error
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let mut response = json(self.body.error.status(), &self.body);
        response.headers_mut().extend(self.headers);
        response
    }
}
