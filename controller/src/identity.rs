//! Identity: who is on the other end of a mutual-TLS connection.
//!
//! One CA signs every certificate. A client certificate names its holder in a SPIFFE URI SAN,
//! `spiffe://bulkhead/gateway/<id>` or `spiffe://bulkhead/operator/<name>`; the controller's own
//! certificate carries the DNS names and addresses gateways dial. The TLS layer (rustls through
//! tonic) proves the certificate chains to the CA; this module reads the URI SAN of the proven
//! leaf with `x509-parser` and turns it into an [`Identity`], and every handler decides from that
//! alone.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};
use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The SPIFFE trust domain of every Bulkhead identity.
pub const TRUST_DOMAIN: &str = "bulkhead";

/// A proven peer identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A gateway, by its id.
    Gateway(String),
    /// An operator, by name.
    Operator(String),
}

impl Identity {
    /// The SPIFFE URI of this identity.
    pub fn uri(&self) -> String {
        match self {
            Identity::Gateway(id) => format!("spiffe://{TRUST_DOMAIN}/gateway/{id}"),
            Identity::Operator(name) => format!("spiffe://{TRUST_DOMAIN}/operator/{name}"),
        }
    }

    /// Parses a SPIFFE URI of this trust domain; `None` for anything else.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let path = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
        let (kind, name) = path.strip_prefix('/')?.split_once('/')?;
        if !valid_name(name) {
            return None;
        }
        match kind {
            "gateway" => Some(Identity::Gateway(name.to_string())),
            "operator" => Some(Identity::Operator(name.to_string())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Whether `name` may be a gateway id or operator name: 1 to 128 characters of ASCII letters,
/// digits, `.`, `_` and `-`. Kept narrow because ids appear in URIs, logs, tables and file names.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// The identity named by a DER certificate's URI SANs. Exactly one Bulkhead SPIFFE URI is
/// required: a certificate naming two holders is refused rather than guessed at.
pub fn identity_of_der(der: &[u8]) -> Result<Identity, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("the client certificate's SAN extension is invalid: {e}"))?;
    let mut found = Vec::new();
    for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
        if let GeneralName::URI(uri) = name {
            if uri.starts_with("spiffe://") {
                found.push(*uri);
            }
        }
    }
    match found.as_slice() {
        [uri] => Identity::from_uri(uri).ok_or_else(|| {
            format!("the client certificate's SPIFFE id `{uri}` is not a Bulkhead gateway or operator id")
        }),
        [] => Err("the client certificate carries no SPIFFE id (spiffe://bulkhead/gateway/ID or spiffe://bulkhead/operator/NAME)".to_string()),
        _ => Err("the client certificate carries more than one SPIFFE id".to_string()),
    }
}

/// The proven identity of a request's peer, or `Unauthenticated`.
pub fn peer_identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate was presented"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate was presented"))?;
    identity_of_der(leaf.as_ref()).map_err(Status::unauthenticated)
}

/// The operator name of a request, or the refusal for any other peer.
pub fn require_operator<T>(request: &Request<T>) -> Result<String, Status> {
    match peer_identity(request)? {
        Identity::Operator(name) => Ok(name),
        Identity::Gateway(id) => Err(Status::permission_denied(format!(
            "gateway `{id}` may not call the operator API; use an operator certificate"
        ))),
    }
}

/// PEM files of one side of a connection.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate(s).
    pub ca: Vec<u8>,
    /// Own certificate chain.
    pub cert: Vec<u8>,
    /// Own private key.
    pub key: Vec<u8>,
}

impl TlsFiles {
    /// Reads the three PEM files.
    pub fn read(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<TlsFiles> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", p.display()))
        };
        Ok(TlsFiles {
            ca: read(ca)?,
            cert: read(cert)?,
            key: read(key)?,
        })
    }

    /// Server side: present our certificate, require a client certificate from the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(false)
    }

    /// Client side: trust only the CA, present our certificate, and check the server's name
    /// against `domain` (the host of the endpoint URL).
    pub fn client_config(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(TlsIdentity::from_pem(&self.cert, &self.key))
            .domain_name(domain)
    }
}

/// The host of an `https://host:port` endpoint, for server-name checks (IPv6 brackets removed).
pub fn endpoint_host(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_uris() {
        assert_eq!(
            Identity::from_uri("spiffe://bulkhead/gateway/spoke-a"),
            Some(Identity::Gateway("spoke-a".into()))
        );
        assert_eq!(
            Identity::from_uri("spiffe://bulkhead/operator/alice"),
            Some(Identity::Operator("alice".into()))
        );
        for bad in [
            "spiffe://other/gateway/a",
            "spiffe://bulkhead/gateway/",
            "spiffe://bulkhead/gateway/a/b",
            "spiffe://bulkhead/admin/a",
            "spiffe://bulkheadx/gateway/a",
            "https://bulkhead/gateway/a",
            "spiffe://bulkhead/gateway/..",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
        let id = Identity::Gateway("g-1".into());
        assert_eq!(Identity::from_uri(&id.uri()), Some(id));
    }

    #[test]
    fn endpoint_hosts() {
        assert_eq!(
            endpoint_host("https://ctl.internal:50051").unwrap(),
            "ctl.internal"
        );
        assert_eq!(endpoint_host("https://[::1]:50051/").unwrap(), "::1");
        assert_eq!(endpoint_host("https://127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(endpoint_host("ctl:1"), None);
    }

    #[test]
    fn garbage_certificates_are_errors() {
        assert!(identity_of_der(b"").is_err());
        assert!(identity_of_der(&[0x30, 0x82, 0xff, 0xff, 0x00]).is_err());
    }
}
