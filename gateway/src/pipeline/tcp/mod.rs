//! TCP.

mod established;
mod reset;
mod syn;

use std::time::Instant;

use crate::record::EndReason;
use crate::wire::{IpProtocol, ParsedPacket, TcpSegment};

use super::flow::FlowKey;
use super::state::{Phase, RstSeen};
use super::{Disposition, DropReason, Output, PacketMeta, Pipeline};

impl Pipeline {
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
}
