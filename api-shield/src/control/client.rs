//! The CLI's side of the control socket: one request, one response, blocking.

use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::body::{self, SendError};
use super::protocol::{EXIT_INTERNAL, EXIT_PERMISSION, EXIT_REFUSED, Request, Response};

/// How long to wait for the daemon's answer; its work per request is short.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closed exchange waits for the body's sender to say whether its source failed.
const SENDER_VERDICT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the api-shield daemon at {}: {source}", path.display())]
    Unreachable { path: PathBuf, source: io::Error },
    #[error(
        "permission denied opening {}: only root and members of the control group may use it",
        path.display()
    )]
    PermissionDenied { path: PathBuf, source: io::Error },
    #[error("lost the connection to the api-shield daemon at {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the api-shield daemon at {} did not answer within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("the api-shield daemon at {} closed the connection without answering", path.display())]
    NoResponse { path: PathBuf },
    #[error("the api-shield daemon at {} sent a malformed response: {source}", path.display())]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot encode the request: {0}")]
    Encode(serde_json::Error),
    /// Reading what the request carries failed; the daemon was told nothing is complete and
    /// applies nothing.
    #[error("{0}; nothing was applied")]
    Source(io::Error),
}

impl ClientError {
    /// The CLI's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::PermissionDenied { .. } => EXIT_PERMISSION,
            ClientError::Source(_) => EXIT_REFUSED,
            _ => EXIT_INTERNAL,
        }
    }
}

/// Sends `req` to the daemon listening on `path` and returns its response.
pub fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
    exchange(path, req, None)
}

/// What a request's body is read from: a file or standard input, sent by a thread of its own so
/// the daemon's answer is read as soon as it comes (a refusal need not wait for the source).
pub type BodySource = Box<dyn io::Read + Send>;

/// Sends `req` followed by everything read from `source` as its body (see [`body`]), and returns
/// the daemon's response. A failed read of `source` ends the exchange with
/// [`ClientError::Source`]; the daemon, missing the body's end, applies nothing.
pub fn request_with_body(
    path: &Path,
    req: &Request,
    source: BodySource,
) -> Result<Response, ClientError> {
    exchange(path, req, Some(source))
}

fn exchange(
    path: &Path,
    req: &Request,
    source: Option<BodySource>,
) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(path).map_err(|source| {
        let path = path.to_owned();
        if source.kind() == io::ErrorKind::PermissionDenied {
            ClientError::PermissionDenied { path, source }
        } else {
            ClientError::Unreachable { path, source }
        }
    })?;
    let io_error = |source| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(io_error)?;
    stream
        .set_write_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(io_error)?;

    let mut line = serde_json::to_vec(req).map_err(ClientError::Encode)?;
    line.push(b'\n');
    // The daemon may answer without reading the request (a refused peer, an oversize line, a
    // body over its cap) and close; the answer is still worth reading, so a failed write is
    // only reported if none comes.
    let written = (&stream).write_all(&line);
    let sending = match (&written, source) {
        (Ok(()), Some(source)) => Some(spawn_sender(&stream, source).map_err(io_error)?),
        (Ok(()), None) => {
            // Tells the daemon no further request follows. Failing here changes nothing: the
            // answer to the one request is still read below.
            let _ = stream.shutdown(Shutdown::Write);
            None
        }
        (Err(_), _) => None,
    };

    let mut reader = BufReader::new(&stream);
    let mut text = String::new();
    loop {
        let read = reader.read_line(&mut text);
        // A failed read of the source is the reason whatever the socket says.
        if let Some(Err(e)) = sending.as_ref().and_then(|s| s.try_recv().ok()) {
            return Err(ClientError::Source(e));
        }
        return match read {
            Ok(0) => {
                // The sender shuts the socket before it reports why; give it a moment.
                if let Some(Ok(Err(e))) = sending.as_ref().map(|s| s.recv_timeout(SENDER_VERDICT)) {
                    return Err(ClientError::Source(e));
                }
                Err(match written {
                    Err(source) => io_error(source),
                    Ok(()) => ClientError::NoResponse {
                        path: path.to_owned(),
                    },
                })
            }
            Ok(_) => serde_json::from_str(&text).map_err(|source| ClientError::Malformed {
                path: path.to_owned(),
                source,
            }),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // The daemon answers once the whole body is in: wait as long as it is sent.
                if sending
                    .as_ref()
                    .is_some_and(|s| matches!(s.try_recv(), Err(mpsc::TryRecvError::Empty)))
                {
                    continue;
                }
                Err(ClientError::Timeout {
                    path: path.to_owned(),
                    timeout: RESPONSE_TIMEOUT,
                })
            }
            Err(e) => Err(io_error(written.err().unwrap_or(e))),
        };
    }
}

/// Sends `source` as the body on a thread of its own. The channel carries a failed read of the
/// source once the thread ends (`Ok` when it ended otherwise); until then it is empty.
fn spawn_sender(
    stream: &UnixStream,
    mut source: BodySource,
) -> io::Result<mpsc::Receiver<io::Result<()>>> {
    let writer = stream.try_clone()?;
    let (done, outcome) = mpsc::channel();
    std::thread::Builder::new()
        .name("import-sender".into())
        .spawn(move || {
            let result = match body::send(&mut source, &mut &writer) {
                Ok(_) => {
                    let _ = writer.shutdown(Shutdown::Write);
                    Ok(())
                }
                Err(SendError::Source(e)) => {
                    // Ends the exchange without the end frame: the daemon applies nothing, and
                    // the answer read above stops waiting.
                    let _ = writer.shutdown(Shutdown::Both);
                    Err(e)
                }
                // The daemon stopped reading; its answer says why.
                Err(SendError::Sink(_)) => Ok(()),
            };
            let _ = done.send(result);
        })?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_daemon_is_reported_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let err = request(&path, &Request::Status).unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot reach the api-shield daemon at {}: ",
                path.display()
            )),
            "{text}"
        );
        assert_eq!(err.exit_code(), EXIT_INTERNAL);
    }

    #[test]
    fn stale_socket_is_reported_as_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(matches!(
            request(&path, &Request::Status),
            Err(ClientError::Unreachable { .. })
        ));
    }
}
