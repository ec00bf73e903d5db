//! HTTPS for the push API: a certificate chain and key from PEM files, rustls with *ring*.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::PushError;

/// The only protocol served; advertised so clients that speak ALPN do not try HTTP/2.
const ALPN_HTTP1: &[u8] = b"http/1.1";
const WORLD_READABLE: u32 = 0o004;

/// An acceptor for the certificate chain in `cert` and the key in `key`.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, PushError> {
    let chain = read_chain(cert)?;
    let private_key = read_key(key)?;
    let config_error = |source| PushError::TlsConfig {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    // An explicit provider rather than the process default, which another part of the program
    // (or a dependency) might install differently.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, PushError> {
    fs::read(path).map_err(|source| PushError::TlsRead {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, what: &'static str, reason: String) -> PushError {
    PushError::TlsPem {
        what,
        path: path.to_owned(),
        reason,
    }
}

pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PushError> {
    const WHAT: &str = "certificate";
    let bytes = read(path, WHAT)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, WHAT, format!("is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(
            path,
            WHAT,
            "holds no `BEGIN CERTIFICATE` block".to_owned(),
        ));
    }
    Ok(chain)
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PushError> {
    const WHAT: &str = "key";
    let bytes = read(path, WHAT)?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & WORLD_READABLE != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the push API's TLS key is readable by every user; `chmod o-r` it"
        );
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => pem_error(
            path,
            WHAT,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned(),
        ),
        e => pem_error(path, WHAT, format!("is not valid PEM: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(cert: &Path, key: &Path) -> PushError {
        match acceptor(cert, key) {
            Ok(_) => panic!("{} with {} was accepted", cert.display(), key.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn problems_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("push.crt");
        let key = dir.path().join("push.key");
        fs::write(&cert, generated.cert.pem()).unwrap();
        fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        assert!(acceptor(&cert, &key).is_ok());

        // Swapped: the certificate file holds no key and the other way round.
        for (c, k, named) in [(&key, &key, &key), (&cert, &cert, &cert)] {
            let err = refusal(c, k);
            assert!(matches!(err, PushError::TlsPem { .. }), "{err}");
            assert!(
                err.to_string().contains(&named.display().to_string()),
                "{err}"
            );
        }

        let missing = dir.path().join("absent.key");
        let err = refusal(&cert, &missing);
        assert!(
            matches!(err, PushError::TlsRead { what: "key", .. }),
            "{err}"
        );

        // A key that does not match the certificate.
        let other = rcgen::KeyPair::generate().unwrap();
        fs::write(&key, other.serialize_pem()).unwrap();
        let err = refusal(&cert, &key);
        assert!(matches!(err, PushError::TlsConfig { .. }), "{err}");
    }
}
