//! IPv6 header view (RFC 8200) and the extension header walk.

use std::net::Ipv6Addr;

use super::{Layer, WireError};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// The most extension headers `walk_extensions` follows before it gives up. Real traffic carries
/// two or three at most; RFC 8200 recommends no more than one of each kind except destination
/// options (twice).
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A checked view over an IPv6 packet: the fixed header is present and the payload length field
/// fits the buffer (which may be longer: link-layer padding is ignored).
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks the version and the payload length. Jumbograms (payload length 0 with a hop-by-hop
    /// jumbo option) are refused.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: Layer::Ipv6,
                needed: HEADER_LEN,
                available: b.len(),
            });
        }
        let version = b[0] >> 4;
        if version != 6 {
            return Err(WireError::UnknownVersion(version));
        }
        let payload = u16::from_be_bytes([b[4], b[5]]);
        // Payload length 0 with next header hop-by-hop is how a jumbogram looks; 0 with any other
        // next header is merely an empty payload.
        if payload == 0 && b[6] == 0 && b.len() > HEADER_LEN {
            return Err(WireError::Jumbogram);
        }
        if usize::from(payload) > b.len() - HEADER_LEN {
            return Err(WireError::BadIpv6PayloadLength {
                payload,
                available: b.len() - HEADER_LEN,
            });
        }
        Ok(Ipv6Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        (self.b()[0] << 4) | (self.b()[1] >> 4)
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        u32::from_be_bytes([0, self.b()[1] & 0x0f, self.b()[2], self.b()[3]])
    }

    /// Payload length field.
    pub fn payload_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[8..24]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[24..40]);
        Ipv6Addr::from(a)
    }

    /// The payload after the fixed header (extension headers included), up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + self.payload_len()]
    }

    /// The whole packet, up to the payload length.
    pub fn packet(&self) -> &[u8] {
        &self.b()[..HEADER_LEN + self.payload_len()]
    }
}

/// The fragment header of a packet, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv6Fragment {
    pub offset: u16,
    pub more: bool,
    pub ident: u32,
}

/// Where the extension header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtensionWalk {
    /// The upper-layer protocol number (for a non-first fragment: the next header of the fragment
    /// header, whose data is not a header we can read).
    pub protocol: u8,
    /// Offset of the upper-layer header in the IPv6 payload.
    pub offset: usize,
    /// The fragment header, if there was one that is not atomic (RFC 6946: offset 0 and M clear is
    /// treated as no fragmentation).
    pub fragment: Option<Ipv6Fragment>,
    /// Number of extension headers walked.
    pub count: usize,
}

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;
const MOBILITY: u8 = 135;
const HIP: u8 = 139;
const SHIM6: u8 = 140;
const EXPERIMENT1: u8 = 253;
const EXPERIMENT2: u8 = 254;

/// Whether `nh` names an extension header that [`walk_extensions`] steps over.
pub(crate) fn is_extension_header(nh: u8) -> bool {
    matches!(
        nh,
        HOP_BY_HOP
            | ROUTING
            | FRAGMENT
            | AUTH
            | DEST_OPTS
            | MOBILITY
            | HIP
            | SHIM6
            | EXPERIMENT1
            | EXPERIMENT2
    )
}

/// Walks the extension header chain that starts with `next_header` at the beginning of
/// `payload`. Stops at the first header that is not an extension header (the upper layer, ESP,
/// No Next Header) or right after a fragment header whose offset is not zero, since what follows
/// it is fragment data and not headers.
pub(crate) fn walk_extensions(next_header: u8, payload: &[u8]) -> Result<ExtensionWalk, WireError> {
    let mut nh = next_header;
    let mut offset = 0usize;
    let mut count = 0usize;
    let mut fragment = None;
    let mut seen_fragment = false;
    while is_extension_header(nh) {
        if count == MAX_EXTENSION_HEADERS {
            return Err(WireError::TooManyExtensionHeaders);
        }
        if nh == HOP_BY_HOP && count != 0 {
            return Err(WireError::HopByHopNotFirst);
        }
        let rest = &payload[offset..];
        if rest.len() < 8 {
            return Err(WireError::Truncated {
                layer: Layer::Ipv6Extension,
                needed: 8,
                available: rest.len(),
            });
        }
        let this = nh;
        let next = rest[0];
        let len = match this {
            FRAGMENT => 8,
            AUTH => (usize::from(rest[1]) + 2) * 4,
            _ => (usize::from(rest[1]) + 1) * 8,
        };
        if rest.len() < len {
            return Err(WireError::Truncated {
                layer: Layer::Ipv6Extension,
                needed: len,
                available: rest.len(),
            });
        }
        count += 1;
        offset += len;
        nh = next;
        if this == FRAGMENT {
            if seen_fragment {
                return Err(WireError::DuplicateFragmentHeader);
            }
            seen_fragment = true;
            let off_flags = u16::from_be_bytes([rest[2], rest[3]]);
            let frag = Ipv6Fragment {
                offset: off_flags >> 3,
                more: off_flags & 1 != 0,
                ident: u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
            };
            if frag.offset != 0 || frag.more {
                fragment = Some(frag);
            }
            if frag.offset != 0 {
                break;
            }
        }
    }
    Ok(ExtensionWalk {
        protocol: nh,
        offset,
        fragment,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_a_chain() {
        // hop-by-hop (8) -> dest opts (16) -> AH (12: len 1) -> routing (8) -> TCP
        let mut p = vec![];
        p.extend_from_slice(&[DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[AUTH, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[ROUTING, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0xaa; 20]);
        let w = walk_extensions(HOP_BY_HOP, &p).unwrap();
        assert_eq!(w.protocol, 6);
        assert_eq!(w.offset, 8 + 16 + 12 + 8);
        assert_eq!(w.count, 4);
        assert_eq!(w.fragment, None);
    }

    #[test]
    fn fragment_headers() {
        // Atomic fragment: no fragmentation.
        let p = [6, 0, 0, 0, 0, 0, 0, 1];
        let w = walk_extensions(FRAGMENT, &p).unwrap();
        assert_eq!((w.protocol, w.offset, w.fragment), (6, 8, None));
        // First fragment: M set.
        let p = [17, 0, 0, 1, 0, 0, 0, 7];
        let w = walk_extensions(FRAGMENT, &p).unwrap();
        assert_eq!(
            w.fragment,
            Some(Ipv6Fragment {
                offset: 0,
                more: true,
                ident: 7
            })
        );
        // Later fragment: stops there even if what follows looks like an extension header.
        let p = [DEST_OPTS, 0, 0, 0x10, 0, 0, 0, 9, 0xff, 0xff];
        let w = walk_extensions(FRAGMENT, &p).unwrap();
        assert_eq!(w.protocol, DEST_OPTS);
        assert_eq!(w.offset, 8);
        assert_eq!(w.fragment.unwrap().offset, 2);
    }

    #[test]
    fn rejects_bad_chains() {
        let loop_chain = [DEST_OPTS, 0, 0, 0, 0, 0, 0, 0].repeat(MAX_EXTENSION_HEADERS + 1);
        assert_eq!(
            walk_extensions(DEST_OPTS, &loop_chain).unwrap_err(),
            WireError::TooManyExtensionHeaders
        );
        let hbh_late = [HOP_BY_HOP, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            walk_extensions(DEST_OPTS, &hbh_late).unwrap_err(),
            WireError::HopByHopNotFirst
        );
        let two_frags = [FRAGMENT, 0, 0, 1, 0, 0, 0, 0, 6, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            walk_extensions(FRAGMENT, &two_frags).unwrap_err(),
            WireError::DuplicateFragmentHeader
        );
        assert!(matches!(
            walk_extensions(DEST_OPTS, &[6, 1, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::Truncated { needed: 16, .. })
        ));
        assert!(matches!(
            walk_extensions(ROUTING, &[6, 0, 0]),
            Err(WireError::Truncated { needed: 8, .. })
        ));
    }
}
