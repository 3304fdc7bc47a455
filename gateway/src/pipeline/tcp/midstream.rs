//! A TCP flow first seen without its SYN (the gateway restarted, a SYN was lost before it
//! started, or the flow expired; in a capture, one that starts after the handshake).
//!
//! - **The SYN-ACK is the first packet seen**: the handshake is still under way and the SYN-ACK
//!   tells everything the SYN would have: its receiver is the client, and its acknowledgment is
//!   the client's ISN + 1. The flow is decided as after a SYN ([`crate::pipeline::tcp::syn`]):
//!   by address when that is final, otherwise inspecting, its client data held until the name is
//!   known.
//! - **The first client data begins a ClientHello or an HTTP request line**
//!   ([`name::opens_hello_or_request`]): the name can still be read. The flow is *anchored*: that
//!   segment's first byte is stream offset 0, and the flow is inspected as after a SYN, with the
//!   same holding, reassembly, bounds and evasion checks. Client bytes before the anchor were
//!   never inspected: a segment that carries any of them is dropped until the server has
//!   acknowledged past the anchor, and a server that acknowledges client bytes beyond any the
//!   gateway holds while the hello is still held (its stream is not the one inspected) fails the
//!   flow closed (`midstream`). A permitted flow whose verdict was final by address is watched from the
//!   anchor, so that its record knows the name.
//! - **Otherwise** the flow is decided by address only. If the verdict would need a name, the
//!   flow fails closed (`midstream`): its client's first bytes are long gone. Data is dropped
//!   and, because the client would otherwise hang, both ends are reset.
//!
//! The ends are guessed from the ports (the lower port, below 1024, is the server's), and the
//! bytes must agree: a hello or request only anchors a flow when it comes from the side the
//! ports make the client. A segment without data, or server data, creates nothing while the
//! verdict needs a name: the client's first data decides. Under log-only the flow passes and the
//! record says what enforcement would have done.

use std::time::Instant;

use policy_engine::{Action, CompiledPolicy, Mode, SynDecision, Verdict};

use crate::record::Reason;
use crate::wire::{ChecksumStatus, IpProtocol, ParsedPacket, TcpSegment};

use crate::pipeline::flow::{FlowKey, Side};
use crate::pipeline::name::{self, Watch};
use crate::pipeline::state::{flow_query, Decision, Flow, Inspect, Phase, Record};
use crate::pipeline::{Disposition, DropReason, Output, PacketMeta, Pipeline, Shared};

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
        meta: PacketMeta,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        if seg.flags.syn() && seg.flags.ack() {
            return self.tcp_synack_first(now, key, side, p, seg, policy, out);
        }
        let mut flow = midstream_flow(now, side, p, seg);
        flow.count(side, p.packet.len() as u64, now);
        let q = flow_query(&flow, None);
        let opens = side == flow.client_side
            && !seg.payload.is_empty()
            && name::opens_hello_or_request(seg.payload);
        let (decision, name_decides) = match policy.evaluate_without_name(&q) {
            // Log-only never holds: a flow whose name can be read passes and is watched, and its
            // record waits for the name, as after a SYN.
            SynDecision::NeedsName if opens && policy.mode() == Mode::LogOnly => {
                (SynDecision::Final(policy.evaluate(&q)), true)
            }
            decision => (decision, false),
        };
        if matches!(decision, SynDecision::NeedsName)
            && (seg.payload.is_empty() || side != flow.client_side)
        {
            // A late ACK or FIN, or server data: nothing to decide or record yet; the client's
            // first data decides the flow.
            return Disposition::Drop(DropReason::FailClosed(Reason::Midstream));
        }
        if opens
            && matches!(decision, SynDecision::NeedsName)
            && !meta.partial_checksum()
            && p.verify_transport_checksum() == ChecksumStatus::Invalid
        {
            // Never anchor on (or inspect) bytes the receiver would discard.
            return Disposition::Drop(DropReason::BadChecksum);
        }
        let id = match self.new_flow(now, key, flow, out) {
            Ok(id) => id,
            Err(mut flow) => return self.shared.flow_limit(now, &mut flow, policy, p, out),
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let d = match decision {
            SynDecision::Final(v) => {
                let from_client = side == flow.client_side;
                self.shared.midstream_verdict(
                    now,
                    flow,
                    v,
                    name_decides,
                    (from_client, opens),
                    seg,
                    policy,
                    out,
                )
            }
            SynDecision::NeedsName if opens => {
                anchor(flow, seg, true);
                flow.phase = Phase::Inspecting;
                flow.inspect = Some(Box::new(Inspect::new(
                    self.shared.config.max_held_bytes_per_flow,
                )));
                self.shared.hold(now, flow, p, seg, meta, out)
            }
            SynDecision::NeedsName => self.shared.midstream_without_name(now, flow, policy, out),
        };
        self.shared.end_if_closed(now, flow, out);
        self.shared.arm(id, flow);
        d
    }

    /// A SYN-ACK on ports the table does not know: the handshake is under way, and the SYN-ACK
    /// names the client (its receiver) and the client's ISN + 1 (its acknowledgment). Decided as
    /// after the client's SYN.
    #[allow(clippy::too_many_arguments)]
    fn tcp_synack_first(
        &mut self,
        now: Instant,
        key: FlowKey,
        side: Side,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        let mut flow = Flow::new(
            now,
            p.dst,
            seg.dst_port,
            p.src,
            seg.src_port,
            side.other(),
            IpProtocol::Tcp,
        );
        flow.count(side, p.packet.len() as u64, now);
        flow.tcp.base = seg.ack;
        flow.tcp.client_next = seg.ack;
        flow.tcp.synced = true;
        flow.tcp.server_next = Some(seg.seq.wrapping_add(seg.seq_len()));
        flow.tcp.server_ack = Some(seg.ack);
        flow.tcp.established = true;
        flow.tcp.synack_seen = true;
        let q = flow_query(&flow, None);
        let (decision, name_decides) = match policy.evaluate_without_name(&q) {
            SynDecision::NeedsName if policy.mode() == Mode::LogOnly => {
                (SynDecision::Final(policy.evaluate(&q)), true)
            }
            decision => (decision, false),
        };
        let id = match self.new_flow(now, key, flow, out) {
            Ok(id) => id,
            Err(mut flow) => return self.shared.flow_limit(now, &mut flow, policy, p, out),
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let d = match decision {
            // The client's first bytes are still to come: watched from offset 0, as after a SYN.
            SynDecision::Final(v) => self.shared.midstream_verdict(
                now,
                flow,
                v,
                name_decides,
                (false, true),
                seg,
                policy,
                out,
            ),
            SynDecision::NeedsName => {
                flow.phase = Phase::Inspecting;
                flow.inspect = Some(self.shared.tcp_inspect(flow));
                Disposition::Forward
            }
        };
        self.shared.end_if_closed(now, flow, out);
        self.shared.arm(id, flow);
        d
    }
}

/// Takes the segment's first byte as stream offset 0 of the client's data. `strict` when the
/// verdict depends on what is read from here ([`crate::pipeline::state::TcpTrack::anchored`]).
pub(in crate::pipeline) fn anchor(flow: &mut Flow, seg: &TcpSegment<'_>, strict: bool) {
    flow.tcp.base = seg.seq;
    flow.tcp.client_next = seg.seq;
    flow.tcp.synced = true;
    flow.tcp.anchored = strict;
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
    /// A verdict by address alone on a flow seen mid-stream. `(from_client, opens)`: the segment
    /// comes from the client, and the first client bytes can still name the flow (they begin a
    /// hello or a request, or, after a SYN-ACK, are still to come): a permitted flow is then
    /// watched for its name, as after a SYN.
    #[allow(clippy::too_many_arguments)]
    fn midstream_verdict(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        v: Verdict,
        name_decides: bool,
        (from_client, opens): (bool, bool),
        seg: &TcpSegment<'_>,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        let log = self.decide_on_address(flow, v, policy);
        match v.effective_action {
            Action::Permit if opens || !from_client || seg.payload.is_empty() => {
                // Watched for the name: from this segment, or (no client data yet) from the
                // first client data, which anchors the stream if it opens a hello or a request
                // (see `Shared::forwarding_client_segment`).
                flow.phase = Phase::Forwarding;
                if opens && from_client {
                    anchor(flow, seg, false);
                }
                let mut i = Inspect::new(self.config.max_held_bytes_per_flow);
                // The first name is looked for at offset 0 (see `Shared::scan_watched`).
                i.watch = Some(Watch::Tls(0));
                flow.inspect = Some(Box::new(i));
                if log {
                    flow.record = Record::Owed { name_decides };
                }
                if opens && from_client {
                    return self.watch(now, flow, seg, policy, out);
                }
                Disposition::Forward
            }
            Action::Permit => {
                if log {
                    self.emit_decision(now, flow, policy, out);
                }
                flow.phase = Phase::Forwarding;
                Disposition::Forward
            }
            action => {
                if log {
                    self.emit_decision(now, flow, policy, out);
                }
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
            instance: policy.instance(),
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
