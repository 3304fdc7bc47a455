//! The one entry point of the pipeline: [`parse`] a raw IP packet.

use std::net::IpAddr;

use super::checksum::pseudo_header_checksum;
use super::icmp::IcmpPacket;
use super::ipv4::Ipv4Packet;
use super::ipv6::{walk_extensions, Ipv6Packet};
use super::tcp::{TcpFlags, TcpOptions, TcpPacket};
use super::udp::UdpPacket;
use super::{IpProtocol, WireError};

/// Fragmentation of a packet, when it is a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Offset in 8-byte units.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub ident: u32,
}

/// Why a fragment's transport header cannot be read. The pipeline drops such packets and counts
/// them; it never guesses ports from a partial header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentDrop {
    /// A fragment other than the first: it carries no transport header.
    NotFirst,
    /// The first fragment, too short to hold the whole TCP/UDP/ICMP header (RFC 1858, RFC 7112).
    HeaderSplit,
}

/// A TCP segment, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when `flags` has ACK).
    pub ack: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Window field (unscaled).
    pub window: u16,
    /// Header length in bytes, options included.
    pub header_len: usize,
    /// Raw option bytes.
    pub options: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> TcpSegment<'a> {
    /// The options, parsed lazily.
    pub fn options(&self) -> TcpOptions<'a> {
        TcpOptions::new(self.options)
    }

    /// The MSS option, if present.
    pub fn mss(&self) -> Option<u16> {
        self.options().mss()
    }

    /// Sequence space the segment occupies: payload length, plus one for SYN and one for FIN.
    pub fn seq_len(&self) -> u32 {
        // A payload fits in 64 KiB: IP lengths are 16-bit.
        self.payload.len() as u32 + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }
}

/// A UDP datagram, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The payload, up to the UDP length.
    pub payload: &'a [u8],
}

/// An ICMP or ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpMessage<'a> {
    /// Message type.
    pub msg_type: u8,
    /// Message code.
    pub code: u8,
    /// The body after the 8-byte header.
    pub payload: &'a [u8],
}

/// The transport layer of a parsed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4<'a> {
    /// TCP.
    Tcp(TcpSegment<'a>),
    /// UDP.
    Udp(UdpDatagram<'a>),
    /// ICMP for IPv4.
    Icmp(IcmpMessage<'a>),
    /// ICMPv6.
    Icmpv6(IcmpMessage<'a>),
    /// A fragment whose transport header cannot be read: drop and count.
    Fragment(FragmentDrop),
    /// Any other protocol (ESP, GRE, SCTP, No Next Header, ...): the opaque payload.
    Other(&'a [u8]),
}

/// A parsed IP packet: everything the pipeline needs, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedPacket<'a> {
    /// The packet up to its IP length (link-layer padding removed).
    pub packet: &'a [u8],
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub protocol: IpProtocol,
    /// Fragmentation, if the packet is a fragment (an IPv6 atomic fragment is not one).
    pub fragment: Option<FragmentInfo>,
    /// Offset of the transport header in `packet` (after IPv4 options or IPv6 extensions).
    pub l4_offset: usize,
    /// Offset of the transport payload in `packet` (equal to `l4_offset` for [`L4::Other`] and
    /// [`L4::Fragment`]).
    pub payload_offset: usize,
    /// The transport layer.
    pub l4: L4<'a>,
}

/// Result of [`ParsedPacket::verify_transport_checksum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// The checksum is correct.
    Valid,
    /// The checksum is wrong: the receiver will discard the packet.
    Invalid,
    /// Nothing to verify: UDP over IPv4 with checksum 0, a fragment (the checksum covers the
    /// reassembled datagram), or a protocol without a checksum this module knows.
    NotApplicable,
}

impl<'a> ParsedPacket<'a> {
    /// Whether this is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// Source and destination ports for TCP and UDP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp(t) => Some((t.src_port, t.dst_port)),
            L4::Udp(u) => Some((u.src_port, u.dst_port)),
            _ => None,
        }
    }

    /// The TCP segment, if this is one.
    pub fn tcp(&self) -> Option<&TcpSegment<'a>> {
        match &self.l4 {
            L4::Tcp(t) => Some(t),
            _ => None,
        }
    }

    /// The transport payload (empty for fragments).
    pub fn payload(&self) -> &'a [u8] {
        match self.l4 {
            L4::Tcp(t) => t.payload,
            L4::Udp(u) => u.payload,
            L4::Icmp(m) | L4::Icmpv6(m) => m.payload,
            L4::Other(p) => p,
            L4::Fragment(_) => &[],
        }
    }

    /// The transport header and payload (from `l4_offset` to the end of the packet).
    pub fn l4_bytes(&self) -> &'a [u8] {
        &self.packet[self.l4_offset..]
    }

    /// Verifies the TCP, UDP or ICMP checksum of an unfragmented packet.
    pub fn verify_transport_checksum(&self) -> ChecksumStatus {
        if self.fragment.is_some() {
            return ChecksumStatus::NotApplicable;
        }
        let seg = match self.l4 {
            L4::Tcp(_) | L4::Icmpv6(_) => self.l4_bytes(),
            L4::Udp(u) => {
                let d = &self.l4_bytes()[..8 + u.payload.len()];
                if d[6] == 0 && d[7] == 0 {
                    // Optional over IPv4; mandatory over IPv6 (RFC 8200 8.1).
                    return if self.is_ipv6() {
                        ChecksumStatus::Invalid
                    } else {
                        ChecksumStatus::NotApplicable
                    };
                }
                d
            }
            L4::Icmp(_) => {
                return if super::internet_checksum(self.l4_bytes()) == 0 {
                    ChecksumStatus::Valid
                } else {
                    ChecksumStatus::Invalid
                };
            }
            L4::Fragment(_) | L4::Other(_) => return ChecksumStatus::NotApplicable,
        };
        let Ok(len) = u32::try_from(seg.len()) else {
            return ChecksumStatus::Invalid;
        };
        let Some(mut c) = pseudo_header_checksum(self.src, self.dst, self.protocol.number(), len)
        else {
            return ChecksumStatus::Invalid;
        };
        if c.add_bytes(seg).finish() == 0 {
            ChecksumStatus::Valid
        } else {
            ChecksumStatus::Invalid
        }
    }
}

/// Parses a raw IPv4 or IPv6 packet (no link-layer header).
///
/// Errors are for packets no host would accept (bad lengths, truncated headers, a mangled
/// extension chain). Fragments whose transport header cannot be read are not errors: they parse
/// to [`L4::Fragment`] with their addresses, so the pipeline can attribute and count them.
#[inline]
pub fn parse(packet: &[u8]) -> Result<ParsedPacket<'_>, WireError> {
    let first = *packet.first().ok_or(WireError::Empty)?;
    match first >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        v => Err(WireError::UnknownVersion(v)),
    }
}

#[inline]
fn parse_v4(buf: &[u8]) -> Result<ParsedPacket<'_>, WireError> {
    let ip = Ipv4Packet::new_checked(buf)?;
    let packet = &buf[..ip.total_len()];
    let fragment = ip.is_fragment().then(|| FragmentInfo {
        offset: ip.frag_offset(),
        more: ip.more_frags(),
        ident: u32::from(ip.ident()),
    });
    finish(
        packet,
        IpAddr::V4(ip.src_addr()),
        IpAddr::V4(ip.dst_addr()),
        ip.ttl(),
        ip.protocol(),
        fragment,
        ip.header_len(),
    )
}

fn parse_v6(buf: &[u8]) -> Result<ParsedPacket<'_>, WireError> {
    let ip = Ipv6Packet::new_checked(buf)?;
    let walk = walk_extensions(ip.next_header(), ip.payload())?;
    let packet = &buf[..ip.packet().len()];
    let fragment = walk.fragment.map(|f| FragmentInfo {
        offset: f.offset,
        more: f.more,
        ident: f.ident,
    });
    finish(
        packet,
        IpAddr::V6(ip.src_addr()),
        IpAddr::V6(ip.dst_addr()),
        ip.hop_limit(),
        IpProtocol::from(walk.protocol),
        fragment,
        super::ipv6::HEADER_LEN + walk.offset,
    )
}

// Inlined so that the packet is built in the caller's frame rather than copied out of a return
// slot.
#[inline(always)]
fn finish(
    packet: &[u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    protocol: IpProtocol,
    fragment: Option<FragmentInfo>,
    l4_offset: usize,
) -> Result<ParsedPacket<'_>, WireError> {
    let body = &packet[l4_offset..];
    // The transport layer is read first and the packet built once, in the return value: the
    // struct is large and copying it is a measurable part of the per-packet cost.
    let (l4, payload_offset) = transport(body, protocol, fragment, l4_offset)?;
    Ok(ParsedPacket {
        packet,
        src,
        dst,
        ttl,
        protocol,
        fragment,
        l4_offset,
        payload_offset,
        l4,
    })
}

/// The transport layer of a packet whose transport header starts `body` (at `l4_offset` in the
/// packet), and the offset of its payload in the packet.
#[inline]
fn transport(
    body: &[u8],
    protocol: IpProtocol,
    fragment: Option<FragmentInfo>,
    l4_offset: usize,
) -> Result<(L4<'_>, usize), WireError> {
    let is_first_fragment = match fragment {
        Some(f) if f.offset != 0 => return Ok((L4::Fragment(FragmentDrop::NotFirst), l4_offset)),
        Some(_) => true,
        None => false,
    };
    // In a first fragment, a transport header cut by the fragment boundary is a fragment to drop;
    // in a whole packet it is a malformed packet.
    let header_result = match protocol {
        IpProtocol::Tcp => TcpPacket::new_checked(body).map(|t| {
            let hl = t.header_len();
            let seg = TcpSegment {
                src_port: t.src_port(),
                dst_port: t.dst_port(),
                seq: t.seq(),
                ack: t.ack(),
                flags: t.flags(),
                window: t.window(),
                header_len: hl,
                options: &body[20..hl],
                payload: &body[hl..],
            };
            (L4::Tcp(seg), l4_offset + hl)
        }),
        IpProtocol::Udp if is_first_fragment => {
            // The UDP length covers the whole datagram, not this fragment: only the header counts.
            if body.len() < 8 {
                Err(WireError::Truncated {
                    layer: super::Layer::Udp,
                    needed: 8,
                    available: body.len(),
                })
            } else {
                Ok((
                    L4::Udp(UdpDatagram {
                        src_port: u16::from_be_bytes([body[0], body[1]]),
                        dst_port: u16::from_be_bytes([body[2], body[3]]),
                        payload: &body[8..],
                    }),
                    l4_offset + 8,
                ))
            }
        }
        IpProtocol::Udp => UdpPacket::new_checked(body).map(|u| {
            (
                L4::Udp(UdpDatagram {
                    src_port: u.src_port(),
                    dst_port: u.dst_port(),
                    payload: &body[8..u.len()],
                }),
                l4_offset + 8,
            )
        }),
        IpProtocol::Icmp | IpProtocol::Icmpv6 => IcmpPacket::new_checked(body).map(|m| {
            let msg = IcmpMessage {
                msg_type: m.msg_type(),
                code: m.code(),
                payload: &body[8..],
            };
            let l4 = if protocol == IpProtocol::Icmp {
                L4::Icmp(msg)
            } else {
                L4::Icmpv6(msg)
            };
            (l4, l4_offset + 8)
        }),
        IpProtocol::Unknown(_) => Ok((L4::Other(body), l4_offset)),
    };
    match header_result {
        Ok(r) => Ok(r),
        Err(WireError::Truncated { .. }) if is_first_fragment => {
            Ok((L4::Fragment(FragmentDrop::HeaderSplit), l4_offset))
        }
        Err(e) => Err(e),
    }
}
