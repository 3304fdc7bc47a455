//! A rustls client for recording real ClientHellos (`testdata/record.sh`): connects, completes a
//! handshake against a lab CA, sends one HTTP request and prints the status line.
//!
//! ```text
//! hello_client --connect ADDR:PORT --name SERVER_NAME --ca CA.pem [--classic] [--tls12]
//! ```
//!
//! By default it offers TLS 1.3 and 1.2 with the post-quantum hybrid X25519MLKEM768 key share
//! first (what current rustls clients send); `--classic` offers only X25519 and P-256, `--tls12`
//! only TLS 1.2.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::crypto::aws_lc_rs::{self as provider, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

struct Args {
    connect: SocketAddr,
    name: String,
    ca: String,
    classic: bool,
    tls12: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut connect, mut name, mut ca) = (None, None, None);
    let (mut classic, mut tls12) = (false, false);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--connect" => connect = Some(it.next().context("--connect ADDR:PORT")?.parse()?),
            "--name" => name = it.next(),
            "--ca" => ca = it.next(),
            "--classic" => classic = true,
            "--tls12" => tls12 = true,
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Args {
        connect: connect.context("--connect ADDR:PORT is required")?,
        name: name.context("--name SERVER_NAME is required")?,
        ca: ca.context("--ca CA.pem is required")?,
        classic,
        tls12,
    })
}

fn config(a: &Args) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&a.ca).context("reading the CA file")? {
        roots.add(cert?)?;
    }
    let mut crypto = provider::default_provider();
    crypto.kx_groups = if a.classic {
        vec![kx_group::X25519, kx_group::SECP256R1]
    } else {
        vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
        ]
    };
    let versions: &[&rustls::SupportedProtocolVersion] = if a.tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    Ok(ClientConfig::builder_with_provider(Arc::new(crypto))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let server_name = ServerName::try_from(a.name.clone())?;
    let conn = ClientConnection::new(Arc::new(config(&a)?), server_name)?;
    let sock = TcpStream::connect_timeout(&a.connect, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = StreamOwned::new(conn, sock);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        a.name
    );
    tls.write_all(request.as_bytes())?;
    let mut first = [0u8; 64];
    let n = tls.read(&mut first)?;
    let line = String::from_utf8_lossy(&first[..n]);
    println!(
        "{} {:?} {:?}: {}",
        a.name,
        tls.conn.protocol_version(),
        tls.conn.negotiated_key_exchange_group().map(|g| g.name()),
        line.lines().next().unwrap_or("")
    );
    Ok(())
}
