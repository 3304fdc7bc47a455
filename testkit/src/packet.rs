//! IPv4/IPv6 TCP and UDP packets with correct checksums, a TCP connection's packets, and RSTs
//! read back through etherparse.
//!
//! The checksum and framing code here is written independently of the gateway's `wire` module, so
//! that a bug there cannot hide itself in the tests. Nothing here names a gateway type: the
//! gateway's own unit tests can use it (see the crate docs).

use std::net::{IpAddr, SocketAddr};

/// One's-complement sum of the concatenated chunks (RFC 1071).
pub fn csum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        let mut i = 0;
        while i + 1 < c.len() {
            sum += u32::from(u16::from_be_bytes([c[i], c[i + 1]]));
            i += 2;
        }
        if i < c.len() {
            sum += u32::from(c[i]) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// TCP flag bits (RFC 9293 section 3.1).
/// FIN: the sender has no more data.
pub const FIN: u8 = 0x01;
/// SYN: synchronise sequence numbers.
pub const SYN: u8 = 0x02;
/// RST: reset the connection.
pub const RST: u8 = 0x04;
/// PSH: push the data to the application.
pub const PSH: u8 = 0x08;
/// ACK: the acknowledgment number is valid.
pub const ACK: u8 = 0x10;

/// Builds an IPv4 or IPv6 packet around a transport header + payload, with correct checksums.
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, l4: &mut [u8], csum_at: usize) -> Vec<u8> {
    let len = l4.len() as u32;
    l4[csum_at] = 0;
    l4[csum_at + 1] = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets()[..],
                &[0, proto],
                &(len as u16).to_be_bytes()[..],
            ]
            .concat();
            let c = csum(&[&pseudo, l4]);
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let total = (20 + l4.len()) as u16;
            let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let hc = csum(&[&ip]);
            ip[10..12].copy_from_slice(&hc.to_be_bytes());
            ip.extend_from_slice(l4);
            ip
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets()[..],
                &len.to_be_bytes()[..],
                &[0, 0, 0, proto][..],
            ]
            .concat();
            let c = csum(&[&pseudo, l4]);
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[proto, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(l4);
            ip
        }
        _ => panic!("mixed address families"),
    }
}

/// A TCP segment.
pub fn tcp_packet(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20 + payload.len());
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), 6, &mut l4, 16)
}

/// A UDP datagram.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), 17, &mut l4, 6)
}

/// Flips a bit of the transport checksum.
pub fn corrupt_checksum(mut packet: Vec<u8>) -> Vec<u8> {
    let off = if packet[0] >> 4 == 4 {
        20 + 16
    } else {
        40 + 16
    };
    packet[off] ^= 0x01;
    packet
}

/// Both ends of a TCP connection and their initial sequence numbers.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub cisn: u32,
    pub sisn: u32,
}

impl Conn {
    /// IPv4, client 10.1.2.3:`cport`, server 192.0.2.10:443. The client ISN is near the wrap.
    pub fn v4(cport: u16) -> Conn {
        Conn {
            client: SocketAddr::new("10.1.2.3".parse().unwrap(), cport),
            server: SocketAddr::new("192.0.2.10".parse().unwrap(), 443),
            cisn: 0xffff_ff00,
            sisn: 0x1000_0000,
        }
    }

    pub fn v6(cport: u16) -> Conn {
        Conn {
            client: SocketAddr::new("fd00:1::3".parse().unwrap(), cport),
            server: SocketAddr::new("2001:db8::10".parse().unwrap(), 443),
            cisn: 7,
            sisn: 0x8000_0000,
        }
    }

    pub fn to_port(mut self, port: u16) -> Conn {
        self.server.set_port(port);
        self
    }

    pub fn syn(&self) -> Vec<u8> {
        tcp_packet(self.client, self.server, self.cisn, 0, SYN, &[])
    }

    pub fn syn_data(&self, data: &[u8]) -> Vec<u8> {
        tcp_packet(self.client, self.server, self.cisn, 0, SYN, data)
    }

    pub fn synack(&self) -> Vec<u8> {
        tcp_packet(
            self.server,
            self.client,
            self.sisn,
            self.cisn.wrapping_add(1),
            SYN | ACK,
            &[],
        )
    }

    pub fn ack(&self) -> Vec<u8> {
        self.data(0, &[])
    }

    /// Client data at stream offset `off` (0 = the first byte after the SYN).
    pub fn data(&self, off: u32, data: &[u8]) -> Vec<u8> {
        let flags = if data.is_empty() { ACK } else { ACK | PSH };
        tcp_packet(
            self.client,
            self.server,
            self.cisn.wrapping_add(1).wrapping_add(off),
            self.sisn.wrapping_add(1),
            flags,
            data,
        )
    }

    pub fn fin(&self, off: u32) -> Vec<u8> {
        tcp_packet(
            self.client,
            self.server,
            self.cisn.wrapping_add(1).wrapping_add(off),
            self.sisn.wrapping_add(1),
            FIN | ACK,
            &[],
        )
    }

    /// Server data at its stream offset `off`, acknowledging client offset `client_off`.
    pub fn server_data(&self, off: u32, client_off: u32, data: &[u8]) -> Vec<u8> {
        tcp_packet(
            self.server,
            self.client,
            self.sisn.wrapping_add(1).wrapping_add(off),
            self.cisn.wrapping_add(1).wrapping_add(client_off),
            ACK | if data.is_empty() { 0 } else { PSH },
            data,
        )
    }
}

/// A TCP RST as read back by etherparse, with its checksum verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rst {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: Option<u32>,
}

/// Parses `packet` as a TCP RST (None if it is not one); panics on a bad checksum or bad flags.
pub fn as_rst(packet: &[u8]) -> Option<Rst> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return None;
    };
    if !tcp.rst() {
        return None;
    }
    assert!(
        !tcp.syn() && !tcp.fin() && !tcp.psh(),
        "RST with other flags: {packet:02x?}"
    );
    assert!(tcp.payload().is_empty(), "RST carries data");
    let (src, dst, expect) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(
                h.to_header().calc_header_checksum(),
                h.header_checksum(),
                "IPv4 header checksum of RST"
            );
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap(),
            )
        }
        _ => return None,
    };
    assert_eq!(tcp.checksum(), expect, "TCP checksum of RST");
    Some(Rst {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
    })
}

/// Every RST among `packets`.
pub fn rsts(packets: &[Vec<u8>]) -> Vec<Rst> {
    packets.iter().filter_map(|p| as_rst(p)).collect()
}

/// Payload bytes of the client→server TCP segments among `packets`, reassembled by sequence
/// number relative to the client ISN (what the server would read).
pub fn client_stream(c: &Conn, packets: &[Vec<u8>]) -> Vec<u8> {
    use etherparse::{SlicedPacket, TransportSlice};
    let mut segs = Vec::new();
    for p in packets {
        let Ok(s) = SlicedPacket::from_ip(p) else {
            continue;
        };
        let Some(TransportSlice::Tcp(t)) = &s.transport else {
            continue;
        };
        if t.source_port() != c.client.port() || t.destination_port() != c.server.port() {
            continue;
        }
        if t.payload().is_empty() {
            continue;
        }
        let off = t.sequence_number().wrapping_sub(c.cisn.wrapping_add(1)) as usize;
        segs.push((off, t.payload().to_vec()));
    }
    segs.sort_by_key(|(o, _)| *o);
    let mut out = Vec::new();
    for (o, d) in segs {
        if o <= out.len() && o + d.len() > out.len() {
            let skip = out.len() - o;
            out.extend_from_slice(&d[skip..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_carry_valid_checksums_both_families() {
        // `as_rst` checks the IPv4 header and TCP checksums through etherparse.
        for c in [Conn::v4(40000), Conn::v6(40000)] {
            let rst = tcp_packet(c.client, c.server, 5, 9, RST | ACK, &[]);
            let r = as_rst(&rst).expect("an RST");
            assert_eq!(
                (r.src, r.dst, r.seq, r.ack),
                (c.client, c.server, 5, Some(9))
            );
            assert_eq!(as_rst(&c.syn()), None);
            let bad = corrupt_checksum(rst);
            assert!(std::panic::catch_unwind(|| as_rst(&bad)).is_err());
        }
    }

    #[test]
    fn the_client_stream_is_reassembled_by_sequence_number() {
        let c = Conn::v4(40000);
        // The client ISN sits just below the wrap: offsets must survive it.
        let wire = vec![
            c.data(4, b"efgh"),
            c.synack(),
            c.data(0, b"abcd"),
            c.data(2, b"cdef"),
        ];
        assert_eq!(client_stream(&c, &wire), b"abcdefgh");
        let dgram = udp_packet(c.client, c.server, b"x");
        assert_eq!(dgram.len(), 20 + 8 + 1);
    }
}
