//! The servers of the internet namespace: TLS (HTTP/1.1 inside, one certificate per name on one
//! address), plain HTTP on port 80 (the name comes from the Host header) and UDP echo.
//!
//! They run in-process on one thread that entered the internet namespace, on a single-threaded
//! tokio runtime, and listen on every address of the namespace (`[::]`, dual stack).
//!
//! HTTP paths (both TLS and plain):
//! - `/bytes/N`: a body of N bytes (at most [`MAX_BODY`]) following [`super::body_byte`].
//! - `/stream`: a long-lived transfer: [`STREAM_CHUNK`] bytes every [`STREAM_INTERVAL`], no
//!   Content-Length, until the client goes away or [`STREAM_MAX`] has passed.
//! - `/`: a short text body naming the host that was asked for.
//!
//! Everything is bounded: concurrent connections, request head size, read timeouts, body sizes,
//! stream duration.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::pki::Pki;
use super::{body_byte, LabError};
use crate::netns;

/// Largest body `/bytes/N` serves.
pub const MAX_BODY: u64 = 1 << 30;
/// Bytes per write of `/stream`.
pub const STREAM_CHUNK: usize = 2048;
/// Pause between writes of `/stream`.
pub const STREAM_INTERVAL: Duration = Duration::from_millis(20);
/// Longest `/stream` transfer.
pub const STREAM_MAX: Duration = Duration::from_secs(120);
/// Concurrent connections per listener; more are closed at once.
pub const MAX_CONNECTIONS: usize = 2048;
const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports the servers listen on.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub tls_ports: Vec<u16>,
    pub http_ports: Vec<u16>,
    pub udp_echo_ports: Vec<u16>,
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec {
            tls_ports: vec![443],
            http_ports: vec![80],
            udp_echo_ports: vec![53, 5001],
        }
    }
}

/// One HTTP response the servers completed (or that ended early).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// SNI for TLS, Host header for plain HTTP.
    pub name: String,
    pub tls: bool,
    pub path: String,
    pub peer: SocketAddr,
    /// Body bytes written.
    pub body_bytes: u64,
    /// False when the client went away (or the connection was cut) before the body ended.
    pub complete: bool,
}

/// Counters of the servers.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub tcp_accepted: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub tls_failures: AtomicU64,
    pub requests: AtomicU64,
    pub udp_datagrams: AtomicU64,
    pub refused_over_limit: AtomicU64,
    served: RecentLog<Served, 4096>,
}

impl ServerStats {
    /// The last responses (at most 4096), oldest first.
    pub fn served(&self) -> Vec<Served> {
        self.served.entries()
    }

    fn push(&self, s: Served) {
        self.served.push(s);
    }
}

/// The last `N` entries pushed, shared between a server's tasks and the test reading them.
#[derive(Debug)]
pub(crate) struct RecentLog<T, const N: usize>(Mutex<VecDeque<T>>);

impl<T, const N: usize> Default for RecentLog<T, N> {
    fn default() -> Self {
        RecentLog(Mutex::new(VecDeque::new()))
    }
}

impl<T: Clone, const N: usize> RecentLog<T, N> {
    /// What is kept, oldest first.
    pub(crate) fn entries(&self) -> Vec<T> {
        self.lock().iter().cloned().collect()
    }

    /// Appends `entry`, dropping the oldest past `N`.
    pub(crate) fn push(&self, entry: T) {
        let mut q = self.lock();
        if q.len() == N {
            q.pop_front();
        }
        q.push_back(entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running servers. Dropping stops them.
#[derive(Debug)]
pub struct InternetServers {
    stats: Arc<ServerStats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl InternetServers {
    /// Starts the servers in the named namespace and returns once every socket is bound.
    pub fn start(netns_name: &str, pki: &Pki, spec: &ServerSpec) -> Result<Self, LabError> {
        let tls = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        let stats = Arc::new(ServerStats::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let spec = spec.clone();
        let thread_stats = stats.clone();
        let thread = netns::spawn_in(netns_name, move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                match bind_all(&spec).await {
                    Ok((tls_l, http_l, udp)) => {
                        let _ = ready_tx.send(Ok(()));
                        for l in tls_l {
                            tokio::spawn(accept_loop(l, Some(tls.clone()), thread_stats.clone()));
                        }
                        for l in http_l {
                            tokio::spawn(accept_loop(l, None, thread_stats.clone()));
                        }
                        for u in udp {
                            tokio::spawn(udp_echo(u, thread_stats.clone()));
                        }
                        let _ = stop_rx.await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| LabError::io("spawn server thread", e))?;
        let mut servers = InternetServers {
            stats,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(servers),
            Ok(Err(e)) => Err(LabError::Other(format!("servers: {e}"))),
            Err(_) => {
                // The thread ended without a word: it could not enter the namespace.
                let err = servers
                    .thread
                    .take()
                    .map(|t| t.join())
                    .and_then(|r| r.ok())
                    .and_then(|r| r.err())
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "did not start".into());
                Err(LabError::Other(format!("servers: {err}")))
            }
        }
    }

    /// The servers' counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Stops the servers and waits for their thread.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InternetServers {
    fn drop(&mut self) {
        self.stop();
    }
}

type Bound = (Vec<TcpListener>, Vec<TcpListener>, Vec<UdpSocket>);

async fn bind_all(spec: &ServerSpec) -> Result<Bound, String> {
    let mut tls = Vec::new();
    let mut http = Vec::new();
    let mut udp = Vec::new();
    for p in &spec.tls_ports {
        tls.push(
            TcpListener::bind(("::", *p))
                .await
                .map_err(|e| format!("bind tcp [::]:{p}: {e}"))?,
        );
    }
    for p in &spec.http_ports {
        http.push(
            TcpListener::bind(("::", *p))
                .await
                .map_err(|e| format!("bind tcp [::]:{p}: {e}"))?,
        );
    }
    // One UDP socket per address: a socket bound to [::] would answer from whichever address
    // the kernel picks as source, and a connected client drops replies from another address.
    for p in &spec.udp_echo_ports {
        for a in super::addr::INTERNET_ADDRESSES {
            udp.push(
                UdpSocket::bind((a, *p))
                    .await
                    .map_err(|e| format!("bind udp {a} port {p}: {e}"))?,
            );
        }
    }
    Ok((tls, http, udp))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stats: Arc<ServerStats>,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stats.tcp_accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            stats.refused_over_limit.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stats = stats.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await;
                    match accepted {
                        Ok(Ok(s)) => {
                            stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                            let sni = s.get_ref().1.server_name().map(str::to_owned);
                            let _ = serve_http(s, sni, true, peer, &stats).await;
                        }
                        _ => {
                            stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                None => {
                    let _ = serve_http(stream, None, false, peer, &stats).await;
                }
            }
        });
    }
}

async fn udp_echo(socket: UdpSocket, stats: Arc<ServerStats>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        stats.udp_datagrams.fetch_add(1, Ordering::Relaxed);
        let _ = socket.send_to(&buf[..n], peer).await;
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    host: Option<String>,
}

/// Parses an HTTP/1.x request head (everything before the blank line).
fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let version = first.next()?;
    if !version.starts_with("HTTP/1.") || first.next().is_some() {
        return None;
    }
    let mut host = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("host") {
                let v = v.trim();
                // Drop a port suffix ("name:80", "[fd00::1]:80"), keep IPv6 literals whole.
                let name = if let Some(end) = v.find(']').filter(|_| v.starts_with('[')) {
                    &v[..=end]
                } else if v.matches(':').count() == 1 {
                    v.split(':').next().unwrap_or(v)
                } else {
                    v
                };
                host = Some(name.to_ascii_lowercase());
            }
        }
    }
    Some(Request { method, path, host })
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    sni: Option<String>,
    tls: bool,
    peer: SocketAddr,
    stats: &ServerStats,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut s))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let Some(req) = parse_head(&head) else {
        s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return s.shutdown().await;
    };
    let name = sni.or(req.host.clone()).unwrap_or_default();
    let mut served = Served {
        name: name.clone(),
        tls,
        path: req.path.clone(),
        peer,
        body_bytes: 0,
        complete: false,
    };
    let result = respond(&mut s, &req, &name, &mut served).await;
    stats.push(served);
    result
}

async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    req: &Request,
    name: &str,
    served: &mut Served,
) -> std::io::Result<()> {
    if req.method != "GET" {
        s.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await?;
        return s.shutdown().await;
    }
    if let Some(n) = req.path.strip_prefix("/bytes/") {
        let Some(len) = n.parse::<u64>().ok().filter(|l| *l <= MAX_BODY) else {
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return s.shutdown().await;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nX-Served-Name: {name}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        let mut buf = vec![0u8; 64 * 1024];
        while served.body_bytes < len {
            let n = usize::try_from((len - served.body_bytes).min(buf.len() as u64))
                .unwrap_or(buf.len());
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = body_byte(served.body_bytes + k as u64);
            }
            s.write_all(&buf[..n]).await?;
            served.body_bytes += n as u64;
        }
        served.complete = true;
        s.flush().await?;
        return s.shutdown().await;
    }
    if req.path == "/stream" {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Served-Name: {name}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        let start = tokio::time::Instant::now();
        let mut buf = vec![0u8; STREAM_CHUNK];
        while start.elapsed() < STREAM_MAX {
            for (k, b) in buf.iter_mut().enumerate() {
                *b = body_byte(served.body_bytes + k as u64);
            }
            s.write_all(&buf).await?;
            s.flush().await?;
            served.body_bytes += buf.len() as u64;
            tokio::time::sleep(STREAM_INTERVAL).await;
        }
        served.complete = true;
        return s.shutdown().await;
    }
    if req.path == "/" {
        let body = format!("hello from {name}\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Served-Name: {name}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        served.body_bytes = body.len() as u64;
        served.complete = true;
        return s.shutdown().await;
    }
    s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_heads() {
        let r = parse_head(b"GET /bytes/10 HTTP/1.1\r\nHost: API.example.com:80\r\nAccept: */*")
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/bytes/10");
        assert_eq!(r.host.as_deref(), Some("api.example.com"));
        let r = parse_head(b"GET / HTTP/1.0\r\nhost: [fd00::1]").unwrap();
        assert_eq!(r.host.as_deref(), Some("[fd00::1]"));
        assert!(parse_head(b"GET /\r\n").is_none());
        assert!(parse_head(b"\xff\xfe").is_none());
        assert!(parse_head(b"GET / SPDY/3").is_none());
    }
}
