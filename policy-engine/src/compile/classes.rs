//! The class phases: sources, destinations and names each get their classes (the distinct sets
//! of groups an address or a name can be in) and, per class, the sorted lists of the rules that
//! can match there. Group sets and rule lists are interned, so that the many intervals of a
//! large policy share a few classes and the classes share their lists.

use std::collections::BTreeMap;

use foldhash::HashMap;

use ipnet::IpNet;

use super::rule_index::RuleIndex;
use super::tables::{bit, Class, Span};
use crate::model::Policy;
use crate::trie::NameTrie;

/// The address classes of one side: the interval starts of each family with their class ids,
/// and the classes those ids index.
#[derive(Debug)]
pub(super) struct AddressClasses {
    pub(super) v4: Vec<(u128, u32)>,
    pub(super) v6: Vec<(u128, u32)>,
    pub(super) classes: Vec<Class>,
}

/// Source address classes, over the SmartGroups' CIDRs. A source class also keeps apart the
/// rules that name a WebGroup (asked about on a SYN, before the name is known) and those with
/// `dst = "any"`.
pub(super) fn source_classes(
    policy: &Policy,
    index: &RuleIndex,
    arena: &mut Arena,
) -> AddressClasses {
    let mut sets = SetInterner::default();
    let nets = policy
        .smartgroups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| group.cidrs.iter().map(move |n| (g as u32, n)));
    let (v4, v6) = ranges_by_family(nets);
    let v4 = address_intervals(v4, u128::from(u32::MAX), &mut sets);
    let v6 = address_intervals(v6, u128::MAX, &mut sets);
    let classes = class_rule_lists(&sets.sets, &index.src_by_smart, arena)
        .into_iter()
        .map(|(groups, rules)| {
            let name_rules: Vec<u32> = rules
                .iter()
                .copied()
                .filter(|&r| bit(&index.name_dep, r))
                .collect();
            let any_rules: Vec<u32> = rules
                .iter()
                .copied()
                .filter(|&r| bit(&index.dst_any, r))
                .collect();
            Class {
                groups,
                rules: arena.add(&rules),
                name_rules: arena.add(&name_rules),
                any_rules: arena.add(&any_rules),
            }
        })
        .collect();
    AddressClasses { v4, v6, classes }
}

/// Destination address classes: AddressGroups are groups `0..n_addr`, SmartGroups follow (a
/// SmartGroup can be a destination too).
pub(super) fn destination_classes(
    policy: &Policy,
    index: &RuleIndex,
    arena: &mut Arena,
) -> AddressClasses {
    let n_addr = policy.addressgroups.len();
    let mut sets = SetInterner::default();
    let nets = policy
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
    let (v4, v6) = ranges_by_family(nets);
    let v4 = address_intervals(v4, u128::from(u32::MAX), &mut sets);
    let v6 = address_intervals(v6, u128::MAX, &mut sets);
    let lists = class_rule_lists(&sets.sets, &index.dst_by_addr, arena);
    let classes = classes_with_any_src(lists, index, arena);
    AddressClasses { v4, v6, classes }
}

/// The name trie and the name classes its nodes lead to.
pub(super) fn name_classes(
    policy: &Policy,
    index: &RuleIndex,
    arena: &mut Arena,
) -> (NameTrie, Vec<Class>) {
    let mut sets = SetInterner::default();
    let names = NameTrie::build(policy, &mut name_sets_adapter(&mut sets));
    let lists = class_rule_lists(&sets.sets, &index.dst_by_web, arena);
    (names, classes_with_any_src(lists, index, arena))
}

/// Destination-side classes (addresses and names) from their rule lists: the rules with
/// `src = "any"` are kept apart too.
fn classes_with_any_src(
    lists: Vec<(Span, Vec<u32>)>,
    index: &RuleIndex,
    arena: &mut Arena,
) -> Vec<Class> {
    lists
        .into_iter()
        .map(|(groups, rules)| {
            let any_rules: Vec<u32> = rules
                .iter()
                .copied()
                .filter(|&r| bit(&index.src_any, r))
                .collect();
            Class {
                groups,
                rules: arena.add(&rules),
                name_rules: Span::default(),
                any_rules: arena.add(&any_rules),
            }
        })
        .collect()
}

/// `(first, last, group)`: the addresses of one CIDR of a group, as integers of its family.
type Range = (u128, u128, u32);

/// The ranges of `(group, net)` pairs, IPv4 and IPv6 apart.
fn ranges_by_family<'a>(nets: impl Iterator<Item = (u32, &'a IpNet)>) -> (Vec<Range>, Vec<Range>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (g, net) in nets {
        let (is_v4, first, last) = net_range(&net.trunc());
        if is_v4 { &mut v4 } else { &mut v6 }.push((first, last, g));
    }
    (v4, v6)
}

/// Builds the classes of one address family from `(first, last, group)` ranges. Returns the
/// interval starts (first is 0) with their class ids, interning group sets in `interner`.
fn address_intervals(
    mut ranges: Vec<Range>,
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
pub(super) struct Arena {
    pub(super) data: Vec<u32>,
    lists: HashMap<Vec<u32>, Span>,
}

impl Arena {
    pub(super) fn add(&mut self, list: &[u32]) -> Span {
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

fn net_range(net: &IpNet) -> (bool, u128, u128) {
    match net {
        IpNet::V4(n) => (
            true,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
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

fn name_sets_adapter(interner: &mut SetInterner) -> impl FnMut(&[u32]) -> u32 + '_ {
    move |set| interner.intern(set)
}
