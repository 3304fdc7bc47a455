//! What every flow shares: the settings, the policy store, the deadline queue, the counters and
//! the clock anchor. It is kept apart from the flow table so that a handler can hold one flow and
//! this at once (`&mut Flow` and `&mut Shared`); it also keeps the count of held bytes, which
//! every change to a flow's inspection state must go through ([`Shared::account`]).

use std::sync::Arc;

use policy_engine::{Action, PolicyStore, RuleRef, Verdict};

use crate::record::{Metadata, Reason};

use super::records::ClockAnchor;
use super::state::{Flow, Inspect, Phase};
use super::timer::DeadlineQueue;
use super::{PipelineConfig, PipelineStats};

/// Everything the pipeline holds but the flow table, so that a flow and the rest can be borrowed
/// together.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: PipelineConfig,
    /// Where the current policy is loaded from, once per packet that needs it.
    pub(super) policy: Arc<PolicyStore>,
    /// The flows' deadlines (idle and inspection timeouts).
    pub(super) timers: DeadlineQueue,
    pub(super) stats: PipelineStats,
    /// Maps the caller's clock to wall-clock time for records.
    pub(super) clock: ClockAnchor,
    /// Policy ([`CompiledPolicy::instance`](policy_engine::CompiledPolicy::instance)) the
    /// flows were last (re-)evaluated under.
    pub(super) evaluated_instance: u64,
    pub(super) metadata: Metadata,
    /// The DNS check of names and what is learned from DNS traffic.
    pub(super) dns: super::dnscheck::DnsState,
    /// The last cookie given to a fast-path hand-off.
    pub(super) next_cookie: u32,
}

impl Shared {
    /// A fresh inspection of `flow`'s client bytes, within the per-flow bound on held bytes
    /// (with a STARTTLS follower on a mail port).
    pub(super) fn tcp_inspect(&self, flow: &Flow) -> Box<Inspect> {
        Box::new(Inspect::tcp(
            self.config.max_held_bytes_per_flow,
            flow.server.port(),
        ))
    }

    /// Whether a verdict is recorded.
    pub(super) fn must_log(&self, v: &Verdict) -> bool {
        // Denies, rules with `log = true`, anything not enforced (log-only, watch rules) and the
        // default (a flow no rule covers is a gap in the policy worth seeing).
        self.config.log_all
            || v.log
            || v.effective_action != Action::Permit
            || !v.enforced
            || v.effective_rule == RuleRef::Default
    }

    /// Counts a decision by its enforced action.
    pub(super) fn count_decision(&mut self, a: Action) {
        match a {
            Action::Permit => self.stats.decisions_permit += 1,
            Action::Deny => self.stats.decisions_deny += 1,
            Action::Reject => self.stats.decisions_reject += 1,
        }
    }

    /// Moves the count of held bytes (reassembly buffers and held packets, all flows) by `delta`.
    pub(super) fn account(&mut self, delta: isize) {
        let now = self.stats.held_bytes_now as isize + delta;
        self.stats.held_bytes_now = now.max(0) as usize;
        self.stats.held_bytes_peak = self.stats.held_bytes_peak.max(self.stats.held_bytes_now);
    }

    /// Frees whatever the flow holds or watches.
    pub(super) fn drop_inspect(&mut self, flow: &mut Flow) {
        if let Some(i) = flow.inspect.take() {
            self.account(-(i.bytes() as isize));
        }
    }

    /// The gateway reset the flow: nothing of it is inspected or passed any more.
    pub(super) fn cut(&mut self, flow: &mut Flow, reason: Reason) {
        flow.phase = Phase::Cut(reason);
        self.drop_inspect(flow);
    }
}
