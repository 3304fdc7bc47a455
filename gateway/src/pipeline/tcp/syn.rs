//! A client's SYN: the flow is created and decided by address, or held for its name.
//!
//! The policy is asked [`CompiledPolicy::evaluate_without_name`]. A `Final` verdict is applied at
//! once: permit forwards the SYN (and watches the first client bytes without holding them, so
//! that the record and later re-evaluations know the name); deny drops it silently; reject
//! answers it with a RST to the client. `NeedsName`: the handshake passes and the flow is
//! [`Phase::Inspecting`]: its client data is held until the name is known
//! ([`crate::pipeline::decide`]).
//!
//! Log-only never holds anything: a verdict that needs the name is replaced by the verdict
//! without it, the flow passes and is watched, and its record waits for the name, which decides
//! the reason reported as enforcement would have ([`Record::Owed`]).
//!
//! Data on the SYN (TCP Fast Open) when the verdict needs the name: if it holds a complete
//! ClientHello or request head the flow is decided on the SYN; if not, the SYN is dropped
//! without creating the flow (`syn_data`): the client's SYN retransmission carries no data, and
//! the hello then comes after the handshake.

use std::time::Instant;

use policy_engine::{Action, CompiledPolicy, Mode, SynDecision, Verdict};

use crate::wire::{ChecksumStatus, IpProtocol, ParsedPacket, RstTarget, TcpSegment};

use crate::pipeline::flow::{FlowKey, Side};
use crate::pipeline::name::{self, Found, Watch};
use crate::pipeline::state::{flow_query, Flow, Inspect, Phase, Record};
use crate::pipeline::{Disposition, DropReason, Output, PacketMeta, Pipeline, Shared};

impl Pipeline {
    /// A client's SYN (without ACK) on ports the table does not know.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tcp_syn(
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
        let mut flow = Flow::new(
            now,
            p.src,
            seg.src_port,
            p.dst,
            seg.dst_port,
            side,
            IpProtocol::Tcp,
        );
        flow.count(side, p.packet.len() as u64, now);
        flow.tcp.base = seg.seq.wrapping_add(1);
        flow.tcp.client_next = flow.tcp.base;
        flow.tcp.synced = true;
        let q = flow_query(&flow, None);
        let (decision, name_decides) = match policy.evaluate_without_name(&q) {
            // Log-only never holds traffic: the flow passes and is watched; its record is
            // written with the verdict for the name once the name is seen.
            SynDecision::NeedsName if policy.mode() == Mode::LogOnly => {
                (SynDecision::Final(policy.evaluate(&q)), true)
            }
            decision => (decision, false),
        };

        // Data on the SYN (TCP Fast Open) when the verdict needs the name: decide on it now if
        // it holds a complete hello; otherwise drop the SYN and let the client retry without data.
        let mut syn_found = None;
        if !seg.payload.is_empty() && matches!(decision, SynDecision::NeedsName) {
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
            Err(mut flow) => return self.shared.flow_limit(now, &mut flow, policy, p, out),
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let d = match (decision, syn_found) {
            (SynDecision::Final(v), _) => {
                self.shared
                    .syn_verdict(now, flow, v, name_decides, seg, policy, out)
            }
            (SynDecision::NeedsName, Some(found)) => self
                .shared
                .syn_data_decides(now, flow, &found, seg, policy, out),
            (SynDecision::NeedsName, None) => {
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

impl Shared {
    /// A verdict on the SYN by address alone.
    #[allow(clippy::too_many_arguments)]
    fn syn_verdict(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        v: Verdict,
        name_decides: bool,
        seg: &TcpSegment<'_>,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        let log = self.decide_on_address(flow, v, policy);
        match v.effective_action {
            Action::Permit => {
                flow.phase = Phase::Forwarding;
                // Watch the first client bytes without holding them, so the record and later
                // re-evaluations know the name.
                let mut i = Inspect::new(self.config.max_held_bytes_per_flow);
                // The first name is looked for at offset 0 (see `Shared::scan_watched`).
                i.watch = Some(Watch::Tls(0));
                flow.inspect = Some(Box::new(i));
                // Log-only reports every verdict (none is enforced), so a record whose reason
                // the name decides is always owed.
                debug_assert!(log || !name_decides);
                if log {
                    flow.record = Record::Owed { name_decides };
                }
                if !seg.payload.is_empty() {
                    self.watch(now, flow, seg, policy, out);
                }
                Disposition::Forward
            }
            action => {
                if log {
                    self.emit_decision(now, flow, policy, out);
                }
                flow.phase = Phase::Blocked;
                if action == Action::Reject {
                    let fs = flow.flow_seq(seg.payload.len() as u32);
                    self.push_rst(&fs, RstTarget::Client, out);
                }
                Disposition::Drop(DropReason::Policy)
            }
        }
    }

    /// The data on a SYN named the flow (or proved it nameless): decide on it now.
    fn syn_data_decides(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        seg: &TcpSegment<'_>,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        flow.tcp.client_next = flow.tcp.base.wrapping_add(seg.payload.len() as u32);
        match self.decide_found(now, flow, found, policy, out) {
            Action::Permit => {
                let mut i = Inspect::new(self.config.max_held_bytes_per_flow);
                let _ = i.buf.insert(0, seg.payload);
                self.account(i.buf.stored() as isize);
                self.start_watch(&mut i, found);
                flow.inspect = Some(Box::new(i));
                Disposition::Forward
            }
            Action::Deny => Disposition::Drop(DropReason::Policy),
            Action::Reject => {
                let fs = flow.flow_seq(0);
                self.push_rst(&fs, RstTarget::Client, out);
                Disposition::Drop(DropReason::Policy)
            }
        }
    }
}
