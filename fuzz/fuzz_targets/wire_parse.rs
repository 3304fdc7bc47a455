//! Any bytes as a raw IP packet: `wire::parse` must not panic, and what it returns must be
//! consistent with the input (slices inside the packet, offsets in order), and the builders must
//! produce packets that parse back.
#![no_main]

use bulkhead_gateway::wire::{
    build_icmp_unreachable, build_tcp_rst, parse, ChecksumStatus, RstTarget, TcpFlowSeq, L4,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = parse(data) else {
        return;
    };
    assert!(p.packet.len() <= data.len());
    assert!(p.l4_offset <= p.payload_offset && p.payload_offset <= p.packet.len());
    let payload = p.payload();
    if !payload.is_empty() {
        let start = payload.as_ptr() as usize - p.packet.as_ptr() as usize;
        assert!(start + payload.len() <= p.packet.len());
    }
    let _ = p.verify_transport_checksum();

    // Build the gateway's own replies to this packet: they must parse, with valid checksums.
    let mut out = Vec::new();
    if let (L4::Tcp(t), None) = (p.l4, p.fragment) {
        let flow = TcpFlowSeq {
            client: (p.src, t.src_port).into(),
            server: (p.dst, t.dst_port).into(),
            client_next_seq: t.seq.wrapping_add(t.seq_len()),
            server_next_seq: t.flags.ack().then_some(t.ack),
        };
        for target in [RstTarget::Client, RstTarget::Server] {
            out.clear();
            build_tcp_rst(&mut out, &flow.rst(target)).expect("same family");
            let r = parse(&out).expect("RST parses");
            assert_eq!(r.verify_transport_checksum(), ChecksumStatus::Valid);
        }
    }
    out.clear();
    if build_icmp_unreachable(&mut out, data, None).is_ok() {
        let r = parse(&out).expect("ICMP error parses");
        assert_eq!(r.verify_transport_checksum(), ChecksumStatus::Valid);
        assert!(out.len() <= 1280);
    } else {
        assert!(out.is_empty());
    }
});
