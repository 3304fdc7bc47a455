//! Long headers (RFC 9000 17.2), header protection (RFC 9001 5.4) and packet numbers
//! (RFC 9000 17.1, A.3). Every field is read through [`Reader`], which checks the remaining
//! length before it slices.

use super::keys::{InitialKeys, Version, SAMPLE_LEN, TAG_LEN};
use super::QuicError;

/// Longest connection ID of versions 1 and 2 (RFC 9000 17.2).
pub const MAX_CID_LEN: usize = 20;

/// A bounded reader over untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable-length integer (RFC 9000 16): 1, 2, 4 or 8 bytes, the length in the top two
    /// bits of the first.
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        let len = 1usize << (first >> 6);
        let bytes = self.take(len)?;
        let mut v = u64::from(first & 0x3f);
        for &b in &bytes[1..] {
            v = v << 8 | u64::from(b);
        }
        Some(v)
    }

    /// A sub-reader over a field whose length is a varint prefix.
    pub(crate) fn prefixed(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }
}

/// Long-header packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongType {
    /// Initial: the packets this module reads.
    Initial,
    /// 0-RTT: early data under keys the gateway does not have.
    ZeroRtt,
    /// Handshake.
    Handshake,
    /// Retry (sent by servers only).
    Retry,
}

impl LongType {
    /// The type of the two type bits of the first byte (already shifted down).
    fn from_bits(version: Version, bits: u8) -> Option<LongType> {
        let v1 = match version {
            Version::V1 => bits,
            // RFC 9369 3.2: Initial 0b01, 0-RTT 0b10, Handshake 0b11, Retry 0b00.
            Version::V2 => bits.wrapping_sub(1) & 3,
            Version::Unknown(_) => return None,
        };
        Some(match v1 {
            0 => LongType::Initial,
            1 => LongType::ZeroRtt,
            2 => LongType::Handshake,
            _ => LongType::Retry,
        })
    }
}

/// A parsed long header, borrowing from the datagram.
#[derive(Debug, Clone, Copy)]
pub struct LongHeader<'a> {
    /// Version field.
    pub version: Version,
    /// Destination connection ID.
    pub dcid: &'a [u8],
    /// Source connection ID.
    pub scid: &'a [u8],
    /// Packet type; `None` for a version whose packet formats are unknown.
    pub ty: Option<LongType>,
    /// Offset of the (protected) packet number in the packet.
    pub pn_offset: usize,
    /// Length of this packet in the datagram: the next coalesced packet starts there.
    pub len: usize,
}

/// What starts at some offset of a client datagram.
#[derive(Debug, Clone, Copy)]
pub enum Packet<'a> {
    /// A long-header packet.
    Long(LongHeader<'a>),
    /// A short-header (1-RTT) packet: it runs to the end of the datagram.
    Short,
}

/// Parses the packet at the start of `data` (the rest of a datagram).
pub fn parse_packet(data: &[u8]) -> Result<Packet<'_>, QuicError> {
    let mut r = Reader::new(data);
    let first = r.u8().ok_or(QuicError::Truncated)?;
    if first & 0x80 == 0 {
        return Ok(Packet::Short);
    }
    let version = Version::from_wire(r.u32().ok_or(QuicError::Truncated)?);
    if version == Version::Unknown(0) {
        return Err(QuicError::VersionNegotiationFromClient);
    }
    let dcid = cid(&mut r, version)?;
    let scid = cid(&mut r, version)?;
    let ty = LongType::from_bits(version, (first >> 4) & 3);
    let mut hdr = LongHeader {
        version,
        dcid,
        scid,
        ty,
        pn_offset: 0,
        len: data.len(),
    };
    match ty {
        // Unknown formats and Retry run to the end of the datagram.
        None | Some(LongType::Retry) => return Ok(Packet::Long(hdr)),
        Some(LongType::Initial) => {
            r.prefixed().ok_or(QuicError::Truncated)?;
        }
        Some(LongType::ZeroRtt | LongType::Handshake) => {}
    }
    let length = r.varint().ok_or(QuicError::Truncated)?;
    hdr.pn_offset = r.pos();
    let length = usize::try_from(length).map_err(|_| QuicError::LengthExceedsDatagram)?;
    hdr.len = hdr
        .pn_offset
        .checked_add(length)
        .filter(|&end| end <= data.len())
        .ok_or(QuicError::LengthExceedsDatagram)?;
    Ok(Packet::Long(hdr))
}

/// A connection ID with its 1-byte length; at most 20 bytes in the versions read here.
fn cid<'a>(r: &mut Reader<'a>, version: Version) -> Result<&'a [u8], QuicError> {
    let n = usize::from(r.u8().ok_or(QuicError::Truncated)?);
    // Other versions may use up to 255 bytes (RFC 8999 5.1).
    if n > MAX_CID_LEN && matches!(version, Version::V1 | Version::V2) {
        return Err(QuicError::ConnectionIdTooLong(n));
    }
    r.take(n).ok_or(QuicError::Truncated)
}

/// The full packet number from its truncated form and the largest number seen so far
/// (RFC 9000 A.3).
pub fn decode_pn(largest: Option<u64>, truncated: u64, pn_len: usize) -> u64 {
    let expected = largest.map_or(0, |l| l.saturating_add(1));
    let win = 1u64 << (8 * pn_len);
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | truncated;
    if candidate.saturating_add(hwin) <= expected && candidate < (1u64 << 62) - win {
        candidate + win
    } else if candidate > expected.saturating_add(hwin) && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

/// Removes header protection and decrypts one Initial packet (`packet` is exactly the packet,
/// `hdr.len` bytes). The packet is copied into `scratch` (kept by the caller, so that no packet
/// allocates once it has grown); on success returns the packet number and the plaintext payload's
/// range in `scratch`. `None` when the packet does not authenticate under `keys`.
pub fn open_initial(
    keys: &InitialKeys,
    packet: &[u8],
    pn_offset: usize,
    largest: Option<u64>,
    scratch: &mut Vec<u8>,
) -> Result<Option<(u64, std::ops::Range<usize>)>, QuicError> {
    // The sample starts 4 bytes after the packet number's offset, whatever its real length.
    let sample_at = pn_offset + 4;
    let sample = packet
        .get(sample_at..sample_at + SAMPLE_LEN)
        .ok_or(QuicError::PacketTooShort)?;
    let mask = keys.mask(sample).ok_or(QuicError::PacketTooShort)?;
    scratch.clear();
    scratch.extend_from_slice(packet);
    // Long header: the low 4 bits of the first byte are protected.
    scratch[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(scratch[0] & 3) + 1;
    let mut truncated = 0u64;
    for i in 0..pn_len {
        scratch[pn_offset + i] ^= mask[1 + i];
        truncated = truncated << 8 | u64::from(scratch[pn_offset + i]);
    }
    let payload_at = pn_offset + pn_len;
    if scratch.len() < payload_at + TAG_LEN {
        return Err(QuicError::PacketTooShort);
    }
    let pn = decode_pn(largest, truncated, pn_len);
    let (header, body) = scratch.split_at_mut(payload_at);
    match keys.open(pn, header, body) {
        Some(plain) => {
            let n = plain.len();
            Ok(Some((pn, payload_at..payload_at + n)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        // RFC 9000 A.1 examples.
        for (bytes, want) in [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c][..],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
            (&[0x40, 0x25], 37),
        ] {
            assert_eq!(Reader::new(bytes).varint(), Some(want));
            assert_eq!(Reader::new(&bytes[..bytes.len() - 1]).varint(), None);
        }
    }

    #[test]
    fn packet_numbers() {
        // RFC 9000 A.3 example.
        assert_eq!(decode_pn(Some(0xa82f30ea), 0x9b32, 2), 0xa82f9b32);
        assert_eq!(decode_pn(None, 0, 1), 0);
        assert_eq!(decode_pn(None, 2, 4), 2);
        assert_eq!(decode_pn(Some(255), 0, 1), 256);
        assert_eq!(decode_pn(Some(u64::MAX >> 2), 0xff, 1), u64::MAX >> 2);
    }

    #[test]
    fn v2_type_bits() {
        assert_eq!(LongType::from_bits(Version::V2, 1), Some(LongType::Initial));
        assert_eq!(LongType::from_bits(Version::V2, 0), Some(LongType::Retry));
        assert_eq!(LongType::from_bits(Version::V1, 0), Some(LongType::Initial));
        assert_eq!(LongType::from_bits(Version::Unknown(7), 0), None);
    }
}
