//! Capture reader tests: synthetic files of every format variant, hostile files, and every
//! capture of the corpus (cross-checked against the `pcap-file` crate).

use std::io::Cursor;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const V4: &[u8] = &[
    0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
];

fn v6() -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 0, 59, 64];
    p.extend_from_slice(&[0xfd; 32]);
    p
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02; 12];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

struct PcapFile {
    big: bool,
    out: Vec<u8>,
}

impl PcapFile {
    fn new(big: bool, nanos: bool, linktype: u32) -> Self {
        let mut f = PcapFile {
            big,
            out: Vec::new(),
        };
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        f.u32(magic);
        f.u16(2);
        f.u16(4);
        f.u32(0);
        f.u32(0);
        f.u32(65535);
        f.u32(linktype);
        f
    }
    fn u16(&mut self, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }
    fn u32(&mut self, v: u32) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }
    fn packet(&mut self, secs: u32, frac: u32, frame: &[u8], orig: u32) {
        self.u32(secs);
        self.u32(frac);
        self.u32(frame.len() as u32);
        self.u32(orig);
        self.out.extend_from_slice(frame);
    }
}

/// Timestamp, interface, IP packet, truncated.
type Packet = (Duration, u32, Vec<u8>, bool);

fn read_all(bytes: &[u8]) -> Result<(Vec<Packet>, CaptureStats), CaptureError> {
    let mut r = CaptureReader::new(Cursor::new(bytes))?;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet()? {
        out.push((p.timestamp, p.interface, p.packet.to_vec(), p.truncated));
    }
    Ok((out, r.stats()))
}

#[test]
fn pcap_all_byte_orders_and_resolutions() {
    for big in [false, true] {
        for nanos in [false, true] {
            let mut f = PcapFile::new(big, nanos, 1);
            f.packet(1_700_000_000, 123_456, &eth(0x0800, V4), 34);
            f.packet(1_700_000_001, 999, &eth(0x0806, &[0; 28]), 42); // ARP
            f.packet(1_700_000_002, 5, &eth(0x86dd, &v6()), 54);
            f.packet(1_700_000_003, 0, &eth(0x0800, &V4[..10]), 34); // snap-length cut
            let (pkts, stats) = read_all(&f.out).unwrap();
            let unit = if nanos { 1 } else { 1000 };
            assert_eq!(pkts.len(), 3);
            assert_eq!(pkts[0].0, Duration::new(1_700_000_000, 123_456 * unit));
            assert_eq!(pkts[0].2, V4);
            assert_eq!(pkts[1].2, v6());
            assert!(!pkts[1].3);
            assert_eq!(pkts[2].2, &V4[..10]);
            assert!(pkts[2].3);
            assert_eq!(
                stats,
                CaptureStats {
                    frames: 4,
                    ip_packets: 3,
                    truncated: 1,
                    skipped_non_ip: 1,
                    ..CaptureStats::default()
                }
            );
            let r = CaptureReader::new(Cursor::new(&f.out)).unwrap();
            assert_eq!(
                r.format(),
                CaptureFormat::Pcap {
                    nanos,
                    big_endian: big
                }
            );
        }
    }
}

#[test]
fn pcap_agrees_with_pcap_file_writer() {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::{DataLink, Endianness, TsResolution};
    let header = PcapHeader {
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::Big,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    let ts = Duration::new(1_234_567_890, 987_654_321);
    w.write_packet(&PcapPacket::new(ts, 20, V4)).unwrap();
    w.write_packet(&PcapPacket::new(ts * 2, 40, &v6())).unwrap();
    let (pkts, _) = read_all(&w.into_writer()).unwrap();
    assert_eq!(pkts.len(), 2);
    assert_eq!(pkts[0].0, ts);
    assert_eq!(pkts[1].0, ts * 2);
    assert_eq!(pkts[1].2, v6());
}

#[test]
fn pcap_other_link_types() {
    let mut null = vec![2, 0, 0, 0];
    null.extend_from_slice(V4);
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x86, 0xdd];
    sll.extend_from_slice(&v6());
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
    ];
    sll2.extend_from_slice(V4);
    let mut lo = vec![0, 0, 0, 24];
    lo.extend_from_slice(&v6());
    let mut qinq = vec![0x02; 12];
    qinq.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00]);
    qinq.extend_from_slice(V4);
    for (lt, frame, want) in [
        (0u32, null, V4.to_vec()),
        (113, sll, v6()),
        (276, sll2, V4.to_vec()),
        (108, lo, v6()),
        (101, v6(), v6()),
        (12, V4.to_vec(), V4.to_vec()),
        (228, V4.to_vec(), V4.to_vec()),
        (229, v6(), v6()),
        (1, qinq, V4.to_vec()),
    ] {
        let mut f = PcapFile::new(false, false, lt);
        f.packet(1, 2, &frame, frame.len() as u32);
        let (pkts, _) = read_all(&f.out).unwrap();
        assert_eq!(pkts.len(), 1, "linktype {lt}");
        assert_eq!(pkts[0].2, want, "linktype {lt}");
    }
    // Ethernet with an FCS (bit 26 set, 2 words = 4 bytes): the FCS is cut off.
    let mut f = PcapFile::new(false, false, 0x2400_0001);
    let mut frame = eth(0x0800, V4);
    frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    f.packet(1, 2, &frame, frame.len() as u32);
    let (pkts, _) = read_all(&f.out).unwrap();
    assert_eq!(pkts[0].2, V4);
}

#[test]
fn pcap_errors() {
    assert!(matches!(
        CaptureReader::new(Cursor::new(b"GIF89a......".to_vec())),
        Err(CaptureError::UnknownFormat(_))
    ));
    assert!(matches!(
        CaptureReader::new(Cursor::new(Vec::new())),
        Err(CaptureError::TruncatedFile { offset: 0 })
    ));
    let f = PcapFile::new(false, false, 147);
    assert!(matches!(
        CaptureReader::new(Cursor::new(&f.out)),
        Err(CaptureError::UnsupportedLinkType(147))
    ));
    let mut f = PcapFile::new(false, false, 1);
    f.out[4] = 3;
    assert!(matches!(
        CaptureReader::new(Cursor::new(&f.out)),
        Err(CaptureError::UnsupportedVersion(3, 4))
    ));
    // A record claiming 1 GiB: refused before any allocation.
    let mut f = PcapFile::new(false, false, 1);
    f.u32(0);
    f.u32(0);
    f.u32(1 << 30);
    f.u32(1 << 30);
    let mut r = CaptureReader::new(Cursor::new(&f.out)).unwrap();
    assert!(matches!(
        r.next_packet(),
        Err(CaptureError::Corrupt { offset: 24, .. })
    ));
    // A file cut inside a record.
    let mut f = PcapFile::new(false, false, 101);
    f.packet(1, 2, V4, 20);
    let cut = &f.out[..f.out.len() - 3];
    let mut r = CaptureReader::new(Cursor::new(cut)).unwrap();
    assert!(matches!(
        r.next_packet(),
        Err(CaptureError::TruncatedFile { offset: 24 })
    ));
}

/// A pcapng writer for tests: sections of either byte order, any blocks.
struct NgFile {
    big: bool,
    out: Vec<u8>,
}

impl NgFile {
    fn new() -> Self {
        NgFile {
            big: false,
            out: Vec::new(),
        }
    }
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn block(&mut self, ty: u32, body: &[u8]) {
        let mut body = body.to_vec();
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let total = body.len() as u32 + 12;
        let (t, l) = (self.u32(ty), self.u32(total));
        self.out.extend_from_slice(&t);
        self.out.extend_from_slice(&l);
        self.out.extend_from_slice(&body);
        self.out.extend_from_slice(&l);
    }
    fn section(&mut self, big: bool) {
        self.big = big;
        let mut b = vec![];
        b.extend_from_slice(&self.u32(0x1a2b_3c4d));
        b.extend_from_slice(&self.u16(1));
        b.extend_from_slice(&self.u16(0));
        b.extend_from_slice(&[0xff; 8]); // section length: unknown
        self.block(SHB_TYPE_FOR_TESTS, &b);
    }
    fn interface(&mut self, linktype: u16, snaplen: u32, options: &[(u16, Vec<u8>)]) {
        let mut b = vec![];
        b.extend_from_slice(&self.u16(linktype));
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.u32(snaplen));
        for (code, v) in options {
            b.extend_from_slice(&self.u16(*code));
            b.extend_from_slice(&self.u16(v.len() as u16));
            b.extend_from_slice(v);
            while b.len() % 4 != 0 {
                b.push(0);
            }
        }
        if !options.is_empty() {
            b.extend_from_slice(&[0; 4]);
        }
        self.block(1, &b);
    }
    fn epb(&mut self, iface: u32, ts: u64, frame: &[u8], orig: u32) {
        let mut b = vec![];
        b.extend_from_slice(&self.u32(iface));
        b.extend_from_slice(&self.u32((ts >> 32) as u32));
        b.extend_from_slice(&self.u32(ts as u32));
        b.extend_from_slice(&self.u32(frame.len() as u32));
        b.extend_from_slice(&self.u32(orig));
        b.extend_from_slice(frame);
        self.block(6, &b);
    }
}

const SHB_TYPE_FOR_TESTS: u32 = 0x0a0d_0d0a;

fn sample_ng() -> Vec<u8> {
    let mut f = NgFile::new();
    // Section 1, little-endian: Ethernet (µs) and raw IP (ns, +10 s offset).
    f.section(false);
    f.interface(1, 65535, &[]);
    f.interface(101, 0, &[(9, vec![9]), (14, 10i64.to_le_bytes().to_vec())]);
    f.epb(0, 1_700_000_000_000_001, &eth(0x0800, V4), 34);
    f.block(4, &[0, 0, 0, 0]); // name resolution block: skipped
    f.epb(1, 1_700_000_000_000_000_005, &v6(), 40);
    f.epb(0, 1_700_000_000_000_002, &eth(0x0806, &[0; 28]), 42); // ARP
                                                                 // Section 2, big-endian: SLL2 with binary resolution 2^-10, and a simple packet on it.
    f.section(true);
    f.interface(276, 30, &[(9, vec![0x80 | 10])]);
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
    ];
    sll2.extend_from_slice(V4);
    f.epb(0, (5 << 10) | 512, &sll2, 40);
    let mut spb = f.u32(sll2.len() as u32).to_vec();
    spb.extend_from_slice(&sll2);
    f.block(3, &spb); // snaplen 30 cuts it to 30 bytes
    f.out
}

#[test]
fn pcapng_sections_interfaces_and_blocks() {
    let (pkts, stats) = read_all(&sample_ng()).unwrap();
    assert_eq!(pkts.len(), 4);
    assert_eq!(
        pkts[0],
        (Duration::new(1_700_000_000, 1_000), 0, V4.to_vec(), false)
    );
    assert_eq!(pkts[1], (Duration::new(1_700_000_010, 5), 1, v6(), false));
    assert_eq!(
        pkts[2],
        (Duration::new(5, 500_000_000), 0, V4.to_vec(), false)
    );
    assert_eq!(pkts[3].2, &V4[..10]);
    assert!(pkts[3].3);
    assert_eq!(stats.skipped_non_ip, 1);
    assert_eq!(stats.truncated, 1);
    let r = CaptureReader::new(Cursor::new(sample_ng())).unwrap();
    assert_eq!(r.format(), CaptureFormat::PcapNg);
}

#[test]
fn pcapng_errors() {
    // Packet on an interface that was never described.
    let mut f = NgFile::new();
    f.section(false);
    f.epb(0, 0, V4, 20);
    assert!(matches!(
        read_all(&f.out),
        Err(CaptureError::UnknownInterface(0))
    ));
    // Unsupported link type, reported when a packet uses it.
    let mut f = NgFile::new();
    f.section(true);
    f.interface(147, 0, &[]);
    f.epb(0, 0, V4, 20);
    assert!(matches!(
        read_all(&f.out),
        Err(CaptureError::UnsupportedLinkType(147))
    ));
    // Trailing length that disagrees, and a length that is not a multiple of 4.
    let mut f = NgFile::new();
    f.section(false);
    f.interface(101, 0, &[]);
    let at = f.out.len();
    f.epb(0, 0, V4, 20);
    let mut bad = f.out.clone();
    let end = bad.len();
    bad[end - 4] ^= 4;
    assert!(matches!(read_all(&bad), Err(CaptureError::Corrupt { .. })));
    let mut bad = f.out.clone();
    bad[at + 4] = 0x31;
    assert!(matches!(read_all(&bad), Err(CaptureError::Corrupt { .. })));
    // Captured length beyond the block.
    let mut bad = f.out.clone();
    bad[at + 20] = 200;
    assert!(matches!(read_all(&bad), Err(CaptureError::Corrupt { .. })));
    // Bad byte-order magic.
    let mut bad = f.out.clone();
    bad[8] = 0;
    assert!(matches!(
        CaptureReader::new(Cursor::new(bad)),
        Err(CaptureError::Corrupt { .. })
    ));
    // Cut inside a block.
    assert!(matches!(
        read_all(&f.out[..f.out.len() - 1]),
        Err(CaptureError::TruncatedFile { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Hostile files never panic, whatever is changed or cut.
    #[test]
    fn mutated_captures_never_panic(
        ng in any::<bool>(),
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = if ng {
            sample_ng()
        } else {
            let mut f = PcapFile::new(false, true, 1);
            f.packet(1, 2, &eth(0x0800, V4), 34);
            f.packet(3, 4, &eth(0x8100, &[0, 1, 0x86, 0xdd]), 54);
            f.out
        };
        for (i, v) in &muts {
            let at = i.index(bytes.len());
            bytes[at] = *v;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(mut r) = CaptureReader::new(Cursor::new(&bytes)) {
            for _ in 0..100 {
                match r.next_packet() {
                    Ok(Some(p)) => prop_assert!(p.packet.len() <= bytes.len()),
                    _ => break,
                }
            }
        }
    }
}

#[test]
fn every_corpus_capture_yields_ip_packets() {
    // testdata/ always; the extra corpus too when it is there.
    let mut files: Vec<_> = bulkhead_testkit::captures()
        .into_iter()
        .map(|row| row.path)
        .collect();
    files.sort();
    assert!(files.len() >= 15, "testdata/ captures are missing");
    let mut total = 0u64;
    println!(
        "{:<80} {:>7} {:>7} {:>7} {:>7}",
        "capture", "frames", "ip", "non-ip", "cut"
    );
    for path in &files {
        let mut r = CaptureReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut parsed = 0u64;
        // A capture may end in a corrupt record: the packets before it still count.
        let end = loop {
            match r.next_packet() {
                Ok(Some(p)) => parsed += u64::from(crate::wire::parse(p.packet).is_ok()),
                Ok(None) => break String::new(),
                Err(e) => break format!("  ({e})"),
            }
        };
        let s = r.stats();
        let name = path.file_name().unwrap().to_string_lossy();
        println!(
            "{name:<80} {:>7} {:>7} {:>7} {:>7}{end}",
            s.frames, s.ip_packets, s.skipped_non_ip, s.truncated
        );
        assert!(s.ip_packets > 0, "{name}: no IP packets");
        assert!(
            parsed * 10 >= s.ip_packets * 9,
            "{name}: only {parsed} of {} parse",
            s.ip_packets
        );
        // The pcap-file crate reads the same frames, and fails where this reader fails.
        let mut oracle =
            pcap_file::pcap::PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let mut n = 0u64;
        let mut oracle_failed = false;
        while let Some(p) = oracle.next_packet() {
            if p.is_err() {
                oracle_failed = true;
                break;
            }
            n += 1;
        }
        assert_eq!(n, s.frames, "{name}: frame count differs from pcap-file");
        assert_eq!(
            oracle_failed,
            !end.is_empty(),
            "{name}: pcap-file disagrees on the end"
        );
        total += s.ip_packets;
    }
    println!("{} captures, {total} IP packets", files.len());
}
