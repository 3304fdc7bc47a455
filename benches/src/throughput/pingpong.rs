//! Round-trip latency: small TCP messages echoed by a server in the server namespace, timed by a
//! client in the workload namespace. One connection, so what is measured is the per-packet cost
//! of the path (a decided, established flow), not connection set-up.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bulkhead_lab::netns;

use super::Interrupt;

/// Size of each message. The first byte is 0: neither a TLS record nor an HTTP method, so the
/// gateway decides the flow on its first data segment.
pub const MESSAGE: usize = 64;

/// Round-trip times, in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Rtts {
    pub median_us: f64,
    pub p99_us: f64,
    pub samples: usize,
}

/// Runs `count` ping-pongs (at most for `limit`) from namespace `client_ns` to an echo server it
/// starts in `server_ns` on `server:port`. The first `warmup` round trips are not counted.
pub fn measure(
    client_ns: &str,
    server_ns: &str,
    server: IpAddr,
    port: u16,
    count: usize,
    limit: Duration,
    interrupt: &Interrupt,
) -> anyhow::Result<Rtts> {
    let warmup = 50;
    let listen = SocketAddr::new(server, port);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_thread = netns::spawn_in(server_ns, move || -> anyhow::Result<()> {
        let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let _ = ready_tx.send(());
        listener.set_nonblocking(true)?;
        let start = Instant::now();
        let (mut conn, _) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > Duration::from_secs(10) {
                        bail!("no ping-pong client connected within 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; MESSAGE];
        loop {
            match conn.read_exact(&mut buf) {
                Ok(()) => conn.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    })
    .context("starting the echo server in the server namespace")?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow::anyhow!("the echo server did not start"))?;

    let interrupt_c = interrupt.clone();
    let client = netns::run_in(client_ns, move || -> anyhow::Result<Vec<f64>> {
        let mut conn = TcpStream::connect_timeout(&listen, Duration::from_secs(3))
            .with_context(|| format!("connecting to {listen}"))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut msg = [0u8; MESSAGE];
        for (i, b) in msg.iter_mut().enumerate().skip(1) {
            *b = i as u8;
        }
        let mut back = [0u8; MESSAGE];
        let mut rtts = Vec::with_capacity(count);
        let start = Instant::now();
        for i in 0..count + warmup {
            if interrupt_c.is_set() {
                bail!("interrupted");
            }
            if start.elapsed() > limit {
                break;
            }
            let t0 = Instant::now();
            conn.write_all(&msg).context("ping-pong write")?;
            conn.read_exact(&mut back).context("ping-pong read")?;
            let rtt = t0.elapsed();
            if back != msg {
                bail!("the echo differs from what was sent");
            }
            if i >= warmup {
                rtts.push(rtt.as_secs_f64() * 1e6);
            }
        }
        Ok(rtts)
    })
    .context("running the ping-pong client in the workload namespace")?;
    let server_result = server_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the echo server panicked"))?;
    let rtts = client?;
    server_result.context("entering the server namespace")??;
    summarize(rtts)
}

/// Median and 99th percentile (nearest rank) of the samples.
pub fn summarize(mut rtts: Vec<f64>) -> anyhow::Result<Rtts> {
    if rtts.len() < 10 {
        bail!("only {} round trips completed", rtts.len());
    }
    rtts.sort_by(f64::total_cmp);
    let n = rtts.len();
    let median = if n % 2 == 1 {
        rtts[n / 2]
    } else {
        (rtts[n / 2 - 1] + rtts[n / 2]) / 2.0
    };
    let rank = ((n as f64) * 0.99).ceil() as usize;
    let p99 = rtts[rank.clamp(1, n) - 1];
    Ok(Rtts {
        median_us: median,
        p99_us: p99,
        samples: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99() {
        let r = summarize((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!(r.median_us, 50.5);
        assert_eq!(r.p99_us, 99.0);
        assert_eq!(r.samples, 100);
        let r = summarize(vec![
            5.0, 1.0, 3.0, 2.0, 4.0, 9.0, 8.0, 7.0, 6.0, 10.0, 11.0,
        ])
        .unwrap();
        assert_eq!(r.median_us, 6.0);
        assert_eq!(r.p99_us, 11.0);
        assert!(summarize(vec![1.0; 3]).is_err());
    }
}
