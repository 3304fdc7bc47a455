//! Warnings about rules that can never match because an earlier rule takes all of their
//! traffic. Only a valid policy is checked (on an invalid one the indices would not mean much).
//!
//! The search must stay near-linear in the size of the policy: 100k rules of `src = "any"`,
//! `dst = "any"`, `ports = [N]` must not compare every rule with every earlier one. Earlier rules
//! are indexed by what a rule that covers a later one must share with it (see [`Key`]), so that
//! a later rule only meets the earlier rules that could cover it; and the comparisons of the
//! whole search are bounded by a budget, past which it stops and says so.

use std::borrow::Cow;

use foldhash::HashMap;
use smallvec::{smallvec, SmallVec};

use super::diagnostics::{Diagnostic, Severity};
use super::Loader;
use crate::echo::Echo;
use crate::model::{DstGroup, DstSpec, Ports, Protocol, Rule, SrcSpec};

/// Budget of the search, in group names and port ranges looked at, per rule of the policy.
const WORK_PER_RULE: usize = 256;
/// Most group names of one side, or single ports of one rule, indexed one by one; a rule with
/// more is indexed under [`Part::Wide`] and met by every later rule of its source bucket.
const MAX_KEYS_PER_SIDE: usize = 8;

impl Loader {
    /// A rule can never match when an earlier non-watch rule matches all of its traffic. This
    /// is decided conservatively, on names (not on what the groups contain): the earlier rule's
    /// `src` and `dst` list every group of the later one (or are "any"), its protocol and ports
    /// include the later one's. It never warns wrongly; it may miss rules that are shadowed by
    /// several earlier rules together, or by CIDRs that happen to overlap.
    pub(super) fn shadow_warnings(&mut self) {
        let search = find_shadowed(&self.policy.rules);
        for (i, j) in search.pairs {
            self.rule_warning(j, |loader| {
                let rules = &loader.policy.rules;
                let (earlier, later) = (&rules[i], &rules[j]);
                format!(
                    "rule `{}` (priority {}) can never match: rule `{}` (priority {}, at {}) comes first and matches all of its traffic",
                    Echo(&later.name), later.priority, Echo(&earlier.name), earlier.priority, loader.rule_locations[i]
                )
            });
        }
        if let Some(j) = search.stopped_at {
            let work = search.work;
            self.rule_warning(j, |_| {
                format!(
                    "the search for rules that can never match stopped here, after {work} comparisons: rules from here on were not checked"
                )
            });
        }
    }

    /// A warning at rule `rule`. The message is only built (and the rule's file looked up) when
    /// the warning is kept: a policy of 100k rules can shadow tens of thousands, and only the
    /// first [`super::MAX_REPORTED_WARNINGS`] are reported.
    fn rule_warning(&mut self, rule: usize, message: impl FnOnce(&Loader) -> String) {
        if self.over_cap(Severity::Warning) {
            return;
        }
        let message = message(self);
        let at = &self.rule_locations[rule];
        let src = self
            .sources
            .iter()
            .position(|s| s.path == at.file)
            .unwrap_or(0);
        let d = Diagnostic {
            severity: Severity::Warning,
            file: at.file.clone(),
            line: at.line,
            column: at.column,
            message,
        };
        self.push_diag(src, d);
    }
}

/// Rules that can never match because an earlier non-watch rule matches all of their traffic:
/// `(earlier, later)` index pairs into `rules` (in priority order), the earliest shadowing rule
/// for each shadowed one.
///
/// Decided conservatively, on group names: `earlier`'s `src` and `dst` list every group of
/// `later`'s (or are "any"), its protocol and ports include `later`'s. A pair returned is always
/// right (no false warnings); rules shadowed only by several rules together, or by different
/// groups whose addresses overlap, are not found, nor are any past the search's budget.
pub fn shadowed_rules(rules: &[Rule]) -> Vec<(usize, usize)> {
    find_shadowed(rules).pairs
}

/// What the search found, and where it stopped if its budget ran out.
#[derive(Debug)]
struct Search {
    pairs: Vec<(usize, usize)>,
    stopped_at: Option<usize>,
    work: usize,
}

/// One part of an index key: a rule that covers a later one has, on each side, "any" or every
/// group (port) of the later one, so in particular its first. [`Part::Wide`] holds the rules
/// with too many groups (ports) to be indexed one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part<T> {
    Any,
    Wide,
    One(T),
}

/// Where an earlier rule is indexed: its source, destination and port parts.
type Key = (Part<u32>, Part<DstGroup>, Part<u16>);

fn find_shadowed(rules: &[Rule]) -> Search {
    let sorted: Vec<Sorted<'_>> = rules.iter().map(Sorted::of).collect();
    let mut index: HashMap<Key, Vec<usize>> = HashMap::default();
    let budget = WORK_PER_RULE.saturating_mul(rules.len().max(1));
    let mut search = Search {
        pairs: Vec::new(),
        stopped_at: None,
        work: 0,
    };
    let mut seen = Seen::default();
    for (j, later) in rules.iter().enumerate() {
        let mut best: Option<usize> = None;
        for key in lookup_keys(later, &seen) {
            // Each list is in rule order: its first covering rule is its earliest.
            for &i in index.get(&key).into_iter().flatten() {
                if best.is_some_and(|b| b <= i) {
                    break;
                }
                search.work += 1 + sorted[i].size() + sorted[j].size();
                if covers(rules, &sorted, i, j) {
                    best = Some(i);
                    break;
                }
            }
        }
        if let Some(i) = best {
            search.pairs.push((i, j));
        }
        if search.work > budget {
            search.stopped_at = Some(j);
            break;
        }
        if !later.watch {
            for key in index_keys(later) {
                seen.note(&key);
                index.entry(key).or_default().push(j);
            }
        }
    }
    search
}

/// Which kinds of index parts some earlier rule was indexed under. A later rule only probes
/// the buckets that can exist: a policy whose rules all name groups and ports probes one bucket
/// per rule, not the 27 combinations of "any", "wide" and its first group and port.
#[derive(Debug, Default)]
struct Seen {
    src_any: bool,
    dst_any: bool,
    dst_wide: bool,
    port_any: bool,
    port_wide: bool,
}

impl Seen {
    fn note(&mut self, (s, d, p): &Key) {
        self.src_any |= matches!(s, Part::Any);
        self.dst_any |= matches!(d, Part::Any);
        self.dst_wide |= matches!(d, Part::Wide);
        self.port_any |= matches!(p, Part::Any);
        self.port_wide |= matches!(p, Part::Wide);
    }
}

/// Up to three parts of one side of a key, without allocating.
type Parts<T> = SmallVec<[Part<T>; 3]>;

/// "any" and the wide bucket where some earlier rule was indexed there, then the bucket of
/// `first`, or only "any" when the later rule's side is "any".
fn parts<T>(first: Option<Option<T>>, any: bool, wide: bool) -> Parts<T> {
    let mut parts = Parts::new();
    if any {
        parts.push(Part::Any);
    }
    match first {
        // The later rule's side is "any": only an earlier "any" covers it.
        None => {}
        Some(first) => {
            if wide {
                parts.push(Part::Wide);
            }
            parts.extend(first.map(Part::One));
        }
    }
    parts
}

/// The keys under which an earlier rule that covers `later` can be indexed (and some earlier
/// rule was: see [`Seen`]).
fn lookup_keys(later: &Rule, seen: &Seen) -> SmallVec<[Key; 8]> {
    let src = match &later.src {
        SrcSpec::Any => parts(None, seen.src_any, false),
        // Sources are never indexed as wide: every source group is a key of its own.
        SrcSpec::Groups(g) => parts(Some(g.first().copied()), seen.src_any, false),
    };
    let dst = match &later.dst {
        DstSpec::Any => parts(None, seen.dst_any, seen.dst_wide),
        DstSpec::Groups(g) => parts(Some(g.first().copied()), seen.dst_any, seen.dst_wide),
    };
    let port = match &later.ports {
        Ports::Any => parts(None, seen.port_any, seen.port_wide),
        Ports::Ranges(r) => parts(
            Some(r.first().map(|r| r.start)),
            seen.port_any,
            seen.port_wide,
        ),
    };
    let mut keys = SmallVec::new();
    for &s in &src {
        for &d in &dst {
            for &p in &port {
                keys.push((s, d, p));
            }
        }
    }
    keys
}

/// The keys an earlier rule is indexed under: every source group (each is the first of some
/// later rule it may cover), and up to [`MAX_KEYS_PER_SIDE`] destination groups and ports.
/// Inline lists: the usual rule allocates nothing here.
fn index_keys(rule: &Rule) -> SmallVec<[Key; 8]> {
    let src: SmallVec<[Part<u32>; 4]> = match &rule.src {
        SrcSpec::Any => smallvec![Part::Any],
        SrcSpec::Groups(g) => g.iter().map(|&g| Part::One(g)).collect(),
    };
    let dst: SmallVec<[Part<DstGroup>; 4]> = match &rule.dst {
        DstSpec::Any => smallvec![Part::Any],
        DstSpec::Groups(g) if g.len() > MAX_KEYS_PER_SIDE => smallvec![Part::Wide],
        DstSpec::Groups(g) => g.iter().map(|&g| Part::One(g)).collect(),
    };
    let port: SmallVec<[Part<u16>; 4]> = match &rule.ports {
        Ports::Any => smallvec![Part::Any],
        Ports::Ranges(r) => {
            let count: usize = r
                .iter()
                .map(|r| usize::from(r.end.saturating_sub(r.start)) + 1)
                .sum();
            if count > MAX_KEYS_PER_SIDE {
                smallvec![Part::Wide]
            } else {
                r.iter()
                    .flat_map(|r| r.start..=r.end)
                    .map(Part::One)
                    .collect()
            }
        }
    };
    let mut keys = SmallVec::with_capacity(src.len() * dst.len() * port.len());
    for &s in &src {
        for &d in &dst {
            for &p in &port {
                keys.push((s, d, p));
            }
        }
    }
    keys
}

/// A rule's groups, sorted, so that "every group of one is in the other" is one merge. Lists
/// already in order (a rule naming one group, or groups defined in the order named) are
/// borrowed; only the others are copied and sorted.
#[derive(Debug)]
struct Sorted<'r> {
    src: Cow<'r, [u32]>,
    dst: Cow<'r, [DstGroup]>,
}

impl<'r> Sorted<'r> {
    fn of(rule: &'r Rule) -> Sorted<'r> {
        let src = match &rule.src {
            SrcSpec::Any => Cow::Borrowed(&[][..]),
            SrcSpec::Groups(g) => sorted(g),
        };
        let dst = match &rule.dst {
            DstSpec::Any => Cow::Borrowed(&[][..]),
            DstSpec::Groups(g) => sorted(g),
        };
        Sorted { src, dst }
    }

    fn size(&self) -> usize {
        self.src.len() + self.dst.len()
    }
}

/// `list` in order: itself when it already is, else a sorted copy.
fn sorted<T: Ord + Clone>(list: &[T]) -> Cow<'_, [T]> {
    if list.is_sorted() {
        Cow::Borrowed(list)
    } else {
        let mut copy = list.to_vec();
        copy.sort_unstable();
        Cow::Owned(copy)
    }
}

/// Whether every element of sorted `b` is in sorted `a`.
fn is_subset<T: Ord>(a: &[T], b: &[T]) -> bool {
    let mut a = a.iter();
    b.iter().all(|x| a.by_ref().find(|y| *y >= x) == Some(x))
}

/// Whether every packet rule `j` matches is matched by rule `i` (decided on names).
fn covers(rules: &[Rule], sorted: &[Sorted<'_>], i: usize, j: usize) -> bool {
    let (earlier, later) = (&rules[i], &rules[j]);
    if earlier.watch {
        return false;
    }
    let src = match (&earlier.src, &later.src) {
        (SrcSpec::Any, _) => true,
        (SrcSpec::Groups(_), SrcSpec::Any) => false,
        (SrcSpec::Groups(_), SrcSpec::Groups(_)) => is_subset(&sorted[i].src, &sorted[j].src),
    };
    let dst = match (&earlier.dst, &later.dst) {
        (DstSpec::Any, _) => true,
        (DstSpec::Groups(_), DstSpec::Any) => false,
        (DstSpec::Groups(_), DstSpec::Groups(_)) => is_subset(&sorted[i].dst, &sorted[j].dst),
    };
    if !(src && dst) {
        return false;
    }
    // Transport and ports: the set of (transport, port) pairs of `later` must be within
    // `earlier`'s.
    let proto = match (earlier.protocol, later.protocol) {
        (Protocol::Any, _) => true,
        (a, b) => a == b,
    };
    // Both lists are sorted and merged (the loader merges them; a hand-built policy may not,
    // which can only hide a warning).
    let ports = match (&earlier.ports, &later.ports) {
        (Ports::Any, _) => true,
        (Ports::Ranges(_), Ports::Any) => false,
        (Ports::Ranges(a), Ports::Ranges(b)) => {
            // The range of `a` that can hold `r` is the first that ends at or after it; it may
            // hold the next ranges of `b` too, so it is not consumed.
            let mut k = 0;
            b.iter().all(|r| {
                while a.get(k).is_some_and(|e| e.end < r.end) {
                    k += 1;
                }
                a.get(k).is_some_and(|e| e.start <= r.start)
            })
        }
    };
    // A port-less `later` with protocol any also matches ICMP and the like, which an earlier
    // rule with ports cannot; that is covered by `ports` above (Ranges vs Any is false).
    proto && ports
}
