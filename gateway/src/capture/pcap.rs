//! Classic pcap: a 24-byte file header, then 16-byte record headers each followed by a frame.

use std::io::Read;
use std::time::Duration;

use super::{CaptureError, Frame, LinkType, Source, MAX_BLOCK_LEN};

pub(crate) struct PcapState {
    pub(crate) big_endian: bool,
    pub(crate) nanos: bool,
    link: LinkType,
    fcs_len: usize,
}

impl PcapState {
    /// Reads the rest of the file header after its magic number.
    pub(crate) fn start<R: Read>(
        src: &mut Source<R>,
        magic: [u8; 4],
    ) -> Result<Self, CaptureError> {
        let (big_endian, nanos) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
            _ => return Err(CaptureError::UnknownFormat(u32::from_be_bytes(magic))),
        };
        let mut h = [0u8; 20];
        src.fill_all(&mut h, 0)?;
        let u16_at = |i: usize| {
            let b = [h[i], h[i + 1]];
            if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let (major, minor) = (u16_at(0), u16_at(2));
        if major != 2 {
            return Err(CaptureError::UnsupportedVersion(major, minor));
        }
        let b = [h[16], h[17], h[18], h[19]];
        let linktype = if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        };
        let link = LinkType::from_linktype(linktype);
        if !link.is_supported() {
            return Err(CaptureError::UnsupportedLinkType(linktype & 0xffff));
        }
        // Bit 26 says the upper 4 bits give the FCS length in 16-bit words.
        let fcs_len = if linktype & 0x0400_0000 != 0 {
            ((linktype >> 28) & 0xf) as usize * 2
        } else {
            0
        };
        Ok(PcapState {
            big_endian,
            nanos,
            link,
            fcs_len,
        })
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    /// Reads the next record into `buf`.
    pub(crate) fn next_frame<R: Read>(
        &mut self,
        src: &mut Source<R>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Frame>, CaptureError> {
        let start = src.offset;
        let mut h = [0u8; 16];
        if !src.fill(&mut h, start)? {
            return Ok(None);
        }
        let secs = self.u32(&h[0..4]);
        let frac = self.u32(&h[4..8]);
        let caplen = self.u32(&h[8..12]) as usize;
        let original_len = self.u32(&h[12..16]);
        if caplen > MAX_BLOCK_LEN {
            return Err(CaptureError::Corrupt {
                offset: start,
                reason: "record length exceeds the maximum snap length",
            });
        }
        buf.clear();
        buf.resize(caplen, 0);
        src.fill_all(buf, start)?;
        let nanos = if self.nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        let mut len = caplen;
        if self.fcs_len > 0 && caplen as u64 >= u64::from(original_len) && len >= self.fcs_len {
            len -= self.fcs_len;
        }
        Ok(Some(Frame {
            timestamp: Duration::from_secs(u64::from(secs)) + Duration::from_nanos(nanos),
            interface: 0,
            link_type: self.link,
            data: 0..len,
            original_len: original_len.saturating_sub(if len < caplen {
                self.fcs_len as u32
            } else {
                0
            }),
        }))
    }
}
