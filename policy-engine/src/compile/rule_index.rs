//! The first compile phase: what each rule says, as bitsets over rule indices, and for each
//! group the sorted list of the rules that name it. The class phases read these lists; the
//! bitsets that the decision path needs (`rule_log`, `watch`) are moved into the table.

use super::tables::{bit, set_bit};
use crate::model::{DstGroup, DstSpec, Policy, Rule, SrcSpec};

/// Per-rule facts and per-group rule lists. A group index out of range (possible only in a
/// policy that was not [checked](Policy::check)) is left out, so that it matches nothing.
#[derive(Debug)]
pub(super) struct RuleIndex {
    /// Rules with `log = true`.
    pub(super) rule_log: Vec<u64>,
    /// Watch rules.
    pub(super) watch: Vec<u64>,
    /// Rules whose `dst` names a WebGroup: they may depend on the name.
    pub(super) name_dep: Vec<u64>,
    /// Rules with `src = "any"`.
    pub(super) src_any: Vec<u64>,
    /// Rules with `dst = "any"`.
    pub(super) dst_any: Vec<u64>,
    /// Rules with both `src` and `dst` "any", in order.
    pub(super) any_any: Vec<u32>,
    /// Rules with `src = "any"` whose `dst` names a WebGroup, in order.
    pub(super) any_src_name_rules: Vec<u32>,
    /// For each SmartGroup, the rules naming it in `src`.
    pub(super) src_by_smart: Vec<Vec<u32>>,
    /// For each destination address group (AddressGroups, then SmartGroups), the rules naming
    /// it in `dst`.
    pub(super) dst_by_addr: Vec<Vec<u32>>,
    /// For each WebGroup, the rules naming it in `dst`.
    pub(super) dst_by_web: Vec<Vec<u32>>,
}

impl RuleIndex {
    pub(super) fn new(policy: &Policy) -> RuleIndex {
        let words = policy.rules.len().div_ceil(64).max(1);
        let n_smart = policy.smartgroups.len();
        let n_addr = policy.addressgroups.len();
        let mut index = RuleIndex {
            rule_log: vec![0u64; words],
            watch: vec![0u64; words],
            name_dep: vec![0u64; words],
            src_any: vec![0u64; words],
            dst_any: vec![0u64; words],
            any_any: Vec::new(),
            any_src_name_rules: Vec::new(),
            src_by_smart: vec![Vec::new(); n_smart],
            dst_by_addr: vec![Vec::new(); n_addr + n_smart],
            dst_by_web: vec![Vec::new(); policy.webgroups.len()],
        };
        for (i, rule) in policy.rules.iter().enumerate() {
            let r = i as u32;
            if rule.log {
                set_bit(&mut index.rule_log, r);
            }
            if rule.watch {
                set_bit(&mut index.watch, r);
            }
            index.add_src(r, &rule.src);
            index.add_dst(r, rule, n_smart, n_addr);
            if rule.src == SrcSpec::Any && bit(&index.name_dep, r) {
                index.any_src_name_rules.push(r);
            }
        }
        index
    }

    fn add_src(&mut self, r: u32, src: &SrcSpec) {
        match src {
            SrcSpec::Any => set_bit(&mut self.src_any, r),
            SrcSpec::Groups(groups) => {
                for &g in groups {
                    if let Some(list) = self.src_by_smart.get_mut(g as usize) {
                        push_once(list, r);
                    }
                }
            }
        }
    }

    fn add_dst(&mut self, r: u32, rule: &Rule, n_smart: usize, n_addr: usize) {
        let groups = match &rule.dst {
            DstSpec::Any => {
                set_bit(&mut self.dst_any, r);
                if rule.src == SrcSpec::Any {
                    self.any_any.push(r);
                }
                return;
            }
            DstSpec::Groups(groups) => groups,
        };
        let n_web = self.dst_by_web.len();
        for &g in groups {
            let list = match g {
                DstGroup::Web(w) => {
                    if (w as usize) < n_web {
                        set_bit(&mut self.name_dep, r);
                    }
                    self.dst_by_web.get_mut(w as usize)
                }
                DstGroup::Address(a) if (a as usize) < n_addr => {
                    self.dst_by_addr.get_mut(a as usize)
                }
                DstGroup::Smart(s) if (s as usize) < n_smart => {
                    self.dst_by_addr.get_mut(n_addr + s as usize)
                }
                _ => None,
            };
            if let Some(list) = list {
                push_once(list, r);
            }
        }
    }
}

/// Appends rule `r` unless it is already last: rules are added in order, so a rule naming a
/// group twice is listed once.
fn push_once(list: &mut Vec<u32>, r: u32) {
    if list.last() != Some(&r) {
        list.push(r);
    }
}
