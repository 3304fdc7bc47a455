//! Warnings about rules that can never match because an earlier rule takes all of their
//! traffic. Only a valid policy is checked (on an invalid one the indices would not mean much).

use std::collections::HashMap;

use super::diagnostics::{Diagnostic, Severity};
use super::Loader;
use crate::model::{DstSpec, Ports, Protocol, Rule, SrcSpec};

impl Loader {
    /// A rule can never match when an earlier non-watch rule matches all of its traffic. This
    /// is decided conservatively, on names (not on what the groups contain): the earlier rule's
    /// `src` and `dst` list every group of the later one (or are "any"), its protocol and ports
    /// include the later one's. It never warns wrongly; it may miss rules that are shadowed by
    /// several earlier rules together, or by CIDRs that happen to overlap.
    pub(super) fn shadow_warnings(&mut self) {
        let found = shadowed_rules(&self.policy.rules);
        for (i, j) in found {
            let (earlier, later) = (&self.policy.rules[i], &self.policy.rules[j]);
            let message = format!(
                "rule `{}` (priority {}) can never match: rule `{}` (priority {}, at {}) comes first and matches all of its traffic",
                later.name, later.priority, earlier.name, earlier.priority, self.rule_locations[i]
            );
            let at = &self.rule_locations[j];
            self.diags.push((
                self.sources
                    .iter()
                    .position(|s| s.path == at.file)
                    .unwrap_or(0),
                Diagnostic {
                    severity: Severity::Warning,
                    file: at.file.clone(),
                    line: at.line,
                    column: at.column,
                    message,
                },
            ));
        }
    }
}

/// Rules that can never match because an earlier non-watch rule matches all of their traffic:
/// `(earlier, later)` index pairs into `rules` (in priority order), the earliest shadowing rule
/// for each shadowed one.
///
/// Decided conservatively, on group names: `earlier`'s `src` and `dst` list every group of
/// `later`'s (or are "any"), its protocol and ports include `later`'s. A pair returned is always
/// right (no false warnings); rules shadowed only by several rules together, or by different
/// groups whose addresses overlap, are not found.
pub fn shadowed_rules(rules: &[Rule]) -> Vec<(usize, usize)> {
    let mut found: Vec<(usize, usize)> = Vec::new();
    // Earlier non-watch rules indexed by one of their src groups ("any" separately). A rule
    // that covers `later` lists every src group of `later`, in particular the first.
    let mut any_src: Vec<usize> = Vec::new();
    let mut by_src: HashMap<u32, Vec<usize>> = HashMap::new();
    for (j, later) in rules.iter().enumerate() {
        let listed = match &later.src {
            SrcSpec::Any => None,
            SrcSpec::Groups(g) => g.first().and_then(|g| by_src.get(g)),
        };
        let shadow = any_src
            .iter()
            .chain(listed.into_iter().flatten())
            .copied()
            .filter(|&i| covers(&rules[i], later))
            .min();
        if let Some(i) = shadow {
            found.push((i, j));
        }
        if !later.watch {
            match &later.src {
                SrcSpec::Any => any_src.push(j),
                SrcSpec::Groups(g) => {
                    for &g in g {
                        by_src.entry(g).or_default().push(j);
                    }
                }
            }
        }
    }
    found
}

/// Whether every packet `later` matches is matched by `earlier` (decided on names).
fn covers(earlier: &Rule, later: &Rule) -> bool {
    if earlier.watch {
        return false;
    }
    let src = match (&earlier.src, &later.src) {
        (SrcSpec::Any, _) => true,
        (SrcSpec::Groups(_), SrcSpec::Any) => false,
        (SrcSpec::Groups(a), SrcSpec::Groups(b)) => b.iter().all(|g| a.contains(g)),
    };
    let dst = match (&earlier.dst, &later.dst) {
        (DstSpec::Any, _) => true,
        (DstSpec::Groups(_), DstSpec::Any) => false,
        (DstSpec::Groups(a), DstSpec::Groups(b)) => b.iter().all(|g| a.contains(g)),
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
    let ports = match (&earlier.ports, &later.ports) {
        (Ports::Any, _) => true,
        (Ports::Ranges(_), Ports::Any) => false,
        (Ports::Ranges(a), Ports::Ranges(b)) => b
            .iter()
            .all(|r| a.iter().any(|e| e.start <= r.start && r.end <= e.end)),
    };
    // A port-less `later` with protocol any also matches ICMP and the like, which an earlier
    // rule with ports cannot; that is covered by `ports` above (Ranges vs Any is false).
    proto && ports
}
