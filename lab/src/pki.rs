//! A throw-away certificate authority for a lab: one CA, one certificate per server name, and the
//! rustls configurations of the lab's servers and clients.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ResolvesServerCertUsingSni;
use rustls::sign::CertifiedKey;

use super::LabError;

/// The CA and the per-name certificates.
pub struct Pki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaves: Vec<Leaf>,
}

struct Leaf {
    name: String,
    cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn tls_err(e: impl std::fmt::Display) -> LabError {
    LabError::Tls(e.to_string())
}

/// The crypto provider of the lab: aws-lc-rs with the hybrid post-quantum group X25519MLKEM768
/// preferred, so a client's ClientHello carries an X25519MLKEM768 key share (1216 bytes) next
/// to an X25519 one, and spans two TCP segments at MTU 1500.
pub fn post_quantum_provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    let mut provider = default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ];
    provider
}

impl Pki {
    /// A new CA and one certificate (ECDSA P-256) per name.
    pub fn generate(names: &[&str]) -> Result<Pki, LabError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Bulkhead lab CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).map_err(tls_err)?;
        let mut leaves = Vec::with_capacity(names.len());
        for name in names {
            let key = KeyPair::generate().map_err(tls_err)?;
            let mut params = CertificateParams::new(vec![(*name).to_owned()]).map_err(tls_err)?;
            params.distinguished_name.push(DnType::CommonName, *name);
            let cert = params.signed_by(&key, &ca, &ca_key).map_err(tls_err)?;
            leaves.push(Leaf {
                name: (*name).to_owned(),
                cert: cert.der().clone(),
                key_pkcs8: key.serialize_der(),
            });
        }
        Ok(Pki {
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            leaves,
        })
    }

    /// The names certificates were issued for.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.leaves.iter().map(|l| l.name.as_str())
    }

    /// The CA certificate in PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA certificate (PEM) to `path`, for curl and openssl.
    pub fn write_ca(&self, path: &Path) -> Result<(), LabError> {
        std::fs::write(path, &self.ca_pem)
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))
    }

    /// A server configuration that picks the certificate by SNI (a ClientHello without SNI, or
    /// with an unknown name, fails the handshake) and speaks HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, LabError> {
        let provider = Arc::new(post_quantum_provider());
        let mut resolver = ResolvesServerCertUsingSni::new();
        for leaf in &self.leaves {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_pkcs8.clone()));
            let signing = provider
                .key_provider
                .load_private_key(key)
                .map_err(tls_err)?;
            let certified = CertifiedKey::new(vec![leaf.cert.clone()], signing);
            resolver.add(&leaf.name, certified).map_err(tls_err)?;
        }
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration that trusts only the lab CA, with the post-quantum provider.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, LabError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).map_err(tls_err)?;
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(post_quantum_provider()))
                .with_safe_default_protocol_versions()
                .map_err(tls_err)?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's ClientHello carries an X25519MLKEM768 key share and is larger than one TCP
    /// segment at MTU 1500 (MSS 1460, 1448 with timestamps).
    #[test]
    fn client_hello_spans_two_segments() {
        let pki = Pki::generate(&["api.example.com"]).unwrap();
        let name = rustls::pki_types::ServerName::try_from("api.example.com").unwrap();
        let mut conn = rustls::ClientConnection::new(pki.client_config().unwrap(), name).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        assert!(hello.len() > 1460, "ClientHello of {} bytes", hello.len());
        // Supported groups / key share carry 0x11ec (X25519MLKEM768).
        assert!(hello.windows(2).any(|w| w == [0x11, 0xec]));
        // The server side accepts the names it has certificates for.
        assert!(pki.server_config().is_ok());
        assert_eq!(pki.names().collect::<Vec<_>>(), ["api.example.com"]);
    }
}
