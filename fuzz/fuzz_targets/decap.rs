//! Any bytes as a captured IP packet: `capture::decap::decapsulate` must not panic, must stay
//! within the packet and its nesting bound, and must only ever hand out an IP packet.
#![no_main]

use bulkhead_gateway::capture::decap::{decapsulate, Decap, MAX_TUNNEL_DEPTH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Decap::Packet {
        range,
        layers,
        last,
    } = decapsulate(data)
    {
        assert!(range.start <= range.end && range.end <= data.len());
        assert!(layers <= MAX_TUNNEL_DEPTH);
        assert_eq!(layers == 0, last.is_none());
        if layers == 0 {
            assert_eq!(range, 0..data.len());
        } else {
            let version = data[range.start] >> 4;
            assert!(version == 4 || version == 6, "not an IP packet: {version}");
            // The inner packet is opened again from where the outer left off: never deeper in
            // total than the bound.
            if let Decap::Packet { layers: more, .. } = decapsulate(&data[range.clone()]) {
                assert!(layers + more <= MAX_TUNNEL_DEPTH);
            }
        }
    }
});
