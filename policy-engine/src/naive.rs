//! The reference evaluator: rules one by one, in order, straight from the [`Policy`] model.
//!
//! It is slow on purpose (linear in rules, groups, CIDRs and patterns) and simple enough to be
//! obviously right. The compiled table ([`crate::CompiledPolicy`]) must agree with it on every
//! query; property tests and the benchmark use it as the yardstick. `bulkhead explain` uses
//! [`rule_match`] to say why each rule did or did not match.

use std::net::IpAddr;

use crate::compile::{Query, RuleRef};
use crate::model::{Action, DstGroup, DstSpec, Mode, Policy, Rule, SrcSpec};

/// A verdict of the reference evaluator; same meaning as [`crate::Verdict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaiveVerdict {
    /// See [`crate::Verdict::action`].
    pub action: Action,
    /// See [`crate::Verdict::enforced`].
    pub enforced: bool,
    /// See [`crate::Verdict::rule`].
    pub rule: RuleRef,
    /// See [`crate::Verdict::effective_action`].
    pub effective_action: Action,
    /// See [`crate::Verdict::effective_rule`].
    pub effective_rule: RuleRef,
    /// See [`crate::Verdict::log`].
    pub log: bool,
    /// SmartGroups containing the source, in policy order.
    pub src_groups: Vec<String>,
    /// WebGroups matching the name, then AddressGroups, then SmartGroups containing the
    /// destination, each in policy order.
    pub dst_groups: Vec<String>,
}

/// The SYN-time answer of the reference evaluator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NaiveSynDecision {
    /// See [`crate::SynDecision::Final`].
    Final(NaiveVerdict),
    /// See [`crate::SynDecision::NeedsName`].
    NeedsName,
}

/// How one rule relates to a query, condition by condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch {
    /// The source is in `src`.
    pub src: bool,
    /// The destination address is in `dst` (or `dst` is `any`).
    pub dst_by_address: bool,
    /// The name matches a WebGroup of `dst`.
    pub dst_by_name: bool,
    /// `dst` names at least one WebGroup.
    pub dst_has_names: bool,
    /// The transport is accepted by `protocol`.
    pub protocol: bool,
    /// The destination port is accepted by `ports`.
    pub ports: bool,
}

impl RuleMatch {
    /// All conditions hold.
    pub fn matches(&self) -> bool {
        self.src && (self.dst_by_address || self.dst_by_name) && self.protocol && self.ports
    }
}

fn smart_contains(policy: &Policy, g: u32, ip: IpAddr) -> bool {
    policy
        .smartgroups
        .get(g as usize)
        .is_some_and(|g| g.cidrs.iter().any(|c| c.contains(&ip)))
}

fn addr_contains(policy: &Policy, g: u32, ip: IpAddr) -> bool {
    policy
        .addressgroups
        .get(g as usize)
        .is_some_and(|g| g.cidrs.iter().any(|c| c.contains(&ip)))
}

fn web_matches(policy: &Policy, g: u32, name: Option<&str>) -> bool {
    match (policy.webgroups.get(g as usize), name) {
        (Some(g), Some(name)) => g.patterns.iter().any(|p| p.matches(name)),
        _ => false,
    }
}

/// Evaluates every condition of `rule` for `q`.
pub fn rule_match(policy: &Policy, rule: &Rule, q: &Query<'_>) -> RuleMatch {
    let src = match &rule.src {
        SrcSpec::Any => true,
        SrcSpec::Groups(groups) => groups.iter().any(|&g| smart_contains(policy, g, q.src)),
    };
    let (dst_by_address, dst_by_name, dst_has_names) = match &rule.dst {
        DstSpec::Any => (true, false, false),
        DstSpec::Groups(groups) => {
            let mut by_addr = false;
            let mut by_name = false;
            let mut has_names = false;
            for &g in groups {
                match g {
                    DstGroup::Web(w) => {
                        has_names |= (w as usize) < policy.webgroups.len();
                        by_name |= web_matches(policy, w, q.name);
                    }
                    DstGroup::Address(a) => by_addr |= addr_contains(policy, a, q.dst),
                    DstGroup::Smart(s) => by_addr |= smart_contains(policy, s, q.dst),
                }
            }
            (by_addr, by_name, has_names)
        }
    };
    RuleMatch {
        src,
        dst_by_address,
        dst_by_name,
        dst_has_names,
        protocol: rule.protocol.matches(q.transport),
        ports: rule.ports.matches(q.transport, q.dst_port),
    }
}

/// The first matching rule (watch rules included) and the first matching non-watch rule, as
/// indices into `policy.rules`.
pub fn first_matches(policy: &Policy, q: &Query<'_>) -> (Option<usize>, Option<usize>) {
    let mut any = None;
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule_match(policy, rule, q).matches() {
            if any.is_none() {
                any = Some(i);
            }
            if !rule.watch {
                return (any, Some(i));
            }
        }
    }
    (any, None)
}

fn build(policy: &Policy, q: &Query<'_>, any: Option<usize>, eff: Option<usize>) -> NaiveVerdict {
    let default = policy.default_action.action();
    let to_ref = |i: Option<usize>| i.map_or(RuleRef::Default, |i| RuleRef::Rule(i as u32));
    let action = any.map_or(default, |i| policy.rules[i].action);
    let eff_action = eff.map_or(default, |i| policy.rules[i].action);
    let is_watch = any.is_some_and(|i| policy.rules[i].watch);
    let log_only = policy.mode == Mode::LogOnly;
    let log = log_only
        || is_watch
        || eff_action != Action::Permit
        || eff.is_none_or(|i| policy.rules[i].log);
    let src_groups = policy
        .smartgroups
        .iter()
        .filter(|g| g.cidrs.iter().any(|c| c.contains(&q.src)))
        .map(|g| g.name.clone())
        .collect();
    let mut dst_groups: Vec<String> = policy
        .webgroups
        .iter()
        .filter(|g| {
            q.name
                .is_some_and(|n| g.patterns.iter().any(|p| p.matches(n)))
        })
        .map(|g| g.name.clone())
        .collect();
    dst_groups.extend(
        policy
            .addressgroups
            .iter()
            .filter(|g| g.cidrs.iter().any(|c| c.contains(&q.dst)))
            .map(|g| g.name.clone()),
    );
    dst_groups.extend(
        policy
            .smartgroups
            .iter()
            .filter(|g| g.cidrs.iter().any(|c| c.contains(&q.dst)))
            .map(|g| g.name.clone()),
    );
    NaiveVerdict {
        action,
        enforced: !log_only && !is_watch,
        rule: to_ref(any),
        effective_action: if log_only { Action::Permit } else { eff_action },
        effective_rule: to_ref(eff),
        log,
        src_groups,
        dst_groups,
    }
}

/// The verdict, rule by rule.
pub fn evaluate(policy: &Policy, q: &Query<'_>) -> NaiveVerdict {
    let (any, eff) = first_matches(policy, q);
    build(policy, q, any, eff)
}

/// The SYN-time question, rule by rule: `NeedsName` when a rule that matches by name only (and
/// could match with some name) comes before the first non-watch rule that matches without a
/// name.
pub fn evaluate_without_name(policy: &Policy, q: &Query<'_>) -> NaiveSynDecision {
    let q = Query { name: None, ..*q };
    let (any, eff) = first_matches(policy, &q);
    let limit = eff.unwrap_or(policy.rules.len());
    for rule in &policy.rules[..limit] {
        let m = rule_match(policy, rule, &q);
        if m.src && m.protocol && m.ports && !m.dst_by_address && m.dst_has_names {
            return NaiveSynDecision::NeedsName;
        }
    }
    NaiveSynDecision::Final(build(policy, &q, any, eff))
}
