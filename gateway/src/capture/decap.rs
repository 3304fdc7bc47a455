//! Tunnels and traffic mirrors in captures: the IP packet inside VXLAN, GENEVE, GRE (with
//! transparent Ethernet bridging and ERSPAN types I, II and III) and IP-in-IP (4in4, 6in4, 4in6,
//! 6in6).
//!
//! Captures taken where a cloud delivers mirrored traffic hold the workloads' packets wrapped in
//! a tunnel: AWS VPC Traffic Mirroring sends VXLAN (UDP 4789), a Gateway Load Balancer sends
//! GENEVE (UDP 6081, with options), switches and routers send GRE or ERSPAN, and IP-in-IP links
//! carry their own. [`decapsulate`] peels these layers off, at most [`MAX_TUNNEL_DEPTH`] of them,
//! so that replay decides the workloads' flows rather than the mirror's.
//!
//! Only replay does this. The live gateway never decapsulates: a tunnel protocol is a protocol
//! like any other to its policy (see docs/policy.md), since the gateway cannot vouch for what a
//! tunnel carries beyond it.
//!
//! The parser checks every length before it reads and never guesses: a layer that is not what
//! its port or protocol number announces (a VXLAN header without its `I` flag, a GRE version it
//! does not know, a header cut short, a fragment of the outer packet) is not opened, and the
//! packet is replayed as it stands at that layer, like any other UDP or IP packet.

use std::ops::Range;

use super::link::{ip_payload_range, LinkType};
use crate::wire::{self, IpProtocol, L4};

/// Most tunnel layers opened in one packet. Real mirrors nest one or two (ERSPAN of VXLAN
/// traffic); past this the packet is not replayed, and counted
/// ([`Decap::TooDeep`]).
pub const MAX_TUNNEL_DEPTH: usize = 4;

/// VXLAN's IANA port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// GENEVE's IANA port (RFC 8926).
pub const GENEVE_PORT: u16 = 6081;

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
/// Transparent Ethernet bridging: an Ethernet frame follows.
const ETH_TEB: u16 = 0x6558;
/// ERSPAN type I (GRE without a sequence number) and II (with one).
const ETH_ERSPAN_2: u16 = 0x88be;
/// ERSPAN type III.
const ETH_ERSPAN_3: u16 = 0x22eb;

/// A tunnel protocol, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// VXLAN over UDP 4789.
    Vxlan,
    /// GENEVE over UDP 6081.
    Geneve,
    /// GRE carrying IP or Ethernet.
    Gre,
    /// ERSPAN (over GRE).
    Erspan,
    /// IP in IP (4in4, 6in4, 4in6, 6in6).
    IpInIp,
}

/// What [`decapsulate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decap {
    /// The packet to replay: `range` of the input, inside `layers` tunnels (0: not a tunnel),
    /// the innermost being `last`.
    Packet {
        /// Where the packet to replay lies in the input.
        range: Range<usize>,
        /// Tunnel layers opened.
        layers: usize,
        /// The innermost tunnel opened, if any.
        last: Option<Tunnel>,
    },
    /// A tunnel that carries something other than IP (ARP, LLDP, ... in an Ethernet frame).
    NotIp,
    /// More than [`MAX_TUNNEL_DEPTH`] tunnels: not replayed.
    TooDeep,
}

/// One step: the IP packet (or Ethernet frame) a tunnel layer carries, as a range of `packet`.
enum Inner {
    /// An IP packet.
    Ip(Range<usize>, Tunnel),
    /// An Ethernet frame.
    Ethernet(Range<usize>, Tunnel),
    /// Not a tunnel this module opens (or not a well-formed one).
    None,
}

/// Peels the tunnels off `packet` (an IP packet, as a capture reader yields it).
pub fn decapsulate(packet: &[u8]) -> Decap {
    let mut range = 0..packet.len();
    let mut layers = 0usize;
    let mut last = None;
    loop {
        let here = &packet[range.clone()];
        let (inner, tunnel) = match layer(here) {
            Inner::None => {
                return Decap::Packet {
                    range,
                    layers,
                    last,
                }
            }
            Inner::Ip(r, t) => (r, t),
            Inner::Ethernet(r, t) => match ip_payload_range(LinkType::Ethernet, &here[r.clone()]) {
                Some(ip) => (r.start + ip.start..r.start + ip.end, t),
                None => return Decap::NotIp,
            },
        };
        layers += 1;
        if layers > MAX_TUNNEL_DEPTH {
            return Decap::TooDeep;
        }
        last = Some(tunnel);
        range = range.start + inner.start..range.start + inner.end;
    }
}

/// The offset of `inner` (a subslice of `outer`) in `outer`.
fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize)
}

/// The tunnel layer of one IP packet, if it is one.
fn layer(packet: &[u8]) -> Inner {
    let Ok(p) = wire::parse(packet) else {
        return Inner::None;
    };
    if p.fragment.is_some() {
        // The tunnel payload is split across fragments: nothing to open.
        return Inner::None;
    }
    let (body, kind) = match (&p.l4, p.protocol) {
        (L4::Udp(u), _) if u.dst_port == VXLAN_PORT => (u.payload, Kind::Vxlan),
        (L4::Udp(u), _) if u.dst_port == GENEVE_PORT => (u.payload, Kind::Geneve),
        (L4::Other(b), IpProtocol::Unknown(IPPROTO_GRE)) => (*b, Kind::Gre),
        (L4::Other(b), IpProtocol::Unknown(IPPROTO_IPIP)) => (*b, Kind::Ip(4)),
        (L4::Other(b), IpProtocol::Unknown(IPPROTO_IPV6)) => (*b, Kind::Ip(6)),
        _ => return Inner::None,
    };
    let base = offset_in(packet, body);
    let shift = |r: Range<usize>| base + r.start..base + r.end;
    // An IP payload must be the IP version its header announces: anything else is not opened.
    let ip = |r: Range<usize>, version: u8, t: Tunnel| match body.get(r.start) {
        Some(b) if b >> 4 == version => Inner::Ip(shift(r), t),
        _ => Inner::None,
    };
    match kind {
        Kind::Vxlan => {
            vxlan(body).map_or(Inner::None, |r| Inner::Ethernet(shift(r), Tunnel::Vxlan))
        }
        Kind::Geneve => match geneve(body) {
            Some((r, Payload::Ethernet)) => Inner::Ethernet(shift(r), Tunnel::Geneve),
            Some((r, Payload::Ip(v))) => ip(r, v, Tunnel::Geneve),
            None => Inner::None,
        },
        Kind::Gre => match gre(body) {
            Some((r, Payload::Ip(v), t)) => ip(r, v, t),
            Some((r, Payload::Ethernet, t)) => Inner::Ethernet(shift(r), t),
            None => Inner::None,
        },
        Kind::Ip(v) => ip(0..body.len(), v, Tunnel::IpInIp),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Vxlan,
    Geneve,
    Gre,
    /// IP in IP, the inner IP version.
    Ip(u8),
}

#[derive(Clone, Copy)]
enum Payload {
    /// An IP packet of this version.
    Ip(u8),
    Ethernet,
}

/// The payload an IP ethertype announces.
fn ip_payload_of(ethertype: u16) -> Option<Payload> {
    match ethertype {
        ETH_IPV4 => Some(Payload::Ip(4)),
        ETH_IPV6 => Some(Payload::Ip(6)),
        _ => None,
    }
}

/// VXLAN (RFC 7348): 8 bytes, the `I` flag (a valid VNI) set; an Ethernet frame follows.
fn vxlan(b: &[u8]) -> Option<Range<usize>> {
    let hdr = b.get(..8)?;
    (hdr[0] & 0x08 != 0).then_some(8..b.len())
}

/// GENEVE (RFC 8926): version 0, 8 bytes and the options; an Ethernet frame (protocol 0x6558)
/// or an IP packet (0x0800, 0x86dd, as a Gateway Load Balancer sends) follows.
fn geneve(b: &[u8]) -> Option<(Range<usize>, Payload)> {
    let hdr = b.get(..8)?;
    if hdr[0] >> 6 != 0 {
        return None;
    }
    let len = 8 + usize::from(hdr[0] & 0x3f) * 4;
    if b.len() < len {
        return None;
    }
    match u16::from_be_bytes([hdr[2], hdr[3]]) {
        ETH_TEB => Some((len..b.len(), Payload::Ethernet)),
        other => ip_payload_of(other).map(|p| (len..b.len(), p)),
    }
}

/// GRE (RFC 2784 with the key and sequence number of RFC 2890), version 0, without routing; an
/// IP packet, an Ethernet frame (transparent bridging) or an ERSPAN header and frame follows.
fn gre(b: &[u8]) -> Option<(Range<usize>, Payload, Tunnel)> {
    let hdr = b.get(..4)?;
    let flags = u16::from_be_bytes([hdr[0], hdr[1]]);
    let (checksum, routing, key, seq) = (
        flags & 0x8000 != 0,
        flags & 0x4000 != 0,
        flags & 0x2000 != 0,
        flags & 0x1000 != 0,
    );
    if routing || flags & 0x0007 != 0 {
        // Source routing (RFC 1701) and version 1 (PPTP's enhanced GRE) are not opened.
        return None;
    }
    let len = 4 + 4 * (usize::from(checksum) + usize::from(key) + usize::from(seq));
    if b.len() < len {
        return None;
    }
    let rest = len..b.len();
    let ethertype = u16::from_be_bytes([hdr[2], hdr[3]]);
    if let Some(p) = ip_payload_of(ethertype) {
        return Some((rest, p, Tunnel::Gre));
    }
    match ethertype {
        ETH_TEB => Some((rest, Payload::Ethernet, Tunnel::Gre)),
        // Type I has no sequence number and no header of its own; type II has both.
        ETH_ERSPAN_2 if !seq => Some((rest, Payload::Ethernet, Tunnel::Erspan)),
        ETH_ERSPAN_2 => {
            let e = b.get(len..len + 8)?;
            (e[0] >> 4 == 1).then_some((len + 8..b.len(), Payload::Ethernet, Tunnel::Erspan))
        }
        ETH_ERSPAN_3 => {
            let e = b.get(len..len + 12)?;
            if e[0] >> 4 != 2 {
                return None;
            }
            // The `O` flag: an 8-byte platform-specific subheader follows.
            let start = len + 12 + if e[11] & 0x01 != 0 { 8 } else { 0 };
            (b.len() >= start).then_some((start..b.len(), Payload::Ethernet, Tunnel::Erspan))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
