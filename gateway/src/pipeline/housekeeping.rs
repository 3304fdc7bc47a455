//! Deadlines and the flow table's bounds: expiry, reclaim, early drop, `flow_limit`.
//!
//! Every flow has one deadline: its idle timeout by phase and TCP state ([`IdleTimeouts`]), or
//! the inspection timeout while its name is awaited if that comes sooner (the flow then fails
//! closed, `inspect_timeout`). The deadline queue holds at most one live entry per flow
//! ([`Shared::arm`]); an idle flow is removed when its deadline passes, with its flow-end record.
//!
//! The table has a fixed capacity. When it is full, a new flow first reclaims flows whose
//! deadline already passed; then it evicts a half-open TCP flow (a client's SYN that the server
//! has not answered for at least [`EARLY_DROP_MIN_AGE`], nothing held) found among a few slots
//! probed from a rotating cursor. This is conntrack's early drop: once a SYN flood stops, new
//! connections get in within a second instead of waiting out the opening timeout, and a
//! connection whose handshake is under way is not evicted by the flood. If neither frees a slot,
//! the new flow fails closed with reason `flow_limit` (a client's SYN gets a RST at once);
//! established flows go on.
//!
//! At shutdown (of the daemon, or the end of a replayed capture) a flow still waiting for its
//! name gets the decision record the inspection bound would have written, so every flow has
//! one; an evicted flow does not (a SYN flood must not become a flood of records).
//!
//! A closed TCP connection lingers for [`IdleTimeouts::tcp_closed`] so that retransmitted FINs,
//! the last ACK and stray segments still find their flow (and its verdict).
//!
//! [`IdleTimeouts`]: super::IdleTimeouts
//! [`IdleTimeouts::tcp_closed`]: super::IdleTimeouts::tcp_closed

use std::time::{Duration, Instant};

use policy_engine::{Action, CompiledPolicy, Mode};

use crate::record::{EndReason, Reason};
use crate::wire::{IpProtocol, ParsedPacket, RstTarget};

use super::flow::{FlowId, FlowKey};
use super::state::{Decision, Flow, Phase, RstSeen};
use super::{Disposition, DropReason, Output, Pipeline, Shared};

/// Where a watch looks next, and whether for an HTTP request (else a TLS record).
/// Slots [`Pipeline::early_drop`] looks at before giving up.
pub(super) const EARLY_DROP_PROBES: usize = 16;

/// How long a SYN must have gone unanswered before its flow may be evicted: TCP retransmits an
/// unanswered SYN after one second, so a younger one may still be answered.
pub const EARLY_DROP_MIN_AGE: Duration = Duration::from_secs(1);

/// A TCP flow that only saw its client's SYN (no answer from the server) and holds nothing:
/// evicting it loses nothing that a retransmitted SYN would not rebuild.
pub(super) fn is_half_open(flow: &Flow) -> bool {
    flow.proto == IpProtocol::Tcp
        && flow.tcp.synced
        && !flow.tcp.synack_seen
        && !flow.tcp.established
        && flow.inspect.as_ref().is_none_or(|i| i.bytes() == 0)
}

impl Pipeline {
    /// Removes a flow, discarding what it holds, and writes what its records still owe.
    pub(super) fn expire(&mut self, now: Instant, id: FlowId, why: EndReason, out: &mut Output) {
        let Some(mut flow) = self.flows.remove(id) else {
            return;
        };
        if why == EndReason::Evicted {
            self.shared.stats.flows_evicted += 1;
        } else {
            self.shared.stats.flows_expired += 1;
        }
        let policy = self.shared.policy.load_full();
        // Only at the end (of the daemon or of a capture): an eviction under a SYN flood must
        // not turn each spoofed SYN into a record.
        if why == EndReason::Shutdown {
            self.shared.record_undecided(now, &mut flow, &policy, out);
        }
        self.shared.drop_inspect(&mut flow);
        self.shared.release_offload(&mut flow, out);
        if !flow.record.ended() {
            self.shared.end_flow(now, &mut flow, &policy, why, out);
        }
    }

    /// Reclaims up to a few expired flows when the table is full.
    pub(super) fn reclaim(&mut self, now: Instant, out: &mut Output) {
        for _ in 0..8 {
            let Some((at, id)) = self.shared.timers.pop_due(now) else {
                return;
            };
            let Some(flow) = self.flows.get_mut(id) else {
                continue;
            };
            if flow.timer_at != Some(at) {
                continue;
            }
            flow.timer_at = None;
            if self.shared.deadline(flow) <= now && flow.phase != Phase::Inspecting {
                self.expire(now, id, EndReason::IdleTimeout, out);
                return;
            }
            self.shared.arm(id, flow);
        }
    }

    /// Evicts one half-open TCP flow at least [`EARLY_DROP_MIN_AGE`] old, if one is found among
    /// a few slots probed from a rotating cursor (bounded work per new flow). A table full of
    /// SYNs that nobody answered (a flood) then makes room for new flows; a table full of
    /// established flows, or of handshakes still under way, refuses them (`flow_limit`).
    pub(super) fn early_drop(&mut self, now: Instant, out: &mut Output) {
        let slots = self.flows.slot_count();
        if slots == 0 {
            return;
        }
        for _ in 0..EARLY_DROP_PROBES {
            let index = self.early_drop_cursor % slots;
            self.early_drop_cursor = index + 1;
            let Some(id) = self.flows.id_at(index) else {
                continue;
            };
            let stale = |f: &Flow| {
                is_half_open(f) && now.saturating_duration_since(f.start) >= EARLY_DROP_MIN_AGE
            };
            if self.flows.get(id).is_some_and(stale) {
                self.expire(now, id, EndReason::Evicted, out);
                return;
            }
        }
    }

    #[allow(clippy::result_large_err)]
    pub(super) fn new_flow(
        &mut self,
        now: Instant,
        key: FlowKey,
        flow: Flow,
        out: &mut Output,
    ) -> Result<FlowId, Flow> {
        if self.flows.is_full() {
            self.reclaim(now, out);
        }
        if self.flows.is_full() {
            self.early_drop(now, out);
        }
        let id = self.flows.insert(key, flow)?;
        self.shared.stats.flows_created += 1;
        Ok(id)
    }
}

impl Shared {
    /// A flow still waiting for its name when the daemon or the capture stops has no decision
    /// record, and would leave no trace at all. It gets
    /// the record the inspection bound would have written (denied, `inspect_timeout`), so that
    /// every flow has its record. Nothing is sent: its held bytes were never forwarded, and the
    /// caller discards them.
    fn record_undecided(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let record = flow.record;
        if flow.phase != Phase::Inspecting
            || record.ended()
            || record.owed()
            || record.decision_written()
        {
            return;
        }
        self.stats.fail_closed += 1;
        let name = flow.decision.as_mut().and_then(|d| d.name.take());
        flow.decision = Some(Decision {
            verdict: None,
            enforced: Action::Reject,
            reason: Reason::InspectTimeout,
            version: policy.version(),
            instance: policy.instance(),
            name,
        });
        self.emit_decision(now, flow, policy, out);
    }

    /// Ends a TCP flow that just closed; see [`Flow::closed`].
    pub(super) fn end_if_closed(&mut self, now: Instant, flow: &mut Flow, out: &mut Output) {
        // A flow taken back from the kernel ends when the kernel's counts are in.
        if !flow.record.ended() && flow.closed() && !flow.offload.get().counting() {
            let policy = self.policy.load_full();
            self.end_flow(now, flow, &policy, EndReason::Fin, out);
        }
    }

    /// How long the flow may stay idle, by protocol and TCP state.
    pub(super) fn idle_timeout(&self, flow: &Flow) -> Duration {
        let t = &self.config.idle;
        match flow.proto {
            IpProtocol::Tcp => {
                if flow.tcp.rst != RstSeen::None
                    || (flow.tcp.fin_client && flow.tcp.fin_server)
                    || matches!(flow.phase, Phase::Cut(_) | Phase::Blocked)
                {
                    t.tcp_closed
                } else if flow.tcp.fin_client || flow.tcp.fin_server {
                    t.tcp_closing
                } else if flow.tcp.established {
                    t.tcp_established
                } else {
                    t.tcp_opening
                }
            }
            IpProtocol::Udp => t.udp,
            _ => t.other,
        }
    }

    /// When the flow's inspection times out, if something is held.
    pub(super) fn inspect_deadline(&self, flow: &Flow) -> Option<Instant> {
        let i = flow.inspect.as_ref()?;
        i.started.map(|s| s + self.config.inspect_timeout)
    }

    /// The flow's real deadline: idle expiry, or the inspection timeout if sooner.
    pub(super) fn deadline(&self, flow: &Flow) -> Instant {
        let idle = flow.last_seen + self.idle_timeout(flow);
        match (flow.phase, self.inspect_deadline(flow)) {
            (Phase::Inspecting, Some(i)) => idle.min(i),
            _ => idle,
        }
    }

    /// Makes sure the deadline queue has an entry no later than the flow's deadline.
    pub(super) fn arm(&mut self, id: FlowId, flow: &mut Flow) {
        let d = self.deadline(flow);
        if flow.timer_at.is_none_or(|t| d < t) {
            flow.timer_at = Some(d);
            self.timers.push(d, id);
        }
    }

    /// The table is full: the new flow fails closed (`flow_limit`), recorded; a client's SYN
    /// gets a RST. Log-only lets it through.
    pub(super) fn flow_limit(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        p: &ParsedPacket<'_>,
        out: &mut Output,
    ) -> Disposition {
        self.stats.flow_limit += 1;
        flow.decision = Some(Decision {
            verdict: None,
            enforced: Action::Deny,
            reason: Reason::FlowLimit,
            version: policy.version(),
            instance: policy.instance(),
            name: None,
        });
        self.emit_decision(now, flow, policy, out);
        if policy.mode() == Mode::LogOnly {
            return Disposition::Forward;
        }
        if flow.proto == IpProtocol::Tcp && p.tcp().is_some_and(|t| t.flags.syn()) {
            // Tell the client at once rather than letting it retry into a full table.
            let seg_len = p.tcp().map_or(1, |t| t.seq_len());
            let fs = flow.flow_seq(seg_len);
            self.push_rst(&fs, RstTarget::Client, out);
        }
        Disposition::Drop(DropReason::FlowLimit)
    }
}
