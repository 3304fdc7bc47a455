//! The naive TUN forwarder: the second baseline of the harness. It sets up the TUN device and
//! the routing exactly as `bulkhead run` does (same queues, same offloads, same diversion rules)
//! and then writes back every frame it reads, untouched: no parsing, no flow table, no policy,
//! no log. What it costs over kernel forwarding is the price of the TUN architecture itself;
//! what the gateway costs over it is Bulkhead's own work.
//!
//! Its workers poll like the gateway's: read until the queue is dry, keep reading for the same
//! busy-polling window, then sleep in `poll`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use bulkhead_gateway::config::{DEFAULT_BUSY_POLL_US, DEFAULT_ROUTE_TABLE, DEFAULT_RULE_PRIORITY};
use bulkhead_gateway::routing::{Routing, RoutingPlan, SystemHost};
use bulkhead_gateway::sys::tun::{Tun, TunOptions, TunQueue, WakeFd, MAX_READ};
use bulkhead_lab::gateway::TUN_NAME;
use bulkhead_lab::netns;
use bulkhead_lab::Lab;

/// Longest sleep of an idle worker (how late it sees the stop flag at worst).
const IDLE_TICK: Duration = Duration::from_millis(100);

/// A running pass-through forwarder. [`Passthrough::stop`] stops it and removes its routing;
/// dropping it without `stop` does the same, ignoring errors.
#[derive(Debug)]
pub struct Passthrough {
    stop_tx: Option<mpsc::Sender<()>>,
    owner: Option<JoinHandle<std::io::Result<anyhow::Result<String>>>>,
}

impl Passthrough {
    /// Creates the TUN device (`queues` queues, offloads on) and the routing in the lab's
    /// gateway namespace, and starts one forwarding thread per queue.
    pub fn start(lab: &Lab, queues: u16, busy_poll_us: Option<u32>) -> anyhow::Result<Passthrough> {
        let interfaces = lab.gateway_interfaces();
        let state_dir: PathBuf = lab.workdir().join("passthrough-state");
        let busy_poll =
            Duration::from_micros(u64::from(busy_poll_us.unwrap_or(DEFAULT_BUSY_POLL_US)));
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        // One thread owns the device and the routing for the whole run, inside the gateway
        // namespace: the `ip` commands it starts, and the TUN it creates, belong there.
        let owner = netns::spawn_in(lab.gateway_netns(), move || {
            let setup = || -> anyhow::Result<(Vec<TunQueue>, Routing<SystemHost>)> {
                let tun = Tun::create(&TunOptions {
                    name: TUN_NAME.to_owned(),
                    queues: queues.max(1),
                    mtu: 1500,
                    offloads: true,
                })
                .context("creating the TUN device")?;
                let plan = RoutingPlan {
                    tun: TUN_NAME.to_owned(),
                    interfaces,
                    table: DEFAULT_ROUTE_TABLE,
                    priority: DEFAULT_RULE_PRIORITY,
                    fast_path: None,
                };
                let routing = Routing::install(SystemHost, &plan, &state_dir)
                    .context("installing the routing")?;
                Ok((tun.into_queues(), routing))
            };
            let (queues, routing) = match setup() {
                Ok(v) => v,
                Err(e) => {
                    let msg = format!("{e:#}");
                    let _ = ready_tx.send(Err(e));
                    return Err(anyhow!(msg));
                }
            };
            let stop = Arc::new(AtomicBool::new(false));
            let wake = Arc::new(WakeFd::new().context("eventfd")?);
            let frames = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = queues
                .into_iter()
                .enumerate()
                .map(|(i, q)| {
                    let (stop, wake, frames) = (stop.clone(), wake.clone(), frames.clone());
                    std::thread::Builder::new()
                        .name(format!("passthrough-{i}"))
                        .spawn(move || forward(&q, &stop, &wake, busy_poll, &frames))
                })
                .collect::<Result<_, _>>()
                .context("starting the forwarding threads")?;
            let _ = ready_tx.send(Ok(()));
            // Until told to stop, or until the harness goes away.
            let _ = stop_rx.recv();
            stop.store(true, Ordering::Release);
            let _ = wake.signal();
            let mut failures = Vec::new();
            for w in workers {
                match w.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(format!("{e}")),
                    Err(_) => failures.push("a forwarding thread panicked".to_owned()),
                }
            }
            routing.remove().context("removing the routing")?;
            let forwarded = frames.load(Ordering::Relaxed);
            if failures.is_empty() {
                Ok(format!("{forwarded} frames forwarded"))
            } else {
                Err(anyhow!(
                    "{forwarded} frames forwarded; {}",
                    failures.join("; ")
                ))
            }
        })
        .context("entering the gateway namespace")?;
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => Ok(Passthrough {
                stop_tx: Some(stop_tx),
                owner: Some(owner),
            }),
            Ok(Err(e)) => {
                let _ = owner.join();
                Err(e)
            }
            Err(_) => Err(anyhow!(
                "the pass-through forwarder did not start within 20 s"
            )),
        }
    }

    /// Stops the threads, removes the routing and says how many frames went through.
    pub fn stop(mut self) -> anyhow::Result<String> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<String> {
        drop(self.stop_tx.take());
        match self.owner.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("the pass-through owner thread panicked"))?
                .context("pass-through forwarder")?,
            None => Ok(String::new()),
        }
    }
}

impl Drop for Passthrough {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// One queue: every frame read is written back as it is (virtio-net header included).
fn forward(
    q: &TunQueue,
    stop: &AtomicBool,
    wake: &WakeFd,
    busy_poll: Duration,
    frames: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_READ];
    let mut last = Instant::now();
    let mut count = 0u64;
    loop {
        match q.read(&mut buf) {
            Ok(n) => {
                // A frame the kernel refuses is dropped, as the gateway would count it.
                let _ = q.write(&buf[..n]);
                count += 1;
                last = Instant::now();
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                frames.fetch_add(count, Ordering::Relaxed);
                return Err(e);
            }
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        if last.elapsed() < busy_poll {
            std::thread::yield_now();
        } else {
            q.wait(wake, None, Some(IDLE_TICK))?;
        }
    }
    frames.fetch_add(count, Ordering::Relaxed);
    Ok(())
}
