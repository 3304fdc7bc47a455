//! The cost of reading the server name of a QUIC connection, per new flow: Initial keys derived
//! from the DCID, header protection removed, the payload decrypted, CRYPTO frames reassembled
//! and the ClientHello parsed. Measured for one Initial and for a post-quantum ClientHello
//! spread over two Initials with shuffled CRYPTO frames, beside the TLS-over-TCP figure for a
//! post-quantum hello in one buffer (the `sni` bench's `bulkhead/chromium`). Inputs come from
//! the conformance corpus (`$BULKHEAD_CORPUS`, default `../shared/corpus` from the workspace
//! root); without it the bench says so and measures nothing.

use std::hint::black_box;
use std::path::PathBuf;

use bulkhead_gateway::inspect::quic::keys::InitialKeys;
use bulkhead_gateway::inspect::quic::{InitialCollector, QuicParse, Version};
use bulkhead_gateway::inspect::tls::{parse_client_hello, TlsParse};
use criterion::{criterion_group, criterion_main, Criterion};

fn corpus_payloads() -> Option<PathBuf> {
    let dir = match std::env::var_os("BULKHEAD_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    };
    let dir = dir.join("payloads");
    dir.is_dir().then_some(dir)
}

/// The length of the name a new flow's datagrams give, or 0.
fn quic_sni(datagrams: &[&[u8]]) -> usize {
    let mut c = InitialCollector::new();
    for d in datagrams {
        if let QuicParse::Complete(info) = c.push(d) {
            return info.sni.map_or(0, |n| n.len());
        }
    }
    0
}

fn tcp_sni(stream: &[u8]) -> usize {
    match parse_client_hello(stream) {
        TlsParse::Complete(info) => info.sni.map_or(0, |n| n.len()),
        _ => 0,
    }
}

fn quic(c: &mut Criterion) {
    let Some(dir) = corpus_payloads() else {
        eprintln!("*** quic bench skipped: conformance corpus not found (set BULKHEAD_CORPUS) ***");
        return;
    };
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    let (Some(one), Some(pq1), Some(pq2), Some(tcp)) = (
        read("zapret__quic_initial_www_google_com.bin"),
        read("zapret__quic_initial_rutracker_org_kyber_1.bin"),
        read("zapret__quic_initial_rutracker_org_kyber_2.bin"),
        read("client__chromium.bin"),
    ) else {
        eprintln!("*** quic bench skipped: corpus payloads missing ***");
        return;
    };
    // Every input must give its name before it is timed.
    assert_eq!(quic_sni(&[&one]), "www.google.com".len());
    assert_eq!(quic_sni(&[&pq1, &pq2]), "rutracker.org".len());
    assert_eq!(tcp_sni(&tcp), "api.anthropic.com".len());

    let mut group = c.benchmark_group("quic");
    group.bench_function("one-initial", |b| b.iter(|| quic_sni(black_box(&[&one]))));
    group.bench_function("two-initials-pq-shuffled", |b| {
        b.iter(|| quic_sni(black_box(&[&pq1, &pq2])))
    });
    // The share of key derivation in the above (HKDF, AES key schedules).
    let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
    group.bench_function("initial-keys", |b| {
        b.iter(|| InitialKeys::client(Version::V1, black_box(&dcid)).is_some())
    });
    group.bench_function("tls-over-tcp-chromium-pq", |b| {
        b.iter(|| tcp_sni(black_box(&tcp)))
    });
    group.finish();
}

criterion_group!(benches, quic);
criterion_main!(benches);
