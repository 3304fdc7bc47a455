//! The controller: one gRPC port serving the gateway streams ([`fleet`]), the operator API
//! ([`operator`]) and grpc.health.v1, over mutual TLS.
//!
//! Versions come from three places: the watched policy and inventory files ([`sources`]), and
//! operator pushes and rollbacks. Each is turned into a snapshot once (selectors resolved,
//! validated, converted to the wire form), stored as the next version, and published on a
//! `tokio::sync::watch` channel. Every gateway stream has its own task that waits on that
//! channel and its own bounded outbound queue: a slow or stalled gateway only ever delays
//! itself, and when it catches up it is sent the newest version only, never a backlog.

pub mod fleet;
pub mod least;
pub mod operator;
pub mod sources;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_proto::v1;
use control_proto::v1::operator_server::OperatorServer;
use control_proto::v1::policy_distribution_server::PolicyDistributionServer;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::config::ControllerConfig;
use crate::identity::TlsFiles;
use crate::store::{SqliteStore, Store, StoreError};

/// Largest gateway message accepted (a batch of decision records is the largest).
pub const MAX_GATEWAY_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest operator message accepted (a bundle of a policy and its catalogs).
pub const MAX_OPERATOR_MESSAGE: usize = 64 * 1024 * 1024;

/// The snapshot served now.
#[derive(Debug)]
pub struct Served {
    /// Its version.
    pub version: u64,
    /// Digest of the encoded policy.
    pub digest: String,
    /// The compiled-ready policy.
    pub policy: v1::Policy,
}

/// Knobs tests turn; production uses [`Options::default`].
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the watched files are looked at.
    pub poll_interval: Duration,
    /// How long a new stream may take to send its Hello.
    pub hello_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            poll_interval: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// State shared by the services and the watcher.
#[derive(Debug)]
pub struct Controller {
    store: Arc<dyn Store>,
    scratch: PathBuf,
    current: watch::Sender<Option<Arc<Served>>>,
    sources: tokio::sync::Mutex<sources::Sources>,
    source_errors: Mutex<SourceErrors>,
    fleet: fleet::Fleet,
    retention: Duration,
    options: Options,
}

#[derive(Debug, Default)]
struct SourceErrors {
    policy: Vec<String>,
    inventory: Vec<String>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Controller {
    /// The version served now (0 when none).
    pub fn version(&self) -> u64 {
        self.current.borrow().as_ref().map_or(0, |s| s.version)
    }

    /// The errors of the watched files, for `status`.
    pub fn source_errors(&self) -> Vec<String> {
        let errors = self.source_errors.lock().unwrap_or_else(|e| e.into_inner());
        errors
            .policy
            .iter()
            .chain(errors.inventory.iter())
            .cloned()
            .collect()
    }

    fn set_errors(&self, policy: Option<Vec<String>>, inventory: Option<Vec<String>>) {
        let mut errors = self.source_errors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = policy {
            errors.policy = p;
        }
        if let Some(i) = inventory {
            errors.inventory = i;
        }
    }

    /// Runs a store call off the async workers.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }
}

/// A controller listening on its port.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Shared state (tests look inside).
    pub controller: Arc<Controller>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits for the server to end (after `shutdown` resolved).
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Opens the store, loads the sources, binds the port and starts serving until `shutdown`.
pub async fn start(
    config: &ControllerConfig,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let tls = TlsFiles::read(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let state_dir = config.controller.state_dir.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&state_dir)).await??;
    let store: Arc<dyn Store> = Arc::new(store);
    let (current, _) = watch::channel(None);
    let controller = Arc::new(Controller {
        fleet: fleet::Fleet::default(),
        store,
        scratch: config.controller.state_dir.join("scratch"),
        current,
        sources: tokio::sync::Mutex::new(sources::Sources::new(&config.policy)),
        source_errors: Mutex::new(SourceErrors::default()),
        retention: config.retention(),
        options,
    });
    controller.fleet.restore(&controller).await?;
    sources::restore(&controller).await?;
    sources::poll_files(&controller).await;

    let listener = tokio::net::TcpListener::bind(config.controller.listen).await?;
    let addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<PolicyDistributionServer<fleet::GatewayService>>()
        .await;
    health
        .set_serving::<OperatorServer<operator::OperatorService>>()
        .await;
    let gateways = PolicyDistributionServer::new(fleet::GatewayService::new(&controller))
        .max_decoding_message_size(MAX_GATEWAY_MESSAGE);
    let operators = OperatorServer::new(operator::OperatorService::new(&controller))
        .max_decoding_message_size(MAX_OPERATOR_MESSAGE);
    let router = Server::builder()
        .tls_config(tls.server_config())?
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(gateways)
        .add_service(operators);
    let watcher = tokio::spawn(sources::watch_files(Arc::clone(&controller)));
    let closing = Arc::clone(&controller);
    let shutdown = async move {
        shutdown.await;
        closing.fleet.close_all();
    };
    let task = tokio::spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
            .await;
        watcher.abort();
        result.map_err(anyhow::Error::from)
    });
    tracing::info!(%addr, version = controller.version(), "controller listening");
    Ok(Running {
        addr,
        controller,
        task,
    })
}
