//! Any bytes as the start of a client stream: the ClientHello parser must not panic, a name it
//! reports must be a valid normalised host name, and the answer must not depend on how the
//! handshake message is cut into TLS records.
#![no_main]

use bulkhead_gateway::inspect::tls::{parse_client_hello, TlsParse};
use bulkhead_gateway::inspect::validate_host_name;
use libfuzzer_sys::fuzz_target;

/// The handshake bytes of a stream of handshake records, if it is one.
fn defragment(mut s: &[u8]) -> Option<Vec<u8>> {
    let mut msg = Vec::new();
    while !s.is_empty() {
        if s.len() < 5 || s[0] != 22 {
            return None;
        }
        let n = usize::from(u16::from_be_bytes([s[3], s[4]]));
        msg.extend_from_slice(s.get(5..5 + n)?);
        s = &s[5 + n..];
    }
    Some(msg)
}

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
    let Some(msg) = defragment(&data[..info.consumed]) else {
        return;
    };
    let msg = &msg[..info.hello_len.min(msg.len())];
    for size in [1usize, 2, 7] {
        let mut s = Vec::with_capacity(msg.len() * 6);
        for chunk in msg.chunks(size) {
            s.extend_from_slice(&[22, 3, 1, 0, chunk.len() as u8]);
            s.extend_from_slice(chunk);
        }
        match parse_client_hello(&s) {
            TlsParse::Complete(other) => {
                assert_eq!(other.sni, info.sni);
                assert_eq!(other.ech, info.ech);
            }
            other => panic!("re-cut into {size}-byte records: {other:?}"),
        }
    }
});
