//! TCP: a segment finds its flow, or opens one.
//!
//! - [`syn`]: a client's SYN creates the flow and decides it by address, or leaves it
//!   inspecting until its name is known.
//! - [`midstream`]: a flow first seen without its SYN is decided by address only.
//! - [`established`]: every later segment: connection tracking, then what the flow's phase
//!   says (hold while inspecting, watch while forwarding, drop when blocked or cut).
//! - [`reset`]: the RSTs the gateway sends.
//!
//! The common case stays in [`Pipeline::tcp`] and allocates nothing: a segment without SYN, FIN
//! or RST on a settled flow (forwarded, nothing left to inspect or record) only moves the
//! counters and the tracked sequence numbers.
//!
//! A new SYN on ports whose connection is over (a RST, FINs both ways, or a new ISN) ends the old
//! flow and starts a new one, decided afresh. A SYN from the server side of a flow whose first
//! SYN came from the other end makes its sender the client: the side whose data is inspected is
//! never chosen by whoever spoke first.

mod established;
mod midstream;
mod reset;
mod syn;

use std::time::Instant;

use policy_engine::{Action, CompiledPolicy, SynDecision, Verdict};

use crate::record::EndReason;
use crate::wire::{IpProtocol, ParsedPacket, TcpSegment};

use super::decide::rule_reason;
use super::fastpath::Offload;
use super::flow::{FlowKey, Side};
use super::state::{flow_query, Decision, Flow, Phase, RstSeen};
use super::{Disposition, DropReason, Output, PacketMeta, Pipeline, Shared};

impl Pipeline {
    /// A TCP segment (not an IP fragment).
    pub(in crate::pipeline) fn tcp(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let (key, side) = FlowKey::new(
            IpProtocol::Tcp.number(),
            p.src,
            seg.src_port,
            p.dst,
            seg.dst_port,
        );
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
            if flow.offload.is_none() && self.shared.config.fast_path {
                self.shared.consider_handoff(flow, out);
            }
            if flow.timer_at.is_none() {
                self.shared.arm(id, flow);
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
            if flow.tcp.synack_seen || matches!(flow.phase, Phase::Blocked | Phase::Cut(_)) {
                // A SYN from the server of an established flow is bogus.
                return Disposition::Drop(DropReason::OutOfState);
            }
            // The first SYN came from the other end (or a forged one did): the flow is decided
            // again with this SYN's sender as the client, so the side whose data is inspected is
            // never chosen by whoever spoke first.
            self.expire(now, id, EndReason::Shutdown, out);
            return self.tcp_new(now, key, side, p, seg, meta, out);
        }
        if matches!(flow.offload.get(), Offload::Back { rst_owed: true, .. })
            && matches!(flow.phase, Phase::Cut(_))
        {
            // Taken back from the kernel after a policy update: the first packet back.
            let r = self.shared.reset_taken_back(flow, from_client, seg, out);
            return Disposition::Drop(r);
        }
        if flow.record.ended() {
            flow.last_seen = now;
        } else {
            flow.count(side, p.packet.len() as u64, now);
        }
        let before = (
            flow.tcp.fin_client,
            flow.tcp.fin_server,
            flow.tcp.rst != RstSeen::None,
            flow.phase,
        );
        let d = self
            .shared
            .tcp_existing(now, flow, from_client, p, seg, meta, out);
        self.shared.end_if_closed(now, flow, out);
        let after = (
            flow.tcp.fin_client,
            flow.tcp.fin_server,
            flow.tcp.rst != RstSeen::None,
            flow.phase,
        );
        if before != after || flow.phase == Phase::Inspecting || flow.timer_at.is_none() {
            self.shared.arm(id, flow);
        }
        d
    }

    /// The first segment of a flow the table does not know.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::pipeline) fn tcp_new(
        &mut self,
        now: Instant,
        key: FlowKey,
        side: Side,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let policy = self.shared.policy.load_full();
        if seg.flags.rst() {
            // A reset of a flow the gateway does not know: nothing to protect, nothing to track.
            let flow = Flow::new(
                now,
                p.src,
                seg.src_port,
                p.dst,
                seg.dst_port,
                side,
                IpProtocol::Tcp,
            );
            return match policy.evaluate_without_name(&flow_query(&flow, None)) {
                SynDecision::Final(v) if v.effective_action == Action::Permit => {
                    Disposition::Forward
                }
                _ => Disposition::Drop(DropReason::Policy),
            };
        }
        if seg.flags.syn() && !seg.flags.ack() {
            self.tcp_syn(now, key, side, p, seg, meta, &policy, out)
        } else {
            self.tcp_midstream(now, key, side, p, seg, meta, &policy, out)
        }
    }
}

impl Shared {
    /// Gives a new flow its verdict by address (no name) and counts it. True when the decision
    /// must be recorded.
    fn decide_on_address(&mut self, flow: &mut Flow, v: Verdict, policy: &CompiledPolicy) -> bool {
        flow.decision = Some(Decision {
            verdict: Some(v),
            enforced: v.effective_action,
            reason: rule_reason(&v),
            version: policy.version(),
            instance: policy.instance(),
            name: None,
        });
        self.count_decision(v.effective_action);
        self.must_log(&v)
    }
}
