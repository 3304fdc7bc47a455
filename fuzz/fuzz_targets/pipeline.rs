//! A sequence of packets through the whole pipeline, as the TUN runtime would feed them.
//!
//! Input: repeated `(u8 step, u16 big-endian length, packet)`; the low 7 bits of `step` advance
//! the clock in milliseconds, the high bit marks the packet's checksum as unverified (as `replay`
//! does for captures). Bounds are small so that flow-table, held-byte and timeout limits are hit.
//!
//! Invariants: no panic; every packet the pipeline writes is either one it was given (a released
//! held packet, possibly without bytes past its IP length) or one it built, which must parse with a valid checksum; the flow table and the
//! held bytes stay within their bounds; shutting down leaves nothing held.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bulkhead_gateway::pipeline::{Output, PacketMeta, Pipeline, PipelineConfig};
use bulkhead_gateway::wire::{self, ChecksumStatus};
use libfuzzer_sys::fuzz_target;
use policy_engine::PolicyStore;

const POLICY: &str = r#"
[policy]
default_action = "deny"

[webgroups.ai]
domains = ["api.anthropic.com", "*.openai.com", "www.google.com"]

[addressgroups.blocked]
cidrs = ["203.0.113.0/24", "2001:db8:bad::/48"]

[[rules]]
name = "reject-blocked"
priority = 10
src = ["any"]
dst = ["blocked"]
action = "reject"

[[rules]]
name = "ai"
priority = 20
src = ["any"]
dst = ["ai"]
protocol = "tcp"
ports = ["443", "80"]
action = "permit"
log = true

[[rules]]
name = "mail"
priority = 25
src = ["any"]
dst = ["ai"]
protocol = "tcp"
ports = ["25", "587", "143", "110"]
action = "permit"

[[rules]]
name = "dns"
priority = 30
src = ["any"]
dst = ["any"]
protocol = "udp"
ports = ["53"]
action = "permit"
"#;

const CAPACITY: usize = 64;
const HELD_TOTAL: usize = 32 * 1024;

fn store() -> Arc<PolicyStore> {
    static STORE: OnceLock<Arc<PolicyStore>> = OnceLock::new();
    STORE
        .get_or_init(|| Arc::new(PolicyStore::new(bulkhead_testkit::policy(POLICY, 1))))
        .clone()
}

fn check_output(out: &mut Output, inputs: &HashSet<&[u8]>) {
    for t in &out.transmit {
        if inputs.contains(t.packet.as_slice()) {
            continue;
        }
        let p = wire::parse(&t.packet).expect("a packet the gateway built parses");
        assert_eq!(
            p.verify_transport_checksum(),
            ChecksumStatus::Valid,
            "a packet the gateway built has a bad checksum"
        );
    }
    out.clear();
}

fuzz_target!(|data: &[u8]| {
    let config = PipelineConfig {
        flow_capacity: CAPACITY,
        max_held_bytes_per_flow: 4096,
        max_held_bytes_total: HELD_TOTAL,
        inspect_timeout: Duration::from_millis(500),
        log_all: true,
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::new(config, store());
    let start = Instant::now();
    let mut now = start;
    let mut out = Output::default();
    let mut inputs: HashSet<&[u8]> = HashSet::new();
    let mut rest = data;
    while let [step, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(step & 0x7f));
        if pipeline.next_timeout().is_some_and(|t| t <= now) {
            pipeline.handle_timeout(now, &mut out);
            check_output(&mut out, &inputs);
        }
        let meta = if step & 0x80 != 0 {
            PacketMeta::unverified()
        } else {
            PacketMeta::default()
        };
        inputs.insert(packet);
        // Held packets are kept without link-layer padding: their released copy is the packet
        // up to its IP length.
        if let Ok(p) = wire::parse(packet) {
            inputs.insert(p.packet);
        }
        let _ = pipeline.process(now, packet, meta, &mut out);
        check_output(&mut out, &inputs);
        assert!(pipeline.active_flows() <= CAPACITY);
        assert!(pipeline.stats().held_bytes_now <= HELD_TOTAL);
    }
    // Let every timer fire, then end what is left.
    now += Duration::from_secs(3600);
    pipeline.handle_timeout(now, &mut out);
    check_output(&mut out, &inputs);
    pipeline.shutdown(now, &mut out);
    check_output(&mut out, &inputs);
    assert_eq!(pipeline.active_flows(), 0);
    assert_eq!(pipeline.stats().held_bytes_now, 0);
});
