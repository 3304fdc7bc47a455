//! Round trips and differential tests against `etherparse` as an oracle.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;

use super::*;

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(a: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(a))
}

/// Rewrites an IPv6 packet built by etherparse to carry `ext` (raw extension headers, the first
/// one's type given by `first`, the last one's next header left to be patched) before its
/// transport header.
fn insert_ipv6_extensions(pkt: &[u8], first: u8, ext: &[u8], last_nh_at: usize) -> Vec<u8> {
    let upper = pkt[6];
    let mut out = pkt[..40].to_vec();
    out[6] = first;
    let mut ext = ext.to_vec();
    ext[last_nh_at] = upper;
    out.extend_from_slice(&ext);
    out.extend_from_slice(&pkt[40..]);
    let plen = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&plen.to_be_bytes());
    out
}

#[test]
fn tcp_v4_matches_etherparse() {
    let mut pkt = Vec::new();
    PacketBuilder::ipv4([10, 1, 2, 3], [93, 184, 216, 34], 61)
        .tcp(40000, 443, 0xdead_beef, 502)
        .ack(0x0102_0304)
        .psh()
        .options_raw(&[2, 4, 5, 0xb4, 1, 1, 1, 0])
        .unwrap()
        .write(&mut pkt, b"hello")
        .unwrap();
    let p = parse(&pkt).unwrap();
    assert_eq!(p.src, v4([10, 1, 2, 3]));
    assert_eq!(p.dst, v4([93, 184, 216, 34]));
    assert_eq!(p.ttl, 61);
    assert_eq!(p.protocol, IpProtocol::Tcp);
    assert_eq!(p.ports(), Some((40000, 443)));
    let t = p.tcp().unwrap();
    assert_eq!(t.seq, 0xdead_beef);
    assert_eq!(t.ack, 0x0102_0304);
    assert_eq!(t.flags, TcpFlags::ACK | TcpFlags::PSH);
    assert_eq!(t.window, 502);
    assert_eq!(t.mss(), Some(1460));
    assert_eq!(t.payload, b"hello");
    assert_eq!(t.seq_len(), 5);
    assert_eq!(p.l4_offset, 20);
    assert_eq!(p.payload_offset, 48);
    assert_eq!(&pkt[p.payload_offset..], b"hello");
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);
    assert!(Ipv4Packet::new_checked(&pkt[..]).unwrap().verify_checksum());

    // Corrupt one payload byte: the checksum no longer holds.
    let mut bad = pkt.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        parse(&bad).unwrap().verify_transport_checksum(),
        ChecksumStatus::Invalid
    );
}

#[test]
fn udp_v6_with_extension_headers() {
    let mut pkt = Vec::new();
    let (s, d) = (
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0xfd; 16],
    );
    PacketBuilder::ipv6(s, d, 32)
        .udp(5353, 443)
        .write(&mut pkt, b"quic!")
        .unwrap();
    // hop-by-hop (PadN) -> destination options -> atomic fragment -> UDP
    let ext = [
        60, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop, PadN
        44, 0, 1, 4, 0, 0, 0, 0, // destination options
        0, 0, 0, 0, 0, 0, 0, 42, // fragment: offset 0, M clear (atomic)
    ];
    let pkt = insert_ipv6_extensions(&pkt, 0, &ext, 16);
    let p = parse(&pkt).unwrap();
    assert_eq!((p.src, p.dst), (v6(s), v6(d)));
    assert_eq!(p.protocol, IpProtocol::Udp);
    assert_eq!(p.fragment, None);
    assert_eq!(p.l4_offset, 64);
    assert_eq!(p.ports(), Some((5353, 443)));
    assert_eq!(p.payload(), b"quic!");
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);

    let e = SlicedPacket::from_ip(&pkt).unwrap();
    match e.transport {
        Some(TransportSlice::Udp(u)) => {
            assert_eq!(u.payload(), p.payload());
            assert_eq!(u.source_port(), 5353);
        }
        other => panic!("etherparse saw {other:?}"),
    }
}

#[test]
fn ipv6_fragments_are_reported() {
    let mut pkt = Vec::new();
    PacketBuilder::ipv6([1; 16], [2; 16], 64)
        .tcp(1234, 443, 1, 1000)
        .write(&mut pkt, &[0u8; 100])
        .unwrap();
    // First fragment (offset 0, M set) holding the whole TCP header: parsed, marked.
    let first = insert_ipv6_extensions(&pkt, 44, &[0, 0, 0, 1, 0, 0, 0, 9], 0);
    let p = parse(&first).unwrap();
    assert_eq!(
        p.fragment,
        Some(FragmentInfo {
            offset: 0,
            more: true,
            ident: 9
        })
    );
    assert_eq!(p.ports(), Some((1234, 443)));
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::NotApplicable);

    // First fragment cut inside the TCP header.
    let mut short = first[..48 + 12].to_vec();
    short[4..6].copy_from_slice(&20u16.to_be_bytes());
    let p = parse(&short).unwrap();
    assert_eq!(p.l4, L4::Fragment(FragmentDrop::HeaderSplit));
    assert_eq!(p.ports(), None);

    // A later fragment: never read as a header.
    let mut later = first.clone();
    later[42..44].copy_from_slice(&(13u16 << 3).to_be_bytes());
    let p = parse(&later).unwrap();
    assert_eq!(p.l4, L4::Fragment(FragmentDrop::NotFirst));
    assert_eq!(p.fragment.unwrap().offset, 13);
}

#[test]
fn ipv4_fragments_are_reported() {
    let mut pkt = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, 53)
        .write(&mut pkt, &[7u8; 40])
        .unwrap();
    // First fragment with MF: 20 + 8 + 16 bytes; the UDP length still says 48.
    let mut first = pkt[..44].to_vec();
    first[2..4].copy_from_slice(&44u16.to_be_bytes());
    first[6] = 0x20;
    let p = parse(&first).unwrap();
    assert_eq!(p.ports(), Some((1000, 53)));
    assert_eq!(p.payload().len(), 16);
    assert!(p.fragment.unwrap().more);

    // First fragment of 4 transport bytes: header split.
    let mut tiny = pkt[..24].to_vec();
    tiny[2..4].copy_from_slice(&24u16.to_be_bytes());
    tiny[6] = 0x20;
    assert_eq!(
        parse(&tiny).unwrap().l4,
        L4::Fragment(FragmentDrop::HeaderSplit)
    );
    // Without MF the same packet is just malformed.
    tiny[6] = 0;
    assert!(parse(&tiny).is_err());

    // Offset 1 (8 bytes): not first, even though its bytes look like a header.
    let mut later = pkt.clone();
    later[6..8].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(
        parse(&later).unwrap().l4,
        L4::Fragment(FragmentDrop::NotFirst)
    );
}

#[test]
fn ipv4_options_and_padding() {
    let mut pkt = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1, 2, 3, 4)
        .syn()
        .write(&mut pkt, &[])
        .unwrap();
    // Insert 8 option bytes (record route would be longer; NOPs and EOL suffice).
    let mut with_opts = pkt[..20].to_vec();
    with_opts.extend_from_slice(&[1, 1, 1, 1, 1, 1, 1, 0]);
    with_opts.extend_from_slice(&pkt[20..]);
    with_opts[0] = 0x47;
    let total = with_opts.len() as u16;
    with_opts[2..4].copy_from_slice(&total.to_be_bytes());
    with_opts[10..12].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&with_opts[..28]);
    with_opts[10..12].copy_from_slice(&c.to_be_bytes());
    with_opts.extend_from_slice(&[0; 6]); // Ethernet padding
    let p = parse(&with_opts).unwrap();
    assert_eq!(p.l4_offset, 28);
    assert_eq!(p.packet.len(), 48);
    assert!(p.tcp().unwrap().flags.syn());
    assert_eq!(p.tcp().unwrap().seq_len(), 1);
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);
    let e = SlicedPacket::from_ip(&with_opts).unwrap();
    match e.net {
        Some(NetSlice::Ipv4(h)) => {
            assert_eq!(h.header().options(), &with_opts[20..28]);
            assert_eq!(h.header().to_header().calc_header_checksum(), c);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn icmp_and_other_protocols() {
    let mut pkt = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(7, 9)
        .write(&mut pkt, b"ping")
        .unwrap();
    let p = parse(&pkt).unwrap();
    assert_eq!(
        p.l4,
        L4::Icmp(IcmpMessage {
            msg_type: 8,
            code: 0,
            payload: b"ping"
        })
    );
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);

    let mut pkt = Vec::new();
    PacketBuilder::ipv6([1; 16], [2; 16], 64)
        .icmpv6_echo_request(7, 9)
        .write(&mut pkt, b"ping")
        .unwrap();
    let p = parse(&pkt).unwrap();
    assert!(matches!(
        p.l4,
        L4::Icmpv6(IcmpMessage { msg_type: 128, .. })
    ));
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);

    // GRE (47): opaque.
    let mut gre = pkt.clone();
    gre[6] = 47;
    let p = parse(&gre).unwrap();
    assert_eq!(p.protocol, IpProtocol::Unknown(47));
    assert_eq!(p.l4, L4::Other(&gre[40..]));
    assert_eq!(p.ports(), None);
}

#[test]
fn errors_on_garbage() {
    assert_eq!(parse(&[]).unwrap_err(), WireError::Empty);
    assert_eq!(
        parse(&[0x55; 40]).unwrap_err(),
        WireError::UnknownVersion(5)
    );
    // IPv6 payload length past the end.
    let mut v6 = vec![0u8; 48];
    v6[0] = 0x60;
    v6[5] = 9;
    v6[6] = 17;
    assert!(matches!(
        parse(&v6),
        Err(WireError::BadIpv6PayloadLength { payload: 9, .. })
    ));
    // UDP length 7.
    v6[5] = 8;
    v6[40 + 5] = 7;
    assert!(matches!(parse(&v6), Err(WireError::BadUdpLength { .. })));
}

fn check_rst(pkt: &[u8], rst: &TcpRst) {
    let p = parse(pkt).unwrap();
    assert_eq!(p.src, rst.src.ip());
    assert_eq!(p.dst, rst.dst.ip());
    assert_eq!(p.ports(), Some((rst.src.port(), rst.dst.port())));
    let t = p.tcp().unwrap();
    assert_eq!(t.seq, rst.seq);
    assert!(t.flags.rst());
    assert_eq!(t.flags.ack(), rst.ack.is_some());
    assert_eq!(t.ack, rst.ack.unwrap_or(0));
    assert!(t.payload.is_empty());
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);

    // The oracle agrees on every field and the checksums.
    let e = SlicedPacket::from_ip(pkt).unwrap();
    let Some(TransportSlice::Tcp(et)) = e.transport else {
        panic!("etherparse: not TCP")
    };
    assert_eq!(et.sequence_number(), rst.seq);
    assert!(et.rst());
    assert_eq!(et.ack(), rst.ack.is_some());
    match e.net.unwrap() {
        NetSlice::Ipv4(h) => {
            let hdr = h.header();
            assert_eq!(
                hdr.to_header().calc_header_checksum(),
                hdr.header_checksum()
            );
            assert_eq!(
                et.calc_checksum_ipv4(hdr.source(), hdr.destination())
                    .unwrap(),
                et.checksum()
            );
        }
        NetSlice::Ipv6(h) => {
            let hdr = h.header();
            assert_eq!(
                et.calc_checksum_ipv6(hdr.source(), hdr.destination())
                    .unwrap(),
                et.checksum()
            );
        }
    }
}

#[test]
fn rst_both_directions_both_families() {
    for (c, s) in [
        ("10.1.2.3:40000", "93.184.216.34:443"),
        ("[fd00:1::3]:40000", "[2606:4700::1111]:443"),
    ] {
        let flow = TcpFlowSeq {
            client: c.parse().unwrap(),
            server: s.parse().unwrap(),
            client_next_seq: 1001,
            server_next_seq: Some(5001),
        };
        let to_client = flow.rst(RstTarget::Client);
        assert_eq!(to_client.src, flow.server);
        assert_eq!(to_client.seq, 5001);
        assert_eq!(to_client.ack, Some(1001));
        let to_server = flow.rst(RstTarget::Server);
        assert_eq!(to_server.src, flow.client);
        assert_eq!(to_server.seq, 1001);
        assert_eq!(to_server.ack, Some(5001));
        let mut out = vec![0xaa]; // appended after what is already there
        let n = build_tcp_rst(&mut out, &to_client).unwrap();
        assert_eq!(n, out.len() - 1);
        check_rst(&out[1..], &to_client);
        out.clear();
        build_tcp_rst(&mut out, &to_server).unwrap();
        check_rst(&out, &to_server);

        // Verdict on the SYN: the server never answered.
        let syn_only = TcpFlowSeq {
            server_next_seq: None,
            ..flow
        };
        let r = syn_only.rst(RstTarget::Client);
        assert_eq!((r.seq, r.ack), (0, Some(1001)));
        out.clear();
        build_tcp_rst(&mut out, &r).unwrap();
        check_rst(&out, &r);
        let r = syn_only.rst(RstTarget::Server);
        assert_eq!((r.seq, r.ack), (1001, None));
        out.clear();
        build_tcp_rst(&mut out, &r).unwrap();
        check_rst(&out, &r);
    }
    let mut out = vec![1, 2];
    let mixed = TcpRst {
        src: "10.0.0.1:1".parse().unwrap(),
        dst: "[::1]:2".parse().unwrap(),
        seq: 0,
        ack: None,
    };
    assert_eq!(
        build_tcp_rst(&mut out, &mixed),
        Err(BuildError::AddressFamilyMismatch)
    );
    assert_eq!(out, vec![1, 2]);
}

#[test]
fn icmp_unreachable_v4() {
    let mut offending = Vec::new();
    PacketBuilder::ipv4([10, 1, 2, 3], [8, 8, 8, 8], 64)
        .udp(5000, 53)
        .write(&mut offending, &[0x11; 1000])
        .unwrap();
    let mut out = Vec::new();
    let n = build_icmp_unreachable(&mut out, &offending, None).unwrap();
    assert_eq!(n, 576);
    let p = parse(&out).unwrap();
    assert_eq!(p.src, v4([8, 8, 8, 8]));
    assert_eq!(p.dst, v4([10, 1, 2, 3]));
    let L4::Icmp(m) = p.l4 else { panic!() };
    assert_eq!((m.msg_type, m.code), (3, 13));
    assert_eq!(m.payload, &offending[..548]);
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);
    assert!(Ipv4Packet::new_checked(&out[..]).unwrap().verify_checksum());
    let e = SlicedPacket::from_ip(&out).unwrap();
    let Some(TransportSlice::Icmpv4(ei)) = e.transport else {
        panic!()
    };
    assert_eq!(ei.icmp_type().calc_checksum(ei.payload()), ei.checksum());
    assert_eq!((ei.type_u8(), ei.code_u8()), (3, 13));

    // A small packet is quoted whole; an explicit source is used.
    let mut small = Vec::new();
    PacketBuilder::ipv4([10, 1, 2, 3], [8, 8, 8, 8], 64)
        .udp(5000, 53)
        .write(&mut small, b"q")
        .unwrap();
    out.clear();
    build_icmp_unreachable(&mut out, &small, Some(v4([10, 0, 0, 254]))).unwrap();
    let p = parse(&out).unwrap();
    assert_eq!(p.src, v4([10, 0, 0, 254]));
    assert_eq!(p.payload(), &small[..]);
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);
}

#[test]
fn icmp_unreachable_v6() {
    let mut offending = Vec::new();
    let (s, d) = (
        [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
        [0x26; 16],
    );
    PacketBuilder::ipv6(s, d, 64)
        .udp(5000, 443)
        .write(&mut offending, &[0x22; 1400])
        .unwrap();
    let mut out = Vec::new();
    let n = build_icmp_unreachable(&mut out, &offending, None).unwrap();
    assert_eq!(n, 1280);
    let p = parse(&out).unwrap();
    assert_eq!((p.src, p.dst), (v6(d), v6(s)));
    let L4::Icmpv6(m) = p.l4 else { panic!() };
    assert_eq!((m.msg_type, m.code), (1, 1));
    assert_eq!(m.payload, &offending[..1232]);
    assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);
    let e = SlicedPacket::from_ip(&out).unwrap();
    let Some(TransportSlice::Icmpv6(ei)) = e.transport else {
        panic!()
    };
    assert!(ei.is_checksum_valid(d, s));
    assert_eq!(
        build_icmp_unreachable(&mut out, &offending, Some(v4([1, 2, 3, 4]))),
        Err(BuildError::AddressFamilyMismatch)
    );
}

#[test]
fn icmp_unreachable_suppressed() {
    let mut out = Vec::new();
    // Never about an ICMP error.
    let mut err = Vec::new();
    build_icmp_unreachable(
        &mut err,
        &{
            let mut p = Vec::new();
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(1, 2)
                .write(&mut p, &[])
                .unwrap();
            p
        },
        None,
    )
    .unwrap();
    assert!(matches!(
        build_icmp_unreachable(&mut out, &err, None),
        Err(BuildError::Suppressed(_))
    ));
    // Nor about a multicast destination, a non-first fragment or a loopback source.
    let mut mc = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [239, 1, 1, 1], 64)
        .udp(1, 2)
        .write(&mut mc, &[])
        .unwrap();
    assert!(matches!(
        build_icmp_unreachable(&mut out, &mc, None),
        Err(BuildError::Suppressed(_))
    ));
    let mut frag = err.clone();
    frag[6..8].copy_from_slice(&3u16.to_be_bytes());
    assert!(matches!(
        build_icmp_unreachable(&mut out, &frag, None),
        Err(BuildError::Suppressed(_))
    ));
    let mut v6err = Vec::new();
    PacketBuilder::ipv6([0; 16], [2; 16], 64)
        .udp(1, 2)
        .write(&mut v6err, &[])
        .unwrap();
    assert!(matches!(
        build_icmp_unreachable(&mut out, &v6err, None),
        Err(BuildError::Suppressed(_))
    ));
    assert!(build_icmp_unreachable(&mut out, &[0x45, 0], None).is_err());
    assert!(out.is_empty());
}

fn arb_tcp_flags() -> impl Strategy<Value = (bool, bool, bool, bool, bool)> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Packets etherparse builds parse to the same fields with a valid checksum.
    #[test]
    fn built_packets_round_trip(
        is_v6 in any::<bool>(),
        is_tcp in any::<bool>(),
        src4 in any::<[u8; 4]>(), dst4 in any::<[u8; 4]>(),
        src6 in any::<[u8; 16]>(), dst6 in any::<[u8; 16]>(),
        sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ackn in any::<u32>(),
        win in any::<u16>(), flags in arb_tcp_flags(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let b = if is_v6 { PacketBuilder::ipv6(src6, dst6, 9) } else { PacketBuilder::ipv4(src4, dst4, 9) };
        let mut pkt = Vec::new();
        if is_tcp {
            let mut t = b.tcp(sp, dp, seq, win);
            if flags.0 { t = t.syn(); }
            if flags.1 { t = t.ack(ackn); }
            if flags.2 { t = t.fin(); }
            if flags.3 { t = t.rst(); }
            if flags.4 { t = t.psh(); }
            t.write(&mut pkt, &payload).unwrap();
        } else {
            b.udp(sp, dp).write(&mut pkt, &payload).unwrap();
        }
        let p = parse(&pkt).unwrap();
        prop_assert_eq!(p.ports(), Some((sp, dp)));
        prop_assert_eq!(p.payload(), &payload[..]);
        prop_assert_eq!(p.verify_transport_checksum(), ChecksumStatus::Valid);
        prop_assert_eq!(p.src, if is_v6 { v6(src6) } else { v4(src4) });
        prop_assert_eq!(p.dst, if is_v6 { v6(dst6) } else { v4(dst4) });
        if let Some(t) = p.tcp() {
            prop_assert_eq!(t.seq, seq);
            prop_assert_eq!(t.flags.syn(), flags.0);
            prop_assert_eq!(t.flags.ack(), flags.1);
            if flags.1 { prop_assert_eq!(t.ack, ackn); }
            prop_assert_eq!(t.flags.fin(), flags.2);
            prop_assert_eq!(t.flags.rst(), flags.3);
            prop_assert_eq!(t.window, win);
        }
    }

    /// Any bytes: no panic; and where both parsers accept an unfragmented TCP/UDP packet without
    /// IPv4 AH (which etherparse walks and this parser leaves opaque), they agree.
    #[test]
    fn mutated_packets_agree_with_etherparse(
        is_v6 in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        ext in proptest::collection::vec(any::<u8>(), 0..40),
        muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut pkt = Vec::new();
        if is_v6 {
            PacketBuilder::ipv6([1; 16], [2; 16], 9).tcp(1, 2, 3, 4).write(&mut pkt, &payload).unwrap();
            if ext.len() >= 8 {
                pkt = insert_ipv6_extensions(&pkt, ext[0] % 2 * 60, &ext[..8], 0);
            }
        } else {
            PacketBuilder::ipv4([1; 4], [2; 4], 9).udp(1, 2).write(&mut pkt, &payload).unwrap();
        }
        for (i, v) in muts {
            let n = pkt.len();
            pkt[i % n] = v;
        }
        pkt.truncate(cut % (pkt.len() + 1));
        let mine = parse(&pkt);
        let theirs = SlicedPacket::from_ip(&pkt);
        if let (Ok(m), Ok(t)) = (&mine, &theirs) {
            let v4_ah = !m.is_ipv6() && pkt.get(9) == Some(&51);
            if m.fragment.is_none() && !v4_ah {
                match (&m.l4, &t.transport) {
                    (L4::Tcp(a), Some(TransportSlice::Tcp(b))) => {
                        prop_assert_eq!((a.src_port, a.dst_port), (b.source_port(), b.destination_port()));
                        prop_assert_eq!(a.payload, b.payload());
                    }
                    (L4::Udp(a), Some(TransportSlice::Udp(b))) => {
                        prop_assert_eq!((a.src_port, a.dst_port), (b.source_port(), b.destination_port()));
                        prop_assert_eq!(a.payload, b.payload());
                    }
                    _ => {}
                }
            }
        }
    }
}
