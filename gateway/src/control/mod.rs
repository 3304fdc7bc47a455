//! The gateway's controller client.
//!
//! The gateway dials the controller over mutual TLS and holds one gRPC stream open (see
//! `control-proto` and docs/control-plane.md). This module owns that stream and nothing of the
//! packet path: snapshots are converted at this edge ([`ValidSnapshot`], `TryFrom` the wire
//! message), compiled on a blocking thread, and handed to a caller-supplied [`ApplyPolicy`],
//! which the runtime wires to the same swap it uses for a local reload. Only after the apply
//! succeeded and the snapshot is written as last-known-good does the client ACK; an invalid
//! snapshot is NACKed with every error and the policy in force stays.
//!
//! - [`snapshot`]: conversion, compilation, the last-known-good file ([`load_last_known_good`]
//!   is what the runtime calls at start, before the controller answers).
//! - [`client`]: the connection loop (backoff with jitter), the stream, and the bounded upload of
//!   decision records ([`RecordSender`]).

pub mod client;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;

use policy_engine::{CompiledPolicy, Policy};

pub use client::{spawn, ControlHandle, ControlStats, RecordSender};
pub use snapshot::{load_last_known_good, store_last_known_good, ValidSnapshot};

/// A validated, compiled policy from the controller, ready to be swapped in.
#[derive(Debug)]
pub struct PolicyUpdate {
    /// The controller's version (also the compiled policy's version).
    pub version: u64,
    /// The controller's digest of the content.
    pub digest: String,
    /// The policy model (for explain, blast-radius, re-evaluation of flows).
    pub policy: Arc<Policy>,
    /// The compiled tables.
    pub compiled: CompiledPolicy,
}

/// Swaps a controller policy in. Called from the client's task, never from the packet path; it
/// should be quick (an `ArcSwap` store and a note to re-evaluate flows). An error is reported to
/// the controller in a NACK and the client does not persist the snapshot.
pub trait ApplyPolicy: Send + Sync + 'static {
    /// Makes `update` the policy in force.
    fn apply(&self, update: PolicyUpdate) -> Result<(), String>;
}

impl<F> ApplyPolicy for F
where
    F: Fn(PolicyUpdate) -> Result<(), String> + Send + Sync + 'static,
{
    fn apply(&self, update: PolicyUpdate) -> Result<(), String> {
        self(update)
    }
}

/// PEM contents for the client's mutual TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The CA that signed the controller's certificate.
    pub ca: Vec<u8>,
    /// This gateway's certificate (with `spiffe://bulkhead/gateway/<id>`).
    pub cert: Vec<u8>,
    /// Its key.
    pub key: Vec<u8>,
}

/// How to reach the controller, from gateway.toml's `[controller]` and `[gateway] id`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host:port`.
    pub endpoint: String,
    /// This gateway's id; must match its certificate.
    pub gateway_id: String,
    /// This gateway's build, for the fleet view.
    pub build_version: String,
    /// The TLS material.
    pub tls: ClientTls,
    /// Where the last-known-good snapshot is kept.
    pub state_dir: PathBuf,
    /// The version enforced at start (from the last-known-good), 0 when none.
    pub enforced_version: u64,
    /// The digest of that version, so the same snapshot is acknowledged without a new swap.
    pub enforced_digest: String,
}
