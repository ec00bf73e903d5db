//! TLS for a gateway listener: rustls with *ring*, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, and client certificates verified against a CA when configured (mTLS).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::gateway::config::{ClientAuth, ListenerConfig};
use crate::push::PushError;
use crate::push::tls::{read_chain, read_key};

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a gateway listener's TLS cannot be set up; each names the listener and the file.
#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    #[error("gateway listener {listen}: {source}")]
    Files {
        listen: SocketAddr,
        source: PushError,
    },
    #[error("gateway listener {listen}: {source}")]
    Rustls {
        listen: SocketAddr,
        source: rustls::Error,
    },
    #[error("gateway listener {listen}: client_ca: {source}")]
    ClientCaFile {
        listen: SocketAddr,
        source: PushError,
    },
    #[error("gateway listener {listen}: client_ca {}: {source}", ca.display())]
    ClientCa {
        listen: SocketAddr,
        ca: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "gateway listener {listen}: {} with {}: {source}",
        cert.display(),
        key.display()
    )]
    CertificateKey {
        listen: SocketAddr,
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The acceptor of `l`, or `None` for a plain-HTTP listener. Errors name the file and what
/// is wrong with it (boxed: paths and sources make the error large, and it is rare).
pub fn acceptor(l: &ListenerConfig) -> Result<Option<TlsAcceptor>, Box<ListenerTlsError>> {
    let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key) else {
        return Ok(None);
    };
    let listen = l.listen;
    let files = |source| ListenerTlsError::Files { listen, source };
    let chain = read_chain(cert).map_err(files)?;
    let private_key = read_key(key).map_err(files)?;
    // An explicit provider rather than the process default, which a dependency might set.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| ListenerTlsError::Rustls { listen, source })?;
    let builder = match &l.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let refused =
                |source: Box<dyn std::error::Error + Send + Sync>| ListenerTlsError::ClientCa {
                    listen,
                    ca: ca.clone(),
                    source,
                };
            let mut roots = RootCertStore::empty();
            let certificates = read_chain(ca)
                .map_err(|source| ListenerTlsError::ClientCaFile { listen, source })?;
            for c in certificates {
                roots.add(c).map_err(|e| refused(e.into()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match l.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            }
            .build()
            .map_err(|e| refused(e.into()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|source| ListenerTlsError::CertificateKey {
            listen,
            cert: cert.clone(),
            key: key.clone(),
            source,
        })?;
    config.alpn_protocols = if l.http2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]
    } else {
        vec![ALPN_HTTP1.to_vec()]
    };
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
