//! Routing, authentication and the handler of each endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, HeaderMap, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::auth::{Auth, Token};
use super::backend::{BatchError, PushBackend};
use super::bodies::{BatchRequest, BatchResponse, EntryField, ErrorCode, ListResponse};
use super::reply::{ApiError, Body, json};
use crate::lists::valid_list_name;

/// Time allowed for a whole body to arrive: a full batch is tens of megabytes.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
const CHALLENGE: &str = r#"Bearer realm="api-shield""#;
const CHALLENGE_INVALID: &str = r#"Bearer realm="api-shield", error="invalid_token""#;

/// What every request handler shares.
pub(crate) struct State {
    pub token: Token,
    pub backend: Arc<dyn PushBackend>,
    pub max_batch: usize,
    pub body_limit: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Lists,
    List(&'a str),
    Batch(&'a str),
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let mut segments = path.strip_prefix('/')?.split('/');
        let route = match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("healthz"), None, ..) => Self::Health,
            (Some("v1"), Some("lists"), None, _) => Self::Lists,
            (Some("v1"), Some("lists"), Some(name), None) => Self::List(name),
            (Some("v1"), Some("lists"), Some(name), Some("batch")) => Self::Batch(name),
            _ => return None,
        };
        segments.next().is_none().then_some(route)
    }

    /// The one method each route answers, and the `Allow` header naming it.
    fn method(self) -> (Method, &'static str) {
        match self {
            Self::Batch(_) => (Method::POST, "POST"),
            Self::Health | Self::Lists | Self::List(_) => (Method::GET, "GET"),
        }
    }
}

/// Answers one request. Never fails: every problem is an HTTP answer.
pub(crate) async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // The path may be logged; the headers never are, as they carry the token.
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match route(&state, peer, &path, req).await {
        Ok(response) => response,
        Err(error) => {
            if error.code() == ErrorCode::Internal {
                tracing::error!(%peer, %method, path, ?error, "push API request failed");
            }
            error.into_response()
        }
    };
    tracing::debug!(%peer, %method, path, status = response.status().as_u16(), "push API request");
    Ok(response)
}

async fn route(
    state: &State,
    peer: SocketAddr,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let route =
        Route::parse(path).ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such endpoint"))?;
    let (method, allow) = route.method();
    if req.method() != method {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("this endpoint answers {allow} only"),
        )
        .with_header(ALLOW, allow));
    }
    if route == Route::Health {
        return Ok(json(StatusCode::OK, &json!({"status": "ok"})));
    }
    authorize(&state.token, peer, req.headers())?;
    match route {
        Route::Health => unreachable!("answered before authentication"),
        Route::Lists => lists(state).await,
        Route::List(name) => list(state, checked_name(name)?).await,
        Route::Batch(name) => batch(state, peer, checked_name(name)?, req).await,
    }
}

fn authorize(token: &Token, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    match token.check(headers.get(hyper::header::AUTHORIZATION)) {
        Auth::Granted => Ok(()),
        Auth::Missing => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this endpoint needs `Authorization: Bearer <token>`",
        )
        .with_header(WWW_AUTHENTICATE, CHALLENGE)),
        Auth::Invalid => {
            tracing::warn!(%peer, "push API: refused a wrong bearer token");
            Err(
                ApiError::new(ErrorCode::Unauthorized, "the bearer token is not valid")
                    .with_header(WWW_AUTHENTICATE, CHALLENGE_INVALID),
            )
        }
    }
}

fn checked_name(name: &str) -> Result<&str, ApiError> {
    valid_list_name(name).map_err(|e| ApiError::new(ErrorCode::InvalidListName, e.to_string()))?;
    Ok(name)
}

async fn lists(state: &State) -> Result<Response<Body>, ApiError> {
    let backend = Arc::clone(&state.backend);
    let lists = blocking(move || backend.lists()).await?;
    Ok(json(StatusCode::OK, &lists))
}

async fn list(state: &State, name: &str) -> Result<Response<Body>, ApiError> {
    let backend = Arc::clone(&state.backend);
    let name = name.to_owned();
    let answer = blocking(move || match backend.entries(&name) {
        Some((revision, entries)) => ListResponse { revision, entries },
        // A list nobody wrote yet reads as empty, so a writer's first step (read the revision)
        // is the same for new and existing lists.
        None => ListResponse {
            revision: backend.revision(&name).0,
            entries: Vec::new(),
        },
    })
    .await?;
    Ok(json(StatusCode::OK, &answer))
}

async fn batch(
    state: &State,
    peer: SocketAddr,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body = read_body(req, state.body_limit).await?;
    let request: BatchRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the body is not a batch: {e}"),
        )
    })?;
    if request.len() > state.max_batch {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "the batch has {} entries; at most {} are accepted at once, so split it",
                request.len(),
                state.max_batch
            ),
        ));
    }
    let (added, removed) = (request.add.len(), request.remove.len());
    let checked = request
        .validate()
        .map_err(|e| ApiError::entry(e.field, e.index, e.message))?;
    let expected = checked.expected;

    let backend = Arc::clone(&state.backend);
    let list = name.to_owned();
    let actor = format!("push:{}", peer.ip());
    let outcome =
        blocking(move || backend.apply(&list, expected, checked.add, checked.remove, &actor))
            .await?;
    match outcome {
        Ok(revision) => {
            tracing::info!(%peer, list = name, revision, added, removed, "push API: batch applied");
            Ok(json(
                StatusCode::OK,
                &BatchResponse {
                    revision,
                    added,
                    removed,
                },
            ))
        }
        Err(BatchError::Conflict { current }) => Err(ApiError::conflict(
            current,
            format!(
                "list `{name}` is at revision {current}, not {expected}: read it again and \
                 resend the batch against the current revision"
            ),
        )),
        Err(BatchError::Invalid(message)) => Err(ApiError::new(ErrorCode::InvalidBatch, message)),
        Err(e @ BatchError::Lockout { index, .. }) => {
            Err(ApiError::entry(EntryField::Add, index, e.to_string()))
        }
        Err(BatchError::Capacity(message)) => {
            Err(ApiError::new(ErrorCode::CapacityExceeded, message))
        }
        Err(BatchError::Internal(message)) => Err(ApiError::new(ErrorCode::Internal, message)),
    }
}

/// The whole body, refused early when its declared length is already too large.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the body is larger than {limit} bytes; split the batch"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(req.into_body(), limit).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("cannot read the body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the body did not arrive within {} seconds",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Runs a backend call on the blocking pool: it may take locks or write kernel maps.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(call).await.map_err(|e| {
        tracing::error!(error = %e, "push API: a backend call panicked");
        ApiError::new(
            ErrorCode::Internal,
            "the daemon failed while handling the request; see its log",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/healthz"), Some(Route::Health));
        assert_eq!(Route::parse("/v1/lists"), Some(Route::Lists));
        assert_eq!(Route::parse("/v1/lists/feed"), Some(Route::List("feed")));
        assert_eq!(
            Route::parse("/v1/lists/feed/batch"),
            Some(Route::Batch("feed"))
        );
        // Names are checked later, so a bad one gets a 400 that says why.
        assert_eq!(Route::parse("/v1/lists/"), Some(Route::List("")));
        for path in [
            "",
            "/",
            "/healthz/",
            "/v1",
            "/v2/lists",
            "/v1/lists/feed/batch/x",
            "/v1/lists/feed/entries",
        ] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }
}
