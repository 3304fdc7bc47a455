//! UDP header view (RFC 768).

use super::{Layer, WireError};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A checked view over a UDP datagram: the header is present and the length field is between 8
/// and the buffer length. Bytes after the length (padding) are ignored.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks the header and the length field.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: Layer::Udp,
                needed: HEADER_LEN,
                available: b.len(),
            });
        }
        let length = u16::from_be_bytes([b[4], b[5]]);
        if usize::from(length) < HEADER_LEN || usize::from(length) > b.len() {
            return Err(WireError::BadUdpLength {
                length,
                available: b.len(),
            });
        }
        Ok(UdpPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.b()[0], self.b()[1]])
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.b()[2], self.b()[3]])
    }
    /// Length field: header plus payload.
    pub fn len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }
    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }
    /// Checksum field (0 over IPv4: no checksum).
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }
    /// The datagram (header and payload) up to the length field.
    pub fn datagram(&self) -> &[u8] {
        &self.b()[..self.len()]
    }
    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        let d = [
            0x12, 0x34, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, b'h', b'i', 0xee,
        ];
        let u = UdpPacket::new_checked(&d[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (0x1234, 53, 10));
        assert_eq!(u.payload(), b"hi");
        let mut bad = d;
        bad[5] = 7;
        assert!(matches!(
            UdpPacket::new_checked(&bad[..]),
            Err(WireError::BadUdpLength { length: 7, .. })
        ));
        bad[5] = 12;
        assert!(UdpPacket::new_checked(&bad[..]).is_err());
        assert!(UdpPacket::new_checked(&d[..7]).is_err());
    }
}
