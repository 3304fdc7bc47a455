//! Any bytes as the start of a client stream: the ClientHello parser must not panic, a name it
//! reports must be a valid normalised host name, and the answer must not depend on how the
//! handshake message is cut into TLS records.
#![no_main]

use bulkhead_gateway::inspect::tls::{parse_client_hello, TlsParse};
use bulkhead_gateway::inspect::validate_host_name;
use bulkhead_testkit::{handshake_message, tls_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = parse_client_hello(data);
    let TlsParse::Complete(info) = first else {
        return;
    };
    if let Some(name) = info.sni {
        let again = validate_host_name(name.as_bytes()).expect("reported names are valid");
        assert_eq!(again.as_str(), name.as_str(), "reported names are normalised");
    }
    // Re-cut the records that made the hello into 1-, 2- and 7-byte records.
    let Some(msg) = handshake_message(&data[..info.consumed]) else {
        return;
    };
    let msg = &msg[..info.hello_len.min(msg.len())];
    for size in [1usize, 2, 7] {
        let s = tls_records(msg, size);
        match parse_client_hello(&s) {
            TlsParse::Complete(other) => {
                assert_eq!(other.sni, info.sni);
                assert_eq!(other.ech, info.ech);
            }
            other => panic!("re-cut into {size}-byte records: {other:?}"),
        }
    }
});
