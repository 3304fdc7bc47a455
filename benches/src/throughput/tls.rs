//! New TLS connections per second: client threads in the workload namespace open a TCP
//! connection, complete a full TLS 1.3 handshake (no resumption), close, and start over, for a
//! fixed time. The lab's TLS server answers in the server namespace.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bulkhead_lab::netns;
use rustls::pki_types::ServerName;

use super::Interrupt;

/// Result of a handshake loop.
#[derive(Debug, Clone, PartialEq)]
pub struct HandshakeRate {
    pub per_second: f64,
    pub completed: u64,
    pub failed: u64,
}

/// Runs `threads` client loops in namespace `client_ns` against `server` with SNI `name` for
/// `duration`, and returns the rate of completed handshakes.
pub fn measure(
    client_ns: &str,
    server: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
    threads: usize,
    duration: Duration,
    interrupt: &Interrupt,
) -> anyhow::Result<HandshakeRate> {
    let server_name = ServerName::try_from(name.to_owned()).context("invalid TLS server name")?;
    let mut handles = Vec::with_capacity(threads);
    let start = Instant::now();
    for _ in 0..threads.max(1) {
        let config = config.clone();
        let server_name = server_name.clone();
        let interrupt = interrupt.clone();
        handles.push(
            netns::spawn_in(client_ns, move || {
                handshake_loop(server, server_name, config, duration, &interrupt)
            })
            .context("starting a TLS client thread in the workload namespace")?,
        );
    }
    let (mut completed, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    for h in handles {
        let (ok, bad, err) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a TLS client thread panicked"))?
            .context("entering the workload namespace")?;
        completed += ok;
        failed += bad;
        if first_error.is_none() {
            first_error = err;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if interrupt.is_set() {
        bail!("interrupted");
    }
    if completed == 0 {
        bail!(
            "no TLS handshake completed ({failed} failed; first error: {})",
            first_error.unwrap_or_else(|| "none".to_owned())
        );
    }
    // More than 1% failures means the figure is not a clean rate: report it as an error.
    if failed * 100 > completed {
        bail!(
            "{failed} of {} TLS handshakes failed (first error: {})",
            completed + failed,
            first_error.unwrap_or_default()
        );
    }
    Ok(HandshakeRate {
        per_second: completed as f64 / elapsed,
        completed,
        failed,
    })
}

fn handshake_loop(
    server: SocketAddr,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    duration: Duration,
    interrupt: &Interrupt,
) -> (u64, u64, Option<String>) {
    let start = Instant::now();
    let (mut ok, mut bad, mut first_error) = (0u64, 0u64, None);
    while start.elapsed() < duration && !interrupt.is_set() {
        match one_handshake(server, name.clone(), config.clone()) {
            Ok(()) => ok += 1,
            Err(e) => {
                bad += 1;
                if first_error.is_none() {
                    first_error = Some(format!("{e:#}"));
                }
                // A path that refuses everything must not spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    (ok, bad, first_error)
}

fn one_handshake(
    server: SocketAddr,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<()> {
    let mut sock =
        TcpStream::connect_timeout(&server, Duration::from_secs(2)).context("connect")?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut conn = rustls::ClientConnection::new(config, name).context("TLS client set-up")?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).context("TLS handshake")?;
    }
    conn.send_close_notify();
    let _ = conn.write_tls(&mut sock);
    let _ = sock.flush();
    Ok(())
}
