//! The kernel fast path, seen from the pipeline: which flows may leave the TUN, and what the
//! pipeline does when the runtime reports on them. Sans-IO like the rest: the pipeline asks
//! ([`FastPathRequest`] in [`Output::fastpath`]) and is told ([`Pipeline::fastpath_event`]); the
//! runtime (`crate::fastpath`) does the netlink.
//!
//! A TCP flow is handed off when it is *settled* ([`Flow::is_settled`]: permitted, nothing held
//! or watched any more, no decision record owed, no FIN or RST seen) and was opened by a SYN the
//! gateway saw. That is after the TLS watch ended (the first ChangeCipherSpec or application-data
//! record) and never while a plain-HTTP connection is under the request watch, nor while a second
//! ClientHello could still come. Log-only flows and flows a watch rule matched are handed off
//! too: once settled, the gateway only forwards and counts their packets, which the kernel does
//! the same way, and their records are unchanged.
//!
//! The request goes out on the first packet that finds the flow settled; until the runtime
//! answers, the flow's packets go on through the TUN as before. Then:
//!
//! - [`FastPathEvent::Offloaded`]: the kernel forwards the flow. The flow stays in the table
//!   (its decision, its name for re-evaluation, its counters).
//! - [`FastPathEvent::Refused`]: it stays on the TUN for good (no conntrack entry, a full queue,
//!   a netlink error).
//! - [`FastPathEvent::Counts`]: the conntrack entry's counters; traffic moves the idle deadline
//!   as packets would.
//! - [`FastPathEvent::Ended`]: the kernel saw the connection end; the flow-end record is written
//!   with every count (TUN and kernel) and the flow leaves the table.
//! - A policy swap that denies a handed-off flow ([`Pipeline::reevaluate`]) records the decision
//!   (`policy_update`), cuts the flow and asks for it back ([`FastPathRequest::TakeBack`]): its
//!   next packet returns to the TUN and is answered with RSTs both ways, built from that packet's
//!   own sequence numbers (the ones the gateway tracked stopped moving at the hand-off, and a
//!   stale RST is ignored by its receiver). [`FastPathEvent::TakenBack`] brings the kernel's last
//!   counts, and the flow-end record is written.
//! - A handed-off flow the pipeline drops on its own (idle past its timeout, shutdown) is released
//!   ([`FastPathRequest::Release`]), so that later packets come back to the TUN and are decided
//!   as any packet of an unknown flow.

use std::net::SocketAddr;
use std::time::Instant;

use crate::record::{EndReason, Traffic};
use crate::wire::{IpProtocol, TcpSegment};

use super::flow::{FlowId, FlowKey};
use super::state::Flow;
use super::{DropReason, Output, Pipeline, Shared};

/// A TCP flow as its client opened it: the original direction of its conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// What the pipeline asks of the runtime. `cookie` tells one hand-off of a tuple from a later
/// one on the same ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPathRequest {
    /// Hand the flow to the kernel; answer [`FastPathEvent::Offloaded`] or
    /// [`FastPathEvent::Refused`].
    HandOff { tuple: FlowTuple, cookie: u32 },
    /// A policy update denies the flow: bring its packets back to the TUN; answer
    /// [`FastPathEvent::TakenBack`] with the kernel's last counts.
    TakeBack { tuple: FlowTuple, cookie: u32 },
    /// The pipeline no longer tracks the flow: bring later packets back to the TUN. No answer.
    Release { tuple: FlowTuple, cookie: u32 },
}

impl FastPathRequest {
    pub fn tuple(&self) -> FlowTuple {
        match self {
            FastPathRequest::HandOff { tuple, .. }
            | FastPathRequest::TakeBack { tuple, .. }
            | FastPathRequest::Release { tuple, .. } => *tuple,
        }
    }

    pub fn cookie(&self) -> u32 {
        match self {
            FastPathRequest::HandOff { cookie, .. }
            | FastPathRequest::TakeBack { cookie, .. }
            | FastPathRequest::Release { cookie, .. } => *cookie,
        }
    }
}

/// What the runtime reports about a flow it was asked about. The counters are the conntrack
/// entry's own, from its creation (zero when unknown).
///
/// Conntrack counts a packet each time it enters the IP stack: a packet the gateway forwarded
/// through the TUN twice (in from the interface, again out of the TUN), one the kernel forwarded
/// once. With `C` the entry's counters and `T` what the gateway counted on the TUN (the flow's own
/// counters), the flow's traffic is `T + (C - 2T) = C - T`: exact whatever the timing of the
/// hand-off (packets still in the TUN when the mark was set are counted once by each), with no
/// baseline to read at the hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPathEvent {
    /// The kernel forwards the flow now.
    Offloaded,
    /// The flow could not be handed off: it stays on the TUN.
    Refused,
    /// The entry's counters now.
    Counts(Traffic),
    /// The connection ended in the kernel; the entry's last counters.
    Ended { traffic: Traffic, why: EndReason },
    /// The flow's packets come to the TUN again; the entry's counters when the mark was cleared.
    TakenBack(Traffic),
}

/// Where a flow stands with the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Offload {
    /// On the TUN; handed off once settled (if the fast path is on).
    #[default]
    None,
    /// On the TUN for good.
    Stay,
    /// Hand-off asked for; packets may still arrive through the TUN meanwhile.
    Requested(u32),
    /// Forwarded by the kernel.
    Active(u32),
    /// Taken back after a policy update (the flow is cut). `rst_owed`: the next packet of the
    /// flow that reaches the TUN is answered with RSTs both ways. `counting`: the kernel's last
    /// counts are still to come, so the flow-end record waits for them (or for the expiry).
    Back {
        cookie: u32,
        rst_owed: bool,
        counting: bool,
    },
}

impl Offload {
    /// True while a taken-back flow waits for the kernel's last counts.
    pub(super) fn counting(self) -> bool {
        matches!(self, Offload::Back { counting: true, .. })
    }

    /// True while the kernel forwards (or is about to forward) the flow.
    pub(super) fn in_kernel(self) -> bool {
        matches!(self, Offload::Requested(_) | Offload::Active(_))
    }

    fn cookie(self) -> Option<u32> {
        match self {
            Offload::Requested(c) | Offload::Active(c) | Offload::Back { cookie: c, .. } => Some(c),
            Offload::None | Offload::Stay => None,
        }
    }
}

/// A flow's fast-path state, boxed: most flows never leave the TUN, and every byte of `Flow`
/// costs a quarter of a MiB at capacity. Empty means [`Offload::None`].
#[derive(Debug, Default)]
pub(super) struct OffloadSlot(Option<Box<OffloadInfo>>);

#[derive(Debug)]
struct OffloadInfo {
    state: Offload,
    /// The conntrack entry's counters, as last reported.
    kernel: Option<Traffic>,
}

impl OffloadSlot {
    #[inline]
    pub(super) fn is_none(&self) -> bool {
        self.0.is_none()
    }

    pub(super) fn get(&self) -> Offload {
        self.0.as_ref().map_or(Offload::None, |o| o.state)
    }

    pub(super) fn set(&mut self, state: Offload) {
        match &mut self.0 {
            Some(o) => o.state = state,
            None => {
                self.0 = Some(Box::new(OffloadInfo {
                    state,
                    kernel: None,
                }))
            }
        }
    }

    fn kernel(&self) -> Option<&Traffic> {
        self.0.as_ref().and_then(|o| o.kernel.as_ref())
    }

    fn kernel_mut(&mut self) -> &mut Option<Traffic> {
        &mut self
            .0
            .get_or_insert_with(|| {
                Box::new(OffloadInfo {
                    state: Offload::None,
                    kernel: None,
                })
            })
            .kernel
    }
}

/// The flow's tuple (the client's direction).
pub(super) fn tuple_of(flow: &Flow) -> FlowTuple {
    FlowTuple {
        client: flow.client,
        server: flow.server,
    }
}

impl Shared {
    /// A settled flow that is not on the fast path yet: asks for the hand-off when it may go.
    /// Off the common path: it runs once per flow.
    #[cold]
    pub(super) fn consider_handoff(&mut self, flow: &mut Flow, out: &mut Output) {
        if !self.config.fast_path
            || flow.offload.get() != Offload::None
            || flow.proto != IpProtocol::Tcp
            || !flow.tcp.synced
            || !flow.tcp.established
            || flow.record.owed()
        {
            return;
        }
        self.next_cookie = self.next_cookie.wrapping_add(1).max(1);
        let cookie = self.next_cookie;
        flow.offload.set(Offload::Requested(cookie));
        self.stats.fastpath_requested += 1;
        out.fastpath.push(FastPathRequest::HandOff {
            tuple: tuple_of(flow),
            cookie,
        });
    }

    /// A handed-off flow leaves the table: release it in the kernel.
    pub(super) fn release_offload(&mut self, flow: &mut Flow, out: &mut Output) {
        if let Offload::Requested(cookie) | Offload::Active(cookie) = flow.offload.get() {
            out.fastpath.push(FastPathRequest::Release {
                tuple: tuple_of(flow),
                cookie,
            });
            flow.offload.set(Offload::Stay);
        }
    }

    /// A policy update denied a handed-off flow (already cut and recorded by the caller): asks
    /// for it back. True when the flow was on the fast path.
    pub(super) fn take_back(&mut self, flow: &mut Flow, out: &mut Output) -> bool {
        let (Offload::Requested(cookie) | Offload::Active(cookie)) = flow.offload.get() else {
            return false;
        };
        flow.offload.set(Offload::Back {
            cookie,
            rst_owed: true,
            counting: true,
        });
        self.stats.fastpath_taken_back += 1;
        out.fastpath.push(FastPathRequest::TakeBack {
            tuple: tuple_of(flow),
            cookie,
        });
        true
    }

    /// The first packet of a taken-back flow that reaches the TUN: both ends get a RST whose
    /// sequence number is the one this packet shows each end expects (the packet itself is
    /// dropped, so its sender's next sequence number is its own).
    pub(super) fn reset_taken_back(
        &mut self,
        flow: &mut Flow,
        from_client: bool,
        seg: &TcpSegment<'_>,
        out: &mut Output,
    ) -> DropReason {
        if let Offload::Back {
            cookie, counting, ..
        } = flow.offload.get()
        {
            flow.offload.set(Offload::Back {
                cookie,
                rst_owed: false,
                counting,
            });
        }
        if seg.flags.rst() || !seg.flags.ack() {
            // Nothing to learn the peer's sequence number from; a RST needs no answer.
            return DropReason::Cut;
        }
        let t = &mut flow.tcp;
        if from_client {
            t.client_next = seg.seq;
            t.server_ack = Some(seg.seq);
            t.server_next = Some(seg.ack);
            t.client_ack = Some(seg.ack);
        } else {
            t.server_next = Some(seg.seq);
            t.client_ack = Some(seg.seq);
            t.client_next = seg.ack;
            t.server_ack = Some(seg.ack);
        }
        self.reset(flow, true, true, out);
        DropReason::Cut
    }
}

impl Pipeline {
    /// A report from the runtime about a flow it was asked to hand off, take back or release.
    /// Reports about flows the table no longer has, or about an earlier flow on the same ports
    /// (another cookie), are ignored.
    pub fn fastpath_event(
        &mut self,
        now: Instant,
        tuple: FlowTuple,
        cookie: u32,
        event: FastPathEvent,
        out: &mut Output,
    ) {
        let (key, _) = FlowKey::new(
            IpProtocol::Tcp.number(),
            tuple.client.ip(),
            tuple.client.port(),
            tuple.server.ip(),
            tuple.server.port(),
        );
        let Some(id) = self.flows.lookup(&key) else {
            return;
        };
        let Some(flow) = self.flows.get_mut(id) else {
            return;
        };
        if flow.offload.get().cookie() != Some(cookie) || tuple_of(flow) != tuple {
            return;
        }
        match event {
            FastPathEvent::Offloaded => {
                if let Offload::Requested(c) = flow.offload.get() {
                    flow.offload.set(Offload::Active(c));
                    self.shared.stats.fastpath_offloaded += 1;
                }
            }
            FastPathEvent::Refused => {
                if flow.offload.get().in_kernel() {
                    flow.offload.set(Offload::Stay);
                    self.shared.stats.fastpath_refused += 1;
                }
            }
            FastPathEvent::Counts(t) => {
                add_kernel_traffic(flow, &t, now);
                self.shared.arm(id, flow);
            }
            FastPathEvent::Ended { traffic, why } => {
                add_kernel_traffic(flow, &traffic, now);
                flow.last_seen = now;
                flow.offload.set(Offload::Stay);
                self.end_offloaded(now, id, why, out);
            }
            FastPathEvent::TakenBack(t) => {
                add_kernel_traffic(flow, &t, now);
                if let Offload::Back {
                    cookie, rst_owed, ..
                } = flow.offload.get()
                {
                    flow.offload.set(Offload::Back {
                        cookie,
                        rst_owed,
                        counting: false,
                    });
                }
                self.shared.end_if_closed(now, flow, out);
                self.shared.arm(id, flow);
            }
        }
    }

    /// A handed-off connection ended in the kernel: its flow-end record, and the flow leaves
    /// the table (its last packets went through the kernel; a new SYN on the same ports opens a
    /// new conntrack entry, which reaches the TUN).
    fn end_offloaded(&mut self, now: Instant, id: FlowId, why: EndReason, out: &mut Output) {
        let Some(mut flow) = self.flows.remove(id) else {
            return;
        };
        self.shared.stats.flows_expired += 1;
        if !flow.record.ended() {
            let policy = self.shared.policy.load_full();
            self.shared.end_flow(now, &mut flow, &policy, why, out);
        }
    }
}

/// Keeps the conntrack entry's counters; more traffic than last time is activity.
fn add_kernel_traffic(flow: &mut Flow, t: &Traffic, now: Instant) {
    if t.packets_in == 0 && t.packets_out == 0 {
        return;
    }
    let known = flow.offload.kernel_mut();
    let more = known.is_none_or(|k| t.packets_in > k.packets_in || t.packets_out > k.packets_out);
    *known = Some(*t);
    if more {
        flow.last_seen = now;
    }
}

/// The flow's traffic for its records: what the TUN saw, or for a handed-off flow the
/// conntrack counters less what the TUN saw (see [`FastPathEvent`]), never less than the TUN's.
pub(super) fn flow_traffic(flow: &Flow) -> Traffic {
    let tun = flow.traffic;
    let Some(c) = flow.offload.kernel() else {
        return tun;
    };
    Traffic {
        bytes_in: c.bytes_in.saturating_sub(tun.bytes_in).max(tun.bytes_in),
        bytes_out: c.bytes_out.saturating_sub(tun.bytes_out).max(tun.bytes_out),
        packets_in: c
            .packets_in
            .saturating_sub(tun.packets_in)
            .max(tun.packets_in),
        packets_out: c
            .packets_out
            .saturating_sub(tun.packets_out)
            .max(tun.packets_out),
    }
}
