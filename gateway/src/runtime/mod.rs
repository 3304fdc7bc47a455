//! The daemon: `bulkhead run` drives the sans-IO [`Pipeline`] from a real multi-queue TUN.
//!
//! ```text
//!            control thread (tokio, current-thread)          worker threads (one per queue)
//!  signals ──> SIGHUP: reload policy ──> PolicyStore ──────> version check ─> reevaluate
//!              SIGTERM/INT: stop ─────> stop flag + eventfd ─> leave poll, end flows, exit
//!  /metrics <── Metrics <────────────────────────────────── per-worker counters (published)
//!                                                            records ─> bounded queue ─> log writer
//! ```
//!
//! Start-up order: signals, policy (file, or deny-all), decision log, metrics listener, TUN,
//! routing (`manage_routing`), workers; then ready. Shutdown runs it backwards: stop the
//! workers (their flow-end records are logged), remove the routing (restoring the sysctls),
//! let the TUN go, drain and flush the decision log. Any start-up failure is returned as a
//! [`RuntimeError`] and what was already set up is undone.
//!
//! Submodules: [`worker`] (the hot loop), [`policy`] (load and reload), [`shutdown`] (signals,
//! stopping the workers).

pub mod policy;
pub mod shutdown;
pub mod worker;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::{Config, DEFAULT_MTU};
use crate::logsink::{Destination, LogSink};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::record::DecisionRecord;
use crate::routing::{Routing, RoutingPlan, SystemHost};
use crate::sys::tun::{Tun, TunOptions, WakeFd};

use self::policy::PolicySource;
use self::shutdown::{Event, Signals, Workers};
use self::worker::Worker;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("policy {}:\n{error}", .path.display())]
    Policy {
        path: std::path::PathBuf,
        error: policy_engine::LoadError,
    },
    #[error("decision log {}: {error}", .path.display())]
    Log {
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

    // Policy.
    let mut source = PolicySource::new(config.policy.file.clone());
    let (initial, loaded) = source.initial().map_err(|error| RuntimeError::Policy {
        path: config.policy.file.clone().unwrap_or_default(),
        error,
    })?;
    match source.file() {
        Some(f) => tracing::info!(
            file = %f.display(),
            version = loaded.version,
            rules = loaded.rules,
            warnings = loaded.warnings,
            "policy loaded"
        ),
        None => tracing::warn!("no policy.file configured: denying everything"),
    }
    if config.controller.is_some() {
        tracing::warn!("[controller] is configured but this build enforces the local policy only");
    }
    let store = policy::new_store(initial);

    // Decision log.
    let dest = if config.log.to_stdout() {
        Destination::Stdout
    } else {
        Destination::File {
            path: config.log.decisions.clone(),
            max_file_bytes: config.log.max_file_bytes,
            keep_files: config.log.keep_files,
        }
    };
    let (log_sink, log_tx) = LogSink::start::<DecisionRecord>(dest, config.log.queue_capacity)
        .map_err(|error| RuntimeError::Log {
            path: config.log.decisions.clone(),
            error,
        })?;

    let metrics = Arc::new(Metrics::new(usize::from(queues), log_sink.counters()));
    if source.file().is_some() {
        metrics.policy_applied(loaded.version, false);
    }
    let listener = if config.metrics.enabled {
        let addr = config.metrics.listen;
        Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| RuntimeError::Metrics { addr, error })?,
        )
    } else {
        None
    };

    // TUN and routing.
    let mtu = tun_mtu(&config);
    let tun = Tun::create(&TunOptions {
        name: config.gateway.tun.clone(),
        queues,
        mtu,
        offloads: true,
    })
    .map_err(|error| RuntimeError::Tun {
        name: config.gateway.tun.clone(),
        error,
    })?;
    let offloads = tun.offloads();
    let routing = if config.gateway.manage_routing {
        let plan = RoutingPlan {
            tun: config.gateway.tun.clone(),
            interfaces: config.gateway.interfaces.clone(),
            table: config.gateway.route_table,
            priority: config.gateway.rule_priority,
        };
        let r = Routing::install(SystemHost, &plan, &config.policy.state_dir)?;
        tracing::info!(
            table = plan.table,
            priority = plan.priority,
            interfaces = ?plan.interfaces,
            "routing installed"
        );
        Some(r)
    } else {
        None
    };

    // Workers.
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(WakeFd::new()?);
    let mut workers = Workers {
        stop: stop.clone(),
        wake: wake.clone(),
        handles: Vec::new(),
    };
    for (index, queue) in tun.into_queues().into_iter().enumerate() {
        let pipeline = Pipeline::new(
            PipelineConfig {
                gateway_id: config.gateway.id.clone(),
                flow_capacity: config.limits.flow_capacity,
                max_held_bytes_per_flow: config.limits.max_held_bytes_per_flow,
                max_held_bytes_total: config.limits.max_held_bytes_total,
                inspect_timeout: config.limits.inspect_timeout(),
                idle: config.timeouts.apply(PipelineConfig::default().idle),
                ..PipelineConfig::default()
            },
            store.clone(),
        );
        let worker = Worker {
            index,
            queue,
            pipeline,
            store: store.clone(),
            log: log_tx.clone(),
            counters: metrics.worker(index),
            wake: wake.clone(),
            stop: stop.clone(),
            busy_poll: std::time::Duration::from_micros(u64::from(config.gateway.busy_poll_us)),
        };
        let notice = notices.notice(index);
        let spawned = std::thread::Builder::new()
            .name(format!("bulkhead-w{index}"))
            .spawn(move || {
                let _notice = notice;
                let r = worker.run();
                if let Err(e) = &r {
                    tracing::error!("{e}");
                }
                r
            });
        match spawned {
            Ok(h) => workers.handles.push(h),
            Err(e) => {
                workers.stop_and_join();
                return Err(RuntimeError::Io(e));
            }
        }
    }
    drop(log_tx);
    drop(notices);
    metrics.set_tun_up(true);

    let metrics_addr = match &listener {
        Some(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        None => "disabled".to_owned(),
    };
    let (stop_http, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let server = listener.map(|l| {
        tokio::spawn(crate::metrics::serve(l, metrics.clone(), async {
            let _ = stop_http_rx.await;
        }))
    });
    tracing::info!(
        id = %config.gateway.id,
        tun = %config.gateway.tun,
        queues,
        mtu,
        csum_offload = offloads.csum,
        tso = offloads.tso,
        uso = offloads.uso,
        metrics = %metrics_addr,
        "gateway running"
    );

    let outcome = loop {
        match signals.next().await {
            Event::Reload => {
                tracing::info!("SIGHUP: reloading the policy");
                source.reload(&store, &metrics);
            }
            Event::Stop(sig) => {
                tracing::info!("{sig}: stopping");
                break Ok(());
            }
            Event::WorkerExited(i) => break Err(RuntimeError::WorkerFailed(i)),
        }
    };

    // Shutdown, in reverse.
    metrics.set_tun_up(false);
    let results = workers.stop_and_join();
    for (i, r) in results.iter().enumerate() {
        if r.is_none() {
            tracing::error!(worker = i, "worker panicked");
        }
    }
    if let Some(r) = routing {
        if let Err(e) = r.remove() {
            tracing::warn!(error = %e, "removing routing state");
        } else {
            tracing::info!("routing removed");
        }
    }
    let _ = stop_http.send(());
    if let Some(s) = server {
        let _ = s.await;
    }
    log_sink.finish();
    tracing::info!("stopped");
    outcome
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
