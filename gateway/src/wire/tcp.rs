//! TCP header view (RFC 9293) and options.

use super::{Layer, WireError};

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// TCP control bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x001);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x002);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x004);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x008);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x010);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x020);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x040);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x080);
    /// The historic ECN nonce bit (RFC 3540, obsolete); accurate ECN reuses it as AE.
    pub const NS: TcpFlags = TcpFlags(0x100);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }

    /// Any of SYN, FIN or RST set: the segment changes the connection's state.
    pub const fn has_syn_fin_rst(self) -> bool {
        self.0 & (Self::SYN.0 | Self::FIN.0 | Self::RST.0) != 0
    }

    /// SYN set.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    /// ACK set.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
    /// FIN set.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    /// RST set.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        self.union(rhs)
    }
}

impl std::fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [(TcpFlags, &str); 9] = [
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
            (TcpFlags::NS, "NS"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A checked view over a TCP segment: the header and its options lie within the buffer.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Checks that the header and its options fit the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated {
                layer: Layer::Tcp,
                needed: MIN_HEADER_LEN,
                available: b.len(),
            });
        }
        let off = b[12] >> 4;
        if off < 5 {
            return Err(WireError::BadTcpDataOffset(off));
        }
        let hl = usize::from(off) * 4;
        if b.len() < hl {
            return Err(WireError::Truncated {
                layer: Layer::Tcp,
                needed: hl,
                available: b.len(),
            });
        }
        Ok(TcpPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn u16_at(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.b()[i], self.b()[i + 1]])
    }

    fn u32_at(&self, i: usize) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.u16_at(0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(2)
    }
    /// Sequence number.
    pub fn seq(&self) -> u32 {
        self.u32_at(4)
    }
    /// Acknowledgment number (meaningful when ACK is set).
    pub fn ack(&self) -> u32 {
        self.u32_at(8)
    }
    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[12] >> 4) * 4
    }
    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.u16_at(12) & 0x01ff)
    }
    /// Window (not scaled).
    pub fn window(&self) -> u16 {
        self.u16_at(14)
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        self.u16_at(16)
    }
    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        self.u16_at(18)
    }
    /// The raw option bytes.
    pub fn options_raw(&self) -> &[u8] {
        &self.b()[MIN_HEADER_LEN..self.header_len()]
    }
    /// The options, parsed lazily.
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options_raw())
    }
    /// The payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Maximum segment size (kind 2).
    Mss(u16),
    /// Window scale shift (kind 3).
    WindowScale(u8),
    /// SACK permitted (kind 4).
    SackPermitted,
    /// SACK blocks (kind 5), raw.
    Sack(&'a [u8]),
    /// Timestamps (kind 8): value, echo reply.
    Timestamps(u32, u32),
    /// TCP Fast Open cookie (kind 34), possibly empty (a cookie request).
    FastOpen(&'a [u8]),
    /// Any other option: kind and data.
    Unknown(u8, &'a [u8]),
}

/// An iterator over TCP options. It stops at End of Option List and yields one
/// `Err(WireError::Truncated)` (then stops) on an option whose length is invalid: receivers
/// ignore such options rather than the segment, so the pipeline does too.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// Options from their raw bytes.
    pub fn new(raw: &'a [u8]) -> Self {
        TcpOptions { rest: raw }
    }

    /// The MSS option, if present and well formed.
    pub fn mss(self) -> Option<u16> {
        self.filter_map(Result::ok).find_map(|o| match o {
            TcpOption::Mss(m) => Some(m),
            _ => None,
        })
    }

    /// The window scale option, if present and well formed.
    pub fn window_scale(self) -> Option<u8> {
        self.filter_map(Result::ok).find_map(|o| match o {
            TcpOption::WindowScale(s) => Some(s),
            _ => None,
        })
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&kind, after) = self.rest.split_first()?;
            match kind {
                0 => {
                    self.rest = &[];
                    return None;
                }
                1 => {
                    self.rest = after;
                    continue;
                }
                _ => {}
            }
            let len = match after.first() {
                Some(&l) if l >= 2 && usize::from(l) <= self.rest.len() => usize::from(l),
                _ => {
                    let available = self.rest.len();
                    self.rest = &[];
                    return Some(Err(WireError::Truncated {
                        layer: Layer::Tcp,
                        needed: after.first().map_or(2, |&l| usize::from(l).max(2)),
                        available,
                    }));
                }
            };
            let data = &self.rest[2..len];
            self.rest = &self.rest[len..];
            let opt = match (kind, data) {
                (2, &[a, b]) => TcpOption::Mss(u16::from_be_bytes([a, b])),
                (3, &[s]) => TcpOption::WindowScale(s),
                (4, &[]) => TcpOption::SackPermitted,
                (5, d) => TcpOption::Sack(d),
                (8, &[a, b, c, d, e, f, g, h]) => TcpOption::Timestamps(
                    u32::from_be_bytes([a, b, c, d]),
                    u32::from_be_bytes([e, f, g, h]),
                ),
                (34, d) => TcpOption::FastOpen(d),
                (k, d) => TcpOption::Unknown(k, d),
            };
            return Some(Ok(opt));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_with_options() {
        let mut seg = vec![
            0x30, 0x39, 0x01, 0xbb, // ports 12345 -> 443
            0x00, 0x00, 0x00, 0x64, // seq 100
            0x00, 0x00, 0x00, 0x00, // ack
            0x90, 0x02, 0xff, 0xff, // data offset 9, SYN, window
            0x00, 0x00, 0x00, 0x00, // checksum, urgent
        ];
        seg.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        seg.extend_from_slice(&[1, 3, 3, 7]); // NOP, wscale 7
        seg.extend_from_slice(&[4, 2, 34, 2]); // SACK permitted, empty TFO cookie
        seg.extend_from_slice(&[0, 0, 0, 0]); // EOL
        seg.extend_from_slice(b"hi");
        let t = TcpPacket::new_checked(&seg[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.seq()), (12345, 443, 100));
        assert_eq!(t.flags(), TcpFlags::SYN);
        assert_eq!(t.header_len(), 36);
        assert_eq!(t.payload(), b"hi");
        assert_eq!(t.options().mss(), Some(1460));
        assert_eq!(t.options().window_scale(), Some(7));
        let all: Vec<_> = t.options().collect();
        assert_eq!(
            all,
            vec![
                Ok(TcpOption::Mss(1460)),
                Ok(TcpOption::WindowScale(7)),
                Ok(TcpOption::SackPermitted),
                Ok(TcpOption::FastOpen(&[])),
            ]
        );
        assert_eq!(format!("{:?}", t.flags() | TcpFlags::ACK), "SYN|ACK");
    }

    #[test]
    fn bad_options_do_not_panic() {
        for raw in [&[2u8][..], &[2, 0], &[2, 1], &[2, 9, 0, 0], &[8, 10, 1]] {
            let v: Vec<_> = TcpOptions::new(raw).collect();
            assert_eq!(v.len(), 1, "{raw:?}");
            assert!(v[0].is_err());
        }
        // An MSS option of the wrong length is kept as unknown, not misread.
        assert_eq!(TcpOptions::new(&[2, 3, 5]).mss(), None);
    }

    #[test]
    fn rejects_bad_offsets() {
        let mut seg = [0u8; 24];
        seg[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&seg[..]).unwrap_err(),
            WireError::BadTcpDataOffset(4)
        );
        seg[12] = 0x70;
        assert!(matches!(
            TcpPacket::new_checked(&seg[..]),
            Err(WireError::Truncated { needed: 28, .. })
        ));
        assert!(TcpPacket::new_checked(&seg[..19]).is_err());
    }
}
