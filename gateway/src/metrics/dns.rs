//! The series of the DNS check of names (`sni_dns_check`): per-worker events (cache hits and
//! misses, lookups asked and refused, mismatches, failures, answers learned), the resolver
//! thread's lookups by outcome and in flight, and the shared cache's size and evictions. They
//! are rendered once the daemon has set [`DnsProcessStats`] (it always does, whatever the
//! policy says, so dashboards see zeros rather than missing series).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::counters::dns_event;
use super::labels::{DnsEvent, DnsQueryOutcome, Label};
use super::render::{header, simple};
use super::Metrics;
use crate::dns::resolver::ResolverStats;
use crate::dns::DnsCache;

/// What the metrics read of the resolver thread and the shared cache.
#[derive(Debug, Clone)]
pub struct DnsProcessStats {
    /// The resolver thread's counters.
    pub resolver: Arc<ResolverStats>,
    /// The cache the workers share.
    pub cache: Arc<DnsCache>,
}

impl Metrics {
    pub(super) fn render_dns(&self, out: &mut String) {
        let Some(stats) = self.dns.get() else {
            return;
        };
        header(
            out,
            "bulkhead_dns_check_events_total",
            "counter",
            "DNS check of permitted names, by event.",
        );
        for e in DnsEvent::ALL {
            let v: u64 = self
                .workers
                .iter()
                .map(|w| w.get(dns_event(e.index())))
                .fold(0, u64::wrapping_add);
            let _ = writeln!(
                out,
                "bulkhead_dns_check_events_total{{event=\"{}\"}} {v}",
                DnsEvent::VALUES[e.index()]
            );
        }
        let r = &stats.resolver;
        header(
            out,
            "bulkhead_dns_queries_total",
            "counter",
            "The gateway's own DNS lookups, by outcome.",
        );
        for o in DnsQueryOutcome::ALL {
            let v = match o {
                DnsQueryOutcome::Answered => r.answered.load(Ordering::Relaxed),
                DnsQueryOutcome::Timeout => r.timeouts.load(Ordering::Relaxed),
                DnsQueryOutcome::Error => r.errors.load(Ordering::Relaxed),
                DnsQueryOutcome::Refused => r.refused.load(Ordering::Relaxed),
            };
            let _ = writeln!(
                out,
                "bulkhead_dns_queries_total{{outcome=\"{}\"}} {v}",
                DnsQueryOutcome::VALUES[o.index()]
            );
        }
        simple(
            out,
            "bulkhead_dns_queries_in_flight",
            "gauge",
            "DNS lookups under way.",
            r.in_flight.load(Ordering::Relaxed),
        );
        simple(
            out,
            "bulkhead_dns_answers_dropped_total",
            "counter",
            "DNS answers a worker had no room for (its flows time out).",
            r.answers_dropped.load(Ordering::Relaxed),
        );
        let c = &stats.cache;
        simple(
            out,
            "bulkhead_dns_cache_names",
            "gauge",
            "Names in the DNS cache.",
            c.len() as u64,
        );
        simple(
            out,
            "bulkhead_dns_cache_capacity",
            "gauge",
            "Names the DNS cache can hold.",
            c.capacity() as u64,
        );
        simple(
            out,
            "bulkhead_dns_cache_inserts_total",
            "counter",
            "Answers stored in the DNS cache (looked up or learned).",
            c.stats().inserts.load(Ordering::Relaxed),
        );
        simple(
            out,
            "bulkhead_dns_cache_evictions_total",
            "counter",
            "Names dropped from the full DNS cache to make room.",
            c.stats().evictions.load(Ordering::Relaxed),
        );
    }
}
