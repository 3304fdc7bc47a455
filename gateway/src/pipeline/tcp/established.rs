//! Every TCP segment after the first of its flow: connection tracking, then what the flow's
//! phase says.
//!
//! - **Inspecting**: client segments that carry data (or a FIN) are held and reassembled
//!   ([`crate::pipeline::decide`]); a client segment with a bad checksum is dropped and counted
//!   (unless the packet's metadata leaves the checksum to offload) and never inspected, so a
//!   bogus hello sent ahead of the real one cannot decide the flow. Server data before the
//!   server answered the SYN is dropped (`out_of_state`). A client RST frees what was held:
//!   anything sent again on these ports is inspected from scratch.
//! - **Forwarding**: client data goes through the watch ([`crate::pipeline::watch`]) while
//!   reassembled bytes are kept; server acknowledgments let them go.
//! - **Blocked**: everything is dropped; a rejected client that retries its SYN gets another RST.
//! - **Cut**: everything is dropped.

use std::time::Instant;

use policy_engine::Action;

use crate::record::Reason;
use crate::wire::{ChecksumStatus, ParsedPacket, RstTarget, TcpFlowSeq, TcpSegment};

use crate::pipeline::name;
use crate::pipeline::state::{seq_gt, Flow, Phase, RstSeen};
use crate::pipeline::tcp::midstream::anchor;
use crate::pipeline::{Disposition, DropReason, Output, PacketMeta, Shared};

impl Shared {
    /// Everything after the first packet of a TCP flow.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::pipeline) fn tcp_existing(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        from_client: bool,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        track(flow, from_client, seg);
        match flow.phase {
            Phase::Cut(_) => Disposition::Drop(DropReason::Cut),
            Phase::Blocked => {
                if from_client && seg.flags.syn() && flow.enforced() == Some(Action::Reject) {
                    let fs = TcpFlowSeq {
                        client_next_seq: seg.seq.wrapping_add(seg.seq_len()),
                        server_next_seq: None,
                        ..flow.flow_seq(0)
                    };
                    self.push_rst(&fs, RstTarget::Client, out);
                }
                // Server packets are dropped too: nothing must reach a client that was cut off.
                Disposition::Drop(DropReason::Policy)
            }
            Phase::Forwarding if from_client => {
                self.forwarding_client_segment(now, flow, p, seg, meta, out)
            }
            Phase::Forwarding => {
                if flow.inspect.is_some() {
                    self.maybe_release_guard(flow);
                }
                Disposition::Forward
            }
            Phase::Inspecting if from_client => {
                self.inspecting_client_segment(now, flow, p, seg, meta, out)
            }
            Phase::Inspecting => {
                if flow.tcp.anchored && acks_unseen_bytes(flow) {
                    // Met mid-stream and anchored on a hello the gateway still holds, yet the
                    // server acknowledges client bytes past any the gateway has seen: the
                    // server's stream is not the one inspected. (Acknowledgments of held bytes
                    // are what a capture shows, the server having had them; the live gateway
                    // never forwards them, so it never sees those.)
                    return self.fail_closed(now, flow, Reason::Midstream, out);
                }
                if !seg.payload.is_empty() && !flow.tcp.synack_seen {
                    // Data from the server before it answered the SYN: the two ends do not agree
                    // on who opened the flow. Nothing passes until the name is known.
                    return Disposition::Drop(DropReason::OutOfState);
                }
                Disposition::Forward
            }
        }
    }

    /// A client segment of an allowed flow: watched while reassembled bytes are kept.
    fn forwarding_client_segment(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        if flow.inspect.is_some() && !seg.payload.is_empty() {
            if !meta.partial_checksum() && p.verify_transport_checksum() == ChecksumStatus::Invalid
            {
                // The receiver discards it too: never let it reach the inspector.
                return Disposition::Drop(DropReason::BadChecksum);
            }
            let policy = self.policy.load_full();
            if !flow.tcp.synced {
                // Met mid-stream and permitted by address: its first client data is seen only
                // now. The name can be read if they open a hello or a request; otherwise it is
                // never known, and the record owed is written without it.
                if name::opens_hello_or_request(seg.payload) {
                    anchor(flow, seg, false);
                } else {
                    if let Some(insp) = flow.inspect.as_mut() {
                        insp.watch = None;
                    }
                    self.finish_watch_if_done(now, flow, &policy, out);
                    self.drop_inspect(flow);
                    return Disposition::Forward;
                }
            }
            if flow.tcp.anchored && before_anchor(flow, seg) {
                // Bytes ahead of what was inspected (see `TcpTrack::anchored`).
                return Disposition::Drop(DropReason::OutOfState);
            }
            let d = self.watch(now, flow, seg, &policy, out);
            if d != Disposition::Forward {
                return d;
            }
        }
        let end = seg.seq.wrapping_add(seg.seq_len());
        if !seg.flags.rst() && seq_gt(end, flow.tcp.client_next) {
            flow.tcp.client_next = end;
        }
        Disposition::Forward
    }

    /// A client segment of a flow whose name is not known yet: held if it carries data or a FIN.
    fn inspecting_client_segment(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let flags = seg.flags;
        if seg.payload.is_empty() && !flags.fin() {
            if flags.rst() {
                // The connection is gone: free what it held; anything the client sends on these
                // ports again is inspected from scratch.
                self.drop_inspect(flow);
                flow.inspect = Some(self.tcp_inspect(flow));
                // Still seen, but no longer taken as the end of the connection.
                flow.tcp.rst = RstSeen::Any;
            }
            return Disposition::Forward;
        }
        if !flow.tcp.synced {
            return Disposition::Drop(DropReason::FailClosed(Reason::Midstream));
        }
        if flow.tcp.anchored && before_anchor(flow, seg) {
            // Bytes ahead of the hello or request the flow is inspected on (see
            // `TcpTrack::anchored`): the server must never get them before it.
            return Disposition::Drop(DropReason::OutOfState);
        }
        if !meta.partial_checksum() && p.verify_transport_checksum() == ChecksumStatus::Invalid {
            return Disposition::Drop(DropReason::BadChecksum);
        }
        self.hold(now, flow, p, seg, meta, out)
    }
}

/// True when the server's last acknowledgment covers client bytes beyond the furthest the
/// gateway holds of an anchored flow.
fn acks_unseen_bytes(flow: &Flow) -> bool {
    let (Some(ack), Some(insp)) = (flow.tcp.server_ack, flow.inspect.as_ref()) else {
        return false;
    };
    let seen = insp
        .held
        .iter()
        .map(|h| h.offset + h.len as i64)
        .max()
        .unwrap_or(0);
    i64::from(ack.wrapping_sub(flow.tcp.base) as i32) > seen
}

/// True when the segment carries client bytes from before the flow's anchor.
fn before_anchor(flow: &Flow, seg: &TcpSegment<'_>) -> bool {
    !seg.payload.is_empty() && seq_gt(flow.tcp.base, seg.seq)
}

/// What the segment says about the connection: RSTs, FINs, acknowledgments, the SYN and the
/// SYN-ACK, the server's highest sequence number.
fn track(flow: &mut Flow, from_client: bool, seg: &TcpSegment<'_>) {
    let flags = seg.flags;
    if flags.rst() {
        let (next, peer_ack) = if from_client {
            (Some(flow.tcp.client_next), flow.tcp.server_ack)
        } else {
            (flow.tcp.server_next, flow.tcp.client_ack)
        };
        if next == Some(seg.seq) || peer_ack == Some(seg.seq) {
            flow.tcp.rst = RstSeen::Accepted;
        } else if flow.tcp.rst == RstSeen::None {
            flow.tcp.rst = RstSeen::Any;
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
            if flow.tcp.anchored
                && flow.phase == Phase::Forwarding
                && seq_gt(seg.ack, flow.tcp.base)
            {
                // The server took the inspected bytes from the anchor on: anything before it is
                // old to the server now.
                flow.tcp.anchored = false;
            }
        }
    }
}
