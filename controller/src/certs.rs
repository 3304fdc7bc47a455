//! `bulkheadctl certs`: a lab CA and certificates in the form the controller expects.
//!
//! Production users bring their own PKI (see docs/control-plane.md); this exists so a lab, a demo
//! or a test can stand up mutual TLS in two commands. Keys are ECDSA P-256, written with mode
//! 0600, and existing files are never overwritten.
//!
//! Issuing reloads the CA key from `DIR/ca.key` and rebuilds the CA's distinguished name, which
//! is all a leaf needs from its issuer: the leaf names the issuer's DN and the key identifier
//! (derived from the CA's public key), both identical to the CA certificate written by `init`.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::{valid_name, Identity};

const CA_NAME: &str = "Bulkhead lab CA";

/// What `certs issue` makes.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A gateway certificate (`spiffe://bulkhead/gateway/ID`).
    Gateway(String),
    /// An operator certificate (`spiffe://bulkhead/operator/NAME`).
    Operator(String),
    /// The controller's server certificate for these DNS names / addresses.
    Controller(Vec<String>),
}

/// Writes `DIR/ca.pem` and `DIR/ca.key`.
pub fn init(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let cert = ca_params()?
        .self_signed(&key)
        .context("cannot sign the CA")?;
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(vec![cert_path, key_path])
}

/// Issues one certificate signed by the CA in `dir`; returns the files written.
pub fn issue(dir: &Path, subject: &Subject) -> anyhow::Result<Vec<PathBuf>> {
    let ca_key_path = dir.join("ca.key");
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).with_context(|| {
        format!(
            "{}: cannot read the CA key (run `bulkheadctl certs init`)",
            ca_key_path.display()
        )
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("the CA key is not a valid PEM key")?;
    let ca = ca_params()?.self_signed(&ca_key)?;

    let (stem, mut params) = match subject {
        Subject::Gateway(id) | Subject::Operator(id) => {
            if !valid_name(id) {
                bail!("`{id}` is not a valid name (letters, digits, `.`, `_`, `-`; 1 to 128)");
            }
            let identity = match subject {
                Subject::Gateway(_) => Identity::Gateway(id.clone()),
                _ => Identity::Operator(id.clone()),
            };
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let kind = if matches!(subject, Subject::Gateway(_)) {
                "gateway"
            } else {
                "operator"
            };
            (format!("{kind}-{id}"), with_cn(params, id))
        }
        Subject::Controller(hosts) => {
            if hosts.is_empty() {
                bail!("--controller needs at least one DNS name or address");
            }
            let mut params = CertificateParams::default();
            for host in hosts {
                let san = match host.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        host.clone()
                            .try_into()
                            .with_context(|| format!("`{host}` is not a DNS name"))?,
                    ),
                };
                params.subject_alt_names.push(san);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            ("controller".to_string(), with_cn(params, &hosts[0]))
        }
    };
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, 2);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(vec![cert_path, key_path])
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, 10);
    Ok(with_cn(params, CA_NAME))
}

fn with_cn(mut params: CertificateParams, cn: &str) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Bulkhead");
    params.distinguished_name = dn;
    params
}

/// From January 1st of this year (so clocks a little behind still accept it) for `years`.
/// The CA's validity must not depend on when `issue` runs: only its DN and key are reused.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let now = crate::config::rfc3339(crate::config::now_ms());
    let year: i32 = now.get(..4).and_then(|y| y.parse().ok()).unwrap_or(2025);
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 12, 31);
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "{}: cannot create (existing files are kept)",
                path.display()
            )
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_the_spiffe_identity() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        assert!(init(dir.path()).is_err(), "init must not overwrite");
        let files = issue(dir.path(), &Subject::Gateway("spoke-a".into())).unwrap();
        let pem = std::fs::read_to_string(&files[0]).unwrap();
        let der = rustls_der(&pem);
        assert_eq!(
            crate::identity::identity_of_der(&der).unwrap(),
            Identity::Gateway("spoke-a".into())
        );
        let files = issue(dir.path(), &Subject::Operator("alice".into())).unwrap();
        let der = rustls_der(&std::fs::read_to_string(&files[0]).unwrap());
        assert_eq!(
            crate::identity::identity_of_der(&der).unwrap(),
            Identity::Operator("alice".into())
        );
        assert!(issue(dir.path(), &Subject::Gateway("../x".into())).is_err());
        let files = issue(
            dir.path(),
            &Subject::Controller(vec!["localhost".into(), "127.0.0.1".into()]),
        )
        .unwrap();
        let der = rustls_der(&std::fs::read_to_string(&files[0]).unwrap());
        assert!(crate::identity::identity_of_der(&der).is_err());
        let mode = std::fs::metadata(&files[1]).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    fn rustls_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}
