//! SNI extraction from real ClientHellos in one buffer: Bulkhead's parser against tls-parser
//! (the usual way to get the name with it: parse the record, then the extensions) on the same
//! input, in the same run. The hellos are read from the conformance corpus
//! (`$BULKHEAD_CORPUS`, default `../shared/corpus` from the workspace root); without it the
//! bench says so and measures nothing.

use std::hint::black_box;
use std::path::PathBuf;

use bulkhead_gateway::inspect::tls::{parse_client_hello, TlsParse};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_plaintext, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};

fn corpus_payloads() -> Option<PathBuf> {
    let dir = match std::env::var_os("BULKHEAD_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    };
    let dir = dir.join("payloads");
    dir.is_dir().then_some(dir)
}

fn bulkhead_sni(stream: &[u8]) -> usize {
    match parse_client_hello(stream) {
        TlsParse::Complete(info) => info.sni.map_or(0, |n| n.len()),
        _ => 0,
    }
}

fn tls_parser_sni(stream: &[u8]) -> usize {
    let Ok((_, record)) = parse_tls_plaintext(stream) else {
        return 0;
    };
    for msg in &record.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = msg {
            let Some(ext) = ch.ext else { return 0 };
            let Ok((_, exts)) = parse_tls_client_hello_extensions(ext) else {
                return 0;
            };
            for e in &exts {
                if let TlsExtension::SNI(list) = e {
                    if let Some((_, name)) = list.iter().find(|(t, _)| *t == SNIType::HostName) {
                        return name.len();
                    }
                }
            }
        }
    }
    0
}

/// The hello re-cut into TLS records of `size` bytes (the multi-record path).
fn recut(stream: &[u8], size: usize) -> Vec<u8> {
    let len = usize::from(u16::from_be_bytes([stream[3], stream[4]]));
    let msg = &stream[5..5 + len];
    let mut out = Vec::new();
    for chunk in msg.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn sni(c: &mut Criterion) {
    let Some(dir) = corpus_payloads() else {
        eprintln!("*** sni bench skipped: conformance corpus not found (set BULKHEAD_CORPUS) ***");
        return;
    };
    let mut group = c.benchmark_group("sni");
    for (label, file, want) in [
        ("chromium", "client__chromium.bin", "api.anthropic.com"),
        ("curl", "client__curl.bin", "api.openai.com"),
    ] {
        let Ok(hello) = std::fs::read(dir.join(file)) else {
            eprintln!("*** sni bench: {file} missing, skipped ***");
            continue;
        };
        // Both parsers must find the name before they are timed.
        assert_eq!(bulkhead_sni(&hello), want.len(), "{file}");
        assert_eq!(tls_parser_sni(&hello), want.len(), "{file}");
        group.throughput(Throughput::Bytes(hello.len() as u64));
        group.bench_function(format!("bulkhead/{label}"), |b| {
            b.iter(|| bulkhead_sni(black_box(&hello)))
        });
        group.bench_function(format!("tls-parser/{label}"), |b| {
            b.iter(|| tls_parser_sni(black_box(&hello)))
        });
        if label == "chromium" {
            let fragmented = recut(&hello, 256);
            assert_eq!(bulkhead_sni(&fragmented), want.len());
            group.bench_function("bulkhead/chromium-256-byte-records", |b| {
                b.iter(|| bulkhead_sni(black_box(&fragmented)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, sni);
criterion_main!(benches);
