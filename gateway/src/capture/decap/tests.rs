//! Byte vectors for every tunnel shape, and the bounds.

use super::*;
use crate::wire::internet_checksum;

/// An IPv4 packet from 192.0.2.1 to 192.0.2.2 carrying `proto` and `payload`.
fn v4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
    ];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let c = internet_checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet from 2001:db8::1 to 2001:db8::2 carrying `nh` and `payload`.
fn v6(nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[nh, 64]);
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[15] = 1;
    p.extend_from_slice(&a);
    a[15] = 2;
    p.extend_from_slice(&a);
    p.extend_from_slice(payload);
    p
}

/// A UDP datagram (checksum 0: not verified for the outer packet) to `port`.
fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0xc0, 0x00];
    u.extend_from_slice(&port.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An Ethernet frame with `ethertype` (and optional VLAN tag).
fn eth(ethertype: u16, vlan: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The innermost packet: a TCP SYN-ish payload inside IPv4.
fn inner() -> Vec<u8> {
    v4(
        6,
        &[
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ],
    )
}

fn vxlan_of(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0, 0x2a, 0];
    v.extend_from_slice(&eth(0x0800, false, payload));
    v4(17, &udp(VXLAN_PORT, &v))
}

fn inner_of(packet: &[u8]) -> (Vec<u8>, usize, Option<Tunnel>) {
    match decapsulate(packet) {
        Decap::Packet {
            range,
            layers,
            last,
        } => (packet[range].to_vec(), layers, last),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_plain_packet_is_left_as_it_is() {
    let p = inner();
    assert_eq!(inner_of(&p), (p.clone(), 0, None));
    // UDP to another port, and garbage.
    let u = v4(17, &udp(53, b"dns"));
    assert_eq!(inner_of(&u).1, 0);
    assert_eq!(inner_of(&[0x45, 1, 2]).1, 0);
    assert_eq!(inner_of(&[]).1, 0);
}

#[test]
fn vxlan_geneve_gre_erspan_and_ip_in_ip_are_opened() {
    let i = inner();
    assert_eq!(inner_of(&vxlan_of(&i)), (i.clone(), 1, Some(Tunnel::Vxlan)));

    // GENEVE with 8 bytes of options, over Ethernet (with a VLAN tag) and straight over IP.
    let mut g = vec![0x02, 0x00, 0x65, 0x58, 0, 0, 1, 0];
    g.extend_from_slice(&[0x01, 0x08, 0x01, 0x01, 1, 2, 3, 4]);
    g.extend_from_slice(&eth(0x0800, true, &i));
    assert_eq!(
        inner_of(&v6(17, &udp(GENEVE_PORT, &g))),
        (i.clone(), 1, Some(Tunnel::Geneve))
    );
    let mut g = vec![0x00, 0x00, 0x08, 0x00, 0, 0, 1, 0];
    g.extend_from_slice(&i);
    assert_eq!(inner_of(&v4(17, &udp(GENEVE_PORT, &g))).0, i);

    // GRE: plain, with checksum + key + sequence, and transparent Ethernet bridging.
    let mut gre = vec![0x00, 0x00, 0x08, 0x00];
    gre.extend_from_slice(&i);
    assert_eq!(inner_of(&v4(47, &gre)), (i.clone(), 1, Some(Tunnel::Gre)));
    let mut gre = vec![0xb0, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1];
    gre.extend_from_slice(&i);
    assert_eq!(inner_of(&v6(47, &gre)).0, i);
    let mut gre = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 5];
    gre.extend_from_slice(&eth(0x0800, false, &i));
    assert_eq!(inner_of(&v4(47, &gre)).0, i);

    // ERSPAN I, II and III (with the platform subheader).
    let mut e1 = vec![0x00, 0x00, 0x88, 0xbe];
    e1.extend_from_slice(&eth(0x0800, false, &i));
    assert_eq!(inner_of(&v4(47, &e1)), (i.clone(), 1, Some(Tunnel::Erspan)));
    let mut e2 = vec![0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1];
    e2.extend_from_slice(&[0x10, 0x00, 0x00, 0x01, 0, 0, 0, 0]);
    e2.extend_from_slice(&eth(0x0800, false, &i));
    assert_eq!(inner_of(&v4(47, &e2)).0, i);
    let mut e3 = vec![0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 1];
    e3.extend_from_slice(&[0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    e3.extend_from_slice(&[0; 8]);
    e3.extend_from_slice(&eth(0x0800, false, &i));
    assert_eq!(inner_of(&v4(47, &e3)).0, i);

    // IP in IP: 4in4, 6in4, 4in6, 6in6.
    let i6 = v6(59, &[]);
    assert_eq!(inner_of(&v4(4, &i)), (i.clone(), 1, Some(Tunnel::IpInIp)));
    assert_eq!(inner_of(&v4(41, &i6)).0, i6);
    assert_eq!(inner_of(&v6(4, &i)).0, i);
    assert_eq!(inner_of(&v6(41, &i6)).0, i6);
}

#[test]
fn nesting_is_bounded_and_counted() {
    let mut p = inner();
    for depth in 1..=MAX_TUNNEL_DEPTH {
        p = if depth % 2 == 0 {
            vxlan_of(&p)
        } else {
            v4(4, &p)
        };
        // The innermost tunnel is the first one wrapped.
        assert_eq!(inner_of(&p), (inner(), depth, Some(Tunnel::IpInIp)));
    }
    assert_eq!(decapsulate(&v4(4, &p)), Decap::TooDeep);
}

#[test]
fn what_is_not_a_well_formed_tunnel_is_not_opened() {
    let i = inner();
    // VXLAN without its I flag, GENEVE of another version, GRE version 1 or with routing, an
    // unknown GRE protocol, an IP-in-IP payload of the other version, headers cut short.
    let mut v = vec![0x00, 0, 0, 0, 0, 0, 0x2a, 0];
    v.extend_from_slice(&eth(0x0800, false, &i));
    let cases = [
        v4(17, &udp(VXLAN_PORT, &v)),
        v4(17, &udp(VXLAN_PORT, &[0x08, 0, 0])),
        v4(17, &udp(GENEVE_PORT, &[0x40, 0, 0x65, 0x58, 0, 0, 0, 0])),
        v4(17, &udp(GENEVE_PORT, &[0x3f, 0, 0x65, 0x58, 0, 0, 0, 0])),
        v4(47, &[0x00, 0x01, 0x08, 0x00]),
        v4(47, &[0x40, 0x00, 0x08, 0x00, 0, 0, 0, 0]),
        v4(47, &[0x00, 0x00, 0x12, 0x34]),
        v4(47, &[0xb0, 0x00, 0x08, 0x00]),
        v4(47, &[0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1, 0x20]),
        v4(4, &v6(59, &[])),
        v4(41, &[]),
        // GRE and GENEVE that announce IPv4 and carry something else.
        v4(47, &[&[0x00, 0x00, 0x08, 0x00][..], &v6(59, &[])].concat()),
        v4(
            47,
            &[0x30, 0x00, 0x86, 0xdd, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0x33],
        ),
        v4(
            17,
            &udp(
                GENEVE_PORT,
                &[&[0, 0, 0x08, 0x00, 0, 0, 1, 0][..], &[0; 20]].concat(),
            ),
        ),
    ];
    for (n, c) in cases.iter().enumerate() {
        assert_eq!(inner_of(c).1, 0, "case {n}");
        assert_eq!(inner_of(c).0, *c, "case {n}");
    }
    // A tunnel that carries ARP: not IP.
    let mut v = vec![0x08, 0, 0, 0, 0, 0, 0x2a, 0];
    v.extend_from_slice(&eth(0x0806, false, &[0; 28]));
    assert_eq!(decapsulate(&v4(17, &udp(VXLAN_PORT, &v))), Decap::NotIp);
}

#[test]
fn every_prefix_and_every_byte_flip_is_handled() {
    let mut e3 = vec![0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 1];
    e3.extend_from_slice(&[0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    e3.extend_from_slice(&[0; 8]);
    e3.extend_from_slice(&eth(0x0800, true, &inner()));
    let mut g = vec![0x02, 0x00, 0x65, 0x58, 0, 0, 1, 0, 1, 8, 1, 1, 1, 2, 3, 4];
    g.extend_from_slice(&eth(0x86dd, false, &v6(4, &inner())));
    for p in [
        vxlan_of(&vxlan_of(&inner())),
        v6(47, &e3),
        v4(17, &udp(GENEVE_PORT, &g)),
    ] {
        for n in 0..=p.len() {
            if let Decap::Packet { range, .. } = decapsulate(&p[..n]) {
                assert!(range.end <= n);
            }
        }
        for at in 0..p.len() {
            let mut q = p.clone();
            q[at] ^= 0xff;
            if let Decap::Packet { range, .. } = decapsulate(&q) {
                assert!(range.end <= q.len() && range.start <= range.end);
            }
        }
    }
}
