//! UDP, ICMP and other protocols: decided on the first packet, by address and port.
//!
//! UDP 443 is QUIC: a flow whose verdict needs a name is inspected ([`super::quic`]), or refused
//! outright under `quic = "block"` (under log-only, which never holds, it passes and its Initials
//! are read as they pass, for the record). Elsewhere a verdict that needs a name is given without
//! it, with reason `not_tls`. A rejected flow
//! answers each client packet with an ICMP administratively-prohibited error (port unreachable on
//! UDP 443, which makes QUIC clients fall back to TCP). These flows end on their idle timeout.
//!
//! An ICMP error (unreachable, fragmentation needed / packet too big, time exceeded, parameter
//! problem) belongs to the flow of the packet it quotes: it passes when that flow is forwarded,
//! so that path MTU discovery keeps working, and is dropped otherwise.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use policy_engine::{Action, CompiledPolicy, Mode, QuicMode, SynDecision};

use crate::inspect::quic::InitialCollector;
use crate::record::Reason;
use crate::wire::{IpProtocol, ParsedPacket, UdpDatagram, Unreachable};

use super::decide::rule_reason;
use super::flow::{FlowKey, Side};
use super::quic::{is_long_header, QUIC_PORT};
use super::state::{flow_query, Decision, Flow, Inspect, Phase, Record};
use super::{Disposition, DropReason, Output, PacketMeta, Pipeline, Shared};

impl Pipeline {
    /// An ICMP error (unreachable, fragmentation needed / packet too big, time exceeded,
    /// parameter problem) belongs to the flow of the packet it quotes: it passes when that flow is
    /// allowed (path MTU discovery must keep working), and is dropped otherwise.
    pub(super) fn icmp_error(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        quoted: &[u8],
    ) -> Disposition {
        let Some((proto, src, sport, dst, dport)) = quoted_flow(quoted) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let (key, _) = FlowKey::new(proto.number(), src, sport, dst, dport);
        let Some(id) = self.flows.lookup(&key) else {
            return Disposition::Drop(DropReason::Policy);
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Policy);
        };
        if flow.phase != Phase::Forwarding {
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

    /// A UDP datagram: to or from port 443 it may be QUIC, whose Initials name the flow
    /// ([`super::quic`]); everything else is decided on its first packet.
    pub(super) fn udp(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        u: &UdpDatagram<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let (sport, dport) = (u.src_port, u.dst_port);
        if sport != QUIC_PORT && dport != QUIC_PORT {
            let d = self.datagram(now, p, sport, dport, out);
            if d == Disposition::Forward && super::dnscheck::is_dns(IpProtocol::Udp, sport, dport) {
                self.shared.dns_observe(now, p, u);
            }
            return d;
        }
        let (key, side) = FlowKey::new(IpProtocol::Udp.number(), p.src, sport, p.dst, dport);
        let Some(id) = self.flows.lookup(&key) else {
            return self.quic_new(now, p, u, (key, side), meta, out);
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let from_client = side == flow.client_side;
        let len = p.packet.len() as u64;
        let d = match flow.phase {
            Phase::Inspecting if from_client => {
                flow.count(side, len, now);
                self.shared.quic_hold(now, flow, p, u.payload, meta, out)
            }
            // The server has nothing to answer before the client's Initials are released.
            Phase::Inspecting => {
                flow.count(side, len, now);
                Disposition::Drop(DropReason::Policy)
            }
            Phase::Forwarding
                if from_client && flow.inspect.is_some() && is_long_header(u.payload) =>
            {
                flow.count(side, len, now);
                self.shared.quic_recheck(now, flow, p, u.payload, meta, out)
            }
            _ => return self.datagram(now, p, sport, dport, out),
        };
        self.shared.arm(id, flow);
        d
    }

    /// The first datagram of a UDP 443 flow: inspected when the verdict needs the name (under
    /// log-only, which never holds, the flow passes and its Initials are read as they pass).
    fn quic_new(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        u: &UdpDatagram<'_>,
        (key, side): (FlowKey, Side),
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let (sport, dport) = (u.src_port, u.dst_port);
        let policy = self.shared.policy.load_full();
        let mut flow = Flow::new(now, p.src, sport, p.dst, dport, side, IpProtocol::Udp);
        if dport == QUIC_PORT && policy.quic() == QuicMode::Block && is_long_header(u.payload) {
            return self.quic_block(now, p, key, flow, &policy, out);
        }
        let needs_name = matches!(
            policy.evaluate_without_name(&flow_query(&flow, None)),
            SynDecision::NeedsName
        );
        if dport != QUIC_PORT || !needs_name {
            return self.datagram(now, p, sport, dport, out);
        }
        if policy.mode() == Mode::LogOnly {
            return self.quic_log_only(now, p, u, key, flow, &policy, out);
        }
        flow.count(flow.client_side, p.packet.len() as u64, now);
        self.shared.quic_start(&mut flow);
        match self.new_flow(now, key, flow, out) {
            Ok(id) => {
                let Some(flow) = self.flows.get_mut(id) else {
                    return Disposition::Drop(DropReason::Malformed);
                };
                let d = self.shared.quic_hold(now, flow, p, u.payload, meta, out);
                self.shared.arm(id, flow);
                d
            }
            Err(mut flow) => {
                self.shared.drop_inspect(&mut flow);
                self.shared.flow_limit(now, &mut flow, &policy, p, out)
            }
        }
    }

    /// Log-only, a new UDP 443 flow whose verdict needs the name: it passes, decided by address
    /// for now, with its decision record owed until its Initials name it (or prove they cannot).
    #[allow(clippy::too_many_arguments)]
    fn quic_log_only(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        u: &UdpDatagram<'_>,
        key: FlowKey,
        mut flow: Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        flow.count(flow.client_side, p.packet.len() as u64, now);
        let v = policy.evaluate(&flow_query(&flow, None));
        flow.decision = Some(Decision {
            verdict: Some(v),
            enforced: v.effective_action,
            // What the record says if no name is ever read.
            reason: Reason::NoSni,
            version: policy.version(),
            instance: policy.instance(),
            name: None,
        });
        self.shared.count_decision(v.effective_action);
        flow.phase = Phase::Forwarding;
        flow.record = Record::Owed { name_decides: true };
        let mut insp = Inspect::new(0);
        insp.quic = Some(Box::new(InitialCollector::new()));
        flow.inspect = Some(Box::new(insp));
        match self.new_flow(now, key, flow, out) {
            Ok(id) => {
                let Some(flow) = self.flows.get_mut(id) else {
                    return Disposition::Drop(DropReason::Malformed);
                };
                let d = self.shared.quic_observe(now, flow, u.payload, out);
                self.shared.arm(id, flow);
                d
            }
            Err(mut flow) => {
                self.shared.drop_inspect(&mut flow);
                self.shared.flow_limit(now, &mut flow, policy, p, out)
            }
        }
    }

    /// `quic = "block"`: a new flow that opens with a QUIC long header is refused with ICMP port
    /// unreachable (the client falls back to TCP), whatever the rules say; log-only records it
    /// and lets it pass.
    fn quic_block(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        key: FlowKey,
        mut flow: Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Disposition {
        let log_only = policy.mode() == Mode::LogOnly;
        let enforced = if log_only {
            Action::Permit
        } else {
            Action::Reject
        };
        flow.count(flow.client_side, p.packet.len() as u64, now);
        flow.decision = Some(Decision {
            verdict: None,
            enforced,
            reason: Reason::QuicBlocked,
            version: policy.version(),
            instance: policy.instance(),
            name: None,
        });
        self.shared.count_decision(enforced);
        match self.new_flow(now, key, flow, out) {
            Ok(id) => {
                let Some(flow) = self.flows.get_mut(id) else {
                    return Disposition::Drop(DropReason::Malformed);
                };
                flow.phase = if log_only {
                    Phase::Forwarding
                } else {
                    Phase::Blocked
                };
                self.shared.emit_decision(now, flow, policy, out);
                self.shared.arm(id, flow);
            }
            Err(mut flow) => return self.shared.flow_limit(now, &mut flow, policy, p, out),
        }
        if log_only {
            return Disposition::Forward;
        }
        self.shared.icmp_refuse(p.packet, Unreachable::Port, out);
        Disposition::Drop(DropReason::Policy)
    }

    /// A UDP, ICMP (not an error) or other packet: its flow is decided on its first packet.
    pub(super) fn datagram(
        &mut self,
        now: Instant,
        p: &ParsedPacket<'_>,
        sport: u16,
        dport: u16,
        out: &mut Output,
    ) -> Disposition {
        let proto = p.protocol;
        let (key, side) = FlowKey::new(proto.number(), p.src, sport, p.dst, dport);
        let len = p.packet.len() as u64;
        if let Some(id) = self.flows.lookup(&key) {
            let Some(flow) = self.flows.get_mut(id) else {
                return Disposition::Drop(DropReason::Malformed);
            };
            flow.count(side, len, now);
            return match flow.phase {
                Phase::Forwarding => Disposition::Forward,
                _ => {
                    if side == flow.client_side && flow.enforced() == Some(Action::Reject) {
                        self.shared.refuse(flow, p.packet, out);
                    }
                    Disposition::Drop(DropReason::Policy)
                }
            };
        }
        let policy = self.shared.policy.load_full();
        let mut flow = Flow::new(now, p.src, sport, p.dst, dport, side, proto);
        flow.count(side, len, now);
        let q = flow_query(&flow, None);
        let needs_name = matches!(policy.evaluate_without_name(&q), SynDecision::NeedsName);
        let v = policy.evaluate(&q);
        let reason = if needs_name {
            if proto == IpProtocol::Udp && dport == 443 {
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
            instance: policy.instance(),
            name: None,
        });
        self.shared.count_decision(v.effective_action);
        let must_log = self.shared.must_log(&v);
        let enforced = v.effective_action;
        let kind = refusal(&flow);
        match self.new_flow(now, key, flow, out) {
            Ok(id) => {
                let Some(flow) = self.flows.get_mut(id) else {
                    return Disposition::Drop(DropReason::Malformed);
                };
                flow.phase = if enforced == Action::Permit {
                    Phase::Forwarding
                } else {
                    Phase::Blocked
                };
                if must_log {
                    self.shared.emit_decision(now, flow, &policy, out);
                }
                self.shared.arm(id, flow);
            }
            Err(mut flow) => {
                return self.shared.flow_limit(now, &mut flow, &policy, p, out);
            }
        }
        match enforced {
            Action::Permit => Disposition::Forward,
            Action::Deny => Disposition::Drop(DropReason::Policy),
            Action::Reject => {
                self.shared.icmp_refuse(p.packet, kind, out);
                Disposition::Drop(DropReason::Policy)
            }
        }
    }
}

/// The ICMP error that refuses a flow's packets: port unreachable for QUIC (UDP to 443), so that
/// the client falls back to TCP at once; administratively prohibited otherwise.
fn refusal(flow: &Flow) -> Unreachable {
    if flow.proto == IpProtocol::Udp && flow.server.port() == QUIC_PORT {
        Unreachable::Port
    } else {
        Unreachable::Prohibited
    }
}

impl Shared {
    /// Answers a client packet of a rejected flow with the flow's ICMP error ([`refusal`]).
    pub(super) fn refuse(&mut self, flow: &Flow, offending: &[u8], out: &mut Output) {
        self.icmp_refuse(offending, refusal(flow), out);
    }
}

/// ICMP error types (RFC 792, RFC 4443 2.1: ICMPv6 types below 128).
pub(super) fn icmp_is_error(v6: bool, msg_type: u8) -> bool {
    if v6 {
        msg_type < 128
    } else {
        matches!(msg_type, 3 | 4 | 5 | 11 | 12)
    }
}

/// The flow of the packet an ICMP error quotes: (protocol, source, source port, destination,
/// destination port), ports 0 for protocols without ports. Only the fixed headers are read (an
/// error quotes at least the IP header and 8 bytes of the transport header).
pub(super) fn quoted_flow(q: &[u8]) -> Option<(IpProtocol, IpAddr, u16, IpAddr, u16)> {
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
    let proto = IpProtocol::from(proto);
    let (sport, dport) = match proto {
        IpProtocol::Tcp | IpProtocol::Udp => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_flows_are_read_from_truncated_quotes() {
        let mut q = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 1,
        ];
        q.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1]);
        let (proto, s, sp, d, dp) = quoted_flow(&q).unwrap();
        assert_eq!((proto, sp, dp), (IpProtocol::Tcp, 40000, 443));
        assert_eq!(
            (s.to_string(), d.to_string()),
            ("10.0.0.1".into(), "192.0.2.1".into())
        );
        assert_eq!(quoted_flow(&q[..22]), None);
        assert_eq!(quoted_flow(&[]), None);
        assert_eq!(quoted_flow(&[0x4f; 30]), None);
    }
}
