//! Netfilter netlink messages, built and read by hand: the few conntrack (ctnetlink) and
//! nftables requests the fast path sends, and the conntrack entries and events it reads.
//!
//! Pure functions over byte buffers, so they are tested with byte vectors and never touch a
//! socket ([`crate::sys::netlink`] does). Readers check every length before they index and
//! answer `None` / skip what they do not understand: the kernel is trusted, but a reader that
//! can panic on a short message does not belong in a daemon.
//!
//! Formats: `linux/netlink.h` (message header, attributes), `linux/netfilter/nfnetlink.h`
//! (`nfgenmsg`, batches), `nfnetlink_conntrack.h` (CTA_* attributes), `nf_tables.h` (NFTA_*).

use std::net::{IpAddr, SocketAddr};

use crate::pipeline::FlowTuple;

pub const NETLINK_NETFILTER: i32 = 12;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

/// Multicast groups of ctnetlink events.
pub const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NFPROTO_INET: u8 = 1;
const IPPROTO_TCP: u8 = 6;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_PROTOINFO: u16 = 4;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_MARK_MASK: u16 = 21;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
/// The table belongs to the netlink socket that made it: the kernel removes it when that socket
/// closes (the process exits or dies). Linux 5.12 and later.
const NFT_TABLE_F_OWNER: u32 = 0x2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_REG_1: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
/// `NF_IP_PRI_MANGLE`: after conntrack (-200) has attached the entry, before routing.
const PRIORITY_MANGLE: i32 = -150;
const NF_ACCEPT: u32 = 1;
const NFT_CT_MARK: u32 = 3;
const NFT_META_MARK: u32 = 3;
const NFT_CMP_EQ: u32 = 0;

/// TCP states of conntrack (`enum tcp_conntrack`) the fast path acts on.
pub const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
pub const TCP_CONNTRACK_CLOSE: u8 = 8;

/// Packet and byte counters of one conntrack entry, both directions (needs
/// `net.netfilter.nf_conntrack_acct = 1` when the entry was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub orig_packets: u64,
    pub orig_bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
}

/// What the fast path reads from a conntrack entry or event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    /// The original direction, when it is TCP over IPv4 or IPv6.
    pub tuple: Option<FlowTuple>,
    pub id: Option<u32>,
    pub mark: u32,
    pub counters: Option<Counters>,
    pub tcp_state: Option<u8>,
}

/// A conntrack message: an entry (dump or get answer, or an event) or its removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtMessage {
    /// `IPCTNL_MSG_CT_NEW`: an entry, or an update event.
    Entry(CtEntry),
    /// `IPCTNL_MSG_CT_DELETE`: a destroy event.
    Destroyed(CtEntry),
}

/// One netlink message read from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// After the netlink header.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// For `NLMSG_ERROR`: the error number (0 is an acknowledgment, else a negative errno).
    pub fn error(&self) -> Option<i32> {
        if self.kind != NLMSG_ERROR {
            return None;
        }
        let b = self.payload.get(..4)?;
        Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The conntrack entry this message carries, if it is one.
    pub fn conntrack(&self) -> Option<CtMessage> {
        if self.kind >> 8 != NFNL_SUBSYS_CTNETLINK {
            return None;
        }
        let entry = parse_entry(self.payload.get(NFGENMSG_LEN..)?);
        match self.kind & 0xff {
            IPCTNL_MSG_CT_NEW => Some(CtMessage::Entry(entry)),
            IPCTNL_MSG_CT_DELETE => Some(CtMessage::Destroyed(entry)),
            _ => None,
        }
    }
}

/// The messages of a buffer read from a netlink socket; stops at the first malformed header.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let m = Message {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(m)
    })
}

/// Attributes of a buffer: (type without flags, value). Stops at the first malformed one.
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        if len < NLA_HDRLEN || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        let value = &rest[NLA_HDRLEN..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

fn be_u16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

fn parse_entry(buf: &[u8]) -> CtEntry {
    let mut e = CtEntry {
        tuple: None,
        id: None,
        mark: 0,
        counters: None,
        tcp_state: None,
    };
    let mut orig = None;
    let mut reply = None;
    for (kind, v) in attrs(buf) {
        match kind {
            CTA_TUPLE_ORIG => e.tuple = parse_tuple(v),
            CTA_ID => e.id = be_u32(v),
            CTA_MARK => e.mark = be_u32(v).unwrap_or(0),
            CTA_COUNTERS_ORIG => orig = parse_counters(v),
            CTA_COUNTERS_REPLY => reply = parse_counters(v),
            CTA_PROTOINFO => {
                e.tcp_state =
                    attrs(v)
                        .find(|(k, _)| *k == CTA_PROTOINFO_TCP)
                        .and_then(|(_, tcp)| {
                            attrs(tcp)
                                .find(|(k, _)| *k == CTA_PROTOINFO_TCP_STATE)
                                .and_then(|(_, s)| s.first().copied())
                        });
            }
            _ => {}
        }
    }
    if let (Some((op, ob)), Some((rp, rb))) = (orig, reply) {
        e.counters = Some(Counters {
            orig_packets: op,
            orig_bytes: ob,
            reply_packets: rp,
            reply_bytes: rb,
        });
    }
    e
}

fn parse_counters(buf: &[u8]) -> Option<(u64, u64)> {
    let mut packets = None;
    let mut bytes = None;
    for (kind, v) in attrs(buf) {
        match kind {
            CTA_COUNTERS_PACKETS => packets = be_u64(v),
            CTA_COUNTERS_BYTES => bytes = be_u64(v),
            _ => {}
        }
    }
    Some((packets?, bytes?))
}

fn parse_tuple(buf: &[u8]) -> Option<FlowTuple> {
    let mut src = None;
    let mut dst = None;
    let mut proto = None;
    let mut sport = None;
    let mut dport = None;
    for (kind, v) in attrs(buf) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, a) in attrs(v) {
                    match (k, a.len()) {
                        (CTA_IP_V4_SRC, 4) => {
                            src = Some(IpAddr::from(<[u8; 4]>::try_from(a).ok()?))
                        }
                        (CTA_IP_V4_DST, 4) => {
                            dst = Some(IpAddr::from(<[u8; 4]>::try_from(a).ok()?))
                        }
                        (CTA_IP_V6_SRC, 16) => {
                            src = Some(IpAddr::from(<[u8; 16]>::try_from(a).ok()?))
                        }
                        (CTA_IP_V6_DST, 16) => {
                            dst = Some(IpAddr::from(<[u8; 16]>::try_from(a).ok()?))
                        }
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, a) in attrs(v) {
                    match k {
                        CTA_PROTO_NUM => proto = a.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be_u16(a),
                        CTA_PROTO_DST_PORT => dport = be_u16(a),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if proto? != IPPROTO_TCP {
        return None;
    }
    Some(FlowTuple {
        client: SocketAddr::new(src?, sport?),
        server: SocketAddr::new(dst?, dport?),
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds netlink messages into one buffer (several messages make a batch).
#[derive(Debug, Default)]
pub struct Builder {
    buf: Vec<u8>,
    /// Start of the open message.
    msg: usize,
    /// Starts of the open nested attributes.
    nests: Vec<usize>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Opens a message with an `nfgenmsg` header (`res_id` in network order).
    fn begin(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.msg = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Closes the open message (writes its length).
    fn end(&mut self) {
        let len = (self.buf.len() - self.msg) as u32;
        self.buf[self.msg..self.msg + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = (NLA_HDRLEN + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v);
    }

    fn attr_be32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn nest(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn unnest(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn tuple(&mut self, t: &FlowTuple) {
        self.nest(CTA_TUPLE_ORIG);
        self.nest(CTA_TUPLE_IP);
        match (t.client.ip(), t.server.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.attr(CTA_IP_V4_SRC, &s.octets());
                self.attr(CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                self.attr(CTA_IP_V6_SRC, &v6_octets(s));
                self.attr(CTA_IP_V6_DST, &v6_octets(d));
            }
        }
        self.unnest();
        self.nest(CTA_TUPLE_PROTO);
        self.attr(CTA_PROTO_NUM, &[IPPROTO_TCP]);
        self.attr(CTA_PROTO_SRC_PORT, &t.client.port().to_be_bytes());
        self.attr(CTA_PROTO_DST_PORT, &t.server.port().to_be_bytes());
        self.unnest();
        self.unnest();
    }

    /// Sets (`on`) or clears the bits of `mask` in the mark of the conntrack entry whose
    /// original direction is `t`, leaving its other bits alone (`CTA_MARK_MASK`).
    pub fn ct_set_mark(&mut self, seq: u32, t: &FlowTuple, mask: u32, on: bool) {
        self.begin(
            NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family_of(t),
            0,
        );
        self.tuple(t);
        self.attr_be32(CTA_MARK, if on { mask } else { 0 });
        self.attr_be32(CTA_MARK_MASK, mask);
        self.end();
    }

    /// Asks for the conntrack entry whose original direction is `t`.
    pub fn ct_get(&mut self, seq: u32, t: &FlowTuple) {
        self.begin(
            NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family_of(t),
            0,
        );
        self.tuple(t);
        self.end();
    }

    /// Dumps the conntrack entries (both families) whose mark has the bits of `mask`.
    pub fn ct_dump_marked(&mut self, seq: u32, mask: u32) {
        self.begin(
            NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            0,
            0,
        );
        self.attr_be32(CTA_MARK, mask);
        self.attr_be32(CTA_MARK_MASK, mask);
        self.end();
    }

    fn batch_edge(&mut self, kind: u16, seq: u32) {
        self.begin(kind, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES);
        self.end();
    }

    /// A transaction that creates table `inet NAME` with one chain in prerouting (mangle
    /// priority) holding one rule: when the packet's conntrack mark has `mask`, the packet's
    /// mark gets it too (`ct mark and M == M meta mark set meta mark or M`). Messages take
    /// `seq`, `seq + 1`, ...; returns the sequence numbers whose acknowledgments to wait for.
    ///
    /// With `owned`, the table belongs to the socket that sends this (`NFT_TABLE_F_OWNER`).
    pub fn nft_install(&mut self, seq: u32, table: &str, mask: u32, owned: bool) -> Vec<u32> {
        let chain = "prerouting";
        self.batch_edge(NFNL_MSG_BATCH_BEGIN, seq);
        let t = seq + 1;
        self.begin(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
            t,
            NFPROTO_INET,
            0,
        );
        self.attr_str(NFTA_TABLE_NAME, table);
        if owned {
            self.attr_be32(NFTA_TABLE_FLAGS, NFT_TABLE_F_OWNER);
        }
        self.end();
        let c = seq + 2;
        self.begin(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
            c,
            NFPROTO_INET,
            0,
        );
        self.attr_str(NFTA_CHAIN_TABLE, table);
        self.attr_str(NFTA_CHAIN_NAME, chain);
        self.nest(NFTA_CHAIN_HOOK);
        self.attr_be32(NFTA_HOOK_HOOKNUM, NF_INET_PRE_ROUTING);
        self.attr_be32(NFTA_HOOK_PRIORITY, PRIORITY_MANGLE as u32);
        self.unnest();
        self.attr_be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        self.attr_str(NFTA_CHAIN_TYPE, "filter");
        self.end();
        let r = seq + 3;
        self.begin(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
            r,
            NFPROTO_INET,
            0,
        );
        self.attr_str(NFTA_RULE_TABLE, table);
        self.attr_str(NFTA_RULE_CHAIN, chain);
        self.nest(NFTA_RULE_EXPRESSIONS);
        // Register values are in host order (a mark is a host-order u32 in the kernel).
        self.expr("ct", |b| {
            b.attr_be32(1, NFT_REG_1); // NFTA_CT_DREG
            b.attr_be32(2, NFT_CT_MARK); // NFTA_CT_KEY
        });
        self.expr("bitwise", |b| {
            b.attr_be32(1, NFT_REG_1); // NFTA_BITWISE_SREG
            b.attr_be32(2, NFT_REG_1); // NFTA_BITWISE_DREG
            b.attr_be32(3, 4); // NFTA_BITWISE_LEN
            b.data(4, &mask.to_ne_bytes()); // NFTA_BITWISE_MASK
            b.data(5, &0u32.to_ne_bytes()); // NFTA_BITWISE_XOR
        });
        self.expr("cmp", |b| {
            b.attr_be32(1, NFT_REG_1); // NFTA_CMP_SREG
            b.attr_be32(2, NFT_CMP_EQ); // NFTA_CMP_OP
            b.data(3, &mask.to_ne_bytes()); // NFTA_CMP_DATA
        });
        self.expr("meta", |b| {
            b.attr_be32(1, NFT_REG_1); // NFTA_META_DREG
            b.attr_be32(2, NFT_META_MARK); // NFTA_META_KEY
        });
        self.expr("bitwise", |b| {
            b.attr_be32(1, NFT_REG_1);
            b.attr_be32(2, NFT_REG_1);
            b.attr_be32(3, 4);
            b.data(4, &(!mask).to_ne_bytes());
            b.data(5, &mask.to_ne_bytes());
        });
        self.expr("meta", |b| {
            b.attr_be32(2, NFT_META_MARK); // NFTA_META_KEY
            b.attr_be32(3, NFT_REG_1); // NFTA_META_SREG
        });
        self.unnest();
        self.end();
        self.batch_edge(NFNL_MSG_BATCH_END, seq + 4);
        vec![t, c, r]
    }

    /// A transaction that deletes table `inet NAME` (and everything in it).
    pub fn nft_delete(&mut self, seq: u32, table: &str) -> Vec<u32> {
        self.batch_edge(NFNL_MSG_BATCH_BEGIN, seq);
        self.begin(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq + 1,
            NFPROTO_INET,
            0,
        );
        self.attr_str(NFTA_TABLE_NAME, table);
        self.end();
        self.batch_edge(NFNL_MSG_BATCH_END, seq + 2);
        vec![seq + 1]
    }

    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Builder)) {
        self.nest(NFTA_LIST_ELEM);
        self.attr_str(NFTA_EXPR_NAME, name);
        self.nest(NFTA_EXPR_DATA);
        data(self);
        self.unnest();
        self.unnest();
    }

    fn data(&mut self, kind: u16, value: &[u8]) {
        self.nest(kind);
        self.attr(NFTA_DATA_VALUE, value);
        self.unnest();
    }
}

fn family_of(t: &FlowTuple) -> u8 {
    if t.client.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple() -> FlowTuple {
        FlowTuple {
            client: "10.10.1.2:40000".parse().unwrap(),
            server: "10.200.0.10:443".parse().unwrap(),
        }
    }

    #[test]
    fn set_mark_message_has_the_documented_layout() {
        let mut b = Builder::new();
        b.ct_set_mark(7, &tuple(), 0x0100_0000, true);
        let buf = b.finish();
        let msgs: Vec<_> = messages(&buf).collect();
        assert_eq!(msgs.len(), 1);
        let m = msgs[0];
        assert_eq!(m.kind, 0x0100, "ctnetlink CT_NEW");
        assert_eq!(m.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(m.seq, 7);
        assert_eq!(m.payload[0], AF_INET);
        let a: Vec<(u16, Vec<u8>)> = attrs(&m.payload[4..])
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(a[0].0, CTA_TUPLE_ORIG);
        assert_eq!(parse_tuple(&a[0].1), Some(tuple()));
        assert_eq!(a[1], (CTA_MARK, vec![1, 0, 0, 0]));
        assert_eq!(a[2], (CTA_MARK_MASK, vec![1, 0, 0, 0]));
        let mut b = Builder::new();
        b.ct_set_mark(8, &tuple(), 0x0100_0000, false);
        let buf = b.finish();
        let m = messages(&buf).next().unwrap();
        let a: Vec<_> = attrs(&m.payload[4..]).collect();
        assert_eq!(a[1], (CTA_MARK, &[0u8, 0, 0, 0][..]));
    }

    /// A destroy event in the kernel's layout, with the attributes the fast path reads: tuple,
    /// counters, TCP state, id, mark (the live daemon reads real ones in the namespace tests).
    fn destroy_event(v6: bool) -> Vec<u8> {
        let mut b = Builder::new();
        let t = if v6 {
            FlowTuple {
                client: "[fd00:10:1::2]:40000".parse().unwrap(),
                server: "[fd00:200::10]:443".parse().unwrap(),
            }
        } else {
            tuple()
        };
        b.begin(
            NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE,
            0,
            0,
            family_of(&t),
            0,
        );
        b.tuple(&t);
        b.nest(CTA_COUNTERS_ORIG);
        b.attr(CTA_COUNTERS_PACKETS, &12u64.to_be_bytes());
        b.attr(CTA_COUNTERS_BYTES, &1200u64.to_be_bytes());
        b.unnest();
        b.nest(CTA_COUNTERS_REPLY);
        b.attr(CTA_COUNTERS_PACKETS, &30u64.to_be_bytes());
        b.attr(CTA_COUNTERS_BYTES, &3_000_000u64.to_be_bytes());
        b.unnest();
        b.nest(CTA_PROTOINFO);
        b.nest(CTA_PROTOINFO_TCP);
        b.attr(CTA_PROTOINFO_TCP_STATE, &[TCP_CONNTRACK_TIME_WAIT]);
        b.unnest();
        b.unnest();
        b.attr_be32(CTA_ID, 0xdead_beef);
        b.attr_be32(CTA_MARK, 0x0100_0003);
        b.end();
        b.finish()
    }

    #[test]
    fn destroy_events_are_read() {
        for v6 in [false, true] {
            let buf = destroy_event(v6);
            let m = messages(&buf).next().unwrap();
            let Some(CtMessage::Destroyed(e)) = m.conntrack() else {
                panic!("not a destroy event: {m:?}");
            };
            assert_eq!(e.mark, 0x0100_0003);
            assert_eq!(e.id, Some(0xdead_beef));
            assert_eq!(e.tcp_state, Some(TCP_CONNTRACK_TIME_WAIT));
            assert_eq!(
                e.counters,
                Some(Counters {
                    orig_packets: 12,
                    orig_bytes: 1200,
                    reply_packets: 30,
                    reply_bytes: 3_000_000
                })
            );
            assert_eq!(e.tuple.unwrap().server.port(), 443);
            assert_eq!(e.tuple.unwrap().client.is_ipv6(), v6);
        }
    }

    #[test]
    fn every_truncation_of_an_event_is_read_without_panicking() {
        let buf = destroy_event(true);
        for n in 0..buf.len() {
            let mut cut = buf[..n].to_vec();
            if n >= 4 {
                // Keep the header's length consistent with the cut, so the attribute parser
                // sees the short buffer.
                cut[..4].copy_from_slice(&(n as u32).to_ne_bytes());
            }
            for m in messages(&cut) {
                let _ = m.conntrack();
                let _ = m.error();
            }
        }
        // Garbage lengths inside the attributes.
        let mut bad = buf.clone();
        bad[20] = 0xff;
        bad[21] = 0xff;
        for m in messages(&bad) {
            let _ = m.conntrack();
        }
    }

    #[test]
    fn counters_missing_on_one_side_are_no_counters() {
        let mut b = Builder::new();
        b.begin(NFNL_SUBSYS_CTNETLINK << 8, 0, 0, AF_INET, 0);
        b.tuple(&tuple());
        b.nest(CTA_COUNTERS_ORIG);
        b.attr(CTA_COUNTERS_PACKETS, &1u64.to_be_bytes());
        b.attr(CTA_COUNTERS_BYTES, &60u64.to_be_bytes());
        b.unnest();
        b.end();
        let buf = b.finish();
        let Some(CtMessage::Entry(e)) = messages(&buf).next().unwrap().conntrack() else {
            panic!()
        };
        assert_eq!(e.counters, None);
    }

    #[test]
    fn nft_batch_is_framed_by_begin_and_end() {
        let mut b = Builder::new();
        let acks = b.nft_install(100, "bulkhead_bulk0", 0x0100_0000, true);
        assert_eq!(acks, vec![101, 102, 103]);
        let buf = b.finish();
        let kinds: Vec<u16> = messages(&buf).map(|m| m.kind).collect();
        assert_eq!(kinds, vec![0x10, 0x0a00, 0x0a03, 0x0a06, 0x11]);
        // The batch's nfgenmsg names the nftables subsystem.
        let first = messages(&buf).next().unwrap();
        assert_eq!(&first.payload[2..4], &10u16.to_be_bytes());
        let mut b = Builder::new();
        assert_eq!(b.nft_delete(5, "t"), vec![6]);
        assert_eq!(messages(&b.finish()).count(), 3);
    }

    #[test]
    fn errors_are_read() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&36u32.to_ne_bytes());
        buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        buf.extend_from_slice(&0u16.to_ne_bytes());
        buf.extend_from_slice(&9u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&(-2i32).to_ne_bytes());
        buf.extend_from_slice(&[0u8; 16]);
        let m = messages(&buf).next().unwrap();
        assert_eq!(m.error(), Some(-2));
        assert_eq!(m.seq, 9);
    }
}
