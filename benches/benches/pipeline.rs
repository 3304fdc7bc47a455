//! The inspection pipeline's costs:
//!
//! - `flow_lookup`: parse a packet and find its flow in a table of 10 000 flows (the floor every
//!   packet pays);
//! - `established_packet`: `Pipeline::process` on a packet of an established, allowed flow in a
//!   pipeline holding 10 000 flows: the same work plus state tracking, counters and the verdict;
//! - `syn_to_verdict`: a whole new flow, SYN to release: SYN, SYN-ACK, ACK, then Chromium's
//!   1925-byte ClientHello in two segments at MSS 1460, held, reassembled, parsed, evaluated and
//!   released.
//!
//! The ClientHello comes from `../shared/corpus/payloads/client__chromium.bin` (or
//! `BULKHEAD_CORPUS`); without the corpus a synthetic hello of the same size is used, and the
//! bench says so.

/// The allocator of the `bulkhead` binary, so the tables are laid out on the pages the daemon
/// gives them (large allocations on transparent huge pages; see `bulkhead_gateway::sys::alloc`).
#[global_allocator]
static GLOBAL: bulkhead_gateway::sys::alloc::HugePageAlloc =
    bulkhead_gateway::sys::alloc::HugePageAlloc;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_gateway::pipeline::flow::{FlowKey, FlowTable};
use bulkhead_gateway::pipeline::{Disposition, Output, PacketMeta, Pipeline, PipelineConfig};
use bulkhead_gateway::wire::{self, pseudo_header_checksum, L4};
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
    let dir = std::env::var_os("BULKHEAD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"));
    match std::fs::read(dir.join("payloads/client__chromium.bin")) {
        Ok(b) => b,
        Err(_) => {
            eprintln!("!!! corpus absent: using a synthetic 1925-byte ClientHello");
            synthetic_hello("api.anthropic.com", 1925)
        }
    }
}

/// A ClientHello of `total` bytes naming `sni`, the name near the end as in Chromium's.
fn synthetic_hello(sni: &str, total: usize) -> Vec<u8> {
    let n = sni.as_bytes();
    let fixed = 5 + 4 + 2 + 32 + 1 + 4 + 2 + 2 + 4 + (n.len() + 5) + 4;
    let pad = total - fixed;
    let mut ext = Vec::new();
    ext.extend_from_slice(&[0, 0x15]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.extend(std::iter::repeat_n(0u8, pad));
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
    ext.extend_from_slice(n);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn tcp(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        unreachable!()
    };
    let mut p = Vec::with_capacity(40 + payload.len());
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    let total = (40 + payload.len()) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    let c = wire::internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    p.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    let len = (20 + payload.len()) as u32;
    let mut sum = pseudo_header_checksum(src.ip(), dst.ip(), 6, len).expect("same family");
    let c = sum.add_bytes(&p[20..]).finish();
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

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
