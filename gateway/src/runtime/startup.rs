//! The start-up steps of [`run`](super::run), in the order they run: policy, decision log,
//! metrics listener, TUN, routing, workers (then the controller client, if configured). Each step either returns what it set up or an error;
//! what earlier steps set up is undone by their values being dropped (the routing state removes
//! itself), so a failed start leaves the host as it found it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use policy_engine::PolicyStore;

use super::control;
use super::policy::{self, PolicySource};
use super::shutdown::{ExitNotices, Workers};
use super::worker::{Worker, WorkerError};
use super::RuntimeError;
use crate::config::{Config, LogSection};
use crate::fastpath::{self, FastPath, FastPathStats, WorkerLink};
use crate::logsink::{Destination, LogSender, LogSink, Tee};
use crate::metrics::{Metrics, PolicyOrigin};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::record::DecisionRecord;
use crate::routing::{FastPathPlan, Routing, RoutingPlan, SystemHost};
use crate::sys::tun::{Tun, TunOptions, WakeFd};

/// The worker threads' join handles carry their result.
pub(super) type WorkerThreads = Workers<Result<(), WorkerError>>;

/// The policy the gateway starts with, and where it came from.
pub(super) struct InitialPolicy {
    pub source: PolicySource,
    pub store: Arc<PolicyStore>,
    pub version: u64,
    pub origin: PolicyOrigin,
    /// The controller version and digest in force (from the last-known-good), for the Hello.
    pub enforced: Option<(u64, String)>,
}

/// Loads the initial policy into a new store: the last-known-good snapshot when `[controller]`
/// is configured and one is persisted, else the file's, else deny-all (see [`super::control`]).
/// Every load runs on a load thread, bounded by `policy.load_timeout_ms` like every reload.
pub(super) async fn load_policy(config: &Config) -> Result<InitialPolicy, RuntimeError> {
    let source =
        PolicySource::new(config.policy.file.clone()).with_timeout(config.policy.load_timeout());
    if config.controller.is_some() {
        let found =
            control::last_known_good(&config.policy.state_dir, config.policy.load_timeout());
        if let Some(lkg) = found.await {
            tracing::info!(
                state_dir = %config.policy.state_dir.display(),
                version = lkg.version,
                rules = lkg.rules,
                source = PolicyOrigin::LastKnownGood.as_str(),
                "policy loaded"
            );
            source
                .managed()
                .store(true, std::sync::atomic::Ordering::Release);
            return Ok(InitialPolicy {
                source,
                store: policy::new_store(lkg.compiled),
                version: lkg.version,
                origin: PolicyOrigin::LastKnownGood,
                enforced: Some((lkg.version, lkg.digest)),
            });
        }
    }
    load_local(config, source).await
}

/// The local file's policy, or deny-all when none is configured.
async fn load_local(
    config: &Config,
    mut source: PolicySource,
) -> Result<InitialPolicy, RuntimeError> {
    let (initial, loaded) =
        source
            .initial_bounded()
            .await
            .map_err(|error| RuntimeError::Policy {
                path: config.policy.file.clone().unwrap_or_default(),
                error,
            })?;
    let origin = match source.file() {
        Some(f) => {
            tracing::info!(
                file = %f.display(),
                version = loaded.version,
                rules = loaded.rules,
                warnings = loaded.warnings,
                source = PolicyOrigin::File.as_str(),
                "policy loaded"
            );
            PolicyOrigin::File
        }
        None => {
            tracing::warn!(
                source = PolicyOrigin::DenyAll.as_str(),
                "no policy.file configured and no controller snapshot: denying everything"
            );
            PolicyOrigin::DenyAll
        }
    };
    Ok(InitialPolicy {
        source,
        store: policy::new_store(initial),
        version: loaded.version,
        origin,
        enforced: None,
    })
}

/// Opens the decision log and starts its writer thread. An existing path that is not a regular
/// file is refused: opening a FIFO for writing blocks until a reader comes, and a rotated
/// device or FIFO makes no sense (`-` is the way to write to standard output).
pub(super) fn start_decision_log(
    log: &LogSection,
    tee: Option<Tee>,
) -> Result<(LogSink, LogSender<DecisionRecord>), RuntimeError> {
    if !log.to_stdout() {
        if let Ok(meta) = std::fs::metadata(&log.decisions) {
            if !meta.is_file() {
                return Err(RuntimeError::Log {
                    path: log.decisions.clone(),
                    error: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a regular file; refusing to write to it (use \"-\" for stdout)",
                    ),
                });
            }
        }
    }
    let dest = if log.to_stdout() {
        Destination::Stdout
    } else {
        Destination::File {
            path: log.decisions.clone(),
            max_file_bytes: log.max_file_bytes,
            keep_files: log.keep_files,
        }
    };
    LogSink::start_with_tee::<DecisionRecord>(dest, log.queue_capacity, tee).map_err(|error| {
        RuntimeError::Log {
            path: log.decisions.clone(),
            error,
        }
    })
}

/// Binds the metrics listener when metrics are enabled.
pub(super) async fn bind_metrics(
    config: &Config,
) -> Result<Option<tokio::net::TcpListener>, RuntimeError> {
    if !config.metrics.enabled {
        return Ok(None);
    }
    let addr = config.metrics.listen;
    tokio::net::TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|error| RuntimeError::Metrics { addr, error })
}

/// Creates the multi-queue TUN device; an existing one is refused unless
/// `gateway.adopt_existing_tun` says to take it over.
pub(super) fn create_tun(config: &Config, mtu: u32) -> Result<Tun, RuntimeError> {
    let opts = TunOptions {
        name: config.gateway.tun.clone(),
        queues: config.queues(),
        mtu,
        offloads: true,
    };
    let tun = if config.gateway.adopt_existing_tun {
        Tun::adopt(&opts)
    } else {
        Tun::create(&opts)
    };
    tun.map_err(|error| RuntimeError::Tun {
        name: config.gateway.tun.clone(),
        error,
    })
}

/// The routing `manage_routing` installs; with the fast path's table and rules when
/// `fast_path` (its mark) is given.
pub fn routing_plan(config: &Config, fast_path: Option<u32>) -> RoutingPlan {
    RoutingPlan {
        tun: config.gateway.tun.clone(),
        interfaces: config.gateway.interfaces.clone(),
        table: config.gateway.route_table,
        priority: config.gateway.rule_priority,
        fast_path: fast_path.map(|mark| FastPathPlan {
            table: fastpath::table_name(&config.gateway.tun),
            mark,
        }),
    }
}

/// Whether the kernel fast path runs: asked for (`gateway.fast_path`), with `manage_routing`
/// (which installs what it needs), and supported by the kernel. Says which in the log and in
/// `bulkhead_fastpath_supported`; the mark when it runs.
pub(super) fn probe_fast_path(config: &Config, stats: &FastPathStats) -> Option<u32> {
    if !config.gateway.fast_path {
        tracing::info!("fast path off (gateway.fast_path = false): every packet crosses the TUN");
        return None;
    }
    if !config.gateway.manage_routing {
        tracing::info!(
            "fast path off: it needs gateway.manage_routing (the gateway installs its nftables \
             table and rules)"
        );
        return None;
    }
    let mark = config.gateway.fast_path_mark;
    match fastpath::probe(mark).and_then(|()| {
        fastpath::clear_marks(mark).map_err(|e| format!("clearing stale conntrack marks: {e}"))
    }) {
        Ok(stale) => {
            if stale > 0 {
                tracing::warn!(
                    flows = stale,
                    "fast path: cleared the mark of flows an earlier run left in the kernel; \
                     their packets come to the TUN again"
                );
            }
            stats.supported.store(true, Ordering::Relaxed);
            Some(mark)
        }
        Err(why) => {
            tracing::warn!(
                "fast path unsupported here ({why}): every packet crosses the TUN, as without it"
            );
            None
        }
    }
}

/// Starts the fast path's threads; on failure the gateway runs without it (the routing's mark
/// rules then match nothing).
pub(super) fn start_fast_path(
    mark: Option<u32>,
    workers: usize,
    stats: &Arc<FastPathStats>,
) -> (Option<FastPath>, Vec<Option<WorkerLink>>) {
    let none = || (0..workers).map(|_| None).collect();
    let Some(mark) = mark else {
        return (None, none());
    };
    match FastPath::start(mark, workers, stats.clone()) {
        Ok((fp, links)) => {
            tracing::info!(mark = format_args!("{mark:#x}"), "fast path on");
            (Some(fp), links.into_iter().map(Some).collect())
        }
        Err(e) => {
            stats.supported.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, "fast path cannot start: every packet crosses the TUN");
            (None, none())
        }
    }
}

/// Installs the ip rules, routes and sysctls when `manage_routing` is set (and the fast path's
/// table and rules when it runs).
pub(super) fn install_routing(
    config: &Config,
    fast_path: Option<u32>,
) -> Result<Option<Routing<SystemHost>>, RuntimeError> {
    if !config.gateway.manage_routing {
        return Ok(None);
    }
    let plan = routing_plan(config, fast_path);
    let r = Routing::install(SystemHost, &plan, &config.policy.state_dir)?;
    tracing::info!(
        table = plan.table,
        priority = plan.priority,
        interfaces = ?plan.interfaces,
        fast_path = plan.fast_path.is_some(),
        "routing installed"
    );
    Ok(Some(r))
}

/// What every worker shares.
pub(super) struct Shared<'a> {
    pub store: &'a Arc<PolicyStore>,
    pub log: &'a LogSender<DecisionRecord>,
    pub metrics: &'a Metrics,
    pub notices: &'a ExitNotices,
}

/// One worker thread per TUN queue, each with its own pipeline. If a thread cannot be started,
/// those already running are stopped before the error is returned.
pub(super) fn spawn_workers(
    config: &Config,
    tun: Tun,
    shared: Shared<'_>,
    links: Vec<Option<WorkerLink>>,
) -> Result<WorkerThreads, RuntimeError> {
    let mut links = links.into_iter();
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(WakeFd::new()?);
    let queues = tun.into_queues();
    let dns = start_dns(config, queues.len(), shared.metrics)?;
    let mut workers = Workers {
        stop: stop.clone(),
        wake: wake.clone(),
        handles: Vec::new(),
    };
    let mut inboxes = dns.inboxes.into_iter();
    for (index, queue) in queues.into_iter().enumerate() {
        let fastpath = links.next().flatten();
        let mut pconfig = pipeline_config(config, fastpath.is_some());
        pconfig.dns.cache = Some(dns.cache.clone());
        let worker = Worker {
            index,
            queue,
            pipeline: Pipeline::new(pconfig, shared.store.clone()),
            dns: inboxes.next().map(|inbox| super::worker::WorkerDns {
                client: dns.service.client(),
                inbox,
            }),
            fastpath,
            store: shared.store.clone(),
            log: shared.log.clone(),
            counters: shared.metrics.worker(index),
            wake: wake.clone(),
            stop: stop.clone(),
            busy_poll: std::time::Duration::from_micros(u64::from(config.gateway.busy_poll_us)),
        };
        let notice = shared.notices.notice(index);
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
    Ok(workers)
}

/// Each worker's pipeline: the configured bounds and idle timeouts over the defaults.
fn pipeline_config(config: &Config, fast_path: bool) -> PipelineConfig {
    PipelineConfig {
        gateway_id: config.gateway.id.clone(),
        flow_capacity: config.limits.flow_capacity,
        max_held_bytes_per_flow: config.limits.max_held_bytes_per_flow,
        max_held_bytes_total: config.limits.max_held_bytes_total,
        inspect_timeout: config.limits.inspect_timeout(),
        idle: config.timeouts.apply(PipelineConfig::default().idle),
        dns: crate::pipeline::DnsCheckConfig {
            learn_from: config.dns.learn_addrs().unwrap_or_default(),
            ..Default::default()
        },
        fast_path,
        ..PipelineConfig::default()
    }
}

/// The DNS check's parts: the cache every worker reads, the resolver thread, one answer inbox
/// per worker. Started whatever the policy says: a reload may turn the check on.
struct DnsParts {
    cache: Arc<crate::dns::DnsCache>,
    service: crate::dns::resolver::DnsService,
    inboxes: Vec<crate::dns::resolver::AnswerInbox>,
}

fn start_dns(config: &Config, workers: usize, metrics: &Metrics) -> Result<DnsParts, RuntimeError> {
    let cache = Arc::new(crate::dns::DnsCache::new(config.dns.cache_config()));
    let stats = Arc::new(crate::dns::resolver::ResolverStats::default());
    let (service, inboxes) = crate::dns::resolver::DnsService::start(
        config.dns.resolver_settings(),
        cache.clone(),
        stats.clone(),
        workers,
    )?;
    metrics.set_dns_stats(crate::metrics::DnsProcessStats {
        resolver: stats,
        cache: cache.clone(),
    });
    Ok(DnsParts {
        cache,
        service,
        inboxes,
    })
}
