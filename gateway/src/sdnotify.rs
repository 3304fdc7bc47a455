//! systemd's service notification protocol (`sd_notify(3)`) for a `Type=notify` unit with
//! `WatchdogSec=`.
//!
//! The protocol is one datagram per notification, `KEY=VALUE` lines, sent to the `AF_UNIX`
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). It is small
//! enough to speak directly; without `$NOTIFY_SOCKET` (not under systemd) everything here is a
//! no-op.
//!
//! What the gateway says, and when ([`Service::start`] runs it as a task of the control thread):
//!
//! - `READY=1` once a policy is enforced: the TUN is up, the workers run, and a policy (file,
//!   last-known-good or controller snapshot) is loaded, the condition `/readyz` answers 200 on.
//!   A gateway that starts on deny-all (a controller and no snapshot yet) is not ready until the
//!   first snapshot is applied, so `systemctl start` and units ordered after it wait for
//!   enforcement, not for the process.
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC`, only while every packet worker makes progress:
//!   each worker bumps a heartbeat each time round its loop (at least every 200 ms when idle, see
//!   [`crate::runtime::worker::IDLE_TICK`]). A worker whose heartbeat stands still for
//!   [`stall_limit`] stops the pings, so systemd restarts a gateway whose data path hangs even
//!   though its process and its HTTP endpoints are alive. Since the pings come from the control
//!   thread, a control thread that hangs stops them too.
//! - `STATUS=` whenever the enforced policy changes, and when a worker stalls.
//! - `STOPPING=1` when shutdown begins.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// How often the task looks at readiness, the heartbeats and the policy.
pub const TICK: Duration = Duration::from_millis(50);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; `None` when it is unset or empty (not under a
    /// service manager that asked for notifications).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::new(&v.to_string_lossy()).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for `target`: a socket path, or `@name` for an abstract socket.
    pub fn new(target: &str) -> io::Result<Notifier> {
        let addr = match target.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None if target.starts_with('/') => SocketAddr::from_pathname(target)?,
            None => {
                // systemd also knows vsock addresses (`vsock:CID:PORT`); a unit of this gateway
                // never gets one, and guessing would lose every notification silently.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET {}: neither an absolute path nor @abstract",
                        crate::input::echo(target)
                    ),
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier { socket, addr })
    }

    /// Sends one notification (newline-separated `KEY=VALUE` assignments).
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

/// The watchdog interval systemd asks for: `$WATCHDOG_USEC`, unless `$WATCHDOG_PID` names
/// another process (the variables were inherited, not meant for this one).
pub fn watchdog_from_env() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_from_env`] without the environment.
pub fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// How long a worker's heartbeat may stand still before the pings stop: half the watchdog
/// interval (so systemd acts at most 1.5 intervals after the stall), and never less than one
/// second, five idle ticks of a healthy worker plus room for a re-evaluation of a full flow table
/// after a policy swap.
pub fn stall_limit(watchdog: Duration) -> Duration {
    (watchdog / 2).max(Duration::from_secs(1))
}

/// Tells, from successive readings of the workers' heartbeat counters, whether one of them has
/// stopped making progress.
#[derive(Debug)]
pub struct StallDetector {
    limit: Duration,
    /// Per worker: the last heartbeat seen and when it last moved.
    seen: Vec<(u64, Instant)>,
}

impl StallDetector {
    pub fn new(limit: Duration) -> StallDetector {
        StallDetector {
            limit,
            seen: Vec::new(),
        }
    }

    /// Takes a reading at `now`; returns the first worker whose heartbeat has not moved for the
    /// limit, with how long it has stood still.
    pub fn observe(
        &mut self,
        now: Instant,
        beats: impl IntoIterator<Item = u64>,
    ) -> Option<(usize, Duration)> {
        let mut stalled = None;
        for (i, beat) in beats.into_iter().enumerate() {
            match self.seen.get_mut(i) {
                None => self.seen.push((beat, now)),
                Some(entry) if entry.0 != beat => *entry = (beat, now),
                Some(entry) => {
                    let still = now.saturating_duration_since(entry.1);
                    if still >= self.limit && stalled.is_none() {
                        stalled = Some((i, still));
                    }
                }
            }
        }
        stalled
    }
}

/// The notification task of a running gateway; a no-op when not under systemd.
#[derive(Debug)]
pub struct Service {
    notifier: Option<Arc<Notifier>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Starts the task (on the current tokio runtime) when `$NOTIFY_SOCKET` is set. An unusable
    /// `$NOTIFY_SOCKET` is logged and ignored: the gateway enforces policy either way, and
    /// systemd reports the missing notification itself.
    pub fn start(metrics: &Arc<Metrics>) -> Service {
        let notifier = match Notifier::from_env() {
            Ok(Some(n)) => Arc::new(n),
            Ok(None) => {
                return Service {
                    notifier: None,
                    task: None,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET is unusable; not notifying systemd");
                return Service {
                    notifier: None,
                    task: None,
                };
            }
        };
        let watchdog = watchdog_from_env();
        tracing::info!(
            watchdog_ms = watchdog.map(|w| w.as_millis() as u64),
            "notifying systemd"
        );
        let task = tokio::spawn(supervise(notifier.clone(), watchdog, metrics.clone()));
        Service {
            notifier: Some(notifier),
            task: Some(task),
        }
    }

    /// Shutdown begins: no more pings, `STOPPING=1`.
    pub async fn stopping(self) {
        if let Some(t) = self.task {
            t.abort();
            let _ = t.await;
        }
        if let Some(n) = self.notifier {
            send(&n, "STOPPING=1\nSTATUS=stopping");
        }
    }
}

fn send(notifier: &Notifier, message: &str) {
    if let Err(e) = notifier.send(message) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// What `systemctl status` shows for the enforced policy.
fn policy_status(metrics: &Metrics) -> String {
    if metrics.ready() {
        format!(
            "enforcing policy version {} ({}) with {} workers",
            metrics.policy_version(),
            metrics.policy_origin_label(),
            metrics.worker_heartbeats().count()
        )
    } else {
        "denying everything: no policy loaded yet (waiting for the controller's first snapshot)"
            .to_owned()
    }
}

async fn supervise(notifier: Arc<Notifier>, watchdog: Option<Duration>, metrics: Arc<Metrics>) {
    let mut ready = false;
    let mut status = String::new();
    let mut stalls = watchdog.map(|w| StallDetector::new(stall_limit(w)));
    let mut last_ping: Option<Instant> = None;
    let mut reported_stall = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let stalled = stalls
            .as_mut()
            .and_then(|d| d.observe(now, metrics.worker_heartbeats()));
        if let Some((worker, still)) = stalled {
            if !reported_stall {
                tracing::error!(
                    worker,
                    still_ms = still.as_millis() as u64,
                    "worker made no progress; withholding the systemd watchdog"
                );
                send(
                    &notifier,
                    &format!(
                        "STATUS=worker {worker} made no progress for {} ms; watchdog withheld",
                        still.as_millis()
                    ),
                );
                reported_stall = true;
            }
            continue;
        }
        if reported_stall {
            tracing::info!("every worker makes progress again");
            reported_stall = false;
            status.clear();
        }
        let text = policy_status(&metrics);
        if !ready && metrics.ready() {
            ready = true;
            status = text;
            send(&notifier, &format!("READY=1\nSTATUS={status}"));
            tracing::info!("notified systemd: ready");
        } else if text != status {
            status = text;
            send(&notifier, &format!("STATUS={status}"));
        }
        if let (true, Some(w)) = (ready, watchdog) {
            if last_ping.is_none_or(|t| now.duration_since(t) >= w / 2) {
                send(&notifier, "WATCHDOG=1");
                last_ping = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_honours_the_pid() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
    }

    #[test]
    fn the_stall_limit_is_half_the_interval_and_at_least_a_second() {
        assert_eq!(
            stall_limit(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(
            stall_limit(Duration::from_millis(500)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_worker_whose_heartbeat_stands_still_is_reported() {
        let t0 = Instant::now();
        let s = Duration::from_millis(400);
        let mut d = StallDetector::new(Duration::from_secs(1));
        assert_eq!(d.observe(t0, [1, 1]), None);
        // Worker 1 stands still, worker 0 moves.
        assert_eq!(d.observe(t0 + s, [2, 1]), None);
        assert_eq!(d.observe(t0 + 2 * s, [3, 1]), None);
        assert_eq!(
            d.observe(t0 + 3 * s, [4, 1]),
            Some((1, Duration::from_millis(1200)))
        );
        // It moves again: no longer stalled, and its clock starts over.
        assert_eq!(d.observe(t0 + 4 * s, [5, 2]), None);
        assert_eq!(d.observe(t0 + 5 * s, [6, 2]), None);
    }

    #[test]
    fn the_first_stalled_worker_is_named() {
        let t0 = Instant::now();
        let mut d = StallDetector::new(Duration::from_secs(1));
        d.observe(t0, [1, 1, 1]);
        let r = d.observe(t0 + Duration::from_secs(2), [2, 1, 1]);
        assert_eq!(r, Some((1, Duration::from_secs(2))));
    }

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .send("READY=1\nSTATUS=x")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");

        let name = format!("bulkhead-sdnotify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .send("WATCHDOG=1")
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn a_relative_or_vsock_address_is_refused() {
        assert!(Notifier::new("notify.sock").is_err());
        assert!(Notifier::new("vsock:2:1234").is_err());
    }
}
