//! The pipeline's public types: its settings ([`PipelineConfig`], [`IdleTimeouts`]), what a call
//! takes besides the packet ([`PacketMeta`]) and gives back ([`Disposition`], [`Output`] with its
//! [`Transmit`]s and records), and its counters ([`PipelineStats`], drops by [`DropReason`]).
//! They are re-exported from [`crate::pipeline`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::dns::DnsCache;
use crate::record::{DecisionRecord, Reason, RecordSink};

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
    /// The DNS check of names (`sni_dns_check`).
    pub dns: DnsCheckConfig,
    /// Ask for settled TCP flows to be handed to the kernel ([`Output::fastpath`]). Only a
    /// runtime that can do it sets this.
    pub fast_path: bool,
}

/// How the pipeline checks that a name resolves to the destination address.
#[derive(Debug, Clone)]
pub struct DnsCheckConfig {
    /// The cache the workers share; `None`: the pipeline makes its own, with default bounds.
    pub cache: Option<Arc<DnsCache>>,
    /// Resolvers whose answers to queries crossing the gateway may be learned (see
    /// [`crate::dns::observe`]); empty: nothing is learned.
    pub learn_from: Vec<IpAddr>,
    /// Learn from any resolver (`bulkhead replay`: a capture shows what its workloads were
    /// told); the live gateway never sets it.
    pub learn_from_any: bool,
    /// Most DNS queries tracked at once for learning.
    pub max_pending_queries: usize,
    /// Nobody answers [`Output::dns_queries`] (`bulkhead replay`): a name the cache does not
    /// know is `unverified` at once instead of being looked up.
    pub offline: bool,
    /// Most distinct names waiting for a lookup at once; past it a flow that needs one more
    /// fails closed (`sni_dns_failure`) under `enforce`.
    pub max_waiting_names: usize,
}

impl Default for DnsCheckConfig {
    fn default() -> Self {
        DnsCheckConfig {
            cache: None,
            learn_from: Vec::new(),
            learn_from_any: false,
            max_pending_queries: crate::dns::observe::DEFAULT_PENDING,
            offline: false,
            max_waiting_names: 4096,
        }
    }
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
            dns: DnsCheckConfig::default(),
            fast_path: false,
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

    pub(super) fn index(&self) -> usize {
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

/// What to do with the packet given to [`Pipeline::process`](super::Pipeline::process).
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
    /// Names to look up for the DNS check: the caller resolves each (off the packet path) and
    /// hands the answer to [`Pipeline::dns_answer`](super::Pipeline::dns_answer). Flows wait
    /// for it within their inspection bounds.
    pub dns_queries: Vec<Box<str>>,
    /// What the runtime is asked to do with the kernel fast path (only with
    /// [`PipelineConfig::fast_path`]).
    pub fastpath: Vec<super::FastPathRequest>,
}

impl Output {
    /// Empties both lists, keeping their allocations.
    pub fn clear(&mut self) {
        self.transmit.clear();
        self.records.clear();
        self.dns_queries.clear();
        self.fastpath.clear();
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
    /// DNS check: names found in the shared cache at verdict time (no wait).
    pub dns_cache_hits: u64,
    /// DNS check: names not in the cache (a lookup was asked for, or was already under way).
    pub dns_cache_misses: u64,
    /// DNS check: lookups asked for in [`Output::dns_queries`].
    pub dns_queries: u64,
    /// DNS check: names whose lookup was not asked because too many names were waiting.
    pub dns_queries_refused: u64,
    /// DNS check: destination addresses the name does not resolve to.
    pub dns_mismatches: u64,
    /// DNS check: lookups that failed or timed out (and, offline, names with no answer).
    pub dns_failures: u64,
    /// DNS answers learned from responses crossing the gateway.
    pub dns_learned: u64,
    /// Fast-path hand-offs asked for.
    pub fastpath_requested: u64,
    /// Hand-offs the runtime confirmed.
    pub fastpath_offloaded: u64,
    /// Hand-offs the runtime refused (the flow stayed on the TUN).
    pub fastpath_refused: u64,
    /// Handed-off flows taken back after a policy update.
    pub fastpath_taken_back: u64,
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
