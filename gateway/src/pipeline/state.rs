//! Per-flow state: what the table holds for each flow.
//!
//! A flow's life is two enums. Its [`Phase`] says what the data path does with its packets:
//! [`Phase::Inspecting`] (a TCP flow whose verdict needs the name: client data is held),
//! [`Phase::Forwarding`], [`Phase::Blocked`] (denied: dropped silently, or refused with a RST or
//! an ICMP error), [`Phase::Cut`] (reset by the gateway, with the reason). Its [`Record`] says
//! what the decision log has of it: nothing yet, a decision owed until the name is seen, the
//! decision written, the flow ended. TCP tracking ([`TcpTrack`]) and what is held or watched
//! ([`Inspect`]) sit beside them.
//!
//! The table holds up to a quarter of a million of these, so [`Flow`] stays small (a test bounds
//! its size): the inspection state is boxed and absent on most flows.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use policy_engine::{Action, Query, Transport, Verdict};

use crate::inspect::quic::InitialCollector;
use crate::record::{Reason, Traffic};
use crate::wire::{IpProtocol, TcpFlowSeq, TcpSegment};

use super::fastpath::OffloadSlot;
use super::flow::Side;
use super::name;
use super::reasm::Reassembly;
use super::PacketMeta;

/// Where the flow stands: what the data path does with its packets. One value, so that a reason
/// for a cut exists exactly when the flow is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the name: client data is held.
    Inspecting,
    /// Allowed: forward.
    Forwarding,
    /// Denied on the SYN, or denied after inspection (client packets dropped silently).
    Blocked,
    /// The gateway reset the flow, for this reason: drop everything until it expires.
    Cut(Reason),
}

/// What the decision log has of the flow. One value, so that a decision cannot be both owed and
/// written, nor a flow end written twice.
///
/// The end of the flow lives here and not in [`Phase`]: a TCP connection that closed lingers
/// with its phase unchanged (stray packets of a forwarded flow still pass, those of a cut one
/// are still dropped), but it is counted nowhere any more and writes no second flow-end record.
/// Log-only's `name_decides` lives here too: it only changes the reason the owed record gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Record {
    /// No decision record yet, none owed: one is written when a later verdict must be logged.
    Unwritten,
    /// The decision must be recorded once the name is known (or known absent): a flow decided on
    /// the SYN whose first bytes are watched. `name_decides`: log-only passed the SYN although
    /// the verdict needed the name, so the name (or its absence) decides the recorded reason as
    /// it would have under enforcement.
    Owed { name_decides: bool },
    /// The decision was recorded: the flow end will be too.
    Written,
    /// The flow ended: its flow-end record was written if `decision_written` (a flow whose
    /// decision was never recorded gets none). Whatever arrives after this is counted nowhere.
    Ended { decision_written: bool },
}

impl Record {
    /// True once a decision record was written (before or after the flow ended).
    pub(super) fn decision_written(self) -> bool {
        matches!(
            self,
            Record::Written
                | Record::Ended {
                    decision_written: true
                }
        )
    }

    /// True when the decision record is owed.
    pub(super) fn owed(self) -> bool {
        matches!(self, Record::Owed { .. })
    }

    /// True when the flow ended (see [`Record::Ended`]).
    pub(super) fn ended(self) -> bool {
        matches!(self, Record::Ended { .. })
    }

    /// The state after a decision record is written: a record written after the flow ended (a
    /// lingering flow cut or re-decided) owes no second flow-end record.
    pub(super) fn after_decision(self) -> Record {
        if self.ended() {
            Record::Ended {
                decision_written: true,
            }
        } else {
            Record::Written
        }
    }
}

/// What is known about a RST on the flow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum RstSeen {
    /// None seen.
    #[default]
    None,
    /// One was seen, but it may be blind or stale: the connection may live on.
    Any,
    /// One whose sequence number its receiver accepts at once (the sender's next sequence
    /// number, or what its peer acknowledged last): the connection is over.
    Accepted,
}

/// Where the name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameKind {
    Sni {
        ech: bool,
    },
    Host,
    /// The server name sent is not a host name (an IP literal...): kept, escaped, for the
    /// record only; never matched against the policy.
    SniNotHostname {
        ech: bool,
    },
    /// The HTTP Host sent is an IP literal: kept for the record only.
    HostNotHostname,
}

impl NameKind {
    /// True for a host name the policy can be asked about.
    pub(super) fn usable(self) -> bool {
        matches!(self, NameKind::Sni { .. } | NameKind::Host)
    }
}

/// The name of a decision that the policy may be asked about (a host name, not what was sent
/// in its place).
pub(super) fn usable_name(name: &Option<(String, NameKind)>) -> Option<&str> {
    name.as_ref()
        .filter(|(_, k)| k.usable())
        .map(|(n, _)| n.as_str())
}

#[derive(Debug)]
pub(super) struct Decision {
    /// The verdict, absent when the flow failed closed.
    pub(super) verdict: Option<Verdict>,
    /// What the data path does.
    pub(super) enforced: Action,
    pub(super) reason: Reason,
    pub(super) version: u64,
    /// [`CompiledPolicy::instance`](policy_engine::CompiledPolicy::instance) of the policy
    /// that decided: the verdict's rule indexes are only meaningful in that table.
    pub(super) instance: u64,
    pub(super) name: Option<(Box<str>, NameKind)>,
}

/// A client packet held until the verdict.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) offset: i64,
    pub(super) len: usize,
    pub(super) fin: bool,
    pub(super) packet: Vec<u8>,
    pub(super) meta: PacketMeta,
}

/// Per-flow inspection state: the reassembled client bytes, and the held packets while the
/// verdict is pending.
#[derive(Debug)]
pub(super) struct Inspect {
    pub(super) buf: Reassembly,
    pub(super) held: Vec<Held>,
    pub(super) held_packet_bytes: usize,
    /// First held byte: the inspection deadline counts from here.
    pub(super) started: Option<Instant>,
    /// After the verdict: what the watch looks for next (the first name of a flow decided on the
    /// SYN, another ClientHello, the next HTTP request head, the next piece of a chunked body)
    /// and at which stream offset; `None` when nothing is watched (any more).
    pub(super) watch: Option<name::Watch>,
    /// After the verdict: stream offset the server must acknowledge before the bytes are freed.
    pub(super) guard_end: u32,
    /// While the watch follows HTTP requests: the stream offset after the last byte the watch parsed (a
    /// request head, a chunk-size line). Bytes after it and before the watch position are request
    /// body, never inspected: once the server has acknowledged everything up to here, the window
    /// skips straight to the watch position.
    pub(super) inspected_end: u32,
    /// How far the offsets of `buf`, `watch`, `guard_end` and `inspected_end` have been
    /// renumbered: they count from the client's sequence number `base + shift` (see
    /// [`REBASE_FROM`]).
    pub(super) shift: u32,
    /// A UDP 443 flow: the reader of the client's QUIC Initials. It stays after a permit, so that
    /// a later Initial carrying another ClientHello is noticed (see `pipeline::quic`).
    pub(super) quic: Option<Box<InitialCollector>>,
    /// The name is known and permitted, and the flow waits for the DNS check's lookup
    /// (`pipeline::dnscheck`): what is held stays held.
    pub(super) dns_wait: bool,
    /// A mail flow (SMTP, IMAP, POP3) whose plaintext dialogue is followed to its STARTTLS
    /// (see `pipeline::starttls`).
    pub(super) starttls: Option<StartTls>,
}

/// How far the plaintext dialogue of a STARTTLS flow has been followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StartTls {
    pub(super) proto: crate::inspect::starttls::Protocol,
    /// Stream offset after the last command line let through: the ClientHello starts here.
    pub(super) passed: u32,
    /// Command lines let through.
    pub(super) commands: u8,
}

impl Inspect {
    /// Nothing held or watched yet; at most `limit` bytes reassembled.
    pub(super) fn new(limit: usize) -> Inspect {
        Inspect {
            buf: Reassembly::new(limit),
            held: Vec::new(),
            held_packet_bytes: 0,
            started: None,
            watch: None,
            guard_end: 0,
            inspected_end: 0,
            shift: 0,
            quic: None,
            dns_wait: false,
            starttls: None,
        }
    }

    /// [`Inspect::new`] for a TCP flow to `server_port`: a mail port gets its STARTTLS follower.
    pub(super) fn tcp(limit: usize, server_port: u16) -> Inspect {
        let mut i = Inspect::new(limit);
        i.starttls =
            crate::inspect::starttls::Protocol::for_port(server_port).map(|proto| StartTls {
                proto,
                passed: 0,
                commands: 0,
            });
        i
    }

    /// Bytes held: the reassembled stream, the copies of held packets and a QUIC reader's
    /// buffers (16 KiB while a ClientHello is read, which the total bound must see: otherwise
    /// flows that each send part of an Initial would pin memory no bound counts).
    pub(super) fn bytes(&self) -> usize {
        self.buf.stored() + self.held_packet_bytes + self.quic.as_ref().map_or(0, |c| c.footprint())
    }
}

/// TCP sequence state as seen by the gateway.
///
/// The booleans here are separate observations of the two directions (which end sent a FIN,
/// whether the SYN and the SYN-ACK were seen), each set by its own packet in any order and
/// never cleared: a flow first seen mid-stream is established without a SYN, and may see one
/// later. They belong neither to the flow's [`Phase`] (the verdict) nor to its [`Record`].
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TcpTrack {
    /// Client ISN + 1: stream offset 0 of the client's data.
    pub(super) base: u32,
    /// True once the SYN was seen (stream offsets are meaningful), or, on a flow met without
    /// its SYN, once its first client data was taken as stream offset 0 (`anchored`).
    pub(super) synced: bool,
    /// Met without its SYN: stream offset 0 (`base`) is the first client data seen, which began
    /// a ClientHello or an HTTP request, not ISN + 1. Client bytes before it were never
    /// inspected: until the server has acknowledged past `base`, a segment that carries any of
    /// them is dropped, so the server cannot be given bytes ahead of what was inspected.
    pub(super) anchored: bool,
    /// One past the highest client sequence number forwarded.
    pub(super) client_next: u32,
    /// One past the highest server sequence number seen.
    pub(super) server_next: Option<u32>,
    /// Last acknowledgment from the server.
    pub(super) server_ack: Option<u32>,
    /// Last acknowledgment from the client.
    pub(super) client_ack: Option<u32>,
    pub(super) established: bool,
    /// A SYN-ACK came from the server side.
    pub(super) synack_seen: bool,
    pub(super) fin_client: bool,
    pub(super) fin_server: bool,
    /// RSTs seen from either end.
    pub(super) rst: RstSeen,
}

/// One flow: its endpoints, counters, verdict and what is left to inspect.
#[derive(Debug)]
pub(super) struct Flow {
    pub(super) client: SocketAddr,
    pub(super) server: SocketAddr,
    pub(super) client_side: Side,
    pub(super) proto: IpProtocol,
    pub(super) start: Instant,
    pub(super) last_seen: Instant,
    pub(super) traffic: Traffic,
    pub(super) phase: Phase,
    pub(super) record: Record,
    pub(super) tcp: TcpTrack,
    pub(super) decision: Option<Decision>,
    pub(super) inspect: Option<Box<Inspect>>,
    /// The deadline of the flow's live entry in the deadline queue.
    pub(super) timer_at: Option<Instant>,
    /// Where the flow stands with the kernel fast path.
    pub(super) offload: OffloadSlot,
}

impl Flow {
    /// A new flow, inspecting, with nothing recorded.
    pub(super) fn new(
        now: Instant,
        client: IpAddr,
        cport: u16,
        server: IpAddr,
        sport: u16,
        client_side: Side,
        proto: IpProtocol,
    ) -> Flow {
        Flow {
            client: SocketAddr::new(client, cport),
            server: SocketAddr::new(server, sport),
            client_side,
            proto,
            start: now,
            last_seen: now,
            traffic: Traffic::default(),
            phase: Phase::Inspecting,
            record: Record::Unwritten,
            tcp: TcpTrack::default(),
            decision: None,
            inspect: None,
            timer_at: None,
            offload: OffloadSlot::default(),
        }
    }

    /// Counts a packet of the flow from `side`.
    pub(super) fn count(&mut self, side: Side, len: u64, now: Instant) {
        if side == self.client_side {
            self.traffic.packets_out += 1;
            self.traffic.bytes_out += len;
        } else {
            self.traffic.packets_in += 1;
            self.traffic.bytes_in += len;
        }
        self.last_seen = now;
    }

    /// True when the flow is allowed, done with inspection (no reassembled bytes kept, so no
    /// second ClientHello or HTTP request to look for and no decision record pending), and has
    /// seen no FIN or RST: a segment without SYN, FIN or RST then only moves the counters and
    /// the tracked sequence numbers ([`Flow::track_plain`]), and is forwarded.
    #[inline]
    pub(super) fn is_settled(&self) -> bool {
        self.phase == Phase::Forwarding
            && self.inspect.is_none()
            && !self.record.ended()
            && self.tcp.rst == RstSeen::None
            && !self.tcp.fin_client
            && !self.tcp.fin_server
    }

    /// The sequence tracking of [`Shared::tcp_existing`](super::Shared) for a segment without SYN, FIN or RST on a
    /// settled flow ([`Flow::is_settled`]).
    #[inline]
    pub(super) fn track_plain(&mut self, from_client: bool, seg: &TcpSegment<'_>) {
        let end = seg.seq.wrapping_add(seg.seq_len());
        if from_client {
            if seg.flags.ack() && self.tcp.server_next.is_some() {
                self.tcp.client_ack = Some(seg.ack);
            }
            if seq_gt(end, self.tcp.client_next) {
                self.tcp.client_next = end;
            }
        } else {
            if self.tcp.server_next.is_none_or(|n| seq_gt(end, n)) {
                self.tcp.server_next = Some(end);
            }
            if seg.flags.ack() {
                self.tcp.server_ack = Some(seg.ack);
            }
        }
    }

    /// True when a client SYN with sequence number `seq` opens a new connection rather than
    /// repeating the flow's own SYN.
    pub(super) fn reusable_by(&self, seq: u32) -> bool {
        let closed = self.tcp.rst != RstSeen::None || (self.tcp.fin_client && self.tcp.fin_server);
        let new_isn = self.tcp.synced && seq.wrapping_add(1) != self.tcp.base;
        (closed || new_isn) && !matches!(self.phase, Phase::Blocked | Phase::Cut(_))
    }

    /// True when the TCP connection is over for both ends: FINs both ways, a RST either end
    /// accepts, or a reset or refusal by the gateway. A flow still under inspection is not over:
    /// after a client RST its ports are inspected afresh.
    pub(super) fn closed(&self) -> bool {
        self.proto == IpProtocol::Tcp
            && self.phase != Phase::Inspecting
            && (self.tcp.rst == RstSeen::Accepted
                || (self.tcp.fin_client && self.tcp.fin_server)
                || matches!(self.phase, Phase::Cut(_))
                || (self.phase == Phase::Blocked && self.enforced() == Some(Action::Reject)))
    }

    /// What the data path does with the flow, once decided.
    pub(super) fn enforced(&self) -> Option<Action> {
        self.decision.as_ref().map(|d| d.enforced)
    }

    /// Sequence state for resets; `extra` is added to the client's next sequence number (the
    /// sequence space of the segment being answered when nothing was forwarded yet).
    pub(super) fn flow_seq(&self, extra: u32) -> TcpFlowSeq {
        TcpFlowSeq {
            client: self.client,
            server: self.server,
            client_next_seq: self.tcp.client_next.wrapping_add(extra),
            server_next_seq: self.tcp.server_next,
        }
    }

    /// The name the flow was decided on (a host name: not what was sent in place of one).
    pub(super) fn name(&self) -> Option<&str> {
        self.decision
            .as_ref()
            .and_then(|d| d.name.as_ref())
            .filter(|(_, k)| k.usable())
            .map(|(n, _)| &**n)
    }
}

/// The policy question for the flow, with `name` if there is one.
pub(super) fn flow_query<'a>(flow: &Flow, name: Option<&'a str>) -> Query<'a> {
    let transport = match flow.proto {
        IpProtocol::Tcp => Transport::Tcp,
        IpProtocol::Udp => Transport::Udp,
        other => Transport::Other(other.number()),
    };
    Query {
        src: flow.client.ip(),
        dst: flow.server.ip(),
        transport,
        dst_port: flow.server.port(),
        name,
    }
}

/// Once the watch of a long keep-alive connection has let go of this many bytes, its offsets are
/// renumbered from where it stands ([`Reassembly::rebase`]): offsets are 32-bit differences of
/// sequence numbers and must stay far from wrapping, however long the connection lasts.
pub(super) const REBASE_FROM: u32 = 1 << 30;

/// Stream offset of a client segment's first data byte (a SYN's data follows the SYN's own
/// sequence number), counted from the client's sequence number `base + shift` (`shift` is the
/// renumbering of a long watch, [`Inspect::shift`]; 0 before the verdict).
pub(super) fn data_offset(base: u32, shift: u32, seg: &TcpSegment<'_>) -> i64 {
    let first = seg.seq.wrapping_add(u32::from(seg.flags.syn()));
    i64::from(first.wrapping_sub(base.wrapping_add(shift)) as i32)
}

/// Sequence number comparison: `a` after `b`, modulo 2^32.
pub(super) fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_flow_state_stays_small() {
        // The table holds up to 262 144 flows: every byte here costs 256 KiB at capacity.
        let flow = std::mem::size_of::<Flow>();
        eprintln!(
            "Flow: {flow} bytes, Inspect: {} bytes",
            std::mem::size_of::<Inspect>()
        );
        assert!(flow <= 320, "Flow grew to {flow} bytes");
    }
}
