//! Shared helpers for the pipeline's integration tests: an in-memory harness with a fake clock,
//! a TCP/UDP packet builder (independent of the gateway's own `wire` module), RST checks through
//! etherparse, ClientHello builders, and the corpus location.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_gateway::pipeline::{Disposition, Output, PacketMeta, Pipeline, PipelineConfig};
use bulkhead_gateway::record::DecisionRecord;
use policy_engine::{compile, load_policy_str, CompiledPolicy, PolicyStore};

/// The SNI corpus: `BULKHEAD_CORPUS`, else `../shared/corpus` from the workspace root. `None`
/// (after saying so loudly) when it is absent.
pub fn corpus_dir(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("BULKHEAD_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    };
    if dir.join("manifest.tsv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "\n!!!!!!!!\n!!! {test}: SKIPPED: the SNI corpus is absent ({}); set BULKHEAD_CORPUS\n!!!!!!!!\n",
            dir.display()
        );
        None
    }
}

/// A real ClientHello from the corpus payloads (`client__chromium.bin`, ...).
pub fn corpus_payload(test: &str, file: &str) -> Option<Vec<u8>> {
    let dir = corpus_dir(test)?;
    Some(std::fs::read(dir.join("payloads").join(file)).expect("corpus payload"))
}

/// Compiles a policy written in the policy language.
pub fn policy(text: &str, version: u64) -> CompiledPolicy {
    let loaded = load_policy_str(text, std::path::Path::new("test-policy.toml"))
        .unwrap_or_else(|e| panic!("test policy does not load:\n{e}"));
    compile(&loaded.policy, version)
}

/// Permits `api.openai.com` and `*.example.com` on TCP 443 and 80, rejects `reject.example.net`,
/// denies everything else. Every decision is logged.
pub const POLICY_OPENAI: &str = r#"
[policy]
default_action = "deny"

[webgroups.openai]
domains = ["api.openai.com", "api.anthropic.com", "*.example.com"]

[webgroups.rejected]
domains = ["reject.example.net"]

[[rules]]
name = "reject-some"
priority = 10
src = ["any"]
dst = ["rejected"]
protocol = "tcp"
action = "reject"

[[rules]]
name = "allow-openai"
priority = 100
src = ["any"]
dst = ["openai"]
protocol = "tcp"
ports = ["443", "80"]
action = "permit"
log = true
"#;

/// Permits everything, logging it: every flow's name shows in the records.
pub const POLICY_PERMIT_ALL: &str = r#"
[policy]
default_action = "deny"

[[rules]]
name = "everything"
priority = 1
src = ["any"]
dst = ["any"]
protocol = "any"
action = "permit"
log = true
"#;

/// The pipeline with a fake clock; collects what leaves the gateway, in order.
pub struct Harness {
    pub pipe: Pipeline,
    pub store: Arc<PolicyStore>,
    pub now: Instant,
    pub out: Output,
    /// Packets that left the gateway (forwarded, released, or built), in order.
    pub wire: Vec<Vec<u8>>,
    pub records: Vec<DecisionRecord>,
}

impl Harness {
    pub fn new(policy_text: &str) -> Harness {
        Harness::with_config(policy_text, PipelineConfig::default())
    }

    pub fn with_config(policy_text: &str, config: PipelineConfig) -> Harness {
        let store = Arc::new(PolicyStore::new(policy(policy_text, 1)));
        let mut pipe = Pipeline::new(config, store.clone());
        let now = Instant::now();
        pipe.set_clock_anchor(now, 1_700_000_000_000);
        Harness {
            pipe,
            store,
            now,
            out: Output::default(),
            wire: Vec::new(),
            records: Vec::new(),
        }
    }

    pub fn send(&mut self, packet: &[u8]) -> Disposition {
        self.send_meta(packet, PacketMeta::default())
    }

    pub fn send_meta(&mut self, packet: &[u8], meta: PacketMeta) -> Disposition {
        let d = self.pipe.process(self.now, packet, meta, &mut self.out);
        if d == Disposition::Forward {
            self.wire.push(packet.to_vec());
        }
        self.collect();
        d
    }

    fn collect(&mut self) {
        for t in self.out.transmit.drain(..) {
            self.wire.push(t.packet);
        }
        self.records.append(&mut self.out.records);
    }

    /// Moves the fake clock and runs the expiry.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.pipe.next_timeout().is_some_and(|t| t <= self.now) {
            self.pipe.handle_timeout(self.now, &mut self.out);
        }
        self.collect();
    }

    pub fn reevaluate(&mut self) {
        self.pipe.reevaluate(self.now, &mut self.out);
        self.collect();
    }

    pub fn take_wire(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.wire)
    }

    /// Decision records (not flow ends).
    pub fn decisions(&self) -> Vec<&DecisionRecord> {
        self.records.iter().filter(|r| !r.is_flow_end()).collect()
    }

    /// Names of the decision records, in order.
    pub fn names(&self) -> Vec<Option<String>> {
        self.decisions()
            .iter()
            .map(|r| r.name().map(str::to_owned))
            .collect()
    }
}

/// One's-complement sum, written here independently of the gateway's `wire` module.
fn csum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        let mut i = 0;
        while i + 1 < c.len() {
            sum += u32::from(u16::from_be_bytes([c[i], c[i + 1]]));
            i += 2;
        }
        if i < c.len() {
            sum += u32::from(c[i]) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Builds an IPv4 or IPv6 packet around a transport header + payload, with correct checksums.
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, l4: &mut [u8], csum_at: usize) -> Vec<u8> {
    let len = l4.len() as u32;
    l4[csum_at] = 0;
    l4[csum_at + 1] = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets()[..],
                &[0, proto],
                &(len as u16).to_be_bytes()[..],
            ]
            .concat();
            let c = csum(&[&pseudo, l4]);
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let total = (20 + l4.len()) as u16;
            let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let hc = csum(&[&ip]);
            ip[10..12].copy_from_slice(&hc.to_be_bytes());
            ip.extend_from_slice(l4);
            ip
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets()[..],
                &len.to_be_bytes()[..],
                &[0, 0, 0, proto][..],
            ]
            .concat();
            let c = csum(&[&pseudo, l4]);
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[proto, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(l4);
            ip
        }
        _ => panic!("mixed address families"),
    }
}

/// A TCP segment.
pub fn tcp_packet(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20 + payload.len());
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), 6, &mut l4, 16)
}

/// A UDP datagram.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), 17, &mut l4, 6)
}

/// Flips a bit of the transport checksum.
pub fn corrupt_checksum(mut packet: Vec<u8>) -> Vec<u8> {
    let off = if packet[0] >> 4 == 4 {
        20 + 16
    } else {
        40 + 16
    };
    packet[off] ^= 0x01;
    packet
}

/// Both ends of a TCP connection and their initial sequence numbers.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub cisn: u32,
    pub sisn: u32,
}

impl Conn {
    /// IPv4, client 10.1.2.3:`cport`, server 192.0.2.10:443. The client ISN is near the wrap.
    pub fn v4(cport: u16) -> Conn {
        Conn {
            client: SocketAddr::new("10.1.2.3".parse().unwrap(), cport),
            server: SocketAddr::new("192.0.2.10".parse().unwrap(), 443),
            cisn: 0xffff_ff00,
            sisn: 0x1000_0000,
        }
    }

    pub fn v6(cport: u16) -> Conn {
        Conn {
            client: SocketAddr::new("fd00:1::3".parse().unwrap(), cport),
            server: SocketAddr::new("2001:db8::10".parse().unwrap(), 443),
            cisn: 7,
            sisn: 0x8000_0000,
        }
    }

    pub fn to_port(mut self, port: u16) -> Conn {
        self.server.set_port(port);
        self
    }

    pub fn syn(&self) -> Vec<u8> {
        tcp_packet(self.client, self.server, self.cisn, 0, SYN, &[])
    }

    pub fn syn_data(&self, data: &[u8]) -> Vec<u8> {
        tcp_packet(self.client, self.server, self.cisn, 0, SYN, data)
    }

    pub fn synack(&self) -> Vec<u8> {
        tcp_packet(
            self.server,
            self.client,
            self.sisn,
            self.cisn.wrapping_add(1),
            SYN | ACK,
            &[],
        )
    }

    pub fn ack(&self) -> Vec<u8> {
        self.data(0, &[])
    }

    /// Client data at stream offset `off` (0 = the first byte after the SYN).
    pub fn data(&self, off: u32, data: &[u8]) -> Vec<u8> {
        let flags = if data.is_empty() { ACK } else { ACK | PSH };
        tcp_packet(
            self.client,
            self.server,
            self.cisn.wrapping_add(1).wrapping_add(off),
            self.sisn.wrapping_add(1),
            flags,
            data,
        )
    }

    pub fn fin(&self, off: u32) -> Vec<u8> {
        tcp_packet(
            self.client,
            self.server,
            self.cisn.wrapping_add(1).wrapping_add(off),
            self.sisn.wrapping_add(1),
            FIN | ACK,
            &[],
        )
    }

    /// Server data at its stream offset `off`, acknowledging client offset `client_off`.
    pub fn server_data(&self, off: u32, client_off: u32, data: &[u8]) -> Vec<u8> {
        tcp_packet(
            self.server,
            self.client,
            self.sisn.wrapping_add(1).wrapping_add(off),
            self.cisn.wrapping_add(1).wrapping_add(client_off),
            ACK | if data.is_empty() { 0 } else { PSH },
            data,
        )
    }
}

/// SYN, SYN-ACK, ACK; asserts all three were forwarded.
pub fn handshake(h: &mut Harness, c: &Conn) {
    assert_eq!(h.send(&c.syn()), Disposition::Forward, "SYN");
    assert_eq!(h.send(&c.synack()), Disposition::Forward, "SYN-ACK");
    assert_eq!(h.send(&c.ack()), Disposition::Forward, "ACK");
}

/// A TCP RST as read back by etherparse, with its checksum verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rst {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: Option<u32>,
}

/// Parses `packet` as a TCP RST (None if it is not one); panics on a bad checksum or bad flags.
pub fn as_rst(packet: &[u8]) -> Option<Rst> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return None;
    };
    if !tcp.rst() {
        return None;
    }
    assert!(
        !tcp.syn() && !tcp.fin() && !tcp.psh(),
        "RST with other flags: {packet:02x?}"
    );
    assert!(tcp.payload().is_empty(), "RST carries data");
    let (src, dst, expect) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(
                h.to_header().calc_header_checksum(),
                h.header_checksum(),
                "IPv4 header checksum of RST"
            );
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap(),
            )
        }
        _ => return None,
    };
    assert_eq!(tcp.checksum(), expect, "TCP checksum of RST");
    Some(Rst {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
    })
}

/// Every RST among `packets`.
pub fn rsts(packets: &[Vec<u8>]) -> Vec<Rst> {
    packets.iter().filter_map(|p| as_rst(p)).collect()
}

/// Payload bytes of the client→server TCP segments among `packets`, reassembled by sequence
/// number relative to the client ISN (what the server would read).
pub fn client_stream(c: &Conn, packets: &[Vec<u8>]) -> Vec<u8> {
    use etherparse::{SlicedPacket, TransportSlice};
    let mut segs = Vec::new();
    for p in packets {
        let Ok(s) = SlicedPacket::from_ip(p) else {
            continue;
        };
        let Some(TransportSlice::Tcp(t)) = &s.transport else {
            continue;
        };
        if t.source_port() != c.client.port() || t.destination_port() != c.server.port() {
            continue;
        }
        if t.payload().is_empty() {
            continue;
        }
        let off = t.sequence_number().wrapping_sub(c.cisn.wrapping_add(1)) as usize;
        segs.push((off, t.payload().to_vec()));
    }
    segs.sort_by_key(|(o, _)| *o);
    let mut out = Vec::new();
    for (o, d) in segs {
        if o <= out.len() && o + d.len() > out.len() {
            let skip = out.len() - o;
            out.extend_from_slice(&d[skip..]);
        }
    }
    out
}

/// A minimal but well-formed TLS 1.2/1.3 ClientHello naming `sni` (none when `None`), in one
/// record. `pad` adds a padding extension of that many bytes.
pub fn client_hello(sni: Option<&str>, pad: usize) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&[0x42; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
        ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
        ext.extend_from_slice(n);
    }
    // supported_versions: TLS 1.3
    ext.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]);
    if pad > 0 {
        ext.extend_from_slice(&[0, 0x15]);
        ext.extend_from_slice(&(pad as u16).to_be_bytes());
        ext.extend(std::iter::repeat_n(0u8, pad));
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    tls_records(&hs, 16384)
}

/// Wraps handshake bytes into TLS records of at most `max` bytes each.
pub fn tls_records(hs: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in hs.chunks(max.max(1)) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Re-cuts a hello that arrived as one record into records of `max` bytes each.
pub fn recut_records(hello: &[u8], max: usize) -> Vec<u8> {
    let mut hs = Vec::new();
    let mut pos = 0;
    while pos + 5 <= hello.len() {
        let len = usize::from(u16::from_be_bytes([hello[pos + 3], hello[pos + 4]]));
        hs.extend_from_slice(&hello[pos + 5..(pos + 5 + len).min(hello.len())]);
        pos += 5 + len;
    }
    tls_records(&hs, max)
}

/// Advances the harness clock a little (so record times differ).
pub fn tick(h: &mut Harness) {
    h.advance(Duration::from_millis(1));
}
