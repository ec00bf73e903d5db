//! TLS for a gateway listener: rustls with *ring*, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, and client certificates verified against a CA when configured (mTLS).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::gateway::config::{ClientAuth, ListenerConfig};
use crate::push::tls::{read_chain, read_key};

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The acceptor of `l`, or `None` for a plain-HTTP listener. Errors name the file and what
/// is wrong with it.
pub fn acceptor(l: &ListenerConfig) -> Result<Option<TlsAcceptor>, String> {
    let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key) else {
        return Ok(None);
    };
    let at = format!("gateway listener {}", l.listen);
    let chain = read_chain(cert).map_err(|e| format!("{at}: {e}"))?;
    let private_key = read_key(key).map_err(|e| format!("{at}: {e}"))?;
    // An explicit provider rather than the process default, which a dependency might set.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{at}: {e}"))?;
    let builder = match &l.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_chain(ca).map_err(|e| format!("{at}: client_ca: {e}"))? {
                roots
                    .add(c)
                    .map_err(|e| format!("{at}: client_ca {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match l.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            }
            .build()
            .map_err(|e| format!("{at}: client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| format!("{at}: {} with {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = if l.http2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]
    } else {
        vec![ALPN_HTTP1.to_vec()]
    };
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
