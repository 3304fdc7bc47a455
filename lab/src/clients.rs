//! Clients that run inside a workload namespace: an in-process HTTP(S) client on rustls (its
//! ClientHello carries an X25519MLKEM768 key share and spans two TCP segments), a long-lived
//! streaming client, a UDP client, and the external tools curl and `openssl s_client`.
//!
//! Every client returns an [`Outcome`] that tells apart what the gateway's verdicts look like
//! from a workload: a completed exchange, a reset (reject after the name was seen), a refused or
//! unreachable connection (reject on the SYN), and a timeout (silent deny).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};

use super::{body_matches, LabError};
use crate::netns;

/// How an exchange ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The response arrived in full.
    Completed,
    /// The connection was reset (RST) after it was established.
    Reset,
    /// The connection attempt was refused (RST answering the SYN, or ICMP port unreachable).
    Refused,
    /// ICMP host / network unreachable or administratively prohibited.
    Unreachable,
    /// Nothing came back before the deadline (silent drop).
    TimedOut,
    /// Anything else (TLS failure, malformed response, ...).
    Failed(String),
}

impl Outcome {
    /// A short lower-case word for tables.
    pub fn word(&self) -> &str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Reset => "reset",
            Outcome::Refused => "refused",
            Outcome::Unreachable => "unreachable",
            Outcome::TimedOut => "timed out",
            Outcome::Failed(_) => "failed",
        }
    }

    fn from_io(e: &io::Error) -> Outcome {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Outcome::Reset,
            io::ErrorKind::ConnectionRefused => Outcome::Refused,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Outcome::Unreachable
            }
            io::ErrorKind::TimedOut => Outcome::TimedOut,
            _ => {
                // rustls reports a reset in the middle of a handshake wrapped in its own error.
                let text = e.to_string();
                if text.contains("reset") {
                    Outcome::Reset
                } else {
                    Outcome::Failed(text)
                }
            }
        }
    }
}

/// One HTTP(S) GET.
#[derive(Debug, Clone)]
pub struct Request {
    pub server: SocketAddr,
    /// SNI (TLS) and Host header.
    pub name: String,
    pub path: String,
    /// TLS (with this configuration) or plain HTTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Deadline for the whole exchange.
    pub timeout: Duration,
}

impl Request {
    /// An HTTPS GET of `path` from `server`, asking for `name`.
    pub fn https(
        tls: &Arc<rustls::ClientConfig>,
        server: SocketAddr,
        name: &str,
        path: &str,
    ) -> Request {
        Request {
            server,
            name: name.to_owned(),
            path: path.to_owned(),
            tls: Some(tls.clone()),
            timeout: Duration::from_secs(5),
        }
    }

    /// A plain HTTP GET.
    pub fn http(server: SocketAddr, host: &str, path: &str) -> Request {
        Request {
            server,
            name: host.to_owned(),
            path: path.to_owned(),
            tls: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the deadline.
    pub fn timeout(mut self, t: Duration) -> Request {
        self.timeout = t;
        self
    }
}

/// What an in-process exchange did.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// The client's address (to find the flow in the decision log), known as soon as the
    /// socket is bound, also when the connection never completes.
    pub local: Option<SocketAddr>,
    pub tls_established: bool,
    pub status: Option<u16>,
    /// The `X-Served-Name` header: which name the server answered as.
    pub served_name: Option<String>,
    pub content_length: Option<u64>,
    /// Body bytes received.
    pub body_len: u64,
    /// The body followed the servers' pattern (and had the announced length, when completed).
    pub body_intact: bool,
    /// TCP payload bytes the client wrote (TLS records included).
    pub tcp_bytes_sent: u64,
    /// TCP payload bytes the client read.
    pub tcp_bytes_received: u64,
}

/// Runs one exchange from inside the named namespace.
pub fn fetch(netns_name: &str, req: Request) -> Result<Exchange, LabError> {
    netns::run_in(netns_name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok::<_, io::Error>(rt.block_on(fetch_async(req)))
    })
    .and_then(|r| r)
    .map_err(|e| LabError::io(format!("client in {netns_name}"), e))
}

/// A TCP stream that counts payload bytes both ways.
struct Counting {
    inner: TcpStream,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn fetch_async(req: Request) -> Exchange {
    let start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut ex = Exchange {
        outcome: Outcome::TimedOut,
        elapsed: Duration::ZERO,
        local: None,
        tls_established: false,
        status: None,
        served_name: None,
        content_length: None,
        body_len: 0,
        body_intact: false,
        tcp_bytes_sent: 0,
        tcp_bytes_received: 0,
    };
    let result = tokio::time::timeout(
        req.timeout,
        run_exchange(&req, &mut ex, sent.clone(), received.clone()),
    )
    .await;
    ex.outcome = match result {
        Err(_) => Outcome::TimedOut,
        Ok(Ok(())) => {
            let patterned = req.path.starts_with("/bytes/") || req.path == "/stream";
            let complete = ex.status == Some(200)
                && (ex.body_intact || !patterned)
                && ex.content_length.is_none_or(|l| l == ex.body_len);
            if complete {
                Outcome::Completed
            } else {
                Outcome::Failed(format!(
                    "status {:?}, {} of {:?} body bytes, intact {}",
                    ex.status, ex.body_len, ex.content_length, ex.body_intact
                ))
            }
        }
        Ok(Err(e)) => Outcome::from_io(&e),
    };
    ex.elapsed = start.elapsed();
    ex.tcp_bytes_sent = sent.load(Ordering::Relaxed);
    ex.tcp_bytes_received = received.load(Ordering::Relaxed);
    ex
}

async fn run_exchange(
    req: &Request,
    ex: &mut Exchange,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
) -> io::Result<()> {
    // Bind first, so the client's address is known even when the SYN is never answered.
    let socket = bound_socket(req.server).await?;
    ex.local = socket.local_addr().ok();
    let tcp = socket.connect(req.server).await?;
    ex.local = tcp.local_addr().ok();
    let _ = tcp.set_nodelay(true);
    let counting = Counting {
        inner: tcp,
        sent,
        received,
    };
    let mut stream: Box<dyn Io> = match &req.tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(req.name.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let s = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, counting)
                .await?;
            ex.tls_established = true;
            Box::new(s)
        }
        None => Box::new(counting),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bulkhead-netlab\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        req.path, req.name
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    read_response(&mut stream, ex, |_| true).await
}

/// A TCP socket bound to the source address the kernel would pick for `server` and to a free
/// port (learnt from a connected UDP socket, which sends nothing).
async fn bound_socket(server: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let unspecified: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let probe = UdpSocket::bind(unspecified).await?;
    probe.connect(server).await?;
    let source = SocketAddr::new(probe.local_addr()?.ip(), 0);
    let socket = if server.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(source)?;
    Ok(socket)
}

/// Reads the response head, then the body to EOF, checking the pattern. `on_data` is told the
/// running body length and may stop the read by returning false.
async fn read_response<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    ex: &mut Exchange,
    mut on_data: impl FnMut(u64) -> bool,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let n = read_or_eof(s, &mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > 16 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).into_owned();
    let mut lines = text.split("\r\n");
    ex.status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok());
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if k.eq_ignore_ascii_case("content-length") {
                ex.content_length = v.trim().parse().ok();
            } else if k.eq_ignore_ascii_case("x-served-name") {
                ex.served_name = Some(v.trim().to_owned());
            }
        }
    }
    let first = &head[body_start..];
    ex.body_intact = body_matches(0, first);
    ex.body_len = first.len() as u64;
    if !on_data(ex.body_len) {
        return Ok(());
    }
    loop {
        let n = read_or_eof(s, &mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        ex.body_intact &= body_matches(ex.body_len, &buf[..n]);
        ex.body_len += n as u64;
        if !on_data(ex.body_len) {
            return Ok(());
        }
    }
}

/// A read where a TLS close without close_notify after the whole body counts as EOF (servers
/// that shut down right after writing may race their close_notify).
async fn read_or_eof<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    buf: &mut [u8],
) -> io::Result<usize> {
    match s.read(buf).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        r => r,
    }
}

/// A long-lived transfer (`/stream`) read on its own thread, for the "cut an open connection"
/// tests.
#[derive(Debug)]
pub struct StreamWatch {
    state: Arc<StreamState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

#[derive(Debug)]
struct StreamState {
    bytes: AtomicU64,
    intact: AtomicBool,
    local: Mutex<Option<SocketAddr>>,
    end: Mutex<Option<(Outcome, Instant)>>,
}

impl StreamWatch {
    /// Opens `GET /stream` from inside the namespace and keeps reading until the stream ends,
    /// fails, or the watch is dropped.
    pub fn open(netns_name: &str, mut req: Request) -> Result<StreamWatch, LabError> {
        req.path = "/stream".into();
        let state = Arc::new(StreamState {
            bytes: AtomicU64::new(0),
            intact: AtomicBool::new(true),
            local: Mutex::new(None),
            end: Mutex::new(None),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = netns::spawn_in(netns_name, move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    *st.end.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Outcome::Failed(e.to_string()), Instant::now()));
                    return;
                }
            };
            rt.block_on(async move {
                let outcome = tokio::select! {
                    r = stream_task(&req, &st) => match r {
                        Ok(()) => Outcome::Completed,
                        Err(e) => Outcome::from_io(&e),
                    },
                    _ = stop_rx => Outcome::Failed("stopped by the caller".into()),
                };
                *st.end.lock().unwrap_or_else(|p| p.into_inner()) = Some((outcome, Instant::now()));
            });
        })
        .map_err(|e| LabError::io("spawn stream client", e))?;
        Ok(StreamWatch {
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Body bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::Relaxed)
    }

    /// Whether every byte so far followed the servers' pattern.
    pub fn intact(&self) -> bool {
        self.state.intact.load(Ordering::Relaxed)
    }

    /// The client's address, once connected.
    pub fn local(&self) -> Option<SocketAddr> {
        *self.state.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How and when the stream ended, if it did.
    pub fn ended(&self) -> Option<(Outcome, Instant)> {
        self.state
            .end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until at least `min` body bytes arrived; false on timeout or if the stream ended.
    pub fn wait_bytes(&self, min: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.bytes() >= min {
                return true;
            }
            if self.ended().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for the stream to end.
    pub fn wait_end(&self, timeout: Duration) -> Option<(Outcome, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.ended() {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn stream_task(req: &Request, st: &StreamState) -> io::Result<()> {
    let tcp = tokio::time::timeout(req.timeout, TcpStream::connect(req.server))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    *st.local.lock().unwrap_or_else(|p| p.into_inner()) = tcp.local_addr().ok();
    let mut stream: Box<dyn Io> = match &req.tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(req.name.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let s = tokio::time::timeout(
                req.timeout,
                tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            Box::new(s)
        }
        None => Box::new(tcp),
    };
    let request = format!(
        "GET /stream HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        req.name
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut ex = Exchange {
        outcome: Outcome::TimedOut,
        elapsed: Duration::ZERO,
        local: None,
        tls_established: req.tls.is_some(),
        status: None,
        served_name: None,
        content_length: None,
        body_len: 0,
        body_intact: true,
        tcp_bytes_sent: 0,
        tcp_bytes_received: 0,
    };
    let r = tokio::time::timeout(
        super::servers::STREAM_MAX + Duration::from_secs(10),
        read_response(&mut stream, &mut ex, |n| {
            st.bytes.store(n, Ordering::Relaxed);
            true
        }),
    )
    .await;
    st.intact.store(ex.body_intact, Ordering::Relaxed);
    match r {
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
        Ok(r) => r,
    }
}

/// Sends one datagram from inside the namespace and waits for the echo.
pub fn udp_echo(
    netns_name: &str,
    server: SocketAddr,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<(Outcome, Duration), LabError> {
    netns::run_in(netns_name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let start = Instant::now();
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let sock = UdpSocket::bind(bind).await?;
            sock.connect(server).await?;
            sock.send(&payload).await?;
            let mut buf = vec![0u8; 65_536];
            let outcome = match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
                Err(_) => Outcome::TimedOut,
                Ok(Ok(n)) if buf[..n] == payload[..] => Outcome::Completed,
                Ok(Ok(_)) => Outcome::Failed("echo differs".into()),
                Ok(Err(e)) => Outcome::from_io(&e),
            };
            Ok::<_, io::Error>((outcome, start.elapsed()))
        })
    })
    .and_then(|r| r)
    .map_err(|e| LabError::io(format!("udp client in {netns_name}"), e))
}

/// What an external client (curl, openssl) did.
#[derive(Debug, Clone)]
pub struct ToolRun {
    pub outcome: Outcome,
    pub elapsed: Duration,
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// `curl` from inside the namespace: `https://NAME/PATH` (or `http://` when `ca` is None) with
/// NAME resolved to `server` (no DNS), trusting only `ca`. The body is checked against the
/// servers' pattern for `/bytes/N` paths: a mismatch is reported as `Failed`.
pub fn curl(
    netns_name: &str,
    server: SocketAddr,
    name: &str,
    path: &str,
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<ToolRun, LabError> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let ip = match server {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let resolve = format!("{name}:{}:{ip}", server.port());
    let url = format!("{scheme}://{name}:{}{path}", server.port());
    let secs = format!("{:.3}", timeout.as_secs_f64());
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        netns_name,
        "curl",
        "-sSv",
        "--noproxy",
        "*",
    ])
    .args(["--max-time", &secs, "--resolve", &resolve, "-o", "-"]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.arg(&url);
    let mut run = run_tool(cmd)?;
    run.outcome = match run.exit_code {
        Some(0) => {
            let want = path
                .strip_prefix("/bytes/")
                .and_then(|n| n.parse::<usize>().ok());
            match want {
                Some(n) if run.stdout.len() != n || !body_matches(0, &run.stdout) => {
                    Outcome::Failed(format!(
                        "body of {} bytes, not {n} intact",
                        run.stdout.len()
                    ))
                }
                _ => Outcome::Completed,
            }
        }
        Some(28) => Outcome::TimedOut,
        _ => classify_text(&run.stderr),
    };
    Ok(run)
}

/// `openssl s_client` from inside the namespace: connects to `server` with SNI `name`, verifies
/// the certificate against `ca`, sends `GET PATH` and reads the response.
pub fn openssl_s_client(
    netns_name: &str,
    server: SocketAddr,
    name: &str,
    path: &str,
    ca: &Path,
    timeout: Duration,
) -> Result<ToolRun, LabError> {
    let secs = format!("{:.3}", timeout.as_secs_f64());
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns", "exec", netns_name, "timeout", &secs, "openssl", "s_client",
    ])
    .args(["-connect", &server.to_string(), "-servername", name])
    .arg("-CAfile")
    .arg(ca)
    .args(["-verify_return_error", "-quiet", "-no_ign_eof"]);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    let mut run = run_tool_with_input(cmd, request.into_bytes())?;
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    run.outcome = match run.exit_code {
        Some(124) => Outcome::TimedOut,
        _ if text.starts_with("HTTP/1.1 200") => Outcome::Completed,
        _ => classify_text(&run.stderr),
    };
    Ok(run)
}

fn classify_text(stderr: &str) -> Outcome {
    // Only the error lines: curl -v also prints headers and certificate details.
    let s: String = stderr
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("curl: (") || l.contains("failed") || l.contains("error")
        })
        .collect::<Vec<_>>()
        .join("\n")
        .to_ascii_lowercase();
    if s.contains("reset") {
        Outcome::Reset
    } else if s.contains("refused") {
        Outcome::Refused
    } else if s.contains("unreachable") || s.contains("no route") {
        Outcome::Unreachable
    } else if s.contains("timed out") || s.contains("timeout") {
        Outcome::TimedOut
    } else {
        Outcome::Failed(s.trim().chars().take(300).collect())
    }
}

fn run_tool(cmd: Command) -> Result<ToolRun, LabError> {
    run_tool_with_input(cmd, Vec::new())
}

fn run_tool_with_input(mut cmd: Command, input: Vec<u8>) -> Result<ToolRun, LabError> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::io(format!("run {cmd:?}"), e))?;
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input);
        }
        // Keep stdin open a moment so that s_client reads the whole response before EOF.
        std::thread::sleep(Duration::from_millis(200));
        drop(stdin);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io("wait for client", e))?;
    let _ = writer.join();
    Ok(ToolRun {
        outcome: Outcome::Failed("not classified".into()),
        elapsed: start.elapsed(),
        exit_code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
