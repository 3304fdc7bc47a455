//! The compiled tables: what [`compile`](fn@super::compile) builds and
//! [`CompiledPolicy::evaluate`] reads. Everything here is laid out for the decision path: class
//! lists live in one arena of `u32`s addressed by [`Span`]s, and an address lookup lands on an
//! [`Entry`] that already holds the rule lists it leads to.

use super::stats::CompileStats;
use crate::model::{Action, Mode, QuicMode, SniDnsCheck};

/// "No rule" / "no index" in the `u32` fields of the tables and of the first-match search.
pub(super) const NONE: u32 = u32::MAX;

/// A class: a set of groups and the rules they make match.
#[derive(Debug, Clone, Copy)]
pub(super) struct Class {
    pub(super) groups: Span,
    pub(super) rules: Span,
    /// For source classes: the rules of `rules` whose destination includes a WebGroup.
    pub(super) name_rules: Span,
    /// The rules of `rules` whose other side is "any": `dst = "any"` for source classes,
    /// `src = "any"` for destination and name classes. They match whatever the other side is.
    pub(super) any_rules: Span,
}

/// What an address interval leads to: its class and, inline so that a lookup reads one entry
/// instead of three dependent ones, the class's rule lists.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Entry {
    pub(super) class: u32,
    pub(super) rules: Span,
    pub(super) any_rules: Span,
}

impl Entry {
    pub(super) fn of(class: u32, classes: &[Class]) -> Entry {
        let c = classes.get(class as usize);
        Entry {
            class,
            rules: c.map(|c| c.rules).unwrap_or_default(),
            any_rules: c.map(|c| c.any_rules).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) len: u32,
}

impl Span {
    pub(super) fn get(self, arena: &[u32]) -> &[u32] {
        &arena[self.start as usize..(self.start + self.len) as usize]
    }
}

/// Sorted interval starts mapped to values (class ids, or address [`Entry`]s); the first start
/// is always 0.
#[derive(Debug, Clone)]
pub(super) struct IntervalTable<K, V = u32> {
    pub(super) starts: Vec<K>,
    pub(super) classes: Vec<V>,
}

impl<K: Copy + Ord, V: Copy + Default> IntervalTable<K, V> {
    pub(super) fn lookup(&self, key: K) -> V {
        let i = self.starts.partition_point(|&s| s <= key);
        // starts[0] is the smallest key, so i >= 1 for a well-built table.
        match i.checked_sub(1) {
            Some(i) => self.classes[i],
            None => V::default(),
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<K>()
            + self.classes.capacity() * std::mem::size_of::<V>()
    }
}

/// IPv4 intervals as `(start, entry)` records, so that the record found by the search also holds
/// the answer, with a direct index on the top 16 bits of the address; a /16 holding many
/// intervals has a second index on the next 8 bits. A lookup reads the /16 index, the /24 index
/// when there is one, and then searches the few records of its /24 (usually one cache line).
#[derive(Debug, Clone)]
pub(super) struct V4Table {
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

    pub(super) fn new(records: Vec<(u32, Entry)>) -> V4Table {
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
    pub(super) fn lookup(&self, key: u32) -> Entry {
        self.search(key, self.range(key, self.bucket(key)))
    }

    /// The first step of a lookup, which reads only the /16 index: the first record of the /16,
    /// its /24 index (or [`NONE`]) and the first record after it.
    #[inline]
    pub(super) fn bucket(&self, key: u32) -> (u32, u32, u32) {
        if self.bucket.is_empty() {
            return (0, NONE, self.records.len() as u32);
        }
        let h = (key >> 16) as usize;
        let (lo, fine) = self.bucket[h];
        (lo, fine, self.bucket[h + 1].0)
    }

    /// The second step: the records to search, through the /24 index when the /16 has one.
    #[inline]
    pub(super) fn range(&self, key: u32, (lo, fine, hi): (u32, u32, u32)) -> (usize, usize) {
        if fine == NONE {
            (lo as usize, hi as usize)
        } else {
            let f = fine as usize + ((key >> 8) & 0xff) as usize;
            (self.fine[f] as usize, self.fine[f + 1] as usize)
        }
    }

    /// The last step: the entry of the interval holding `key` among `records[lo..hi]`.
    #[inline]
    pub(super) fn search(&self, key: u32, (lo, hi): (usize, usize)) -> Entry {
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

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<(u32, Entry)>()
            + self.bucket.capacity() * 8
            + self.fine.capacity() * 4
    }
}

/// An immutable, compiled policy. Build with [`compile`](fn@super::compile) or
/// [`CompiledPolicy::deny_all`].
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(super) version: u64,
    /// Unique per compilation in this process (see [`CompiledPolicy::instance`]).
    pub(super) instance: u64,
    pub(super) mode: Mode,
    pub(super) quic: QuicMode,
    pub(super) sni_dns_check: SniDnsCheck,
    pub(super) default_action: Action,
    pub(super) rule_names: Vec<Box<str>>,
    pub(super) rule_actions: Vec<Action>,
    pub(super) rule_log: Vec<u64>,
    pub(super) watch: Vec<u64>,
    /// Rules with both `src` and `dst` "any".
    pub(super) any_any: Vec<u32>,
    /// Rules with `src = "any"` whose `dst` names a WebGroup.
    pub(super) any_src_name_rules: Vec<u32>,
    pub(super) smart_names: Vec<Box<str>>,
    pub(super) web_names: Vec<Box<str>>,
    pub(super) addr_names: Vec<Box<str>>,
    /// Group ids (smartgroups for sources; addressgroups then smartgroups for destinations;
    /// webgroups for names) and rule lists. A class's rule list holds the rules that name one of
    /// its groups; those of them whose other side is "any" are also listed on their own.
    pub(super) arena: Vec<u32>,
    pub(super) src_classes: Vec<Class>,
    pub(super) dst_classes: Vec<Class>,
    pub(super) name_classes: Vec<Class>,
    pub(super) src_v4: V4Table,
    pub(super) src_v6: IntervalTable<u128, Entry>,
    pub(super) dst_v4: V4Table,
    pub(super) dst_v6: IntervalTable<u128, Entry>,
    pub(super) names: crate::trie::NameTrie,
    pub(super) ports: super::ports::RulePorts,
    /// The port classes' bitsets, when they fit their budget (see `port_bitsets`).
    pub(super) port_bitsets: Option<super::port_bitsets::PortBitsets>,
    pub(super) stats: CompileStats,
}

pub(super) fn bit(bits: &[u64], i: u32) -> bool {
    bits.get((i / 64) as usize)
        .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
}

pub(super) fn set_bit(bits: &mut [u64], i: u32) {
    bits[(i / 64) as usize] |= 1u64 << (i % 64);
}

#[cfg(test)]
mod tests {
    use super::*;

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
