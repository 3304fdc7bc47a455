//! A TCP flow first seen mid-stream (no SYN: the gateway restarted, or the flow expired).
//!
//! Such a flow is decided by address only. If the verdict would need a name, the flow fails
//! closed (`midstream`): its client's first bytes are long gone, so the name cannot be known.
//! Data is dropped and, because the client would otherwise hang, both ends are reset. A segment
//! without data (a late ACK or FIN of a flow that expired) creates nothing: the first segment
//! with data decides. Under log-only the flow passes and the record says what enforcement would
//! have done.

use std::time::Instant;

use policy_engine::{Action, CompiledPolicy, Mode, SynDecision, Verdict};

use crate::record::Reason;
use crate::wire::{IpProtocol, ParsedPacket, TcpSegment};

use crate::pipeline::flow::{FlowKey, Side};
use crate::pipeline::state::{flow_query, Decision, Flow, Phase};
use crate::pipeline::{Disposition, DropReason, Output, Pipeline, Shared};

impl Pipeline {
    /// A segment other than a bare SYN (a SYN-ACK included) on ports the table does not know.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tcp_midstream(
        &mut self,
        now: Instant,
        key: FlowKey,
        side: Side,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        let mut flow = midstream_flow(now, side, p, seg);
        flow.count(side, p.packet.len() as u64, now);
        let decision = policy.evaluate_without_name(&flow_query(&flow, None));
        if seg.payload.is_empty() && matches!(decision, SynDecision::NeedsName) {
            // Seen mid-stream without data (a late ACK or FIN of a flow that expired): nothing to
            // decide or record yet; the first packet with data decides the flow (fail closed).
            return Disposition::Drop(DropReason::FailClosed(Reason::Midstream));
        }
        let id = match self.new_flow(now, key, flow, out) {
            Ok(id) => id,
            Err(mut flow) => return self.shared.flow_limit(now, &mut flow, policy, p, out),
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let d = match decision {
            SynDecision::Final(v) => self.shared.midstream_verdict(now, flow, v, policy, out),
            SynDecision::NeedsName => self.shared.midstream_without_name(now, flow, policy, out),
        };
        self.shared.end_if_closed(now, flow, out);
        self.shared.arm(id, flow);
        d
    }
}

/// The flow of a segment seen mid-stream, its ends guessed from the ports, with the sequence
/// numbers the segment shows.
fn midstream_flow(now: Instant, side: Side, p: &ParsedPacket<'_>, seg: &TcpSegment<'_>) -> Flow {
    let flags = seg.flags;
    if seg.src_port >= seg.dst_port || seg.src_port >= 1024 {
        let mut flow = Flow::new(
            now,
            p.src,
            seg.src_port,
            p.dst,
            seg.dst_port,
            side,
            IpProtocol::Tcp,
        );
        flow.tcp.client_next = seg.seq;
        flow.tcp.base = seg.seq;
        flow.tcp.server_next = flags.ack().then_some(seg.ack);
        flow.tcp.established = true;
        flow
    } else {
        // From a low port to a high one: the source is most likely the server.
        let mut flow = Flow::new(
            now,
            p.dst,
            seg.dst_port,
            p.src,
            seg.src_port,
            side.other(),
            IpProtocol::Tcp,
        );
        flow.tcp.server_next = Some(seg.seq.wrapping_add(seg.seq_len()));
        flow.tcp.client_next = seg.ack;
        flow.tcp.server_ack = flags.ack().then_some(seg.ack);
        flow.tcp.established = true;
        flow
    }
}

impl Shared {
    /// A verdict by address alone on a flow seen mid-stream.
    fn midstream_verdict(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        v: Verdict,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        let log = self.decide_on_address(flow, v, policy);
        if log {
            self.emit_decision(now, flow, policy, out);
        }
        match v.effective_action {
            Action::Permit => {
                flow.phase = Phase::Forwarding;
                Disposition::Forward
            }
            action => {
                flow.phase = Phase::Blocked;
                if action == Action::Reject {
                    self.reset(flow, true, true, out);
                }
                Disposition::Drop(DropReason::Policy)
            }
        }
    }

    /// The verdict needs the name, which cannot be known any more: fail closed.
    fn midstream_without_name(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        flow.decision = Some(Decision {
            verdict: None,
            enforced: Action::Reject,
            reason: Reason::Midstream,
            version: policy.version(),
            name: None,
        });
        if policy.mode() == Mode::LogOnly {
            flow.phase = Phase::Forwarding;
            self.emit_decision(now, flow, policy, out);
            return Disposition::Forward;
        }
        self.stats.fail_closed += 1;
        self.emit_decision(now, flow, policy, out);
        self.reset(flow, true, true, out);
        self.cut(flow, Reason::Midstream);
        Disposition::Drop(DropReason::FailClosed(Reason::Midstream))
    }
}
