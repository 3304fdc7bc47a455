//! The daemon's side of the control plane: the start-up policy from the last-known-good
//! snapshot, the controller client on the control thread's runtime, and the tee of decision
//! records to it.
//!
//! Start order (DESIGN "Control plane"): with `[controller]` configured, the last-known-good
//! snapshot in `[policy] state_dir` is enforced before the controller answers; without one (or
//! when it cannot be read) the local `[policy] file`; else deny-all. The store is created with
//! that policy before the TUN exists, so no packet is ever forwarded unchecked. The
//! last-known-good is ignored without `[controller]`: a gateway taken off the controller
//! enforces its own file, not a stale fleet policy.
//!
//! A pushed snapshot is applied through [`policy::publish`], the swap a SIGHUP reload uses, so
//! established flows are re-evaluated the same way. The client persists it and then ACKs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use policy_engine::{CompiledPolicy, PolicyStore};

use super::policy;
use super::RuntimeError;
use crate::config::{Config, ControllerSection};
use crate::control::{self, ClientConfig, ClientTls, ControlHandle, PolicyUpdate, RecordSender};
use crate::logsink::Tee;
use crate::metrics::{Metrics, PolicyOrigin};

/// The last-known-good snapshot, compiled, for the initial store.
pub(super) struct Initial {
    pub compiled: CompiledPolicy,
    pub version: u64,
    pub digest: String,
    pub rules: usize,
}

/// Reads and compiles the last-known-good snapshot of `state_dir` on a blocking thread, bounded
/// by `timeout`. None (with the reason logged) when there is none or it cannot be used: the
/// caller falls back to the local file.
pub(super) async fn last_known_good(
    state_dir: &std::path::Path,
    timeout: Duration,
) -> Option<Initial> {
    let dir = state_dir.to_path_buf();
    let load = tokio::task::spawn_blocking(move || {
        control::load_last_known_good(&dir).map(|found| {
            found.map(|snapshot| Initial {
                compiled: snapshot.compile(),
                version: snapshot.version,
                digest: snapshot.digest.clone(),
                rules: snapshot.policy.rules.len(),
            })
        })
    });
    match tokio::time::timeout(timeout, load).await {
        Ok(Ok(Ok(found))) => found,
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "last-known-good snapshot unusable; falling back");
            None
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "last-known-good load failed; falling back");
            None
        }
        Err(_) => {
            tracing::error!(
                timeout_ms = timeout.as_millis() as u64,
                "last-known-good load timed out; falling back"
            );
            None
        }
    }
}

/// The client's configuration from gateway.toml. The PEM files are read here, at start-up, so
/// a missing key fails the start instead of a background task.
pub(super) fn client_config(
    config: &Config,
    section: &ControllerSection,
    enforced: Option<(u64, String)>,
) -> Result<ClientConfig, RuntimeError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| RuntimeError::Controller {
            path: path.to_path_buf(),
            error,
        })
    };
    let (enforced_version, enforced_digest) = enforced.unwrap_or_default();
    Ok(ClientConfig {
        endpoint: section.endpoint.clone(),
        gateway_id: config.gateway.id.clone(),
        build_version: env!("CARGO_PKG_VERSION").to_owned(),
        tls: ClientTls {
            ca: read(&section.ca)?,
            cert: read(&section.cert)?,
            key: read(&section.key)?,
        },
        state_dir: config.policy.state_dir.clone(),
        enforced_version,
        enforced_digest,
        compile_timeout: config.policy.load_timeout(),
    })
}

/// Where the decision log writer hands each record for the controller. Set once the client
/// runs; until then (and without a controller) records go to the log only.
#[derive(Debug, Clone, Default)]
pub(super) struct RecordTee(Arc<OnceLock<RecordSender>>);

impl RecordTee {
    /// The log writer's hook: a non-blocking, counted send (see [`RecordSender::send`]).
    pub fn hook(&self) -> Tee {
        let slot = Arc::clone(&self.0);
        Box::new(move |line: &str| {
            if let Some(sender) = slot.get() {
                sender.send(line.to_owned());
            }
        })
    }

    fn connect(&self, sender: RecordSender) {
        let _ = self.0.set(sender);
    }
}

/// Everything the running client shares with the daemon.
pub(super) struct Wiring<'a> {
    pub store: &'a Arc<PolicyStore>,
    pub metrics: &'a Arc<Metrics>,
    /// [`policy::PolicySource::managed`].
    pub managed: Arc<AtomicBool>,
    pub tee: &'a RecordTee,
}

/// Starts the client on the current (control thread's) runtime.
pub(super) fn start(client: ClientConfig, wiring: Wiring<'_>) -> ControlHandle {
    let endpoint = client.endpoint.clone();
    let store = Arc::clone(wiring.store);
    let metrics = Arc::clone(wiring.metrics);
    let managed = wiring.managed;
    let apply = move |update: PolicyUpdate| {
        // Before the swap: a SIGHUP load finishing now must not replace this policy.
        managed.store(true, Ordering::Release);
        let previous = policy::publish(&store, &metrics, update.compiled, PolicyOrigin::Controller);
        tracing::info!(
            version = update.version,
            digest = %update.digest,
            previous,
            rules = update.policy.rules.len(),
            "controller policy applied"
        );
        Ok(())
    };
    let handle = control::spawn(client, apply);
    wiring.metrics.set_control_stats(Arc::clone(&handle.stats));
    wiring.tee.connect(handle.records.clone());
    tracing::info!(%endpoint, "controller client started");
    handle
}
