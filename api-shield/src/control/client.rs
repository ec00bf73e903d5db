//! The CLI's side of the control socket: one request, one response, blocking.

use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{EXIT_INTERNAL, EXIT_PERMISSION, Request, Response};

/// How long to wait for the daemon's answer; its work per request is short.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

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
}

impl ClientError {
    /// The CLI's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::PermissionDenied { .. } => EXIT_PERMISSION,
            _ => EXIT_INTERNAL,
        }
    }
}

/// Sends `req` to the daemon listening on `path` and returns its response.
pub fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
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

    let mut line = serde_json::to_vec(req).map_err(ClientError::Encode)?;
    line.push(b'\n');
    // The daemon may answer without reading the request (a refused peer, an oversize line) and
    // close; the answer is still worth reading, so a failed write is only reported if none
    // comes.
    let written = (&stream).write_all(&line);
    if written.is_ok() {
        // Tells the daemon no further request follows. Failing here changes nothing: the
        // answer to the one request is still read below.
        let _ = stream.shutdown(Shutdown::Write);
    }

    let mut reader = BufReader::new(&stream);
    let mut text = String::new();
    match reader.read_line(&mut text) {
        Ok(0) => Err(match written {
            Err(source) => io_error(source),
            Ok(()) => ClientError::NoResponse {
                path: path.to_owned(),
            },
        }),
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
            Err(ClientError::Timeout {
                path: path.to_owned(),
                timeout: RESPONSE_TIMEOUT,
            })
        }
        Err(e) => Err(io_error(written.err().unwrap_or(e))),
    }
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
