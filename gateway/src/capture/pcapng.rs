//! pcapng (draft-ietf-opsawg-pcapng): blocks of `type, total length, body, total length`.

use std::io::Read;
use std::time::Duration;

use super::{
    CaptureError, Frame, LinkType, Source, MAX_BLOCK_LEN, MAX_INTERFACES, MAX_SKIPPED_BLOCK_LEN,
};

/// Section header block type (the same in both byte orders).
pub(crate) const SHB_TYPE: u32 = 0x0a0d_0d0a;
const IDB_TYPE: u32 = 1;
const PB_TYPE: u32 = 2;
const SPB_TYPE: u32 = 3;
const EPB_TYPE: u32 = 6;

const OPT_ENDOFOPT: u16 = 0;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

#[derive(Clone, Copy)]
enum TsResol {
    /// Units of 10^-n seconds.
    Decimal(u8),
    /// Units of 2^-n seconds.
    Binary(u8),
}

#[derive(Clone, Copy)]
struct Interface {
    link: LinkType,
    raw_link: u32,
    snaplen: u32,
    resol: TsResol,
    offset_secs: i64,
}

pub(crate) struct PcapNgState {
    big_endian: bool,
    interfaces: Vec<Interface>,
}

fn corrupt(offset: u64, reason: &'static str) -> CaptureError {
    CaptureError::Corrupt { offset, reason }
}

impl PcapNgState {
    /// Reads the first section header block, whose type was already read.
    pub(crate) fn start<R: Read>(
        src: &mut Source<R>,
        _magic: [u8; 4],
    ) -> Result<Self, CaptureError> {
        let mut st = PcapNgState {
            big_endian: false,
            interfaces: Vec::new(),
        };
        let mut len = [0u8; 4];
        src.fill_all(&mut len, 0)?;
        st.section(src, 0, len)?;
        Ok(st)
    }

    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big_endian {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    /// Handles a section header block whose type and length bytes were read: sets the byte
    /// order from its byte-order magic, forgets the previous section's interfaces, skips the rest.
    fn section<R: Read>(
        &mut self,
        src: &mut Source<R>,
        start: u64,
        len_bytes: [u8; 4],
    ) -> Result<(), CaptureError> {
        let mut bom = [0u8; 4];
        src.fill_all(&mut bom, start)?;
        self.big_endian = match bom {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => return Err(corrupt(start, "bad byte-order magic in section header")),
        };
        let total = self.u32(&len_bytes);
        if total < 28 || total % 4 != 0 || u64::from(total) > MAX_SKIPPED_BLOCK_LEN {
            return Err(corrupt(start, "bad section header block length"));
        }
        let mut version = [0u8; 4];
        src.fill_all(&mut version, start)?;
        if self.u16(&version[0..2]) != 1 {
            return Err(corrupt(start, "unsupported pcapng major version"));
        }
        // Section length (8), options, trailing length.
        src.skip(u64::from(total) - 16, start)?;
        self.interfaces.clear();
        Ok(())
    }

    /// Reads blocks until one carries a packet, which is left in `buf`.
    pub(crate) fn next_frame<R: Read>(
        &mut self,
        src: &mut Source<R>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Frame>, CaptureError> {
        loop {
            let start = src.offset;
            let mut h = [0u8; 8];
            if !src.fill(&mut h, start)? {
                return Ok(None);
            }
            let ty = self.u32(&h[0..4]);
            if ty == SHB_TYPE {
                self.section(src, start, [h[4], h[5], h[6], h[7]])?;
                continue;
            }
            let total = self.u32(&h[4..8]);
            if total < 12 || total % 4 != 0 {
                return Err(corrupt(start, "bad block length"));
            }
            let body_len = total as usize - 12;
            if !matches!(ty, IDB_TYPE | EPB_TYPE | SPB_TYPE | PB_TYPE) {
                if u64::from(total) > MAX_SKIPPED_BLOCK_LEN {
                    return Err(corrupt(start, "block too large"));
                }
                src.skip(u64::from(total) - 8, start)?;
                continue;
            }
            if body_len > MAX_BLOCK_LEN {
                return Err(corrupt(start, "packet block too large"));
            }
            buf.clear();
            buf.resize(body_len + 4, 0);
            src.fill_all(buf, start)?;
            if self.u32(&buf[body_len..]) != total {
                return Err(corrupt(start, "block trailing length differs"));
            }
            buf.truncate(body_len);
            match ty {
                IDB_TYPE => self.interface(buf, start)?,
                EPB_TYPE => return self.enhanced(buf, start, false).map(Some),
                PB_TYPE => return self.enhanced(buf, start, true).map(Some),
                _ => return self.simple(buf, start).map(Some),
            }
        }
    }

    fn interface(&mut self, b: &[u8], start: u64) -> Result<(), CaptureError> {
        if b.len() < 8 {
            return Err(corrupt(start, "short interface description block"));
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(corrupt(start, "too many interfaces"));
        }
        let raw_link = u32::from(self.u16(&b[0..2]));
        let mut iface = Interface {
            link: LinkType::from_linktype(raw_link),
            raw_link,
            snaplen: self.u32(&b[4..8]),
            resol: TsResol::Decimal(6),
            offset_secs: 0,
        };
        let mut opts = &b[8..];
        while opts.len() >= 4 {
            let code = self.u16(&opts[0..2]);
            let len = usize::from(self.u16(&opts[2..4]));
            if code == OPT_ENDOFOPT {
                break;
            }
            let padded = (len + 3) & !3;
            let Some(value) = opts.get(4..4 + len) else {
                return Err(corrupt(start, "interface option overruns its block"));
            };
            match (code, value) {
                (OPT_IF_TSRESOL, &[r]) => {
                    iface.resol = if r & 0x80 != 0 {
                        TsResol::Binary(r & 0x7f)
                    } else {
                        TsResol::Decimal(r)
                    };
                }
                (OPT_IF_TSOFFSET, v) if v.len() == 8 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(v);
                    iface.offset_secs = if self.big_endian {
                        i64::from_be_bytes(a)
                    } else {
                        i64::from_le_bytes(a)
                    };
                }
                _ => {}
            }
            opts = opts.get(4 + padded..).unwrap_or(&[]);
        }
        self.interfaces.push(iface);
        Ok(())
    }

    fn iface(&self, id: u32) -> Result<Interface, CaptureError> {
        let iface = *self
            .interfaces
            .get(id as usize)
            .ok_or(CaptureError::UnknownInterface(id))?;
        if !iface.link.is_supported() {
            return Err(CaptureError::UnsupportedLinkType(iface.raw_link));
        }
        Ok(iface)
    }

    /// An enhanced packet block, or the obsolete packet block (`obsolete`: 16-bit interface id
    /// and drop count instead of a 32-bit interface id).
    fn enhanced(&self, b: &[u8], start: u64, obsolete: bool) -> Result<Frame, CaptureError> {
        if b.len() < 20 {
            return Err(corrupt(start, "short packet block"));
        }
        let id = if obsolete {
            u32::from(self.u16(&b[0..2]))
        } else {
            self.u32(&b[0..4])
        };
        let iface = self.iface(id)?;
        let ts = u64::from(self.u32(&b[4..8])) << 32 | u64::from(self.u32(&b[8..12]));
        let caplen = self.u32(&b[12..16]) as usize;
        let original_len = self.u32(&b[16..20]);
        if caplen > b.len() - 20 {
            return Err(corrupt(start, "captured length overruns the block"));
        }
        Ok(Frame {
            timestamp: timestamp(ts, iface),
            interface: id,
            link_type: iface.link,
            data: 20..20 + caplen,
            original_len,
        })
    }

    fn simple(&self, b: &[u8], start: u64) -> Result<Frame, CaptureError> {
        if b.len() < 4 {
            return Err(corrupt(start, "short simple packet block"));
        }
        let iface = self.iface(0)?;
        let original_len = self.u32(&b[0..4]);
        let mut caplen = (b.len() - 4).min(original_len as usize);
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen as usize);
        }
        Ok(Frame {
            // A simple packet block has no timestamp.
            timestamp: Duration::ZERO,
            interface: 0,
            link_type: iface.link,
            data: 4..4 + caplen,
            original_len,
        })
    }
}

fn timestamp(ts: u64, iface: Interface) -> Duration {
    let d = match iface.resol {
        TsResol::Decimal(n) => {
            let n = u32::from(n.min(19));
            let unit = 10u64.pow(n);
            let frac = u128::from(ts % unit) * 1_000_000_000 / u128::from(unit);
            // frac < 10^9.
            Duration::new(ts / unit, frac as u32)
        }
        TsResol::Binary(n) => {
            let n = u32::from(n.min(63));
            let frac = (u128::from(ts & ((1u64 << n) - 1)) * 1_000_000_000) >> n;
            Duration::new(ts >> n, frac as u32)
        }
    };
    if iface.offset_secs >= 0 {
        d.saturating_add(Duration::from_secs(iface.offset_secs.unsigned_abs()))
    } else {
        d.saturating_sub(Duration::from_secs(iface.offset_secs.unsigned_abs()))
    }
}
