//! SNI extraction from real ClientHellos in one buffer: Bulkhead's parser against tls-parser
//! (the usual way to get the name with it: parse the record, then the extensions) on the same
//! input, in the same run. The hellos are the project's own recordings (`testdata/payloads`).

use std::hint::black_box;

use bulkhead_gateway::inspect::tls::{parse_client_hello, TlsParse};
use bulkhead_testkit::{recut_records, testdata_payload};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_plaintext, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};

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

fn sni(c: &mut Criterion) {
    let mut group = c.benchmark_group("sni");
    for (label, file, want) in [
        ("chromium", "client__chromium.bin", "api.anthropic.com"),
        ("curl", "client__curl.bin", "api.openai.com"),
        ("rustls-pq", "client__rustls_pq.bin", "api.mistral.ai"),
    ] {
        let hello = testdata_payload(file);
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
            let fragmented = recut_records(&hello, 256);
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
