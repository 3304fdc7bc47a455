//! DNS corroboration of the name a flow was permitted by (`sni_dns_check`).
//!
//! The client writes the TLS SNI and the HTTP Host. Without a check, a workload allowed to reach
//! `api.openai.com` can open a connection to any address of its choosing and claim that name.
//! The gateway therefore asks whether the destination address is one the name resolves to.
//!
//! The parts:
//!
//! - [`DnsCache`]: what the gateway knows of names, shared by every worker. Reads are lock-free
//!   (an `arc-swap` per shard) and allocate nothing on a hit, so a cached answer costs the packet
//!   path a hash lookup. Bounded: a fixed number of names, a fixed number of addresses per name,
//!   TTLs clamped between a floor and a ceiling; a full shard drops its expired entries, then
//!   the one closest to expiry, and counts it.
//! - [`observe`]: the answers to DNS queries that cross the gateway (the workloads' resolver on
//!   the far side): a response is learned only when it matches a query the gateway saw on the
//!   same 5-tuple with the same id and question, and only from resolvers the configuration
//!   trusts. Pending queries are bounded and counted.
//! - [`resolver`]: the gateway's own lookups, off the packet path: a thread with a small tokio
//!   runtime and `hickory-resolver`, bounded concurrent queries, one query per name however many
//!   flows wait for it, answers handed back to the waiting workers.
//!
//! The pipeline stays sans-IO: on a cache miss it asks for a lookup in
//! [`Output::dns_queries`](crate::pipeline::Output::dns_queries) and holds the flow (within its
//! inspection bounds); the runtime answers through
//! [`Pipeline::dns_answer`](crate::pipeline::Pipeline::dns_answer).

pub mod cache;
pub mod observe;
pub mod resolver;

use std::net::IpAddr;
use std::time::Duration;

pub use cache::{CacheLookup, CacheStats, DnsCache};

/// Bounds and TTL clamps of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most names held.
    pub capacity: usize,
    /// An answer is kept at least this long, whatever its TTL: a TTL of 0 would otherwise be
    /// useless for the flow that asked.
    pub min_ttl: Duration,
    /// And at most this long: a mapping the gateway trusts must not outlive the name's real
    /// owner by much.
    pub max_ttl: Duration,
    /// How long "the name has no address" is kept.
    pub negative_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 16_384,
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
        }
    }
}

impl CacheConfig {
    /// A TTL in seconds, clamped to the floor and ceiling.
    pub fn clamp(&self, ttl_secs: u32) -> Duration {
        Duration::from_secs(u64::from(ttl_secs)).clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
    }
}

/// Most addresses kept for one name: a CDN name answers a handful; more would only let a
/// hostile resolver fill memory.
pub const MAX_ADDRS_PER_NAME: usize = 32;

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsFailure {
    /// No answer in time (the resolver's timeout, or the flow's inspection deadline).
    Timeout,
    /// The resolver answered with an error (SERVFAIL, REFUSED), or could not be reached.
    Error,
    /// The gateway did not send the query: too many in flight, or its queue was full.
    Refused,
    /// Nothing can be asked (`bulkhead replay` without an answer for the name).
    Unverified,
}

impl DnsFailure {
    /// The label used in records and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DnsFailure::Timeout => "timeout",
            DnsFailure::Error => "error",
            DnsFailure::Refused => "refused",
            DnsFailure::Unverified => "unverified",
        }
    }
}

/// What a lookup of a name gave: the runtime hands it to
/// [`Pipeline::dns_answer`](crate::pipeline::Pipeline::dns_answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    /// The name's addresses (possibly none: NXDOMAIN or no A / AAAA records).
    Addresses(Vec<IpAddr>),
    /// No usable answer.
    Failed(DnsFailure),
}
