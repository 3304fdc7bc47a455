//! Observed flows under two policies: which would change verdict.
//!
//! A [`Flow`] is what a decision record (or a replayed capture) says about one connection:
//! source, destination, transport, port and the name seen. [`decide`] gives the verdict a
//! gateway would enforce for it, as the data path asks: with the name when one was seen,
//! without it otherwise. [`FlowDiff`] evaluates each flow under an old and a candidate policy
//! and counts the changes in buckets per (change, source SmartGroup, destination, old rule,
//! new rule), with a few examples each. The number of buckets is bounded
//! ([`MAX_BUCKETS`]); past it, changes are still counted, in one bucket per change and source
//! group whose destination reads `(other destinations)`, so the totals stay exact on inputs
//! of any size.
//!
//! [`name_probe`] builds the policy a capture is replayed under when flows are read from
//! packets: the pipeline reads a flow's name only when its policy needs it, and a flow whose
//! name only one of the two policies needs must still be seen with its name.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::compile::{CompiledPolicy, Query, SynDecision, Verdict};
use crate::model::{
    Action, DstGroup, DstSpec, Mode, Policy, Rule, SniDnsCheck, SrcSpec, Transport,
};

/// The decision-record reasons (`reason` of the log schema) that do not describe a policy
/// decision of their own: a bound or an evasion defence decided (the same under any policy), or
/// a later event of a flow that already has its decision record (a cut after a policy swap).
/// Records with these reasons are left out when flows are read back from records.
pub const NOT_A_POLICY_DECISION: [&str; 9] = [
    "inspect_timeout",
    "inspect_overflow",
    "memory_pressure",
    "flow_limit",
    "policy_update",
    "midstream",
    "ambiguous_overlap",
    "fragmented_header",
    "bad_checksum",
];

/// One observed connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The client (workload).
    pub src: IpAddr,
    /// The server.
    pub dst: IpAddr,
    /// The transport.
    pub transport: Transport,
    /// The destination port (0 without ports).
    pub dst_port: u16,
    /// The name seen (TLS SNI or HTTP Host), normalised; `None` when there was none.
    pub name: Option<String>,
}

impl Flow {
    /// The flow a decision record describes: its addresses, IP protocol number, destination
    /// port (kept only for transports with ports) and the name it saw, normalised (a name that
    /// does not normalise counts as none).
    pub fn from_record(
        src: IpAddr,
        dst: IpAddr,
        protocol_num: u8,
        dst_port: u16,
        name: Option<&str>,
    ) -> Flow {
        let transport = Transport::from_protocol_number(protocol_num);
        Flow {
            src,
            dst,
            transport,
            dst_port: if transport.has_ports() { dst_port } else { 0 },
            name: name.and_then(|n| crate::normalize_name(n).ok().map(|n| n.into_owned())),
        }
    }

    fn query(&self) -> Query<'_> {
        Query {
            src: self.src,
            dst: self.dst,
            transport: self.transport,
            dst_port: self.dst_port,
            name: self.name.as_deref(),
        }
    }

    /// `10.1.2.3 -> 198.51.100.7:443/tcp api.example.com`, for examples in reports.
    pub fn describe(&self) -> String {
        let mut s = match self.dst {
            IpAddr::V4(a) => format!("{} -> {a}:{}/{}", self.src, self.dst_port, self.transport),
            IpAddr::V6(a) => format!("{} -> [{a}]:{}/{}", self.src, self.dst_port, self.transport),
        };
        if let Some(n) = &self.name {
            let _ = write!(s, " {n}");
        }
        s
    }
}

/// The verdict the gateway enforces for a flow: decided on the name when one was seen (a
/// verdict that does not depend on the name is the same with or without it), else without.
pub fn decide(policy: &CompiledPolicy, flow: &Flow) -> Verdict {
    let q = flow.query();
    if q.name.is_some() {
        return policy.evaluate(&q);
    }
    match policy.evaluate_without_name(&q) {
        SynDecision::Final(v) => v,
        SynDecision::NeedsName => policy.evaluate(&Query { name: None, ..q }),
    }
}

/// How a flow's verdict changes from the old policy to the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Forwarded today, stopped by the candidate.
    NewlyDenied,
    /// Stopped today, forwarded by the candidate.
    NewlyPermitted,
    /// Same outcome (forwarded or stopped), but another rule or action decides it
    /// (`deny` becoming `reject`, a permit moving to another rule).
    RuleChanged,
}

impl Change {
    /// `newly_denied`, `newly_permitted`, `rule_changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::NewlyDenied => "newly_denied",
            Change::NewlyPermitted => "newly_permitted",
            Change::RuleChanged => "rule_changed",
        }
    }
}

/// A verdict as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Side {
    /// What the gateway does: `permit` (log-only counts as permit), `deny` or `reject`.
    pub action: &'static str,
    /// The rule that decides it (the first non-watch rule), or `default`.
    pub rule: String,
}

fn side(policy: &CompiledPolicy, v: &Verdict) -> Side {
    Side {
        action: v.effective_action.as_str(),
        rule: policy.rule_name(v.effective_rule).to_owned(),
    }
}

/// Changes of one kind, for one source group and destination, between the same two rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// The change.
    pub change: Change,
    /// The source's first SmartGroup under the candidate (else under the old policy), or its
    /// address when it is in none.
    pub src_group: String,
    /// The name seen, else the first destination group, else the address.
    pub dst: String,
    /// The old verdict.
    pub old: Side,
    /// The candidate's verdict.
    pub new: Side,
    /// Flows.
    pub flows: u64,
    /// Up to [`MAX_EXAMPLES`] flows, described.
    pub examples: Vec<String>,
}

/// Most buckets kept; see the module documentation.
pub const MAX_BUCKETS: usize = 10_000;
/// Examples kept per bucket.
pub const MAX_EXAMPLES: usize = 3;

/// Totals of a [`FlowDiff`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Flows evaluated.
    pub flows: u64,
    /// Same verdict and rule under both.
    pub unchanged: u64,
    /// See [`Change::NewlyDenied`].
    pub newly_denied: u64,
    /// See [`Change::NewlyPermitted`].
    pub newly_permitted: u64,
    /// See [`Change::RuleChanged`].
    pub rule_changed: u64,
}

/// The changes of many flows; see the module documentation.
#[derive(Debug)]
pub struct FlowDiff<'a> {
    old: &'a CompiledPolicy,
    new: &'a CompiledPolicy,
    buckets: HashMap<(Change, String, String, Side, Side), Bucket>,
    totals: Totals,
}

impl<'a> FlowDiff<'a> {
    /// An empty diff of `old` against `new`.
    pub fn new(old: &'a CompiledPolicy, new: &'a CompiledPolicy) -> FlowDiff<'a> {
        FlowDiff {
            old,
            new,
            buckets: HashMap::new(),
            totals: Totals::default(),
        }
    }

    /// Evaluates one flow under both policies and counts it.
    pub fn add(&mut self, flow: &Flow) {
        self.totals.flows += 1;
        let (vo, vn) = (decide(self.old, flow), decide(self.new, flow));
        let (so, sn) = (side(self.old, &vo), side(self.new, &vn));
        let (po, pn) = (
            vo.effective_action == Action::Permit,
            vn.effective_action == Action::Permit,
        );
        let change = match (po, pn) {
            (true, false) => Change::NewlyDenied,
            (false, true) => Change::NewlyPermitted,
            _ if so != sn => Change::RuleChanged,
            _ => {
                self.totals.unchanged += 1;
                return;
            }
        };
        match change {
            Change::NewlyDenied => self.totals.newly_denied += 1,
            Change::NewlyPermitted => self.totals.newly_permitted += 1,
            Change::RuleChanged => self.totals.rule_changed += 1,
        }
        let src_group = self
            .new
            .src_groups(&vn)
            .next()
            .or_else(|| self.old.src_groups(&vo).next())
            .map_or_else(|| flow.src.to_string(), str::to_owned);
        let mut dst = flow.name.clone().unwrap_or_else(|| {
            self.new
                .dst_groups(&vn)
                .next()
                .or_else(|| self.old.dst_groups(&vo).next())
                .map_or_else(|| flow.dst.to_string(), str::to_owned)
        });
        let mut key = (change, src_group, dst.clone(), so, sn);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_BUCKETS {
            dst = "(other destinations)".to_owned();
            key.2 = dst.clone();
        }
        let bucket = self.buckets.entry(key).or_insert_with_key(|k| Bucket {
            change,
            src_group: k.1.clone(),
            dst,
            old: k.3.clone(),
            new: k.4.clone(),
            flows: 0,
            examples: Vec::new(),
        });
        bucket.flows += 1;
        if bucket.examples.len() < MAX_EXAMPLES {
            bucket.examples.push(flow.describe());
        }
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The buckets: newly denied first, then newly permitted, then rule changes; within each,
    /// by source group, then most flows first, then destination.
    pub fn finish(self) -> (Totals, Vec<Bucket>) {
        let mut buckets: Vec<Bucket> = self.buckets.into_values().collect();
        buckets.sort_by(|a, b| {
            a.change
                .cmp(&b.change)
                .then_with(|| a.src_group.cmp(&b.src_group))
                .then(b.flows.cmp(&a.flows))
                .then_with(|| a.dst.cmp(&b.dst))
                .then_with(|| a.new.rule.cmp(&b.new.rule))
        });
        (self.totals, buckets)
    }
}

/// A policy under which the pipeline reads the name of every flow that either `a` or `b`
/// would read it for, and forwards everything (log-only), so that a capture replayed under
/// it shows each flow with the name the gateway would see, whichever of the two enforced.
///
/// It holds the groups of both (the second's renamed, so that names stay unique), the rules
/// of `a` as watch rules, then those of `b`: a flow needs its name when a name rule of
/// either can come before the first enforced rule that matches it without one.
pub fn name_probe(a: &Policy, b: &Policy) -> Policy {
    let (sa, wa, aa) = (
        a.smartgroups.len() as u32,
        a.webgroups.len() as u32,
        a.addressgroups.len() as u32,
    );
    // Built from `b` so that settings this function does not know of are the candidate's.
    let mut probe = b.clone();
    probe.mode = Mode::LogOnly;
    // The probe only reads names: whether an address belongs to its name is a property of
    // the DNS at run time, not of the two rule sets compared.
    probe.sni_dns_check = SniDnsCheck::Off;
    probe.smartgroups = a.smartgroups.clone();
    probe.webgroups = a.webgroups.clone();
    probe.addressgroups = a.addressgroups.clone();
    probe.rules = Vec::with_capacity(a.rules.len() + b.rules.len());
    let rename = |n: &str| format!("candidate.{n}");
    probe
        .smartgroups
        .extend(b.smartgroups.iter().cloned().map(|mut g| {
            g.name = rename(&g.name);
            g
        }));
    probe
        .webgroups
        .extend(b.webgroups.iter().cloned().map(|mut g| {
            g.name = rename(&g.name);
            g
        }));
    probe
        .addressgroups
        .extend(b.addressgroups.iter().cloned().map(|mut g| {
            g.name = rename(&g.name);
            g
        }));
    let mut priority = 0u32;
    for r in &a.rules {
        probe.rules.push(Rule {
            priority,
            watch: true,
            name: format!("current.{}", r.name),
            ..r.clone()
        });
        priority += 1;
    }
    for r in &b.rules {
        let src = match &r.src {
            SrcSpec::Any => SrcSpec::Any,
            SrcSpec::Groups(g) => SrcSpec::Groups(g.iter().map(|i| i + sa).collect()),
        };
        let dst = match &r.dst {
            DstSpec::Any => DstSpec::Any,
            DstSpec::Groups(g) => DstSpec::Groups(
                g.iter()
                    .map(|d| match *d {
                        DstGroup::Web(i) => DstGroup::Web(i + wa),
                        DstGroup::Address(i) => DstGroup::Address(i + aa),
                        DstGroup::Smart(i) => DstGroup::Smart(i + sa),
                    })
                    .collect(),
            ),
        };
        probe.rules.push(Rule {
            priority,
            src,
            dst,
            name: rename(&r.name),
            ..r.clone()
        });
        priority += 1;
    }
    probe
}
