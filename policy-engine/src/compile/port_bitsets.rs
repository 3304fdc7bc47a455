//! The fast form of the port phase, used when it fits a bounded budget: per transport, the ports
//! cut into intervals by the rules' port ranges, each interval mapped to a *port class*, the
//! bitset of the rules whose protocol and ports accept it, and a direct table from every port to
//! its class. A decision then checks a candidate rule with one bit of a bitset that stays in cache,
//! instead of reading the rule's own entry from memory (measured on the 10k-rule bench: about
//! half the decision time).
//!
//! The bitsets grow with (port intervals x rules): 100k rules of distinct ports would need 65,536
//! bitsets of 100k bits. [`PortBitsets::new`] counts the intervals first and declines past
//! [`BUDGET_WORDS`]; the per-rule entries of [`super::ports`] then answer alone, linear in the
//! size of the policy.

use std::collections::HashMap;

use super::tables::{set_bit, IntervalTable};
use crate::model::{Policy, Ports, Protocol, Transport};

/// Largest size of all class bitsets together, in 64-bit words (32 MiB), and so also a bound on
/// the work of building them.
pub(super) const BUDGET_WORDS: usize = 4 << 20;

/// The port class of every port of one protocol, indexed by port: a decision reads one entry
/// instead of binary-searching the interval starts. 256 KiB per protocol; the entries of the
/// ports in use stay cached.
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
}

/// The port classes of a policy.
#[derive(Debug, Clone)]
pub(super) struct PortBitsets {
    /// The classes' bitsets, `words` words each, class `c` at `c * words`.
    bits: Vec<u64>,
    words: usize,
    tcp: PortTable,
    udp: PortTable,
    /// The class of transports without ports: the rules with protocol and ports "any".
    other: u32,
}

impl PortBitsets {
    /// The classes of `policy` with rule bitsets of `words` words, or `None` when they would
    /// take more than [`BUDGET_WORDS`].
    pub(super) fn new(policy: &Policy, words: usize) -> Option<PortBitsets> {
        let intervals =
            interval_count(policy, Protocol::Tcp) + interval_count(policy, Protocol::Udp);
        if (intervals + 1).saturating_mul(words.max(1)) > BUDGET_WORDS {
            return None;
        }
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
        Some(PortBitsets {
            bits: interner.bits,
            words,
            tcp,
            udp,
            other,
        })
    }

    /// The bitset of the rules that accept `transport` and `port`.
    #[inline]
    pub(super) fn class_bits(&self, transport: Transport, port: u16) -> &[u64] {
        let class = match transport {
            Transport::Tcp => self.tcp.lookup(port),
            Transport::Udp => self.udp.lookup(port),
            Transport::Other(_) => self.other,
        } as usize;
        let start = class * self.words;
        self.bits.get(start..start + self.words).unwrap_or(&[])
    }

    pub(super) fn bytes(&self) -> usize {
        self.bits.capacity() * 8 + 2 * std::mem::size_of_val(&*self.tcp.0)
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
        let id = (self.bits.len() / self.words.max(1)) as u32;
        self.bits.extend_from_slice(&bits);
        self.ids.insert(bits, id);
        id
    }
}

/// The interval bounds of transport `proto`: the starts of the rules' ranges and the ports after
/// their ends, sorted and distinct, with 0 first.
fn bounds(policy: &Policy, proto: Protocol) -> Vec<u32> {
    let mut bounds: Vec<u32> = vec![0];
    for rule in &policy.rules {
        if rule.protocol != Protocol::Any && rule.protocol != proto {
            continue;
        }
        if let Ports::Ranges(ranges) = &rule.ports {
            for r in ranges.iter().filter(|r| r.start <= r.end) {
                bounds.push(u32::from(r.start));
                bounds.push(u32::from(r.end) + 1);
            }
        }
    }
    bounds.sort_unstable();
    bounds.dedup();
    bounds.retain(|&b| b <= 65535);
    bounds
}

fn interval_count(policy: &Policy, proto: Protocol) -> usize {
    bounds(policy, proto).len()
}

/// The port intervals of transport `proto` and their classes: between two bounds every port is
/// accepted by the same rules.
fn port_intervals(
    policy: &Policy,
    proto: Protocol,
    interner: &mut BitsetInterner,
) -> IntervalTable<u16> {
    let words = interner.words;
    let bounds = bounds(policy, proto);
    let mut base = vec![0u64; words];
    let mut ranged: Vec<(u32, u16, u16)> = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.protocol != Protocol::Any && rule.protocol != proto {
            continue;
        }
        match &rule.ports {
            Ports::Any => set_bit(&mut base, i as u32),
            Ports::Ranges(ranges) => {
                for r in ranges.iter().filter(|r| r.start <= r.end) {
                    ranged.push((i as u32, r.start, r.end));
                }
            }
        }
    }
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
