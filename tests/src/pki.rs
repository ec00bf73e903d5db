//! A test PKI for the gateway's TLS listeners: a server CA and a certificate for one name,
//! and a client CA with one client certificate (mTLS).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// PEM of every certificate and key.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_ca_pem: String,
    pub client_cert: String,
    pub client_key: String,
}

/// Fresh keys and certificates; the server certificate is for `server_name`.
pub fn pki_for(server_name: &str) -> Pki {
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let server_ca = ca("gateway test server CA");
    let client_ca = ca("gateway test client CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec![server_name.to_owned()])
        .unwrap()
        .signed_by(&server_key, &server_ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "partner-service");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &client_ca).unwrap();
    Pki {
        ca_pem: server_ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_ca_pem: client_ca.pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}
