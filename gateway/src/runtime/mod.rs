//! The daemon: `bulkhead run` drives the sans-IO [`Pipeline`](crate::pipeline::Pipeline) from a
//! real multi-queue TUN.
//!
//! ```text
//!            control thread (tokio, current-thread)          worker threads (one per queue)
//!  signals ──> SIGHUP: reload policy ──> PolicyStore ──────> version check ─> reevaluate
//!              SIGTERM/INT: stop ─────> stop flag + eventfd ─> leave poll, end flows, exit
//!  /metrics <── Metrics <────────────────────────────────── per-worker counters (published)
//!                                                            records ─> bounded queue ─> log writer
//! ```
//!
//! Start-up order: signals, policy (last-known-good controller snapshot, else file, else
//! deny-all; see `control`), decision log, metrics listener, TUN, routing (`manage_routing`),
//! workers, controller client (`[controller]`); then ready (and, under systemd, `READY=1` once
//! a policy is enforced: see [`crate::sdnotify`]). Shutdown runs it backwards: stop the
//! workers (their flow-end records are logged), remove the routing (restoring the sysctls),
//! let the TUN go, drain and flush the decision log. Any start-up failure is returned as a
//! [`RuntimeError`] and what was already set up is undone.
//!
//! Submodules: [`worker`] (the hot loop), [`policy`] (load and reload), `startup` (the start-up
//! steps), [`shutdown`] (signals, stopping the workers).

mod control;
pub mod policy;
pub mod shutdown;
mod startup;
pub mod worker;

pub use self::startup::routing_plan;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use policy_engine::PolicyStore;

use crate::config::{Config, DEFAULT_MTU};
use crate::fastpath::{FastPath, FastPathStats};
use crate::logsink::LogSink;
use crate::metrics::{Metrics, PolicyOrigin};
use crate::routing::{Routing, SystemHost};

use self::policy::PolicySource;
use self::shutdown::{Event, Signals};
use self::startup::WorkerThreads;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("policy {}:\n{error}", crate::input::echo_path(.path))]
    Policy {
        path: std::path::PathBuf,
        error: policy::LoadFailure,
    },
    #[error("decision log {}: {error}", crate::input::echo_path(.path))]
    Log {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("controller TLS file {}: {error}", crate::input::echo_path(.path))]
    Controller {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("metrics listener on {addr}: {error}")]
    Metrics {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("TUN device {name}: {error}")]
    Tun { name: String, error: std::io::Error },
    #[error(transparent)]
    Routing(#[from] crate::routing::RoutingError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("worker {0} stopped unexpectedly; see the log above")]
    WorkerFailed(usize),
}

/// The TUN MTU: configured, else the largest MTU of the listed interfaces, else 1500.
pub fn tun_mtu(config: &Config) -> u32 {
    if let Some(m) = config.gateway.mtu {
        return m;
    }
    config
        .gateway
        .interfaces
        .iter()
        .filter_map(|i| {
            std::fs::read_to_string(Path::new("/sys/class/net").join(i).join("mtu")).ok()
        })
        .filter_map(|s| s.trim().parse::<u32>().ok())
        .max()
        .map(|m| m.clamp(1280, 65535))
        .unwrap_or(DEFAULT_MTU)
}

/// Runs the gateway until SIGTERM or SIGINT (Ok) or a failure (Err).
pub fn run(config: Config) -> Result<(), RuntimeError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(config))
}

async fn run_async(config: Config) -> Result<(), RuntimeError> {
    let queues = config.queues();
    let (mut signals, notices) = Signals::new(usize::from(queues))?;
    let initial = startup::load_policy(&config).await?;
    let (mut source, store) = (initial.source, initial.store);
    let client = match &config.controller {
        Some(section) => Some(control::client_config(&config, section, initial.enforced)?),
        None => None,
    };
    let tee = control::RecordTee::default();
    let hook = client.as_ref().map(|_| tee.hook());
    let (log_sink, log_tx) = startup::start_decision_log(&config.log, hook)?;
    let metrics = Arc::new(Metrics::new(usize::from(queues), log_sink.counters()));
    metrics.set_policy_origin(initial.origin);
    // Deny-all is not a loaded policy: /readyz stays false until one is.
    if initial.origin != PolicyOrigin::DenyAll {
        metrics.policy_applied(initial.version, false);
    }
    let listener = startup::bind_metrics(&config).await?;
    let mtu = tun_mtu(&config);
    let tun = startup::create_tun(&config, mtu)?;
    let offloads = tun.offloads();
    let fast_stats = Arc::new(FastPathStats::default());
    metrics.set_fastpath_stats(fast_stats.clone());
    let fast_mark = startup::probe_fast_path(&config, &fast_stats);
    let routing = startup::install_routing(&config, fast_mark)?;
    let (fast_path, links) = startup::start_fast_path(fast_mark, usize::from(queues), &fast_stats);
    let shared = startup::Shared {
        store: &store,
        log: &log_tx,
        metrics: &metrics,
        notices: &notices,
    };
    let workers = startup::spawn_workers(&config, tun, shared, links)?;
    // The workers hold the only senders and exit notices now: the log drains and the exit
    // channel closes when they are gone.
    drop(log_tx);
    drop(notices);
    metrics.set_tun_up(true);
    let client = client.map(|c| {
        let wiring = control::Wiring {
            store: &store,
            metrics: &metrics,
            managed: source.managed(),
            tee: &tee,
        };
        control::start(c, wiring)
    });

    let endpoint = MetricsEndpoint::start(listener, &metrics);
    // READY=1 once a policy is enforced, watchdog pings while the workers make progress.
    let notify = crate::sdnotify::Service::start(&metrics);
    tracing::info!(
        id = %config.gateway.id,
        tun = %config.gateway.tun,
        queues,
        mtu,
        csum_offload = offloads.csum,
        tso = offloads.tso,
        uso = offloads.uso,
        fast_path = fast_path.is_some(),
        metrics = %endpoint.addr,
        controller = client.is_some(),
        "gateway running"
    );

    let outcome = control_loop(&mut signals, &mut source, &store, &metrics).await;
    notify.stopping().await;
    if let Some(c) = client {
        c.shutdown();
    }
    shut_down(&metrics, workers, fast_path, routing, endpoint, log_sink).await;
    outcome
}

/// Serves signals until the gateway is to stop: SIGHUP reloads the policy, SIGTERM / SIGINT
/// stop it (Ok), a worker that exits on its own stops it with an error.
///
/// A reload runs on a load thread (see [`policy`]); this loop keeps serving signals meanwhile.
/// A SIGHUP that arrives while one is running is remembered and starts another when it ends,
/// since the file may have changed after the running load read it.
async fn control_loop(
    signals: &mut Signals,
    source: &mut PolicySource,
    store: &PolicyStore,
    metrics: &Metrics,
) -> Result<(), RuntimeError> {
    let mut pending: Option<policy::PendingLoad> = None;
    let mut again = false;
    loop {
        tokio::select! {
            event = signals.next() => match event {
                Event::Reload if pending.is_some() => {
                    tracing::info!("SIGHUP: a reload is running; another follows it");
                    again = true;
                }
                Event::Reload if source.is_managed() => {
                    tracing::warn!("SIGHUP: the controller's policy is in force; not reloading \
                                    the local file");
                }
                Event::Reload => {
                    tracing::info!("SIGHUP: reloading the policy");
                    pending = start_reload(source, store, metrics);
                }
                Event::Stop(sig) => {
                    tracing::info!("{sig}: stopping");
                    return Ok(());
                }
                Event::WorkerExited(i) => return Err(RuntimeError::WorkerFailed(i)),
            },
            result = wait_load(&mut pending) => {
                pending = None;
                source.finish_reload(result, store, metrics);
                if std::mem::take(&mut again) {
                    pending = start_reload(source, store, metrics);
                }
            }
        }
    }
}

fn start_reload(
    source: &mut PolicySource,
    store: &PolicyStore,
    metrics: &Metrics,
) -> Option<policy::PendingLoad> {
    match source.start_load() {
        Ok(None) => {
            tracing::warn!("SIGHUP: no policy.file is configured; nothing to reload");
            None
        }
        Ok(Some(p)) => Some(p),
        Err(e) => {
            source.report_failure(&e, store, metrics);
            None
        }
    }
}

/// The running load's result; never resolves when none is running.
async fn wait_load(pending: &mut Option<policy::PendingLoad>) -> policy::LoadResult {
    match pending {
        Some(p) => p.wait().await,
        None => std::future::pending().await,
    }
}

/// The `/metrics` server task, if metrics are enabled.
struct MetricsEndpoint {
    /// The bound address, or `disabled`, for the start-up log line.
    addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsEndpoint {
    fn start(listener: Option<tokio::net::TcpListener>, metrics: &Arc<Metrics>) -> MetricsEndpoint {
        let addr = match &listener {
            Some(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            None => "disabled".to_owned(),
        };
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = listener.map(|l| {
            tokio::spawn(crate::metrics::serve(l, metrics.clone(), async {
                let _ = stop_rx.await;
            }))
        });
        MetricsEndpoint { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}

/// Start-up in reverse: stop the workers (their flow-end records are logged), stop the fast
/// path (after it released the workers' flows), remove the routing (restoring the sysctls),
/// stop the endpoint, drain and flush the decision log.
async fn shut_down(
    metrics: &Metrics,
    workers: WorkerThreads,
    fast_path: Option<FastPath>,
    routing: Option<Routing<SystemHost>>,
    endpoint: MetricsEndpoint,
    log_sink: LogSink,
) {
    metrics.set_tun_up(false);
    let results = workers.stop_and_join();
    for (i, r) in results.iter().enumerate() {
        if r.is_none() {
            tracing::error!(worker = i, "worker panicked");
        }
    }
    if let Some(fp) = fast_path {
        fp.stop();
    }
    if let Some(r) = routing {
        if let Err(e) = r.remove() {
            tracing::warn!(error = %e, "removing routing state");
        } else {
            tracing::info!("routing removed");
        }
    }
    endpoint.stop().await;
    log_sink.finish();
    tracing::info!("stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_defaults() {
        let mut c = Config::parse("[gateway]\nid = \"g\"\n", Path::new("g.toml")).unwrap();
        assert_eq!(tun_mtu(&c), DEFAULT_MTU);
        c.gateway.mtu = Some(9001);
        assert_eq!(tun_mtu(&c), 9001);
        c.gateway.mtu = None;
        c.gateway.interfaces = vec!["lo".into()];
        assert_eq!(tun_mtu(&c), 65535);
    }
}
