//! The shared cache of what names resolve to.
//!
//! Read on the packet path by every worker, written off it (by the resolver thread) and by a
//! worker that learns an answer from a DNS response it forwarded. Reads must never wait, so the
//! cache is split into shards, each an immutable map behind an [`ArcSwap`]: a read loads the
//! shard's pointer (no lock, no allocation) and looks the name up; a write copies the shard,
//! changes the copy and swaps it in (read-copy-update). Shards are small (capacity / 64 names),
//! so a write costs a few microseconds, and writes are rare next to reads: one per lookup or
//! learned answer, against one read per new flow permitted by name.
//!
//! Bounded: each shard holds at most its share of [`CacheConfig::capacity`] names and each name
//! at most [`MAX_ADDRS_PER_NAME`] addresses. A write into a full shard first drops expired
//! names, then the name whose addresses expire first; both are counted as evictions.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;

use super::{CacheConfig, MAX_ADDRS_PER_NAME};

/// Number of shards: enough that a write copies little and concurrent writers rarely meet.
const SHARDS: usize = 64;

/// What one name is known to resolve to.
#[derive(Debug, Clone)]
struct Entry {
    /// Addresses with the time each stops being trusted.
    addrs: Box<[(IpAddr, Instant)]>,
    /// The name was answered with no address (NXDOMAIN, or no A / AAAA record) until then.
    negative_until: Option<Instant>,
}

impl Entry {
    /// When the entry stops saying anything.
    fn expires(&self) -> Option<Instant> {
        self.addrs
            .iter()
            .map(|&(_, t)| t)
            .chain(self.negative_until)
            .max()
    }
}

type ShardMap = HashMap<Arc<str>, Arc<Entry>, RandomState>;

/// What the cache says about a name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    /// The name resolves to the address.
    Match,
    /// The name resolves, and not to the address: these are the addresses it resolves to (empty
    /// when it has none).
    Mismatch(Vec<IpAddr>),
    /// Nothing known (or only expired answers).
    Miss,
}

/// Counters of the cache's writes. Reads are counted by the pipelines that make them (per
/// worker, without sharing a cache line).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Answers stored (from the resolver or learned from observed responses).
    pub inserts: AtomicU64,
    /// Names dropped to make room, expired or not.
    pub evictions: AtomicU64,
    /// Addresses not kept because a name already had [`MAX_ADDRS_PER_NAME`].
    pub addrs_dropped: AtomicU64,
}

/// The shared cache. See the module docs.
#[derive(Debug)]
pub struct DnsCache {
    shards: Box<[ArcSwap<ShardMap>]>,
    shard_capacity: usize,
    config: CacheConfig,
    /// Keyed per cache from the operating system's random source: names come from the network,
    /// and colliding ones must not be precomputable.
    hasher: RandomState,
    stats: CacheStats,
}

impl DnsCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> DnsCache {
        let hasher = RandomState::default();
        let shard_capacity = config.capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| ArcSwap::from_pointee(ShardMap::with_hasher(hasher)))
            .collect();
        DnsCache {
            shards,
            shard_capacity,
            config,
            hasher,
            stats: CacheStats::default(),
        }
    }

    /// The bounds and clamps.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Write counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    fn shard(&self, name: &str) -> &ArcSwap<ShardMap> {
        let h = self.hasher.hash_one(name);
        &self.shards[(h as usize) % SHARDS]
    }

    /// Does `name` resolve to `addr` at `now`? Lock-free; allocates only to report a mismatch.
    pub fn lookup(&self, name: &str, addr: IpAddr, now: Instant) -> CacheLookup {
        let shard = self.shard(name).load();
        let Some(entry) = shard.get(name) else {
            return CacheLookup::Miss;
        };
        let mut live = false;
        for &(a, until) in entry.addrs.iter() {
            if until > now {
                if a == addr {
                    return CacheLookup::Match;
                }
                live = true;
            }
        }
        if live {
            let resolved = entry
                .addrs
                .iter()
                .filter(|&&(_, until)| until > now)
                .map(|&(a, _)| a)
                .collect();
            return CacheLookup::Mismatch(resolved);
        }
        if entry.negative_until.is_some_and(|t| t > now) {
            return CacheLookup::Mismatch(Vec::new());
        }
        CacheLookup::Miss
    }

    /// The live addresses of `name`, if anything live is known (an empty list: the name has none).
    pub fn addresses(&self, name: &str, now: Instant) -> Option<Vec<IpAddr>> {
        let shard = self.shard(name).load();
        let entry = shard.get(name)?;
        let live: Vec<IpAddr> = entry
            .addrs
            .iter()
            .filter(|&&(_, until)| until > now)
            .map(|&(a, _)| a)
            .collect();
        if !live.is_empty() || entry.negative_until.is_some_and(|t| t > now) {
            Some(live)
        } else {
            None
        }
    }

    /// Names held now (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    /// True when no name is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most names held.
    pub fn capacity(&self) -> usize {
        self.shard_capacity * SHARDS
    }

    /// Stores an answer: `addrs` with their TTLs in seconds (clamped to the floor and ceiling);
    /// an empty list stores "no address" for [`CacheConfig::negative_ttl`]. Addresses already
    /// known and still live are kept: a CDN name answers different subsets over time, and a
    /// client may hold any of them for the TTL.
    pub fn insert(&self, name: &str, addrs: &[(IpAddr, u32)], now: Instant) {
        let config = self.config;
        let fresh: Vec<(IpAddr, Instant)> = addrs
            .iter()
            .map(|&(a, ttl)| (a, later(now, config.clamp(ttl))))
            .collect();
        let negative = addrs.is_empty();
        let shard = self.shard(name);
        let key: Arc<str> = Arc::from(name);
        let mut evicted = 0u64;
        let mut dropped = 0u64;
        shard.rcu(|old| {
            let mut map: ShardMap = ShardMap::clone(old);
            evicted = 0;
            let previous = map.get(name).cloned();
            let entry = merge(
                previous.as_deref(),
                &fresh,
                negative,
                now,
                &config,
                &mut dropped,
            );
            if previous.is_none() && map.len() >= self.shard_capacity {
                evicted = make_room(&mut map, now, self.shard_capacity);
            }
            map.insert(key.clone(), Arc::new(entry));
            map
        });
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
        if evicted > 0 {
            self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        if dropped > 0 {
            self.stats
                .addrs_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }
}

/// The entry after an answer: live addresses already known, then the new ones (a known address
/// gets the later expiry), at most [`MAX_ADDRS_PER_NAME`] (the ones that expire last win).
fn merge(
    previous: Option<&Entry>,
    fresh: &[(IpAddr, Instant)],
    negative: bool,
    now: Instant,
    config: &CacheConfig,
    dropped: &mut u64,
) -> Entry {
    let mut addrs: Vec<(IpAddr, Instant)> = previous
        .map(|e| e.addrs.iter().copied().filter(|&(_, t)| t > now).collect())
        .unwrap_or_default();
    for &(a, t) in fresh {
        match addrs.iter_mut().find(|(b, _)| *b == a) {
            Some(slot) => slot.1 = slot.1.max(t),
            None => addrs.push((a, t)),
        }
    }
    if addrs.len() > MAX_ADDRS_PER_NAME {
        addrs.sort_by_key(|x| std::cmp::Reverse(x.1));
        *dropped = (addrs.len() - MAX_ADDRS_PER_NAME) as u64;
        addrs.truncate(MAX_ADDRS_PER_NAME);
    } else {
        *dropped = 0;
    }
    let negative_until = if negative {
        Some(later(
            now,
            config
                .negative_ttl
                .clamp(config.min_ttl, config.max_ttl.max(config.min_ttl)),
        ))
    } else {
        None
    };
    Entry {
        addrs: addrs.into_boxed_slice(),
        negative_until,
    }
}

/// `now + d`, saturating at a day when the clock cannot hold it (a huge configured ceiling).
fn later(now: Instant, d: std::time::Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Frees one slot in a full shard: every expired name, else the one that expires first.
/// Returns how many names were dropped.
fn make_room(map: &mut ShardMap, now: Instant, capacity: usize) -> u64 {
    let before = map.len();
    map.retain(|_, e| e.expires().is_some_and(|t| t > now));
    if map.len() >= capacity {
        let soonest = map
            .iter()
            .min_by_key(|(_, e)| e.expires())
            .map(|(k, _)| k.clone());
        if let Some(k) = soonest {
            map.remove(&k);
        }
    }
    (before - map.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_match_expire_and_merge() {
        let c = DnsCache::new(CacheConfig::default());
        let t0 = Instant::now();
        assert_eq!(
            c.lookup("a.example", ip("192.0.2.1"), t0),
            CacheLookup::Miss
        );
        c.insert("a.example", &[(ip("192.0.2.1"), 60)], t0);
        assert_eq!(
            c.lookup("a.example", ip("192.0.2.1"), t0),
            CacheLookup::Match
        );
        assert_eq!(
            c.lookup("a.example", ip("192.0.2.9"), t0),
            CacheLookup::Mismatch(vec![ip("192.0.2.1")])
        );
        // A later answer with another address keeps the first one while it lives.
        c.insert(
            "a.example",
            &[(ip("192.0.2.2"), 10)],
            t0 + Duration::from_secs(1),
        );
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            c.lookup("a.example", ip("192.0.2.1"), t1),
            CacheLookup::Match
        );
        assert_eq!(
            c.lookup("a.example", ip("192.0.2.2"), t1),
            CacheLookup::Match
        );
        // The TTL of 10 s ran out for .2; .1 lives 60 s.
        let t2 = t0 + Duration::from_secs(30);
        assert_eq!(
            c.lookup("a.example", ip("192.0.2.2"), t2),
            CacheLookup::Mismatch(vec![ip("192.0.2.1")])
        );
        assert_eq!(
            c.lookup("a.example", ip("192.0.2.1"), t0 + Duration::from_secs(61)),
            CacheLookup::Miss
        );
    }

    #[test]
    fn ttls_are_clamped_to_the_floor_and_ceiling() {
        let config = CacheConfig {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(100),
            ..CacheConfig::default()
        };
        let c = DnsCache::new(config);
        let t0 = Instant::now();
        c.insert("zero.example", &[(ip("192.0.2.1"), 0)], t0);
        c.insert("long.example", &[(ip("192.0.2.2"), 86_400)], t0);
        let t = t0 + Duration::from_secs(4);
        assert_eq!(
            c.lookup("zero.example", ip("192.0.2.1"), t),
            CacheLookup::Match
        );
        let t = t0 + Duration::from_secs(6);
        assert_eq!(
            c.lookup("zero.example", ip("192.0.2.1"), t),
            CacheLookup::Miss
        );
        let t = t0 + Duration::from_secs(101);
        assert_eq!(
            c.lookup("long.example", ip("192.0.2.2"), t),
            CacheLookup::Miss
        );
    }

    #[test]
    fn negative_answers_are_mismatches_for_a_while() {
        let c = DnsCache::new(CacheConfig::default());
        let t0 = Instant::now();
        c.insert("gone.example", &[], t0);
        assert_eq!(
            c.lookup("gone.example", ip("192.0.2.1"), t0),
            CacheLookup::Mismatch(Vec::new())
        );
        assert_eq!(
            c.lookup(
                "gone.example",
                ip("192.0.2.1"),
                t0 + Duration::from_secs(31)
            ),
            CacheLookup::Miss
        );
    }

    #[test]
    fn a_flood_of_names_stays_within_capacity_and_is_counted() {
        let c = DnsCache::new(CacheConfig {
            capacity: 128,
            ..CacheConfig::default()
        });
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            c.insert(&format!("n{i}.example"), &[(ip("192.0.2.1"), 60)], t0);
        }
        assert!(c.len() <= c.capacity(), "{} > {}", c.len(), c.capacity());
        assert!(c.capacity() <= 128 + 64);
        let evicted = c.stats().evictions.load(Ordering::Relaxed);
        assert_eq!(evicted as usize, 10_000 - c.len());
        // The newest name is there.
        assert_eq!(
            c.lookup("n9999.example", ip("192.0.2.1"), t0),
            CacheLookup::Match
        );
    }

    #[test]
    fn a_name_keeps_a_bounded_number_of_addresses() {
        let c = DnsCache::new(CacheConfig::default());
        let t0 = Instant::now();
        let many: Vec<(IpAddr, u32)> = (0..200u32)
            .map(|i| (IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + i)), 60))
            .collect();
        c.insert("big.example", &many, t0);
        assert_eq!(
            c.addresses("big.example", t0).unwrap().len(),
            MAX_ADDRS_PER_NAME
        );
        assert_eq!(
            c.stats().addrs_dropped.load(Ordering::Relaxed) as usize,
            200 - MAX_ADDRS_PER_NAME
        );
    }
}
