//! Test helpers shared by the gateway's tests, the benches and the fuzz targets, written once:
//!
//! - [`packet`]: IPv4/IPv6 TCP and UDP packets with correct checksums, [`Conn`] (a TCP
//!   connection's SYN, SYN-ACK, data and FIN), RSTs and the client stream read back through
//!   etherparse;
//! - [`tls`]: ClientHello builders and TLS record framing (re-cutting real hellos);
//! - [`corpus`]: the recorded traffic: the project's own `testdata/` always, plus the extra
//!   conformance corpus (`$BULKHEAD_CORPUS` or `../shared/corpus`) when present;
//! - [`synthetic`]: a deterministic policy at scale and random queries against it;
//! - [`harness`]: the pipeline in memory with a fake clock, and shared test policies.
//!
//! # The dev-dependency cycle
//!
//! This crate depends on `bulkhead-gateway` (for [`harness`]), and the gateway dev-depends on this
//! crate. Cargo allows that cycle, but the gateway's own unit tests (`#[cfg(test)]` code inside
//! `gateway/src`) are compiled as a second copy of the gateway crate, while this crate links the
//! ordinary one: gateway types seen through this crate are *different types* there. So
//! [`packet`], [`tls`] and [`corpus`] never name a gateway type and are safe in unit tests (they
//! deal in bytes, addresses and paths); [`harness`] is for integration tests, benches and fuzz
//! targets only. [`synthetic`] names only `policy-engine` types, which both copies share.
//!
//! Helpers assert and panic freely: they run only in tests, where a panic is a failed test.

pub mod corpus;
pub mod harness;
pub mod packet;
pub mod synthetic;
pub mod tls;

pub use corpus::{
    captures, corpus_dirs, expected_names, extra_corpus, payloads, testdata_capture, testdata_dir,
    testdata_payload, tls_hellos, ManifestRow,
};
pub use harness::{handshake, policy, tick, Harness, POLICY_OPENAI, POLICY_PERMIT_ALL};
pub use packet::{
    as_rst, client_stream, corrupt_checksum, ip_packet, rsts, tcp_packet, udp_packet, Conn, Rst,
    ACK, FIN, PSH, RST, SYN,
};
pub use tls::{
    client_hello, handshake_bytes, handshake_message, recut_records, tls_records,
    tls_records_sized, MAX_RECORD_LEN,
};
