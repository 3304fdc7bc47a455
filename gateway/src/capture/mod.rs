//! Capture readers: pcap and pcapng files of any common link type, turned into IP packets.
//!
//! [`CaptureReader`] reads a capture from any [`Read`] (the format is told by its magic number)
//! and yields [`CapturedPacket`]s: the timestamp, the interface, and the IP packet with its
//! link-layer header removed. It is written by hand over a bounded buffer and never trusts a
//! length field: a record or block larger than [`MAX_BLOCK_LEN`], a length that disagrees with
//! itself, or a file that ends mid-record is a [`CaptureError`], never a panic or an unbounded
//! allocation.
//!
//! Formats: pcap in both byte orders with micro- or nanosecond timestamps; pcapng (section header,
//! interface description, enhanced packet, simple packet and the obsolete packet block; other
//! blocks are skipped) with several sections of either byte order and several interfaces of
//! different link types and timestamp resolutions (`if_tsresol`, `if_tsoffset`).
//!
//! Link types ([`LinkType`]): Ethernet (with any number of 802.1Q / 802.1ad / QinQ tags, up to
//! [`MAX_VLAN_TAGS`]; frames of other ethertypes are skipped and counted), raw IP (101, and the
//! platform values 12 and 14), IPv4 (228) and IPv6 (229), Linux cooked capture SLL (113) and SLL2
//! (276), BSD loopback NULL (0, host byte order) and LOOP (108, network byte order). A packet
//! from an interface of another link type is [`CaptureError::UnsupportedLinkType`].
//!
//! A frame captured shorter than it was on the wire (snap length) is still yielded, with
//! [`CapturedPacket::truncated`] set, so the caller can count and drop it.
//!
//! Tunnels and traffic mirrors (VXLAN, GENEVE, GRE and ERSPAN, IP in IP) are opened
//! ([`decap`]): the packet yielded is the innermost IP packet, at most
//! [`decap::MAX_TUNNEL_DEPTH`] tunnels deep; deeper ones are skipped and counted
//! ([`CaptureStats::tunnel_too_deep`]). [`CaptureReader::set_decapsulate`] turns this off.

pub mod decap;
mod link;
mod pcap;
mod pcapng;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use link::ip_payload_range;
pub use link::{ip_payload, LinkType, MAX_VLAN_TAGS};

/// Largest pcap record or pcapng packet block accepted. The largest snap length in use is
/// 262144 bytes; this leaves room for the block's own fields and options.
pub const MAX_BLOCK_LEN: usize = 262_144 + 4096;

/// Largest pcapng block that is skipped without being read into memory: bigger ones are corrupt.
pub const MAX_SKIPPED_BLOCK_LEN: u64 = 64 << 20;

/// Most interfaces in one pcapng section.
pub const MAX_INTERFACES: usize = 1024;

/// A packet read from a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturedPacket<'a> {
    /// Time since the Unix epoch.
    pub timestamp: Duration,
    /// Interface index within its pcapng section (0 for pcap).
    pub interface: u32,
    /// Link type of the interface.
    pub link_type: LinkType,
    /// The IP packet (IPv4 or IPv6), link-layer header removed; cut short if `truncated`.
    pub packet: &'a [u8],
    /// The frame was captured shorter than its original length.
    pub truncated: bool,
    /// Tunnel layers taken off the packet (0 when it was not encapsulated).
    pub tunnel_layers: u8,
    /// Length of the frame on the wire.
    pub original_len: u32,
}

/// Counters of what a reader has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames read.
    pub frames: u64,
    /// IP packets yielded.
    pub ip_packets: u64,
    /// IP packets yielded with `truncated` set.
    pub truncated: u64,
    /// Frames skipped: not IP (ARP, LLDP, other ethertypes or families, also inside a tunnel),
    /// or a link-layer header cut short by the snap length.
    pub skipped_non_ip: u64,
    /// IP packets taken out of a tunnel (VXLAN, GENEVE, GRE, ERSPAN, IP in IP).
    pub decapsulated: u64,
    /// Packets skipped because they are nested in more than [`decap::MAX_TUNNEL_DEPTH`] tunnels.
    pub tunnel_too_deep: u64,
}

/// The container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic pcap.
    Pcap {
        /// Nanosecond timestamps (magic 0xa1b23c4d).
        nanos: bool,
        /// Header fields are big-endian.
        big_endian: bool,
    },
    /// pcapng.
    PcapNg,
}

/// Why a capture cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// The file is neither pcap nor pcapng.
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    UnknownFormat(u32),
    /// A pcap version other than 2.x.
    #[error("unsupported pcap version {0}.{1}")]
    UnsupportedVersion(u16, u16),
    /// A link type this reader does not decode.
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
    /// A packet refers to an interface that was not described.
    #[error("packet on undeclared interface {0}")]
    UnknownInterface(u32),
    /// A length or field is inconsistent.
    #[error("corrupt capture at byte {offset}: {reason}")]
    Corrupt {
        /// Offset of the record or block in the file.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file ends in the middle of a record or block.
    #[error("capture truncated at byte {offset}: file ends inside a record")]
    TruncatedFile {
        /// Offset of the incomplete record or block.
        offset: u64,
    },
}

enum Inner {
    Pcap(pcap::PcapState),
    PcapNg(pcapng::PcapNgState),
}

/// Reads IP packets from a pcap or pcapng stream. See the module docs.
pub struct CaptureReader<R> {
    src: Source<R>,
    inner: Inner,
    buf: Vec<u8>,
    stats: CaptureStats,
    decapsulate: bool,
}

impl<R> std::fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("format", &self.format())
            .field("offset", &self.src.offset)
            .field("stats", &self.stats)
            .finish()
    }
}

/// A reader that knows its offset and tells a clean end of file from a cut record.
struct Source<R> {
    r: R,
    offset: u64,
}

impl<R: Read> Source<R> {
    /// Fills `buf` completely. `Ok(false)` on a clean end of file before the first byte;
    /// `TruncatedFile` if the file ends part way, reported at `record_start`.
    fn fill(&mut self, buf: &mut [u8], record_start: u64) -> Result<bool, CaptureError> {
        let mut done = 0;
        while done < buf.len() {
            match self.r.read(&mut buf[done..]) {
                Ok(0) => {
                    return if done == 0 {
                        Ok(false)
                    } else {
                        Err(CaptureError::TruncatedFile {
                            offset: record_start,
                        })
                    };
                }
                Ok(n) => {
                    done += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Like [`Source::fill`], but the end of file is always an error.
    fn fill_all(&mut self, buf: &mut [u8], record_start: u64) -> Result<(), CaptureError> {
        if buf.is_empty() || self.fill(buf, record_start)? {
            Ok(())
        } else {
            Err(CaptureError::TruncatedFile {
                offset: record_start,
            })
        }
    }

    /// Skips `n` bytes.
    fn skip(&mut self, n: u64, record_start: u64) -> Result<(), CaptureError> {
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())?;
        self.offset += copied;
        if copied < n {
            return Err(CaptureError::TruncatedFile {
                offset: record_start,
            });
        }
        Ok(())
    }
}

impl CaptureReader<BufReader<File>> {
    /// Opens a capture file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        CaptureReader::new(BufReader::new(File::open(path)?))
    }
}

impl<R> CaptureReader<R> {
    /// The container format.
    pub fn format(&self) -> CaptureFormat {
        match &self.inner {
            Inner::Pcap(p) => CaptureFormat::Pcap {
                nanos: p.nanos,
                big_endian: p.big_endian,
            },
            Inner::PcapNg(_) => CaptureFormat::PcapNg,
        }
    }

    /// What has been read so far.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header and prepares to read packets.
    pub fn new(r: R) -> Result<Self, CaptureError> {
        let mut src = Source { r, offset: 0 };
        let mut magic = [0u8; 4];
        if !src.fill(&mut magic, 0)? {
            return Err(CaptureError::TruncatedFile { offset: 0 });
        }
        let inner = if magic == pcapng::SHB_TYPE.to_be_bytes() {
            Inner::PcapNg(pcapng::PcapNgState::start(&mut src, magic)?)
        } else {
            Inner::Pcap(pcap::PcapState::start(&mut src, magic)?)
        };
        Ok(CaptureReader {
            src,
            inner,
            buf: Vec::new(),
            stats: CaptureStats::default(),
            decapsulate: true,
        })
    }

    /// Whether tunnels are opened (the default) or their packets yielded as they are.
    pub fn set_decapsulate(&mut self, on: bool) {
        self.decapsulate = on;
    }

    /// The next IP packet, or `None` at the end of the capture. Frames that carry no IP packet
    /// are skipped (and counted in [`CaptureStats::skipped_non_ip`]).
    pub fn next_packet(&mut self) -> Result<Option<CapturedPacket<'_>>, CaptureError> {
        loop {
            let frame = match &mut self.inner {
                Inner::Pcap(p) => p.next_frame(&mut self.src, &mut self.buf)?,
                Inner::PcapNg(p) => p.next_frame(&mut self.src, &mut self.buf)?,
            };
            let Some(frame) = frame else {
                return Ok(None);
            };
            self.stats.frames += 1;
            let data = &self.buf[frame.data.clone()];
            let Some(ip) = ip_payload_range(frame.link_type, data) else {
                self.stats.skipped_non_ip += 1;
                continue;
            };
            let truncated = (frame.data.len() as u64) < u64::from(frame.original_len);
            let start = frame.data.start + ip.start;
            let mut ip = start..frame.data.start + ip.end;
            let mut tunnel_layers = 0u8;
            if self.decapsulate {
                match decap::decapsulate(&self.buf[ip.clone()]) {
                    decap::Decap::Packet { range, layers, .. } => {
                        ip = start + range.start..start + range.end;
                        tunnel_layers = u8::try_from(layers).unwrap_or(u8::MAX);
                        self.stats.decapsulated += u64::from(layers > 0);
                    }
                    decap::Decap::NotIp => {
                        self.stats.skipped_non_ip += 1;
                        continue;
                    }
                    decap::Decap::TooDeep => {
                        self.stats.tunnel_too_deep += 1;
                        continue;
                    }
                }
            }
            self.stats.ip_packets += 1;
            self.stats.truncated += u64::from(truncated);
            let packet = &self.buf[ip];
            return Ok(Some(CapturedPacket {
                timestamp: frame.timestamp,
                interface: frame.interface,
                link_type: frame.link_type,
                packet,
                truncated,
                tunnel_layers,
                original_len: frame.original_len,
            }));
        }
    }
}

/// A frame located in the reader's buffer.
pub(crate) struct Frame {
    timestamp: Duration,
    interface: u32,
    link_type: LinkType,
    data: std::ops::Range<usize>,
    original_len: u32,
}

#[cfg(test)]
mod tests;
