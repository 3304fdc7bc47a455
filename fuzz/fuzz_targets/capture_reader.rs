//! Any bytes as a capture file: the reader must not panic, must stop, and every packet it yields
//! lies within the input's size.
#![no_main]

use std::io::Cursor;

use bulkhead_gateway::capture::CaptureReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = CaptureReader::new(Cursor::new(data)) else {
        return;
    };
    // Each packet consumes at least a record header, so this loop ends.
    while let Ok(Some(p)) = r.next_packet() {
        assert!(p.packet.len() <= data.len());
        let _ = bulkhead_gateway::wire::parse(p.packet);
    }
    let s = r.stats();
    assert_eq!(s.frames, s.ip_packets + s.skipped_non_ip);
});
