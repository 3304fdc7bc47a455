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

mod api;
mod datagram;
mod decide;
pub mod flow;
mod housekeeping;
mod name;
pub mod reasm;
mod records;
mod shared;
mod state;
mod tcp;
pub mod timer;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use policy_engine::{Action, PolicyStore, Query, SynDecision};

use crate::record::{EndReason, Metadata, Reason};
use crate::wire::{self, L4};

pub use api::{
    Disposition, DropReason, IdleTimeouts, Output, PacketMeta, PipelineConfig, PipelineStats,
    Transmit,
};
pub use housekeeping::EARLY_DROP_MIN_AGE;

use datagram::icmp_is_error;
use flow::FlowTable;
use records::ClockAnchor;
use shared::Shared;
use state::{flow_query, Decision, Flow, Phase};
use timer::DeadlineQueue;

/// The inspection pipeline of one worker. See the module docs.
#[derive(Debug)]
pub struct Pipeline {
    flows: FlowTable<Flow>,
    shared: Shared,
    /// Next slot [`Pipeline::early_drop`] probes.
    early_drop_cursor: usize,
}

impl Pipeline {
    /// A pipeline deciding with the policies `policy` holds.
    pub fn new(config: PipelineConfig, policy: Arc<PolicyStore>) -> Pipeline {
        let evaluated_version = policy.version();
        Pipeline {
            early_drop_cursor: 0,
            flows: FlowTable::new(config.flow_capacity),
            shared: Shared {
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
        self.shared.clock = ClockAnchor {
            instant: Some(instant),
            epoch_ms,
        };
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.shared.config
    }

    /// Counters.
    pub fn stats(&self) -> &PipelineStats {
        &self.shared.stats
    }

    /// Flows in the table.
    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// The earliest time [`Pipeline::handle_timeout`] has work to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.shared.timers.peek()
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
        self.shared.stats.packets += 1;
        let d = self.process_inner(now, packet, meta, out);
        #[cfg(debug_assertions)]
        self.debug_check_held_accounting();
        match d {
            Disposition::Forward => self.shared.stats.forwarded += 1,
            Disposition::Held => self.shared.stats.held += 1,
            Disposition::Drop(r) => self.shared.stats.dropped[r.index()] += 1,
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
        if self.flows.len() >= ALWAYS_BELOW && self.shared.stats.packets % 1024 != 0 {
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
            self.shared.stats.held_bytes_now, real,
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
        while let Some((at, id)) = self.shared.timers.pop_due(now) {
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            if flow.timer_at != Some(at) {
                continue; // stale entry
            }
            flow.timer_at = None;
            if flow.phase == Phase::Inspecting {
                if let Some(dl) = self.shared.inspect_deadline(flow) {
                    if dl <= now {
                        self.shared
                            .fail_closed(now, flow, Reason::InspectTimeout, out);
                        self.shared.end_if_closed(now, flow, out);
                        self.shared.arm(id, flow);
                        continue;
                    }
                }
            }
            if self.shared.deadline(flow) <= now {
                self.expire(now, id, EndReason::IdleTimeout, out);
            } else {
                self.shared.arm(id, flow);
            }
        }
    }

    /// Re-evaluates every decided flow after the policy changed; cuts the ones now denied (RST
    /// both ways, reason `policy_update`). A no-op when the version did not change.
    pub fn reevaluate(&mut self, now: Instant, out: &mut Output) {
        let policy = self.shared.policy.load_full();
        if policy.version() == self.shared.evaluated_version {
            return;
        }
        self.shared.evaluated_version = policy.version();
        for id in self.flows.ids() {
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            if flow.phase != Phase::Forwarding {
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
            self.shared.stats.policy_update_cuts += 1;
            let kind = decision.name.as_ref().map(|(n, k)| (n.clone(), *k));
            flow.decision = Some(Decision {
                verdict: Some(v),
                enforced: v.effective_action,
                reason,
                version: policy.version(),
                name: kind,
            });
            self.shared.emit_decision(now, flow, &policy, out);
            self.shared.reset(flow, true, true, out);
            self.shared.cut(flow, reason);
            self.shared.end_if_closed(now, flow, out);
            self.shared.arm(id, flow);
        }
    }

    /// Ends every flow: discards held data and writes the flow-end records (end reason
    /// `shutdown`). `replay` calls it at the end of the captures.
    pub fn shutdown(&mut self, now: Instant, out: &mut Output) {
        for id in self.flows.ids() {
            self.expire(now, id, EndReason::Shutdown, out);
        }
    }
}
