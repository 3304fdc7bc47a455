//! Decision and flow-end records (OCSF Network Activity, see `docs/log-schema.md`).
//!
//! One decision record per flow (when the verdict denies, the rule has `log = true`, the verdict
//! is not enforced, the default decided, or [`PipelineConfig::log_all`]), one more per later name
//! (a second ClientHello, another HTTP Host), and a flow-end record for every flow whose decision
//! was recorded. Wall-clock times come from the anchor the caller sets with
//! [`Pipeline::set_clock_anchor`].
//!
//! A TCP flow's flow-end record is written when the connection closes: FINs both ways, a RST
//! that its receiver accepts at once (its sequence number is the sender's next one, or what the
//! peer acknowledged last: a blind or stale RST does not end the record), or a reset or refusal
//! by the gateway. Its traffic counts include the packet that closed it. What arrives while the
//! entry lingers afterwards is counted nowhere and writes no second record. Flows the gateway
//! dropped silently (deny), UDP and other protocols, and TCP flows that go idle, end on their
//! idle timeout; [`Pipeline::shutdown`] ends the rest.
//!
//! [`PipelineConfig::log_all`]: super::PipelineConfig::log_all
//! [`Pipeline::set_clock_anchor`]: super::Pipeline::set_clock_anchor
//! [`Pipeline::shutdown`]: super::Pipeline::shutdown

use std::time::Instant;

use policy_engine::{Action, CompiledPolicy, Mode, RuleRef};

use crate::record::{
    self, Activity, ConnectionInfo, DecisionRecord, DstEndpoint, EndReason, Http, PolicyRef,
    Reason, RecordAction, SrcEndpoint, Tls,
};
use crate::wire::IpProtocol;

use super::state::{Decision, Flow, NameKind, Phase, Record, RstSeen};
use super::{Output, Shared};

/// Time mapping from the caller's monotonic clock to wall-clock epoch milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClockAnchor {
    pub(super) instant: Option<Instant>,
    pub(super) epoch_ms: u64,
}

impl ClockAnchor {
    /// Wall-clock milliseconds of `now`.
    pub(super) fn epoch_ms(&self, now: Instant) -> u64 {
        match self.instant {
            None => 0,
            Some(a) => {
                if now >= a {
                    self.epoch_ms.saturating_add((now - a).as_millis() as u64)
                } else {
                    self.epoch_ms.saturating_sub((a - now).as_millis() as u64)
                }
            }
        }
    }
}

impl Shared {
    /// Writes the flow's pending decision and its flow-end record (when its decision was
    /// recorded), once: later packets of the flow are counted nowhere.
    pub(super) fn end_flow(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        why: EndReason,
        out: &mut Output,
    ) {
        if flow.record.ended() {
            return;
        }
        if flow.record.owed() {
            self.emit_decision(now, flow, policy, out);
        }
        let decision_written = flow.record.decision_written();
        flow.record = Record::Ended { decision_written };
        if !decision_written {
            return;
        }
        let why = if matches!(flow.phase, Phase::Cut(_))
            || (flow.phase == Phase::Blocked && flow.enforced() == Some(Action::Reject))
        {
            EndReason::Cut
        } else if flow.tcp.rst != RstSeen::None {
            EndReason::Rst
        } else if flow.tcp.fin_client && flow.tcp.fin_server {
            EndReason::Fin
        } else {
            why
        };
        let mut r = self.base_record(now, flow, policy, Activity::Close);
        r.traffic = Some(super::fastpath::flow_traffic(flow));
        let start = self.clock.epoch_ms(flow.start);
        let end = self.clock.epoch_ms(flow.last_seen);
        r.start_time = Some(start);
        r.end_time = Some(end);
        r.time = end;
        r.duration = Some(end.saturating_sub(start));
        r.end_reason = Some(why);
        out.records.push(r);
    }

    /// Writes the flow's decision record (Open when it is permitted, else Refuse).
    pub(super) fn emit_decision(
        &mut self,
        now: Instant,
        flow: &mut Flow,
        policy: &CompiledPolicy,
        out: &mut Output,
    ) {
        let activity = match flow.decision.as_ref() {
            Some(d) if d.enforced == Action::Permit => Activity::Open,
            _ => Activity::Refuse,
        };
        let mut r = self.base_record(now, flow, policy, activity);
        r.dns_check = self.dns.record.take();
        out.records.push(r);
        flow.record = flow.record.after_decision();
    }

    /// A record of the flow's current decision, without the flow-end fields.
    pub(super) fn base_record(
        &self,
        now: Instant,
        flow: &Flow,
        policy: &CompiledPolicy,
        activity: Activity,
    ) -> DecisionRecord {
        let d = flow.decision.as_ref();
        let (action, disposition) = outcome(d, policy);
        let reason = d.map_or(Reason::Unknown, |d| d.reason);
        let severity = match disposition {
            record::Disposition::Allowed => 1,
            record::Disposition::Detected => 2,
            record::Disposition::Blocked if reason.is_fail_closed() => 4,
            record::Disposition::Blocked => 3,
        };
        let (rule, src_groups, dst_groups) = rule_and_groups(d, policy);
        let name = flow.name().map(str::to_owned);
        let (tls, http) = name_fields(d);
        let protocol_name = match flow.proto {
            IpProtocol::Tcp => "tcp".to_owned(),
            IpProtocol::Udp => "udp".to_owned(),
            IpProtocol::Icmp => "icmp".to_owned(),
            IpProtocol::Icmpv6 => "ipv6-icmp".to_owned(),
            IpProtocol::Unknown(n) => n.to_string(),
        };
        DecisionRecord {
            time: self.clock.epoch_ms(now),
            class_uid: record::CLASS_UID,
            category_uid: record::CATEGORY_UID,
            type_uid: record::CLASS_UID * 100 + u32::from(activity.id()),
            activity_id: activity.id(),
            severity_id: severity,
            metadata: self.metadata.clone(),
            action,
            action_id: if action == RecordAction::Allowed {
                1
            } else {
                2
            },
            disposition,
            disposition_id: disposition.id(),
            src_endpoint: SrcEndpoint {
                ip: flow.client.ip(),
                port: flow.client.port(),
            },
            dst_endpoint: DstEndpoint {
                ip: flow.server.ip(),
                port: flow.server.port(),
                hostname: name,
            },
            connection_info: ConnectionInfo {
                protocol_name,
                protocol_num: flow.proto.number(),
                direction: Some("Outbound".to_owned()),
                direction_id: Some(2),
            },
            tls,
            http,
            policy: PolicyRef {
                name: rule,
                version: d.map_or(policy.version(), |d| d.version),
            },
            src_groups,
            dst_groups,
            reason,
            gateway_id: self.config.gateway_id.clone(),
            dns_check: None,
            traffic: None,
            duration: None,
            start_time: None,
            end_time: None,
            end_reason: None,
        }
    }
}

/// The record's `action` (what the verdict says) and `disposition` (what was done: a flow that
/// failed closed under log-only was let through, so it is Detected, not Blocked).
fn outcome(d: Option<&Decision>, policy: &CompiledPolicy) -> (RecordAction, record::Disposition) {
    let verdict = d.and_then(|d| d.verdict);
    let enforced = d.map_or(Action::Deny, |d| d.enforced);
    let log_only = policy.mode() == Mode::LogOnly;
    // A name the DNS check did not confirm: the policy does not permit a flow to that address
    // (reported as a denial, Detected when it was let through under `log`).
    let dns_refuted = d.is_some_and(|d| d.reason.is_dns_check());
    let reported = match verdict {
        Some(_) if dns_refuted => Action::Deny,
        Some(v) => v.action,
        None => Action::Deny,
    };
    let action = if reported == Action::Permit {
        RecordAction::Allowed
    } else {
        RecordAction::Denied
    };
    let disposition = if enforced != Action::Permit && !(verdict.is_none() && log_only) {
        record::Disposition::Blocked
    } else if verdict.is_some_and(|v| !v.enforced)
        || (verdict.is_none() && log_only)
        || reported != Action::Permit
    {
        record::Disposition::Detected
    } else {
        record::Disposition::Allowed
    };
    (action, disposition)
}

/// The rule and groups of the verdict, named by the policy it was given under. A verdict given
/// under an older policy cannot be named by the current one (rule indexes do not carry over):
/// only `default` is, anything else is `(previous policy)`.
fn rule_and_groups(
    d: Option<&Decision>,
    policy: &CompiledPolicy,
) -> (String, Vec<String>, Vec<String>) {
    let same_policy = d.is_some_and(|d| d.instance == policy.instance());
    match d.and_then(|d| d.verdict) {
        Some(v) if same_policy => (
            policy.rule_name(v.rule).to_owned(),
            policy.src_groups(&v).map(str::to_owned).collect(),
            policy.dst_groups(&v).map(str::to_owned).collect(),
        ),
        Some(v) if v.rule == RuleRef::Default => ("default".to_owned(), Vec::new(), Vec::new()),
        Some(_) => ("(previous policy)".to_owned(), Vec::new(), Vec::new()),
        None => ("fail-closed".to_owned(), Vec::new(), Vec::new()),
    }
}

/// `tls{sni, ech}` or `http{host}`, from where the name came from: the normalised name, or what
/// was sent in place of one (escaped).
fn name_fields(d: Option<&Decision>) -> (Option<Tls>, Option<Http>) {
    match d.and_then(|d| d.name.as_ref()) {
        Some((n, NameKind::Sni { ech } | NameKind::SniNotHostname { ech })) => (
            Some(Tls {
                sni: n.to_string(),
                ech: *ech,
            }),
            None,
        ),
        Some((n, NameKind::Host | NameKind::HostNotHostname)) => (
            None,
            Some(Http {
                host: n.to_string(),
            }),
        ),
        None => (None, None),
    }
}
