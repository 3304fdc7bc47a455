//! The pipeline in memory with a fake clock, and policies the tests share.
//!
//! This module names gateway types, so only the gateway's integration tests, the benches and the
//! fuzz targets can use it; the gateway's own unit tests cannot (see the crate docs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_gateway::pipeline::{Disposition, Output, PacketMeta, Pipeline, PipelineConfig};
use bulkhead_gateway::record::DecisionRecord;
use policy_engine::{compile, load_policy_str, CompiledPolicy, PolicyStore};

use crate::packet::Conn;

/// Compiles a policy written in the policy language.
pub fn policy(text: &str, version: u64) -> CompiledPolicy {
    let loaded = load_policy_str(text, std::path::Path::new("test-policy.toml"))
        .unwrap_or_else(|e| panic!("test policy does not load:\n{e}"));
    compile(&loaded.policy, version)
}

/// Permits `api.openai.com` and `*.example.com` on TCP 443 and 80, rejects `reject.example.net`,
/// denies everything else. Every decision is logged.
pub const POLICY_OPENAI: &str = r#"
[policy]
default_action = "deny"

[webgroups.openai]
domains = ["api.openai.com", "api.anthropic.com", "*.example.com"]

[webgroups.rejected]
domains = ["reject.example.net"]

[[rules]]
name = "reject-some"
priority = 10
src = ["any"]
dst = ["rejected"]
protocol = "tcp"
action = "reject"

[[rules]]
name = "allow-openai"
priority = 100
src = ["any"]
dst = ["openai"]
protocol = "tcp"
ports = ["443", "80"]
action = "permit"
log = true
"#;

/// Permits everything, logging it: every flow's name shows in the records.
pub const POLICY_PERMIT_ALL: &str = r#"
[policy]
default_action = "deny"

[[rules]]
name = "everything"
priority = 1
src = ["any"]
dst = ["any"]
protocol = "any"
action = "permit"
log = true
"#;

/// The pipeline with a fake clock; collects what leaves the gateway, in order.
pub struct Harness {
    pub pipe: Pipeline,
    pub store: Arc<PolicyStore>,
    pub now: Instant,
    pub out: Output,
    /// Packets that left the gateway (forwarded, released, or built), in order.
    pub wire: Vec<Vec<u8>>,
    pub records: Vec<DecisionRecord>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("flows", &self.pipe.active_flows())
            .field("wire", &self.wire.len())
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A pipeline with the default configuration under `policy_text` (version 1).
    pub fn new(policy_text: &str) -> Harness {
        Harness::with_config(policy_text, PipelineConfig::default())
    }

    /// A pipeline with `config` under `policy_text` (version 1); the clock starts now.
    pub fn with_config(policy_text: &str, config: PipelineConfig) -> Harness {
        let store = Arc::new(PolicyStore::new(policy(policy_text, 1)));
        let mut pipe = Pipeline::new(config, store.clone());
        let now = Instant::now();
        pipe.set_clock_anchor(now, 1_700_000_000_000);
        Harness {
            pipe,
            store,
            now,
            out: Output::default(),
            wire: Vec::new(),
            records: Vec::new(),
        }
    }

    /// Feeds one packet (checksum to be verified) at the current fake time.
    pub fn send(&mut self, packet: &[u8]) -> Disposition {
        self.send_meta(packet, PacketMeta::default())
    }

    /// Feeds one packet with `meta` at the current fake time.
    pub fn send_meta(&mut self, packet: &[u8], meta: PacketMeta) -> Disposition {
        let d = self.pipe.process(self.now, packet, meta, &mut self.out);
        if d == Disposition::Forward {
            self.wire.push(packet.to_vec());
        }
        self.collect();
        d
    }

    fn collect(&mut self) {
        for t in self.out.transmit.drain(..) {
            self.wire.push(t.packet);
        }
        self.records.append(&mut self.out.records);
    }

    /// Moves the fake clock and runs the expiry.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.pipe.next_timeout().is_some_and(|t| t <= self.now) {
            self.pipe.handle_timeout(self.now, &mut self.out);
        }
        self.collect();
    }

    /// Re-evaluates the established flows (after a policy swap through `store`).
    pub fn reevaluate(&mut self) {
        self.pipe.reevaluate(self.now, &mut self.out);
        self.collect();
    }

    /// What left the gateway since the last call.
    pub fn take_wire(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.wire)
    }

    /// Decision records (not flow ends).
    pub fn decisions(&self) -> Vec<&DecisionRecord> {
        self.records.iter().filter(|r| !r.is_flow_end()).collect()
    }

    /// Names of the decision records, in order.
    pub fn names(&self) -> Vec<Option<String>> {
        self.decisions()
            .iter()
            .map(|r| r.name().map(str::to_owned))
            .collect()
    }
}

/// SYN, SYN-ACK, ACK; asserts all three were forwarded.
pub fn handshake(h: &mut Harness, c: &Conn) {
    assert_eq!(h.send(&c.syn()), Disposition::Forward, "SYN");
    assert_eq!(h.send(&c.synack()), Disposition::Forward, "SYN-ACK");
    assert_eq!(h.send(&c.ack()), Disposition::Forward, "ACK");
}

/// Advances the harness clock a little (so record times differ).
pub fn tick(h: &mut Harness) {
    h.advance(Duration::from_millis(1));
}
