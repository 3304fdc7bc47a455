//! Holding a TCP flow's first client bytes until they name it, and the verdict.
//!
//! While a flow is [`Phase::Inspecting`], every client segment that carries data (or a FIN) is
//! held: a copy is kept, nothing is forwarded, and its bytes are reassembled from the client's
//! ISN + 1 ([`super::reasm`]), out of order, retransmitted or overlapping. As soon as the
//! contiguous bytes parse to a complete ClientHello (SNI), a complete HTTP request head (Host or
//! CONNECT authority), or prove to be neither ([`super::name`]), the policy is asked
//! [`CompiledPolicy::evaluate`] with the name, and:
//!
//! - permit: whatever else the held bytes hold (a pipelined request, another hello) is checked
//!   ([`super::watch`]), then the held segments are released in sequence order;
//! - reject: the held segments are discarded and both ends get a RST (the client sees a
//!   connection reset at once);
//! - deny: the held segments are discarded, the server gets a RST (so it frees its state) and
//!   the client gets nothing: its further packets are dropped silently, and it times out, as a
//!   silent drop on the SYN would have made it.
//!
//! # Failing closed
//!
//! Held bytes per flow ([`PipelineConfig::max_held_bytes_per_flow`], reason `inspect_overflow`),
//! held bytes over all flows ([`PipelineConfig::max_held_bytes_total`], `memory_pressure`),
//! inspection time from the first held byte ([`PipelineConfig::inspect_timeout`],
//! `inspect_timeout`), overlapping segments whose bytes disagree (`ambiguous_overlap`): past any
//! of them the held data is discarded and both ends are reset ([`Shared::fail_closed`]). A client
//! that closes its side before its bytes are complete gets `parse_error`. Log-only never
//! enforces: it records the same reason, releases what was held and stops inspecting.
//!
//! [`PipelineConfig::max_held_bytes_per_flow`]: super::PipelineConfig::max_held_bytes_per_flow
//! [`PipelineConfig::max_held_bytes_total`]: super::PipelineConfig::max_held_bytes_total
//! [`PipelineConfig::inspect_timeout`]: super::PipelineConfig::inspect_timeout

use std::time::Instant;

use policy_engine::{Action, CompiledPolicy, Mode, RuleRef, SniDnsCheck, Verdict};

use crate::record::Reason;
use crate::wire::{ParsedPacket, TcpSegment};

use super::dnscheck::CheckOutcome;
use super::name::{self, Found};
use super::reasm::Insert;
use super::state::{
    data_offset, flow_query, seq_gt, Decision, Flow, Held, Inspect, NameKind, Phase,
};
use super::{Disposition, DropReason, Output, PacketMeta, Shared, Transmit};

impl Shared {
    /// Holds a client segment of a flow under inspection and decides when the name is known.
    pub(super) fn hold(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        p: &ParsedPacket<'_>,
        seg: &TcpSegment<'_>,
        meta: PacketMeta,
        out: &mut Output,
    ) -> Disposition {
        let offset = data_offset(flow.tcp.base, 0, seg);
        let limit_total = self.config.max_held_bytes_total;
        let held_now = self.stats.held_bytes_now;
        let Some(insp) = flow.inspect.as_mut() else {
            return Disposition::Drop(DropReason::Malformed);
        };
        let before = insp.bytes();
        if held_now + seg.payload.len() + p.packet.len() > limit_total {
            return self.fail_closed(now, flow, Reason::MemoryPressure, out);
        }
        let res = insp.buf.insert(offset, seg.payload);
        // Account for what the insert changed before any early return: whatever its outcome,
        // the buffer may have grown.
        self.account(insp.bytes() as isize - before as isize);
        match res {
            Insert::Conflict => return self.fail_closed(now, flow, Reason::AmbiguousOverlap, out),
            Insert::Overflow => return self.fail_closed(now, flow, Reason::InspectOverflow, out),
            Insert::Old if !seg.flags.fin() => return Disposition::Drop(DropReason::Duplicate),
            Insert::Stored { added: 0 } if !seg.flags.fin() => {
                return Disposition::Drop(DropReason::Duplicate);
            }
            _ => {}
        }
        if seg.flags.fin() && insp.held.iter().any(|h| h.fin) {
            return Disposition::Drop(DropReason::Duplicate);
        }
        insp.held.push(Held {
            offset,
            len: seg.payload.len(),
            fin: seg.flags.fin(),
            packet: p.packet.to_vec(),
            meta,
        });
        insp.held_packet_bytes += p.packet.len();
        if insp.started.is_none() {
            insp.started = Some(now);
        }
        self.account(p.packet.len() as isize);
        if insp.dns_wait {
            // The name is known and permitted; the DNS check's answer decides (what came since
            // is held with the rest and checked with it then).
            return Disposition::Held;
        }
        let found = name::classify(insp.buf.contiguous());
        if matches!(found, Found::Incomplete) {
            if seg.flags.fin() || flow.tcp.fin_client {
                // The client closed its side: no more bytes will come.
                let policy = self.policy.load_full();
                let found = Found::Malformed;
                self.decide_held(now, flow, &found, &policy, out);
            }
            return Disposition::Held;
        }
        let policy = self.policy.load_full();
        self.decide_held(now, flow, &found, &policy, out);
        Disposition::Held
    }

    /// The verdict for a flow whose held bytes named it (or proved nameless). A flow that waits
    /// for the DNS check's lookup keeps everything held (see `pipeline::dnscheck`).
    pub(super) fn decide_held(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let Some(action) = self.decide_checked(now, flow, found, policy, true, out) else {
            return;
        };
        let Some(mut insp) = flow.inspect.take() else {
            // A reject already freed what was held (`Shared::cut`): only the resets are left.
            match action {
                Action::Reject => self.reset(flow, true, true, out),
                Action::Deny => self.reset(flow, false, true, out),
                Action::Permit => {}
            }
            return;
        };
        let held = std::mem::take(&mut insp.held);
        self.account(-(insp.held_packet_bytes as isize));
        insp.held_packet_bytes = 0;
        match action {
            Action::Permit => {
                // Whatever else the held bytes hold (a pipelined request, another hello) is
                // checked before anything is released.
                self.start_watch(&mut insp, found);
                flow.inspect = Some(insp);
                self.scan_watched(now, flow, policy, out);
                if flow.phase != Phase::Forwarding {
                    return;
                }
                let mut held = held;
                held.sort_by_key(|h| (h.offset, h.len));
                held.dedup_by_key(|h| (h.offset, h.len, h.fin));
                for h in held {
                    let end = flow
                        .tcp
                        .base
                        .wrapping_add((h.offset + h.len as i64 + i64::from(h.fin)) as u32);
                    if seq_gt(end, flow.tcp.client_next) {
                        flow.tcp.client_next = end;
                    }
                    self.stats.released += 1;
                    out.transmit.push(Transmit {
                        packet: h.packet,
                        meta: h.meta,
                    });
                }
            }
            Action::Reject => {
                self.account(-(insp.buf.clear() as isize));
                self.reset(flow, true, true, out);
            }
            Action::Deny => {
                self.account(-(insp.buf.clear() as isize));
                self.reset(flow, false, true, out);
            }
        }
    }

    /// Sets up the watch of a permitted flow's later bytes.
    pub(super) fn start_watch(&mut self, insp: &mut Inspect, found: &Found) {
        insp.started = None;
        insp.guard_end = insp.buf.contiguous_end();
        insp.watch = name::watch_from(found);
    }

    /// Applies a name (or the proof there is none) to a flow: the verdict, the record, the state.
    /// Returns the enforced action. The caller cannot hold the flow for a DNS lookup: a name
    /// the check needs and the cache does not know fails closed under `enforce`.
    pub(super) fn decide_found(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) -> Action {
        self.decide_checked(now, flow, found, policy, false, out)
            .unwrap_or(Action::Reject)
    }

    /// [`Shared::decide_found`], with the DNS check of a name that permits (`sni_dns_check`):
    /// `None` when the flow must wait for a lookup (only when `can_wait`): nothing is decided
    /// or recorded yet.
    pub(super) fn decide_checked(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        found: &Found,
        policy: &CompiledPolicy,
        can_wait: bool,
        out: &mut Output,
    ) -> Option<Action> {
        let (name, reason_if_none) = found_name(found);
        let q = flow_query(flow, name.as_ref().map(|(n, _)| n.as_str()));
        let v = policy.evaluate(&q);
        let mut reason = found_reason(policy, &v, reason_if_none);
        let mut enforced = v.effective_action;
        let mut checked = false;
        if let (Action::Permit, Some((n, _))) = (v.effective_action, &name) {
            let mode = policy.name_check(&q, &v);
            if mode != SniDnsCheck::Off {
                match self.dns_check(now, flow, n, mode, can_wait, out) {
                    CheckOutcome::Confirmed => {}
                    CheckOutcome::Pending => {
                        if let Some(i) = flow.inspect.as_mut() {
                            i.dns_wait = true;
                        }
                        return None;
                    }
                    CheckOutcome::Noted(record) => {
                        self.dns.record = Some(record);
                        checked = true;
                    }
                    CheckOutcome::Failed(r, record) => {
                        reason = r;
                        self.dns.record = Some(record);
                        checked = true;
                        if mode == SniDnsCheck::Enforce {
                            enforced = Action::Reject;
                            self.stats.fail_closed += 1;
                        }
                    }
                }
            }
        }
        flow.decision = Some(Decision {
            verdict: Some(v),
            enforced,
            reason,
            version: policy.version(),
            instance: policy.instance(),
            name: name.map(|(n, k)| (n.into_boxed_str(), k)),
        });
        self.count_decision(enforced);
        if self.must_log(&v) || checked {
            self.emit_decision(now, flow, policy, out);
        }
        self.dns.record = None;
        match enforced {
            Action::Permit => flow.phase = Phase::Forwarding,
            Action::Deny => flow.phase = Phase::Blocked,
            Action::Reject => self.cut(flow, reason),
        }
        Some(enforced)
    }

    /// A bound or an evasion attempt: discard what is held, reset both ends, record.
    pub(super) fn fail_closed(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        reason: Reason,
        out: &mut Output,
    ) -> Disposition {
        let policy = self.policy.load_full();
        self.stats.fail_closed += 1;
        let name = flow.decision.as_mut().and_then(|d| d.name.take());
        flow.decision = Some(Decision {
            verdict: None,
            enforced: Action::Reject,
            reason,
            version: policy.version(),
            instance: policy.instance(),
            name,
        });
        if policy.mode() == Mode::LogOnly {
            // Log-only never enforces: release what was held and stop inspecting.
            self.emit_decision(now, flow, &policy, out);
            if let Some(mut insp) = flow.inspect.take() {
                let mut held = std::mem::take(&mut insp.held);
                held.sort_by_key(|h| (h.offset, h.len));
                for h in held {
                    self.stats.released += 1;
                    out.transmit.push(Transmit {
                        packet: h.packet,
                        meta: h.meta,
                    });
                }
                self.account(-(insp.bytes() as isize));
            }
            flow.phase = Phase::Forwarding;
            return Disposition::Held;
        }
        self.emit_decision(now, flow, &policy, out);
        self.reset(flow, true, true, out);
        self.cut(flow, reason);
        Disposition::Drop(DropReason::FailClosed(reason))
    }
}

/// The name a parse found, or the reason there is none.
pub(super) fn found_name(found: &Found) -> (Option<(String, NameKind)>, Option<Reason>) {
    match found {
        Found::Tls {
            name: Some(n), ech, ..
        } => (Some((n.clone(), NameKind::Sni { ech: *ech })), None),
        Found::Tls { name: None, .. } => (None, Some(Reason::NoSni)),
        Found::Http { host: Some(h), .. } => (Some((h.clone(), NameKind::Host)), None),
        Found::Http { host: None, .. } => (None, Some(Reason::NoSni)),
        Found::NotTls => (None, Some(Reason::NotTls)),
        Found::Malformed | Found::Incomplete => (None, Some(Reason::ParseError)),
    }
}

/// The reason of a verdict given on a name or its absence: a flow without a name that is not
/// permitted by a rule says why it has no name. Under log-only the action enforcement would have
/// taken counts (the reported action, unless a watch rule reported it).
pub(super) fn found_reason(
    policy: &CompiledPolicy,
    v: &Verdict,
    reason_if_none: Option<Reason>,
) -> Reason {
    let would_block = v.effective_action != Action::Permit
        || (policy.mode() == Mode::LogOnly
            && v.rule == v.effective_rule
            && v.action != Action::Permit);
    match reason_if_none {
        Some(r) if would_block || v.effective_rule == RuleRef::Default => r,
        _ => rule_reason(v),
    }
}

/// The reason of a verdict by rule: `rule`, or `default` when no rule matched.
pub(super) fn rule_reason(v: &Verdict) -> Reason {
    match v.effective_rule {
        RuleRef::Default => Reason::Default,
        _ => Reason::Rule,
    }
}
