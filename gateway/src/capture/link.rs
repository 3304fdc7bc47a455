//! Link-layer headers: from a captured frame to the IP packet it carries.

use std::ops::Range;

/// Most VLAN tags stepped over in one Ethernet frame (QinQ uses two).
pub const MAX_VLAN_TAGS: usize = 4;

/// A capture link type (the LINKTYPE_* registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// BSD loopback (0): a 4-byte address family in the capturing host's byte order.
    Null,
    /// Ethernet (1).
    Ethernet,
    /// Raw IP (101, and the platform DLT values 12 and 14 found in files).
    Raw,
    /// Raw IPv4 (228).
    Ipv4,
    /// Raw IPv6 (229).
    Ipv6,
    /// OpenBSD loopback (108): a 4-byte address family in network byte order.
    Loop,
    /// Linux cooked capture v1 (113).
    LinuxSll,
    /// Linux cooked capture v2 (276).
    LinuxSll2,
    /// Anything else: not decoded.
    Unknown(u32),
}

impl LinkType {
    /// The link type of a LINKTYPE value (the low 16 bits; the upper bits of a pcap header's
    /// field carry FCS information).
    pub fn from_linktype(v: u32) -> LinkType {
        match v & 0xffff {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::Raw,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            _ => LinkType::Unknown(v),
        }
    }

    /// Whether [`ip_payload`] decodes this link type.
    pub fn is_supported(self) -> bool {
        !matches!(self, LinkType::Unknown(_))
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The IP packet inside a frame of link type `link`, or `None` when the frame carries something
/// else (another ethertype or address family) or its link header is cut short.
pub fn ip_payload(link: LinkType, frame: &[u8]) -> Option<&[u8]> {
    ip_payload_range(link, frame).map(|r| &frame[r])
}

/// Like [`ip_payload`], as a range of `frame`.
pub(crate) fn ip_payload_range(link: LinkType, frame: &[u8]) -> Option<Range<usize>> {
    let start = match link {
        LinkType::Ethernet => {
            let mut at = 12;
            let mut ethertype = be16(frame, at)?;
            let mut tags = 0;
            while matches!(
                ethertype,
                ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
            ) {
                tags += 1;
                if tags > MAX_VLAN_TAGS {
                    return None;
                }
                at += 4;
                ethertype = be16(frame, at)?;
            }
            if !is_ip_ethertype(ethertype) {
                return None;
            }
            at + 2
        }
        LinkType::Raw => 0,
        LinkType::Ipv4 | LinkType::Ipv6 => 0,
        LinkType::Null => {
            let f = frame.get(..4)?;
            // Host byte order of the capturing machine: families are small numbers, so the
            // non-zero half tells the order.
            let le = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
            let be = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
            let family = if le <= 0xffff { le } else { be };
            if !is_ip_family(family) {
                return None;
            }
            4
        }
        LinkType::Loop => {
            let f = frame.get(..4)?;
            if !is_ip_family(u32::from_be_bytes([f[0], f[1], f[2], f[3]])) {
                return None;
            }
            4
        }
        LinkType::LinuxSll => {
            if !is_ip_ethertype(be16(frame, 14)?) || frame.len() < 16 {
                return None;
            }
            16
        }
        LinkType::LinuxSll2 => {
            if !is_ip_ethertype(be16(frame, 0)?) || frame.len() < 20 {
                return None;
            }
            20
        }
        LinkType::Unknown(_) => return None,
    };
    let rest = frame.get(start..)?;
    // The version nibble must agree with what the link layer said (or, for raw IP, be 4 or 6).
    let version = rest.first()? >> 4;
    let ok = match link {
        LinkType::Ipv4 => version == 4,
        LinkType::Ipv6 => version == 6,
        _ => version == 4 || version == 6,
    };
    ok.then_some(start..frame.len())
}

fn is_ip_ethertype(t: u16) -> bool {
    t == ETHERTYPE_IPV4 || t == ETHERTYPE_IPV6
}

/// AF_INET (2) and the AF_INET6 values of Linux (10), NetBSD/OpenBSD (24), FreeBSD (28) and
/// macOS (30).
fn is_ip_family(f: u32) -> bool {
    matches!(f, 2 | 10 | 24 | 28 | 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: [u8; 4] = [0x45, 0, 0, 20];
    const V6: [u8; 4] = [0x60, 0, 0, 0];

    fn eth(ethertypes: &[u16], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 12];
        for (i, t) in ethertypes.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            if i + 1 < ethertypes.len() {
                f.extend_from_slice(&[0x00, 0x64]); // TCI: VLAN 100
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ethernet_and_vlans() {
        assert_eq!(
            ip_payload(LinkType::Ethernet, &eth(&[0x0800], &V4)),
            Some(&V4[..])
        );
        assert_eq!(
            ip_payload(LinkType::Ethernet, &eth(&[0x86dd], &V6)),
            Some(&V6[..])
        );
        assert_eq!(
            ip_payload(LinkType::Ethernet, &eth(&[0x8100, 0x0800], &V4)),
            Some(&V4[..])
        );
        assert_eq!(
            ip_payload(LinkType::Ethernet, &eth(&[0x88a8, 0x8100, 0x86dd], &V6)),
            Some(&V6[..])
        );
        // ARP, LLDP, an 802.3 length field: not IP.
        assert_eq!(ip_payload(LinkType::Ethernet, &eth(&[0x0806], &V4)), None);
        assert_eq!(ip_payload(LinkType::Ethernet, &eth(&[0x88cc], &V4)), None);
        assert_eq!(ip_payload(LinkType::Ethernet, &eth(&[0x0040], &V4)), None);
        // Too many tags, cut header, version that disagrees with the ethertype is still IP.
        assert_eq!(
            ip_payload(LinkType::Ethernet, &eth(&[0x8100; 6], &V4)),
            None
        );
        assert_eq!(ip_payload(LinkType::Ethernet, &[0; 13]), None);
        assert_eq!(ip_payload(LinkType::Ethernet, &eth(&[0x0800], &[])), None);
        assert_eq!(
            ip_payload(LinkType::Ethernet, &eth(&[0x0800], &[0x15])),
            None
        );
    }

    #[test]
    fn other_links() {
        assert_eq!(ip_payload(LinkType::Raw, &V6), Some(&V6[..]));
        assert_eq!(ip_payload(LinkType::Raw, &[0x30, 0]), None);
        assert_eq!(ip_payload(LinkType::Ipv4, &V4), Some(&V4[..]));
        assert_eq!(ip_payload(LinkType::Ipv4, &V6), None);
        let mut null_le = vec![2, 0, 0, 0];
        null_le.extend_from_slice(&V4);
        assert_eq!(ip_payload(LinkType::Null, &null_le), Some(&V4[..]));
        let mut null_be = vec![0, 0, 0, 30];
        null_be.extend_from_slice(&V6);
        assert_eq!(ip_payload(LinkType::Null, &null_be), Some(&V6[..]));
        assert_eq!(ip_payload(LinkType::Loop, &null_be), Some(&V6[..]));
        assert_eq!(ip_payload(LinkType::Loop, &null_le), None);
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&V4);
        assert_eq!(ip_payload(LinkType::LinuxSll, &sll), Some(&V4[..]));
        sll[14] = 0x08;
        sll[15] = 0x06;
        assert_eq!(ip_payload(LinkType::LinuxSll, &sll), None);
        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(&V6);
        assert_eq!(ip_payload(LinkType::LinuxSll2, &sll2), Some(&V6[..]));
        assert_eq!(ip_payload(LinkType::LinuxSll2, &sll2[..19]), None);
        assert_eq!(LinkType::from_linktype(0x1000_0001), LinkType::Ethernet);
        assert!(!LinkType::from_linktype(147).is_supported());
    }
}
