//! Client datagrams of one QUIC flow: the Initial collector must not panic, a name it reports
//! must be a valid normalised host name, and CRYPTO data that arrives in another order must not
//! yield another name.
//!
//! Input: a mode byte, then `(u16 length, bytes)*`. Mode bit 0 clear: the pieces are raw
//! datagrams. Set: they are plaintext Initial payloads (frames), protected here with the v1
//! or v2 keys (mode bit 1), so that the fuzzer reaches frame parsing and reassembly without
//! having to forge an AEAD tag.
#![no_main]

use bulkhead_gateway::inspect::quic::build::{client_initial, InitialSpec};
use bulkhead_gateway::inspect::quic::{InitialCollector, QuicParse, Version};
use bulkhead_gateway::inspect::validate_host_name;
use libfuzzer_sys::fuzz_target;

fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [a, b, rest @ ..] = data {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}

/// The name the datagrams give (`Some(None)`: a hello without a name), or `None`.
fn run(datagrams: &[Vec<u8>]) -> Option<Option<String>> {
    let mut c = InitialCollector::new();
    let mut out = None;
    for d in datagrams {
        if let QuicParse::Complete(info) = c.push(d) {
            if let Some(name) = info.sni {
                let again = validate_host_name(name.as_bytes()).expect("reported names are valid");
                assert_eq!(again.as_str(), name.as_str(), "reported names are normalised");
            }
            out = Some(info.sni.map(|n| n.to_string()));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parts = pieces(rest);
    if mode & 1 == 0 {
        let ds: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        run(&ds);
        return;
    }
    let version = if mode & 2 == 0 { Version::V1 } else { Version::V2 };
    let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
    let packets: Vec<Vec<u8>> = parts
        .iter()
        .enumerate()
        .filter_map(|(i, frames)| {
            let spec = InitialSpec {
                version,
                key_dcid: &dcid,
                dcid: &dcid,
                scid: &[],
                token: &[],
                pn: i as u64,
            };
            client_initial(&spec, frames, 1200)
        })
        .collect();
    let forward = run(&packets);
    let mut reversed = packets.clone();
    reversed.reverse();
    let backward = run(&reversed);
    if let (Some(a), Some(b)) = (forward, backward) {
        assert_eq!(a, b, "the order of the Initials changed the name");
    }
});
