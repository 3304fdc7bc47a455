//! ICMP (RFC 792) and ICMPv6 (RFC 4443) header view: type, code, checksum.

use super::{Layer, WireError};

/// ICMPv4 Destination Unreachable.
pub const ICMPV4_DEST_UNREACHABLE: u8 = 3;
/// ICMPv4 code 13: communication administratively prohibited (RFC 1812).
pub const ICMPV4_ADMIN_PROHIBITED: u8 = 13;
/// ICMPv6 Destination Unreachable.
pub const ICMPV6_DEST_UNREACHABLE: u8 = 1;
/// ICMPv6 code 1: communication with destination administratively prohibited.
pub const ICMPV6_ADMIN_PROHIBITED: u8 = 1;
/// ICMPv4 code 3: port unreachable.
pub const ICMPV4_PORT_UNREACHABLE: u8 = 3;
/// ICMPv6 code 4: port unreachable.
pub const ICMPV6_PORT_UNREACHABLE: u8 = 4;

/// Length of the ICMP header (type, code, checksum, 4 bytes of type-specific data).
pub const HEADER_LEN: usize = 8;

/// A checked view over an ICMP or ICMPv6 message: the 8-byte header is present.
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Checks that the header is present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: Layer::Icmp,
                needed: HEADER_LEN,
                available: len,
            });
        }
        Ok(IcmpPacket { buffer })
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.buffer.as_ref()[2], self.buffer.as_ref()[3]])
    }
    /// The four type-specific bytes after the checksum (identifier and sequence for echo).
    pub fn rest_of_header(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[4], b[5], b[6], b[7]]
    }
    /// The body after the 8-byte header (for errors: the quoted packet).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// Whether an ICMPv4 type is an error message (RFC 1122 3.2.2: never answer one with another).
pub(crate) fn is_icmpv4_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

/// Whether an ICMPv6 type is an error message (types 0-127, RFC 4443 2.1).
pub(crate) fn is_icmpv6_error(t: u8) -> bool {
    t < 128
}
