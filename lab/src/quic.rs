//! QUIC and HTTP/3 in the lab (feature `quic`): an HTTP/3 server on UDP 443 of the internet
//! namespace and an HTTP/3 client for a workload namespace, both on quinn and h3, with the lab's
//! certificates and its post-quantum TLS provider (so a client's ClientHello, with its
//! X25519MLKEM768 key share, spans two Initial packets, as Chromium's does).
//!
//! The client sends from a *connected* UDP socket, as browsers do, so that an ICMP port
//! unreachable answering its Initials is reported by the kernel on the socket; quinn itself
//! ignores such errors, so the client watches for them beside quinn ([`WatchedSocket`]) and
//! reports [`Outcome::Refused`] at once. That is what a browser does with it: give up on QUIC and
//! fall back to TCP.
//!
//! Server paths: `/` answers a short text naming the server name the client asked for;
//! `/bytes/N` answers N bytes (at most [`MAX_BODY`]) following [`super::body_byte`].

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, TokioRuntime, UdpPoller};

use super::clients::Outcome;
use super::pki::Pki;
use super::servers::RecentLog;
use super::{body_byte, body_matches, LabError};
use crate::netns;

/// The ALPN of HTTP/3.
pub const ALPN_H3: &[u8] = b"h3";
/// Largest body `/bytes/N` serves over HTTP/3.
pub const MAX_BODY: u64 = 16 << 20;
/// Connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 256;
/// How long the server keeps an idle connection.
const SERVER_IDLE: Duration = Duration::from_secs(10);

/// One HTTP/3 request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicServed {
    /// The server name of the client's ClientHello.
    pub name: String,
    pub path: String,
    pub peer: SocketAddr,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// The request's `user-agent` header, if any.
    pub user_agent: Option<String>,
}

/// Counters of the HTTP/3 server.
#[derive(Debug, Default)]
pub struct QuicStats {
    pub handshakes: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub requests: AtomicU64,
    pub refused_over_limit: AtomicU64,
    served: RecentLog<QuicServed, 1024>,
}

impl QuicStats {
    /// The last requests answered (at most 1024), oldest first.
    pub fn served(&self) -> Vec<QuicServed> {
        self.served.entries()
    }

    fn push(&self, s: QuicServed) {
        self.served.push(s);
    }
}

/// The HTTP/3 server. Dropping it stops it.
#[derive(Debug)]
pub struct QuicServer {
    stats: Arc<QuicStats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

fn quic_err(e: impl fmt::Display) -> LabError {
    LabError::Tls(e.to_string())
}

impl QuicServer {
    /// Starts an HTTP/3 server on UDP `port` of every address of the named namespace (`[::]`,
    /// dual stack), with a certificate per name of `pki` chosen by SNI. Returns once bound.
    pub fn start(netns_name: &str, pki: &Pki, port: u16) -> Result<QuicServer, LabError> {
        let tls = pki.quic_server_config(&[ALPN_H3])?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(quic_err)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(SERVER_IDLE.try_into().map_err(quic_err)?));
        config.transport_config(Arc::new(transport));
        let stats = Arc::new(QuicStats::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
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
                let bind = SocketAddr::from(([0u16; 8], port));
                let endpoint = match quinn::Endpoint::server(config, bind) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("bind UDP {bind}: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let live = Arc::new(AtomicUsize::new(0));
                let accept = async {
                    while let Some(incoming) = endpoint.accept().await {
                        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                            thread_stats
                                .refused_over_limit
                                .fetch_add(1, Ordering::Relaxed);
                            incoming.refuse();
                            continue;
                        }
                        live.fetch_add(1, Ordering::Relaxed);
                        let stats = thread_stats.clone();
                        let live = live.clone();
                        tokio::spawn(async move {
                            serve_connection(incoming, &stats).await;
                            live.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
                endpoint.close(0u32.into(), b"lab stopping");
            });
        })
        .map_err(|e| LabError::io(format!("HTTP/3 server in {netns_name}"), e))?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(QuicServer {
                stats,
                shutdown: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(LabError::Other(format!("HTTP/3 server: {e}"))),
            Err(_) => Err(LabError::Other(
                "HTTP/3 server did not start within 10 s".into(),
            )),
        }
    }

    /// The server's counters and the requests it answered.
    pub fn stats(&self) -> &QuicStats {
        &self.stats
    }

    /// Stops the server and waits for its thread.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for QuicServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server name the client asked for in its ClientHello.
fn sni_of(conn: &quinn::Connection) -> Option<String> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .server_name
}

async fn serve_connection(incoming: quinn::Incoming, stats: &QuicStats) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(_) => {
            stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    stats.handshakes.fetch_add(1, Ordering::Relaxed);
    let name = sni_of(&conn).unwrap_or_default();
    let peer = conn.remote_address();
    let Ok(mut h3) = h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
    else {
        return;
    };
    // One connection carries a handful of requests in the tests: answer them one at a time.
    while let Ok(Some(resolver)) = h3.accept().await {
        let Ok((req, mut stream)) = resolver.resolve_request().await else {
            continue;
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.uri().path().to_owned();
        let user_agent = req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Vec<u8> = match path.strip_prefix("/bytes/").map(str::parse::<u64>) {
            Some(Ok(n)) if n <= MAX_BODY => (0..n).map(body_byte).collect(),
            Some(_) => Vec::new(),
            None => format!("hello over HTTP/3 from {name}\n").into_bytes(),
        };
        let status = if path.starts_with("/bytes/") && body.is_empty() && path != "/bytes/0" {
            400
        } else {
            200
        };
        let resp = match http::Response::builder()
            .status(status)
            .header("content-length", body.len())
            .header("content-type", "text/plain")
            .body(())
        {
            Ok(r) => r,
            Err(_) => continue,
        };
        let sent = body.len() as u64;
        let ok = stream.send_response(resp).await.is_ok()
            && stream.send_data(Bytes::from(body)).await.is_ok()
            && stream.finish().await.is_ok();
        if ok {
            stats.push(QuicServed {
                name: name.clone(),
                path,
                peer,
                body_bytes: sent,
                user_agent,
            });
        }
    }
}

/// The client's UDP socket for quinn: a connected socket that notices an ICMP error answering
/// what it sent. The kernel keeps such an error on a connected socket (`ECONNREFUSED` for port
/// unreachable, `EHOSTUNREACH` / `ENETUNREACH` for the others) and signals it as an error
/// event; quinn's own socket wrapper ignores both the event and the error, so this one watches
/// for it ([`WatchedSocket::watch_errors`]), records it and wakes the client.
#[derive(Debug)]
struct WatchedSocket {
    io: tokio::net::UdpSocket,
    state: quinn::udp::UdpSocketState,
    refused: AtomicBool,
    unreachable: AtomicBool,
    notify: tokio::sync::Notify,
}

impl WatchedSocket {
    fn new(socket: StdUdpSocket) -> io::Result<WatchedSocket> {
        let state = quinn::udp::UdpSocketState::new((&socket).into())?;
        socket.set_nonblocking(true)?;
        Ok(WatchedSocket {
            io: tokio::net::UdpSocket::from_std(socket)?,
            state,
            refused: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        })
    }

    /// Records an ICMP error reported on the socket; other errors are not ours to judge.
    fn note(&self, e: &io::Error) {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => self.refused.store(true, Ordering::Relaxed),
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                self.unreachable.store(true, Ordering::Relaxed)
            }
            _ => return,
        }
        self.notify.notify_one();
    }

    /// Waits for error events on the socket and takes each pending error (`SO_ERROR`). Runs
    /// until the socket's runtime stops.
    async fn watch_errors(self: Arc<Self>) {
        loop {
            if self.io.ready(tokio::io::Interest::ERROR).await.is_err() {
                return;
            }
            let taken = self
                .io
                .try_io(tokio::io::Interest::ERROR, || match self.io.take_error() {
                    Ok(Some(e)) => Ok(e),
                    Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                    Err(e) => Err(e),
                });
            if let Ok(e) = taken {
                self.note(&e);
            }
        }
    }
}

/// Write readiness for quinn, straight from the tokio socket.
#[derive(Debug)]
struct Writable(Arc<WatchedSocket>);

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.io.poll_send_ready(cx)
    }
}

impl AsyncUdpSocket for WatchedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable(self))
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.io.try_io(tokio::io::Interest::WRITABLE, || {
            self.state.send((&self.io).into(), transmit)
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.io.poll_recv_ready(cx))?;
            match self.io.try_io(tokio::io::Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) {
                Ok(n) => return Poll::Ready(Ok(n)),
                // An ICMP error may also come back from a receive: noted, and receiving goes
                // on (quinn would end the endpoint on it).
                Err(e) => self.note(&e),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }
}

/// What one HTTP/3 GET did.
#[derive(Debug, Clone)]
pub struct QuicExchange {
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// The client's address (its UDP port names the flow in the decision log).
    pub local: Option<SocketAddr>,
    /// True once the QUIC handshake completed.
    pub handshake: bool,
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

/// One HTTP/3 GET of `https://NAME/PATH` from inside the named namespace, to `server` (no DNS),
/// trusting only the lab CA, within `timeout`.
pub fn h3_get(
    netns_name: &str,
    pki: &Pki,
    server: SocketAddr,
    name: &str,
    path: &str,
    timeout: Duration,
) -> Result<QuicExchange, LabError> {
    let tls = pki.quic_client_config(&[ALPN_H3])?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(quic_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(timeout.try_into().map_err(quic_err)?));
    config.transport_config(Arc::new(transport));
    let (name, path) = (name.to_owned(), path.to_owned());
    netns::run_in(netns_name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(get_async(config, server, name, path, timeout))
    })
    .and_then(|r| r)
    .map_err(|e| LabError::io(format!("HTTP/3 client in {netns_name}"), e))
}

async fn get_async(
    config: quinn::ClientConfig,
    server: SocketAddr,
    name: String,
    path: String,
    timeout: Duration,
) -> io::Result<QuicExchange> {
    let start = Instant::now();
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let socket = StdUdpSocket::bind(bind)?;
    socket.connect(server)?;
    let local = socket.local_addr().ok();
    let watch = Arc::new(WatchedSocket::new(socket)?);
    let watcher = tokio::spawn(watch.clone().watch_errors());
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        watch.clone(),
        Arc::new(TokioRuntime),
    )?;
    endpoint.set_default_client_config(config);
    let mut ex = QuicExchange {
        outcome: Outcome::TimedOut,
        elapsed: Duration::ZERO,
        local,
        handshake: false,
        status: None,
        body: Vec::new(),
    };
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, exchange(&endpoint, server, &name, &path, &mut ex)) => r,
        () = watch.notify.notified() => Ok(Err("ICMP error".to_owned())),
    };
    ex.outcome = if watch.refused.load(Ordering::Relaxed) {
        Outcome::Refused
    } else if watch.unreachable.load(Ordering::Relaxed) {
        Outcome::Unreachable
    } else {
        match result {
            Err(_) => Outcome::TimedOut,
            Ok(Ok(())) => {
                let patterned = path.starts_with("/bytes/");
                let intact = !patterned || body_matches(0, &ex.body);
                if ex.status == Some(200) && intact {
                    Outcome::Completed
                } else {
                    Outcome::Failed(format!(
                        "status {:?}, {} body bytes, intact {intact}",
                        ex.status,
                        ex.body.len()
                    ))
                }
            }
            Ok(Err(e)) => Outcome::Failed(e),
        }
    };
    ex.elapsed = start.elapsed();
    endpoint.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_millis(200), endpoint.wait_idle()).await;
    watcher.abort();
    Ok(ex)
}

async fn exchange(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    name: &str,
    path: &str,
    ex: &mut QuicExchange,
) -> Result<(), String> {
    let conn = endpoint
        .connect(server, name)
        .map_err(|e| format!("connect: {e}"))?
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    ex.handshake = true;
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .map_err(|e| format!("h3: {e}"))?;
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let req = http::Request::get(format!("https://{name}{path}"))
        .body(())
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let mut stream = send
            .send_request(req)
            .await
            .map_err(|e| format!("send request: {e}"))?;
        stream.finish().await.map_err(|e| format!("finish: {e}"))?;
        let resp = stream
            .recv_response()
            .await
            .map_err(|e| format!("response: {e}"))?;
        ex.status = Some(resp.status().as_u16());
        while let Some(mut chunk) = stream.recv_data().await.map_err(|e| format!("body: {e}"))? {
            if ex.body.len() as u64 + chunk.remaining() as u64 > MAX_BODY {
                return Err("body larger than the lab's bound".to_owned());
            }
            let b = chunk.copy_to_bytes(chunk.remaining());
            ex.body.extend_from_slice(&b);
        }
        Ok(())
    }
    .await;
    conn.close(0u32.into(), b"done");
    drive.abort();
    result
}

/// What headless Chromium did with one HTTPS URL forced onto QUIC.
#[derive(Debug, Clone)]
pub struct BrowserRun {
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// The page as Chromium's `--dump-dom` printed it.
    pub dom: String,
    pub stderr: String,
}

/// The first of `chromium`, `chromium-browser`, `google-chrome` found on `PATH`.
pub fn find_chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|b| std::env::split_paths(&path).map(move |d| d.join(b)))
        .find(|p| p.is_file())
}

/// Headless Chromium in the named namespace loads `https://NAME/` with QUIC forced on for that
/// origin, NAME mapped to `server` (no DNS), trusting the lab certificate of NAME by its key
/// hash. Chromium falls back to TCP when QUIC fails; callers tell the two apart by which server
/// answered. Bounded by `timeout` (the browser is killed past it).
pub fn chromium_get(
    lab: &crate::Lab,
    netns_name: &str,
    pki: &Pki,
    chromium: &std::path::Path,
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<BrowserRun, LabError> {
    let spki = pki
        .spki_sha256_base64(name)
        .ok_or_else(|| LabError::Other(format!("no lab certificate for {name}")))?;
    let profile = lab
        .workdir()
        .join(format!("chromium-{}", std::process::id()));
    let mut cmd = lab.command(netns_name, &chromium.to_string_lossy());
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--enable-quic",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--origin-to-force-quic-on={name}:443"))
    .arg(format!(
        "--host-resolver-rules=MAP {name} {}",
        match server {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    ))
    .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
    .arg(format!("--timeout={}", timeout.as_millis()))
    .arg("--dump-dom")
    .arg(format!("https://{name}/"))
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| LabError::io("start chromium", e))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout + Duration::from_secs(10)) {
        Ok(r) => r.map_err(|e| LabError::io("chromium", e))?,
        Err(_) => {
            let _ = netns::send_signal(pid, netns::Signal::Kill);
            let _ = std::fs::remove_dir_all(&profile);
            return Ok(BrowserRun {
                outcome: Outcome::TimedOut,
                elapsed: start.elapsed(),
                dom: String::new(),
                stderr: String::new(),
            });
        }
    };
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let outcome = if dom.contains("hello over HTTP/3 from") {
        Outcome::Completed
    } else {
        Outcome::Failed(format!("exit {:?}", output.status.code()))
    };
    Ok(BrowserRun {
        outcome,
        elapsed: start.elapsed(),
        dom,
        stderr,
    })
}
