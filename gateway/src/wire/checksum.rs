//! The Internet checksum (RFC 1071) and the TCP/UDP/ICMPv6 pseudo-headers.

use std::net::IpAddr;

/// An incremental one's-complement sum. Bytes may be added in pieces of any length, odd ones
/// included: a byte left over from one piece is paired with the first byte of the next.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checksum {
    sum: u64,
    pending: Option<u8>,
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Checksum {
            sum: 0,
            pending: None,
        }
    }

    /// Adds bytes, in network order.
    pub fn add_bytes(&mut self, mut data: &[u8]) -> &mut Self {
        if let Some(hi) = self.pending.take() {
            match data.split_first() {
                Some((&lo, rest)) => {
                    self.sum += u64::from(u16::from_be_bytes([hi, lo]));
                    data = rest;
                }
                None => {
                    self.pending = Some(hi);
                    return self;
                }
            }
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.sum += u64::from(u16::from_be_bytes([c[0], c[1]]))
                + u64::from(u16::from_be_bytes([c[2], c[3]]))
                + u64::from(u16::from_be_bytes([c[4], c[5]]))
                + u64::from(u16::from_be_bytes([c[6], c[7]]));
        }
        let mut words = chunks.remainder().chunks_exact(2);
        for w in &mut words {
            self.sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            self.pending = Some(*last);
        }
        self
    }

    /// Adds one 16-bit word.
    pub fn add_u16(&mut self, v: u16) -> &mut Self {
        self.add_bytes(&v.to_be_bytes())
    }

    /// Adds one 32-bit word.
    pub fn add_u32(&mut self, v: u32) -> &mut Self {
        self.add_bytes(&v.to_be_bytes())
    }

    /// The folded one's-complement sum, not yet complemented.
    pub fn sum(&self) -> u16 {
        let mut s = self.sum;
        if let Some(hi) = self.pending {
            s += u64::from(u16::from_be_bytes([hi, 0]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// The checksum field value: the complement of the sum.
    pub fn finish(&self) -> u16 {
        !self.sum()
    }
}

/// The Internet checksum of `data`: the value to store in a checksum field that was zero while
/// summing. Over data that includes a correct checksum field, the result is 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    Checksum::new().add_bytes(data).finish()
}

/// Starts a sum with the TCP/UDP/ICMPv6 pseudo-header for `src`, `dst` (same family), upper-layer
/// protocol `protocol` and upper-layer length `len` (RFC 793 / RFC 768 for IPv4, RFC 8200 8.1 for
/// IPv6). Returns `None` if the address families differ.
pub fn pseudo_header_checksum(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    len: u32,
) -> Option<Checksum> {
    let mut c = Checksum::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            c.add_bytes(&s.octets()).add_bytes(&d.octets());
            c.add_u16(u16::from(protocol));
            // The IPv4 pseudo-header has a 16-bit length; larger values cannot occur in IPv4.
            c.add_u16(len as u16);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            c.add_bytes(&s.octets()).add_bytes(&d.octets());
            c.add_u32(len);
            c.add_u32(u32::from(protocol));
        }
        _ => return None,
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Checksum::new().add_bytes(&data).sum(), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_pieces_equal_whole() {
        let data: Vec<u8> = (0..=200u8).map(|b| b.wrapping_mul(37)).collect();
        let whole = internet_checksum(&data);
        for cut in 0..data.len() {
            for cut2 in cut..data.len().min(cut + 9) {
                let mut c = Checksum::new();
                c.add_bytes(&data[..cut])
                    .add_bytes(&data[cut..cut2])
                    .add_bytes(&data[cut2..]);
                assert_eq!(c.finish(), whole, "cuts {cut} {cut2}");
            }
        }
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(internet_checksum(&h), 0);
    }

    #[test]
    fn mixed_families_rejected() {
        assert!(
            pseudo_header_checksum("1.2.3.4".parse().unwrap(), "::1".parse().unwrap(), 6, 20)
                .is_none()
        );
    }
}
