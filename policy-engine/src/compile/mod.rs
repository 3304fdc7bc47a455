//! The compiled rule table and its evaluation.
//!
//! [`compile`] turns a [`Policy`] into a [`CompiledPolicy`] that answers a query without looking at
//! the rules one by one:
//!
//! 1. **Addresses.** The CIDRs of all groups are cut into disjoint intervals (separately for IPv4
//!    and IPv6, for sources and for destinations). Every interval maps to an *address class*: the
//!    set of groups containing it. A lookup is a binary search over interval starts; large IPv4
//!    tables have a direct index on the top 16 bits, and a /16 with many intervals a second one
//!    on the next 8 bits, so that the search covers a handful of records. A record holds the
//!    class id and the class's rule lists, so the lookup reads nothing else.
//! 2. **Names.** Patterns live in a trie over labels read right to left whose nodes are the
//!    slots of one open-addressing hash table keyed by (parent, label); `*` labels are edges of
//!    their own (see `trie.rs`). A name walks the trie once, touching one cache line per label. Each node carries up to two *name classes*: the WebGroups whose patterns end exactly
//!    there, and those whose `*.` patterns cover names below it.
//! 3. **Ports.** Per transport, port intervals map to a bitset of the rules whose protocol and
//!    ports accept them (a *port class*).
//! 4. **First match.** Every address and name class carries the sorted list of the rules that
//!    name one of its groups (rules with `src = "any"` or `dst = "any"` are not copied into every
//!    list), and apart the rules of that list whose other side is "any". The first matching rule
//!    is the smallest rule index found in: the source list ∩ a destination list (address, or
//!    each name class the name reached), by a galloping intersection; the source class's rules
//!    with `dst = "any"`; each destination class's rules with `src = "any"`; and the short list
//!    of rules with both "any". Every candidate must also be set in the port class. Each scan stops
//!    at its first enforced (non-watch) hit and at the best hit so far. Lists and bitsets are
//!    deduplicated between classes.
//!
//! [`crate::naive`] evaluates the same [`Policy`] rule by rule; the property tests hold the two to
//! the same answers.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::model::{Action, DstGroup, DstSpec, Mode, Policy, Ports, Protocol, SrcSpec, Transport};

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

const NONE: u32 = u32::MAX;

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

/// Sizes of a compiled table, for summaries and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompileStats {
    /// Rules.
    pub rules: usize,
    /// SmartGroups.
    pub smartgroups: usize,
    /// WebGroups.
    pub webgroups: usize,
    /// AddressGroups.
    pub addressgroups: usize,
    /// Name patterns over all WebGroups.
    pub patterns: usize,
    /// CIDRs over all groups.
    pub cidrs: usize,
    /// Address intervals (sources and destinations, IPv4 and IPv6).
    pub address_intervals: usize,
    /// Distinct source address classes.
    pub src_classes: usize,
    /// Distinct destination address classes.
    pub dst_classes: usize,
    /// Nodes of the name trie.
    pub name_nodes: usize,
    /// Distinct name classes.
    pub name_classes: usize,
    /// Distinct port classes.
    pub port_classes: usize,
    /// Bytes held by the compiled table (heap, approximate from capacities).
    pub memory_bytes: usize,
}

/// A class: a set of groups and the rules they make match.
#[derive(Debug, Clone, Copy)]
struct Class {
    groups: Span,
    rules: Span,
    /// For source classes: the rules of `rules` whose destination includes a WebGroup.
    name_rules: Span,
    /// The rules of `rules` whose other side is "any": `dst = "any"` for source classes,
    /// `src = "any"` for destination and name classes. They match whatever the other side is.
    any_rules: Span,
}

/// What an address interval leads to: its class and, inline so that a lookup reads one entry
/// instead of three dependent ones, the class's rule lists.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    class: u32,
    rules: Span,
    any_rules: Span,
}

impl Entry {
    fn of(class: u32, classes: &[Class]) -> Entry {
        let c = classes.get(class as usize);
        Entry {
            class,
            rules: c.map(|c| c.rules).unwrap_or_default(),
            any_rules: c.map(|c| c.any_rules).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn get(self, arena: &[u32]) -> &[u32] {
        &arena[self.start as usize..(self.start + self.len) as usize]
    }
}

/// Sorted interval starts mapped to values (class ids, or address [`Entry`]s); the first start
/// is always 0.
#[derive(Debug, Clone)]
struct IntervalTable<K, V = u32> {
    starts: Vec<K>,
    classes: Vec<V>,
}

impl<K: Copy + Ord, V: Copy + Default> IntervalTable<K, V> {
    fn lookup(&self, key: K) -> V {
        let i = self.starts.partition_point(|&s| s <= key);
        // starts[0] is the smallest key, so i >= 1 for a well-built table.
        match i.checked_sub(1) {
            Some(i) => self.classes[i],
            None => V::default(),
        }
    }

    fn bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<K>()
            + self.classes.capacity() * std::mem::size_of::<V>()
    }
}

/// The port class of every port of one protocol, indexed by port: a decision reads one entry
/// instead of binary-searching the interval starts (eight dependent reads for a couple of
/// hundred classes). 256 KiB per protocol; the entries of the ports in use stay cached.
#[derive(Debug, Clone)]
struct PortTable(Box<[u32]>);

impl PortTable {
    fn new(intervals: &IntervalTable<u16>) -> PortTable {
        let mut classes = vec![0u32; 1 << 16];
        let ends = intervals
            .starts
            .iter()
            .skip(1)
            .map(|&s| usize::from(s))
            .chain([1 << 16]);
        for ((&start, end), &class) in intervals.starts.iter().zip(ends).zip(&intervals.classes) {
            classes[usize::from(start)..end].fill(class);
        }
        PortTable(classes.into_boxed_slice())
    }

    #[inline]
    fn lookup(&self, port: u16) -> u32 {
        self.0.get(usize::from(port)).copied().unwrap_or_default()
    }

    fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.0)
    }
}

/// IPv4 intervals as `(start, entry)` records, so that the record found by the search also holds
/// the answer, with a direct index on the top 16 bits of the address; a /16 holding many
/// intervals has a second index on the next 8 bits. A lookup reads the /16 index, the /24 index
/// when there is one, and then searches the few records of its /24 (usually one cache line).
#[derive(Debug, Clone)]
struct V4Table {
    /// Sorted by start; the first start is 0.
    records: Vec<(u32, Entry)>,
    /// `bucket[h].0`: index of the first record starting at or after `h << 16`, for `h` in
    /// `0..=65536`; `bucket[h].1`: where the /24 index of that /16 starts in `fine`, or [`NONE`].
    bucket: Vec<(u32, u32)>,
    /// 257 record indices per indexed /16: the first record starting at or after each /24 of
    /// it, and the first record after it.
    fine: Vec<u32>,
}

impl V4Table {
    /// Below this many intervals a plain binary search is as fast and the index not worth its
    /// 512 KiB.
    const INDEX_FROM: usize = 1024;
    /// A /16 with more intervals than this gets a /24 index (1 KiB).
    const FINE_FROM: usize = 8;
    /// Ranges up to this many records are counted, longer ones binary-searched.
    const COUNT_UP_TO: usize = 8;

    fn new(records: Vec<(u32, Entry)>) -> V4Table {
        if records.len() < Self::INDEX_FROM {
            return V4Table {
                records,
                bucket: Vec::new(),
                fine: Vec::new(),
            };
        }
        // First record index with start >= `from`.
        let first_at = |from: u64, i: &mut usize| {
            while *i < records.len() && u64::from(records[*i].0) < from {
                *i += 1;
            }
            *i as u32
        };
        let mut bucket = Vec::with_capacity(65537);
        let mut i = 0usize;
        for h in 0..=65536u64 {
            bucket.push((first_at(h << 16, &mut i), NONE));
        }
        let mut fine = Vec::new();
        for h in 0..65536usize {
            let (lo, hi) = (bucket[h].0 as usize, bucket[h + 1].0 as usize);
            if hi - lo <= Self::FINE_FROM {
                continue;
            }
            bucket[h].1 = fine.len() as u32;
            let mut i = lo;
            for b in 0..=256u64 {
                fine.push(first_at(((h as u64) << 16) + (b << 8), &mut i));
            }
        }
        fine.shrink_to_fit();
        V4Table {
            records,
            bucket,
            fine,
        }
    }

    #[inline]
    fn lookup(&self, key: u32) -> Entry {
        self.search(key, self.range(key, self.bucket(key)))
    }

    /// The first step of a lookup, which reads only the /16 index: the first record of the /16,
    /// its /24 index (or [`NONE`]) and the first record after it.
    #[inline]
    fn bucket(&self, key: u32) -> (u32, u32, u32) {
        if self.bucket.is_empty() {
            return (0, NONE, self.records.len() as u32);
        }
        let h = (key >> 16) as usize;
        let (lo, fine) = self.bucket[h];
        (lo, fine, self.bucket[h + 1].0)
    }

    /// The second step: the records to search, through the /24 index when the /16 has one.
    #[inline]
    fn range(&self, key: u32, (lo, fine, hi): (u32, u32, u32)) -> (usize, usize) {
        if fine == NONE {
            (lo as usize, hi as usize)
        } else {
            let f = fine as usize + ((key >> 8) & 0xff) as usize;
            (self.fine[f] as usize, self.fine[f + 1] as usize)
        }
    }

    /// The last step: the entry of the interval holding `key` among `records[lo..hi]`.
    #[inline]
    fn search(&self, key: u32, (lo, hi): (usize, usize)) -> Entry {
        let range = &self.records[lo..hi];
        // A short range is counted rather than searched: its loads do not depend on one another,
        // so they overlap, and there is no branch to mispredict.
        let i = lo
            + if range.len() <= Self::COUNT_UP_TO {
                range.iter().filter(|r| r.0 <= key).count()
            } else {
                range.partition_point(|r| r.0 <= key)
            };
        // records[0] starts at 0, so some start is <= key and i >= 1.
        match i.checked_sub(1) {
            Some(i) => self.records[i].1,
            None => Entry::default(),
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<(u32, Entry)>()
            + self.bucket.capacity() * 8
            + self.fine.capacity() * 4
    }
}

/// An immutable, compiled policy. Build with [`compile`] or [`CompiledPolicy::deny_all`].
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    version: u64,
    mode: Mode,
    default_action: Action,
    rule_names: Vec<Box<str>>,
    rule_actions: Vec<Action>,
    rule_log: Vec<u64>,
    watch: Vec<u64>,
    /// Rules with both `src` and `dst` "any".
    any_any: Vec<u32>,
    /// Rules with `src = "any"` whose `dst` names a WebGroup.
    any_src_name_rules: Vec<u32>,
    smart_names: Vec<Box<str>>,
    web_names: Vec<Box<str>>,
    addr_names: Vec<Box<str>>,
    /// Group ids (smartgroups for sources; addressgroups then smartgroups for destinations;
    /// webgroups for names) and rule lists. A class's rule list holds the rules that name one of
    /// its groups; those of them whose other side is "any" are also listed on their own.
    arena: Vec<u32>,
    src_classes: Vec<Class>,
    dst_classes: Vec<Class>,
    name_classes: Vec<Class>,
    src_v4: V4Table,
    src_v6: IntervalTable<u128, Entry>,
    dst_v4: V4Table,
    dst_v6: IntervalTable<u128, Entry>,
    names: crate::trie::NameTrie,
    port_words: usize,
    port_bits: Vec<u64>,
    tcp_ports: PortTable,
    udp_ports: PortTable,
    other_port_class: u32,
    port_class_count: usize,
    stats: CompileStats,
}

fn bit(bits: &[u64], i: u32) -> bool {
    bits.get((i / 64) as usize)
        .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
}

fn set_bit(bits: &mut [u64], i: u32) {
    bits[(i / 64) as usize] |= 1u64 << (i % 64);
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

    /// Enforce or log-only.
    pub fn mode(&self) -> Mode {
        self.mode
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

    fn port_class_bits(&self, transport: Transport, port: u16) -> &[u64] {
        let class = match transport {
            Transport::Tcp => self.tcp_ports.lookup(port),
            Transport::Udp => self.udp_ports.lookup(port),
            Transport::Other(_) => self.other_port_class,
        } as usize;
        let start = class * self.port_words;
        &self.port_bits[start..start + self.port_words]
    }

    /// Folds into `best` the rules of `a ∩ b` accepted by `ports`.
    fn scan_pair(&self, a: &[u32], b: &[u32], ports: &[u64], best: &mut Best) {
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
            if large[j] == r && bit(ports, r) && self.take(r, best) {
                return;
            }
        }
    }

    /// Folds into `best` the rules of `list` accepted by `ports`.
    fn scan_list(&self, list: &[u32], ports: &[u64], best: &mut Best) {
        for &r in list {
            if r >= best.eff {
                return;
            }
            if bit(ports, r) && self.take(r, best) {
                return;
            }
        }
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
    fn scan_addresses(&self, s: Entry, d: Entry, ports: &[u64], best: &mut Best) {
        self.scan_pair(self.span(s.rules), self.span(d.rules), ports, best);
        self.scan_list(self.span(s.any_rules), ports, best);
        self.scan_list(self.span(d.any_rules), ports, best);
        self.scan_list(&self.any_any, ports, best);
    }

    /// The verdict for a connection. `q.name` `None` means no name is known or will be known:
    /// rules that match only by name do not match.
    pub fn evaluate(&self, q: &Query<'_>) -> Verdict {
        let (s, d) = self.address_entries(q.src, q.dst);
        let ports = self.port_class_bits(q.transport, q.dst_port);
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
        let ports = self.port_class_bits(q.transport, q.dst_port);
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
                if bit(ports, r) && ld.binary_search(&r).is_err() {
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

/// Builds the classes of one address family from `(first, last, group)` ranges. Returns the
/// interval starts (first is 0) with their class ids, interning group sets in `interner`.
fn address_intervals(
    mut ranges: Vec<(u128, u128, u32)>,
    max: u128,
    interner: &mut SetInterner,
) -> Vec<(u128, u32)> {
    // Events: at `first`, the group enters; after `last`, it leaves (unless `last` is the
    // highest address of the family).
    let mut events: Vec<(u128, bool, u32)> = Vec::with_capacity(ranges.len() * 2);
    for &(first, last, g) in &ranges {
        events.push((first, true, g));
        if last < max {
            events.push((last + 1, false, g));
        }
    }
    ranges.clear();
    events.sort_unstable();
    let mut active: BTreeMap<u32, u32> = BTreeMap::new();
    let mut out: Vec<(u128, u32)> = vec![(0, interner.intern(&[]))];
    let mut i = 0;
    let mut scratch = Vec::new();
    while i < events.len() {
        let pos = events[i].0;
        while i < events.len() && events[i].0 == pos {
            let (_, enter, g) = events[i];
            if enter {
                *active.entry(g).or_insert(0) += 1;
            } else if let Some(n) = active.get_mut(&g) {
                *n -= 1;
                if *n == 0 {
                    active.remove(&g);
                }
            }
            i += 1;
        }
        scratch.clear();
        scratch.extend(active.keys().copied());
        let class = interner.intern(&scratch);
        match out.last_mut() {
            Some(last) if last.0 == pos => last.1 = class,
            Some(last) if last.1 == class => {}
            _ => out.push((pos, class)),
        }
    }
    // Merge neighbours that ended up in the same class.
    out.dedup_by(|b, a| a.1 == b.1);
    out
}

/// Interns sorted group sets to dense ids.
#[derive(Debug, Default)]
struct SetInterner {
    ids: HashMap<Vec<u32>, u32>,
    sets: Vec<Vec<u32>>,
}

impl SetInterner {
    fn intern(&mut self, set: &[u32]) -> u32 {
        if let Some(&id) = self.ids.get(set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.ids.insert(set.to_vec(), id);
        self.sets.push(set.to_vec());
        id
    }
}

/// Deduplicating store of `u32` lists in one arena.
#[derive(Debug, Default)]
struct Arena {
    data: Vec<u32>,
    lists: HashMap<Vec<u32>, Span>,
}

impl Arena {
    fn add(&mut self, list: &[u32]) -> Span {
        if list.is_empty() {
            return Span::default();
        }
        if let Some(&span) = self.lists.get(list) {
            return span;
        }
        let span = Span {
            start: self.data.len() as u32,
            len: list.len() as u32,
        };
        self.data.extend_from_slice(list);
        self.lists.insert(list.to_vec(), span);
        span
    }
}

fn net_range(net: &ipnet::IpNet) -> (bool, u128, u128) {
    match net {
        ipnet::IpNet::V4(n) => (
            true,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        ipnet::IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Rule lists of each class of `sets`: the union of `by_group[g]` for the class's groups, sorted.
fn class_rule_lists(
    sets: &[Vec<u32>],
    by_group: &[Vec<u32>],
    arena: &mut Arena,
) -> Vec<(Span, Vec<u32>)> {
    let mut out = Vec::with_capacity(sets.len());
    let mut rules = Vec::new();
    for set in sets {
        rules.clear();
        for &g in set {
            if let Some(list) = by_group.get(g as usize) {
                rules.extend_from_slice(list);
            }
        }
        rules.sort_unstable();
        rules.dedup();
        let groups = arena.add(set);
        out.push((groups, rules.clone()));
    }
    out
}

/// Compiles a policy. Never panics; references out of range (possible only in a policy built by
/// hand and not [checked](Policy::check)) match nothing.
pub fn compile(policy: &Policy, version: u64) -> CompiledPolicy {
    let n_rules = policy.rules.len();
    let words = n_rules.div_ceil(64).max(1);
    let n_smart = policy.smartgroups.len();
    let n_addr = policy.addressgroups.len();
    let n_web = policy.webgroups.len();

    let mut rule_log = vec![0u64; words];
    let mut watch = vec![0u64; words];
    let mut name_dep = vec![0u64; words];
    let mut src_any = vec![0u64; words];
    let mut dst_any = vec![0u64; words];
    let mut any_any = Vec::new();
    let mut any_src_name_rules = Vec::new();
    let mut src_by_smart: Vec<Vec<u32>> = vec![Vec::new(); n_smart];
    let mut dst_by_addr: Vec<Vec<u32>> = vec![Vec::new(); n_addr + n_smart];
    let mut dst_by_web: Vec<Vec<u32>> = vec![Vec::new(); n_web];
    for (i, rule) in policy.rules.iter().enumerate() {
        let r = i as u32;
        if rule.log {
            set_bit(&mut rule_log, r);
        }
        if rule.watch {
            set_bit(&mut watch, r);
        }
        match &rule.src {
            SrcSpec::Any => set_bit(&mut src_any, r),
            SrcSpec::Groups(groups) => {
                for &g in groups {
                    if let Some(list) = src_by_smart.get_mut(g as usize) {
                        if list.last() != Some(&r) {
                            list.push(r);
                        }
                    }
                }
            }
        }
        match &rule.dst {
            DstSpec::Any => {
                set_bit(&mut dst_any, r);
                if rule.src == SrcSpec::Any {
                    any_any.push(r);
                }
            }
            DstSpec::Groups(groups) => {
                for &g in groups {
                    let list = match g {
                        DstGroup::Web(w) => {
                            if (w as usize) < n_web {
                                set_bit(&mut name_dep, r);
                            }
                            dst_by_web.get_mut(w as usize)
                        }
                        DstGroup::Address(a) if (a as usize) < n_addr => {
                            dst_by_addr.get_mut(a as usize)
                        }
                        DstGroup::Smart(s) if (s as usize) < n_smart => {
                            dst_by_addr.get_mut(n_addr + s as usize)
                        }
                        _ => None,
                    };
                    if let Some(list) = list {
                        if list.last() != Some(&r) {
                            list.push(r);
                        }
                    }
                }
            }
        }
    }

    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.src == SrcSpec::Any && bit(&name_dep, i as u32) {
            any_src_name_rules.push(i as u32);
        }
    }
    let mut arena = Arena::default();

    // Source address classes.
    let mut src_sets = SetInterner::default();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (g, group) in policy.smartgroups.iter().enumerate() {
        for net in &group.cidrs {
            let (is_v4, first, last) = net_range(&net.trunc());
            if is_v4 { &mut v4 } else { &mut v6 }.push((first, last, g as u32));
        }
    }
    let cidr_count = v4.len() + v6.len();
    let src_v4 = address_intervals(v4, u128::from(u32::MAX), &mut src_sets);
    let src_v6 = address_intervals(v6, u128::MAX, &mut src_sets);
    let src_lists = class_rule_lists(&src_sets.sets, &src_by_smart, &mut arena);
    let src_classes: Vec<Class> = src_lists
        .into_iter()
        .map(|(groups, rules)| {
            let name_rules: Vec<u32> = rules
                .iter()
                .copied()
                .filter(|&r| bit(&name_dep, r))
                .collect();
            let any_rules: Vec<u32> = rules
                .iter()
                .copied()
                .filter(|&r| bit(&dst_any, r))
                .collect();
            Class {
                groups,
                rules: arena.add(&rules),
                name_rules: arena.add(&name_rules),
                any_rules: arena.add(&any_rules),
            }
        })
        .collect();

    // Destination address classes: addressgroups are 0..n_addr, smartgroups follow.
    let mut dst_sets = SetInterner::default();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let dst_nets = policy
        .addressgroups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| group.cidrs.iter().map(move |n| (g as u32, n)))
        .chain(
            policy
                .smartgroups
                .iter()
                .enumerate()
                .flat_map(|(g, group)| group.cidrs.iter().map(move |n| ((n_addr + g) as u32, n))),
        );
    for (g, net) in dst_nets {
        let (is_v4, first, last) = net_range(&net.trunc());
        if is_v4 { &mut v4 } else { &mut v6 }.push((first, last, g));
    }
    let addr_cidrs: usize = policy.addressgroups.iter().map(|g| g.cidrs.len()).sum();
    let dst_v4 = address_intervals(v4, u128::from(u32::MAX), &mut dst_sets);
    let dst_v6 = address_intervals(v6, u128::MAX, &mut dst_sets);
    let dst_classes: Vec<Class> = class_rule_lists(&dst_sets.sets, &dst_by_addr, &mut arena)
        .into_iter()
        .map(|(groups, rules)| {
            let any_rules: Vec<u32> = rules
                .iter()
                .copied()
                .filter(|&r| bit(&src_any, r))
                .collect();
            Class {
                groups,
                rules: arena.add(&rules),
                name_rules: Span::default(),
                any_rules: arena.add(&any_rules),
            }
        })
        .collect();

    // Names.
    let mut name_sets = SetInterner::default();
    let names = crate::trie::NameTrie::build(policy, &mut name_sets_adapter(&mut name_sets));
    let name_classes: Vec<Class> = class_rule_lists(&name_sets.sets, &dst_by_web, &mut arena)
        .into_iter()
        .map(|(groups, rules)| {
            let any_rules: Vec<u32> = rules
                .iter()
                .copied()
                .filter(|&r| bit(&src_any, r))
                .collect();
            Class {
                groups,
                rules: arena.add(&rules),
                name_rules: Span::default(),
                any_rules: arena.add(&any_rules),
            }
        })
        .collect();

    // Ports.
    let mut port_bits: Vec<u64> = Vec::new();
    let mut port_ids: HashMap<Vec<u64>, u32> = HashMap::new();
    let mut intern_bits = |bits: Vec<u64>, port_bits: &mut Vec<u64>| -> u32 {
        if let Some(&id) = port_ids.get(&bits) {
            return id;
        }
        let id = (port_bits.len() / words) as u32;
        port_bits.extend_from_slice(&bits);
        port_ids.insert(bits, id);
        id
    };
    let port_table = |proto: Protocol,
                      port_bits: &mut Vec<u64>,
                      intern: &mut dyn FnMut(Vec<u64>, &mut Vec<u64>) -> u32| {
        let mut bounds: Vec<u32> = vec![0];
        let mut base = vec![0u64; words];
        let mut ranged: Vec<(u32, u16, u16)> = Vec::new();
        for (i, rule) in policy.rules.iter().enumerate() {
            if rule.protocol != Protocol::Any && rule.protocol != proto {
                continue;
            }
            match &rule.ports {
                Ports::Any => set_bit(&mut base, i as u32),
                Ports::Ranges(ranges) => {
                    for r in ranges {
                        if r.start > r.end {
                            continue;
                        }
                        bounds.push(u32::from(r.start));
                        bounds.push(u32::from(r.end) + 1);
                        ranged.push((i as u32, r.start, r.end));
                    }
                }
            }
        }
        bounds.sort_unstable();
        bounds.dedup();
        bounds.retain(|&b| b <= 65535);
        let mut sets: Vec<Vec<u64>> = vec![base; bounds.len()];
        for &(r, start, end) in &ranged {
            let from = bounds.partition_point(|&b| b < u32::from(start));
            let to = bounds.partition_point(|&b| b <= u32::from(end));
            for set in &mut sets[from..to] {
                set_bit(set, r);
            }
        }
        let mut starts = Vec::with_capacity(bounds.len());
        let mut classes = Vec::with_capacity(bounds.len());
        for (b, set) in bounds.into_iter().zip(sets) {
            let id = intern(set, port_bits);
            if classes.last() != Some(&id) {
                starts.push(b as u16);
                classes.push(id);
            }
        }
        IntervalTable { starts, classes }
    };
    let tcp_ports = PortTable::new(&port_table(Protocol::Tcp, &mut port_bits, &mut intern_bits));
    let udp_ports = PortTable::new(&port_table(Protocol::Udp, &mut port_bits, &mut intern_bits));
    let mut other = vec![0u64; words];
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.protocol == Protocol::Any && rule.ports == Ports::Any {
            set_bit(&mut other, i as u32);
        }
    }
    let other_port_class = intern_bits(other, &mut port_bits);
    let port_class_count = port_bits.len() / words;

    let split4 = |v: Vec<(u128, u32)>, classes: &[Class]| {
        V4Table::new(
            v.iter()
                .map(|&(s, c)| (s as u32, Entry::of(c, classes)))
                .collect(),
        )
    };
    let split6 = |v: Vec<(u128, u32)>, classes: &[Class]| IntervalTable {
        starts: v.iter().map(|&(s, _)| s).collect(),
        classes: v.iter().map(|&(_, c)| Entry::of(c, classes)).collect(),
    };
    let src_v4 = split4(src_v4, &src_classes);
    let src_v6 = split6(src_v6, &src_classes);
    let dst_v4 = split4(dst_v4, &dst_classes);
    let dst_v6 = split6(dst_v6, &dst_classes);
    let boxed = |s: &str| -> Box<str> { s.into() };
    let mut arena_data = arena.data;
    arena_data.shrink_to_fit();
    let mut compiled = CompiledPolicy {
        version,
        mode: policy.mode,
        default_action: policy.default_action.action(),
        rule_names: policy.rules.iter().map(|r| boxed(&r.name)).collect(),
        rule_actions: policy.rules.iter().map(|r| r.action).collect(),
        rule_log,
        watch,
        any_any,
        any_src_name_rules,
        smart_names: policy.smartgroups.iter().map(|g| boxed(&g.name)).collect(),
        web_names: policy.webgroups.iter().map(|g| boxed(&g.name)).collect(),
        addr_names: policy
            .addressgroups
            .iter()
            .map(|g| boxed(&g.name))
            .collect(),
        arena: arena_data,
        src_classes,
        dst_classes,
        name_classes,
        src_v4,
        src_v6,
        dst_v4,
        dst_v6,
        names,
        port_words: words,
        port_bits,
        tcp_ports,
        udp_ports,
        other_port_class,
        port_class_count,
        stats: CompileStats::default(),
    };
    compiled.stats = compiled.compute_stats(policy, cidr_count + addr_cidrs);
    compiled
}

fn name_sets_adapter(interner: &mut SetInterner) -> impl FnMut(&[u32]) -> u32 + '_ {
    move |set| interner.intern(set)
}

impl CompiledPolicy {
    fn compute_stats(&self, policy: &Policy, cidrs: usize) -> CompileStats {
        let strs = |v: &Vec<Box<str>>| v.capacity() * 16 + v.iter().map(|s| s.len()).sum::<usize>();
        let memory_bytes = std::mem::size_of::<Self>()
            + strs(&self.rule_names)
            + strs(&self.smart_names)
            + strs(&self.web_names)
            + strs(&self.addr_names)
            + self.rule_actions.capacity()
            + (self.rule_log.capacity() + self.watch.capacity() + self.port_bits.capacity()) * 8
            + (self.any_any.capacity() + self.any_src_name_rules.capacity()) * 4
            + self.arena.capacity() * 4
            + (self.src_classes.capacity()
                + self.dst_classes.capacity()
                + self.name_classes.capacity())
                * std::mem::size_of::<Class>()
            + self.src_v4.bytes()
            + self.src_v6.bytes()
            + self.dst_v4.bytes()
            + self.dst_v6.bytes()
            + self.tcp_ports.bytes()
            + self.udp_ports.bytes()
            + self.names.bytes();
        CompileStats {
            rules: policy.rules.len(),
            smartgroups: policy.smartgroups.len(),
            webgroups: policy.webgroups.len(),
            addressgroups: policy.addressgroups.len(),
            patterns: policy.pattern_count(),
            cidrs,
            address_intervals: self.src_v4.len()
                + self.src_v6.starts.len()
                + self.dst_v4.len()
                + self.dst_v6.starts.len(),
            src_classes: self.src_classes.len(),
            dst_classes: self.dst_classes.len(),
            name_nodes: self.names.node_count(),
            name_classes: self.name_classes.len(),
            port_classes: self.port_class_count,
            memory_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct port table gives, for every port, the class the interval search gives.
    #[test]
    fn port_table_agrees_with_interval_search() {
        let intervals = IntervalTable::<u16> {
            starts: vec![0, 1, 443, 444, 8000, 8081, 65535],
            classes: vec![7, 3, 9, 3, 5, 3, 11],
        };
        let table = PortTable::new(&intervals);
        for port in 0..=u16::MAX {
            assert_eq!(table.lookup(port), intervals.lookup(port), "port {port}");
        }
        let one = PortTable::new(&IntervalTable::<u16> {
            starts: vec![0],
            classes: vec![4],
        });
        assert!((0..=u16::MAX).all(|p| one.lookup(p) == 4));
    }

    /// The indexed IPv4 table gives the record a plain search over all records gives, for /16s
    /// with few and with many intervals, at interval edges and /16 and /24 edges.
    #[test]
    fn indexed_v4_table_agrees_with_plain_search() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut starts = vec![0u32];
        // Dense around 10.0.0.0/12, sparse elsewhere, and a crowded single /24.
        for _ in 0..3000 {
            starts.push(0x0a00_0000 | (next() as u32 & 0x000f_ffff));
        }
        for _ in 0..500 {
            starts.push(next() as u32);
        }
        for k in 0..40 {
            starts.push(0xc000_0200 + k * 3);
        }
        starts.push(u32::MAX);
        starts.sort_unstable();
        starts.dedup();
        let records: Vec<(u32, Entry)> = starts
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let entry = Entry {
                    class: i as u32,
                    ..Entry::default()
                };
                (s, entry)
            })
            .collect();
        let table = V4Table::new(records.clone());
        assert!(!table.bucket.is_empty() && !table.fine.is_empty());
        let plain = |key: u32| records.partition_point(|r| r.0 <= key) as u32 - 1;
        let mut keys = vec![
            0,
            u32::MAX,
            0x0a00_0000,
            0x0a0f_ffff,
            0xc000_0200,
            0xc000_02ff,
        ];
        for &s in &starts {
            keys.extend([s, s.wrapping_sub(1), s.wrapping_add(1), s & !0xff, s | 0xff]);
            keys.extend([s & !0xffff, s | 0xffff]);
        }
        for _ in 0..20_000 {
            keys.push(next() as u32);
            keys.push(0x0a00_0000 | (next() as u32 & 0x000f_ffff));
        }
        for key in keys {
            assert_eq!(table.lookup(key).class, plain(key), "{key:#x}");
        }
    }
}
