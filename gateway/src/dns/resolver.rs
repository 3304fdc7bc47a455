//! The gateway's own DNS lookups, off the packet path.
//!
//! One thread runs a single-threaded tokio runtime with a `hickory-resolver` client. Workers
//! submit names through a bounded queue ([`DnsClient::submit`], never blocking: a full queue is
//! a refusal, answered at once so the flow fails closed rather than waiting). The thread
//! de-duplicates (one query per name however many flows wait for it), checks the cache again
//! (another worker's answer may have arrived), bounds the queries in flight
//! ([`ResolverSettings::max_in_flight`]: past it a name is refused, counted), stores every
//! answer in the shared [`DnsCache`] and sends it to each waiting worker's [`AnswerInbox`],
//! whose eventfd wakes the worker if it sleeps.
//!
//! Resolvers: `[dns] servers` in gateway.toml, else the system's (`/etc/resolv.conf`). Names are
//! asked as fully qualified (no search domains: the SNI is a full name), for A and AAAA, with
//! hickory's own cache off (the shared cache is the one that counts, with its own TTL clamps).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveErrorKind, TokioResolver};
use tokio::sync::mpsc;

use super::{DnsAnswer, DnsCache, DnsFailure};
use crate::sys::tun::WakeFd;

/// How the resolver thread works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// The resolvers to ask; empty: the system's.
    pub servers: Vec<SocketAddr>,
    /// Time for one attempt.
    pub timeout: Duration,
    /// Attempts per server.
    pub attempts: usize,
    /// Most names resolved at once.
    pub max_in_flight: usize,
    /// Most requests waiting for the thread.
    pub queue: usize,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            servers: Vec::new(),
            timeout: Duration::from_millis(1500),
            attempts: 2,
            max_in_flight: 256,
            queue: 4096,
        }
    }
}

/// Counters of the resolver thread, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct ResolverStats {
    /// Queries sent (one per name, however many flows waited).
    pub queries: AtomicU64,
    /// Queries in flight now.
    pub in_flight: AtomicU64,
    /// Names refused: too many in flight, or the request queue was full.
    pub refused: AtomicU64,
    /// Lookups that answered with addresses (or their absence).
    pub answered: AtomicU64,
    /// Lookups that timed out.
    pub timeouts: AtomicU64,
    /// Lookups that failed otherwise (SERVFAIL, REFUSED, unreachable resolver).
    pub errors: AtomicU64,
    /// Requests answered from the cache by the thread (another worker's lookup had finished).
    pub cache_answers: AtomicU64,
    /// Answers a worker's inbox had no room for (the worker's flows then time out).
    pub answers_dropped: AtomicU64,
}

struct Request {
    name: Box<str>,
    worker: usize,
}

/// Where a worker's answers arrive.
#[derive(Debug)]
pub struct AnswerInbox {
    rx: std_mpsc::Receiver<(Box<str>, DnsAnswer)>,
    /// Signalled with every answer; the worker polls it with its TUN queue.
    pub wake: Arc<WakeFd>,
}

impl AnswerInbox {
    /// The next answer, if one is waiting.
    pub fn try_recv(&self) -> Option<(Box<str>, DnsAnswer)> {
        self.rx.try_recv().ok()
    }

    /// Re-arms the wake-up after the answers were taken.
    pub fn clear_wake(&self) {
        self.wake.clear();
    }
}

#[derive(Debug)]
struct Outbox {
    tx: std_mpsc::SyncSender<(Box<str>, DnsAnswer)>,
    wake: Arc<WakeFd>,
}

/// A worker's handle to submit names.
#[derive(Debug, Clone)]
pub struct DnsClient {
    tx: mpsc::Sender<Request>,
    stats: Arc<ResolverStats>,
}

impl DnsClient {
    /// Asks for `name` on behalf of `worker`. False when refused (the queue is full or the
    /// thread is gone): the caller answers the pipeline with [`DnsFailure::Refused`].
    pub fn submit(&self, name: &str, worker: usize) -> bool {
        let ok = self
            .tx
            .try_send(Request {
                name: name.into(),
                worker,
            })
            .is_ok();
        if !ok {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// The resolver thread. It ends when every [`DnsClient`] (and this) is dropped.
#[derive(Debug)]
pub struct DnsService {
    client: DnsClient,
    _thread: std::thread::JoinHandle<()>,
}

/// Answers kept per worker inbox before new ones are dropped.
const INBOX: usize = 4096;

impl DnsService {
    /// Starts the thread; one inbox per worker.
    pub fn start(
        settings: ResolverSettings,
        cache: Arc<DnsCache>,
        stats: Arc<ResolverStats>,
        workers: usize,
    ) -> std::io::Result<(DnsService, Vec<AnswerInbox>)> {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let mut outboxes = Vec::with_capacity(workers);
        let mut inboxes = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (atx, arx) = std_mpsc::sync_channel(INBOX);
            let wake = Arc::new(WakeFd::new()?);
            outboxes.push(Outbox {
                tx: atx,
                wake: wake.clone(),
            });
            inboxes.push(AnswerInbox { rx: arx, wake });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("bulkhead-dns".into())
            .spawn(move || {
                runtime.block_on(run(settings, rx, cache, outboxes, thread_stats));
            })?;
        Ok((
            DnsService {
                client: DnsClient { tx, stats },
                _thread: thread,
            },
            inboxes,
        ))
    }

    /// A handle for a worker.
    pub fn client(&self) -> DnsClient {
        self.client.clone()
    }
}

/// The hickory client for the settings: the configured servers (UDP, with TCP for truncated
/// answers), else the system's configuration.
fn build_resolver(settings: &ResolverSettings) -> Result<TokioResolver, String> {
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("system resolver configuration: {e}"))?
    } else {
        let mut config = ResolverConfig::new();
        for &s in &settings.servers {
            config.add_name_server(NameServerConfig::new(s, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(s, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let opts = builder.options_mut();
    opts.timeout = settings.timeout;
    opts.attempts = settings.attempts.max(1);
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    opts.num_concurrent_reqs = 1;
    Ok(builder.build())
}

type Outcome = Result<Vec<(IpAddr, u32)>, DnsFailure>;

/// One lookup, bounded in time whatever the resolver does.
async fn lookup(resolver: &TokioResolver, name: &str, deadline: Duration) -> Outcome {
    let fqdn = format!("{name}.");
    let started = Instant::now();
    match tokio::time::timeout(deadline, resolver.lookup_ip(fqdn)).await {
        Err(_) => Err(DnsFailure::Timeout),
        Ok(Ok(found)) => {
            let ttl = found
                .valid_until()
                .saturating_duration_since(started)
                .as_secs()
                .min(u64::from(u32::MAX)) as u32;
            Ok(found.iter().map(|a| (a, ttl)).collect())
        }
        Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
        Ok(Err(e)) => match e.kind() {
            ResolveErrorKind::Proto(p) if matches!(p.kind(), ProtoErrorKind::Timeout) => {
                Err(DnsFailure::Timeout)
            }
            _ => Err(DnsFailure::Error),
        },
    }
}

async fn run(
    settings: ResolverSettings,
    mut rx: mpsc::Receiver<Request>,
    cache: Arc<DnsCache>,
    outboxes: Vec<Outbox>,
    stats: Arc<ResolverStats>,
) {
    let resolver = match build_resolver(&settings) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::error!("DNS resolver unavailable, names cannot be checked: {e}");
            None
        }
    };
    let reply = |worker: usize, name: &str, answer: DnsAnswer| {
        let Some(o) = outboxes.get(worker) else {
            return;
        };
        if o.tx.try_send((name.into(), answer)).is_err() {
            stats.answers_dropped.fetch_add(1, Ordering::Relaxed);
        }
        let _ = o.wake.signal();
    };
    let deadline =
        settings.timeout * (settings.attempts.max(1) as u32 * 2) + Duration::from_millis(250);
    let max = settings.max_in_flight.max(1);
    let mut waiting: HashMap<Box<str>, Vec<usize>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::channel::<(Box<str>, Outcome)>(max);
    loop {
        tokio::select! {
            req = rx.recv() => {
                let Some(req) = req else { break };
                if let Some(addrs) = cache.addresses(&req.name, Instant::now()) {
                    stats.cache_answers.fetch_add(1, Ordering::Relaxed);
                    reply(req.worker, &req.name, DnsAnswer::Addresses(addrs));
                    continue;
                }
                if let Some(w) = waiting.get_mut(&req.name) {
                    if !w.contains(&req.worker) {
                        w.push(req.worker);
                    }
                    continue;
                }
                let Some(resolver) = resolver.clone() else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    reply(req.worker, &req.name, DnsAnswer::Failed(DnsFailure::Error));
                    continue;
                };
                if waiting.len() >= max {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    reply(req.worker, &req.name, DnsAnswer::Failed(DnsFailure::Refused));
                    continue;
                }
                waiting.insert(req.name.clone(), vec![req.worker]);
                stats.queries.fetch_add(1, Ordering::Relaxed);
                stats.in_flight.store(waiting.len() as u64, Ordering::Relaxed);
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let outcome = lookup(&resolver, &req.name, deadline).await;
                    let _ = done.send((req.name, outcome)).await;
                });
            }
            Some((name, outcome)) = done_rx.recv() => {
                let workers = waiting.remove(&name).unwrap_or_default();
                stats.in_flight.store(waiting.len() as u64, Ordering::Relaxed);
                let answer = match outcome {
                    Ok(addrs) => {
                        stats.answered.fetch_add(1, Ordering::Relaxed);
                        cache.insert(&name, &addrs, Instant::now());
                        DnsAnswer::Addresses(addrs.into_iter().map(|(a, _)| a).collect())
                    }
                    Err(f) => {
                        match f {
                            DnsFailure::Timeout => stats.timeouts.fetch_add(1, Ordering::Relaxed),
                            _ => stats.errors.fetch_add(1, Ordering::Relaxed),
                        };
                        DnsAnswer::Failed(f)
                    }
                };
                for w in workers {
                    reply(w, &name, answer.clone());
                }
            }
        }
    }
}
