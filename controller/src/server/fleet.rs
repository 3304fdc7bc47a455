//! The gateway side of the controller: one bidirectional stream per gateway, and the fleet view.
//!
//! A stream is accepted only from a gateway certificate, and its first message must be a Hello
//! naming the same gateway id as that certificate. The stream then has its own task: it sends the
//! version served now, then every newer one (only the newest if several were published while the
//! gateway was slow), each with a fresh nonce, and reads ACKs, NACKs and decision records. An
//! answer whose nonce is not the last one sent is stale and ignored. A second stream from the
//! same gateway replaces the first (a gateway that reconnects after a half-dead connection must
//! not wait for the old one to time out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use control_proto::v1::controller_message::Message as Out;
use control_proto::v1::gateway_message::Message as In;
use control_proto::v1::policy_distribution_server::PolicyDistribution;
use control_proto::v1::{ControllerMessage, DecisionBatch, GatewayMessage, Snapshot};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Controller;
use crate::config::now_ms;
use crate::identity::{peer_identity, valid_name, Identity};
use crate::records::{digest_record, MAX_BATCH_RECORDS};
use crate::store::GatewayRow;

/// Outbound messages queued per stream. Small on purpose: snapshots are whole policies, and a
/// gateway that does not read gets the newest version when it resumes, not a backlog.
const OUTBOUND_QUEUE: usize = 2;
/// Most NACK errors kept per gateway, and most characters of each.
const MAX_NACK_ERRORS: usize = 200;
const MAX_ERROR_CHARS: usize = 2048;

#[derive(Debug)]
struct Entry {
    row: GatewayRow,
    connected: bool,
    connection: u64,
    /// Closing this ends the stream (a newer stream from the same gateway replaced it).
    kick: Option<oneshot::Sender<()>>,
}

/// Every gateway known: connected now or seen before (restored from the store).
#[derive(Debug, Default)]
pub struct Fleet {
    entries: Mutex<HashMap<String, Entry>>,
    next_connection: std::sync::atomic::AtomicU64,
}

impl Fleet {
    /// Loads the gateways seen before the restart, all disconnected.
    pub async fn restore(&self, controller: &Controller) -> anyhow::Result<()> {
        let rows = controller.blocking(|store| store.gateways()).await?;
        let mut entries = self.lock();
        for mut row in rows {
            row.state = "disconnected".to_string();
            entries.insert(
                row.id.clone(),
                Entry {
                    row,
                    connected: false,
                    connection: 0,
                    kick: None,
                },
            );
        }
        Ok(())
    }

    /// Ends every stream (at shutdown: the server's graceful stop waits for open streams).
    pub fn close_all(&self) {
        for entry in self.lock().values_mut() {
            entry.kick = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fleet, sorted by id: (state, connected).
    pub fn snapshot(&self) -> Vec<(GatewayRow, bool)> {
        let entries = self.lock();
        let mut rows: Vec<_> = entries
            .values()
            .map(|e| (e.row.clone(), e.connected))
            .collect();
        rows.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        rows
    }

    /// Applies `change` to a gateway's row (only for the given connection) and returns the row
    /// to persist.
    fn update(
        &self,
        id: &str,
        connection: u64,
        change: impl FnOnce(&mut Entry),
    ) -> Option<GatewayRow> {
        let mut entries = self.lock();
        let entry = entries.get_mut(id)?;
        if entry.connection != connection {
            return None;
        }
        entry.row.last_seen_ms = now_ms();
        change(entry);
        Some(entry.row.clone())
    }
}

/// The `PolicyDistribution` service.
#[derive(Debug, Clone)]
pub struct GatewayService {
    controller: Weak<Controller>,
}

impl GatewayService {
    /// The service of `controller`.
    pub fn new(controller: &Arc<Controller>) -> GatewayService {
        GatewayService {
            controller: Arc::downgrade(controller),
        }
    }
}

#[tonic::async_trait]
impl PolicyDistribution for GatewayService {
    type StreamStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<GatewayMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let controller = self
            .controller
            .upgrade()
            .ok_or_else(|| Status::unavailable("the controller is shutting down"))?;
        let id = match peer_identity(&request)? {
            Identity::Gateway(id) => id,
            Identity::Operator(name) => {
                return Err(Status::permission_denied(format!(
                    "operator `{name}` may not open a gateway stream; use a gateway certificate"
                )))
            }
        };
        let address = request
            .remote_addr()
            .map_or_else(String::new, |a| a.to_string());
        let mut inbound = request.into_inner();
        let hello = tokio::time::timeout(controller.options.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello in time"))??;
        let hello = match hello.and_then(|m| m.message) {
            Some(In::Hello(hello)) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
        };
        if hello.gateway_id != id {
            tracing::warn!(certificate = %id, hello = %hello.gateway_id, "refused a gateway stream");
            return Err(Status::permission_denied(format!(
                "the Hello names gateway `{}` but the certificate is for gateway `{id}`",
                hello.gateway_id.chars().take(128).collect::<String>()
            )));
        }
        if hello.build_version.len() > 128 || !valid_name(&id) {
            return Err(Status::invalid_argument(
                "build_version is longer than 128 bytes",
            ));
        }
        let (connection, kicked) = register(&controller, &id, &address, &hello).await;
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        tracing::info!(gateway = %id, %address, build = %hello.build_version, "gateway connected");
        tokio::spawn(async move {
            let mut session = Session {
                controller,
                id,
                connection,
                sent: None,
            };
            session.run(inbound, tx, kicked).await;
            session.disconnect().await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn register(
    controller: &Controller,
    id: &str,
    address: &str,
    hello: &control_proto::v1::Hello,
) -> (u64, oneshot::Receiver<()>) {
    let connection = controller
        .fleet
        .next_connection
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let (kick, kicked) = oneshot::channel();
    let row = {
        let mut entries = controller.fleet.lock();
        let entry = entries.entry(id.to_string()).or_insert_with(|| Entry {
            row: GatewayRow {
                id: id.to_string(),
                ..GatewayRow::default()
            },
            connected: false,
            connection: 0,
            kick: None,
        });
        // Dropping the previous stream's sender ends that stream.
        entry.kick = Some(kick);
        entry.connection = connection;
        entry.connected = true;
        entry.row.address = address.to_string();
        entry.row.build_version = hello.build_version.clone();
        entry.row.enforced_version = hello.enforced_version;
        entry.row.state = "pending".to_string();
        entry.row.errors.clear();
        entry.row.last_seen_ms = now_ms();
        entry.row.clone()
    };
    persist(controller, row).await;
    (connection, kicked)
}

async fn persist(controller: &Controller, row: GatewayRow) {
    let id = row.id.clone();
    if let Err(e) = controller.blocking(move |s| s.put_gateway(&row)).await {
        tracing::warn!(gateway = %id, error = %e, "cannot store the gateway state");
    }
}

struct Session {
    controller: Arc<Controller>,
    id: String,
    connection: u64,
    /// The last snapshot sent: (version, nonce).
    sent: Option<(u64, String)>,
}

type Outbound = mpsc::Sender<Result<ControllerMessage, Status>>;

impl Session {
    async fn run(
        &mut self,
        mut inbound: Streaming<GatewayMessage>,
        tx: Outbound,
        mut kicked: oneshot::Receiver<()>,
    ) {
        let mut current = self.controller.current.subscribe();
        current.mark_changed();
        loop {
            tokio::select! {
                _ = &mut kicked => {
                    tracing::info!(gateway = %self.id, "stream replaced by a newer one");
                    return;
                }
                changed = current.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Waiting for queue space happens here, in this stream's own task; when the
                    // gateway reads again it gets whatever is newest by then.
                    let permit = tokio::select! {
                        permit = tx.reserve() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                        _ = &mut kicked => return,
                    };
                    let served = current.borrow_and_update().clone();
                    if let Some(served) = served {
                        let nonce = format!("{}-{:016x}", served.version, rand::random::<u64>());
                        self.sent = Some((served.version, nonce.clone()));
                        permit.send(Ok(ControllerMessage {
                            message: Some(Out::Snapshot(Snapshot {
                                version: served.version,
                                nonce,
                                policy: Some(served.policy.clone()),
                                digest: served.digest.clone(),
                            })),
                        }));
                        self.mark_pending().await;
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(status) = self.handle(message).await {
                            tracing::warn!(gateway = %self.id, error = %status.message(), "stream ended");
                            let _ = tx.try_send(Err(status));
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        tracing::warn!(gateway = %self.id, error = %status.message(), "stream failed");
                        let _ = tx.try_send(Err(Status::invalid_argument(format!(
                            "unreadable message: {}", status.message()
                        ))));
                        return;
                    }
                },
            }
        }
    }

    async fn mark_pending(&self) {
        let row = self
            .controller
            .fleet
            .update(&self.id, self.connection, |e| {
                e.row.state = "pending".to_string();
            });
        if let Some(row) = row {
            persist(&self.controller, row).await;
        }
    }

    async fn handle(&mut self, message: GatewayMessage) -> Result<(), Status> {
        match message.message {
            Some(In::Ack(ack)) => {
                if !self.is_current(ack.version, &ack.nonce) {
                    tracing::debug!(gateway = %self.id, version = ack.version, "stale ACK ignored");
                    return Ok(());
                }
                tracing::info!(gateway = %self.id, version = ack.version, "ACK");
                let row = self
                    .controller
                    .fleet
                    .update(&self.id, self.connection, |e| {
                        e.row.state = "acked".to_string();
                        e.row.enforced_version = ack.version;
                        e.row.errors.clear();
                    });
                if let Some(row) = row {
                    persist(&self.controller, row).await;
                }
            }
            Some(In::Nack(nack)) => {
                if !self.is_current(nack.version, &nack.nonce) {
                    tracing::debug!(gateway = %self.id, version = nack.version, "stale NACK ignored");
                    return Ok(());
                }
                let errors: Vec<String> = nack
                    .errors
                    .iter()
                    .take(MAX_NACK_ERRORS)
                    .map(|e| e.chars().take(MAX_ERROR_CHARS).collect())
                    .collect();
                tracing::warn!(gateway = %self.id, version = nack.version, ?errors, "NACK");
                let row = self
                    .controller
                    .fleet
                    .update(&self.id, self.connection, |e| {
                        e.row.state = "nacked".to_string();
                        e.row.enforced_version = nack.enforced_version;
                        e.row.errors = errors;
                    });
                if let Some(row) = row {
                    persist(&self.controller, row).await;
                }
            }
            Some(In::Decisions(batch)) => self.records(batch).await?,
            Some(In::Hello(_)) => {
                return Err(Status::invalid_argument("Hello may only be sent once"));
            }
            None => return Err(Status::invalid_argument("empty gateway message")),
        }
        Ok(())
    }

    fn is_current(&self, version: u64, nonce: &str) -> bool {
        self.sent
            .as_ref()
            .is_some_and(|(v, n)| *v == version && n == nonce)
    }

    async fn records(&self, batch: DecisionBatch) -> Result<(), Status> {
        if batch.records_json.len() > MAX_BATCH_RECORDS {
            return Err(Status::invalid_argument(format!(
                "a batch holds at most {MAX_BATCH_RECORDS} records"
            )));
        }
        let mut rows = Vec::with_capacity(batch.records_json.len());
        let mut refused = 0usize;
        for json in &batch.records_json {
            match digest_record(json) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    refused += 1;
                    tracing::debug!(gateway = %self.id, error = %e, "decision record refused");
                }
            }
        }
        if refused > 0 || batch.dropped > 0 {
            tracing::warn!(gateway = %self.id, refused, dropped_by_gateway = batch.dropped, "decision records lost");
        }
        let id = self.id.clone();
        let received = now_ms();
        self.controller
            .fleet
            .update(&self.id, self.connection, |_| {});
        // A store failure loses this batch (logged) but keeps the stream: policy delivery matters
        // more than the report.
        let count = rows.len();
        if let Err(e) = self
            .controller
            .blocking(move |s| s.add_records(&id, received, &rows))
            .await
        {
            tracing::error!(gateway = %self.id, records = count, error = %e, "cannot store decision records");
        }
        Ok(())
    }

    async fn disconnect(&self) {
        let row = self
            .controller
            .fleet
            .update(&self.id, self.connection, |e| {
                e.connected = false;
                e.kick = None;
                e.row.state = "disconnected".to_string();
            });
        if let Some(row) = row {
            tracing::info!(gateway = %self.id, "gateway disconnected");
            persist(&self.controller, row).await;
        }
    }
}
