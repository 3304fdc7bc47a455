//! Evaluation: the two questions the data path asks of a [`CompiledPolicy`], and the types of
//! the questions and answers. This is the hot path (a decision costs a few hundred
//! nanoseconds); the layout it reads is described in `tables.rs`, the search in the module
//! docs of [`compile`](mod@super).

use std::net::IpAddr;

use super::compile;
use super::ports::PortFilter;
use super::stats::CompileStats;
use super::tables::{bit, CompiledPolicy, Entry, Span, NONE};
use crate::model::{Action, Mode, Policy, QuicMode, SniDnsCheck, Transport};

/// Which rule gave a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// Index into the policy's rules (priority order).
    Rule(u32),
    /// No rule matched: the policy's default action.
    Default,
}

impl RuleRef {
    /// The rule index, if any.
    pub fn index(self) -> Option<u32> {
        match self {
            RuleRef::Rule(i) => Some(i),
            RuleRef::Default => None,
        }
    }
}

/// One question to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// Source address of the connection.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport.
    pub transport: Transport,
    /// Destination port; 0 when the transport has no ports.
    pub dst_port: u16,
    /// The name (TLS SNI or HTTP Host), already normalised with [`crate::normalize_name`]. A
    /// name that is not in normal form matches no WebGroup.
    pub name: Option<&'a str>,
}

/// How many name classes a [`Verdict`] remembers for [`CompiledPolicy::dst_groups`]. A name that
/// reaches more (it takes many overlapping wildcard patterns) is still decided on all of them;
/// only the list of destination groups reported is cut short.
pub const MAX_NAME_CLASSES_REPORTED: usize = 8;

/// The answer to a [`Query`]. Cheap to copy; computing it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The reported action: that of the first matching rule (watch rules included), else the
    /// default.
    pub action: Action,
    /// False under `mode = "log-only"`, or when `rule` is a watch rule.
    pub enforced: bool,
    /// The rule that gave `action`.
    pub rule: RuleRef,
    /// What the data path must do: [`Action::Permit`] under log-only; when `rule` is a watch
    /// rule, the action of the first non-watch rule that matches (or the default).
    pub effective_action: Action,
    /// The first matching non-watch rule (or the default).
    pub effective_rule: RuleRef,
    /// True when the decision must be logged: always for denials, watch rules, log-only mode
    /// and the default; for permits by a rule, that rule's `log`.
    pub log: bool,
    src_class: u32,
    dst_class: u32,
    name_classes: [u32; MAX_NAME_CLASSES_REPORTED],
    name_class_count: u8,
}

impl Verdict {
    /// False when the name reached more than [`MAX_NAME_CLASSES_REPORTED`] pattern nodes, in
    /// which case [`CompiledPolicy::dst_groups`] lists only the WebGroups of the first ones (the
    /// verdict itself always accounts for all of them).
    pub fn dst_groups_complete(&self) -> bool {
        usize::from(self.name_class_count) <= MAX_NAME_CLASSES_REPORTED
    }
}

/// The answer to the question asked when a connection starts, before any name is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynDecision {
    /// No rule that could still match depends on the name: this is the verdict.
    Final(Verdict),
    /// A rule that depends on the name could decide: wait for the SNI / Host.
    NeedsName,
}

/// Index of the first element `>= target` in `list[from..]` (or `list.len()`), by galloping.
fn gallop(list: &[u32], from: usize, target: u32) -> usize {
    let mut lo = from;
    let mut step = 1;
    let mut hi = from;
    while hi < list.len() && list[hi] < target {
        lo = hi + 1;
        hi += step;
        step *= 2;
    }
    let hi = hi.min(list.len());
    lo + list[lo..hi].partition_point(|&x| x < target)
}

/// The running state of a first-match search.
#[derive(Debug, Clone, Copy)]
struct Best {
    any: u32,
    eff: u32,
}

impl CompiledPolicy {
    /// An empty policy: default deny, enforced.
    pub fn deny_all(version: u64) -> CompiledPolicy {
        compile(&Policy::default(), version)
    }

    /// The version this table was compiled under.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Identifies this compilation: no two tables compiled in one process share it. Versions
    /// come from two numbering schemes in a gateway (its local file's and the controller's), so
    /// two different tables may carry the same version; whoever must tell tables apart (which
    /// policy a flow was decided under) compares instances.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Enforce or log-only.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Inspect or block QUIC.
    pub fn quic(&self) -> QuicMode {
        self.quic
    }

    /// The `sni_dns_check` setting.
    pub fn sni_dns_check(&self) -> SniDnsCheck {
        self.sni_dns_check
    }

    /// How the destination address of a flow decided with `v` on `q` must be corroborated by
    /// DNS: [`SniDnsCheck::Off`] unless the enforced verdict permits *because of the name*. A
    /// permit by a rule that also matches the destination address (an AddressGroup, a
    /// SmartGroup, `dst = "any"`), by the default, or without a name needs no check: the name
    /// did not open the way. Under log-only mode nothing is enforced, so at most
    /// [`SniDnsCheck::Log`].
    ///
    /// The cost is one more address lookup, paid only by permits that named a rule.
    pub fn name_check(&self, q: &Query<'_>, v: &Verdict) -> SniDnsCheck {
        if self.sni_dns_check == SniDnsCheck::Off || q.name.is_none() {
            return SniDnsCheck::Off;
        }
        let RuleRef::Rule(r) = v.effective_rule else {
            return SniDnsCheck::Off;
        };
        if self.rule_actions.get(r as usize) != Some(&Action::Permit) {
            return SniDnsCheck::Off;
        }
        // Does rule `r` match without the name? A search bounded to the rules up to `r` finds
        // `r` exactly when it matches by address: an earlier rule matching by address would
        // have been the verdict's enforced rule instead.
        let (s, d) = self.address_entries(q.src, q.dst);
        let ports = self.port_filter(q.transport, q.dst_port);
        let mut best = Best {
            any: NONE,
            eff: r.saturating_add(1),
        };
        self.scan_addresses(s, d, ports, &mut best);
        if best.eff == r {
            return SniDnsCheck::Off;
        }
        match self.mode {
            Mode::LogOnly => self.sni_dns_check.min(SniDnsCheck::Log),
            Mode::Enforce => self.sni_dns_check,
        }
    }

    /// The default action.
    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// Sizes of the table.
    pub fn stats(&self) -> CompileStats {
        self.stats
    }

    /// The rule's name; `"default"` for [`RuleRef::Default`] (and for an index out of range).
    pub fn rule_name(&self, r: RuleRef) -> &str {
        match r {
            RuleRef::Rule(i) => self
                .rule_names
                .get(i as usize)
                .map(|s| &**s)
                .unwrap_or("default"),
            RuleRef::Default => "default",
        }
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rule_names.len()
    }

    /// Whether rule `i` is a watch rule.
    pub fn is_watch(&self, i: u32) -> bool {
        bit(&self.watch, i)
    }

    /// The entries of the source and the destination address. Two IPv4 lookups go step by step
    /// side by side, so that the cache misses of one overlap those of the other instead of
    /// waiting for them.
    #[inline]
    fn address_entries(&self, src: IpAddr, dst: IpAddr) -> (Entry, Entry) {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let (s, d) = (u32::from(s), u32::from(d));
                let (bs, bd) = (self.src_v4.bucket(s), self.dst_v4.bucket(d));
                let (rs, rd) = (self.src_v4.range(s, bs), self.dst_v4.range(d, bd));
                (self.src_v4.search(s, rs), self.dst_v4.search(d, rd))
            }
            _ => (self.src_entry(src), self.dst_entry(dst)),
        }
    }

    fn src_entry(&self, ip: IpAddr) -> Entry {
        match ip {
            IpAddr::V4(a) => self.src_v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.src_v6.lookup(u128::from(a)),
        }
    }

    fn dst_entry(&self, ip: IpAddr) -> Entry {
        match ip {
            IpAddr::V4(a) => self.dst_v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.dst_v6.lookup(u128::from(a)),
        }
    }

    /// Folds into `best` the rules of `a ∩ b` accepted by `ports`.
    fn scan_pair(&self, a: &[u32], b: &[u32], ports: PortFilter<'_>, best: &mut Best) {
        let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
        let mut j = 0;
        for &r in small {
            if r >= best.eff {
                return;
            }
            j = gallop(large, j, r);
            if j == large.len() {
                return;
            }
            if large[j] == r && ports.accepts(r) && self.take(r, best) {
                return;
            }
        }
    }

    /// Folds into `best` the rules of `list` accepted by `ports`.
    fn scan_list(&self, list: &[u32], ports: PortFilter<'_>, best: &mut Best) {
        for &r in list {
            if r >= best.eff {
                return;
            }
            if ports.accepts(r) && self.take(r, best) {
                return;
            }
        }
    }

    /// Which rules accept the query's transport and port.
    #[inline]
    fn port_filter(&self, transport: Transport, port: u16) -> PortFilter<'_> {
        let bits = self
            .port_bitsets
            .as_ref()
            .map(|b| b.class_bits(transport, port));
        self.ports.query(transport, port, bits)
    }

    /// Records a matching rule; true when it is enforced (nothing after it can matter).
    #[inline]
    fn take(&self, r: u32, best: &mut Best) -> bool {
        if r < best.any {
            best.any = r;
        }
        if bit(&self.watch, r) {
            false
        } else {
            best.eff = r;
            true
        }
    }

    fn span(&self, span: Span) -> &[u32] {
        span.get(&self.arena)
    }

    /// The rules that match without a name: (source list ∪ `src = any`) ∩ (address list ∪
    /// `dst = any`), accepted by the port class.
    fn scan_addresses(&self, s: Entry, d: Entry, ports: PortFilter<'_>, best: &mut Best) {
        self.scan_pair(self.span(s.rules), self.span(d.rules), ports, best);
        self.scan_list(self.span(s.any_rules), ports, best);
        self.scan_list(self.span(d.any_rules), ports, best);
        self.scan_list(&self.any_any, ports, best);
    }

    /// The verdict for a connection. `q.name` `None` means no name is known or will be known:
    /// rules that match only by name do not match.
    pub fn evaluate(&self, q: &Query<'_>) -> Verdict {
        let (s, d) = self.address_entries(q.src, q.dst);
        let ports = self.port_filter(q.transport, q.dst_port);
        let mut best = Best {
            any: NONE,
            eff: NONE,
        };
        // The name walk goes first: its reads do not depend on the address lookups above, so
        // the processor overlaps their cache misses instead of waiting for one after the other.
        let mut name_classes = [NONE; MAX_NAME_CLASSES_REPORTED];
        let mut count = 0usize;
        if let Some(name) = q.name {
            self.names.walk(name, |class| {
                if count < MAX_NAME_CLASSES_REPORTED {
                    name_classes[count] = class;
                }
                count = count.saturating_add(1);
            });
        }
        self.scan_addresses(s, d, ports, &mut best);
        let ls = self.span(s.rules);
        let scan_name_class = |class: u32, best: &mut Best| {
            if let Some(c) = self.name_classes.get(class as usize) {
                self.scan_pair(ls, self.span(c.rules), ports, best);
                self.scan_list(self.span(c.any_rules), ports, best);
            }
        };
        for &class in &name_classes[..count.min(MAX_NAME_CLASSES_REPORTED)] {
            scan_name_class(class, &mut best);
        }
        if count > MAX_NAME_CLASSES_REPORTED {
            // Rare: more classes than the verdict keeps. Walk again for the rest.
            if let Some(name) = q.name {
                let mut seen = 0usize;
                self.names.walk(name, |class| {
                    seen += 1;
                    if seen > MAX_NAME_CLASSES_REPORTED {
                        scan_name_class(class, &mut best);
                    }
                });
            }
        }
        let count = u8::try_from(count).unwrap_or(u8::MAX);
        self.verdict(best, s.class, d.class, name_classes, count)
    }

    /// The question asked on a SYN, before a name can be known: `Final` when no rule that could
    /// still match depends on the name (the verdict is then that of `evaluate` with any name or
    /// none), `NeedsName` otherwise. `q.name` is ignored.
    pub fn evaluate_without_name(&self, q: &Query<'_>) -> SynDecision {
        let (s, d) = self.address_entries(q.src, q.dst);
        let ports = self.port_filter(q.transport, q.dst_port);
        let ld = self.span(d.rules);
        let mut best = Best {
            any: NONE,
            eff: NONE,
        };
        self.scan_addresses(s, d, ports, &mut best);
        // A rule that matches only by name and comes before the enforced one could change the
        // verdict (reported or enforced) once the name is known. Such a rule names a WebGroup,
        // so its `dst` is not "any"; it matches by address when it is in the address list.
        let src_name_rules = self
            .src_classes
            .get(s.class as usize)
            .map(|c| self.span(c.name_rules))
            .unwrap_or(&[]);
        let name_rules = [src_name_rules, &self.any_src_name_rules];
        for list in name_rules {
            for &r in list {
                if r >= best.eff {
                    break;
                }
                if ports.accepts(r) && ld.binary_search(&r).is_err() {
                    return SynDecision::NeedsName;
                }
            }
        }
        SynDecision::Final(self.verdict(
            best,
            s.class,
            d.class,
            [NONE; MAX_NAME_CLASSES_REPORTED],
            0,
        ))
    }

    fn verdict(
        &self,
        best: Best,
        src_class: u32,
        dst_class: u32,
        name_classes: [u32; MAX_NAME_CLASSES_REPORTED],
        name_class_count: u8,
    ) -> Verdict {
        let (rule, action) = self.rule_action(best.any);
        let (effective_rule, eff_action) = self.rule_action(best.eff);
        let is_watch = best.any != NONE && bit(&self.watch, best.any);
        let log_only = self.mode == Mode::LogOnly;
        let effective_action = if log_only { Action::Permit } else { eff_action };
        let log = log_only
            || is_watch
            || eff_action != Action::Permit
            || match effective_rule {
                RuleRef::Rule(r) => bit(&self.rule_log, r),
                RuleRef::Default => true,
            };
        Verdict {
            action,
            enforced: !log_only && !is_watch,
            rule,
            effective_action,
            effective_rule,
            log,
            src_class,
            dst_class,
            name_classes,
            name_class_count,
        }
    }

    fn rule_action(&self, r: u32) -> (RuleRef, Action) {
        if r == NONE {
            (RuleRef::Default, self.default_action)
        } else {
            (RuleRef::Rule(r), self.rule_actions[r as usize])
        }
    }

    /// The SmartGroups containing the verdict's source address.
    pub fn src_groups(&self, v: &Verdict) -> impl Iterator<Item = &str> {
        let groups = self
            .src_classes
            .get(v.src_class as usize)
            .map(|c| c.groups.get(&self.arena))
            .unwrap_or(&[]);
        groups
            .iter()
            .filter_map(|&g| self.smart_names.get(g as usize).map(|s| &**s))
    }

    /// The destination groups: WebGroups matching the name, then AddressGroups and SmartGroups
    /// containing the destination address.
    pub fn dst_groups(&self, v: &Verdict) -> impl Iterator<Item = &str> {
        let count = (v.name_class_count as usize).min(MAX_NAME_CLASSES_REPORTED);
        let name_classes = v.name_classes;
        let webs = (0..count).flat_map(move |i| {
            let groups = self.name_class_groups(name_classes[i]);
            groups.iter().copied().filter(move |g| {
                // Report each WebGroup once even when several classes contain it.
                !name_classes[..i]
                    .iter()
                    .any(|&c| self.name_class_groups(c).binary_search(g).is_ok())
            })
        });
        let webs = webs.filter_map(|g| self.web_names.get(g as usize).map(|s| &**s));
        let addr_count = self.addr_names.len() as u32;
        let addrs = self
            .dst_classes
            .get(v.dst_class as usize)
            .map(|c| c.groups.get(&self.arena))
            .unwrap_or(&[])
            .iter()
            .filter_map(move |&g| {
                if g < addr_count {
                    self.addr_names.get(g as usize).map(|s| &**s)
                } else {
                    self.smart_names
                        .get((g - addr_count) as usize)
                        .map(|s| &**s)
                }
            });
        webs.chain(addrs)
    }

    fn name_class_groups(&self, class: u32) -> &[u32] {
        self.name_classes
            .get(class as usize)
            .map(|c| c.groups.get(&self.arena))
            .unwrap_or(&[])
    }
}
