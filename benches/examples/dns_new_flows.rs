//! Runs N new flows (SYN to release, Chromium's two-segment hello) through one pipeline under
//! `sni_dns_check = "off"` or `"enforce"` with the name cached, for instruction counts under
//! `valgrind --tool=callgrind` (steady where wall-clock benches on a shared machine are not):
//! the difference between two runs of different N, divided by the difference in N, is the cost
//! of one flow with set-up cancelled out.
//!
//!   cargo build --release -p bulkhead-benches --example dns_new_flows
//!   valgrind --tool=callgrind target/release/examples/dns_new_flows off 2000

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_gateway::dns::{CacheConfig, DnsCache};
use bulkhead_gateway::pipeline::{DnsCheckConfig, Output, PacketMeta, Pipeline, PipelineConfig};
use bulkhead_testkit::{tcp_packet as tcp, testdata_payload, ACK, PSH, SYN};

fn main() {
    let mut args = std::env::args().skip(1);
    let check = args.next().unwrap_or_else(|| "off".into());
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let text = format!(
        "[policy]\ndefault_action = \"deny\"\nsni_dns_check = \"{check}\"\n\
         [webgroups.ai]\ndomains = [\"api.anthropic.com\", \"api.openai.com\"]\n\
         [[rules]]\nname = \"ai\"\npriority = 1\nsrc = [\"any\"]\ndst = [\"ai\"]\n\
         protocol = \"tcp\"\nports = [\"443\"]\naction = \"permit\"\n"
    );
    let loaded =
        policy_engine::load_policy_str(&text, std::path::Path::new("p.toml")).expect("policy");
    let store = Arc::new(policy_engine::PolicyStore::new(policy_engine::compile(
        &loaded.policy,
        1,
    )));
    let hello = testdata_payload("client__chromium.bin");
    let server: SocketAddr = "192.0.2.10:443".parse().expect("address");
    let now = Instant::now();
    let cache = Arc::new(DnsCache::new(CacheConfig {
        max_ttl: Duration::from_secs(3600),
        ..CacheConfig::default()
    }));
    for name in ["api.anthropic.com", "api.openai.com"] {
        cache.insert(name, &[(server.ip(), 3600)], now);
    }
    let config = PipelineConfig {
        dns: DnsCheckConfig {
            cache: Some(cache),
            ..DnsCheckConfig::default()
        },
        ..PipelineConfig::default()
    };
    let mut pipe = Pipeline::new(config, store);
    let mut out = Output::default();
    for i in 0..n {
        let c = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 14))),
            1024 + (i & 0x3fff) as u16,
        );
        let packets = [
            tcp(c, server, 1000, 0, SYN, &[]),
            tcp(server, c, 5000, 1001, SYN | ACK, &[]),
            tcp(c, server, 1001, 5001, ACK, &[]),
            tcp(c, server, 1001, 5001, PSH | ACK, &hello[..1460]),
            tcp(c, server, 2461, 5001, PSH | ACK, &hello[1460..]),
        ];
        for p in &packets {
            std::hint::black_box(pipe.process(now, p, PacketMeta::default(), &mut out));
        }
        out.clear();
    }
    assert_eq!(
        pipe.stats().released,
        2 * u64::from(n),
        "every hello released"
    );
    assert!(pipe.stats().dns_cache_misses == 0, "every name was cached");
    println!(
        "{check}: {n} flows, {} cache hits",
        pipe.stats().dns_cache_hits
    );
}
