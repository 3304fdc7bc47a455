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
//!    their own (see `trie.rs`). A name walks the trie once, touching one cache line per label.
//!    Each node carries up to two *name classes*: the WebGroups whose patterns end exactly there,
//!    and those whose `*.` patterns cover names below it.
//! 3. **Ports.** The ports of each transport are cut into intervals that the same rules accept,
//!    each with a *port class*: a bitset over the rules, reached from the port by a direct table
//!    (`port_bitsets`), so a candidate rule costs one cached bit. The bitsets grow with intervals
//!    x rules, so they are built only within a 32 MiB budget; past it (100k rules of distinct
//!    ports, say) each rule's own 16-byte entry (`ports`) answers, linear in the policy.
//! 4. **First match.** Every address and name class carries the sorted list of the rules that
//!    name one of its groups (rules with `src = "any"` or `dst = "any"` are not copied into every
//!    list), and apart the rules of that list whose other side is "any". The first matching rule
//!    is the smallest rule index found in: the source list ∩ a destination list (address, or
//!    each name class the name reached), by a galloping intersection; the source class's rules
//!    with `dst = "any"`; each destination class's rules with `src = "any"`; and the short list
//!    of rules with both "any". Every candidate must also accept the port. Each scan stops
//!    at its first enforced (non-watch) hit and at the best hit so far. Lists and bitsets are
//!    deduplicated between classes.
//!
//! [`crate::naive`] evaluates the same [`Policy`] rule by rule; the property tests hold the two to
//! the same answers.
//!
//! The code is cut by phase:
//!
//! - this module: [`compile`], the phases in order, and the assembly of their results;
//! - `rule_index`: per-rule bitsets and per-group rule lists, which every later phase reads;
//! - `classes`: address classes (interval sweep) and name classes, with the interners that
//!   share group sets and rule lists;
//! - `port_bitsets`: the port classes and their bitsets, within their budget;
//! - `ports`: the transports and ports of each rule;
//! - `tables`: the data structures of a [`CompiledPolicy`] and their lookups;
//! - `evaluate`: [`CompiledPolicy::evaluate`] and [`CompiledPolicy::evaluate_without_name`],
//!   the decision path, with the query and verdict types;
//! - `stats`: [`CompileStats`].

mod classes;
mod evaluate;
mod port_bitsets;
mod ports;
mod rule_index;
mod stats;
mod tables;

use crate::model::Policy;

use classes::{destination_classes, name_classes, source_classes, Arena};
use port_bitsets::PortBitsets;
use ports::RulePorts;
use rule_index::RuleIndex;
use tables::{Class, Entry, IntervalTable, V4Table};

pub use evaluate::{Query, RuleRef, SynDecision, Verdict, MAX_NAME_CLASSES_REPORTED};
pub use stats::CompileStats;
pub use tables::CompiledPolicy;

/// The next [`CompiledPolicy::instance`].
static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Compiles a policy. Never panics; references out of range (possible only in a policy built by
/// hand and not [checked](Policy::check)) match nothing.
pub fn compile(policy: &Policy, version: u64) -> CompiledPolicy {
    let index = RuleIndex::new(policy);
    // One arena for the lists of all classes, so that equal lists are stored once whichever
    // side they belong to. The phases add to it in a fixed order: sources, destinations, names.
    let mut arena = Arena::default();
    let src = source_classes(policy, &index, &mut arena);
    let dst = destination_classes(policy, &index, &mut arena);
    let (names, name_classes) = name_classes(policy, &index, &mut arena);
    let ports = RulePorts::new(policy);
    let port_bitsets = PortBitsets::new(policy, policy.rules.len().div_ceil(64));
    let mut arena = arena.data;
    arena.shrink_to_fit();
    let boxed = |s: &str| -> Box<str> { s.into() };
    let mut compiled = CompiledPolicy {
        version,
        instance: NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        mode: policy.mode,
        quic: policy.quic,
        sni_dns_check: policy.sni_dns_check,
        default_action: policy.default_action.action(),
        rule_names: policy.rules.iter().map(|r| boxed(&r.name)).collect(),
        rule_actions: policy.rules.iter().map(|r| r.action).collect(),
        rule_log: index.rule_log,
        watch: index.watch,
        any_any: index.any_any,
        any_src_name_rules: index.any_src_name_rules,
        smart_names: policy.smartgroups.iter().map(|g| boxed(&g.name)).collect(),
        web_names: policy.webgroups.iter().map(|g| boxed(&g.name)).collect(),
        addr_names: policy
            .addressgroups
            .iter()
            .map(|g| boxed(&g.name))
            .collect(),
        arena,
        src_v4: v4_table(&src.v4, &src.classes),
        src_v6: v6_table(&src.v6, &src.classes),
        dst_v4: v4_table(&dst.v4, &dst.classes),
        dst_v6: v6_table(&dst.v6, &dst.classes),
        src_classes: src.classes,
        dst_classes: dst.classes,
        name_classes,
        names,
        ports,
        port_bitsets,
        stats: CompileStats::default(),
    };
    let cidrs = policy
        .smartgroups
        .iter()
        .map(|g| g.cidrs.len())
        .sum::<usize>()
        + policy
            .addressgroups
            .iter()
            .map(|g| g.cidrs.len())
            .sum::<usize>();
    compiled.stats = compiled.compute_stats(policy, cidrs);
    compiled
}

/// The IPv4 lookup table of one side: each interval start with its [`Entry`], indexed.
fn v4_table(intervals: &[(u128, u32)], classes: &[Class]) -> V4Table {
    V4Table::new(
        intervals
            .iter()
            .map(|&(s, c)| (s as u32, Entry::of(c, classes)))
            .collect(),
    )
}

/// The IPv6 lookup table of one side: interval starts and their [`Entry`]s.
fn v6_table(intervals: &[(u128, u32)], classes: &[Class]) -> IntervalTable<u128, Entry> {
    IntervalTable {
        starts: intervals.iter().map(|&(s, _)| s).collect(),
        classes: intervals
            .iter()
            .map(|&(_, c)| Entry::of(c, classes))
            .collect(),
    }
}
