//! IPv4 header view (RFC 791).

use std::net::Ipv4Addr;

use super::checksum::internet_checksum;
use super::{IpProtocol, Layer, WireError};

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// A checked view over an IPv4 packet. After [`Ipv4Packet::new_checked`] succeeds, the header
/// (with its options) lies within the buffer and the total length field is consistent with it;
/// the buffer may be longer than the total length (link-layer padding), and every accessor only
/// looks at the first `total_len` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks the version, the header length and the total length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated {
                layer: Layer::Ipv4,
                needed: MIN_HEADER_LEN,
                available: b.len(),
            });
        }
        let version = b[field::VER_IHL] >> 4;
        if version != 4 {
            return Err(WireError::UnknownVersion(version));
        }
        let ihl = b[field::VER_IHL] & 0x0f;
        if ihl < 5 {
            return Err(WireError::BadIpv4HeaderLength(ihl));
        }
        let header = usize::from(ihl) * 4;
        if b.len() < header {
            return Err(WireError::Truncated {
                layer: Layer::Ipv4,
                needed: header,
                available: b.len(),
            });
        }
        let total = u16::from_be_bytes([b[field::LENGTH.start], b[field::LENGTH.start + 1]]);
        if usize::from(total) < header || usize::from(total) > b.len() {
            return Err(WireError::BadIpv4TotalLength {
                total,
                header,
                available: b.len(),
            });
        }
        Ok(Ipv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.b()[field::DSCP_ECN]
    }

    /// Total length field: header plus payload.
    pub fn total_len(&self) -> usize {
        let f = &self.b()[field::LENGTH];
        usize::from(u16::from_be_bytes([f[0], f[1]]))
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        let f = &self.b()[field::IDENT];
        u16::from_be_bytes([f[0], f[1]])
    }

    fn flg_off(&self) -> u16 {
        let f = &self.b()[field::FLG_OFF];
        u16::from_be_bytes([f[0], f[1]])
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flg_off() & 0x4000 != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flg_off() & 0x2000 != 0
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.flg_off() & 0x1fff
    }

    /// Whether this packet is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.b()[field::PROTOCOL])
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        let f = &self.b()[field::CHECKSUM];
        u16::from_be_bytes([f[0], f[1]])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let f = &self.b()[field::SRC];
        Ipv4Addr::new(f[0], f[1], f[2], f[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let f = &self.b()[field::DST];
        Ipv4Addr::new(f[0], f[1], f[2], f[3])
    }

    /// The option bytes (empty without options).
    pub fn options(&self) -> &[u8] {
        &self.b()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }

    /// The payload, up to the total length (link-layer padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }

    /// The whole packet, up to the total length.
    pub fn packet(&self) -> &[u8] {
        &self.b()[..self.total_len()]
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        internet_checksum(self.header()) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ihl: u8, total: u16) -> Vec<u8> {
        let mut v = vec![0u8; usize::from(total).max(20)];
        v[0] = 0x40 | ihl;
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v[6] = 0x20; // MF
        v[7] = 0x00;
        v[8] = 64;
        v[9] = 6;
        v[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v[16..20].copy_from_slice(&[10, 0, 0, 2]);
        v
    }

    #[test]
    fn accessors() {
        let mut v = header(6, 40);
        v[20..24].copy_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 16);
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(p.is_fragment());
        assert_eq!(p.protocol(), IpProtocol::Tcp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(matches!(
            Ipv4Packet::new_checked(&[0x45u8; 10][..]),
            Err(WireError::Truncated { .. })
        ));
        assert_eq!(
            Ipv4Packet::new_checked(&header(4, 20)[..]).unwrap_err(),
            WireError::BadIpv4HeaderLength(4)
        );
        // IHL 15 = 60 bytes in a 40-byte buffer.
        assert!(matches!(
            Ipv4Packet::new_checked(&header(15, 40)[..]),
            Err(WireError::Truncated { needed: 60, .. })
        ));
        // Total length below the header length.
        let mut v = header(6, 40);
        v[2..4].copy_from_slice(&22u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&v[..]),
            Err(WireError::BadIpv4TotalLength { .. })
        ));
        // Total length beyond the buffer.
        v[2..4].copy_from_slice(&41u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&v[..]),
            Err(WireError::BadIpv4TotalLength { .. })
        ));
        let mut v6 = header(5, 40);
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            WireError::UnknownVersion(6)
        );
    }

    #[test]
    fn padding_is_excluded() {
        let mut v = header(5, 28);
        v.extend_from_slice(&[0xee; 18]);
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
        assert_eq!(p.packet().len(), 28);
    }
}
