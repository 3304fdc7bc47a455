//! The connection loop: dial, Hello, snapshots in, ACK / NACK and decision records out.
//!
//! Reconnects use exponential backoff (0.5 s doubling to 30 s) with jitter, so a fleet that lost
//! its controller does not come back in lockstep. Decision records go through a bounded channel
//! ([`RecordSender::send`] never blocks the caller) into batches; batches wait in a bounded queue
//! while the controller is away, and the oldest is dropped (and counted) when it is full: the
//! decision log on disk stays the record of truth, the controller's copy is for fleet views.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_proto::v1::controller_message::Message as In;
use control_proto::v1::gateway_message::Message as Out;
use control_proto::v1::policy_distribution_client::PolicyDistributionClient;
use control_proto::v1::{Ack, DecisionBatch, GatewayMessage, Hello, Nack, Snapshot};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::snapshot::{store_last_known_good, ValidSnapshot, MAX_SNAPSHOT_BYTES};
use super::{ApplyPolicy, ClientConfig, PolicyUpdate};

/// Records waiting to be batched.
const RECORD_QUEUE: usize = 16_384;
/// Records per batch.
const BATCH_RECORDS: usize = 1000;
/// A partial batch is sent after this long.
const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Batches kept while the controller is unreachable.
const MAX_PENDING_BATCHES: usize = 64;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Counters for metrics and logs.
#[derive(Debug, Default)]
pub struct ControlStats {
    /// A stream is open now.
    pub connected: AtomicBool,
    /// The controller version in force (0: none from the controller).
    pub enforced_version: AtomicU64,
    /// Records refused because the record queue was full.
    pub dropped_records: AtomicU64,
    /// Batches dropped because the controller was away too long.
    pub dropped_batches: AtomicU64,
    /// Snapshots NACKed.
    pub nacks: AtomicU64,
}

/// Where the pipeline's decision records go to be uploaded. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RecordSender {
    tx: mpsc::Sender<String>,
    stats: Arc<ControlStats>,
}

impl RecordSender {
    /// Queues one record (a decision-log JSON object); false, counted, when the queue is full.
    pub fn send(&self, record_json: String) -> bool {
        let sent = self.tx.try_send(record_json).is_ok();
        if !sent {
            self.stats.dropped_records.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }
}

/// The running client.
#[derive(Debug)]
pub struct ControlHandle {
    /// Decision records to upload.
    pub records: RecordSender,
    /// Counters.
    pub stats: Arc<ControlStats>,
    task: tokio::task::JoinHandle<()>,
    batcher: tokio::task::JoinHandle<()>,
}

impl ControlHandle {
    /// Stops the client (the stream is closed; nothing in flight is retried).
    pub fn shutdown(self) {
        self.task.abort();
        self.batcher.abort();
    }
}

#[derive(Debug, Default)]
struct Pending {
    batches: Mutex<VecDeque<DecisionBatch>>,
    ready: Notify,
}

/// Starts the client on the current tokio runtime.
pub fn spawn(config: ClientConfig, applier: impl ApplyPolicy) -> ControlHandle {
    let stats = Arc::new(ControlStats::default());
    stats
        .enforced_version
        .store(config.enforced_version, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(RECORD_QUEUE);
    let pending = Arc::new(Pending::default());
    let batcher = tokio::spawn(batch_records(rx, Arc::clone(&pending), Arc::clone(&stats)));
    let task = tokio::spawn(run(config, Arc::new(applier), pending, Arc::clone(&stats)));
    ControlHandle {
        records: RecordSender {
            tx,
            stats: Arc::clone(&stats),
        },
        stats,
        task,
        batcher,
    }
}

async fn batch_records(
    mut rx: mpsc::Receiver<String>,
    pending: Arc<Pending>,
    stats: Arc<ControlStats>,
) {
    let mut records = Vec::new();
    let mut reported_drops = 0u64;
    loop {
        let timed_out = match tokio::time::timeout(BATCH_INTERVAL, rx.recv()).await {
            Ok(Some(record)) => {
                records.push(record);
                false
            }
            Ok(None) => return,
            Err(_) => true,
        };
        // Send when the batch is full, or when the interval passed with something to send.
        let full = records.len() >= BATCH_RECORDS;
        let due = timed_out && !records.is_empty();
        if !full && !due {
            continue;
        }
        let dropped = stats.dropped_records.load(Ordering::Relaxed);
        let batch = DecisionBatch {
            records_json: std::mem::take(&mut records),
            dropped: dropped - reported_drops,
        };
        reported_drops = dropped;
        {
            let mut batches = pending.batches.lock().unwrap_or_else(|e| e.into_inner());
            if batches.len() >= MAX_PENDING_BATCHES {
                batches.pop_front();
                stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
            }
            batches.push_back(batch);
        }
        pending.ready.notify_one();
    }
}

/// The delay before attempt `failures` (1-based): exponential, capped, with jitter in
/// [half, full] so reconnects spread out.
pub fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let full = exp.min(BACKOFF_MAX);
    let half = full / 2;
    half + full.mul_f64(rand::random::<f64>() * 0.5)
}

async fn run(
    mut config: ClientConfig,
    applier: Arc<dyn ApplyPolicy>,
    pending: Arc<Pending>,
    stats: Arc<ControlStats>,
) {
    let mut failures = 0u32;
    loop {
        match session(&mut config, applier.as_ref(), &pending, &stats).await {
            Ok(got_snapshot) => {
                if got_snapshot {
                    failures = 0;
                }
                tracing::warn!(endpoint = %config.endpoint, "controller stream ended");
            }
            Err(e) => {
                tracing::warn!(endpoint = %config.endpoint, error = %e, "controller unreachable")
            }
        }
        stats.connected.store(false, Ordering::Relaxed);
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff(failures)).await;
    }
}

fn channel(config: &ClientConfig) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| format!("{}: {e}", config.endpoint))?;
    let host = endpoint
        .uri()
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or_else(|| format!("{}: no host", config.endpoint))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.tls.ca))
        .identity(Identity::from_pem(&config.tls.cert, &config.tls.key))
        .domain_name(host);
    Ok(endpoint
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_lazy())
}

/// One stream, until it ends. `Ok(true)` when at least one snapshot arrived.
async fn session(
    config: &mut ClientConfig,
    applier: &dyn ApplyPolicy,
    pending: &Pending,
    stats: &ControlStats,
) -> Result<bool, String> {
    let channel = channel(config)?;
    let mut client =
        PolicyDistributionClient::new(channel).max_decoding_message_size(MAX_SNAPSHOT_BYTES);
    let (tx, rx) = mpsc::channel(16);
    let hello = GatewayMessage {
        message: Some(Out::Hello(Hello {
            gateway_id: config.gateway_id.clone(),
            build_version: config.build_version.clone(),
            enforced_version: config.enforced_version,
        })),
    };
    tx.send(hello).await.map_err(|e| e.to_string())?;
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    stats.connected.store(true, Ordering::Relaxed);
    tracing::info!(endpoint = %config.endpoint, "controller stream open");
    let mut got_snapshot = false;
    loop {
        // Batches waiting from before are sent first (the notify may have fired while away).
        loop {
            let batch = pending
                .batches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let Some(batch) = batch else { break };
            let message = GatewayMessage {
                message: Some(Out::Decisions(batch)),
            };
            tx.send(message).await.map_err(|e| e.to_string())?;
        }
        tokio::select! {
            message = inbound.message() => {
                let message = message.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                let Some(message) = message else { return Ok(got_snapshot) };
                let Some(In::Snapshot(snapshot)) = message.message else { continue };
                got_snapshot = true;
                let answer = handle_snapshot(config, applier, stats, snapshot).await;
                tx.send(answer).await.map_err(|e| e.to_string())?;
            }
            () = pending.ready.notified() => {}
        }
    }
}

/// Validates, compiles, applies and persists a snapshot; the ACK or NACK to send.
async fn handle_snapshot(
    config: &mut ClientConfig,
    applier: &dyn ApplyPolicy,
    stats: &ControlStats,
    snapshot: Snapshot,
) -> GatewayMessage {
    let (version, nonce) = (snapshot.version, snapshot.nonce.clone());
    let nack = |errors: Vec<String>, enforced: u64| {
        stats.nacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(version, ?errors, "snapshot refused");
        GatewayMessage {
            message: Some(Out::Nack(Nack {
                version,
                nonce: nonce.clone(),
                errors,
                enforced_version: enforced,
            })),
        }
    };
    let ack = GatewayMessage {
        message: Some(Out::Ack(Ack {
            version,
            nonce: nonce.clone(),
        })),
    };
    // The same content already in force and persisted (a reconnect): nothing to swap.
    if version == config.enforced_version
        && !snapshot.digest.is_empty()
        && snapshot.digest == config.enforced_digest
    {
        return ack;
    }
    let state_dir = config.state_dir.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let valid = ValidSnapshot::try_from(snapshot)?;
        let compiled = valid.compile();
        Ok::<_, Vec<String>>((valid, compiled))
    })
    .await;
    let (valid, compiled) = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(errors)) => return nack(errors, config.enforced_version),
        Err(e) => {
            return nack(
                vec![format!("compile task failed: {e}")],
                config.enforced_version,
            )
        }
    };
    let update = PolicyUpdate {
        version,
        digest: valid.digest.clone(),
        policy: Arc::clone(&valid.policy),
        compiled,
    };
    if let Err(e) = applier.apply(update) {
        return nack(vec![format!("apply: {e}")], config.enforced_version);
    }
    config.enforced_version = version;
    config.enforced_digest = valid.digest.clone();
    stats.enforced_version.store(version, Ordering::Relaxed);
    let wire = valid.wire;
    let persisted =
        tokio::task::spawn_blocking(move || store_last_known_good(&state_dir, &wire)).await;
    match persisted {
        Ok(Ok(())) => {
            tracing::info!(version, "controller snapshot in force");
            ack
        }
        Ok(Err(e)) => nack(vec![format!("applied but not persisted: {e}")], version),
        Err(e) => nack(vec![format!("applied but not persisted: {e}")], version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for failures in 1..40 {
            let delay = backoff(failures);
            let full = BACKOFF_FIRST
                .saturating_mul(1u32 << (failures - 1).min(16))
                .min(BACKOFF_MAX);
            assert!(delay >= full / 2 && delay <= full, "{failures}: {delay:?}");
        }
        assert!(backoff(100) <= BACKOFF_MAX);
    }
}
