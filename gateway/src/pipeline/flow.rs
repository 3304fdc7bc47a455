//! The flow table: canonical 5-tuple keys, fixed capacity, stable slot ids with generations.
//!
//! Both directions of a flow map to the same [`FlowKey`]: the endpoints are stored in a canonical
//! order (the smaller `(address, port)` first), and [`FlowKey::new`] also says which side of the
//! key the packet came from. The table never grows past its capacity: [`FlowTable::insert`] fails
//! when it is full, and the pipeline turns that into a fail-closed `flow_limit` verdict after it
//! tried to reclaim one closed or expired flow.
//!
//! Keys are chosen by whoever sends packets, so the index is keyed with secrets drawn from the
//! operating system's random source for each table ([`FlowHasher`]): colliding keys cannot be
//! precomputed. The hash is foldhash rather than SipHash: a flow lookup is paid by every packet,
//! and foldhash costs a few multiplications for a 40-byte key where SipHash costs several
//! hundred instructions.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;

use foldhash::fast::FoldHasher;
use foldhash::SharedSeed;

/// One address as stored in a key: IPv4 addresses are IPv4-mapped into 128 bits.
fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => 0xffff_0000_0000 | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Canonical 5-tuple: the same for both directions of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    lo: u128,
    hi: u128,
    /// `lo_port << 32 | hi_port << 16 | proto << 8 | v4`.
    rest: u64,
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Three word-sized writes: the keyed hasher folds 40 bytes in three multiplications,
        // without the per-field length prefixes a derived `Hash` adds.
        state.write_u128(self.lo);
        state.write_u128(self.hi);
        state.write_u64(self.rest);
    }
}

/// Which side of a [`FlowKey`] a packet's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source is the key's lower endpoint.
    Lo,
    /// The source is the key's higher endpoint.
    Hi,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Lo => Side::Hi,
            Side::Hi => Side::Lo,
        }
    }
}

impl FlowKey {
    /// The key of a packet from `src:sport` to `dst:dport`, and the side its source is on.
    pub fn new(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> (FlowKey, Side) {
        let v4 = u64::from(src.is_ipv4());
        let s = addr_bits(src);
        let d = addr_bits(dst);
        let key = |lo, lp: u16, hi, hp: u16| FlowKey {
            lo,
            hi,
            rest: u64::from(lp) << 32 | u64::from(hp) << 16 | u64::from(proto) << 8 | v4,
        };
        if (s, sport) <= (d, dport) {
            (key(s, sport, d, dport), Side::Lo)
        } else {
            (key(d, dport, s, sport), Side::Hi)
        }
    }

    /// The IP protocol number.
    pub fn proto(&self) -> u8 {
        (self.rest >> 8) as u8
    }
}

/// The flow index's hasher factory: foldhash keyed with 128 random bits chosen when the table is
/// created. The bits come from the standard library's `RandomState`, whose SipHash keys are
/// drawn from the operating system's random source.
#[derive(Clone)]
pub struct FlowHasher {
    per_hasher: u64,
    shared: SharedSeed,
}

impl FlowHasher {
    /// A hasher factory with fresh random keys.
    pub fn random() -> FlowHasher {
        let keyed = RandomState::new();
        FlowHasher {
            per_hasher: keyed.hash_one(0u8),
            shared: SharedSeed::from_u64(keyed.hash_one(1u8)),
        }
    }
}

impl std::fmt::Debug for FlowHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are secret.
        f.write_str("FlowHasher")
    }
}

impl BuildHasher for FlowHasher {
    type Hasher = FoldHasher;

    #[inline]
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher::with_seed(self.per_hasher, &self.shared)
    }
}

/// A stable reference to a slot; the generation makes stale references to a reused slot miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    /// Slot index.
    pub index: u32,
    /// Generation of the slot when the id was handed out.
    pub generation: u32,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    entry: Option<(FlowKey, T)>,
}

/// Fixed-capacity map from [`FlowKey`] to flows of type `T`.
#[derive(Debug)]
pub struct FlowTable<T> {
    index: HashMap<FlowKey, u32, FlowHasher>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    capacity: usize,
}

impl<T> FlowTable<T> {
    /// An empty table that holds at most `capacity` flows.
    pub fn new(capacity: usize) -> FlowTable<T> {
        /// 1M slots: a few hundred MiB of address space at most, whatever the capacity.
        const MAX_RESERVED_SLOTS: usize = 1 << 20;
        let capacity = capacity.clamp(1, u32::MAX as usize);
        FlowTable {
            // Reserve a bounded part up front; the map grows to `capacity` at most.
            index: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), FlowHasher::random()),
            // The slots are reserved for the whole capacity (up to a bound): address space
            // only, backed by memory as flows fill them, and the slab never moves (no copy of
            // every flow on the packet path when it would otherwise grow).
            slots: Vec::with_capacity(capacity.min(MAX_RESERVED_SLOTS)),
            free: Vec::new(),
            capacity,
        }
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True when no new flow fits.
    pub fn is_full(&self) -> bool {
        self.index.len() >= self.capacity
    }

    /// The most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Finds a flow by key.
    pub fn lookup(&self, key: &FlowKey) -> Option<FlowId> {
        let index = *self.index.get(key)?;
        Some(FlowId {
            index,
            generation: self.slots[index as usize].generation,
        })
    }

    /// Inserts a new flow; `Err(value)` when the table is full or the key is present.
    pub fn insert(&mut self, key: FlowKey, value: T) -> Result<FlowId, T> {
        if self.is_full() || self.index.contains_key(&key) {
            return Err(value);
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Some((key, value));
        self.index.insert(key, index);
        Ok(FlowId {
            index,
            generation: slot.generation,
        })
    }

    /// The flow behind an id, if the id is still current.
    /// Slots in use or free: the range [`FlowTable::id_at`] takes.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The flow in slot `index`, if that slot holds one (for sampling the table).
    pub fn id_at(&self, index: usize) -> Option<FlowId> {
        let slot = self.slots.get(index)?;
        slot.entry.as_ref()?;
        Some(FlowId {
            index: index as u32,
            generation: slot.generation,
        })
    }

    pub fn get(&self, id: FlowId) -> Option<&T> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_ref().map(|(_, v)| v)
    }

    /// The flow behind an id, mutably.
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_mut().map(|(_, v)| v)
    }

    /// The key of a flow.
    pub fn key(&self, id: FlowId) -> Option<&FlowKey> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_ref().map(|(k, _)| k)
    }

    /// Removes a flow and returns it; its slot's generation moves on.
    pub fn remove(&mut self, id: FlowId) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let (key, value) = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.index.remove(&key);
        self.free.push(id.index);
        Some(value)
    }

    /// Ids of every flow (for re-evaluation and shutdown).
    pub fn ids(&self) -> Vec<FlowId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.is_some())
            .map(|(i, s)| FlowId {
                index: i as u32,
                generation: s.generation,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_a_key() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "192.0.2.7".parse().unwrap();
        let (k1, s1) = FlowKey::new(6, a, 40000, b, 443);
        let (k2, s2) = FlowKey::new(6, b, 443, a, 40000);
        assert_eq!(k1, k2);
        assert_ne!(s1, s2);
        let (k3, _) = FlowKey::new(17, a, 40000, b, 443);
        assert_ne!(k1, k3);
        let (k4, _) = FlowKey::new(6, a, 40001, b, 443);
        assert_ne!(k1, k4);
        // Same address and port on both sides (a self-connection) is still one flow.
        let (k5, _) = FlowKey::new(6, a, 5, a, 5);
        assert_eq!(k5, FlowKey::new(6, a, 5, a, 5).0);
        assert_eq!(k1.proto(), 6);
        // An IPv4 flow and the same addresses IPv4-mapped in IPv6 are different flows.
        let a6: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b6: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_ne!(k1, FlowKey::new(6, a6, 40000, b6, 443).0);
    }

    #[test]
    fn each_table_has_its_own_hash_keys() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (k, _) = FlowKey::new(6, ip, 40000, ip, 443);
        let (a, b) = (FlowHasher::random(), FlowHasher::random());
        assert_eq!(a.hash_one(k), a.hash_one(k));
        // Equal by chance with probability 2^-64.
        assert_ne!(a.hash_one(k), b.hash_one(k));
        assert_eq!(format!("{a:?}"), "FlowHasher", "the keys are never printed");
    }

    #[test]
    fn capacity_is_enforced_and_slots_are_reused_with_new_generations() {
        let mut t = FlowTable::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let key = |p| FlowKey::new(6, ip, p, ip, 443).0;
        let a = t.insert(key(1), "a").unwrap();
        let _b = t.insert(key(2), "b").unwrap();
        assert!(t.is_full());
        assert_eq!(t.insert(key(3), "c"), Err("c"));
        assert_eq!(t.insert(key(2), "dup"), Err("dup"));
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.get(a), None);
        let c = t.insert(key(3), "c").unwrap();
        assert_eq!(c.index, a.index);
        assert_ne!(c.generation, a.generation);
        assert_eq!(t.lookup(&key(3)), Some(c));
        assert_eq!(t.lookup(&key(1)), None);
        assert_eq!(t.ids().len(), 2);
    }
}
