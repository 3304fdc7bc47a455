//! The sans-IO inspection pipeline: `process(now, packet) -> what to do`, plus packets to send.
//!
//! [`Pipeline::process`] takes one raw IP packet (IPv4 or IPv6, no link header) and the current
//! time, and returns a [`Disposition`] for that packet; packets the pipeline releases or builds
//! (held segments in order, TCP resets, ICMP errors) and decision-log records are appended to an
//! [`Output`]. Nothing here reads a clock, a socket or a file: the TUN runtime, `bulkhead replay`,
//! the tests (with a fake clock) and the benches all drive the same code.
//!
//! # Flow life
//!
//! Packets are grouped into flows by a canonical 5-tuple ([`flow::FlowKey`]): both directions find
//! the same entry. The side that sent the first packet (the SYN for TCP) is the client. The table
//! has a fixed capacity; when it is full, expired flows due in the deadline queue are reclaimed
//! first; then a half-open TCP flow (a client's SYN that the server has not answered for at
//! least [`EARLY_DROP_MIN_AGE`], nothing held) is evicted to make room (early drop, as Linux
//! conntrack does: once a SYN flood stops, new connections get in within a second instead of
//! waiting out the opening timeout, and a connection whose handshake is under way is not
//! evicted by the flood); if neither frees a slot, the new flow fails closed with reason
//! `flow_limit` (nothing is counted against established flows, which go on).
//!
//! - **TCP, SYN seen.** The policy is asked [`CompiledPolicy::evaluate_without_name`]. A `Final`
//!   verdict is applied at once: permit forwards the SYN; deny drops it silently; reject answers
//!   it with a RST to the client. `NeedsName`: the handshake passes, and every client segment that
//!   carries data (or a FIN) is held (a copy is kept, nothing is forwarded) and its bytes are
//!   reassembled from the client's ISN + 1 ([`reasm`]), out of order, retransmitted or
//!   overlapping. As soon as the contiguous bytes parse to a complete ClientHello (SNI), a complete
//!   HTTP request head (Host or CONNECT authority), or prove to be neither, the policy is asked
//!   [`CompiledPolicy::evaluate`] with the name, and:
//!   - permit: the held segments are released in sequence order;
//!   - reject: the held segments are discarded and both ends get a RST (the client sees a
//!     connection reset at once);
//!   - deny: the held segments are discarded, the server gets a RST (so it frees its state) and
//!     the client gets nothing: its further packets are dropped silently, and it times out, as a
//!     silent drop on the SYN would have made it.
//! - **Data on the SYN (TCP Fast Open).** If the SYN's data holds a complete ClientHello the flow
//!   is decided on the SYN. If not, the SYN is dropped (without creating the flow): the client's
//!   SYN retransmission carries no data, and the hello then comes after the handshake.
//! - **Flows seen mid-stream** (no SYN: the gateway restarted, or the flow expired) are decided by
//!   address only. If the verdict would need a name, the flow fails closed (`midstream`): data is
//!   dropped and, because the client would otherwise hang, both ends are reset.
//! - **Log-only mode** never holds, drops or resets anything: flows whose verdict needs a name are
//!   forwarded and watched like flows decided on the SYN, and their record carries the verdict for
//!   the name once it is seen (`disposition` Detected when that verdict is not a permit), with
//!   the reason enforcement would give (`no_sni`, `not_tls` for a flow without a name).
//! - **UDP and other protocols** are decided on the first packet by address and port. UDP 443
//!   (QUIC) carries no name yet: `no_sni`. A rejected UDP flow answers each packet with an ICMP
//!   administratively-prohibited error.
//!
//! # Fail-closed bounds
//!
//! Held bytes per flow ([`PipelineConfig::max_held_bytes_per_flow`], reason `inspect_overflow`),
//! held bytes over all flows ([`PipelineConfig::max_held_bytes_total`], `memory_pressure`),
//! inspection time from the first held byte ([`PipelineConfig::inspect_timeout`],
//! `inspect_timeout`), overlapping segments whose bytes disagree (`ambiguous_overlap`). Past any of
//! them the held data is discarded and both ends are reset. A client segment with a bad TCP
//! checksum is never inspected (unless the packet's metadata says the checksum is left to
//! offload): it is dropped and counted, and the flow goes on, so a bogus hello with a bad checksum
//! sent ahead of the real one cannot decide the flow. TCP fragments, and fragments that cut a
//! transport header, are dropped and counted.
//!
//! # After the decision
//!
//! A permitted TCP flow keeps the reassembled bytes while they can still matter (bounded by the
//! same per-flow limit): retransmissions that overlap them must carry the same bytes, or the flow
//! is cut (`ambiguous_overlap`), because the server may take the retransmission for the bytes the
//! gateway inspected. The bytes are freed once the server has acknowledged past them. On TLS
//! flows the client's handshake records that follow the first ClientHello are watched until the
//! first ChangeCipherSpec or application-data record: a second ClientHello (after a
//! HelloRetryRequest, or a duplicate) is parsed; its name is recorded, and when the policy denies
//! that name the flow is cut (`second_hello`). On plain-HTTP flows every later request head is
//! parsed the same way (keep-alive, pipelining; a body is skipped by its `Content-Length`, or
//! followed chunk by chunk when it is `chunked`, without reading the chunk data): a Host other
//! than the one the flow was decided on is re-evaluated and recorded, and when the policy does
//! not permit it the flow is cut (`host_changed`). An ambiguous head fails closed
//! (`parse_error`), and so does a body whose end is ambiguous (`Content-Length` together with
//! `Transfer-Encoding`, codings that do not end in `chunked`, a malformed chunk), because the
//! gateway and the server could then disagree on where the next request starts. Requests
//! pipelined with the first are checked before the held segments are released. The watch of
//! requests follows the connection with a window of [`PipelineConfig::max_held_bytes_per_flow`]
//! bytes: what the watch parsed (request heads, chunk-size lines) stays until the server has
//! acknowledged it, so that a retransmission of an inspected request must carry the same bytes
//! (`ambiguous_overlap`); request body, which the watch skips, is let go of as soon as what came
//! before it is acknowledged, and from then on segments that carry only body are not stored.
//! Offsets are renumbered every GiB, so the watch lasts as long as the connection. It stops (and
//! later requests pass unchecked) when what it must keep outgrows the window (a single head
//! larger than the window, or heads and body arriving faster than the server acknowledges them),
//! when the held-bytes total is reached, and when the bytes stop being HTTP (a protocol upgrade).
//! The TLS watch uses the first window only: the plaintext handshake ends within it. Flows whose
//! verdict was final on the SYN are watched the same way without holding anything, so that
//! their records and policy re-evaluation know the name.
//!
//! [`Pipeline::reevaluate`] re-asks the policy for every decided flow after a policy change, with
//! the name the flow was decided on; flows now denied are cut with RSTs both ways
//! (`policy_update`).
//!
//! # Records
//!
//! One decision record per flow (when the verdict denies, or the rule has `log = true`, or
//! [`PipelineConfig::log_all`]), one more per second ClientHello, and a flow-end record for every
//! flow whose decision was recorded. Wall-clock times come from the anchor the caller sets with
//! [`Pipeline::set_clock_anchor`].
//!
//! A TCP flow's flow-end record is written when the connection closes: FINs both ways, a RST
//! that its receiver accepts at once (its sequence number is the sender's next one, or what the
//! peer acknowledged last: a blind or stale RST does not end the record), or a reset or refusal
//! by the gateway. Its traffic counts include the packet that closed it. The entry then lingers
//! for [`IdleTimeouts::tcp_closed`] so that retransmitted FINs, the last ACK and stray segments
//! still find their flow (and its verdict) instead of opening a new one; what arrives in that
//! linger is counted nowhere and writes no second record. A client SYN with a new ISN still
//! starts a new flow on the same ports. Flows the gateway dropped silently (deny), UDP and other
//! protocols, and TCP flows that go idle, end on their idle timeout; [`Pipeline::shutdown`] ends
//! the rest.

pub mod flow;
mod name;
pub mod reasm;
pub mod timer;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use policy_engine::{
    Action, CompiledPolicy, Mode, PolicyStore, Query, RuleRef, SynDecision, Transport, Verdict,
};

use crate::record::{
    self, Activity, ConnectionInfo, DecisionRecord, DstEndpoint, EndReason, Http, Metadata,
    PolicyRef, Reason, RecordAction, RecordSink, SrcEndpoint, Tls, Traffic,
};
use crate::wire::{self, ChecksumStatus, ParsedPacket, RstTarget, TcpFlowSeq, TcpSegment, L4};

use flow::{FlowId, FlowKey, FlowTable, Side};
use name::{ChunkStep, Found, Watch};
use reasm::{Insert, Reassembly};
use timer::DeadlineQueue;

/// Opaque per-packet metadata the runtime passes in and gets back with released packets: the TUN
/// runtime stores the packet's virtio-net header here (GSO type and size, checksum offsets).
/// `PacketMeta::default()` is a plain packet with a complete checksum.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// The virtio-net header as read from the TUN device.
    pub vnet: [u8; 12],
    /// True when `vnet` holds a header.
    pub has_vnet: bool,
}

impl PacketMeta {
    /// True when the L4 checksum is not computed yet (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the pipeline
    /// must not verify it.
    pub fn partial_checksum(&self) -> bool {
        self.has_vnet && self.vnet[0] & 0x01 != 0
    }

    /// Metadata for a packet whose checksum must not be verified, for offline use (`replay`:
    /// captures taken on the sending host hold checksums left to the NIC). It marks the packet
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM` without offsets: never write it to a TUN device.
    pub fn unverified() -> PacketMeta {
        let mut vnet = [0u8; 12];
        vnet[0] = 0x01;
        PacketMeta {
            vnet,
            has_vnet: true,
        }
    }
}

/// Idle timeouts by flow state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimeouts {
    /// TCP before the handshake completed.
    pub tcp_opening: Duration,
    /// TCP established.
    pub tcp_established: Duration,
    /// TCP after a FIN from one side.
    pub tcp_closing: Duration,
    /// TCP after FINs from both sides, or a RST; also flows the gateway blocked or cut.
    pub tcp_closed: Duration,
    /// UDP.
    pub udp: Duration,
    /// Other protocols.
    pub other: Duration,
}

impl Default for IdleTimeouts {
    fn default() -> Self {
        IdleTimeouts {
            tcp_opening: Duration::from_secs(30),
            tcp_established: Duration::from_secs(3600),
            tcp_closing: Duration::from_secs(60),
            tcp_closed: Duration::from_secs(30),
            udp: Duration::from_secs(60),
            other: Duration::from_secs(30),
        }
    }
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Appears in every record.
    pub gateway_id: String,
    /// Most flows tracked at once.
    pub flow_capacity: usize,
    /// Most client bytes held (and reassembled) per flow before its name is known.
    pub max_held_bytes_per_flow: usize,
    /// Most bytes held over all flows (reassembly buffers and held packets).
    pub max_held_bytes_total: usize,
    /// Longest time from the first held byte to a verdict.
    pub inspect_timeout: Duration,
    /// Idle timeouts by state.
    pub idle: IdleTimeouts,
    /// Record every decision, not only denies and rules with `log = true` (`replay` sets it).
    pub log_all: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            gateway_id: "bulkhead".to_owned(),
            flow_capacity: 262_144,
            max_held_bytes_per_flow: 16 * 1024,
            max_held_bytes_total: 64 * 1024 * 1024,
            inspect_timeout: Duration::from_secs(5),
            idle: IdleTimeouts::default(),
            log_all: false,
        }
    }
}

/// Why a packet was dropped. Counted per kind in [`PipelineStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The IP or transport header is malformed.
    Malformed,
    /// A TCP fragment, or a fragment without a complete transport header.
    Fragment,
    /// The policy denies or rejects the flow.
    Policy,
    /// The flow was cut (reset) by the gateway earlier.
    Cut,
    /// The flow table is full.
    FlowLimit,
    /// A segment to be inspected has a bad checksum.
    BadChecksum,
    /// A segment repeats bytes already held or inspected (nothing new to hold).
    Duplicate,
    /// Data on a SYN that does not hold a complete ClientHello (the client retries without it).
    SynData,
    /// A TCP segment that does not fit the flow's state (a SYN from the server of an established
    /// flow, server data before the server answered the SYN).
    OutOfState,
    /// A bound or an evasion attempt made the flow fail closed.
    FailClosed(Reason),
}

impl DropReason {
    /// A bounded label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::Policy => "policy",
            DropReason::Cut => "cut",
            DropReason::FlowLimit => "flow_limit",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Duplicate => "duplicate",
            DropReason::SynData => "syn_data",
            DropReason::OutOfState => "out_of_state",
            DropReason::FailClosed(r) => r.as_str(),
        }
    }

    fn index(&self) -> usize {
        match self {
            DropReason::Malformed => 0,
            DropReason::Fragment => 1,
            DropReason::Policy => 2,
            DropReason::Cut => 3,
            DropReason::FlowLimit => 4,
            DropReason::BadChecksum => 5,
            DropReason::Duplicate => 6,
            DropReason::SynData => 7,
            DropReason::OutOfState => 8,
            DropReason::FailClosed(_) => 9,
        }
    }

    /// Every kind, in counter order (the fail-closed kinds share one counter; the reason is in the
    /// record).
    pub const ALL: [DropReason; 10] = [
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::Policy,
        DropReason::Cut,
        DropReason::FlowLimit,
        DropReason::BadChecksum,
        DropReason::Duplicate,
        DropReason::SynData,
        DropReason::OutOfState,
        DropReason::FailClosed(Reason::Unknown),
    ];
}

/// What to do with the packet given to [`Pipeline::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Write it back to the TUN device unchanged.
    Forward,
    /// Do not forward it.
    Drop(DropReason),
    /// The pipeline kept a copy; it will come out in [`Output::transmit`] if the flow is allowed.
    Held,
}

/// A packet to write to the TUN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The IP packet.
    pub packet: Vec<u8>,
    /// The metadata given with the packet when it was held; default for packets the gateway made.
    pub meta: PacketMeta,
}

/// What a call produced besides the disposition of its packet.
#[derive(Debug, Default)]
pub struct Output {
    /// Packets to write to the TUN device, in order.
    pub transmit: Vec<Transmit>,
    /// Decision and flow-end records.
    pub records: Vec<DecisionRecord>,
}

impl Output {
    /// Empties both lists, keeping their allocations.
    pub fn clear(&mut self) {
        self.transmit.clear();
        self.records.clear();
    }

    /// Hands every record to `sink`, in order, leaving `records` empty.
    pub fn drain_records(&mut self, sink: &mut impl RecordSink) {
        for r in self.records.drain(..) {
            sink.submit(r);
        }
    }
}

/// Counters. All monotonic except the `*_now` gauges.
#[derive(Debug, Clone, Default)]
pub struct PipelineStats {
    /// Packets given to `process`.
    pub packets: u64,
    /// Packets forwarded as they came.
    pub forwarded: u64,
    /// Packets held.
    pub held: u64,
    /// Held packets released.
    pub released: u64,
    /// Packets dropped, by [`DropReason::ALL`] index.
    pub dropped: [u64; 10],
    /// Flows created.
    pub flows_created: u64,
    /// Flows removed after their idle timeout (or reclaimed when the table was full).
    pub flows_expired: u64,
    /// Half-open TCP flows evicted to make room for a new flow in a full table.
    pub flows_evicted: u64,
    /// New flows refused because the table was full.
    pub flow_limit: u64,
    /// Decisions made, by outcome.
    pub decisions_permit: u64,
    /// Decisions that deny (silent drop).
    pub decisions_deny: u64,
    /// Decisions that reject (RST / ICMP).
    pub decisions_reject: u64,
    /// Flows that failed closed on a bound or an evasion attempt.
    pub fail_closed: u64,
    /// Flows cut after a policy update.
    pub policy_update_cuts: u64,
    /// Second ClientHellos seen on a flow.
    pub second_hellos: u64,
    /// HTTP request heads after the first seen on a plain-HTTP flow.
    pub later_requests: u64,
    /// Packets the gateway built (RSTs, ICMP errors).
    pub generated: u64,
    /// Bytes held now (reassembly and held packets, all flows).
    pub held_bytes_now: usize,
    /// Highest `held_bytes_now` seen.
    pub held_bytes_peak: usize,
}

impl PipelineStats {
    /// Drops of one kind.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }
}

/// Where the flow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the name: client data is held.
    Inspecting,
    /// Allowed: forward.
    Forwarding,
    /// Denied on the SYN, or denied after inspection (client packets dropped silently).
    Blocked,
    /// The gateway reset the flow: drop everything until it expires.
    Cut,
}

/// Where the name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Sni { ech: bool },
    Host,
}

#[derive(Debug)]
struct Decision {
    /// The verdict, absent when the flow failed closed.
    verdict: Option<Verdict>,
    /// What the data path does.
    enforced: Action,
    reason: Reason,
    version: u64,
    name: Option<(Box<str>, NameKind)>,
}

/// A client packet held until the verdict.
#[derive(Debug)]
struct Held {
    offset: i64,
    len: usize,
    fin: bool,
    packet: Vec<u8>,
    meta: PacketMeta,
}

/// Per-flow inspection state: the reassembled client bytes, and the held packets while the
/// verdict is pending.
#[derive(Debug)]
struct Inspect {
    buf: Reassembly,
    held: Vec<Held>,
    held_packet_bytes: usize,
    /// First held byte: the inspection deadline counts from here.
    started: Option<Instant>,
    /// After the verdict, while `watching`: what to look for next (another ClientHello, the
    /// next HTTP request head, the next piece of a chunked body) and at which stream offset.
    watch: name::Watch,
    watching: bool,
    /// After the verdict: stream offset the server must acknowledge before the bytes are freed.
    guard_end: u32,
    /// While watching HTTP requests: the stream offset after the last byte the watch parsed (a
    /// request head, a chunk-size line). Bytes after it and before the watch position are request
    /// body, never inspected: once the server has acknowledged everything up to here, the window
    /// skips straight to the watch position.
    inspected_end: u32,
    /// How far the offsets of `buf`, `watch`, `guard_end` and `inspected_end` have been
    /// renumbered: they count from the client's sequence number `base + shift` (see
    /// [`REBASE_FROM`]).
    shift: u32,
}

impl Inspect {
    fn new(limit: usize) -> Inspect {
        Inspect {
            buf: Reassembly::new(limit),
            held: Vec::new(),
            held_packet_bytes: 0,
            started: None,
            watch: name::Watch::Tls(0),
            watching: false,
            guard_end: 0,
            inspected_end: 0,
            shift: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.buf.stored() + self.held_packet_bytes
    }
}

/// TCP sequence state as seen by the gateway.
#[derive(Debug, Default, Clone, Copy)]
struct TcpTrack {
    /// Client ISN + 1: stream offset 0 of the client's data.
    base: u32,
    /// True once the SYN was seen (stream offsets are meaningful).
    synced: bool,
    /// One past the highest client sequence number forwarded.
    client_next: u32,
    /// One past the highest server sequence number seen.
    server_next: Option<u32>,
    /// Last acknowledgment from the server.
    server_ack: Option<u32>,
    /// Last acknowledgment from the client.
    client_ack: Option<u32>,
    established: bool,
    /// A SYN-ACK came from the server side.
    synack_seen: bool,
    fin_client: bool,
    fin_server: bool,
    rst: bool,
    /// A RST whose sequence number the receiver accepts at once (the sender's next sequence
    /// number, or what its peer acknowledged last) was seen.
    rst_exact: bool,
}

#[derive(Debug)]
struct Flow {
    client: SocketAddr,
    server: SocketAddr,
    client_side: Side,
    proto: u8,
    start: Instant,
    last_seen: Instant,
    traffic: Traffic,
    state: State,
    tcp: TcpTrack,
    decision: Option<Decision>,
    inspect: Option<Box<Inspect>>,
    /// The deadline of the flow's live entry in the deadline queue.
    timer_at: Option<Instant>,
    /// The decision must be recorded, once the name is known (or known absent).
    record_pending: bool,
    /// The decision was recorded: record the flow end too.
    logged: bool,
    /// Why the gateway ended the flow (reset or blocked).
    cut_reason: Option<Reason>,
    /// The TCP connection closed and its flow-end record (if any) was written: the entry only
    /// lingers for stray packets, which are counted nowhere.
    ended: bool,
    /// Log-only passed the SYN although the verdict needed the name: the name (or its absence)
    /// decides the recorded reason as it would have under enforcement.
    name_decides: bool,
}

/// Time mapping from the caller's monotonic clock to wall-clock epoch milliseconds.
#[derive(Debug, Clone, Copy)]
struct ClockAnchor {
    instant: Option<Instant>,
    epoch_ms: u64,
}

impl ClockAnchor {
    fn epoch_ms(&self, now: Instant) -> u64 {
        match self.instant {
            None => 0,
            Some(a) => {
                if now >= a {
                    self.epoch_ms.saturating_add((now - a).as_millis() as u64)
                } else {
                    self.epoch_ms.saturating_sub((a - now).as_millis() as u64)
                }
            }
        }
    }
}

/// The inspection pipeline of one worker. See the module docs.
#[derive(Debug)]
pub struct Pipeline {
    flows: FlowTable<Flow>,
    ctx: Ctx,
    /// Next slot [`Pipeline::early_drop`] probes.
    early_drop_cursor: usize,
}

/// Everything but the flow table, so that a flow and the rest can be borrowed together.
#[derive(Debug)]
struct Ctx {
    config: PipelineConfig,
    policy: Arc<PolicyStore>,
    timers: DeadlineQueue,
    stats: PipelineStats,
    clock: ClockAnchor,
    /// Policy version the flows were last (re-)evaluated under.
    evaluated_version: u64,
    metadata: Metadata,
}

impl Pipeline {
    /// A pipeline deciding with the policies `policy` holds.
    pub fn new(config: PipelineConfig, policy: Arc<PolicyStore>) -> Pipeline {
        let evaluated_version = policy.version();
        Pipeline {
            early_drop_cursor: 0,
            flows: FlowTable::new(config.flow_capacity),
            ctx: Ctx {
                config,
                policy,
                timers: DeadlineQueue::new(),
                stats: PipelineStats::default(),
                clock: ClockAnchor {
                    instant: None,
                    epoch_ms: 0,
                },
                evaluated_version,
                metadata: Metadata::default(),
            },
        }
    }

    /// Maps the caller's clock to wall-clock time: `instant` is `epoch_ms` milliseconds after the
    /// Unix epoch. Records use it for `time`, `start_time`, `end_time`. Until it is set, times
    /// are counted from the epoch itself (0).
    pub fn set_clock_anchor(&mut self, instant: Instant, epoch_ms: u64) {
        self.ctx.clock = ClockAnchor {
            instant: Some(instant),
            epoch_ms,
        };
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.ctx.config
    }

    /// Counters.
    pub fn stats(&self) -> &PipelineStats {
        &self.ctx.stats
    }

    /// Flows in the table.
    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// The earliest time [`Pipeline::handle_timeout`] has work to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.ctx.timers.peek()
    }

    /// One IP packet (IPv4 or IPv6, no link header). What to do with this packet is the return
    /// value; packets to send are appended to `out.transmit`, records to `out.records`.
    pub fn process(
        &mut self,
        now: Instant,
        packet: &[u8],
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        self.ctx.stats.packets += 1;
        let d = self.process_inner(now, packet, meta, out);
        #[cfg(debug_assertions)]
        self.debug_check_held_accounting();
        match d {
            Disposition::Forward => self.ctx.stats.forwarded += 1,
            Disposition::Held => self.ctx.stats.held += 1,
            Disposition::Drop(r) => self.ctx.stats.dropped[r.index()] += 1,
        }
        d
    }

    /// Debug builds (tests, fuzzing) check that the held-bytes counter equals what the flows
    /// really hold: the counter is kept by deltas, and a missed delta would slowly turn into a
    /// false `memory_pressure` (or an unbounded real one). The check walks every flow, so it runs
    /// after every packet while the table is small (unit tests, fuzzing) and after one packet in
    /// 1024 past that, so that a debug build of the daemon stays usable under a flood.
    #[cfg(debug_assertions)]
    fn debug_check_held_accounting(&self) {
        const ALWAYS_BELOW: usize = 256;
        if self.flows.len() >= ALWAYS_BELOW && self.ctx.stats.packets % 1024 != 0 {
            return;
        }
        let real: usize = self
            .flows
            .ids()
            .into_iter()
            .filter_map(|id| self.flows.get(id))
            .filter_map(|flow| flow.inspect.as_ref())
            .map(|i| i.bytes())
            .sum();
        debug_assert_eq!(
            self.ctx.stats.held_bytes_now, real,
            "held-bytes counter out of step with the flows"
        );
    }

    fn process_inner(
        &mut self,
        now: Instant,
        packet: &[u8],
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        // Borrowed where it was built: moving the parsed packet out of the `Result` copies it.
        let parsed = wire::parse(packet);
        let Ok(p) = &parsed else {
            return Disposition::Drop(DropReason::Malformed);
        };
        match &p.l4 {
            L4::Fragment(_) => Disposition::Drop(DropReason::Fragment),
            // A TCP segment split by IP fragmentation would let the server reassemble bytes the
            // gateway never inspected: TCP uses path MTU discovery and never needs it.
            L4::Tcp(_) if p.fragment.is_some() => Disposition::Drop(DropReason::Fragment),
            L4::Tcp(seg) => self.tcp(now, p, seg, meta, out),
            L4::Udp(u) => self.datagram(now, p, u.src_port, u.dst_port, out),
            L4::Icmp(m) if icmp_is_error(false, m.msg_type) => self.icmp_error(now, p, m.payload),
            L4::Icmpv6(m) if icmp_is_error(true, m.msg_type) => self.icmp_error(now, p, m.payload),
            L4::Icmp(_) | L4::Icmpv6(_) | L4::Other(_) => self.datagram(now, p, 0, 0, out),
        }
    }

    /// Expires flows whose deadline passed: inspection timeouts fail closed, idle flows are
    /// removed (with their flow-end record).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Output) {
        while let Some((at, id)) = self.ctx.timers.pop_due(now) {
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            if flow.timer_at != Some(at) {
                continue; // stale entry
            }
            flow.timer_at = None;
            if flow.state == State::Inspecting {
                if let Some(dl) = self.ctx.inspect_deadline(flow) {
                    if dl <= now {
                        self.ctx.fail_closed(now, flow, Reason::InspectTimeout, out);
                        self.ctx.end_if_closed(now, flow, out);
                        self.ctx.arm(id, flow);
                        continue;
                    }
                }
            }
            if self.ctx.deadline(flow) <= now {
                self.expire(now, id, EndReason::IdleTimeout, out);
            } else {
                self.ctx.arm(id, flow);
            }
        }
    }

    /// Re-evaluates every decided flow after the policy changed; cuts the ones now denied (RST
    /// both ways, reason `policy_update`). A no-op when the version did not change.
    pub fn reevaluate(&mut self, now: Instant, out: &mut Output) {
        let policy = self.ctx.policy.load_full();
        if policy.version() == self.ctx.evaluated_version {
            return;
        }
        self.ctx.evaluated_version = policy.version();
        for id in self.flows.ids() {
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            if flow.state != State::Forwarding {
                continue;
            }
            let Some(decision) = &flow.decision else {
                continue;
            };
            let name = decision.name.as_ref().map(|(n, _)| &**n);
            let q = flow_query(flow, name);
            let v = if name.is_none() && flow.inspect.as_ref().is_some_and(|i| i.watching) {
                // Decided on the SYN and the name is not known yet: it will be checked when
                // found; meanwhile the address-only question decides.
                match policy.evaluate_without_name(&q) {
                    SynDecision::Final(v) => v,
                    SynDecision::NeedsName => continue,
                }
            } else if name.is_none() {
                match policy.evaluate_without_name(&q) {
                    SynDecision::Final(v) => v,
                    // The name was never seen and cannot be any more: fail closed.
                    SynDecision::NeedsName => policy.evaluate(&Query { name: None, ..q }),
                }
            } else {
                policy.evaluate(&q)
            };
            let reason = if v.effective_action == Action::Permit {
                continue;
            } else {
                Reason::PolicyUpdate
            };
            self.ctx.stats.policy_update_cuts += 1;
            let kind = decision.name.as_ref().map(|(n, k)| (n.clone(), *k));
            flow.decision = Some(Decision {
                verdict: Some(v),
                enforced: v.effective_action,
                reason,
                version: policy.version(),
                name: kind,
            });
            self.ctx.emit_decision(now, flow, &policy, out);
            self.ctx.reset(flow, true, true, out);
            self.ctx.set_state(flow, State::Cut, reason);
            self.ctx.end_if_closed(now, flow, out);
            self.ctx.arm(id, flow);
        }
    }

    /// Ends every flow: discards held data and writes the flow-end records (end reason
    /// `shutdown`). `replay` calls it at the end of the captures.
    pub fn shutdown(&mut self, now: Instant, out: &mut Output) {
        for id in self.flows.ids() {
            self.expire(now, id, EndReason::Shutdown, out);
        }
    }

    fn expire(&mut self, now: Instant, id: FlowId, why: EndReason, out: &mut Output) {
        let Some(mut flow) = self.flows.remove(id) else {
            return;
        };
        if why == EndReason::Evicted {
            self.ctx.stats.flows_evicted += 1;
        } else {
            self.ctx.stats.flows_expired += 1;
        }
        self.ctx.drop_inspect(&mut flow);
        let policy = self.ctx.policy.load_full();
        if !flow.ended {
            self.ctx.end_flow(now, &mut flow, &policy, why, out);
        }
    }

    /// Reclaims up to a few expired flows when the table is full.
    fn reclaim(&mut self, now: Instant, out: &mut Output) {
        for _ in 0..8 {
            let Some((at, id)) = self.ctx.timers.pop_due(now) else {
                return;
            };
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            if flow.timer_at != Some(at) {
                continue;
            }
            flow.timer_at = None;
            if self.ctx.deadline(flow) <= now && flow.state != State::Inspecting {
                self.expire(now, id, EndReason::IdleTimeout, out);
                return;
            }
            self.ctx.arm(id, flow);
        }
    }

    /// Evicts one half-open TCP flow at least [`EARLY_DROP_MIN_AGE`] old, if one is found among
    /// a few slots probed from a rotating cursor (bounded work per new flow). A table full of
    /// SYNs that nobody answered (a flood) then makes room for new flows; a table full of
    /// established flows, or of handshakes still under way, refuses them (`flow_limit`).
    fn early_drop(&mut self, now: Instant, out: &mut Output) {
        let slots = self.flows.slot_count();
        if slots == 0 {
            return;
        }
        for _ in 0..EARLY_DROP_PROBES {
            let index = self.early_drop_cursor % slots;
            self.early_drop_cursor = index + 1;
            let Some(id) = self.flows.id_at(index) else {
                continue;
            };
            let stale = |f: &Flow| {
                is_half_open(f) && now.saturating_duration_since(f.start) >= EARLY_DROP_MIN_AGE
            };
            if self.flows.get(id).is_some_and(stale) {
                self.expire(now, id, EndReason::Evicted, out);
                return;
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn new_flow(
        &mut self,
        now: Instant,
        key: FlowKey,
        flow: Flow,
        out: &mut Output,
    ) -> Result<FlowId, Flow> {
        if self.flows.is_full() {
            self.reclaim(now, out);
        }
        if self.flows.is_full() {
            self.early_drop(now, out);
        }
        let id = self.flows.insert(key, flow)?;
        self.ctx.stats.flows_created += 1;
        Ok(id)
    }

    /// An ICMP error (unreachable, fragmentation needed / packet too big, time exceeded,
    /// parameter problem) belongs to the flow of the packet it quotes: it passes when that flow is
    /// allowed (path MTU discovery must keep working), and is dropped otherwise.
    fn icmp_error(&mut self, now: Instant, p: &ParsedPacket<'_>, quoted: &[u8]) -> Disposition {
        let Some((proto, src, sport, dst, dport)) = quoted_flow(quoted) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let (key, _) = FlowKey::new(proto, src, sport, dst, dport);
        let Some(id) = self.flows.lookup(&key) else {
            return Disposition::Drop(DropReason::Policy);
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Policy);
        };
        if flow.state != State::Forwarding {
            return Disposition::Drop(DropReason::Policy);
        }
        // Counted with the flow, in the direction of the quoted packet's reply.
        let side = if SocketAddr::new(dst, dport) == flow.client {
            flow.client_side
        } else {
            flow.client_side.other()
        };
        flow.count(side, p.packet.len() as u64, now);
        Disposition::Forward
    }

    fn datagram(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        sport: u16,
        dport: u16,
        out: &mut Output,
    ) -> Disposition {
        let proto = p.protocol.number();
        let (key, side) = FlowKey::new(proto, p.src, sport, p.dst, dport);
        let len = p.packet.len() as u64;
        if let Some(id) = self.flows.lookup(&key) {
            let Some(flow) = self.flows.get_mut(id) else {
                return Disposition::Drop(DropReason::Malformed);
            };
            flow.count(side, len, now);
            return match flow.state {
                State::Forwarding => Disposition::Forward,
                _ => {
                    if side == flow.client_side && flow.enforced() == Some(Action::Reject) {
                        self.ctx.icmp_unreachable(p.packet, out);
                    }
                    Disposition::Drop(DropReason::Policy)
                }
            };
        }
        let policy = self.ctx.policy.load_full();
        let mut flow = Flow::new(now, p.src, sport, p.dst, dport, side, proto);
        flow.count(side, len, now);
        let q = flow_query(&flow, None);
        let needs_name = matches!(policy.evaluate_without_name(&q), SynDecision::NeedsName);
        let v = policy.evaluate(&q);
        let reason = if needs_name {
            if proto == 17 && dport == 443 {
                Reason::NoSni
            } else {
                Reason::NotTls
            }
        } else {
            rule_reason(&v)
        };
        flow.decision = Some(Decision {
            verdict: Some(v),
            enforced: v.effective_action,
            reason,
            version: policy.version(),
            name: None,
        });
        self.ctx.count_decision(v.effective_action);
        let must_log = self.ctx.must_log(&v);
        let enforced = v.effective_action;
        match self.new_flow(now, key, flow, out) {
            Ok(id) => {
                let Some(flow) = self.flows.get_mut(id) else {
                    return Disposition::Drop(DropReason::Malformed);
                };
                flow.state = if enforced == Action::Permit {
                    State::Forwarding
                } else {
                    State::Blocked
                };
                if must_log {
                    self.ctx.emit_decision(now, flow, &policy, out);
                }
                self.ctx.arm(id, flow);
            }
            Err(mut flow) => {
                return self.ctx.flow_limit(now, &mut flow, &policy, p, out);
            }
        }
        match enforced {
            Action::Permit => Disposition::Forward,
            Action::Deny => Disposition::Drop(DropReason::Policy),
            Action::Reject => {
                self.ctx.icmp_unreachable(p.packet, out);
                Disposition::Drop(DropReason::Policy)
            }
        }
    }

    fn tcp(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let (key, side) = FlowKey::new(6, p.src, seg.src_port, p.dst, seg.dst_port);
        let Some(id) = self.flows.lookup(&key) else {
            return self.tcp_new(now, key, side, p, seg, meta, out);
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let from_client = side == flow.client_side;
        if flow.is_settled() && !seg.flags.has_syn_fin_rst() {
            // The common case, kept short: an allowed flow with nothing left to inspect or
            // record, and a segment that changes no connection state.
            flow.count(side, p.packet.len() as u64, now);
            flow.track_plain(from_client, seg);
            if flow.timer_at.is_none() {
                self.ctx.arm(id, flow);
            }
            return Disposition::Forward;
        }
        let bare_syn = seg.flags.syn() && !seg.flags.ack();
        if bare_syn && from_client && flow.reusable_by(seg.seq) {
            // A new connection on the same ports (after a RST or FINs, or with a new ISN): the
            // old flow ends here and the new one is decided afresh.
            self.expire(now, id, EndReason::Fin, out);
            return self.tcp_new(now, key, side, p, seg, meta, out);
        }
        if bare_syn && !from_client {
            if flow.tcp.synack_seen || matches!(flow.state, State::Blocked | State::Cut) {
                // A SYN from the server of an established flow is bogus.
                return Disposition::Drop(DropReason::OutOfState);
            }
            // The first SYN came from the other end (or a forged one did): the flow is decided
            // again with this SYN's sender as the client, so the side whose data is inspected is
            // never chosen by whoever spoke first.
            self.expire(now, id, EndReason::Shutdown, out);
            return self.tcp_new(now, key, side, p, seg, meta, out);
        }
        if flow.ended {
            flow.last_seen = now;
        } else {
            flow.count(side, p.packet.len() as u64, now);
        }
        let before = (
            flow.tcp.fin_client,
            flow.tcp.fin_server,
            flow.tcp.rst,
            flow.state,
        );
        let d = self
            .ctx
            .tcp_existing(now, flow, from_client, p, seg, meta, out);
        self.ctx.end_if_closed(now, flow, out);
        let after = (
            flow.tcp.fin_client,
            flow.tcp.fin_server,
            flow.tcp.rst,
            flow.state,
        );
        if before != after || flow.state == State::Inspecting || flow.timer_at.is_none() {
            self.ctx.arm(id, flow);
        }
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_new(
        &mut self,
        now: Instant,
        key: FlowKey,
        side: Side,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let flags = seg.flags;
        let policy = self.ctx.policy.load_full();
        let syn = flags.syn() && !flags.ack();
        if flags.rst() {
            // A reset of a flow the gateway does not know: nothing to protect, nothing to track.
            let flow = Flow::new(now, p.src, seg.src_port, p.dst, seg.dst_port, side, 6);
            return match policy.evaluate_without_name(&flow_query(&flow, None)) {
                SynDecision::Final(v) if v.effective_action == Action::Permit => {
                    Disposition::Forward
                }
                _ => Disposition::Drop(DropReason::Policy),
            };
        }
        let mut flow = if syn || seg.src_port >= seg.dst_port || seg.src_port >= 1024 {
            Flow::new(now, p.src, seg.src_port, p.dst, seg.dst_port, side, 6)
        } else {
            // Mid-stream, from a low port to a high one: the source is most likely the server.
            let other = if side == Side::Lo { Side::Hi } else { Side::Lo };
            Flow::new(now, p.dst, seg.dst_port, p.src, seg.src_port, other, 6)
        };
        let from_client = flow.client_side == side;
        flow.count(side, p.packet.len() as u64, now);
        if syn {
            flow.tcp.base = seg.seq.wrapping_add(1);
            flow.tcp.client_next = flow.tcp.base;
            flow.tcp.synced = true;
        } else if from_client {
            flow.tcp.client_next = seg.seq;
            flow.tcp.base = seg.seq;
            flow.tcp.server_next = flags.ack().then_some(seg.ack);
            flow.tcp.established = true;
        } else {
            flow.tcp.server_next = Some(seg.seq.wrapping_add(seg.seq_len()));
            flow.tcp.client_next = seg.ack;
            flow.tcp.server_ack = flags.ack().then_some(seg.ack);
            flow.tcp.established = true;
        }
        let q = flow_query(&flow, None);
        let mut decision = policy.evaluate_without_name(&q);
        if syn && policy.mode() == Mode::LogOnly && matches!(decision, SynDecision::NeedsName) {
            // Log-only never holds traffic: the flow passes and is watched; its record is
            // written with the verdict for the name once the name is seen.
            decision = SynDecision::Final(policy.evaluate(&q));
            flow.name_decides = true;
        }
        if !syn && seg.payload.is_empty() && matches!(decision, SynDecision::NeedsName) {
            // Seen mid-stream without data (a late ACK or FIN of a flow that expired): nothing to
            // decide or record yet; the first packet with data decides the flow (fail closed).
            return Disposition::Drop(DropReason::FailClosed(Reason::Midstream));
        }

        // Data on the SYN (TCP Fast Open) when the verdict needs the name: decide on it now if
        // it holds a complete hello; otherwise drop the SYN and let the client retry without data.
        let mut syn_found = None;
        if syn && !seg.payload.is_empty() && matches!(decision, SynDecision::NeedsName) {
            if !meta.partial_checksum() && p.verify_transport_checksum() == ChecksumStatus::Invalid
            {
                return Disposition::Drop(DropReason::BadChecksum);
            }
            match name::classify(seg.payload) {
                Found::Incomplete => return Disposition::Drop(DropReason::SynData),
                found => syn_found = Some(found),
            }
        }

        let id = match self.new_flow(now, key, flow, out) {
            Ok(id) => id,
            Err(mut flow) => return self.ctx.flow_limit(now, &mut flow, &policy, p, out),
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let d = match decision {
            SynDecision::Final(v) => {
                let reason = rule_reason(&v);
                flow.decision = Some(Decision {
                    verdict: Some(v),
                    enforced: v.effective_action,
                    reason,
                    version: policy.version(),
                    name: None,
                });
                self.ctx.count_decision(v.effective_action);
                let log = self.ctx.must_log(&v);
                match v.effective_action {
                    Action::Permit => {
                        flow.state = State::Forwarding;
                        if syn {
                            // Watch the first client bytes without holding them, so the record
                            // and later re-evaluations know the name.
                            let mut i = Inspect::new(self.ctx.config.max_held_bytes_per_flow);
                            i.watching = true;
                            flow.inspect = Some(Box::new(i));
                            flow.record_pending = log;
                            if !seg.payload.is_empty() {
                                self.ctx.watch(now, flow, seg, &policy, out);
                            }
                        } else if log {
                            self.ctx.emit_decision(now, flow, &policy, out);
                        }
                        Disposition::Forward
                    }
                    action => {
                        if log {
                            self.ctx.emit_decision(now, flow, &policy, out);
                        }
                        flow.state = State::Blocked;
                        if action == Action::Reject {
                            if syn {
                                let fs = flow.flow_seq(seg.payload.len() as u32);
                                self.ctx.push_rst(&fs, RstTarget::Client, out);
                            } else {
                                self.ctx.reset(flow, true, true, out);
                            }
                        }
                        Disposition::Drop(DropReason::Policy)
                    }
                }
            }
            SynDecision::NeedsName if !syn => {
                // Seen mid-stream: the name cannot be known any more.
                flow.decision = Some(Decision {
                    verdict: None,
                    enforced: Action::Reject,
                    reason: Reason::Midstream,
                    version: policy.version(),
                    name: None,
                });
                if policy.mode() == Mode::LogOnly {
                    flow.state = State::Forwarding;
                    self.ctx.emit_decision(now, flow, &policy, out);
                    Disposition::Forward
                } else {
                    self.ctx.stats.fail_closed += 1;
                    self.ctx.emit_decision(now, flow, &policy, out);
                    self.ctx.reset(flow, true, true, out);
                    self.ctx.set_state(flow, State::Cut, Reason::Midstream);
                    Disposition::Drop(DropReason::FailClosed(Reason::Midstream))
                }
            }
            SynDecision::NeedsName => match syn_found {
                Some(found) => {
                    flow.tcp.client_next = flow.tcp.base.wrapping_add(seg.payload.len() as u32);
                    let v = self.ctx.decide_found(now, flow, &found, &policy, out);
                    match v {
                        Action::Permit => {
                            let mut i = Inspect::new(self.ctx.config.max_held_bytes_per_flow);
                            let _ = i.buf.insert(0, seg.payload);
                            self.ctx.account(i.buf.stored() as isize);
                            self.ctx.start_watch(&mut i, &found);
                            flow.inspect = Some(Box::new(i));
                            Disposition::Forward
                        }
                        Action::Deny => Disposition::Drop(DropReason::Policy),
                        Action::Reject => {
                            let fs = flow.flow_seq(0);
                            self.ctx.push_rst(&fs, RstTarget::Client, out);
                            Disposition::Drop(DropReason::Policy)
                        }
                    }
                }
                None => {
                    flow.state = State::Inspecting;
                    flow.inspect = Some(Box::new(Inspect::new(
                        self.ctx.config.max_held_bytes_per_flow,
                    )));
                    Disposition::Forward
                }
            },
        };
        self.ctx.end_if_closed(now, flow, out);
        self.ctx.arm(id, flow);
        d
    }
}

impl Flow {
    fn new(
        now: Instant,
        client: IpAddr,
        cport: u16,
        server: IpAddr,
        sport: u16,
        client_side: Side,
        proto: u8,
    ) -> Flow {
        Flow {
            client: SocketAddr::new(client, cport),
            server: SocketAddr::new(server, sport),
            client_side,
            proto,
            start: now,
            last_seen: now,
            traffic: Traffic::default(),
            state: State::Inspecting,
            tcp: TcpTrack::default(),
            decision: None,
            inspect: None,
            timer_at: None,
            record_pending: false,
            logged: false,
            cut_reason: None,
            ended: false,
            name_decides: false,
        }
    }

    fn count(&mut self, side: Side, len: u64, now: Instant) {
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
    fn is_settled(&self) -> bool {
        self.state == State::Forwarding
            && self.inspect.is_none()
            && !self.ended
            && !self.tcp.rst
            && !self.tcp.fin_client
            && !self.tcp.fin_server
    }

    /// The sequence tracking of [`Ctx::tcp_existing`] for a segment without SYN, FIN or RST on a
    /// settled flow ([`Flow::is_settled`]).
    #[inline]
    fn track_plain(&mut self, from_client: bool, seg: &TcpSegment<'_>) {
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
    fn reusable_by(&self, seq: u32) -> bool {
        let closed = self.tcp.rst || (self.tcp.fin_client && self.tcp.fin_server);
        let new_isn = self.tcp.synced && seq.wrapping_add(1) != self.tcp.base;
        (closed || new_isn) && !matches!(self.state, State::Blocked | State::Cut)
    }

    /// True when the TCP connection is over for both ends: FINs both ways, a RST either end
    /// accepts, or a reset or refusal by the gateway. A flow still under inspection is not over:
    /// after a client RST its ports are inspected afresh.
    fn closed(&self) -> bool {
        self.proto == 6
            && self.state != State::Inspecting
            && (self.tcp.rst_exact
                || (self.tcp.fin_client && self.tcp.fin_server)
                || self.state == State::Cut
                || (self.state == State::Blocked && self.enforced() == Some(Action::Reject)))
    }

    fn enforced(&self) -> Option<Action> {
        self.decision.as_ref().map(|d| d.enforced)
    }

    /// Sequence state for resets; `extra` is added to the client's next sequence number (the
    /// sequence space of the segment being answered when nothing was forwarded yet).
    fn flow_seq(&self, extra: u32) -> TcpFlowSeq {
        TcpFlowSeq {
            client: self.client,
            server: self.server,
            client_next_seq: self.tcp.client_next.wrapping_add(extra),
            server_next_seq: self.tcp.server_next,
        }
    }

    fn name(&self) -> Option<&str> {
        self.decision
            .as_ref()
            .and_then(|d| d.name.as_ref())
            .map(|(n, _)| &**n)
    }
}

fn flow_query<'a>(flow: &Flow, name: Option<&'a str>) -> Query<'a> {
    let transport = match flow.proto {
        6 => Transport::Tcp,
        17 => Transport::Udp,
        n => Transport::Other(n),
    };
    Query {
        src: flow.client.ip(),
        dst: flow.server.ip(),
        transport,
        dst_port: flow.server.port(),
        name,
    }
}

/// The name a parse found, or the reason there is none.
fn found_name(found: &Found) -> (Option<(String, NameKind)>, Option<Reason>) {
    match found {
        Found::Tls {
            name: Some(n), ech, ..
        } => (Some((n.clone(), NameKind::Sni { ech: *ech })), None),
        Found::Tls { name: None, .. } => (None, Some(Reason::NoSni)),
        Found::Http { host: Some(h), .. } => (Some((h.clone(), NameKind::Host)), None),
        Found::Http { host: None, .. } => (None, Some(Reason::NoSni)),
        Found::NotTls => (None, Some(Reason::NotTls)),
        Found::Malformed | Found::Incomplete => (None, Some(Reason::ParseError)),
    }
}

/// The reason of a verdict given on a name or its absence: a flow without a name that is not
/// permitted by a rule says why it has no name. Under log-only the action enforcement would have
/// taken counts (the reported action, unless a watch rule reported it).
fn found_reason(policy: &CompiledPolicy, v: &Verdict, reason_if_none: Option<Reason>) -> Reason {
    let would_block = v.effective_action != Action::Permit
        || (policy.mode() == Mode::LogOnly
            && v.rule == v.effective_rule
            && v.action != Action::Permit);
    match reason_if_none {
        Some(r) if would_block || v.effective_rule == RuleRef::Default => r,
        _ => rule_reason(v),
    }
}

/// Where a watch looks next, and whether for an HTTP request (else a TLS record).
/// Slots [`Pipeline::early_drop`] looks at before giving up.
const EARLY_DROP_PROBES: usize = 16;
/// How long a SYN must have gone unanswered before its flow may be evicted: TCP retransmits an
/// unanswered SYN after one second, so a younger one may still be answered.
pub const EARLY_DROP_MIN_AGE: Duration = Duration::from_secs(1);

/// A TCP flow that only saw its client's SYN (no answer from the server) and holds nothing:
/// evicting it loses nothing that a retransmitted SYN would not rebuild.
fn is_half_open(flow: &Flow) -> bool {
    flow.proto == 6
        && flow.tcp.synced
        && !flow.tcp.synack_seen
        && !flow.tcp.established
        && flow.inspect.as_ref().is_none_or(|i| i.bytes() == 0)
}

fn rule_reason(v: &Verdict) -> Reason {
    match v.effective_rule {
        RuleRef::Default => Reason::Default,
        _ => Reason::Rule,
    }
}

/// ICMP error types (RFC 792, RFC 4443 2.1: ICMPv6 types below 128).
fn icmp_is_error(v6: bool, msg_type: u8) -> bool {
    if v6 {
        msg_type < 128
    } else {
        matches!(msg_type, 3 | 4 | 5 | 11 | 12)
    }
}

/// The flow of the packet an ICMP error quotes: (protocol, source, source port, destination,
/// destination port), ports 0 for protocols without ports. Only the fixed headers are read (an
/// error quotes at least the IP header and 8 bytes of the transport header).
fn quoted_flow(q: &[u8]) -> Option<(u8, IpAddr, u16, IpAddr, u16)> {
    let (proto, src, dst, l4): (u8, IpAddr, IpAddr, &[u8]) = match q.first()? >> 4 {
        4 => {
            let ihl = usize::from(q[0] & 0x0f) * 4;
            if ihl < 20 || q.len() < ihl {
                return None;
            }
            let frag_offset = u16::from_be_bytes([q[6], q[7]]) & 0x1fff;
            let s: [u8; 4] = q[12..16].try_into().ok()?;
            let d: [u8; 4] = q[16..20].try_into().ok()?;
            let l4 = if frag_offset == 0 { &q[ihl..] } else { &[][..] };
            (q[9], IpAddr::from(s), IpAddr::from(d), l4)
        }
        6 => {
            if q.len() < 40 {
                return None;
            }
            let s: [u8; 16] = q[8..24].try_into().ok()?;
            let d: [u8; 16] = q[24..40].try_into().ok()?;
            (q[6], IpAddr::from(s), IpAddr::from(d), &q[40..])
        }
        _ => return None,
    };
    let (sport, dport) = match proto {
        6 | 17 => {
            let p = l4.get(..4)?;
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        }
        _ => (0, 0),
    };
    Some((proto, src, sport, dst, dport))
}

/// Once the watch of a long keep-alive connection has let go of this many bytes, its offsets are
/// renumbered from where it stands ([`Reassembly::rebase`]): offsets are 32-bit differences of
/// sequence numbers and must stay far from wrapping, however long the connection lasts.
const REBASE_FROM: u32 = 1 << 30;

/// Stream offset of a client segment's first data byte (a SYN's data follows the SYN's own
/// sequence number), counted from the client's sequence number `base + shift` (`shift` is the
/// renumbering of a long watch, [`Inspect::shift`]; 0 before the verdict).
fn data_offset(base: u32, shift: u32, seg: &TcpSegment<'_>) -> i64 {
    let first = seg.seq.wrapping_add(u32::from(seg.flags.syn()));
    i64::from(first.wrapping_sub(base.wrapping_add(shift)) as i32)
}

/// Sequence number comparison: `a` after `b`, modulo 2^32.
fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Ctx {
    /// Writes the flow's pending decision and its flow-end record (when its decision was
    /// recorded), once: later packets of the flow are counted nowhere.
    fn end_flow(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        why: EndReason,
        out: &mut Output,
    ) {
        if flow.ended {
            return;
        }
        flow.ended = true;
        if flow.record_pending {
            self.emit_decision(now, flow, policy, out);
        }
        if !flow.logged {
            return;
        }
        let why = if flow.cut_reason.is_some()
            || (flow.state == State::Blocked && flow.enforced() == Some(Action::Reject))
        {
            EndReason::Cut
        } else if flow.tcp.rst {
            EndReason::Rst
        } else if flow.tcp.fin_client && flow.tcp.fin_server {
            EndReason::Fin
        } else {
            why
        };
        let mut r = self.base_record(now, flow, policy, Activity::Close);
        r.traffic = Some(flow.traffic);
        let start = self.clock.epoch_ms(flow.start);
        let end = self.clock.epoch_ms(flow.last_seen);
        r.start_time = Some(start);
        r.end_time = Some(end);
        r.time = end;
        r.duration = Some(end.saturating_sub(start));
        r.end_reason = Some(why);
        out.records.push(r);
    }

    /// Ends a TCP flow that just closed; see [`Flow::closed`].
    fn end_if_closed(&mut self, now: Instant, flow: &mut Flow, out: &mut Output) {
        if !flow.ended && flow.closed() {
            let policy = self.policy.load_full();
            self.end_flow(now, flow, &policy, EndReason::Fin, out);
        }
    }

    fn must_log(&self, v: &Verdict) -> bool {
        // Denies, rules with `log = true`, anything not enforced (log-only, watch rules) and the
        // default (a flow no rule covers is a gap in the policy worth seeing).
        self.config.log_all
            || v.log
            || v.effective_action != Action::Permit
            || !v.enforced
            || v.effective_rule == RuleRef::Default
    }

    fn count_decision(&mut self, a: Action) {
        match a {
            Action::Permit => self.stats.decisions_permit += 1,
            Action::Deny => self.stats.decisions_deny += 1,
            Action::Reject => self.stats.decisions_reject += 1,
        }
    }

    fn account(&mut self, delta: isize) {
        let now = self.stats.held_bytes_now as isize + delta;
        self.stats.held_bytes_now = now.max(0) as usize;
        self.stats.held_bytes_peak = self.stats.held_bytes_peak.max(self.stats.held_bytes_now);
    }

    fn drop_inspect(&mut self, flow: &mut Flow) {
        if let Some(i) = flow.inspect.take() {
            self.account(-(i.bytes() as isize));
        }
    }

    fn set_state(&mut self, flow: &mut Flow, state: State, reason: Reason) {
        flow.state = state;
        if state == State::Cut {
            flow.cut_reason = Some(reason);
            self.drop_inspect(flow);
        }
    }

    fn idle_timeout(&self, flow: &Flow) -> Duration {
        let t = &self.config.idle;
        match flow.proto {
            6 => {
                if flow.tcp.rst
                    || (flow.tcp.fin_client && flow.tcp.fin_server)
                    || matches!(flow.state, State::Cut | State::Blocked)
                {
                    t.tcp_closed
                } else if flow.tcp.fin_client || flow.tcp.fin_server {
                    t.tcp_closing
                } else if flow.tcp.established {
                    t.tcp_established
                } else {
                    t.tcp_opening
                }
            }
            17 => t.udp,
            _ => t.other,
        }
    }

    fn inspect_deadline(&self, flow: &Flow) -> Option<Instant> {
        let i = flow.inspect.as_ref()?;
        i.started.map(|s| s + self.config.inspect_timeout)
    }

    /// The flow's real deadline: idle expiry, or the inspection timeout if sooner.
    fn deadline(&self, flow: &Flow) -> Instant {
        let idle = flow.last_seen + self.idle_timeout(flow);
        match (flow.state, self.inspect_deadline(flow)) {
            (State::Inspecting, Some(i)) => idle.min(i),
            _ => idle,
        }
    }

    /// Makes sure the deadline queue has an entry no later than the flow's deadline.
    fn arm(&mut self, id: FlowId, flow: &mut Flow) {
        let d = self.deadline(flow);
        if flow.timer_at.is_none_or(|t| d < t) {
            flow.timer_at = Some(d);
            self.timers.push(d, id);
        }
    }

    fn push_rst(&mut self, fs: &TcpFlowSeq, target: RstTarget, out: &mut Output) {
        let mut packet = Vec::with_capacity(60);
        if wire::build_tcp_rst(&mut packet, &fs.rst(target)).is_ok() {
            self.stats.generated += 1;
            out.transmit.push(Transmit {
                packet,
                meta: PacketMeta::default(),
            });
        }
    }

    /// Resets the flow's ends as the gateway knows their sequence numbers.
    fn reset(&mut self, flow: &Flow, client: bool, server: bool, out: &mut Output) {
        if flow.proto != 6 {
            // Nothing to reset: the flow's further packets are dropped.
            return;
        }
        // An endpoint accepts a RST at once only when its sequence number is exactly the next one
        // it expects (RFC 5961). That is the peer's highest sequence number the gateway forwarded,
        // unless segments are still in flight: then it is what the endpoint acknowledged last.
        // When the two differ, both are sent.
        let mut fs = flow.flow_seq(0);
        if fs.server_next_seq.is_none() && flow.tcp.synced {
            fs.client_next_seq = flow.tcp.base;
        }
        if server {
            self.push_rst(&fs, RstTarget::Server, out);
            if let Some(a) = flow.tcp.server_ack.filter(|a| *a != fs.client_next_seq) {
                self.push_rst(
                    &TcpFlowSeq {
                        client_next_seq: a,
                        ..fs
                    },
                    RstTarget::Server,
                    out,
                );
            }
        }
        if client {
            self.push_rst(&fs, RstTarget::Client, out);
            if let Some(a) = flow
                .tcp
                .client_ack
                .filter(|a| Some(*a) != fs.server_next_seq)
            {
                let alt = TcpFlowSeq {
                    server_next_seq: Some(a),
                    ..fs
                };
                self.push_rst(&alt, RstTarget::Client, out);
            }
        }
    }

    fn icmp_unreachable(&mut self, offending: &[u8], out: &mut Output) {
        let mut packet = Vec::new();
        if wire::build_icmp_unreachable(&mut packet, offending, None).is_ok() {
            self.stats.generated += 1;
            out.transmit.push(Transmit {
                packet,
                meta: PacketMeta::default(),
            });
        }
    }

    fn flow_limit(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        p: &ParsedPacket<'_>,
        out: &mut Output,
    ) -> Disposition {
        self.stats.flow_limit += 1;
        flow.decision = Some(Decision {
            verdict: None,
            enforced: Action::Deny,
            reason: Reason::FlowLimit,
            version: policy.version(),
            name: None,
        });
        self.emit_decision(now, flow, policy, out);
        if policy.mode() == Mode::LogOnly {
            return Disposition::Forward;
        }
        if flow.proto == 6 && p.tcp().is_some_and(|t| t.flags.syn()) {
            // Tell the client at once rather than letting it retry into a full table.
            let seg_len = p.tcp().map_or(1, |t| t.seq_len());
            let fs = flow.flow_seq(seg_len);
            self.push_rst(&fs, RstTarget::Client, out);
        }
        Disposition::Drop(DropReason::FlowLimit)
    }

    /// Everything after the first packet of a TCP flow.
    #[allow(clippy::too_many_arguments)]
    fn tcp_existing(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        from_client: bool,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let flags = seg.flags;
        if flags.rst() {
            flow.tcp.rst = true;
            let (next, peer_ack) = if from_client {
                (Some(flow.tcp.client_next), flow.tcp.server_ack)
            } else {
                (flow.tcp.server_next, flow.tcp.client_ack)
            };
            if next == Some(seg.seq) || peer_ack == Some(seg.seq) {
                flow.tcp.rst_exact = true;
            }
        }
        if from_client {
            if flags.fin() {
                flow.tcp.fin_client = true;
            }
            if flags.ack() && flow.tcp.server_next.is_some() {
                flow.tcp.client_ack = Some(seg.ack);
            }
            if flags.syn() && !flow.tcp.synced {
                // A SYN on a flow first seen mid-stream: a new connection on the same ports.
                flow.tcp.base = seg.seq.wrapping_add(1);
                flow.tcp.client_next = flow.tcp.base;
                flow.tcp.synced = true;
            }
        } else {
            if flags.fin() {
                flow.tcp.fin_server = true;
            }
            if flags.syn() && flags.ack() {
                flow.tcp.established = true;
                flow.tcp.synack_seen = true;
            }
            let end = seg.seq.wrapping_add(seg.seq_len());
            // A RST carries no data and may be blind: it never moves the tracked sequence.
            if !flags.rst() && flow.tcp.server_next.is_none_or(|n| seq_gt(end, n)) {
                flow.tcp.server_next = Some(end);
            }
            if flags.ack() {
                flow.tcp.server_ack = Some(seg.ack);
            }
        }
        match flow.state {
            State::Cut => Disposition::Drop(DropReason::Cut),
            State::Blocked => {
                if from_client && flags.syn() && flow.enforced() == Some(Action::Reject) {
                    let fs = TcpFlowSeq {
                        client_next_seq: seg.seq.wrapping_add(seg.seq_len()),
                        server_next_seq: None,
                        ..flow.flow_seq(0)
                    };
                    self.push_rst(&fs, RstTarget::Client, out);
                }
                if !from_client && flow.enforced() == Some(Action::Deny) && !flags.rst() {
                    // The server answers a client we cut off: nothing must reach the client.
                    return Disposition::Drop(DropReason::Policy);
                }
                Disposition::Drop(DropReason::Policy)
            }
            State::Forwarding => {
                if from_client {
                    if flow.inspect.is_some() && !seg.payload.is_empty() {
                        if !meta.partial_checksum()
                            && p.verify_transport_checksum() == ChecksumStatus::Invalid
                        {
                            // The receiver discards it too: never let it reach the inspector.
                            return Disposition::Drop(DropReason::BadChecksum);
                        }
                        let policy = self.policy.load_full();
                        let d = self.watch(now, flow, seg, &policy, out);
                        if d != Disposition::Forward {
                            return d;
                        }
                    }
                    let end = seg.seq.wrapping_add(seg.seq_len());
                    if !flags.rst() && seq_gt(end, flow.tcp.client_next) {
                        flow.tcp.client_next = end;
                    }
                } else if flow.inspect.is_some() {
                    self.maybe_release_guard(flow);
                }
                Disposition::Forward
            }
            State::Inspecting => {
                if !from_client {
                    if !seg.payload.is_empty() && !flow.tcp.synack_seen {
                        // Data from the server before it answered the SYN: the two ends do not
                        // agree on who opened the flow. Nothing passes until the name is known.
                        return Disposition::Drop(DropReason::OutOfState);
                    }
                    return Disposition::Forward;
                }
                if seg.payload.is_empty() && !flags.fin() {
                    if flags.rst() {
                        // The connection is gone: free what it held; anything the client sends
                        // on these ports again is inspected from scratch.
                        self.drop_inspect(flow);
                        flow.inspect =
                            Some(Box::new(Inspect::new(self.config.max_held_bytes_per_flow)));
                        flow.tcp.rst_exact = false;
                    }
                    return Disposition::Forward;
                }
                if !flow.tcp.synced {
                    return Disposition::Drop(DropReason::FailClosed(Reason::Midstream));
                }
                if !meta.partial_checksum()
                    && p.verify_transport_checksum() == ChecksumStatus::Invalid
                {
                    return Disposition::Drop(DropReason::BadChecksum);
                }
                self.hold(now, flow, p, seg, meta, out)
            }
        }
    }

    /// Holds a client segment of a flow under inspection and decides when the name is known.
    fn hold(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let offset = data_offset(flow.tcp.base, 0, seg);
        let limit_total = self.config.max_held_bytes_total;
        let held_now = self.stats.held_bytes_now;
        let Some(insp) = flow.inspect.as_mut() else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let before = insp.bytes();
        if held_now + seg.payload.len() + p.packet.len() > limit_total {
            return self.fail_closed(now, flow, Reason::MemoryPressure, out);
        }
        let res = insp.buf.insert(offset, seg.payload);
        // Account for what the insert changed before any early return: whatever its outcome,
        // the buffer may have grown.
        self.account(insp.bytes() as isize - before as isize);
        match res {
            Insert::Conflict => return self.fail_closed(now, flow, Reason::AmbiguousOverlap, out),
            Insert::Overflow => return self.fail_closed(now, flow, Reason::InspectOverflow, out),
            Insert::Old if !seg.flags.fin() => return Disposition::Drop(DropReason::Duplicate),
            Insert::Stored { added: 0 } if !seg.flags.fin() => {
                return Disposition::Drop(DropReason::Duplicate);
            }
            _ => {}
        }
        if seg.flags.fin() && insp.held.iter().any(|h| h.fin) {
            return Disposition::Drop(DropReason::Duplicate);
        }
        insp.held.push(Held {
            offset,
            len: seg.payload.len(),
            fin: seg.flags.fin(),
            packet: p.packet.to_vec(),
            meta,
        });
        insp.held_packet_bytes += p.packet.len();
        if insp.started.is_none() {
            insp.started = Some(now);
        }
        self.account(p.packet.len() as isize);
        let found = name::classify(insp.buf.contiguous());
        if matches!(found, Found::Incomplete) {
            if seg.flags.fin() || flow.tcp.fin_client {
                // The client closed its side: no more bytes will come.
                let policy = self.policy.load_full();
                let found = Found::Malformed;
                self.decide_held(now, flow, &found, &policy, out);
            }
            return Disposition::Held;
        }
        let policy = self.policy.load_full();
        self.decide_held(now, flow, &found, &policy, out);
        Disposition::Held
    }

    /// The verdict for a flow whose held bytes named it (or proved nameless).
    fn decide_held(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let Some(mut insp) = flow.inspect.take() else {
            return;
        };
        let action = self.decide_found(now, flow, found, policy, out);
        let held = std::mem::take(&mut insp.held);
        self.account(-(insp.held_packet_bytes as isize));
        insp.held_packet_bytes = 0;
        match action {
            Action::Permit => {
                // Whatever else the held bytes hold (a pipelined request, another hello) is
                // checked before anything is released.
                self.start_watch(&mut insp, found);
                flow.inspect = Some(insp);
                self.scan_hellos(now, flow, policy, out);
                if flow.state != State::Forwarding {
                    return;
                }
                let mut held = held;
                held.sort_by_key(|h| (h.offset, h.len));
                held.dedup_by_key(|h| (h.offset, h.len, h.fin));
                for h in held {
                    let end = flow
                        .tcp
                        .base
                        .wrapping_add((h.offset + h.len as i64 + i64::from(h.fin)) as u32);
                    if seq_gt(end, flow.tcp.client_next) {
                        flow.tcp.client_next = end;
                    }
                    self.stats.released += 1;
                    out.transmit.push(Transmit {
                        packet: h.packet,
                        meta: h.meta,
                    });
                }
            }
            Action::Reject => {
                self.account(-(insp.buf.clear() as isize));
                self.reset(flow, true, true, out);
            }
            Action::Deny => {
                self.account(-(insp.buf.clear() as isize));
                self.reset(flow, false, true, out);
            }
        }
    }

    /// Sets up the watch of a permitted flow's later bytes.
    fn start_watch(&mut self, insp: &mut Inspect, found: &Found) {
        insp.started = None;
        insp.guard_end = insp.buf.contiguous_end();
        match name::watch_from(found) {
            Some(w) => {
                insp.watch = w;
                insp.watching = true;
            }
            None => insp.watching = false,
        }
    }

    /// Applies a name (or the proof there is none) to a flow: the verdict, the record, the state.
    /// Returns the enforced action.
    fn decide_found(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Action {
        let (name, reason_if_none) = found_name(found);
        let q = flow_query(flow, name.as_ref().map(|(n, _)| n.as_str()));
        let v = policy.evaluate(&q);
        let reason = found_reason(policy, &v, reason_if_none);
        flow.decision = Some(Decision {
            verdict: Some(v),
            enforced: v.effective_action,
            reason,
            version: policy.version(),
            name: name.map(|(n, k)| (n.into_boxed_str(), k)),
        });
        self.count_decision(v.effective_action);
        if self.must_log(&v) {
            self.emit_decision(now, flow, policy, out);
        }
        match v.effective_action {
            Action::Permit => flow.state = State::Forwarding,
            Action::Deny => flow.state = State::Blocked,
            Action::Reject => self.set_state(flow, State::Cut, reason),
        }
        v.effective_action
    }

    /// A bound or an evasion attempt: discard what is held, reset both ends, record.
    fn fail_closed(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        reason: Reason,
        out: &mut Output,
    ) -> Disposition {
        let policy = self.policy.load_full();
        self.stats.fail_closed += 1;
        let name = flow.decision.as_mut().and_then(|d| d.name.take());
        flow.decision = Some(Decision {
            verdict: None,
            enforced: Action::Reject,
            reason,
            version: policy.version(),
            name,
        });
        if policy.mode() == Mode::LogOnly {
            // Log-only never enforces: release what was held and stop inspecting.
            self.emit_decision(now, flow, &policy, out);
            if let Some(mut insp) = flow.inspect.take() {
                let mut held = std::mem::take(&mut insp.held);
                held.sort_by_key(|h| (h.offset, h.len));
                for h in held {
                    self.stats.released += 1;
                    out.transmit.push(Transmit {
                        packet: h.packet,
                        meta: h.meta,
                    });
                }
                self.account(-(insp.bytes() as isize));
            }
            flow.state = State::Forwarding;
            return Disposition::Held;
        }
        self.emit_decision(now, flow, &policy, out);
        self.reset(flow, true, true, out);
        self.set_state(flow, State::Cut, reason);
        Disposition::Drop(DropReason::FailClosed(reason))
    }

    /// A client segment of a permitted flow that still has reassembled bytes: check it agrees
    /// with what was inspected, and look for a second ClientHello.
    fn watch(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        seg: &TcpSegment<'_>,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        let total_ok =
            self.stats.held_bytes_now + seg.payload.len() <= self.config.max_held_bytes_total;
        let (base, server_ack) = (flow.tcp.base, flow.tcp.server_ack);
        let Some(insp) = flow.inspect.as_mut() else {
            return Disposition::Forward;
        };
        if insp.watching && insp.watch.follows_requests() {
            // Keep-alive HTTP: let go of what the server acknowledged and the watch has passed,
            // so the window follows the connection from request to request. Bytes the server
            // has not acknowledged stay, to be compared with retransmissions, unless they are
            // request body the watch skips: once everything it parsed is acknowledged, the
            // window jumps to where it looks next.
            let origin = base.wrapping_add(insp.shift);
            let acked = server_ack.map_or(0, |a| (a.wrapping_sub(origin) as i32).max(0) as u32);
            let at = u32::try_from(insp.watch.at()).unwrap_or(u32::MAX);
            let inspected_end = insp.inspected_end.max(insp.guard_end);
            let to = if acked >= inspected_end {
                at
            } else {
                acked.min(at)
            };
            let freed = insp.buf.advance(to);
            self.account(-(freed as isize));
            let by = insp.buf.origin();
            if by >= REBASE_FROM {
                insp.buf.rebase(by);
                insp.watch = insp.watch.moved_to(insp.watch.at() - by as usize);
                insp.guard_end = insp.guard_end.saturating_sub(by);
                insp.inspected_end = insp.inspected_end.saturating_sub(by);
                insp.shift = insp.shift.wrapping_add(by);
            }
        }
        let offset = data_offset(base, insp.shift, seg);
        let before = insp.bytes();
        let start = offset.max(0) as u32;
        let res = if insp.watching && total_ok {
            insp.buf.insert(offset, seg.payload)
        } else if offset + seg.payload.len() as i64 > 0
            && !insp
                .buf
                .agrees(start, &seg.payload[(start as i64 - offset) as usize..])
        {
            Insert::Conflict
        } else {
            Insert::Old
        };
        match res {
            Insert::Conflict => {
                let d = self.fail_closed(now, flow, Reason::AmbiguousOverlap, out);
                return if matches!(d, Disposition::Held) {
                    Disposition::Forward
                } else {
                    d
                };
            }
            Insert::Overflow => insp.watching = false,
            Insert::Stored { .. } | Insert::Old => {}
        }
        if !total_ok {
            insp.watching = false;
        }
        let after = insp.bytes();
        self.account(after as isize - before as isize);
        if insp.watching {
            self.scan_hellos(now, flow, policy, out);
        }
        if flow.state != State::Forwarding {
            let reason = flow.cut_reason.unwrap_or(Reason::SecondHello);
            return Disposition::Drop(DropReason::FailClosed(reason));
        }
        self.finish_watch_if_done(now, flow, policy, out);
        Disposition::Forward
    }

    /// Walks the client's TLS records after the first ClientHello.
    fn scan_hellos(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        loop {
            let Some(insp) = flow.inspect.as_mut() else {
                return;
            };
            if !insp.watching {
                return;
            }
            let bytes = insp.buf.contiguous();
            if flow.decision.as_ref().is_some_and(|d| d.name.is_none()) && insp.watch.at() == 0 {
                // Decided on the SYN: the first hello is at offset 0.
                match name::classify(bytes) {
                    Found::Incomplete => return,
                    found => {
                        match name::watch_from(&found) {
                            Some(w) => insp.watch = w,
                            None => insp.watching = false,
                        }
                        self.first_name_observed(now, flow, &found, policy, out);
                        continue;
                    }
                }
            }
            // `bytes` starts at the buffer's origin, which is never past what is watched.
            let at = insp.watch.at();
            let rel = at.saturating_sub(insp.buf.origin() as usize);
            let rest = &bytes[rel.min(bytes.len())..];
            match insp.watch {
                Watch::Tls(_) => {}
                Watch::Http(_) => {
                    if rel >= bytes.len() {
                        return;
                    }
                    match name::classify_request(rest) {
                        Found::Incomplete => return,
                        found @ Found::Http { end, .. } => {
                            let head_end =
                                u32::try_from(at.saturating_add(end)).unwrap_or(u32::MAX);
                            insp.inspected_end = insp.inspected_end.max(head_end);
                            match name::watch_from(&found) {
                                Some(w) => insp.watch = w.moved_to(at.saturating_add(w.at())),
                                None => insp.watching = false,
                            }
                            self.later_request(now, flow, &found, policy, out);
                            if flow.state != State::Forwarding {
                                return;
                            }
                        }
                        Found::Malformed => {
                            // An ambiguous head (conflicting Host fields, a Host that contradicts
                            // the target, line folding, a body of uncertain length) after the
                            // first: fail closed as on the first request.
                            insp.watching = false;
                            self.fail_closed(now, flow, Reason::ParseError, out);
                            return;
                        }
                        _ => {
                            // Not HTTP any more (a protocol upgrade): nothing more to watch.
                            insp.watching = false;
                            return;
                        }
                    }
                    continue;
                }
                Watch::ChunkSize(_) | Watch::ChunkEnd(_) | Watch::Trailers(_) => {
                    // A chunked request body, followed piece by piece to the next request.
                    if rel >= bytes.len() {
                        return;
                    }
                    match name::chunk_step(insp.watch, rest) {
                        ChunkStep::Incomplete => return,
                        ChunkStep::Next {
                            read,
                            advance,
                            next,
                        } => {
                            let read_end =
                                u32::try_from(at.saturating_add(read)).unwrap_or(u32::MAX);
                            insp.inspected_end = insp.inspected_end.max(read_end);
                            insp.watch = next.moved_to(at.saturating_add(advance));
                        }
                        ChunkStep::Malformed => {
                            insp.watching = false;
                            self.fail_closed(now, flow, Reason::ParseError, out);
                            return;
                        }
                    }
                    continue;
                }
            }
            if rest.len() < 5 {
                return;
            }
            let rlen = 5 + usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            match rest[0] {
                22 => match name::classify(rest) {
                    Found::Incomplete => return,
                    found @ Found::Tls { end, .. } => {
                        insp.watch = Watch::Tls(at + end);
                        self.second_hello(now, flow, &found, policy, out);
                        if flow.state != State::Forwarding {
                            return;
                        }
                    }
                    _ => {
                        // Another handshake message: skip its record.
                        if rest.len() < rlen {
                            return;
                        }
                        insp.watch = Watch::Tls(at + rlen);
                    }
                },
                // ChangeCipherSpec: TLS 1.3 clients in middlebox-compatibility mode send one
                // before the second ClientHello that answers a HelloRetryRequest.
                20 => {
                    if rest.len() < rlen {
                        return;
                    }
                    insp.watch = Watch::Tls(at + rlen);
                }
                // Alert, application data, anything else: the plaintext handshake is over.
                _ => {
                    insp.watching = false;
                    return;
                }
            }
        }
    }

    /// The name of a flow decided on the SYN was found by watching: complete its record, and
    /// check the name against the policy (the address-only verdict did not depend on it).
    fn first_name_observed(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let (name, reason_if_none) = found_name(found);
        // The verdict for the name: the same as the SYN's when it was final under this policy;
        // under log-only it is the verdict the record reports, with the reason enforcement
        // would have given.
        let v = policy.evaluate(&flow_query(flow, name.as_ref().map(|(n, _)| n.as_str())));
        let reason = if flow.name_decides {
            found_reason(policy, &v, reason_if_none)
        } else {
            rule_reason(&v)
        };
        flow.decision = Some(Decision {
            verdict: Some(v),
            enforced: v.effective_action,
            reason,
            version: policy.version(),
            name: name.map(|(n, k)| (n.into_boxed_str(), k)),
        });
        if flow.record_pending || self.must_log(&v) && !flow.logged {
            self.emit_decision(now, flow, policy, out);
        }
        if v.effective_action != Action::Permit {
            // Only a policy swap between the SYN and the hello gets here.
            self.stats.policy_update_cuts += 1;
            if let Some(d) = flow.decision.as_mut() {
                d.reason = Reason::PolicyUpdate;
            }
            self.emit_decision(now, flow, policy, out);
            self.reset(flow, true, true, out);
            self.set_state(flow, State::Cut, Reason::PolicyUpdate);
        }
    }

    /// A second ClientHello on a permitted flow: record it; cut the flow if the policy denies
    /// its name.
    fn second_hello(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        self.stats.second_hellos += 1;
        let Found::Tls { name, ech, .. } = found else {
            return;
        };
        let kind = NameKind::Sni { ech: *ech };
        self.later_name(
            now,
            flow,
            name.clone(),
            kind,
            Reason::SecondHello,
            policy,
            out,
        );
    }

    /// A later HTTP request on a permitted plain-HTTP flow (keep-alive, pipelining): a Host other
    /// than the one the flow was decided on is re-evaluated, and the flow is cut when the policy
    /// does not permit it.
    fn later_request(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let Found::Http { host, .. } = found else {
            return;
        };
        self.stats.later_requests += 1;
        if host.as_deref() == flow.name() {
            return;
        }
        self.later_name(
            now,
            flow,
            host.clone(),
            NameKind::Host,
            Reason::HostChanged,
            policy,
            out,
        );
    }

    /// Another name on a permitted flow: record it; cut the flow (`reason`) if the policy denies
    /// it. The flow keeps its first name when both are permitted.
    #[allow(clippy::too_many_arguments)]
    fn later_name(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        name: Option<String>,
        kind: NameKind,
        deny_reason: Reason,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let q = flow_query(flow, name.as_deref());
        let v = policy.evaluate(&q);
        let first = flow
            .decision
            .as_ref()
            .and_then(|d| d.name.as_ref())
            .map(|(n, _)| n.clone());
        let denied = v.effective_action != Action::Permit;
        let reason = if denied { deny_reason } else { rule_reason(&v) };
        let decision = Decision {
            verdict: Some(v),
            enforced: v.effective_action,
            reason,
            version: policy.version(),
            name: name.map(|n| (n.into_boxed_str(), kind)),
        };
        let previous = flow.decision.replace(decision);
        let log = self.must_log(&v) || flow.logged;
        if log {
            self.emit_decision(now, flow, policy, out);
        }
        if denied {
            self.stats.fail_closed += 1;
            self.reset(flow, true, true, out);
            self.set_state(flow, State::Cut, deny_reason);
        } else if first.is_some() {
            // Keep the first name as the flow's name for re-evaluation; both were allowed.
            flow.decision = previous;
        }
    }

    fn finish_watch_if_done(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let Some(insp) = flow.inspect.as_ref() else {
            return;
        };
        if !insp.watching && flow.record_pending {
            self.emit_decision(now, flow, policy, out);
        }
        self.maybe_release_guard(flow);
    }

    /// Frees the reassembled bytes once the server acknowledged past them and nothing is watched.
    fn maybe_release_guard(&mut self, flow: &mut Flow) {
        let Some(insp) = flow.inspect.as_ref() else {
            return;
        };
        if insp.watching {
            return;
        }
        let end = flow
            .tcp
            .base
            .wrapping_add(insp.shift)
            .wrapping_add(insp.buf.contiguous_end().max(insp.guard_end));
        let acked = flow.tcp.server_ack.is_some_and(|a| !seq_gt(end, a));
        if acked || flow.tcp.rst {
            self.drop_inspect(flow);
        }
    }

    fn emit_decision(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let activity = match flow.decision.as_ref() {
            Some(d) if d.enforced == Action::Permit => Activity::Open,
            _ => Activity::Refuse,
        };
        let r = self.base_record(now, flow, policy, activity);
        out.records.push(r);
        flow.logged = true;
        flow.record_pending = false;
    }

    fn base_record(
        &self,
        now: Instant,
        flow: &Flow,
        policy: &CompiledPolicy,
        activity: Activity,
    ) -> DecisionRecord {
        let d = flow.decision.as_ref();
        let verdict = d.and_then(|d| d.verdict);
        let enforced = d.map_or(Action::Deny, |d| d.enforced);
        let log_only = policy.mode() == Mode::LogOnly;
        let reported = match verdict {
            Some(v) => v.action,
            None => Action::Deny,
        };
        let action = if reported == Action::Permit {
            RecordAction::Allowed
        } else {
            RecordAction::Denied
        };
        let disposition = if enforced != Action::Permit && !(verdict.is_none() && log_only) {
            record::Disposition::Blocked
        } else if verdict.is_some_and(|v| !v.enforced)
            || (verdict.is_none() && log_only)
            || reported != Action::Permit
        {
            record::Disposition::Detected
        } else {
            record::Disposition::Allowed
        };
        let reason = d.map_or(Reason::Unknown, |d| d.reason);
        let severity = match disposition {
            record::Disposition::Allowed => 1,
            record::Disposition::Detected => 2,
            record::Disposition::Blocked if reason.is_fail_closed() => 4,
            record::Disposition::Blocked => 3,
        };
        let same_version = d.is_some_and(|d| d.version == policy.version());
        let (rule, src_groups, dst_groups) = match verdict {
            Some(v) if same_version => (
                policy.rule_name(v.rule).to_owned(),
                policy.src_groups(&v).map(str::to_owned).collect(),
                policy.dst_groups(&v).map(str::to_owned).collect(),
            ),
            Some(v) if v.rule == RuleRef::Default => ("default".to_owned(), Vec::new(), Vec::new()),
            Some(_) => ("(previous policy)".to_owned(), Vec::new(), Vec::new()),
            None => ("fail-closed".to_owned(), Vec::new(), Vec::new()),
        };
        let name = flow.name().map(str::to_owned);
        let kind = d.and_then(|d| d.name.as_ref()).map(|(_, k)| *k);
        let (tls, http) = match (kind, &name) {
            (Some(NameKind::Sni { ech }), Some(n)) => (
                Some(Tls {
                    sni: n.clone(),
                    ech,
                }),
                None,
            ),
            (Some(NameKind::Host), Some(n)) => (None, Some(Http { host: n.clone() })),
            _ => (None, None),
        };
        let protocol_name = match flow.proto {
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            1 => "icmp".to_owned(),
            58 => "ipv6-icmp".to_owned(),
            n => n.to_string(),
        };
        DecisionRecord {
            time: self.clock.epoch_ms(now),
            class_uid: record::CLASS_UID,
            category_uid: record::CATEGORY_UID,
            type_uid: record::CLASS_UID * 100 + u32::from(activity.id()),
            activity_id: activity.id(),
            severity_id: severity,
            metadata: self.metadata.clone(),
            action,
            action_id: if action == RecordAction::Allowed {
                1
            } else {
                2
            },
            disposition,
            disposition_id: disposition.id(),
            src_endpoint: SrcEndpoint {
                ip: flow.client.ip(),
                port: flow.client.port(),
            },
            dst_endpoint: DstEndpoint {
                ip: flow.server.ip(),
                port: flow.server.port(),
                hostname: name,
            },
            connection_info: ConnectionInfo {
                protocol_name,
                protocol_num: flow.proto,
                direction: Some("Outbound".to_owned()),
                direction_id: Some(2),
            },
            tls,
            http,
            policy: PolicyRef {
                name: rule,
                version: d.map_or(policy.version(), |d| d.version),
            },
            src_groups,
            dst_groups,
            reason,
            gateway_id: self.config.gateway_id.clone(),
            traffic: None,
            duration: None,
            start_time: None,
            end_time: None,
            end_reason: None,
        }
    }
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

    #[test]
    fn quoted_flows_are_read_from_truncated_quotes() {
        let mut q = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 1,
        ];
        q.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1]);
        let (proto, s, sp, d, dp) = quoted_flow(&q).unwrap();
        assert_eq!((proto, sp, dp), (6, 40000, 443));
        assert_eq!(
            (s.to_string(), d.to_string()),
            ("10.0.0.1".into(), "192.0.2.1".into())
        );
        assert_eq!(quoted_flow(&q[..22]), None);
        assert_eq!(quoted_flow(&[]), None);
        assert_eq!(quoted_flow(&[0x4f; 30]), None);
    }
}
