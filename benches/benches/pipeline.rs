//! The inspection pipeline's costs:
//!
//! - `flow_lookup`: parse a packet and find its flow in a table of 10 000 flows (the floor every
//!   packet pays);
//! - `established_packet`: `Pipeline::process` on a packet of an established, allowed flow in a
//!   pipeline holding 10 000 flows: the same work plus state tracking, counters and the verdict;
//! - `syn_to_verdict`: a whole new flow, SYN to release: SYN, SYN-ACK, ACK, then Chromium's
//!   ClientHello (1.8 KB, post-quantum key share) in two segments at MSS 1460, held, reassembled,
//!   parsed, evaluated and released.
//!
//! The ClientHello is the project's own recording, `testdata/payloads/client__chromium.bin`.

/// The allocator of the `bulkhead` binary, so the tables are laid out on the pages the daemon
/// gives them (large allocations on transparent huge pages; see `bulkhead_gateway::sys::alloc`).
#[global_allocator]
static GLOBAL: bulkhead_gateway::sys::alloc::HugePageAlloc =
    bulkhead_gateway::sys::alloc::HugePageAlloc;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_gateway::pipeline::flow::{FlowKey, FlowTable};
use bulkhead_gateway::pipeline::{Disposition, Output, PacketMeta, Pipeline, PipelineConfig};
use bulkhead_gateway::wire::{self, L4};
use bulkhead_testkit::{tcp_packet as tcp, testdata_payload, ACK, PSH, SYN};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const FLOWS: u32 = 10_000;

const POLICY: &str = r#"
[policy]
default_action = "deny"

[webgroups.ai]
domains = ["api.anthropic.com", "api.openai.com"]

[[rules]]
name = "ai"
priority = 1
src = ["any"]
dst = ["ai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;

fn store() -> Arc<policy_engine::PolicyStore> {
    let loaded = policy_engine::load_policy_str(POLICY, std::path::Path::new("bench.toml"))
        .expect("bench policy");
    Arc::new(policy_engine::PolicyStore::new(policy_engine::compile(
        &loaded.policy,
        1,
    )))
}

fn hello() -> Vec<u8> {
    let hello = testdata_payload("client__chromium.bin");
    assert!(hello.len() > 1460, "the hello must need two segments");
    hello
}

const PSH_ACK: u8 = PSH | ACK;

fn client(i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000 | (i >> 14));
    SocketAddr::new(IpAddr::V4(ip), 1024 + (i & 0x3fff) as u16)
}

fn server() -> SocketAddr {
    "192.0.2.10:443".parse().unwrap()
}

/// The packets of one connection up to the release of its hello.
fn opening(i: u32, hello: &[u8]) -> [Vec<u8>; 5] {
    let (c, s) = (client(i), server());
    let (ci, si) = (1000u32, 5000u32);
    [
        tcp(c, s, ci, 0, SYN, &[]),
        tcp(s, c, si, ci + 1, SYN | ACK, &[]),
        tcp(c, s, ci + 1, si + 1, ACK, &[]),
        tcp(c, s, ci + 1, si + 1, PSH_ACK, &hello[..1460]),
        tcp(c, s, ci + 1 + 1460, si + 1, PSH_ACK, &hello[1460..]),
    ]
}

fn benches(c: &mut Criterion) {
    let hello = hello();
    let t0 = Instant::now();

    // A pipeline with FLOWS established, allowed flows whose inspected bytes were acknowledged.
    let mut pipe = Pipeline::new(PipelineConfig::default(), store());
    let mut out = Output::default();
    for i in 0..FLOWS {
        for p in opening(i, &hello) {
            pipe.process(t0, &p, PacketMeta::default(), &mut out);
        }
        // The client's first application-data record ends the watch for a second hello; the
        // server's acknowledgment past it frees the inspected bytes.
        let end = 1001 + hello.len() as u32;
        let app = tcp(
            client(i),
            server(),
            end,
            5001,
            PSH_ACK,
            &[0x17, 3, 3, 0, 1, 0],
        );
        pipe.process(t0, &app, PacketMeta::default(), &mut out);
        let ack = tcp(server(), client(i), 5001, end + 6, ACK, &[]);
        pipe.process(t0, &ack, PacketMeta::default(), &mut out);
        out.clear();
    }
    assert_eq!(pipe.active_flows(), FLOWS as usize);
    assert_eq!(pipe.stats().held_bytes_now, 0, "guards released");
    let probe = tcp(
        client(FLOWS / 2),
        server(),
        1007 + hello.len() as u32,
        5001,
        PSH_ACK,
        &[0x17; 1400],
    );
    assert_eq!(
        pipe.process(t0, &probe, PacketMeta::default(), &mut out),
        Disposition::Forward
    );

    // The same keys in a bare table.
    let mut table = FlowTable::new(262_144);
    for i in 0..FLOWS {
        let (k, _) = FlowKey::new(6, client(i).ip(), client(i).port(), server().ip(), 443);
        table.insert(k, u64::from(i)).expect("room");
    }

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("flow_lookup", |b| {
        b.iter(|| {
            let p = wire::parse(black_box(&probe)).expect("valid");
            let L4::Tcp(t) = p.l4 else { unreachable!() };
            let (k, side) = FlowKey::new(6, p.src, t.src_port, p.dst, t.dst_port);
            black_box((table.lookup(&k), side))
        })
    });
    g.bench_function("established_packet", |b| {
        b.iter(|| {
            let d = pipe.process(t0, black_box(&probe), PacketMeta::default(), &mut out);
            black_box(d)
        })
    });
    g.bench_function("syn_to_verdict_chromium_2_segments", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                // A fresh pipeline per chunk keeps the table below its capacity; building the
                // packets and the pipeline is not timed.
                let chunk = (iters - done).min(20_000);
                let conns: Vec<[Vec<u8>; 5]> =
                    (0..chunk as u32).map(|i| opening(i, &hello)).collect();
                let mut pipe = Pipeline::new(PipelineConfig::default(), store());
                let mut out = Output::default();
                let start = Instant::now();
                for conn in &conns {
                    for p in conn {
                        black_box(pipe.process(t0, p, PacketMeta::default(), &mut out));
                    }
                    out.clear();
                }
                total += start.elapsed();
                assert_eq!(pipe.stats().released, 2 * chunk, "every hello released");
                done += chunk;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
