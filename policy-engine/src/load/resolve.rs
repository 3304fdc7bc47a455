//! Resolution, once every file is read: the included catalogs, then the group names (unique
//! across the three kinds), then the rules' references to them, duplicate rule names and
//! duplicate priorities. Rules that resolve are sorted by priority into the policy.

use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashSet};

use super::diagnostics::{Location, Span};
use super::groups::{GroupEntry, GroupKind};
use super::rules::PendingRule;
use super::{read_bounded, Loader, MAX_INCLUDES};
use crate::echo::Echo;
use crate::model::{DstGroup, DstSpec, Rule, SrcSpec};

impl Loader {
    /// Reads the catalogs `includes` names, relative to the policy file `origin` (`src`). A file
    /// named twice (by any path that leads to it) is an error rather than a silent merge.
    pub(super) fn load_includes(
        &mut self,
        src: usize,
        origin: &Path,
        includes: Vec<(String, Span)>,
    ) {
        let base = origin.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut seen: Vec<PathBuf> = Vec::new();
        for (i, (rel, span)) in includes.into_iter().enumerate() {
            if i == MAX_INCLUDES {
                self.error(
                    src,
                    span,
                    format!("too many includes: at most {MAX_INCLUDES} files may be included"),
                );
                break;
            }
            let path = base.join(&rel);
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.contains(&canonical) {
                self.error(
                    src,
                    span,
                    format!("`{rel}` is included more than once", rel = Echo(&rel)),
                );
                continue;
            }
            seen.push(canonical);
            match read_bounded(&path) {
                Ok(text) => self.load_catalog(&text, path),
                Err(message) => self.error(
                    src,
                    span,
                    format!(
                        "cannot include `{}`: {message}",
                        Echo(&path.display().to_string())
                    ),
                ),
            }
        }
    }

    /// Indexes groups by name; a name defined twice is reported at its later definition.
    pub(super) fn index_groups(&mut self) {
        let mut defs = std::mem::take(&mut self.group_defs);
        defs.sort_by_key(|d| (d.src, d.span.start));
        for def in defs {
            if let Some(prev) = self.groups.get(&def.name) {
                let message = format!(
                    "`{}` is already defined as {} at {}; group names must be unique across smartgroups, webgroups and addressgroups",
                    Echo(&def.name),
                    prev.kind.with_article(),
                    prev.at
                );
                self.error(def.src, def.span, message);
            } else {
                self.groups.insert(def.name, def.entry);
            }
        }
    }

    pub(super) fn resolve_rules(&mut self) {
        let pending = std::mem::take(&mut self.rules);
        // Rules and their locations stay in these lists; the maps hold indexes into them, so
        // that no name or location is copied per rule.
        let mut rules: Vec<Option<Rule>> = Vec::with_capacity(pending.len());
        let mut ats: Vec<Location> = Vec::with_capacity(pending.len());
        let mut by_name: HashMap<String, usize> = HashMap::default();
        let mut by_priority: HashMap<u32, usize> = HashMap::default();
        let mut resolved: Vec<usize> = Vec::with_capacity(pending.len());
        for p in pending {
            let PendingRule {
                mut rule,
                mut ok,
                src,
                at,
                name_span,
                priority_span,
                has_priority,
                src_items,
                dst_items,
            } = p;
            let k = rules.len();
            if !rule.name.is_empty() {
                if let Some(&prev) = by_name.get(&rule.name) {
                    let message = format!(
                        "rule `{}` is already defined at {}; rule names must be unique",
                        Echo(&rule.name),
                        ats[prev]
                    );
                    self.error(src, name_span.clone(), message);
                    ok = false;
                } else {
                    by_name.insert(rule.name.clone(), k);
                }
            }
            if has_priority {
                if let Some(&prev) = by_priority.get(&rule.priority) {
                    let message = format!(
                        "priority {} is already used by rule `{other}` at {}; every rule needs its own priority so that the order is unambiguous",
                        rule.priority, ats[prev], other = Echo(rules[prev].as_ref().map_or("", |r| r.name.as_str())));
                    self.error(src, priority_span.clone(), message);
                    ok = false;
                } else {
                    by_priority.insert(rule.priority, k);
                }
            }
            match self.resolve_src(src, &src_items) {
                Some(s) => rule.src = s,
                None => ok = false,
            }
            match self.resolve_dst(src, &dst_items) {
                Some(d) => rule.dst = d,
                None => ok = false,
            }
            if ok {
                resolved.push(k);
            }
            rules.push(Some(rule));
            ats.push(at);
        }
        resolved.sort_by_key(|&k| rules[k].as_ref().map_or(0, |r| r.priority));
        self.policy.rules.reserve(resolved.len());
        self.rule_locations.reserve(resolved.len());
        for k in resolved {
            let Some(rule) = rules[k].take() else {
                continue;
            };
            self.policy.rules.push(rule);
            self.rule_locations.push(std::mem::replace(
                &mut ats[k],
                Location {
                    file: PathBuf::new(),
                    line: 0,
                    column: 0,
                },
            ));
        }
    }

    fn any_problem(&mut self, src: usize, items: &[(String, Span)], key: &str) -> Option<bool> {
        let has_any = items.iter().any(|(n, _)| n == "any");
        if has_any && items.len() > 1 {
            let span = items
                .iter()
                .find(|(n, _)| n == "any")
                .map(|(_, s)| s.clone())
                .unwrap_or(0..0);
            self.error(
                src,
                span,
                format!("\"any\" cannot be combined with other names in `{key}`: it already matches everything", key = Echo(key)),
            );
            return None;
        }
        Some(has_any)
    }

    fn resolve_src(&mut self, src: usize, items: &[(String, Span)]) -> Option<SrcSpec> {
        if items.is_empty() {
            return None;
        }
        if self.any_problem(src, items, "src")? {
            return Some(SrcSpec::Any);
        }
        let mut groups = Vec::with_capacity(items.len());
        let mut seen = Dedup::default();
        let mut ok = true;
        for (name, span) in items {
            match self.groups.get(name) {
                Some(GroupEntry {
                    kind: GroupKind::Smart,
                    index,
                    ..
                }) => {
                    if seen.first_time(&groups, index) {
                        groups.push(*index);
                    }
                }
                Some(entry) => {
                    let message =
                        format!(
                        "`{name}` is {} (defined at {}); `src` accepts only smartgroups or \"any\"",
                        entry.kind.with_article(),
                        entry.at, name = Echo(name));
                    self.error(src, span.clone(), message);
                    ok = false;
                }
                None => {
                    self.error(src, span.clone(), format!("unknown smartgroup `{name}` in `src`: no [smartgroups.{name}] is defined", name = Echo(name)));
                    ok = false;
                }
            }
        }
        ok.then_some(SrcSpec::Groups(groups))
    }

    fn resolve_dst(&mut self, src: usize, items: &[(String, Span)]) -> Option<DstSpec> {
        if items.is_empty() {
            return None;
        }
        if self.any_problem(src, items, "dst")? {
            return Some(DstSpec::Any);
        }
        let mut groups = Vec::with_capacity(items.len());
        let mut seen = Dedup::default();
        let mut ok = true;
        for (name, span) in items {
            match self.groups.get(name) {
                Some(entry) => {
                    let g = match entry.kind {
                        GroupKind::Web => DstGroup::Web(entry.index),
                        GroupKind::Address => DstGroup::Address(entry.index),
                        GroupKind::Smart => DstGroup::Smart(entry.index),
                    };
                    if seen.first_time(&groups, &g) {
                        groups.push(g);
                    }
                }
                None => {
                    self.error(src, span.clone(), format!("unknown group `{name}` in `dst`: no webgroup, addressgroup or smartgroup has this name", name = Echo(name)));
                    ok = false;
                }
            }
        }
        ok.then_some(DstSpec::Groups(groups))
    }
}

/// Whether an item is met for the first time in a list being built (a rule's groups, a
/// group's patterns or CIDRs): by looking through the few items a list usually holds, or
/// through a set once it holds many, so that neither a long list is quadratic nor each of 100k
/// short ones allocates (and copies its items into) a set.
#[derive(Debug)]
pub(super) struct Dedup<T> {
    set: Option<HashSet<T>>,
}

impl<T> Default for Dedup<T> {
    fn default() -> Self {
        Dedup { set: None }
    }
}

/// Lists up to this long are searched; longer ones get a set.
const DEDUP_LINEAR: usize = 16;

impl<T: Clone + Eq + std::hash::Hash> Dedup<T> {
    pub(super) fn first_time(&mut self, list: &[T], item: &T) -> bool {
        if self.set.is_none() && list.len() < DEDUP_LINEAR {
            return !list.contains(item);
        }
        let set = self
            .set
            .get_or_insert_with(|| list.iter().cloned().collect());
        if set.contains(item) {
            return false;
        }
        set.insert(item.clone());
        true
    }
}
