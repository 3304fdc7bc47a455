//! The hot-path parsers never allocate: a counting global allocator (counting per thread, so the
//! test harness's own threads do not interfere) watches the TLS, HTTP and packet parsers on real
//! and synthetic inputs.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bulkhead_gateway::inspect::http::{parse_request_head, HttpParse};
use bulkhead_gateway::inspect::tls::{parse_client_hello, TlsParse};
use bulkhead_gateway::wire;
use bulkhead_testkit::{client_hello, recut_records, tcp_packet, testdata_payload, tls_hellos};

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

#[test]
fn counter_sees_allocations() {
    // The check below could not fail if the allocator did not count.
    let (n, v) = allocations_during(|| vec![1u8; 100]);
    assert!(n >= 1);
    drop(v);
}

#[test]
fn tls_http_and_packet_parsers_do_not_allocate() {
    // The real hellos of testdata/ (and of the extra corpus when present), and a synthetic one
    // with an upper-case name (the parser copies it to lower case inline), also cut into 1-byte
    // records.
    let mut hellos: Vec<Vec<u8>> = tls_hellos(&["client__"])
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    assert!(
        hellos.len() >= 7,
        "the real hellos of testdata/ are missing"
    );
    let upper = client_hello(Some("Upper.Example.COM"), 0);
    hellos.push(recut_records(&upper, 1));
    hellos.push(upper);

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

    // A TCP/IPv4 packet carrying Chromium's hello (over the 1500-byte MTU; the parser does not
    // care).
    let payload = testdata_payload("client__chromium.bin");
    let pkt = tcp_packet(
        "10.0.0.1:40000".parse().unwrap(),
        "10.0.0.2:443".parse().unwrap(),
        1,
        1,
        bulkhead_testkit::ACK | bulkhead_testkit::PSH,
        &payload,
    );
    let (n, p) = allocations_during(|| {
        let p = wire::parse(&pkt).expect("parses");
        (p.ports(), p.verify_transport_checksum(), p.payload().len())
    });
    assert_eq!(p.0, Some((40000, 443)));
    assert_eq!(p.1, wire::ChecksumStatus::Valid);
    assert_eq!(n, 0, "wire::parse allocated");
}
