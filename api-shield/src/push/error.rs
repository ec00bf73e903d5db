//! Why the push API cannot start. Errors of single requests are HTTP answers, not these.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Every problem of the `[push]` settings, each naming its key.
    #[error("invalid [push] settings: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot read the push token file {}: {source}", path.display())]
    TokenRead { path: PathBuf, source: io::Error },
    #[error("the push token file {} is not a regular file", path.display())]
    TokenNotFile { path: PathBuf },
    #[error(
        "the push token file {} has mode {mode:04o}; it must not be accessible to group or \
         others (run `chmod 600 {}`)",
        path.display(),
        path.display()
    )]
    TokenMode { path: PathBuf, mode: u32 },
    #[error("the push token file {} is larger than {limit} bytes", path.display())]
    TokenTooLarge { path: PathBuf, limit: u64 },
    /// `origin` is empty or ` in <file>`.
    #[error("the push token{origin} is empty")]
    TokenEmpty { origin: String },
    #[error(
        "the push token{origin} holds whitespace, control or non-ASCII characters; a bearer \
         token is one line of printable ASCII"
    )]
    TokenCharacters { origin: String },
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    TlsRead {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the TLS {what} {} {reason}", path.display())]
    TlsPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "cannot use the TLS certificate {} with the key {}: {source}",
        cert.display(),
        key.display()
    )]
    TlsConfig {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot listen on {addr} for the push API: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}
