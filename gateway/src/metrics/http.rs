//! The HTTP side: a small HTTP/1.1 responder on tokio for `/metrics`, `/healthz` and `/readyz`.
//!
//! `GET` or `HEAD` only, the request head limited to 8 KiB and 5 s, at most 64 connections at
//! once, `Connection: close` after every answer: a scraper needs no more, and anything more is
//! attack surface on the gateway's own address.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Metrics;

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Too many at once: close this one rather than queue without bound.
            drop(stream);
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &m)).await;
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request header too large\n",
                false,
            )
            .await;
        }
    }
    let (status, ctype, body, head) = route(&buf, metrics);
    respond(&mut stream, status, ctype, &body, head).await
}

/// Maps a request head to (status, content type, body, is HEAD).
fn route(head: &[u8], metrics: &Metrics) -> (u16, &'static str, String, bool) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let is_head = method == "HEAD";
    if method != "GET" && !is_head {
        return (405, TEXT, "only GET and HEAD\n".into(), false);
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
            is_head,
        ),
        "/healthz" => (200, TEXT, "ok\n".into(), is_head),
        "/readyz" if metrics.ready() => (200, TEXT, "ready\n".into(), is_head),
        "/readyz" => (503, TEXT, "not ready\n".into(), is_head),
        _ => (404, TEXT, "not found\n".into(), is_head),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        msg.push_str(body);
    }
    stream.write_all(msg.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logsink::LogCounters;

    fn metrics(workers: usize) -> Metrics {
        Metrics::new(workers, Arc::new(LogCounters::default()))
    }

    #[test]
    fn routes_requests() {
        let m = metrics(1);
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n", &m).0, 200);
        assert_eq!(route(b"GET /healthz HTTP/1.1\r\n\r\n", &m).0, 200);
        assert_eq!(route(b"GET /readyz HTTP/1.1\r\n\r\n", &m).0, 503);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n", &m).0, 405);
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n", &m).0, 404);
        assert_eq!(route(b"\xff\xfe garbage", &m).0, 405);
        let (s, _, body, head) = route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n", &m);
        assert!(s == 200 && head && body.contains("bulkhead_build_info"));
    }

    #[tokio::test]
    async fn serves_over_tcp_and_bounds_the_request() {
        let m = Arc::new(metrics(1));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, m.clone(), async {
            let _ = stop_rx.await;
        }));
        let get = |req: Vec<u8>| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&req).await.unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).await.unwrap();
            resp
        };
        let r = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("bulkhead_workers 1"), "{r}");
        let r = get(b"GET /readyz HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 8_300 - big.len()));
        let r = get(big).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        stop_tx.send(()).unwrap();
        server.await.unwrap();
    }
}
