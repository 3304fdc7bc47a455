//! A TCP segment that opens a flow.

use std::time::Instant;

use policy_engine::{Action, Mode, SynDecision};

use crate::record::Reason;
use crate::wire::{ChecksumStatus, IpProtocol, ParsedPacket, RstTarget, TcpSegment};

use crate::pipeline::decide::rule_reason;
use crate::pipeline::flow::{FlowKey, Side};
use crate::pipeline::name::{self, Found};
use crate::pipeline::state::{flow_query, Decision, Flow, Inspect, Phase, Record};
use crate::pipeline::{Disposition, DropReason, Output, PacketMeta, Pipeline};

impl Pipeline {
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
        let flags = seg.flags;
        let policy = self.shared.policy.load_full();
        let syn = flags.syn() && !flags.ack();
        if flags.rst() {
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
        let mut flow = if syn || seg.src_port >= seg.dst_port || seg.src_port >= 1024 {
            Flow::new(
                now,
                p.src,
                seg.src_port,
                p.dst,
                seg.dst_port,
                side,
                IpProtocol::Tcp,
            )
        } else {
            // Mid-stream, from a low port to a high one: the source is most likely the server.
            let other = if side == Side::Lo { Side::Hi } else { Side::Lo };
            Flow::new(
                now,
                p.dst,
                seg.dst_port,
                p.src,
                seg.src_port,
                other,
                IpProtocol::Tcp,
            )
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
        let mut name_decides = false;
        if syn && policy.mode() == Mode::LogOnly && matches!(decision, SynDecision::NeedsName) {
            // Log-only never holds traffic: the flow passes and is watched; its record is
            // written with the verdict for the name once the name is seen.
            decision = SynDecision::Final(policy.evaluate(&q));
            name_decides = true;
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
            Err(mut flow) => return self.shared.flow_limit(now, &mut flow, &policy, p, out),
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
                self.shared.count_decision(v.effective_action);
                let log = self.shared.must_log(&v);
                match v.effective_action {
                    Action::Permit => {
                        flow.phase = Phase::Forwarding;
                        if syn {
                            // Watch the first client bytes without holding them, so the record
                            // and later re-evaluations know the name.
                            let mut i = Inspect::new(self.shared.config.max_held_bytes_per_flow);
                            i.watching = true;
                            flow.inspect = Some(Box::new(i));
                            // Log-only reports every verdict (none is enforced), so a record
                            // whose reason the name decides is always owed.
                            debug_assert!(log || !name_decides);
                            if log {
                                flow.record = Record::Owed { name_decides };
                            }
                            if !seg.payload.is_empty() {
                                self.shared.watch(now, flow, seg, &policy, out);
                            }
                        } else if log {
                            self.shared.emit_decision(now, flow, &policy, out);
                        }
                        Disposition::Forward
                    }
                    action => {
                        if log {
                            self.shared.emit_decision(now, flow, &policy, out);
                        }
                        flow.phase = Phase::Blocked;
                        if action == Action::Reject {
                            if syn {
                                let fs = flow.flow_seq(seg.payload.len() as u32);
                                self.shared.push_rst(&fs, RstTarget::Client, out);
                            } else {
                                self.shared.reset(flow, true, true, out);
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
                    flow.phase = Phase::Forwarding;
                    self.shared.emit_decision(now, flow, &policy, out);
                    Disposition::Forward
                } else {
                    self.shared.stats.fail_closed += 1;
                    self.shared.emit_decision(now, flow, &policy, out);
                    self.shared.reset(flow, true, true, out);
                    self.shared.cut(flow, Reason::Midstream);
                    Disposition::Drop(DropReason::FailClosed(Reason::Midstream))
                }
            }
            SynDecision::NeedsName => match syn_found {
                Some(found) => {
                    flow.tcp.client_next = flow.tcp.base.wrapping_add(seg.payload.len() as u32);
                    let v = self.shared.decide_found(now, flow, &found, &policy, out);
                    match v {
                        Action::Permit => {
                            let mut i = Inspect::new(self.shared.config.max_held_bytes_per_flow);
                            let _ = i.buf.insert(0, seg.payload);
                            self.shared.account(i.buf.stored() as isize);
                            self.shared.start_watch(&mut i, &found);
                            flow.inspect = Some(Box::new(i));
                            Disposition::Forward
                        }
                        Action::Deny => Disposition::Drop(DropReason::Policy),
                        Action::Reject => {
                            let fs = flow.flow_seq(0);
                            self.shared.push_rst(&fs, RstTarget::Client, out);
                            Disposition::Drop(DropReason::Policy)
                        }
                    }
                }
                None => {
                    flow.phase = Phase::Inspecting;
                    flow.inspect = Some(Box::new(Inspect::new(
                        self.shared.config.max_held_bytes_per_flow,
                    )));
                    Disposition::Forward
                }
            },
        };
        self.shared.end_if_closed(now, flow, out);
        self.shared.arm(id, flow);
        d
    }
}
