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

    /// A server configuration for QUIC: TLS 1.3 only (QUIC has no other), the same certificates
    /// chosen by SNI, and the given ALPN protocols.
    pub fn quic_server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, LabError> {
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
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(config)
    }

    /// A client configuration for QUIC: TLS 1.3 only, trusting only the lab CA, with the
    /// post-quantum provider (so the ClientHello spans two Initial packets) and the given ALPN.
    pub fn quic_client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, LabError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).map_err(tls_err)?;
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(post_quantum_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(tls_err)?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(config)
    }

    /// The base64 SHA-256 hash of the certificate of `name`'s public key (SubjectPublicKeyInfo),
    /// in the form Chromium's `--ignore-certificate-errors-spki-list` takes.
    pub fn spki_sha256_base64(&self, name: &str) -> Option<String> {
        let leaf = self.leaves.iter().find(|l| l.name == name)?;
        let spki = spki_of(&leaf.cert)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki);
        Some(base64(digest.as_ref()))
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

/// The SubjectPublicKeyInfo of a DER certificate: the seventh element of its TBSCertificate
/// (after the optional version, serial, signature algorithm, issuer, validity and subject).
fn spki_of(cert: &[u8]) -> Option<&[u8]> {
    /// One DER element at the start of `b`: (tag, whole element, rest).
    fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&l0, rest) = rest.split_first()?;
        let (len, hdr) = if l0 < 0x80 {
            (usize::from(l0), 2)
        } else {
            let n = usize::from(l0 & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, &x| a << 8 | usize::from(x));
            (len, 2 + n)
        };
        let end = hdr.checked_add(len)?;
        if b.len() < end {
            return None;
        }
        Some((tag, &b[..end], &b[end..]))
    }
    fn contents(e: &[u8]) -> &[u8] {
        let hdr = if e[1] < 0x80 {
            2
        } else {
            2 + usize::from(e[1] & 0x7f)
        };
        &e[hdr..]
    }
    let (_, cert_seq, _) = element(cert)?;
    let (_, tbs, _) = element(contents(cert_seq))?;
    let mut rest = contents(tbs);
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..5 {
        rest = element(rest)?.2;
    }
    Some(element(rest)?.1)
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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

    #[test]
    fn base64_and_spki() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let pki = Pki::generate(&["api.example.com"]).unwrap();
        let spki = spki_of(&pki.leaves[0].cert).unwrap();
        // A P-256 key: SEQUENCE { SEQUENCE { ecPublicKey, prime256v1 }, BIT STRING (65 bytes) }.
        assert_eq!(spki.len(), 91);
        assert_eq!(&spki[..2], &[0x30, 0x59]);
        assert_eq!(pki.spki_sha256_base64("api.example.com").unwrap().len(), 44);
        assert!(pki.spki_sha256_base64("other").is_none());
    }
}
