//! Zero-copy views over the packet formats the gateway reads, and builders for the few packets it
//! writes itself.
//!
//! The layout follows smoltcp's `wire` module: each header format is a view
//! (`Ipv4Packet<T: AsRef<[u8]>>`, ...) over a byte buffer that is checked once by `new_checked`
//! and then read through field accessors that never index out of bounds. On top of the views,
//! [`parse`] is the one entry point the pipeline uses: it takes a raw IP packet as read from the
//! TUN device (or a capture), walks the IPv4 options or the IPv6 extension header chain, and
//! returns a [`ParsedPacket`] with the addresses, the transport protocol, ports, TCP fields and
//! the L4 payload slice, all borrowed from the input.
//!
//! The gateway never rewrites a forwarded packet: it forwards the bytes it read, drops them, or
//! emits a packet of its own. Those are built by [`build_tcp_rst`] and
//! [`build_icmp_unreachable`] into a caller-provided `Vec<u8>`, with correct checksums.
//!
//! Fragments are never reassembled. A fragment that is not the first one, or a first fragment too
//! short to hold the whole TCP/UDP header, is reported as [`L4::Fragment`] so the pipeline can
//! drop and count it: the gateway does not guess ports or names from a partial header.
//!
//! Checksums are not verified by [`parse`] (captures taken with checksum offload carry garbage in
//! them, and the kernel checked the IPv4 header before it routed the packet to the TUN device);
//! [`ParsedPacket::verify_transport_checksum`] and [`Ipv4Packet::verify_checksum`] do it on
//! request.

mod build;
mod checksum;
mod icmp;
mod ipv4;
mod ipv6;
mod parse;
mod tcp;
mod udp;

pub use build::{
    build_icmp_error, build_icmp_unreachable, build_tcp_rst, BuildError, RstTarget, TcpFlowSeq,
    TcpRst, Unreachable,
};
pub use checksum::{internet_checksum, pseudo_header_checksum, Checksum};
pub use icmp::{IcmpPacket, ICMPV4_DEST_UNREACHABLE, ICMPV6_DEST_UNREACHABLE};
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6Packet, MAX_EXTENSION_HEADERS};
pub use parse::{
    parse, ChecksumStatus, FragmentDrop, FragmentInfo, IcmpMessage, ParsedPacket, TcpSegment,
    UdpDatagram, L4,
};
pub use tcp::{TcpFlags, TcpOption, TcpOptions, TcpPacket};
pub use udp::UdpPacket;

/// An IP protocol number (IPv4 `protocol`, IPv6 upper-layer `next header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProtocol {
    /// ICMP for IPv4 (1).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other protocol number, kept as is.
    Unknown(u8),
}

impl IpProtocol {
    /// The protocol number on the wire.
    pub const fn number(self) -> u8 {
        match self {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Unknown(n) => n,
        }
    }
}

impl From<u8> for IpProtocol {
    fn from(n: u8) -> Self {
        match n {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            58 => IpProtocol::Icmpv6,
            n => IpProtocol::Unknown(n),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        p.number()
    }
}

impl std::fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpProtocol::Icmp => f.write_str("icmp"),
            IpProtocol::Tcp => f.write_str("tcp"),
            IpProtocol::Udp => f.write_str("udp"),
            IpProtocol::Icmpv6 => f.write_str("ipv6-icmp"),
            IpProtocol::Unknown(n) => write!(f, "{n}"),
        }
    }
}

/// The header a [`WireError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The IPv4 header (with its options).
    Ipv4,
    /// The fixed IPv6 header.
    Ipv6,
    /// An IPv6 extension header.
    Ipv6Extension,
    /// The TCP header (with its options).
    Tcp,
    /// The UDP header.
    Udp,
    /// The ICMP or ICMPv6 header.
    Icmp,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Ipv6Extension => "IPv6 extension",
            Layer::Tcp => "TCP",
            Layer::Udp => "UDP",
            Layer::Icmp => "ICMP",
        })
    }
}

/// Why a packet could not be parsed. The pipeline drops such packets and counts them by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// No bytes at all.
    #[error("empty packet")]
    Empty,
    /// The first nibble is neither 4 nor 6.
    #[error("unknown IP version {0}")]
    UnknownVersion(u8),
    /// A header is cut short by the end of the packet.
    #[error("{layer} header truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// The header that is cut.
        layer: Layer,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// IPv4 IHL below 5.
    #[error("IPv4 header length field {0} is below the minimum of 5")]
    BadIpv4HeaderLength(u8),
    /// IPv4 total length smaller than the header or larger than the packet.
    #[error("IPv4 total length {total} does not fit a {header}-byte header in a {available}-byte packet")]
    BadIpv4TotalLength {
        /// The total length field.
        total: u16,
        /// The header length.
        header: usize,
        /// Bytes available.
        available: usize,
    },
    /// IPv6 payload length larger than the packet.
    #[error("IPv6 payload length {payload} exceeds the {available} bytes after the header")]
    BadIpv6PayloadLength {
        /// The payload length field.
        payload: u16,
        /// Bytes available after the fixed header.
        available: usize,
    },
    /// IPv6 payload length 0 (a jumbogram, RFC 2675): never seen on a TUN device of normal MTU.
    #[error("IPv6 jumbograms are not supported")]
    Jumbogram,
    /// More IPv6 extension headers than [`MAX_EXTENSION_HEADERS`].
    #[error("more than {MAX_EXTENSION_HEADERS} IPv6 extension headers")]
    TooManyExtensionHeaders,
    /// A hop-by-hop options header that is not right after the fixed IPv6 header (RFC 8200 4.1).
    #[error("IPv6 hop-by-hop options header not first")]
    HopByHopNotFirst,
    /// Two fragment headers in one chain.
    #[error("IPv6 fragment header repeated")]
    DuplicateFragmentHeader,
    /// TCP data offset below 5.
    #[error("TCP data offset {0} is below the minimum of 5")]
    BadTcpDataOffset(u8),
    /// UDP length field below 8 or beyond the IP payload.
    #[error("UDP length {length} invalid for a {available}-byte datagram")]
    BadUdpLength {
        /// The UDP length field.
        length: u16,
        /// Bytes available in the IP payload.
        available: usize,
    },
}

#[cfg(test)]
mod tests;
