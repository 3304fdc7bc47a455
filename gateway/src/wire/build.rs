//! The packets the gateway emits itself: TCP resets and ICMP destination-unreachable errors.

use std::net::{IpAddr, SocketAddr};

use super::checksum::{internet_checksum, pseudo_header_checksum};
use super::icmp::{
    is_icmpv4_error, is_icmpv6_error, ICMPV4_ADMIN_PROHIBITED, ICMPV4_DEST_UNREACHABLE,
    ICMPV4_PORT_UNREACHABLE, ICMPV6_ADMIN_PROHIBITED, ICMPV6_DEST_UNREACHABLE,
    ICMPV6_PORT_UNREACHABLE,
};
use super::ipv4::Ipv4Packet;
use super::ipv6::{walk_extensions, Ipv6Packet};
use super::{IpProtocol, WireError};

/// TTL / hop limit of the packets the gateway builds.
pub const DEFAULT_TTL: u8 = 64;

/// Largest ICMPv4 error datagram: RFC 1812 4.3.2.3 (quote as much as fits in 576 bytes).
const ICMPV4_MAX_LEN: usize = 576;
/// Largest ICMPv6 error packet: the IPv6 minimum MTU (RFC 4443 2.4 (c)).
const ICMPV6_MAX_LEN: usize = 1280;

/// Why a packet was not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Source and destination are of different address families.
    #[error("source and destination address families differ")]
    AddressFamilyMismatch,
    /// The offending packet could not be parsed.
    #[error("offending packet is malformed: {0}")]
    Malformed(#[from] WireError),
    /// RFC 1122 3.2.2 / RFC 4443 2.4 (e) forbid an ICMP error in reply to this packet.
    #[error("no ICMP error may be sent in reply: {0}")]
    Suppressed(&'static str),
}

/// A TCP RST to build: addresses, ports and sequence numbers as they go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRst {
    /// Source of the RST (the peer it impersonates).
    pub src: SocketAddr,
    /// Destination of the RST (the endpoint to reset).
    pub dst: SocketAddr,
    /// Sequence number: the next sequence number the destination expects from the source.
    pub seq: u32,
    /// Acknowledgment number; `Some` sets the ACK flag.
    pub ack: Option<u32>,
}

/// Which end of a flow a reset goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RstTarget {
    /// The client (the side that sent the SYN).
    Client,
    /// The server.
    Server,
}

/// The sequence state of a TCP flow as the gateway has seen it, enough to reset either end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlowSeq {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The server's address and port.
    pub server: SocketAddr,
    /// The client's next sequence number as the server knows it: one past the last client byte
    /// forwarded to the server (held bytes were not forwarded, so they do not count), or the
    /// client's ISN + 1 after the SYN.
    pub client_next_seq: u32,
    /// The server's next sequence number (its ISN + 1 once the SYN-ACK was seen, plus any bytes
    /// it sent); `None` when the server has not answered.
    pub server_next_seq: Option<u32>,
}

impl TcpFlowSeq {
    /// The reset for one end of the flow.
    ///
    /// - To the client: from the server, `seq` = the server's next sequence number and ACK =
    ///   the client's next sequence number. Before the server answered (a verdict on the SYN)
    ///   this is the RFC 9293 reply to a segment without ACK: `seq` 0 and ACK = the client's next
    ///   sequence number (its ISN + 1), which a client in SYN-SENT accepts.
    /// - To the server: from the client, `seq` = the client's next sequence number, with ACK of
    ///   the server's next sequence number when known.
    pub fn rst(&self, target: RstTarget) -> TcpRst {
        match target {
            RstTarget::Client => TcpRst {
                src: self.server,
                dst: self.client,
                seq: self.server_next_seq.unwrap_or(0),
                ack: Some(self.client_next_seq),
            },
            RstTarget::Server => TcpRst {
                src: self.client,
                dst: self.server,
                seq: self.client_next_seq,
                ack: self.server_next_seq,
            },
        }
    }
}

fn push_ipv4_header(out: &mut Vec<u8>, src: [u8; 4], dst: [u8; 4], protocol: u8, total: usize) {
    let start = out.len();
    // Callers never build more than 576 bytes over IPv4.
    let total = total as u16;
    out.extend_from_slice(&[0x45, 0x00]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[0x00, 0x00, 0x40, 0x00]); // ident 0, DF
    out.extend_from_slice(&[DEFAULT_TTL, protocol, 0x00, 0x00]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    let c = internet_checksum(&out[start..start + 20]);
    out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
}

fn push_ipv6_header(out: &mut Vec<u8>, src: [u8; 16], dst: [u8; 16], nh: u8, payload: usize) {
    // Callers never build more than 1280 bytes.
    let payload = payload as u16;
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[nh, DEFAULT_TTL]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
}

fn push_ip_header(
    out: &mut Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    protocol: IpProtocol,
    l4_len: usize,
) -> Result<(), BuildError> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            push_ipv4_header(out, s.octets(), d.octets(), protocol.number(), 20 + l4_len);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            push_ipv6_header(out, s.octets(), d.octets(), protocol.number(), l4_len);
        }
        _ => return Err(BuildError::AddressFamilyMismatch),
    }
    Ok(())
}

/// Fills the checksum at `l4_start + field` over the transport bytes from `l4_start` with the
/// pseudo-header (or without it, for ICMPv4).
fn fill_l4_checksum(
    out: &mut [u8],
    l4_start: usize,
    field: usize,
    src: IpAddr,
    dst: IpAddr,
    protocol: IpProtocol,
) {
    let l4 = &out[l4_start..];
    let c = if protocol == IpProtocol::Icmp {
        internet_checksum(l4)
    } else {
        match pseudo_header_checksum(src, dst, protocol.number(), l4.len() as u32) {
            Some(mut c) => c.add_bytes(l4).finish(),
            // Families were checked when the IP header was written.
            None => return,
        }
    };
    out[l4_start + field..l4_start + field + 2].copy_from_slice(&c.to_be_bytes());
}

/// Appends an IPv4 or IPv6 TCP RST (RST, plus ACK when `rst.ack` is set; window 0, no options,
/// TTL 64) to `out` and returns its length.
pub fn build_tcp_rst(out: &mut Vec<u8>, rst: &TcpRst) -> Result<usize, BuildError> {
    let start = out.len();
    let (src, dst) = (rst.src.ip(), rst.dst.ip());
    if let Err(e) = push_ip_header(out, src, dst, IpProtocol::Tcp, 20) {
        out.truncate(start);
        return Err(e);
    }
    let l4 = out.len();
    let flags: u8 = if rst.ack.is_some() { 0x14 } else { 0x04 };
    out.extend_from_slice(&rst.src.port().to_be_bytes());
    out.extend_from_slice(&rst.dst.port().to_be_bytes());
    out.extend_from_slice(&rst.seq.to_be_bytes());
    out.extend_from_slice(&rst.ack.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]);
    fill_l4_checksum(out, l4, 16, src, dst, IpProtocol::Tcp);
    Ok(out.len() - start)
}

/// Appends an ICMP "administratively prohibited" destination-unreachable error about `offending`
/// (a raw IP packet the gateway refuses) to `out`, and returns its length: ICMPv4 type 3 code 13
/// or ICMPv6 type 1 code 1, sent to the offending packet's source from `source` (by default the
/// offending packet's destination, as if the destination refused it). The offending packet is
/// quoted from its IP header on, as much as fits in 576 bytes (IPv4, RFC 1812 4.3.2.3) or 1280
/// bytes (IPv6, RFC 4443 2.4).
///
/// Refused ([`BuildError::Suppressed`]) as RFC 1122 3.2.2 and RFC 4443 2.4 (e) require: in reply
/// to an ICMP error, to a fragment other than the first, to a multicast or broadcast
/// destination, or to a source that is not a unicast host address.
pub fn build_icmp_unreachable(
    out: &mut Vec<u8>,
    offending: &[u8],
    source: Option<IpAddr>,
) -> Result<usize, BuildError> {
    build_icmp_error(out, offending, source, Unreachable::Prohibited)
}

/// Which destination-unreachable error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Administratively prohibited: ICMPv4 type 3 code 13, ICMPv6 type 1 code 1.
    Prohibited,
    /// Port unreachable: ICMPv4 type 3 code 3, ICMPv6 type 1 code 4. A QUIC client takes it as
    /// "no QUIC here" and falls back to TCP at once, where the prohibited error would make some
    /// clients give up on the host altogether.
    Port,
}

/// As [`build_icmp_unreachable`], with the error chosen by `kind`.
pub fn build_icmp_error(
    out: &mut Vec<u8>,
    offending: &[u8],
    source: Option<IpAddr>,
    kind: Unreachable,
) -> Result<usize, BuildError> {
    let start = out.len();
    let r = build_icmp_inner(out, offending, source, kind);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn build_icmp_inner(
    out: &mut Vec<u8>,
    offending: &[u8],
    source: Option<IpAddr>,
    kind: Unreachable,
) -> Result<usize, BuildError> {
    let (code4, code6) = match kind {
        Unreachable::Prohibited => (ICMPV4_ADMIN_PROHIBITED, ICMPV6_ADMIN_PROHIBITED),
        Unreachable::Port => (ICMPV4_PORT_UNREACHABLE, ICMPV6_PORT_UNREACHABLE),
    };
    let start = out.len();
    match offending.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(offending)?;
            let (osrc, odst) = (ip.src_addr(), ip.dst_addr());
            if ip.frag_offset() != 0 {
                return Err(BuildError::Suppressed("non-first fragment"));
            }
            if odst.is_multicast() || odst.is_broadcast() {
                return Err(BuildError::Suppressed("multicast or broadcast destination"));
            }
            if osrc.is_unspecified()
                || osrc.is_multicast()
                || osrc.is_broadcast()
                || osrc.is_loopback()
            {
                return Err(BuildError::Suppressed("source is not a unicast host"));
            }
            if ip.protocol() == IpProtocol::Icmp {
                match ip.payload().first() {
                    Some(&t) if !is_icmpv4_error(t) => {}
                    _ => return Err(BuildError::Suppressed("offending packet is an ICMP error")),
                }
            }
            let from = match source.unwrap_or(IpAddr::V4(odst)) {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => return Err(BuildError::AddressFamilyMismatch),
            };
            let quote = &ip.packet()[..ip.total_len().min(ICMPV4_MAX_LEN - 28)];
            push_ipv4_header(out, from.octets(), osrc.octets(), 1, 28 + quote.len());
            let l4 = out.len();
            out.extend_from_slice(&[ICMPV4_DEST_UNREACHABLE, code4, 0, 0]);
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(quote);
            fill_l4_checksum(out, l4, 2, from.into(), osrc.into(), IpProtocol::Icmp);
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(offending)?;
            let (osrc, odst) = (ip.src_addr(), ip.dst_addr());
            let walk = walk_extensions(ip.next_header(), ip.payload())?;
            if walk.fragment.is_some_and(|f| f.offset != 0) {
                return Err(BuildError::Suppressed("non-first fragment"));
            }
            if odst.is_multicast() {
                return Err(BuildError::Suppressed("multicast destination"));
            }
            if osrc.is_unspecified() || osrc.is_multicast() || osrc.is_loopback() {
                return Err(BuildError::Suppressed("source is not a unicast host"));
            }
            if walk.protocol == IpProtocol::Icmpv6.number() {
                match ip.payload().get(walk.offset) {
                    Some(&t) if !is_icmpv6_error(t) => {}
                    _ => return Err(BuildError::Suppressed("offending packet is an ICMP error")),
                }
            }
            let from = match source.unwrap_or(IpAddr::V6(odst)) {
                IpAddr::V6(a) => a,
                IpAddr::V4(_) => return Err(BuildError::AddressFamilyMismatch),
            };
            let pkt = ip.packet();
            let quote = &pkt[..pkt.len().min(ICMPV6_MAX_LEN - 48)];
            push_ipv6_header(out, from.octets(), osrc.octets(), 58, 8 + quote.len());
            let l4 = out.len();
            out.extend_from_slice(&[ICMPV6_DEST_UNREACHABLE, code6, 0, 0]);
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(quote);
            fill_l4_checksum(out, l4, 2, from.into(), osrc.into(), IpProtocol::Icmpv6);
        }
        Some(v) => return Err(WireError::UnknownVersion(v).into()),
        None => return Err(WireError::Empty.into()),
    }
    Ok(out.len() - start)
}
