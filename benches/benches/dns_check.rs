//! What the DNS check of names (`sni_dns_check`) adds to a new flow:
//!
//! - `new_flow/off`: the existing new-flow cost, SYN to release (SYN, SYN-ACK, ACK, Chromium's
//!   1.8 KB ClientHello in two segments), with the check off: the baseline, measured in the same
//!   run;
//! - `new_flow/enforce_cached`: the same flow under `enforce`, the name already in the shared
//!   cache with this address (the common case: the target is the baseline plus at most 1 us);
//! - `new_flow/off_synthetic` and `new_flow/enforce_miss_local_resolver`: a first connection to
//!   a name (a new name each time), SYN to release, under `off` and under `enforce` with the
//!   lookup done for real: the runtime's resolver thread (`hickory-resolver`) asks a DNS server
//!   on the loopback (the lab's), stores the answer and hands it back, and the pipeline releases
//!   the held hello. The difference is the added latency of a cache miss with a local resolver.

#[global_allocator]
static GLOBAL: bulkhead_gateway::sys::alloc::HugePageAlloc =
    bulkhead_gateway::sys::alloc::HugePageAlloc;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_gateway::dns::resolver::{DnsService, ResolverSettings, ResolverStats};
use bulkhead_gateway::dns::{CacheConfig, DnsCache};
use bulkhead_gateway::pipeline::{Output, PacketMeta, Pipeline, PipelineConfig};
use bulkhead_lab::dns::DnsServer;
use bulkhead_testkit::{client_hello, tcp_packet as tcp, testdata_payload, ACK, PSH, SYN};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const PSH_ACK: u8 = PSH | ACK;

fn policy(check: &str) -> String {
    format!(
        r#"
[policy]
default_action = "deny"
sni_dns_check = "{check}"

[webgroups.ai]
domains = ["api.anthropic.com", "api.openai.com", "*.bench.example.com"]

[[rules]]
name = "ai"
priority = 1
src = ["any"]
dst = ["ai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#
    )
}

fn store(check: &str) -> Arc<policy_engine::PolicyStore> {
    let text = policy(check);
    let loaded = policy_engine::load_policy_str(&text, std::path::Path::new("bench.toml"))
        .expect("bench policy");
    Arc::new(policy_engine::PolicyStore::new(policy_engine::compile(
        &loaded.policy,
        1,
    )))
}

fn client(i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000 | (i >> 14));
    SocketAddr::new(IpAddr::V4(ip), 1024 + (i & 0x3fff) as u16)
}

fn server() -> SocketAddr {
    "192.0.2.10:443".parse().unwrap()
}

/// The packets of one connection up to the release of its hello (cut at MSS 1460).
fn opening(i: u32, hello: &[u8]) -> Vec<Vec<u8>> {
    let (c, s) = (client(i), server());
    let (ci, si) = (1000u32, 5000u32);
    let mut v = vec![
        tcp(c, s, ci, 0, SYN, &[]),
        tcp(s, c, si, ci + 1, SYN | ACK, &[]),
        tcp(c, s, ci + 1, si + 1, ACK, &[]),
    ];
    let mut off = 0;
    for chunk in hello.chunks(1460) {
        v.push(tcp(c, s, ci + 1 + off, si + 1, PSH_ACK, chunk));
        off += chunk.len() as u32;
    }
    v
}

/// The name in Chromium's recorded hello, read by the pipeline itself.
fn chromium_name(hello: &[u8]) -> String {
    let config = PipelineConfig {
        log_all: true,
        ..PipelineConfig::default()
    };
    let mut pipe = Pipeline::new(config, store("off"));
    let mut out = Output::default();
    for p in opening(0, hello) {
        pipe.process(Instant::now(), &p, PacketMeta::default(), &mut out);
    }
    out.records
        .iter()
        .find_map(|r| r.name().map(str::to_owned))
        .expect("the hello names a host")
}

/// SYN to release of `chunk` flows in a fresh pipeline; the time of the `process` calls only.
fn new_flows(config: &PipelineConfig, check: &str, hellos: &[Vec<u8>], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    let t0 = Instant::now();
    while done < iters {
        let chunk = (iters - done).min(20_000);
        let conns: Vec<Vec<Vec<u8>>> = (0..chunk as u32)
            .map(|i| opening(i, &hellos[i as usize % hellos.len()]))
            .collect();
        let mut pipe = Pipeline::new(config.clone(), store(check));
        let mut out = Output::default();
        let start = Instant::now();
        for conn in &conns {
            for p in conn {
                black_box(pipe.process(t0, p, PacketMeta::default(), &mut out));
            }
            out.clear();
        }
        total += start.elapsed();
        assert_eq!(pipe.stats().decisions_permit, chunk, "every flow permitted");
        done += chunk;
    }
    total
}

fn benches(c: &mut Criterion) {
    let chromium = testdata_payload("client__chromium.bin");
    let name = chromium_name(&chromium);
    let now = Instant::now();
    let cache = Arc::new(DnsCache::new(CacheConfig {
        max_ttl: Duration::from_secs(3600),
        ..CacheConfig::default()
    }));
    cache.insert(&name, &[(server().ip(), 3600)], now);
    let cached = PipelineConfig {
        dns: bulkhead_gateway::pipeline::DnsCheckConfig {
            cache: Some(cache.clone()),
            ..Default::default()
        },
        ..PipelineConfig::default()
    };

    let mut g = c.benchmark_group("new_flow");
    g.throughput(Throughput::Elements(1));
    let plain = PipelineConfig::default();
    let one = [chromium.clone()];
    g.bench_function("off", |b| {
        b.iter_custom(|iters| new_flows(&plain, "off", &one, iters))
    });
    g.bench_function("enforce_cached", |b| {
        b.iter_custom(|iters| new_flows(&cached, "enforce", &one, iters))
    });
    g.finish();
    if miss(c).is_none() {
        eprintln!("new_flow/enforce_miss_local_resolver skipped: no DNS server on the loopback");
    }
}

/// The cache-miss benches: a real lookup through the resolver thread to the lab's DNS server on
/// a fixed loopback port.
fn miss(c: &mut Criterion) -> Option<()> {
    let addr: SocketAddr = "127.0.0.1:53531".parse().ok()?;
    let dns = DnsServer::start_here(addr).ok()?;
    let cache = Arc::new(DnsCache::new(CacheConfig::default()));
    let stats = Arc::new(ResolverStats::default());
    let settings = ResolverSettings {
        servers: vec![addr],
        timeout: Duration::from_secs(1),
        attempts: 1,
        ..ResolverSettings::default()
    };
    let (service, inboxes) = DnsService::start(settings, cache.clone(), stats, 1).ok()?;
    let inbox = inboxes.into_iter().next()?;
    let resolver = service.client();
    let config = PipelineConfig {
        dns: bulkhead_gateway::pipeline::DnsCheckConfig {
            cache: Some(cache),
            ..Default::default()
        },
        ..PipelineConfig::default()
    };
    let mut serial = 0u32;
    let mut g = c.benchmark_group("new_flow");
    g.throughput(Throughput::Elements(1));
    g.bench_function("off_synthetic", |b| {
        b.iter_custom(|iters| {
            let hellos: Vec<Vec<u8>> = (0..64)
                .map(|i| client_hello(Some(&format!("n{i}.bench.example.com")), 1500))
                .collect();
            new_flows(&PipelineConfig::default(), "off", &hellos, iters)
        })
    });
    g.bench_function("enforce_miss_local_resolver", |b| {
        b.iter_custom(|iters| {
            let mut pipe = Pipeline::new(config.clone(), store("enforce"));
            let mut out = Output::default();
            let mut total = Duration::ZERO;
            for i in 0..iters {
                serial += 1;
                let name = format!("m{serial}.bench.example.com");
                dns.state().set(&name, &[server().ip()], 60);
                let hello = client_hello(Some(&name), 1500);
                let conn = opening((i % 60_000) as u32, &hello);
                let start = Instant::now();
                for p in &conn {
                    black_box(pipe.process(Instant::now(), p, PacketMeta::default(), &mut out));
                }
                let asked: Vec<Box<str>> = out.dns_queries.drain(..).collect();
                assert_eq!(asked.len(), 1, "a miss asks once");
                assert!(resolver.submit(&asked[0], 0));
                let answer = loop {
                    if let Some(a) = inbox.try_recv() {
                        break a;
                    }
                    std::thread::yield_now();
                };
                pipe.dns_answer(Instant::now(), &answer.0, answer.1, &mut out);
                total += start.elapsed();
                assert!(!out.transmit.is_empty(), "the hello is released");
                out.clear();
                dns.state().remove(&name);
                if pipe.active_flows() > 50_000 {
                    pipe = Pipeline::new(config.clone(), store("enforce"));
                }
            }
            total
        })
    });
    g.finish();
    Some(())
}

criterion_group!(dns_check, benches);
criterion_main!(dns_check);
