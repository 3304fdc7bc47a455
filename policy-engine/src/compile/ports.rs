//! The port phase: per transport, the ports cut into intervals by the rules' port ranges, each
//! interval mapped to a *port class*, the bitset of the rules whose protocol and ports accept
//! it. Bitsets are interned, so that rules with the same ports share classes.

use std::collections::HashMap;

use super::tables::{set_bit, IntervalTable, PortTable};
use crate::model::{Policy, Ports, Protocol};

/// The port classes of a policy.
#[derive(Debug)]
pub(super) struct PortClasses {
    /// The classes' bitsets, `words` words each, class `c` at `c * words`.
    pub(super) bits: Vec<u64>,
    /// The class of each TCP port.
    pub(super) tcp: PortTable,
    /// The class of each UDP port.
    pub(super) udp: PortTable,
    /// The class of transports without ports: the rules with protocol and ports "any".
    pub(super) other: u32,
    /// How many classes `bits` holds.
    pub(super) count: usize,
}

impl PortClasses {
    /// `words` is the length of a rule bitset.
    pub(super) fn new(policy: &Policy, words: usize) -> PortClasses {
        let mut interner = BitsetInterner {
            words,
            bits: Vec::new(),
            ids: HashMap::new(),
        };
        let tcp = PortTable::new(&port_intervals(policy, Protocol::Tcp, &mut interner));
        let udp = PortTable::new(&port_intervals(policy, Protocol::Udp, &mut interner));
        let mut other = vec![0u64; words];
        for (i, rule) in policy.rules.iter().enumerate() {
            if rule.protocol == Protocol::Any && rule.ports == Ports::Any {
                set_bit(&mut other, i as u32);
            }
        }
        let other = interner.intern(other);
        let count = interner.bits.len() / words;
        PortClasses {
            bits: interner.bits,
            tcp,
            udp,
            other,
            count,
        }
    }
}

/// Interns rule bitsets of `words` words into one flat vector; a class id is the bitset's
/// position in it.
struct BitsetInterner {
    words: usize,
    bits: Vec<u64>,
    ids: HashMap<Vec<u64>, u32>,
}

impl BitsetInterner {
    fn intern(&mut self, bits: Vec<u64>) -> u32 {
        if let Some(&id) = self.ids.get(&bits) {
            return id;
        }
        let id = (self.bits.len() / self.words) as u32;
        self.bits.extend_from_slice(&bits);
        self.ids.insert(bits, id);
        id
    }
}

/// The port intervals of transport `proto` and their classes. Interval bounds are the starts of
/// the rules' ranges and the ports after their ends; between two bounds every port is accepted
/// by the same rules.
fn port_intervals(
    policy: &Policy,
    proto: Protocol,
    interner: &mut BitsetInterner,
) -> IntervalTable<u16> {
    let words = interner.words;
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
        let id = interner.intern(set);
        if classes.last() != Some(&id) {
            starts.push(b as u16);
            classes.push(id);
        }
    }
    IntervalTable { starts, classes }
}
