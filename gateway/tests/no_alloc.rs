//! The hot-path parsers never allocate: a counting global allocator (counting per thread, so the
//! test harness's own threads do not interfere) watches the TLS, HTTP and packet parsers on real
//! and synthetic inputs.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use bulkhead_gateway::inspect::http::{parse_request_head, HttpParse};
use bulkhead_gateway::inspect::tls::{parse_client_hello, TlsParse};
use bulkhead_gateway::wire;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is a
// thread-local counter with a const initialiser, which neither allocates nor can fail.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

fn corpus() -> Option<PathBuf> {
    let dir = match std::env::var_os("BULKHEAD_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    };
    if dir.join("payloads").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "\n*** conformance corpus not found at {}: real hellos skipped ***\n",
            dir.display()
        );
        None
    }
}

#[test]
fn counter_sees_allocations() {
    // The check below could not fail if the allocator did not count.
    let (n, v) = allocations_during(|| vec![1u8; 100]);
    assert!(n >= 1);
    drop(v);
}

#[test]
fn tls_http_and_packet_parsers_do_not_allocate() {
    let mut hellos: Vec<Vec<u8>> = Vec::new();
    if let Some(dir) = corpus() {
        for f in [
            "client__chromium.bin",
            "client__curl.bin",
            "client__openssl.bin",
        ] {
            hellos.push(std::fs::read(dir.join("payloads").join(f)).expect(f));
        }
    }
    // A synthetic hello with an upper-case name (inline copy), cut into 1-byte records too.
    let name = b"Upper.Example.COM";
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    let sni_len = name.len() + 5;
    body.extend_from_slice(&((sni_len + 4) as u16).to_be_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&(sni_len as u16).to_be_bytes());
    body.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    body.push(0);
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    let mut msg = vec![1, 0];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&body);
    let mut one = vec![22, 3, 1];
    one.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    one.extend_from_slice(&msg);
    let mut bytewise = Vec::new();
    for b in &msg {
        bytewise.extend_from_slice(&[22, 3, 1, 0, 1, *b]);
    }
    hellos.push(one);
    hellos.push(bytewise);

    for h in &hellos {
        let (n, r) = allocations_during(|| parse_client_hello(h));
        assert!(
            matches!(r, TlsParse::Complete(ref i) if i.sni.is_some()),
            "{r:?}"
        );
        assert_eq!(n, 0, "parse_client_hello allocated");
        let (n, _) = allocations_during(|| {
            for cut in (0..h.len()).step_by(13) {
                std::hint::black_box(parse_client_hello(&h[..cut]));
            }
        });
        assert_eq!(n, 0, "parse_client_hello allocated on a prefix");
    }

    let req = b"GET / HTTP/1.1\r\nHost: WWW.Example.org:8080\r\nAccept: */*\r\n\r\n";
    let (n, r) = allocations_during(|| parse_request_head(req));
    assert!(matches!(r, HttpParse::Complete(ref i) if i.host.is_some()));
    assert_eq!(n, 0, "parse_request_head allocated");

    // A TCP/IPv4 packet carrying the first hello.
    let payload = &hellos[0];
    let mut pkt = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let total = (40 + payload.len()) as u16;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    pkt.extend_from_slice(&[
        0x9c, 0x40, 1, 0xbb, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff,
    ]);
    pkt.extend_from_slice(&[0, 0, 0, 0]);
    pkt.extend_from_slice(payload);
    let (n, p) = allocations_during(|| {
        let p = wire::parse(&pkt).expect("parses");
        (p.ports(), p.verify_transport_checksum(), p.payload().len())
    });
    assert_eq!(p.0, Some((40000, 443)));
    assert_eq!(n, 0, "wire::parse allocated");
}
