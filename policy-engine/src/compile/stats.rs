//! [`CompileStats`]: the sizes of a compiled table, for `check-policy` summaries and benches.

use super::tables::{Class, CompiledPolicy};
use crate::model::Policy;

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
    /// Distinct port specifications of rules (transports and port ranges).
    pub port_classes: usize,
    /// Bytes held by the compiled table (heap, approximate from capacities).
    pub memory_bytes: usize,
}

impl CompiledPolicy {
    pub(super) fn compute_stats(&self, policy: &Policy, cidrs: usize) -> CompileStats {
        let strs = |v: &Vec<Box<str>>| v.capacity() * 16 + v.iter().map(|s| s.len()).sum::<usize>();
        let memory_bytes = std::mem::size_of::<Self>()
            + strs(&self.rule_names)
            + strs(&self.smart_names)
            + strs(&self.web_names)
            + strs(&self.addr_names)
            + self.rule_actions.capacity()
            + (self.rule_log.capacity() + self.watch.capacity()) * 8
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
            + self.ports.bytes()
            + self.port_bitsets.as_ref().map_or(0, |b| b.bytes())
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
            port_classes: self.ports.distinct,
            memory_bytes,
        }
    }
}
